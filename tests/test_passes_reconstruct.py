"""Least-squares reconstruction (ONNX): the refit itself is exact on conv/linear layouts (groups,
strides, pads, dilations, transposed Gemm), and on the bundled digits CNN it keeps accuracy where
statistics matching alone loses it."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgepass
from edgepass.demo import DEMO_DATA, demo_path
from edgepass.passes import reconstruct
from edgepass.passes.reconstruct import RefitLayer
from edgepass.passes.recalibrate import output_session
from edgepass.rewrite import run_model


@pytest.fixture(scope="module")
def data():
    return np.load(str(demo_path(DEMO_DATA)))


def accuracy(model, data) -> float:
    logits = run_model(model, [data["x_test"]])[0]
    return float((logits.argmax(1) == data["y_test"]).mean())


def _single_node_model(node, x_shape, inits: dict):
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def no_ridge(monkeypatch):
    monkeypatch.setattr(reconstruct, "RIDGE", 1e-10)   # the exact answer, not one pulled towards zero


def _refit_from_zero(proto, x):
    """Fit the model's single layer, started at zero weights, to its own outputs on ``x``."""
    y = output_session(proto, ["y"]).run(["y"], {"x": x})[0].astype(np.float64)
    lay = RefitLayer.from_node(next(iter(ir.from_proto(proto).graph)), "y", None)
    lay.w0, lay.b0 = np.zeros_like(lay.w0), np.zeros_like(lay.b0)   # start far from the answer
    lay.positions(y, len(x), np.random.default_rng(1))
    rows = lay.patches(x.astype(np.float64), 0)
    return lay.solve(rows.reshape(rows.shape[0], -1), lay.targets(y, 0))


@pytest.mark.parametrize("attrs", [
    {"group": 1, "strides": [1, 1], "pads": [1, 1, 1, 1]},
    {"group": 2, "strides": [2, 1], "pads": [0, 2, 1, 0], "dilations": [1, 2]},
    {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1]},          # depthwise
])
def test_conv_refit_recovers_the_weights_that_produced_the_outputs(attrs, no_ridge):
    """From inputs and the outputs of a known conv, the fit finds that conv: im2col, grouping and
    the weight layout agree with onnxruntime's Conv."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 6 // attrs["group"], 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    proto = _single_node_model(helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", **attrs),
                               [None, 6, 9, 11], {"w": w, "b": b})
    w_fit, b_fit = _refit_from_zero(proto, rng.standard_normal((8, 6, 9, 11)).astype(np.float32))
    np.testing.assert_allclose(w_fit, w, atol=1e-4)
    np.testing.assert_allclose(b_fit, b, atol=1e-4)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_refit_recovers_the_weights(trans_b, no_ridge):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((10, 4) if trans_b else (4, 10)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    proto = _single_node_model(helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=trans_b),
                               [None, 4], {"w": w, "b": b})
    w_fit, b_fit = _refit_from_zero(proto, rng.standard_normal((64, 4)).astype(np.float32))
    np.testing.assert_allclose(w_fit, w, atol=1e-4)
    np.testing.assert_allclose(b_fit, b, atol=1e-4)


@pytest.mark.parametrize("ratio", [0.6, 0.4])
def test_reconstruction_keeps_accuracy_that_statistics_matching_loses(digits_onnx, data, ratio):
    design = edgepass.design_space(digits_onnx).uniform(ratio)
    cal = data["calibration"]
    recal = edgepass.apply(digits_onnx, design, calibration_data=cal, reconstruct=False)
    refit = edgepass.apply(digits_onnx, design, calibration_data=cal, reconstruct=True)
    assert accuracy(refit, data) > accuracy(recal, data) + 0.05
    assert accuracy(refit, data) > accuracy(digits_onnx, data) - 0.1
    assert edgepass.verify(digits_onnx, refit, design).ok


def test_reconstruction_is_deterministic_and_leaves_the_input_alone(digits_onnx, data):
    before = onnx.load(str(digits_onnx)).SerializeToString()
    design = edgepass.design_space(digits_onnx).uniform(0.5, precision="int8")
    a = edgepass.apply(digits_onnx, design, calibration_data=data["calibration"], reconstruct=True)
    b = edgepass.apply(digits_onnx, design, calibration_data=data["calibration"], reconstruct=True)
    assert a.SerializeToString() == b.SerializeToString()
    assert onnx.load(str(digits_onnx)).SerializeToString() == before


def test_default_is_on_for_small_models_only(digits_onnx):
    assert reconstruct.default_on(edgepass.design_space(digits_onnx))
    torchvision = pytest.importorskip("torchvision")
    import torch

    net = torchvision.models.resnet18(weights=None).eval()
    assert not reconstruct.default_on(edgepass.design_space(net, (torch.zeros(1, 3, 224, 224),)))


def test_rewrite_given_the_ir_equals_rewrite_that_analyses(digits_onnx, data):
    """compile hands its IR to the rewrite (and the precision pass reuses it): same bytes as a
    rewrite that analyses the model itself."""
    from edgepass.rewrite import apply_design

    graph = edgepass.analyze(digits_onnx)
    design = edgepass.design_space(digits_onnx).uniform(0.5, precision="int8")
    a = apply_design(digits_onnx, design, calibration_data=data["calibration"], graph=graph).model
    b = apply_design(digits_onnx, design, calibration_data=data["calibration"]).model
    assert a.SerializeToString() == b.SerializeToString()


def test_fx_reconstruction_keeps_accuracy_and_leaves_the_module_alone(data):
    import torch

    from edgepass.demo import DigitsNet

    net = DigitsNet()
    net.load_state_dict(torch.load(str(demo_path("digits_cnn.pt"))))
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = (torch.from_numpy(data["x_test"][:1]),)
    design = edgepass.design_space(net, x).uniform(0.5)
    cal = data["calibration"]
    bn_only = edgepass.apply(net, design, example_inputs=x, calibration_data=cal, reconstruct=False)
    refit = edgepass.apply(net, design, example_inputs=x, calibration_data=cal, reconstruct=True)
    again = edgepass.apply(net, design, example_inputs=x, calibration_data=cal, reconstruct=True)
    assert accuracy(refit, data) > accuracy(bn_only, data) + 0.1
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in refit.state_dict().items())
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items()) and not net.training
    assert edgepass.verify(net, refit, design, example_inputs=x).ok
