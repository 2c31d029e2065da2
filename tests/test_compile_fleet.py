"""Fleets (`--device` repeated / `--devices FLEET.txt`, `edgepass.compile_fleet`), relative budgets,
`--plot` and `--cache-dir`, on the bundled digits CNN."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import edgepass
from edgepass.cli import main
from edgepass.compile import CompileOptions, compile_with_report
from edgepass.demo import DEMO_DATA, demo_path
from edgepass.errors import EXIT_DEVICE, InputError
from edgepass.fleet import device_filename, read_fleet_file

DEVICE = "local/cpu-ort-1t"
INT8 = "mmb/pixel4-1large-tflite-int8"   # int8 only: the same allowed precisions as DEVICE (fp32 + int8)
CHEAP = {"max_levels": 2, "n_fit": 0}


@pytest.fixture(scope="module")
def calib():
    return str(demo_path(DEMO_DATA))


def test_cli_fleet_file_bad_rows_fail_alone(tmp_path, digits_onnx, calib, capsys):
    src = tmp_path / "in.onnx"
    src.write_bytes(digits_onnx.read_bytes())
    before = src.read_bytes()
    (tmp_path / "broken.json").write_text('{"schema": "edgepass.device/1", "id": "lab/x"}')
    fleet = tmp_path / "fleet.txt"
    fleet.write_text(f"# my fleet\n{DEVICE}\n\n{INT8}   # a phone, int8\nbroken.json\nno/such-device\n")
    assert read_fleet_file(fleet)[2] == str(tmp_path / "broken.json")     # relative to the fleet file
    out = tmp_path / "out"
    code = main(["compile", str(src), str(out), "--devices", str(fleet), "--latency-fraction", "0.7",
                 "--method", "search", "--calibration", calib])
    captured = capsys.readouterr()
    assert code == EXIT_DEVICE
    err = [line for line in captured.err.splitlines() if line.startswith("edgepass: error:")]
    assert len(err) == 1 and "2 of 4 devices failed" in err[0] and "Traceback" not in captured.err
    assert DEVICE in captured.out and "2 met the budget" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["device"]: r for r in summary["devices"]}
    assert [r["device"] for r in summary["devices"]][:2] == [DEVICE, INT8]           # input order
    assert rows["no/such-device"]["exit_code"] == EXIT_DEVICE and rows["no/such-device"]["model"] is None
    assert sum(r["error"] is not None for r in summary["devices"]) == 2
    for dev in (DEVICE, INT8):
        r = rows[dev]
        assert r["feasible"] and r["verified"] and r["error"] is None
        assert r["budget_ms"] == pytest.approx(0.7 * r["predicted_ms"][0], rel=1e-4)
        assert r["predicted_ms"][1] <= r["budget_ms"]
        model = out / f"{device_filename(dev)}.onnx"
        assert edgepass.report_of(onnx.load(str(model)))["device"] == dev
        assert json.loads((out / r["report"]).read_text())["verified"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{device_filename(d)}{ext}" for d in (DEVICE, INT8) for ext in (".onnx", ".report.json")] + ["summary.json"])
    assert src.read_bytes() == before


def test_fleet_outputs_equal_single_compiles_and_reruns_are_identical(tmp_path, digits_onnx, calib):
    kw = dict(latency_fraction=0.7, method="search", calibration_data=calib, measure=False)
    a = edgepass.compile_fleet(str(digits_onnx), [DEVICE, INT8], tmp_path / "a", progress=False, **kw)
    b = edgepass.compile_fleet(str(digits_onnx), [DEVICE, INT8], tmp_path / "b", CompileOptions(**kw),
                               progress=False)
    assert a["exit_code"] == b["exit_code"] == 0
    assert (tmp_path / "a" / "summary.json").read_bytes() == (tmp_path / "b" / "summary.json").read_bytes()
    for dev in (DEVICE, INT8):
        name = f"{device_filename(dev)}.onnx"
        single, _, ok = compile_with_report(str(digits_onnx), dev, **kw)
        assert ok and single.SerializeToString() == (tmp_path / "a" / name).read_bytes() == \
            (tmp_path / "b" / name).read_bytes()


def test_options_type_validates():
    with pytest.raises(InputError, match="not both"):
        CompileOptions(latency_ms=1.0, latency_fraction=0.5)
    with pytest.raises(InputError, match="budget"):
        CompileOptions()
    with pytest.raises(InputError, match="latency_fraction"):
        CompileOptions(latency_fraction=-1)
    with pytest.raises(TypeError, match="latency_fraction"):
        CompileOptions.of(latency_fractoin=0.5)
    o = CompileOptions.of(CompileOptions(latency_fraction=0.5), seed=3, precisions="fp32,int8")
    assert (o.latency_fraction, o.seed, o.precisions) == (0.5, 3, ("fp32", "int8"))
    assert o.budget(10.0).latency_ms == pytest.approx(5.0)


def test_cache_dir_reuses_the_accuracy_predictor(tmp_path, digits_onnx, calib, monkeypatch):
    from edgepass.predictors.accuracy import AccuracyPredictor

    cache = tmp_path / "cache"
    kw = dict(latency_fraction=0.7, method="search", calibration_data=calib, measure=False, cache_dir=str(cache),
              accuracy_options=CHEAP)
    first, rep1, _ = compile_with_report(str(digits_onnx), DEVICE, **kw)
    assert list((cache / "accuracy").glob("*.json"))

    def refit(self, *a, **k):
        raise AssertionError("the accuracy predictor was fitted again despite the cache")
    monkeypatch.setattr(AccuracyPredictor, "fit", refit)
    # the candidates measured on the calibration data (evaluate_top) are cached with it
    assert rep1.selection and list((cache / "accuracy").glob("*.evaluated.json"))
    # cached records are checked, not trusted: only the candidates deciding the choice are measured again
    measured, evaluate = [], AccuracyPredictor.evaluate
    monkeypatch.setattr(AccuracyPredictor, "evaluate", lambda self, d: measured.append(d) or evaluate(self, d))
    second, rep2, _ = compile_with_report(str(digits_onnx), DEVICE, **kw)
    assert second.SerializeToString() == first.SerializeToString()
    assert 1 <= len(measured) <= 3
    # a different cache directory is a miss
    with pytest.raises(AssertionError, match="fitted again"):
        compile_with_report(str(digits_onnx), DEVICE, **{**kw, "cache_dir": str(tmp_path / "other")})


def test_cli_plot_writes_png_with_front(tmp_path, digits_onnx, calib, capsys):
    out, png = tmp_path / "o.onnx", tmp_path / "front.png"
    assert main(["compile", str(digits_onnx), str(out), "--device", DEVICE, "--latency-fraction", "0.7",
                 "--method", "search", "--calibration", calib, "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "plot" in capsys.readouterr().out     # the stage shows in the report's time line


def test_pareto_front_is_non_dominated():
    from edgepass.plot import pareto

    pts = np.random.default_rng(0).random((200, 2))
    front = pareto(pts)
    assert np.all(np.diff(front[:, 0]) >= 0) and np.all(np.diff(front[:, 1]) > 0)
    for lat, acc in front:   # nothing is faster and at least as accurate
        assert not np.any((pts[:, 0] < lat) & (pts[:, 1] >= acc))


@pytest.mark.slow
def test_fleet_on_a_process_pool_matches_in_process(tmp_path, digits_onnx, calib):
    kw = dict(latency_fraction=0.7, method="search", calibration_data=calib, measure=False, progress=False)
    a = edgepass.compile_fleet(str(digits_onnx), [DEVICE, INT8, "help/pixel2"], tmp_path / "a", **kw)
    b = edgepass.compile_fleet(str(digits_onnx), [DEVICE, INT8, "help/pixel2"], tmp_path / "b", executor="process",
                               workers=2, **kw)
    assert a["exit_code"] == b["exit_code"] == 0
    for f in (tmp_path / "a").iterdir():
        if f.suffix == ".onnx" or f.name == "summary.json":
            assert f.read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def test_amortized_fleet_trains_the_optimizer_once_and_ships_it(tmp_path, digits_onnx, calib, compile_cache):
    small = {"devices": [DEVICE, "help/pixel2", INT8], "synthetic": 10, "epochs": 3}
    s = edgepass.compile_fleet(str(digits_onnx), [DEVICE, INT8], tmp_path / "out", latency_fraction=0.7,
                               method="amortized", calibration_data=calib, measure=False, progress=False,
                               optimizer_options=small)
    assert s["exit_code"] == 0 and "optimizer" in s["seconds"]
    assert list(compile_cache.glob("amortized-*.npz"))
    for dev in (DEVICE, INT8):
        report = json.loads((tmp_path / "out" / f"{device_filename(dev)}.report.json").read_text())
        assert report["method"] == "amortized" and report["verified"] and report["feasible"]
        assert any("amortized optimizer" in n for n in report["notes"])
