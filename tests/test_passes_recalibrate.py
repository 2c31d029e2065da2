"""Recalibration after narrowing: re-estimated batch norms (FX) and matched statistics folded into
the convs (ONNX) bring back accuracy of the bundled digits CNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgepass
from edgepass.demo import DEMO_DATA, DigitsNet, demo_path
from edgepass.rewrite import run_model


@pytest.fixture(scope="module")
def digits():
    data = np.load(str(demo_path(DEMO_DATA)))
    net = DigitsNet()
    net.load_state_dict(torch.load(str(demo_path("digits_cnn.pt"))))
    return net.eval(), data


def accuracy(model, data) -> float:
    logits = run_model(model, [data["x_test"]])[0]
    return float((logits.argmax(1) == data["y_test"]).mean())


@pytest.mark.parametrize("ratio", [0.75, 0.5])
def test_fx_batchnorm_recalibration_recovers_accuracy(digits, ratio):
    net, data = digits
    x = (torch.from_numpy(data["x_test"][:1]),)
    design = edgepass.design_space(net, x).uniform(ratio)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    plain = edgepass.apply(net, design, example_inputs=x, calibration_data=data["calibration"], recalibrate=False)
    recal = edgepass.apply(net, design, example_inputs=x, calibration_data=data["calibration"],
                           reconstruct=False)
    assert accuracy(recal, data) > accuracy(plain, data) + 0.2
    assert edgepass.verify(net, recal, design, example_inputs=x).ok
    # the user's module keeps its statistics and mode
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()) and not net.training


@pytest.mark.parametrize("ratio", [0.75, 0.5])
def test_onnx_statistics_matching_recovers_accuracy(digits, digits_onnx, ratio):
    _, data = digits
    design = edgepass.design_space(digits_onnx).uniform(ratio)
    plain = edgepass.apply(digits_onnx, design, calibration_data=data["calibration"], recalibrate=False)
    recal = edgepass.apply(digits_onnx, design, calibration_data=data["calibration"], reconstruct=False)
    assert accuracy(recal, data) > accuracy(plain, data) + 0.2
    assert edgepass.verify(digits_onnx, recal, design).ok


def test_recalibration_is_deterministic(digits, digits_onnx):
    _, data = digits
    design = edgepass.design_space(digits_onnx).uniform(0.75, precision="int8")
    a = edgepass.apply(digits_onnx, design, calibration_data=data["calibration"])
    b = edgepass.apply(digits_onnx, design, calibration_data=data["calibration"])
    assert a.SerializeToString() == b.SerializeToString()


def test_identity_design_is_not_recalibrated(digits, digits_onnx):
    _, data = digits
    sp = edgepass.design_space(digits_onnx)
    out = edgepass.apply(digits_onnx, sp.identity(), calibration_data=data["calibration"])
    assert edgepass.verify(digits_onnx, out, sp.identity()).ok


def test_finetuning_recovers_more_and_is_deterministic(digits):
    net, data = digits
    x = (torch.from_numpy(data["x_test"][:1]),)
    design = edgepass.design_space(net, x).uniform(0.5)
    recal = edgepass.apply(net, design, example_inputs=x, calibration_data=data["calibration"], reconstruct=False)
    runs = [edgepass.apply(net, design, example_inputs=x, calibration_data=data["calibration"],
                           finetune=data["calibration"], finetune_steps=120, seed=3) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))
    assert accuracy(runs[0], data) > accuracy(recal, data) + 0.1
    assert edgepass.verify(net, runs[0], design, example_inputs=x).ok


def test_finetuning_needs_pytorch(digits_onnx, digits):
    _, data = digits
    design = edgepass.design_space(digits_onnx).uniform(0.5)
    with pytest.raises(edgepass.InputError, match="needs the PyTorch model"):
        edgepass.apply(digits_onnx, design, finetune=data["calibration"])


def test_one_pass_statistics_equal_layer_by_layer(digits, digits_onnx, monkeypatch):
    """The one-session recalibration (batch-norm-style normalisation inside the graph) gives the
    same model as correcting one layer at a time with a session per layer, on one calibration batch."""
    from edgepass.passes import recalibrate

    _, data = digits
    design = edgepass.design_space(digits_onnx).uniform(0.5)
    cal = data["calibration"][:48]
    fast = edgepass.apply(digits_onnx, design, calibration_data=cal, reconstruct=False)
    monkeypatch.setattr(recalibrate, "_normalized_stats", lambda *a: 1 / 0)   # force the fallback
    slow = edgepass.apply(digits_onnx, design, calibration_data=cal, reconstruct=False)
    x = data["x_test"][:200]
    a, b = run_model(fast, [x])[0], run_model(slow, [x])[0]
    assert np.abs(a - b).max() <= 1e-3 * np.abs(b).max()
    assert accuracy(fast, data) == pytest.approx(accuracy(slow, data), abs=0.005)
