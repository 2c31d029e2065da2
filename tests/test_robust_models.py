"""Small and odd models a new user builds, and hostile model/data inputs: every one compiles with the
default method or fails with one line and its documented exit code (issue 20)."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import edgepass
from edgepass.cli import main
from edgepass.errors import EdgepassError, InputError, UnsupportedModelError
from edgepass.export import export_onnx

DEVICE = "local/cpu-ort-1t"
#: a cheap amortized optimizer: these tests are about the default method not crashing, not its quality
SMALL_OPTIMIZER = {"devices": [DEVICE, "help/pixel2", "hwnasbench/raspi4"], "synthetic": 6, "budgets_per_device": 3,
                   "epochs": 2, "hidden": 16}


# ------------------------------------------------------------------------------------------ models
class Plain(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


class Residual(Plain):
    def __init__(self):
        super().__init__()
        self.bn, self.c3 = torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.bn(self.c1(x)))
        x = x + self.c3(torch.relu(self.c2(x)))
        return self.fc(x.mean((2, 3)))


class Depthwise(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.dw = torch.nn.Conv2d(3, 16, 1), torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c2 = torch.nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.c2(torch.relu(self.dw(torch.relu(self.c1(x)))))


def _seq(*layers):
    torch.manual_seed(0)
    return torch.nn.Sequential(*layers).eval()


def _tiny_models():
    """name -> (module, example input shape, dynamic batch)"""
    torch.manual_seed(0)
    return {
        "plain": (Plain().eval(), (1, 3, 16, 16), False),
        "residual": (Residual().eval(), (1, 3, 16, 16), False),
        "dynamic_batch": (Plain().eval(), (2, 3, 16, 16), True),
        "one_conv": (_seq(torch.nn.Conv2d(3, 4, 3)), (1, 3, 8, 8), False),
        "mlp": (_seq(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)), (1, 16), False),
        "depthwise": (Depthwise().eval(), (1, 3, 16, 16), False),
        "pointwise_only": (_seq(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1)), (1, 3, 8, 8),
                           False),
        "tiny_spatial": (Plain().eval(), (1, 3, 2, 2), False),
    }


def _export(module, shape, path, *, dynamic=False):
    kw = {"input_names": ["x"], "dynamic_axes": {"x": {0: "batch"}}} if dynamic else {"input_names": ["x"]}
    import contextlib
    import io
    import warnings

    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(*shape),), str(path), dynamo=False, opset_version=17, **kw)
    return path


def _conv_net(extra_nodes=(), *, opset=17, domains=(), name_nodes=True):
    """x -> Conv(3->8) -> [extra nodes a -> b] -> Conv(8->4) -> y, built with onnx.helper."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "c1.weight")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "c2.weight")
    mid = list(extra_nodes) or [helper.make_node("Relu", ["a"], ["b"])]
    nodes = [helper.make_node("Conv", ["x", "c1.weight"], ["a"], pads=[1] * 4)] + mid + \
        [helper.make_node("Conv", ["b", "c2.weight"], ["y"], pads=[1] * 4)]
    if name_nodes:
        for i, n in enumerate(nodes):
            n.name = f"n{i}"
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=[w1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] +
                          [helper.make_opsetid(d, 1) for d in domains])
    m.ir_version = 10
    return m


# ------------------------------------------------------------------ 1. the default method on small nets
def test_budgets_of_a_device_whose_identity_is_near_its_cheapest_design_are_sampled():
    from edgepass.optimizers.model_space import sample_budgets

    budgets = sample_budgets(np.random.default_rng(0), lo=1.0, hi=1.01, n=5)   # identity within 2 % of cheapest
    assert np.allclose(budgets, 1.01)


@pytest.mark.parametrize("name", list(_tiny_models()))
def test_the_default_method_optimizes_small_models(tmp_path, name):
    module, shape, dynamic = _tiny_models()[name]
    space = edgepass.design_space(str(_export(module, shape, tmp_path / f"{name}.onnx", dynamic=dynamic)))
    assert space.knobs(), "each of these nets has something to tune"
    original = edgepass.predict(space.graph, DEVICE).latency_ms
    r = edgepass.optimize(space, DEVICE, latency_ms=0.8 * original, cache=tmp_path, train_options=SMALL_OPTIMIZER)
    assert r.method == "amortized" and space.validate(r.design) == r.design


def test_the_default_method_compiles_a_small_residual_net(tmp_path):
    module, shape, _ = _tiny_models()["residual"]
    path = _export(module, shape, tmp_path / "residual.onnx")
    from edgepass.compile import compile_with_report

    out, report, _ = compile_with_report(str(path), DEVICE, latency_fraction=0.9, measure=False, evaluate_top=0,
                                         optimizer_options=SMALL_OPTIMIZER, cache_dir=str(tmp_path / "cache"),
                                         accuracy_options={"max_levels": 3, "synthetic_samples": 8})
    assert report.method == "amortized" and report.verified and isinstance(out, onnx.ModelProto)


# ------------------------------------------------------------------ 2. nothing to tune
def _no_weights_model():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), helper.make_node("Add", ["r", "x"], ["y"], name="add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _if_model():
    """A data-dependent If on the input (both branches weight-free)."""
    def branch(op, out):
        return helper.make_graph([helper.make_node(op, ["x"], [out])], op, [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 3, 8, 8])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array(0, np.float32)),
                              name="zero"),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="greater"),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu", "t"), else_branch=branch("Neg", "e"),
                              name="if")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("make", [_no_weights_model, _if_model], ids=["no_weights", "if"])
@pytest.mark.parametrize("budget_ms,code", [(1e4, 0), (1e-6, 3)], ids=["met", "not_met"])
def test_a_model_with_nothing_to_tune_is_kept_with_one_line(tmp_path, capsys, make, budget_ms, code):
    src, dst = tmp_path / "m.onnx", tmp_path / "out.onnx"
    onnx.save(make(), src)
    rc = main(["compile", str(src), str(dst), "--device", DEVICE, "--latency-ms", str(budget_ms),
               "--cache-dir", str(tmp_path / "cache")])
    out, err = capsys.readouterr()
    assert rc == code and "Traceback" not in err
    assert len([line for line in out.splitlines() if "nothing to optimize" in line]) == 1
    original, out = onnx.load(src), onnx.load(dst)
    assert [n.op_type for n in out.graph.node] == [n.op_type for n in original.graph.node]


def test_optimize_with_no_knobs_returns_the_identity():
    space = edgepass.design_space(_no_weights_model())
    r = edgepass.optimize(space, DEVICE, latency_ms=1e4, method="search")
    assert r.feasible and r.design == space.identity() and any("nothing to optimize" in n for n in r.notes)


# ------------------------------------------------------------------ 3. unknown ops, future opsets
def test_unnamed_nodes_around_an_unknown_op_are_rewritten(tmp_path):
    """onnx.helper models often leave node names empty: the passes must still find the layers."""
    m = _conv_net([helper.make_node("CumSum", ["a", "axis"], ["b"])], name_nodes=False)
    m.graph.initializer.append(numpy_helper.from_array(np.array(1, np.int64), "axis"))
    space = edgepass.design_space(m)
    small = edgepass.apply(m, space.uniform(0.5))
    assert numpy_helper.to_array(small.graph.initializer[0]).shape[0] in (4, 8)
    assert not any(n.name for n in m.graph.node), "the caller's model must not be renamed"
    assert "CumSum" in edgepass.analyze(m).graph["unknown_ops"]


@pytest.mark.parametrize("model", [
    _conv_net([helper.make_node("MyOp", ["a"], ["b"], domain="com.acme", name="custom")], domains=["com.acme"]),
    _conv_net(opset=30)], ids=["custom_domain_op", "opset_30"])
def test_a_model_onnxruntime_cannot_run_is_analysed_and_refused_by_compile(tmp_path, capsys, model):
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    before = src.read_bytes()
    assert main(["analyze", str(src)]) == 0
    assert main(["predict", str(src), "--device", DEVICE]) == 0
    assert len(edgepass.design_space(str(src)).knobs()) > 0
    capsys.readouterr()
    rc = main(["compile", str(src), str(tmp_path / "out.onnx"), "--device", DEVICE, "--latency-fraction", "0.9",
               "--method", "search", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert rc == UnsupportedModelError.exit_code and "onnxruntime cannot run this model" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert src.read_bytes() == before and not (tmp_path / "out.onnx").exists()


# ------------------------------------------------------------------ 4. int64 inputs, several inputs
class Embedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.a, self.b = torch.nn.Embedding(50, 16), torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)

    def forward(self, ids):
        return self.b(torch.relu(self.a(self.emb(ids)))).mean(1)


class TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(3, 8, 3, padding=1), \
            torch.nn.Conv2d(8, 4, 1)

    def forward(self, x, y):
        return self.c3(torch.relu(self.c1(x) + self.c2(y)))


def _export_embedding(path):
    torch.manual_seed(0)
    torch.onnx.export(Embedding().eval(), (torch.randint(0, 50, (1, 6)),), str(path), input_names=["ids"],
                      dynamo=False, opset_version=17)
    return path


def _export_two_inputs(path):
    torch.manual_seed(0)
    torch.onnx.export(TwoInputs().eval(), (torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)), str(path),
                      input_names=["x", "y"], dynamo=False, opset_version=17)
    return path


def test_an_int64_input_model_is_rewritten_and_verified_without_calibration_data(tmp_path):
    path = _export_embedding(tmp_path / "emb.onnx")
    space = edgepass.design_space(str(path))
    design = space.uniform(0.5)
    with pytest.warns(UserWarning, match="no calibration data"):
        small = edgepass.apply(str(path), space.uniform(0.5, precision="int8"))
    assert edgepass.verify(str(path), edgepass.apply(str(path), design), design).ok
    assert small.graph.input[0].type.tensor_type.elem_type == TensorProto.INT64


@pytest.mark.parametrize("export,listed", [(_export_embedding, "ids (int64)"),
                                           (_export_two_inputs, "x (float32), y (float32)")],
                         ids=["int64_input", "two_inputs"])
@pytest.mark.parametrize("with_data", [False, True], ids=["no_data", "data"])
def test_compile_refuses_inputs_the_accuracy_predictor_cannot_feed_in_one_line(tmp_path, capsys, export, listed,
                                                                               with_data):
    src = export(tmp_path / "m.onnx")
    args = ["compile", str(src), str(tmp_path / "out.onnx"), "--device", DEVICE, "--latency-fraction", "0.9",
            "--method", "search", "--cache-dir", str(tmp_path / "cache")]
    if with_data:
        arrays = {"ids": np.zeros((4, 6), np.int64)} if "ids" in listed else \
            {n: np.zeros((4, 3, 8, 8), np.float32) for n in ("x", "y")}
        np.savez(tmp_path / "calib.npz", **arrays)
        args += ["--calibration", str(tmp_path / "calib.npz")]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == UnsupportedModelError.exit_code and listed in err and "expects float32" not in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "out.onnx").exists()


# ------------------------------------------------------------------ 5. absurd sizes
def _with_input_dims(model, dims):
    for d, v in zip(model.graph.input[0].type.tensor_type.shape.dim, dims):
        d.Clear()
        d.dim_value = v
    return model


@pytest.mark.parametrize("dims", [(1, 3, 10**9, 10**9), (10**6, 3, 8, 8), (1, 3, 2**13, 2**13)],
                         ids=["huge_spatial", "huge_batch", "product_of_dims"])
def test_a_declared_input_over_the_size_limit_is_refused_before_anything_allocates(tmp_path, capsys, dims):
    src = tmp_path / "m.onnx"
    onnx.save(_with_input_dims(_conv_net(), dims), src)
    rc = main(["compile", str(src), str(tmp_path / "out.onnx"), "--device", DEVICE, "--latency-fraction", "0.9",
               "--method", "search", "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert rc == InputError.exit_code and "over edgepass's limit" in err and len(err.splitlines()) == 1


def test_an_intermediate_tensor_over_the_size_limit_is_refused(tmp_path):
    shape = numpy_helper.from_array(np.array([1, 8, 40_000, 40_000], np.int64), "shape")
    m = _conv_net([helper.make_node("GlobalAveragePool", ["a"], ["g"], name="gap"),
                   helper.make_node("Expand", ["g", "shape"], ["big"], name="expand"),
                   helper.make_node("MaxPool", ["big"], ["b"], kernel_shape=[5000, 5000], strides=[5000, 5000],
                                    name="pool")])
    m.graph.initializer.append(shape)
    with pytest.raises(UnsupportedModelError, match="over edgepass's limit"):
        edgepass.analyze(m)


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (1, 3, -8, 8), (1, 3, 8.5, 8), ("a", 3, 8, 8), (1, 3, 10**6, 10**6)])
def test_input_shapes_must_be_positive_integers_within_the_limit(shape):
    with pytest.raises(InputError):
        edgepass.analyze(_conv_net(), input_shapes={"x": shape})


# ------------------------------------------------------------------ 6. extreme calibration values
@pytest.mark.parametrize("value", [1e200, np.inf, np.nan])
def test_a_refit_whose_least_squares_system_overflows_keeps_the_layer(value, recwarn):
    from edgepass.passes.reconstruct import RefitLayer, refit, refit_notes

    layer = RefitLayer(np.ones((4, 8)), np.zeros(4))
    assert refit(layer, np.full((16, 8), value), np.ones((16, 4))) is None
    assert refit(layer, np.random.default_rng(0).standard_normal((16, 8)), np.ones((16, 4))) is not None
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert "kept the weights of 1 layer(s)" in refit_notes(set(), ["c1"], 16)[0]


@pytest.mark.parametrize("value", [3e38, np.inf, np.nan], ids=["float_max", "inf", "nan"])
def test_calibration_data_the_model_cannot_run_on_is_refused_in_one_line(tmp_path, capsys, value):
    src = _export(*_tiny_models()["plain"][:2], tmp_path / "plain.onnx")
    np.savez(tmp_path / "calib.npz", x=np.full((4, 3, 16, 16), value, np.float32))
    rc = main(["compile", str(src), str(tmp_path / "out.onnx"), "--device", DEVICE, "--latency-fraction", "0.9",
               "--method", "search", "--calibration", str(tmp_path / "calib.npz"), "--reconstruct",
               "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert rc == InputError.exit_code and len(err.splitlines()) == 1 and ("not finite" in err or "NaN" in err)


# ------------------------------------------------------------------ calibration files over the limit
def test_a_small_npz_that_expands_past_the_limit_is_read_capped(tmp_path, monkeypatch):
    """A compressed .npz of zeros is a few KB on disk and any size once expanded: only the capped
    number of samples is ever decompressed, and the user is told."""
    import warnings

    from edgepass import calibration

    monkeypatch.setattr(calibration, "MAX_CALIBRATION_SAMPLES", 100)
    path = tmp_path / "big.npz"
    np.savez_compressed(path, calibration=np.zeros((5000, 1, 8, 8), np.float32))
    assert path.stat().st_size < 20_000
    spec = calibration.InputSpec("image", (None, 1, 8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = calibration.samples(str(path), [spec])
    assert got["image"].shape == (100, 1, 8, 8)
    assert any("first samples only" in str(w.message) and "100 of 5000" in str(w.message) for w in caught)


def test_the_byte_limit_caps_every_input_of_an_npz_alike(tmp_path, monkeypatch):
    from edgepass import calibration

    monkeypatch.setattr(calibration, "MAX_CALIBRATION_BYTES", 64 * 4 * 10)   # 10 samples of 1x8x8 float32
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 1, 8, 8)).astype(np.float32), rng.normal(size=(50, 4)).astype(np.float32)
    path = tmp_path / "two.npz"
    np.savez(path, a=a, b=b)
    specs = [calibration.InputSpec("a", (None, 1, 8, 8)), calibration.InputSpec("b", (None, 4))]
    with pytest.warns(UserWarning, match="first samples only"):
        got = calibration.samples(str(path), specs)
    assert got["a"].shape[0] == got["b"].shape[0] == 10
    np.testing.assert_array_equal(got["a"], a[:10])
    np.testing.assert_array_equal(got["b"], b[:10])


def test_npy_files_in_a_folder_share_one_budget(tmp_path, monkeypatch):
    from edgepass import calibration

    monkeypatch.setattr(calibration, "MAX_CALIBRATION_SAMPLES", 12)
    for i in range(3):
        np.save(tmp_path / f"{i}.npy", np.full((8, 1, 8, 8), i, np.float32))
    with pytest.warns(UserWarning, match="first samples only"):
        got = calibration.samples(str(tmp_path), [calibration.InputSpec("x", (None, 1, 8, 8))])
    assert got["x"].shape[0] == 12 and (got["x"][:8] == 0).all() and (got["x"][8:] == 1).all()


def test_an_npz_holding_a_pickle_is_refused_without_unpickling(tmp_path):
    from edgepass import calibration
    from edgepass.errors import InputError

    path = tmp_path / "obj.npz"
    np.savez(path, calibration=np.array([{"a": 1}, 2], dtype=object))
    with pytest.raises(InputError, match="object data"):
        calibration.samples(str(path), [calibration.InputSpec("x", (None, 2))])


def test_a_tensor_read_inside_an_if_branch_keeps_its_channels(tmp_path):
    """An If whose branches read the classifier's output from the outer scope (not as a listed input):
    that output has a consumer edgepass cannot rewrite, so its channels are frozen, not narrowed."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from hostile.inputs import if_net

    from edgepass.frontends.onnx import outer_scope_inputs

    model = if_net()
    assert outer_scope_inputs(model.graph.node[-1]) == ["y0"]
    space = edgepass.design_space(model)
    assert "Gemm_6" not in {g.id for g in space.groups}
    assert any("If" in (g.frozen or "") for g in space.frozen)
