"""Accuracy kept: baselines tuned to a measured latency, and the recalibration-aware accuracy predictor.

(Recalibration recovering a narrowed digits CNN and deterministic fine-tuning are in
tests/test_passes_recalibrate.py.)"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch

import edgepass
from edgepass.baselines import (MIN_PARAM, fine_space, global_channel_scores, magnitude_design, measured_ms, realise,
                                to_latency, uniform_design)
from edgepass.demo import DEMO_DATA, DigitsNet, demo_path
from edgepass.export import export_onnx
from edgepass.predictors.stats import spearman


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """A random-weight residual CNN at 16x16: big enough that compute, not per-op overhead, sets latency."""
    torch.manual_seed(0)
    net = DigitsNet(width=64).eval()   # widths 64..256: fine enough steps in blocks of 8 or 16
    path = export_onnx(net, (torch.randn(1, 1, 16, 16),), tmp_path_factory.mktemp("q") / "small.onnx")
    cal = np.random.default_rng(0).standard_normal((32, 1, 16, 16)).astype(np.float32)
    return onnx.load(str(path)), cal


def test_uniform_and_magnitude_designs(small_onnx):
    proto, _ = small_onnx
    space = fine_space(edgepass.design_space(proto))
    half = uniform_design(space, 0.5)
    assert all(half.widths[g.id] == g.width // 2 for g in space.groups)
    scores = global_channel_scores(space, proto)
    full = space.graph.macs
    for frac in (0.7, 0.4):
        d = magnitude_design(space, scores, frac)
        assert space.design_graph(d).macs <= frac * full
        assert space.design_graph(d).macs > 0.6 * frac * full       # near the target (widths move in blocks)
    # one global ranking: a group whose channels all score high keeps its width, the others pay
    strong = max(space.groups, key=lambda g: g.width).id
    boosted = {gid: v * (10.0 if gid == strong else 1.0) for gid, v in scores.items()}
    d = magnitude_design(space, boosted, 0.5)
    assert d.widths[strong] == space.group(strong).width
    assert any(d.widths[g.id] < g.width for g in space.groups if g.id != strong)


def _mac_cost(model) -> float:
    """A deterministic latency stand-in for the tuner tests: MMACs of the model (a staircase in the
    parameter, as widths move in blocks)."""
    return edgepass.analyze(model).macs / 1e6


@pytest.mark.parametrize("kind", ["uniform", "magnitude"])   # uniform+int8: the uniform tuner
def test_baselines_reach_target_latency(small_onnx, kind):
    """The tuner finds the largest design of the family within 5 % of a target between its grid
    points (by bisection), on a deterministic cost: the measured-latency version of this goal is
    checked by benchmarks/quality.py (``within_5pct``), because on this shared machine the same
    model measured 0.263 ms inside the tuner and 0.318 ms seconds earlier (3 of 12 runs of a timed
    version of this test failed)."""
    proto, cal = small_onnx
    space = fine_space(edgepass.design_space(proto))
    grid = np.linspace(MIN_PARAM, 1.0, 9)
    p_ref = float((grid[3] + grid[4]) / 2)   # between two grid points: only bisection gets there
    if kind == "magnitude":
        ref = magnitude_design(space, global_channel_scores(space, proto), p_ref)
    else:
        ref = uniform_design(space, p_ref)
    target = _mac_cost(realise(proto, space, ref, cal))
    r = to_latency(proto, kind, target, calibration=cal, measure=_mac_cost)
    assert r.within and abs(r.measured_ms / target - 1) <= 0.05, (r.measured_ms, target, r.trace)
    assert abs(_mac_cost(r.model) / r.measured_ms - 1) < 1e-9       # the model returned is the one measured
    on_grid = [ms for p, ms in r.trace if p is not None and np.isclose(grid, p).any()]
    if not any(abs(ms / target - 1) <= 0.05 for ms in on_grid):        # magnitude here: it had to bisect
        assert any(grid[3] < p < grid[4] for p, _ in r.trace if p is not None)
    assert r.model is not proto and r.macs < space.graph.macs


def test_baseline_tuner_on_measured_latency(small_onnx):
    """The same tuner timing models on this CPU: the model it returns runs, side by side with the
    reference (interleaved, so a noisy neighbour slows both alike), near the reference's latency.
    Loose bound: this is a check that the measured path works; the 5 % figures are benchmarks'."""
    proto, cal = small_onnx
    space = fine_space(edgepass.design_space(proto))
    reference = realise(proto, space, uniform_design(space, float(np.linspace(MIN_PARAM, 1.0, 9)[4])), cal)
    for attempt in range(2):    # a burst on the shared machine can mislead one tuning run
        target = measured_ms(reference, runs=200, repeats=5, min_seconds=0.3)
        r = to_latency(proto, "uniform", target, calibration=cal)
        ref_ms, got_ms = [], []
        for _ in range(5):
            ref_ms.append(measured_ms(reference, runs=200, repeats=1))
            got_ms.append(measured_ms(r.model, runs=200, repeats=1))
        ratio = np.median(got_ms) / np.median(ref_ms)
        if abs(ratio - 1) <= 0.25 and abs(r.measured_ms / target - 1) <= 0.25:
            break
    assert abs(ratio - 1) <= 0.25, (got_ms, ref_ms, r.trace)
    assert abs(r.measured_ms / target - 1) <= 0.25, (r.measured_ms, target, r.trace)


def test_int8_baseline_and_errors(small_onnx):
    proto, cal = small_onnx
    before = proto.SerializeToString()
    r = to_latency(proto, "int8", 1.0, calibration=cal)
    assert r.param is None and r.measured_ms > 0 and "no parameter" in r.note
    assert any(n.op_type == "QuantizeLinear" for n in r.model.graph.node)
    assert proto.SerializeToString() == before           # input never modified
    with pytest.raises(edgepass.InputError, match="baseline must be one of"):
        to_latency(proto, "random", 1.0)
    with pytest.raises(edgepass.InputError, match="calibration data"):
        to_latency(proto, "int8", 1.0)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # the machine is shared: more threads only contend
    yield
    torch.set_num_threads(threads)


def test_recalibration_aware_predictor_ranks_heldout_designs(one_thread):
    from edgepass.predictors.accuracy import AccuracyPredictor

    data = np.load(str(demo_path(DEMO_DATA)))
    net = DigitsNet()
    net.load_state_dict(torch.load(str(demo_path("digits_cnn.pt"))))
    net.eval()
    x, y = data["x_test"], data["y_test"]
    example = (torch.from_numpy(x[:1]),)
    space = edgepass.design_space(net, example).restrict(precisions=["fp32", "int8"])
    warnings.simplefilter("ignore")
    ap = AccuracyPredictor(net, x[:270], y[:270], example_inputs=example, space=space, seed=0).fit()
    judge = AccuracyPredictor(net, x[270:], y[270:], example_inputs=example, space=space)   # held-out images
    rng = np.random.default_rng(2024)                                                     # held-out designs
    designs = [space.sample(rng) for _ in range(20)]
    truth = [judge.evaluate(d) for d in designs]
    pred = ap.predict_codes(np.stack([space.encode(d) for d in designs]))
    macs = [space.design_graph(d).macs for d in designs]
    assert max(truth) - min(truth) > 0.1                  # the designs really differ (after reconstruction)
    rho, rho_macs = spearman(pred, truth), spearman(macs, truth)
    assert rho >= 0.8, (rho, ap.info)
    assert rho >= rho_macs, (rho, rho_macs)
    assert ap.info["correction"] in ("damage", "isotonic", "ridge", "none") and ap.damage is not None
