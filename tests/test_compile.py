"""edgepass.compile and `edgepass compile`: end to end on the bundled digits CNN, build-system behaviour."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

import edgepass
from edgepass.cli import main
from edgepass.compile import compile_with_report, report_of
from edgepass.demo import DEMO_DATA, DigitsNet, demo_path

DEVICE = "local/cpu-ort-1t"
CHEAP = {"max_levels": 2, "n_fit": 0}   # a coarse accuracy sweep, for tests that check plumbing only


@pytest.fixture(scope="module")
def base_ms(digits_onnx):
    return edgepass.predict(str(digits_onnx), DEVICE).latency_ms


@pytest.fixture(scope="module")
def calib():
    return str(demo_path(DEMO_DATA))


def test_compile_onnx_meets_budget_and_verifies(digits_onnx, base_ms, calib):
    out, report, feasible = compile_with_report(str(digits_onnx), DEVICE, latency_ms=0.7 * base_ms,
                                                method="search", calibration_data=calib, measure=False)
    assert feasible and report.verified
    assert isinstance(out, onnx.ModelProto)
    assert report.predicted["latency_ms"][1] <= 0.7 * base_ms
    assert 0 < report.predicted["energy_mj"][1] < report.predicted["energy_mj"][0]   # faster and smaller
    onnx.checker.check_model(out, full_check=True)
    stored = report_of(out)
    assert stored["design"] == report.design and "seconds" not in stored
    assert edgepass.verify(str(digits_onnx), out, edgepass.Design.from_dict(stored["design"])).ok


def test_compile_meets_an_energy_budget(digits_onnx, calib):
    """An energy budget alone steers the design: the compiled model's predicted energy is within
    it (and the original's is not)."""
    base_mj = edgepass.predict(str(digits_onnx), "help/pixel2").energy_mj
    _, report, feasible = compile_with_report(str(digits_onnx), "help/pixel2", energy_mj=0.6 * base_mj,
                                              calibration_data=calib, measure=False, accuracy_options=CHEAP)
    assert feasible and report.verified
    before, after = report.predicted["energy_mj"]
    assert before == pytest.approx(base_mj) and after <= 0.6 * base_mj * (1 + 1e-6)
    assert any(n.startswith("energy: modelled") for n in report.notes)


def test_compile_is_deterministic(digits_onnx, base_ms, calib):
    runs = [edgepass.compile(str(digits_onnx), DEVICE, latency_ms=0.7 * base_ms, method="search",
                             calibration_data=calib, measure=False) for _ in range(2)]
    assert runs[0].SerializeToString() == runs[1].SerializeToString()


def test_compile_pytorch_returns_a_module_with_report(base_ms):
    data = np.load(str(demo_path(DEMO_DATA)))
    net = DigitsNet()
    net.load_state_dict(torch.load(str(demo_path("digits_cnn.pt"))))
    net.eval()
    x = (torch.from_numpy(data["x_test"][:1]),)
    out = edgepass.compile(net, DEVICE, latency_ms=0.8 * base_ms, example_inputs=x, method="search",
                           calibration_data=data["calibration"], accuracy_options=CHEAP)
    assert isinstance(out, torch.nn.Module) and out.report.verified
    with torch.no_grad():
        assert out(torch.from_numpy(data["x_test"][:4])).shape == (4, 10)


def test_ignore_keeps_layers_untouched(digits_onnx, base_ms, calib):
    out, report, _ = compile_with_report(str(digits_onnx), DEVICE, latency_ms=0.7 * base_ms, method="search",
                                         calibration_data=calib, ignore=["down.0"], measure=False,
                                         accuracy_options=CHEAP)
    row = next(r for r in report.layers if r.name == "down.0")
    assert row.before == row.after


def test_cli_compile_check_and_errors(tmp_path, digits_onnx, base_ms, calib, capsys):
    src = tmp_path / "in.onnx"
    src.write_bytes(digits_onnx.read_bytes())
    before = src.read_bytes()
    dst, rep = tmp_path / "out.onnx", tmp_path / "r.json"
    args = [str(src), str(dst), "--device", DEVICE, "--latency-ms", str(0.7 * base_ms), "--method", "search",
            "--calibration", calib, "--report", str(rep)]
    assert main(["compile", *args]) == 0
    assert "latency (predicted)" in capsys.readouterr().out
    assert dst.exists() and json.loads(rep.read_text())["verified"]
    assert src.read_bytes() == before
    assert len(json.loads(rep.read_text())["selection"]) >= 2     # --calibration: evaluate_top defaults to 4
    assert main(["compile", str(src), str(dst), "--device", DEVICE, "--check"]) == 0
    assert main(["compile", *args, "--evaluate-top", "0"]) == 0
    assert json.loads(rep.read_text())["selection"] is None
    assert main(["compile", str(src), str(tmp_path / "o.onnx"), "--device", "help/pixel2", "--latency-ms", "1",
                 "--calibrate-latency"]) == 2
    # errors: one line each, documented exit codes, nothing written
    assert main(["compile", str(src), str(src), "--device", DEVICE, "--latency-ms", "1"]) == 2
    assert main(["compile", str(src), str(tmp_path / "no" / "o.onnx"), "--device", DEVICE, "--latency-ms", "1"]) == 2
    assert main(["compile", str(src), str(tmp_path / "o.onnx"), "--device", "no/such-device", "--latency-ms", "1"]) == 5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["compile", str(bad), str(tmp_path / "o.onnx"), "--device", DEVICE, "--latency-ms", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "refusing to overwrite the input" in err and "unknown device" in err
    assert not (tmp_path / "o.onnx").exists()
    assert src.read_bytes() == before


def test_impossible_budget_exit_3_writes_closest(tmp_path, digits_onnx, calib, capsys):
    dst = tmp_path / "out.onnx"
    code = main(["compile", str(digits_onnx), str(dst), "--device", DEVICE, "--latency-ms", "0.00001",
                 "--method", "search", "--calibration", calib, "--json"])
    assert code == 3 and dst.exists()
    assert json.loads(capsys.readouterr().out)["feasible"] is False
    with pytest.raises(edgepass.InfeasibleBudgetError):
        edgepass.compile(str(digits_onnx), DEVICE, latency_ms=0.00001, method="search", calibration_data=calib)


def test_evaluate_top_keeps_the_best_measured_candidate(digits_onnx, base_ms, calib):
    """With calibration data a compile measures a few good designs under the budget (the optimizer's
    pick and repaired uniform designs) and keeps the best measured one; evaluate_top=0 turns it off."""
    budget = 0.7 * base_ms
    _, rep, feasible = compile_with_report(str(digits_onnx), DEVICE, latency_ms=budget, method="search",
                                           calibration_data=calib, measure=False)
    sel = rep.selection
    assert feasible and sel and 2 <= len(sel) <= 4
    chosen = [c for c in sel if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["design"] == rep.design
    assert chosen[0]["measured_on_calibration"] == max(c["measured_on_calibration"] for c in sel)
    assert all(c["predicted_latency_ms"] <= budget * (1 + 1e-9) for c in sel)
    assert len({json.dumps(c["design"], sort_keys=True) for c in sel}) == len(sel)
    assert rep.predicted["latency_ms"][1] <= budget * (1 + 1e-9)
    _, off, _ = compile_with_report(str(digits_onnx), DEVICE, latency_ms=budget, method="search",
                                    calibration_data=calib, measure=False, evaluate_top=0)
    assert off.selection is None
    with pytest.raises(edgepass.InputError, match="evaluate_top"):
        compile_with_report(str(digits_onnx), DEVICE, latency_ms=budget, evaluate_top=-1)


def test_calibrate_latency_measures_designs_here_and_keeps_what_measures_within_budget(digits_onnx, calib):
    from edgepass.devices.measure import measure

    budget = 0.8 * measure(str(digits_onnx), threads=1, runs=20).median_ms
    _, rep, _ = compile_with_report(str(digits_onnx), DEVICE, latency_ms=budget, calibration_data=calib,
                                    method="search", measure=False, calibrate_latency=True)
    assert any(n.startswith("latency calibrated on 4 designs") for n in rep.notes)
    assert rep.seconds["calibrate_latency"] > 0
    sel = rep.selection
    assert sel and all("measured_ms" in c for c in sel)
    chosen = next(c for c in sel if c["chosen"])
    within = [c for c in sel if c["measured_ms"] <= budget]
    if within:   # the best measured accuracy among the candidates that measured within the budget
        assert chosen["measured_ms"] <= budget
        assert chosen["measured_on_calibration"] == max(c["measured_on_calibration"] for c in within)
    with pytest.raises(edgepass.InputError, match="only for the local"):
        compile_with_report(str(digits_onnx), "help/pixel2", latency_ms=budget, calibrate_latency=True)


def test_evaluate_top_default_depends_on_data_and_model_size():
    from edgepass.compile import EVALUATE_MAX_MACS, EVALUATE_TOP, CompileOptions

    with_data = CompileOptions(latency_ms=1.0, calibration_data="calib.npz")
    assert with_data.n_evaluated(1e8) == EVALUATE_TOP and with_data.n_evaluated(2 * EVALUATE_MAX_MACS) == 0
    assert CompileOptions(latency_ms=1.0).n_evaluated(1e8) == 0
    assert CompileOptions(latency_ms=1.0, calibration_data="c.npz", evaluate_top=2).n_evaluated(1e12) == 2
