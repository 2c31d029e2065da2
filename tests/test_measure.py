"""The onnxruntime latency harness and ``edgepass measure``."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgepass.cli as cli
from edgepass.devices import Measurement, measure
from edgepass.errors import EXIT_USAGE, InputError


def _tiny_model() -> onnx.ModelProto:
    """Two 3x3 convs, dynamic batch: the smallest model with a meaningful per-node profile."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16, 16, 16])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture()
def tiny_path(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_model(), path)
    return path


def _main(monkeypatch, argv):
    monkeypatch.setattr(cli, "COMMANDS", ["edgepass.commands.devices", "edgepass.commands.measure", "edgepass.commands.profile"])
    return cli.main(argv)


def test_measure_fields(tiny_path):
    m = measure(tiny_path, runs=7, warmup=2, threads=1)
    assert isinstance(m, Measurement)
    assert len(m.times_ms) == 7 and all(t > 0 for t in m.times_ms)
    assert m.min_ms <= m.p25_ms <= m.median_ms <= m.p75_ms <= m.max_ms
    assert m.iqr_ms == pytest.approx(m.p75_ms - m.p25_ms)
    assert m.inputs == {"x": [1, 3, 16, 16]}  # dynamic batch -> 1
    assert m.threads == 1 and m.per_node == [] and m.onnxruntime
    json.dumps(m.to_dict())


def test_measure_accepts_proto_and_bytes():
    model = _tiny_model()
    assert measure(model, runs=2, warmup=0).runs == 2
    assert measure(model.SerializeToString(), runs=2, warmup=0, threads=2).threads == 2


def test_per_node_names(tiny_path):
    m = measure(tiny_path, runs=3, warmup=1, profile=True, optimization="basic")
    assert {t.name for t in m.per_node} == {"conv1", "conv2"}
    assert all(t.op_type == "Conv" and t.ms > 0 and t.calls_per_run == 1 for t in m.per_node)
    # default level: ORT may rename (layout transform) but the convs are still there
    m = measure(tiny_path, runs=3, warmup=1, profile=True)
    assert sum(t.op_type == "Conv" for t in m.per_node) == 2


def test_min_seconds_keeps_timing(tiny_path):
    m = measure(tiny_path, runs=3, warmup=1, min_seconds=0.05)
    assert m.runs == len(m.times_ms) and (m.runs > 3 or sum(m.times_ms) >= 50.0)
    assert sum(m.times_ms) >= 50.0 or m.runs == 10_000
    assert measure(tiny_path, runs=3, warmup=0).runs == 3          # default: exactly `runs`


@pytest.mark.parametrize("kwargs", [{"threads": 0}, {"runs": 0}, {"warmup": -1}, {"optimization": "max"},
                                    {"min_seconds": -1.0}, {"min_seconds": "1"}])
def test_bad_arguments(tiny_path, kwargs):
    with pytest.raises(InputError):
        measure(tiny_path, **kwargs)


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputError, match="cannot load ONNX model"):
        measure(bad)
    with pytest.raises(InputError, match="cannot read model"):
        measure(tmp_path / "missing.onnx")


def test_cli_measure(monkeypatch, capsys, tiny_path):
    assert _main(monkeypatch, ["measure", str(tiny_path), "--runs", "3", "--per-node", "--json",
                               "--optimization", "basic"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["runs"] == 3 and {n["name"] for n in out["per_node"]} == {"conv1", "conv2"}
    assert _main(monkeypatch, ["measure", str(tiny_path), "--runs", "3", "--per-node"]) == 0
    assert "median" in capsys.readouterr().out


def test_cli_measure_garbage_exit_2(monkeypatch, capsys, tmp_path):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    assert _main(monkeypatch, ["measure", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("edgepass: error:") and len(err.strip().splitlines()) == 1
    assert _main(monkeypatch, ["measure", str(tmp_path / "nope.onnx")]) == EXIT_USAGE
