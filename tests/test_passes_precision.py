"""Precision pass (fp32 / fp16 / int8 per layer), ONNX and FX back ends, and calibration data."""
from __future__ import annotations

import contextlib
import copy
import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from torch import nn

import edgepass
from edgepass.calibration import calibration_feeds, calibration_tensors
from edgepass.errors import InputError
from edgepass.passes.precision_fx import PrecisionPassFX
from edgepass.passes.precision_onnx import PrecisionPassONNX


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.conv2(x))
        x = torch.relu(self.conv3(x))
        return self.fc(torch.flatten(self.pool(x), 1))


LAYERS = ["conv1", "conv2", "conv3", "fc"]


def smooth_images(n, seed=1, shape=(3, 16, 16)):
    """Real-ish inputs: smooth random images (low-frequency noise), not white noise."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, shape[0], shape[1] // 4, shape[2] // 4, generator=g)
    return torch.nn.functional.interpolate(low, size=shape[1:], mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # non-trivial BN statistics
        net.bn1.running_mean.uniform_(-0.2, 0.2)
        net.bn1.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("precision") / "tiny.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny, (smooth_images(1),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def digits():
    from edgepass.demo import demo_path

    d = np.load(str(demo_path("digits_data.npz")))
    return {k: d[k] for k in d.files}


def run_onnx(model, x: np.ndarray) -> np.ndarray:
    proto = ir.to_proto(model) if isinstance(model, ir.Model) else model
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def cosine(a, b) -> float:
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def layer_node(model: ir.Model, proto_graph_layer_ref: str) -> ir.Node:
    return next(n for n in model.graph if n.name == proto_graph_layer_ref)


def refs(proto) -> dict:
    return {op.name: op.ref for op in edgepass.analyze(proto).layers()}


# --------------------------------------------------------------------------------------------
# calibration data
# --------------------------------------------------------------------------------------------
def test_calibration_forms_give_the_same_feeds(tiny_onnx, tmp_path):
    x = smooth_images(20).numpy()
    base = calibration_feeds(x, tiny_onnx, batch_size=8)
    assert [f["x"].shape[0] for f in base] == [8, 8, 4]
    np.savez(tmp_path / "named.npz", x=x)
    np.savez(tmp_path / "anykey.npz", images=x)
    d = tmp_path / "dir"
    d.mkdir()
    np.save(d / "a.npy", x[:7])
    np.savez(d / "b.npz", x=x[7:])
    forms = [torch.from_numpy(x), [x[:3], x[3:11], torch.from_numpy(x[11:])], {"x": x}, [{"x": x}],
             tmp_path / "named.npz", str(tmp_path / "anykey.npz"), d, x.astype(np.float64)]
    for form in forms:
        feeds = calibration_feeds(form, tiny_onnx, batch_size=8)
        assert len(feeds) == len(base)
        for a, b in zip(feeds, base):
            assert a["x"].dtype == np.float32 and np.array_equal(a["x"], b["x"]), type(form)


def test_calibration_default_warns_and_is_seeded(tiny_onnx):
    with pytest.warns(UserWarning, match="accuracy will suffer"):
        a = calibration_feeds(None, tiny_onnx, batch_size=8)
    with pytest.warns(UserWarning):
        b = calibration_feeds(None, tiny_onnx, batch_size=8)
    assert sum(f["x"].shape[0] for f in a) == 32
    assert all(np.array_equal(p["x"], q["x"]) for p, q in zip(a, b))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 3, 8, 8), np.float32), "axis 2"),
    (np.zeros((4, 3, 16), np.float32), "3-d"),
    (np.zeros((4, 3, 16, 16), np.int64), "dtype"),
    ({"image": np.zeros((4, 3, 16, 16), np.float32)}, "missing input"),
    ([], "empty"),
    (np.full((2, 3, 16, 16), np.nan, np.float32), "NaN"),
    ("/nonexistent/calib.npz", "no such file"),
])
def test_bad_calibration_is_one_line_input_error(tiny_onnx, bad, match):
    with pytest.raises(InputError, match=match) as exc:
        calibration_feeds(bad, tiny_onnx)
    assert "\n" not in str(exc.value)


def test_calibration_tensors_for_fx(tiny):
    gm = torch.fx.symbolic_trace(tiny)
    batches = calibration_tensors(smooth_images(10), gm, batch_size=4)
    assert [b[0].shape[0] for b in batches] == [4, 4, 2] and isinstance(batches[0][0], torch.Tensor)
    with pytest.raises(InputError, match="no calibration data"):
        calibration_tensors(None, gm)
    with pytest.warns(UserWarning):
        assert calibration_tensors(None, gm, (smooth_images(1),))[0][0].shape[1:] == (3, 16, 16)


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------
def test_onnx_per_layer_control(tiny_onnx):
    model = ir.from_proto(tiny_onnx)
    r = PrecisionPassONNX({"conv2": "int8", "fc": "fp16"}, smooth_images(32))(model)
    out = r.model
    assert out is model  # in place, like every edgepass pass
    onnx.checker.check_model(ir.to_proto(out), full_check=True)
    ref = refs(ir.to_proto(out))
    for layer in LAYERS:
        node = layer_node(out, ref[layer])
        w = node.inputs[1]
        dq = w.producer() is not None and w.producer().op_type == "DequantizeLinear"
        assert dq == (layer == "conv2"), layer
        if layer == "conv2":
            assert w.producer().inputs[0].dtype == ir.DataType.INT8
            assert node.inputs[0].producer().op_type == "DequantizeLinear"
        else:
            assert w.const_value is not None
            assert w.dtype == (ir.DataType.FLOAT16 if layer == "fc" else ir.DataType.FLOAT)
    prec = {op.name: op.precision for op in edgepass.analyze(ir.to_proto(out)).layers()}
    assert prec == {"conv1": "fp32", "conv2": "int8", "conv3": "fp32", "fc": "fp16"}
    assert any("conv2: fp32 -> int8" in c for c in r.changes) and any("fc: fp32 -> fp16" in c for c in r.changes)
    assert not any(c.startswith(("conv1", "conv3")) for c in r.changes)


@pytest.mark.parametrize("prec", ["int8", "fp16"])
def test_onnx_outputs_close_to_fp32(tiny_onnx, prec):
    x = smooth_images(16, seed=7).numpy()
    r = PrecisionPassONNX({k: prec for k in LAYERS}, smooth_images(64))(ir.from_proto(tiny_onnx))
    ref, out = run_onnx(tiny_onnx, x), run_onnx(r.model, x)
    assert out.dtype == np.float32 and out.shape == ref.shape
    assert cosine(out, ref) > (0.99 if prec == "int8" else 0.9999)
    onnx.checker.check_model(ir.to_proto(r.model), full_check=True)


def test_onnx_deterministic(tiny_onnx):
    design = {"conv1": "int8", "conv2": "fp16", "conv3": "int8", "fc": "fp16"}
    a = PrecisionPassONNX(design, smooth_images(24))(ir.from_proto(tiny_onnx)).model
    b = PrecisionPassONNX(design, [smooth_images(24)[:5], smooth_images(24)[5:]])(ir.from_proto(tiny_onnx)).model
    assert ir.to_proto(a).SerializeToString() == ir.to_proto(b).SerializeToString()


def test_onnx_int8_runs_int8_kernels(tiny_onnx, tmp_path):
    r = PrecisionPassONNX({k: "int8" for k in LAYERS}, smooth_images(32))(ir.from_proto(tiny_onnx))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(ir.to_proto(r.model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops
    assert "QGemm" in ops or "QLinearMatMul" in ops


class PoolNet(nn.Module):
    """An int8 conv whose output goes through a 3x3 average pool to an fp32 conv, and through a max
    pool to another int8 conv (NB201 cells, densenet transitions, resnet stems)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        a = self.conv2(nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        return a.mean((2, 3)) + self.conv3(nn.functional.max_pool2d(x, 3, 2, 1)).mean((2, 3))


def test_onnx_int8_region_does_not_spread_into_average_pools(tmp_path):
    """The int8 region grows through parameter-free glue, but not through AveragePool: onnxruntime's
    QLinearAveragePool is 3-18x slower than the fp32 pool (as glue it made an NB201 design 7.8x
    slower than fp32). A max pool between int8 convs is glue (onnxruntime runs it as NhwcMaxPool).
    Outputs stay close to fp32."""
    torch.manual_seed(0)
    net = PoolNet().eval()
    path = tmp_path / "pool.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (smooth_images(1),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"])
    r = PrecisionPassONNX({"conv1": "int8", "conv3": "int8"}, smooth_images(32))(ir.from_proto(onnx.load(str(path))))
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(ir.to_proto(r.model).SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 2
    assert "QLinearAveragePool" not in ops and "MaxPool" not in ops   # max pool runs int8
    x = smooth_images(1, seed=5).numpy()
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert cosine(run_onnx(r.model, x), ref) > 0.99


def test_onnx_user_errors(tiny_onnx):
    model = ir.from_proto(tiny_onnx)
    with pytest.raises(InputError, match="unknown layer"):
        PrecisionPassONNX({"conv9": "int8"})(model)
    with pytest.raises(InputError, match="not one of"):
        PrecisionPassONNX({"conv1": "int4"})
    before = ir.to_proto(model).SerializeToString()
    r = PrecisionPassONNX({"conv1": "fp32"})(model)  # nothing to do
    assert not r.modified and r.model is model and ir.to_proto(model).SerializeToString() == before


def test_onnx_accepts_a_design(tiny_onnx):
    space = edgepass.design_space(tiny_onnx)
    design = edgepass.Design(precisions={k: "int8" for k in list(space.precisions)[:2]})
    r = PrecisionPassONNX(design, smooth_images(16))(ir.from_proto(tiny_onnx))
    assert sum("-> int8" in c for c in r.changes) == 2


def test_digits_onnx_keeps_accuracy(digits, digits_onnx):
    proto = onnx.load(str(digits_onnx))
    layers = [op.name for op in edgepass.analyze(proto).layers()]
    x, y = digits["x_test"], digits["y_test"]
    base = (run_onnx(proto, x).argmax(1) == y).mean() * 100
    for prec, max_loss in (("int8", 1.0), ("fp16", 0.2)):
        r = PrecisionPassONNX({k: prec for k in layers}, digits["calibration"])(ir.from_proto(proto))
        acc = (run_onnx(r.model, x).argmax(1) == y).mean() * 100
        assert acc >= base - max_loss, (prec, base, acc)


def test_resnet18_half_int8(tvzoo):
    proto = onnx.load(str(tvzoo.onnx("resnet18")))
    layers = [op.name for op in edgepass.analyze(proto).layers()]
    design = {k: "int8" for k in layers[::2]}
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(3)).numpy()
    r = PrecisionPassONNX(design, [x[i:i + 1] for i in range(4)])(ir.from_proto(proto))
    out_proto = ir.to_proto(r.model)
    onnx.checker.check_model(out_proto, full_check=True)
    prec = {op.name: op.precision for op in edgepass.analyze(out_proto).layers()}
    assert prec == {k: design.get(k, "fp32") for k in layers}
    out = run_onnx(r.model, x[:1])
    assert out.shape == (1, 1000) and np.isfinite(out).all()
    assert cosine(out, run_onnx(proto, x[:1])) > 0.95


# --------------------------------------------------------------------------------------------
# FX
# --------------------------------------------------------------------------------------------
def test_fx_int8_convert_matches_fp32(tiny):
    gm = copy.deepcopy(torch.fx.symbolic_trace(tiny))
    x = smooth_images(16, seed=7)
    with torch.no_grad():
        ref = gm(x)
    r = PrecisionPassFX({"conv2": "int8", "conv3": "int8", "fc": "int8"}, smooth_images(64))(gm)
    assert r.model is gm  # in place
    mods = dict(r.model.named_modules())
    assert "quantized" in type(mods["conv2"]).__module__ and isinstance(mods["conv1"], nn.Conv2d)
    with torch.no_grad():
        assert cosine(r.model(x), ref) > 0.99
    assert all(p.dtype == torch.float32 for p in tiny.parameters())  # the traced-from module is untouched


def test_fx_fake_and_fp16(tiny):
    gm = torch.fx.symbolic_trace(tiny)
    x = smooth_images(16, seed=7)
    with torch.no_grad():
        ref = gm(x)
        fake = PrecisionPassFX({k: "int8" for k in LAYERS}, smooth_images(64), mode="fake")(copy.deepcopy(gm)).model
        conv = PrecisionPassFX({k: "int8" for k in LAYERS}, smooth_images(64))(copy.deepcopy(gm)).model
        assert cosine(fake(x), ref) > 0.99
        assert cosine(fake(x), conv(x)) > 0.999  # same observers: the estimate tracks the deployable module
        for fp16 in ("native", "simulate"):
            r = PrecisionPassFX({"conv2": "fp16", "fc": "fp16"}, fp16=fp16)(copy.deepcopy(gm))
            out = r.model(x)
            assert out.dtype == torch.float32 and cosine(out, ref) > 0.9999
            w = dict(r.model.named_modules())["conv2"].weight
            assert w.dtype == (torch.float16 if fp16 == "native" else torch.float32)
            assert any("conv2: fp32 -> fp16" in c for c in r.changes)


def test_fx_user_errors(tiny):
    gm = torch.fx.symbolic_trace(tiny)
    with pytest.raises(InputError, match="unknown layer"):
        PrecisionPassFX({"conv9": "int8"})(gm)
    with pytest.raises(InputError, match="mode"):
        PrecisionPassFX({}, mode="qat")


def test_digits_fx_keeps_accuracy(digits):
    from edgepass.demo import DigitsNet, demo_path

    net = DigitsNet()
    net.load_state_dict(torch.load(str(demo_path("digits_cnn.pt")), weights_only=True))
    gm = torch.fx.symbolic_trace(net.eval())
    layers = [n.target for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(gm.get_submodule(n.target), (nn.Conv2d, nn.Linear))]
    x, y = torch.from_numpy(digits["x_test"]), digits["y_test"]
    with torch.no_grad():
        base = (gm(x).argmax(1).numpy() == y).mean() * 100
        for prec, mode, max_loss in (("int8", "convert", 1.0), ("int8", "fake", 1.0), ("fp16", "convert", 0.2)):
            m = PrecisionPassFX({k: prec for k in layers}, digits["calibration"], mode=mode)(copy.deepcopy(gm)).model
            acc = (m(x).argmax(1).numpy() == y).mean() * 100
            assert acc >= base - max_loss, (prec, mode, base, acc)
