"""Train the bundled demo model (edgepass.demo.DigitsNet) on sklearn's digits and export it.

    python scripts/train_digits.py            # writes edgepass/data/models/digits_cnn.onnx + digits_data.npz

Deterministic (fixed seeds, one thread). Needs the dev extra (scikit-learn).
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from edgepass.demo import DEMO_DATA, DEMO_ONNX, DigitsNet, train_classifier  # noqa: E402


def load_data(seed: int = 0):
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]        # N,1,8,8 in [0,1]
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)


def train(model, xtr, ytr, *, epochs=40, seed=0, lr=3e-3):
    return train_classifier(model, xtr, ytr, epochs=epochs, seed=seed, lr=lr)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main() -> int:
    torch.set_num_threads(1)
    xtr, xte, ytr, yte = load_data()
    model = train(DigitsNet(), xtr, ytr)
    print(f"test accuracy {accuracy(model, xte, yte):.4f}", file=sys.stderr)
    out = ROOT / "edgepass" / "data" / "models"
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.from_numpy(xte[:1]),), buf, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buf.getvalue())
    proto.producer_name, proto.producer_version = "edgepass scripts/train_digits.py", "1"
    onnx.save(proto, out / DEMO_ONNX)
    torch.save(model.state_dict(), out / "digits_cnn.pt")
    # calibration: 256 training images; evaluation: the whole held-out split
    np.savez_compressed(out / DEMO_DATA, calibration=xtr[:256], x_test=xte, y_test=yte)
    return 0


if __name__ == "__main__":
    sys.exit(main())
