"""IR: the FX and ONNX front ends agree on real architectures, and MACs match torchvision's figures."""
from __future__ import annotations

import onnx
import pytest

import edgepass
from conftest import ARCHS

EXPORTERS = ["legacy", "dynamo"]


def published_gmacs(name: str) -> float:
    tv = pytest.importorskip("torchvision")
    return tv.models.get_model_weights(name).DEFAULT.meta["_ops"]  # torchvision counts MACs as "GFLOPS"


@pytest.fixture(scope="module")
def fx_graphs(tvzoo):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = edgepass.analyze(tvzoo.model(name), tvzoo.example(name))
        return cache[name]
    return get


@pytest.mark.parametrize("name", ARCHS)
def test_fx_macs_match_torchvision(name, fx_graphs):
    g = fx_graphs(name)
    assert g.macs / 1e9 == pytest.approx(published_gmacs(name), rel=0.03)
    assert g.params == sum(p.numel() for p in fx_graphs(name).graph["gm"].parameters())
    assert not g.graph["unknown_ops"]


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("name", ARCHS)
def test_onnx_ir_agrees_with_fx(name, exporter, fx_graphs, tvzoo):
    fx = fx_graphs(name)
    ox = edgepass.analyze(tvzoo.onnx(name, exporter))
    fl = {op.name: op for op in fx.layers()}
    ol = {op.name: op for op in ox.layers()}
    assert list(fl) == list(ol), "same weighted layers, same names, same order"
    for layer, op in fl.items():
        assert ol[layer].macs == pytest.approx(op.macs, rel=0.01), layer
        assert ol[layer].kind == op.kind
        for key in ("in_channels", "out_channels", "kernel", "stride", "groups", "in_features", "out_features"):
            assert ol[layer].attrs.get(key) == op.attrs.get(key), (layer, key)
    assert ox.macs == pytest.approx(fx.macs, rel=0.01)
    assert ox.params == pytest.approx(fx.params, rel=0.02)  # BN folded by the exporters
    assert not ox.graph["unknown_ops"]


def test_summary_fields(fx_graphs):
    s = fx_graphs("resnet18").summary()
    assert s["macs"] == sum(layer["macs"] for layer in s["layers"])
    first = s["layers"][0]
    assert first == {"name": "conv1", "op": "conv", "macs": 118013952, "params": 9408, "in_channels": 3,
                     "out_channels": 64, "kernel": [7, 7], "stride": [2, 2], "groups": 1, "precision": "fp32"}
    fc = s["layers"][-1]
    assert (fc["name"], fc["op"], fc["in_channels"], fc["out_channels"]) == ("fc", "linear", 512, 1000)


def test_node_fields(fx_graphs):
    g = fx_graphs("mobilenet_v2")
    op = g.op("features.2.conv.1.0")   # a depthwise 3x3
    assert op.attrs["groups"] == op.attrs["in_channels"] == 96
    assert op.in_shapes == [(1, 96, 112, 112)] and op.out_shapes == [(1, 96, 56, 56)]
    assert op.bytes_read == 4 * (96 * 112 * 112 + 96 * 9) and op.bytes_written == 4 * 96 * 56 * 56
    assert op.ref == "features_2_conv_1_0"
    # edges follow tensors
    preds = [g.op(p) for p in g.predecessors(op.name)]
    assert [p.kind for p in preds] == ["act"]  # the ReLU6 after the expansion conv's BN


def test_onnx_refs_point_at_nodes(tvzoo):
    path = tvzoo.onnx("resnet18", "legacy")
    g = edgepass.analyze(path)
    names = {n.name for n in onnx.load(str(path)).graph.node}
    assert all(op.ref in names for op in g.ops())
    assert g.op("layer1.0.conv1").ref == "/layer1/layer1.0/conv1/Conv"


def test_unknown_onnx_operator_is_reported_not_fatal():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 4, 3, 3], [0.1] * 288)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("LpNormalization", ["c"], ["y"], name="mystery", axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]), opset_imports=[helper.make_opsetid("", 17)])
    g = edgepass.analyze(model)
    assert g.graph["unknown_ops"] == ["LpNormalization"]
    assert g.op("mystery").kind == "unknown"
    assert g.layers()[0].macs == 8 * 64 * 4 * 9


def test_dynamic_batch_and_input_shapes(digits_onnx):
    g = edgepass.analyze(digits_onnx)
    assert g.summary()["inputs"] == {"image": [1, 1, 8, 8]}
    g4 = edgepass.analyze(digits_onnx, input_shapes={"image": (4, 1, 8, 8)})
    assert g4.macs == 4 * g.macs


def test_dynamic_spatial_dims_need_an_input_shape(tmp_path):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(edgepass.InputError, match="--input-shape x:"):
        edgepass.analyze(model)
    assert edgepass.analyze(model, input_shapes={"x": (1, 3, 32, 32)}).summary()["outputs"]["y"] == [1, 3, 32, 32]


@pytest.mark.parametrize("content,match", [(b"", "empty file"), (b"\x08\x07garbage\xff\xff", "not a valid ONNX"),
                                           (None, "no such file")])
def test_unreadable_onnx(tmp_path, content, match):
    path = tmp_path / "m.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(edgepass.InputError, match=match):
        edgepass.analyze(path)


def test_truncated_onnx(tmp_path, digits_onnx):
    data = digits_onnx.read_bytes()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(edgepass.InputError):
        edgepass.analyze(path)


def test_fx_data_dependent_control_flow_is_a_clear_error():
    import torch

    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(edgepass.UnsupportedModelError, match="export the model to ONNX"):
        edgepass.analyze(Branchy(), (torch.ones(1, 3, 4, 4),))


def test_analyze_keeps_training_flags():
    import torch

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).train()
    before = m[1].running_mean.clone()
    edgepass.analyze(m, (torch.randn(2, 3, 8, 8),))
    assert m.training and m[1].training
    assert torch.equal(m[1].running_mean, before)
