"""Hostile and stale files around a compile: cache entries with the right format but the wrong
content, planted evaluation records, device files (generated mutations), the latency artifact named
by EDGEPASS_LATENCY_MODEL, and predictions that are not finite. Never a traceback: a miss and a
recompute for caches, one line and the documented exit code for inputs."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from edgepass.cli import main
from edgepass.devices import Device, get_device
from edgepass.errors import EXIT_DEVICE, EXIT_USAGE, DeviceError, InputError
from edgepass.predictors import latency as L


# ---------------------------------------------------------------------- shared tiny inputs
@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    """A 2-conv net exported to ONNX (dynamic batch)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, 4)).eval()
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "b"}})
    return path


@pytest.fixture(scope="module")
def tiny_graph(tiny_onnx):
    from edgepass import analyze

    return analyze(str(tiny_onnx))


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return code, err


def one_line_error(err: str) -> bool:
    lines = [ln for ln in err.splitlines() if ln.startswith("edgepass: error:")]
    return len(lines) == 1


# ---------------------------------------------------------------------- device files
RASPI4 = get_device("hwnasbench/raspi4").to_dict()


def fitted_device_dict(residual=None, **fit) -> dict:
    """raspi4 with a hand-made few-shot latency fit for the shipped predictor."""
    m = L.load_model()
    width = m.a["R"].shape[1]
    data = copy.deepcopy(RASPI4)
    data.update(id="user/fitted", aliases=[])
    data["provenance"] = {"source": "test", "licence": "user", "kind": "measured",
                          "latency_fit": {"model": m.version, "residual": [0.0] * width if residual is None else residual,
                                          "log_offset": 0.1, "log_scale": 0.9, "k": 5, **fit}}
    return data


def write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


@pytest.mark.parametrize("name, text", [
    ("bigint", json.dumps(RASPI4).replace('"batch_size": 1', '"batch_size": 1' + "0" * 5000)),
    ("deep", json.dumps({**RASPI4, "notes": "@"}).replace('"@"', "[" * 1000 + "]" * 1000)),
    ("nested", json.dumps({**RASPI4, "provenance": {**RASPI4["provenance"], "x": "@"}}).replace('"@"', "[" * 20 + "]" * 20)),
    ("threads", json.dumps({**RASPI4, "threads": 2 ** 31})),
    ("nan", json.dumps({**RASPI4, "datasheet": {"tdp_w": float("nan")}})),
    ("infinity", json.dumps(RASPI4).replace('"batch_size": 1', '"batch_size": Infinity')),
    ("huge_float", json.dumps(RASPI4).replace('"n_measurements": 20625', '"n_measurements": 1e999')),
    ("duplicate", json.dumps(RASPI4)[:-1] + ', "id": "other/id"}'),
    ("list", json.dumps([RASPI4])),
    ("negative_tdp", json.dumps({**RASPI4, "datasheet": {"tdp_w": -5.0}})),
])
def test_hostile_device_json_is_one_line_exit_5(tmp_path, capsys, name, text):
    code, err = run_cli(capsys, "devices", "show", write(tmp_path / f"{name}.json", text))
    assert code == EXIT_DEVICE and one_line_error(err), (name, err)


def test_device_file_size_is_capped_and_bytes_must_be_utf8(tmp_path, capsys):
    big = tmp_path / "big.json"
    big.write_text(json.dumps({**RASPI4, "notes": "x" * (2 << 20)}))
    code, err = run_cli(capsys, "devices", "show", big)
    assert code == EXIT_DEVICE and "MiB" in err
    binary = tmp_path / "bin.json"
    binary.write_bytes(b'{"id": "\xff\xfe"}')
    code, err = run_cli(capsys, "devices", "show", binary)
    assert code == EXIT_DEVICE and "UTF-8" in err


def test_device_lookup_of_impossible_names_is_a_device_error():
    for name in ("x" * 5000, "a\x00b.json"):
        with pytest.raises(DeviceError):
            get_device(name)


def _mutations(value):
    """What an attacker (or a typo) puts in a field: another type, huge, negative, NaN, nothing."""
    yield "string", "x"
    yield "list", [value]
    yield "object", {"k": value}
    yield "null", None
    yield "bool", True
    yield "huge_int", 10 ** 18
    yield "negative", -1
    yield "nan", float("nan")
    yield "big_float", 1e308


def _paths(obj, prefix=()):
    """Every (path, value) of a nested dict/list, leaves and containers alike."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield prefix + (k,), v
        yield from _paths(v, prefix + (k,))


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value


def _delete(obj, path):
    for k in path[:-1]:
        obj = obj[k]
    del obj[path[-1]]


def _generated_device_files(base: dict):
    """Mutations of ``base`` field by field: each mutation, the field missing, an extra field."""
    for path, value in list(_paths(base)):
        label = ".".join(map(str, path))
        for what, new in _mutations(value):
            data = copy.deepcopy(base)
            _set(data, path, new)
            yield f"{label}={what}", data
        data = copy.deepcopy(base)
        _delete(data, path)
        yield f"{label} missing", data
        if isinstance(value, dict):
            data = copy.deepcopy(base)
            _set(data, path + ("unexpected_field",), 1)
            yield f"{label}+extra", data


@pytest.mark.parametrize("base", ["raspi4", "fitted"])
def test_generated_device_mutations_load_or_exit_5(base, tiny_graph):
    """Every mutation of a real device file (and of a fitted one, provenance.latency_fit included)
    is refused with a DeviceError or loads into a device the predictor can use: a finite latency
    >= 0 or a DeviceError, never another exception."""
    data = RASPI4 if base == "raspi4" else fitted_device_dict(
        op_residual={"mode": "mix", "own_w": 0.5, "devices": ["hwnasbench/raspi4"], "w": [0.5], "overhead_ms": 0.1,
                     "instead_of": {"mode": "add", "classes": ["conv|k3|dw0|q0"], "w": [[0.0, 0.0, 0.0]]}})
    accepted = refused = 0
    for label, mutated in _generated_device_files(data):
        text = json.dumps(mutated, allow_nan=True)
        try:
            dev = Device.from_json(text, origin=label)
        except DeviceError as exc:
            assert "\n" not in str(exc)
            refused += 1
            continue
        accepted += 1
        try:
            ms = L.predict_latency(tiny_graph, dev)
        except DeviceError:
            continue
        assert math.isfinite(ms) and ms >= 0, (label, ms)
    assert refused > 50 and accepted > 5


def test_latency_fit_residual_of_wrong_length_is_refused(tmp_path, capsys, tiny_onnx):
    path = write(tmp_path / "short.json", fitted_device_dict(residual=[0.0, 0.1]))
    Device.from_json(open(path).read())          # the schema cannot know the artifact's width ...
    with pytest.raises(DeviceError, match="residual must hold"):
        L.predict_latency(str(tiny_onnx), path)   # ... the predictor refuses it
    code, err = run_cli(capsys, "predict", tiny_onnx, "--device", path)
    assert code == EXIT_DEVICE and one_line_error(err)


@pytest.mark.parametrize("fit", [
    {"residual": "abc"}, {"residual": [float("nan")] * 8}, {"log_scale": "1"}, {"k": -1},
    {"op_residual": {"mode": "add", "classes": ["a", "b"], "w": [[0, 0, 0]]}},
    {"op_residual": {"mode": "mix", "devices": ["x/y"], "w": [-1.0], "overhead_ms": 0.0}},
    {"op_residual": {"mode": "warp"}}, {"surprise": 1},
])
def test_latency_fit_fields_are_type_checked(fit):
    data = fitted_device_dict()
    data["provenance"]["latency_fit"].update(fit)
    with pytest.raises(DeviceError, match="provenance"):
        Device.from_dict(json.loads(json.dumps(data)))


# ---------------------------------------------------------------------- the predictor's guards
def test_non_finite_prediction_names_the_op(tiny_graph):
    dev = Device.from_dict(fitted_device_dict(residual=[1e300] * L.load_model().a["R"].shape[1]))
    with pytest.raises(DeviceError, match="op "):
        L.predict_latency(tiny_graph, dev)
    with pytest.raises(DeviceError, match="op "):
        L.predict(tiny_graph, dev)


def test_energy_refuses_a_non_finite_latency(tiny_graph):
    from edgepass.predictors.energy import predict_energy

    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(InputError, match="latency_ms"):
            predict_energy(tiny_graph, "hwnasbench/raspi4", latency_ms=bad)
    assert predict_energy(tiny_graph, "hwnasbench/raspi4", latency_ms=1.0)[0] > 0


@pytest.fixture
def fresh_latency_model():
    L.load_cached.cache_clear()
    yield
    L.load_cached.cache_clear()


@pytest.mark.parametrize("content", [None, b"not an npz", b"PK\x03\x04truncated"])
def test_latency_model_env_var_pointing_nowhere_is_one_line_exit_2(tmp_path, capsys, monkeypatch, tiny_onnx,
                                                                   fresh_latency_model, content):
    path = tmp_path / "candidate.npz"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("EDGEPASS_LATENCY_MODEL", str(path))
    with pytest.raises(InputError, match="EDGEPASS_LATENCY_MODEL"):
        L.load_model()
    code, err = run_cli(capsys, "predict", tiny_onnx, "--device", "hwnasbench/raspi4")
    assert code == EXIT_USAGE and "EDGEPASS_LATENCY_MODEL" in err and one_line_error(err)


def test_latency_model_with_mis_shaped_arrays_is_refused(tmp_path, monkeypatch, fresh_latency_model):
    import io

    m = L.load_model()
    arrays = {k: v.astype(np.float32) for k, v in m.a.items()}
    arrays["W1"] = arrays["W1"][:, :3]
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(m.header).encode(), dtype=np.uint8), **arrays)
    (tmp_path / "bad.npz").write_bytes(buf.getvalue())
    monkeypatch.setenv("EDGEPASS_LATENCY_MODEL", str(tmp_path / "bad.npz"))
    L.load_cached.cache_clear()
    with pytest.raises(InputError, match="array b1 has shape"):
        L.load_model()


# ---------------------------------------------------------------------- the accuracy predictor's cache entry
@pytest.fixture(scope="module")
def cached_predictor(tiny_onnx, tmp_path_factory):
    """A fitted accuracy predictor of the tiny net, stored in a fresh cache: (cache dir, key, inputs)."""
    import onnx

    from edgepass.build_cache import save_accuracy
    from edgepass.predictors.accuracy import AccuracyPredictor

    model = onnx.load(str(tiny_onnx))
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    pred = AccuracyPredictor(model, x, n_fit=0).fit()
    cache = tmp_path_factory.mktemp("cache")
    assert save_accuracy(cache, "key", pred)
    return cache, "key", dict(model=model, space=pred.space, x=x, labels=None, example_inputs=None), pred


def _entry(cache, key):
    from edgepass.build_cache import accuracy_entry_path

    return accuracy_entry_path(cache, key)


def _load(cached):
    from edgepass.build_cache import load_accuracy

    cache, key, inputs, _ = cached
    return load_accuracy(cache, key, **inputs)


def test_cached_predictor_round_trips(cached_predictor):
    pred = cached_predictor[3]
    again = _load(cached_predictor)
    codes = np.stack([pred.space.encode(pred.space.sample(np.random.default_rng(i))) for i in range(4)])
    np.testing.assert_array_equal(again.predict_codes(codes), pred.predict_codes(codes))


def _tamper(state: dict, kind: str) -> None:
    if kind == "unknown_key":
        state["__class__"] = "x"
    elif kind == "missing_key":
        del state["delta"]
    elif kind == "wrong_type":
        state["base"] = "high"
    elif kind == "mis_shaped":
        state["delta"][0]["__ndarray__"] = state["delta"][0]["__ndarray__"][:-1]
    elif kind == "non_finite":
        state["damage"][0]["__ndarray__"][0] = float("nan")
    elif kind == "object_dtype":
        state["reference_logits"]["dtype"] = "object"
    elif kind == "logits_rows":
        state["reference_logits"]["__ndarray__"] = state["reference_logits"]["__ndarray__"][:3]
    elif kind == "correction":
        state["correction"] = {"kind": "ridge", "w": [1.0]}


@pytest.mark.parametrize("kind", ["unknown_key", "missing_key", "wrong_type", "mis_shaped", "non_finite",
                                  "object_dtype", "logits_rows", "correction", "truncated"])
def test_tampered_predictor_entry_is_a_miss_with_one_warning(cached_predictor, capsys, kind):
    path = _entry(*cached_predictor[:2])
    good = path.read_text()
    try:
        if kind == "truncated":
            path.write_text(good[: len(good) // 2])
        else:
            data = json.loads(good)
            _tamper(data["state"], kind)
            path.write_text(json.dumps(data))
        assert _load(cached_predictor) is None
        err = capsys.readouterr().err
        assert err.count("warning: ignoring cache entry") == 1 and "Traceback" not in err
    finally:
        path.write_text(good)


# ---------------------------------------------------------------------- evaluation records
class _Design:
    def __init__(self, name):
        self.name = name

    def to_json(self, indent=None):
        return self.name


def test_planted_evaluation_record_is_caught_and_the_records_dropped(tmp_path, capsys):
    from edgepass.build_cache import (confirm_records, decisive_candidates, load_evaluations,
                                      save_evaluations)

    cache = (tmp_path, "k")
    (tmp_path / "accuracy").mkdir()
    truth = {"a": 0.9, "b": 0.8, "c": 0.7}
    save_evaluations(*cache, {**truth, "c": 1.0})          # planted: c looks best
    records = load_evaluations(*cache)
    assert records.unconfirmed == set(truth)
    metrics = [records[k] for k in "abc"]
    best = max(range(3), key=lambda i: metrics[i])
    designs = [_Design(k) for k in "abc"]
    measured = []

    def measure(d):
        measured.append(d.name)
        return truth[d.name]

    assert not confirm_records(records, [designs[i] for i in decisive_candidates(metrics, [0, 1, 2], best)],
                               measure, cache)
    assert "c" in measured and "disagree" in capsys.readouterr().err
    # the re-measured records stay (c corrected), the unconfirmed rest (b) is measured again
    assert records == {"a": 0.9, "c": 0.7} and not records.unconfirmed
    assert load_evaluations(*cache) == {"a": 0.9, "c": 0.7}     # the file no longer holds the plant
    # honest records: the decisive ones are re-measured once and kept
    save_evaluations(*cache, truth)
    records = load_evaluations(*cache)
    assert confirm_records(records, designs[:2], measure, cache) and records == truth


@pytest.mark.parametrize("text", ['{"d": NaN}', '{"d": "0.5"}', '{"d": 7}', '[1]', '{"d": 0.5'])
def test_malformed_evaluation_records_are_a_miss(tmp_path, capsys, text):
    from edgepass.build_cache import evaluations_path, load_evaluations

    path = evaluations_path(tmp_path, "k")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert load_evaluations(tmp_path, "k") == {}
    assert "warning: ignoring cache entry" in capsys.readouterr().err


# ---------------------------------------------------------------------- the amortized optimizer's .npz
def test_amortized_npz_with_wrong_content_raises_value_error(tmp_path):
    from edgepass.optimizers.amortized import AmortizedOptimizer

    opt = AmortizedOptimizer([3, 2], device_dim=4, hidden=8)
    opt.save(tmp_path / "good.npz", extra={"refs": np.zeros((4, 2), np.int64)})
    good = dict(np.load(tmp_path / "good.npz"))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    variants = {"p0": np.zeros((2, 2), np.float32), "p1": np.full(good["p1"].shape, np.inf, np.float32),
                "x_std": np.zeros(5), "config": np.array([1.0]), "extra_refs": np.array(["a"])}
    for name, value in variants.items():
        np.savez(tmp_path / f"{name}.npz", **{**good, name: value})
    np.savez(tmp_path / "missing.npz", **{k: v for k, v in good.items() if k != "p2"})
    np.savez(tmp_path / "objects.npz", **{**good, "p0": np.array([None], dtype=object)})
    assert AmortizedOptimizer.load(tmp_path / "good.npz").n_choices == [3, 2]
    for bad in ["truncated", "missing", "objects", *variants]:
        with pytest.raises(ValueError):
            AmortizedOptimizer.load(tmp_path / f"{bad}.npz")


# ---------------------------------------------------------------------- the dataset's feature cache
def test_feature_cache_entries_are_validated(tmp_path, capsys):
    from edgepass.dataset import read_cached_features

    canon = "nb201:|none~0|"
    row = {"name": "c", "kind": "conv", "in_shapes": [[1, 3, 8, 8]], "out_shapes": [[1, 8, 8, 8]], "macs": 10,
           "params": 5, "bytes_read": 4, "bytes_written": 4, "kernel": [3, 3], "stride": [1, 1], "groups": 1,
           "precision": "fp32"}
    good = {"spec": canon, "macs": 10, "params": 5, "n_ops": 1, "n_layers": 1, "bytes_read": 4,
            "bytes_written": 4, "ops": [row]}
    path = tmp_path / "f.json"
    path.write_text(json.dumps(good))
    assert read_cached_features(path, canon) == good
    for bad in ({**good, "spec": "other"}, {**good, "macs": -1}, {**good, "ops": [{**row, "macs": "10"}]},
                {**good, "ops": [{**row, "extra": 1}]}, [good]):
        path.write_text(json.dumps(bad))
        assert read_cached_features(path, canon) is None
    path.write_bytes(b"\xff")
    assert read_cached_features(path, canon) is None
    assert capsys.readouterr().err.count("warning: ignoring cache entry") == 6
