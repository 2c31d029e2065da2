"""Helpers shared by the benchmark scripts: table printing, JSON output, quiet ONNX export."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgepass.export import export_onnx  # noqa: F401  (re-exported for the scripts)

OUT = Path(__file__).resolve().parent / "out"


def print_table(rows: list[dict], columns: list[str]) -> None:
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
    return "-" if v is None else str(v)


def write_json(name: str, payload) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def natural_images(n: int, size: int, seed: int = 0, *, random_scale: bool = True, flips: bool = True) -> np.ndarray:
    """Crops of the sample photos that ship with scikit-learn, ImageNet-normalised, N x 3 x size x size.

    ``random_scale``: crops of random side (>= size) resized to ``size``; otherwise ``size`` crops.
    ``flips``: every other crop mirrored horizontally."""
    import torch
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    imgs = load_sample_images().images
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = []
    for i in range(n):
        img = imgs[i % len(imgs)]
        c = int(rng.integers(size, min(img.shape[:2]))) if random_scale else size
        y, x = rng.integers(0, img.shape[0] - c), rng.integers(0, img.shape[1] - c)
        crop = torch.from_numpy((img[y:y + c, x:x + c] / 255.0 - mean) / std).permute(2, 0, 1)[None].float()
        if c != size:
            crop = torch.nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
        out.append((crop.flip(-1) if flips and i % 2 else crop).numpy())
    return np.concatenate(out).astype(np.float32)
