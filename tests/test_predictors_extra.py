"""Proxy + monotone map, energy model and accuracy predictor on small slices (< 60 s)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgepass.predictors import proxy as px
from edgepass.predictors.stats import kendall, spearman


# ---------------------------------------------------------------------- stats
def test_rank_correlations():
    x = np.arange(20, dtype=float)
    assert spearman(x, x ** 3) == pytest.approx(1.0)
    assert kendall(x, -x) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [3, 3, 4]) == pytest.approx(1.0)


def test_ranking_noise_ceiling():
    from edgepass.predictors.stats import ranking_noise_ceiling

    rng = np.random.default_rng(0)
    # 30 items with accuracies 0.5..0.95 measured on 2000 samples: well separated, ceiling near 1
    apart = rng.random((30, 2000)) < np.linspace(0.5, 0.95, 30)[:, None]
    # the same accuracy for all, measured on 200 samples: the measured ranking is pure noise
    tied = rng.random((30, 200)) < 0.9
    high, low = ranking_noise_ceiling(apart)["ceiling"], ranking_noise_ceiling(tied)["ceiling"]
    assert high > 0.95 and low < 0.5
    assert ranking_noise_ceiling(apart) == ranking_noise_ceiling(apart), "seeded"


# ---------------------------------------------------------------------- proxy
@pytest.mark.parametrize("kind", ["log-linear", "isotonic"])
def test_monotone_map_synthetic(kind):
    rng = np.random.default_rng(0)
    p = np.sort(rng.uniform(1, 100, 30))
    t = 3.0 * p ** 0.8
    f = px.MonotoneMap.fit(p, t, kind)
    q = np.linspace(0.5, 200, 200)                    # inside and outside the fitted range
    out = f(q)
    assert np.all(np.diff(out) >= 0), "map must be monotone"
    inside = (q > p.min()) & (q < p.max())
    assert np.max(np.abs(out[inside] / (3.0 * q[inside] ** 0.8) - 1)) < 0.1
    if kind == "log-linear":
        assert np.allclose(out, 3.0 * q ** 0.8, rtol=1e-6)


def test_fit_monotone_map_auto_reports_both():
    p = np.linspace(1, 10, 10)
    m, errs = px.fit_monotone_map(p, 2 * p, "auto")
    assert set(errs) == {"log-linear", "isotonic"} and m.kind in errs


def _specs(device, n, seed=0):
    table = px.measured_table(px.device_id_of(device), None)
    specs = sorted(s for s in table if s.startswith("nb201:"))
    idx = np.random.default_rng(seed).choice(len(specs), n, replace=False)
    return [specs[i] for i in idx]


def test_proxy_on_monotone_pair():
    # titan-rtx and 2080ti at batch 256: near-identical rankings in HELP's NB201 data
    specs = _specs("help/titan-rtx-b256", 40)
    y = px.measured_latency("help/titan-rtx-b256", specs)
    pp = px.ProxyPredictor("help/2080ti-b256")
    rep = pp.fit(specs[:10], y[:10], target="help/titan-rtx-b256")
    assert rep.monotone and not rep.needs_more and rep.spearman > 0.9
    pred = pp.predict(specs[10:])
    assert spearman(pred, y[10:]) > 0.9
    assert np.median(np.abs(pred / y[10:] - 1)) < 0.15


def test_proxy_flags_low_correlation():
    rng = np.random.default_rng(1)
    specs = _specs("help/pixel2", 12, seed=3)
    noise = rng.permutation(np.linspace(1, 50, len(specs)))       # unrelated to any proxy
    pp = px.ProxyPredictor("help/titan-rtx-b256", candidates=[])  # no second proxy to adapt with
    rep = pp.fit(specs, noise)
    assert not rep.monotone and rep.needs_more and not rep.adapted
    assert "more" in rep.message and "0.9" in rep.message


def test_choose_proxy_returns_real_device():
    from edgepass.devices import get_device

    pid = px.choose_proxy("help/pixel2", space="nb201")
    assert get_device(pid).id == pid and pid != "help/pixel2"
    specs = _specs("help/pixel2", 10)
    y = px.measured_latency("help/pixel2", specs)
    pid2 = px.choose_proxy("help/pixel2", space="nb201", measurements=(specs, y))
    assert get_device(pid2).id == pid2 and pid2 != "help/pixel2"
    assert px.rank_proxies("local/cpu-ort-1t")[0][2] == "signature"


# ---------------------------------------------------------------------- energy
@pytest.fixture(scope="module")
def tiny_graphs():
    import torch
    from torch import nn

    from edgepass.api import analyze

    def net(w):
        return nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(w, 10)).eval()

    x = (torch.zeros(1, 3, 32, 32),)
    return analyze(net(8), x), analyze(net(32), x)


def test_energy_positive_monotone_precision(tiny_graphs):
    from edgepass.predictors.energy import predict_energy

    small, big = tiny_graphs
    assert big.macs > small.macs
    for dev in ("help/pixel2", "local/cpu-ort-1t", "mlperf-tiny/bosch-nucleo-l4r5zi"):
        e_s, per_op, _, note = predict_energy(small, dev, latency_ms=1.0)
        e_b = predict_energy(big, dev, latency_ms=1.0)[0]
        assert e_s > 0 and e_b > e_s and note
        assert sum(per_op.values()) == pytest.approx(e_s, rel=1e-6)
        e32 = predict_energy(big, dev, latency_ms=1.0, precision="fp32")[0]
        e8 = predict_energy(big, dev, latency_ms=1.0, precision="int8")[0]
        assert e8 < e32


def test_energy_calibrated_flag(tiny_graphs):
    from edgepass.predictors.energy import calibration, predict_energy

    g = tiny_graphs[0]
    _, _, cal_phone, note_phone = predict_energy(g, "help/pixel2", latency_ms=1.0)
    assert cal_phone is False and "modelled" in note_phone
    _, _, cal_mcu, note_mcu = predict_energy(g, "mlperf-tiny/bosch-nucleo-l4r5zi", latency_ms=1.0)
    assert cal_mcu is ("mcu" in calibration().get("classes", {}))
    if cal_mcu:
        assert "calibrated" in note_mcu


def test_energy_table_matches_predict_energy_on_designs():
    """The optimizers' EnergyTable gives, for sampled designs (widths, kernels, int8), the energy
    predict_energy gives for the design's graph at the table's latency -- on a modelled phone and a
    calibrated microcontroller."""
    import torch
    from torch import nn

    from edgepass import design_space
    from edgepass.predictors.energy import EnergyTable, predict_energy
    from edgepass.predictors.latency import LatencyTable

    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.Conv2d(32, 64, 5, padding=2, stride=2), nn.BatchNorm2d(64), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    space = design_space(net, (torch.zeros(1, 3, 32, 32),))
    designs = [space.identity()] + [space.sample(i) for i in range(8)]
    codes = np.stack([space.encode(d) for d in designs])
    for dev in ("help/pixel2", "mlperf-tiny/bosch-nucleo-l4r5zi"):
        lat = LatencyTable(space, dev)
        table = EnergyTable(lat)
        got = table.predict(codes)
        want = [predict_energy(space.design_graph(d), dev, latency_ms=lat.predict_design(d))[0] for d in designs]
        assert np.allclose(got, want, rtol=1e-6)
        assert np.ptp(got) > 0.1 * got.max()      # the designs differ, and so does their energy


def test_mlperf_tiny_reference_macs():
    from edgepass.predictors.energy import mlperf_tiny_graph

    # published MACs of the MLPerf Tiny reference networks (ResNet-8 12.5 M, DS-CNN 2.7 M,
    # MobileNetV1-0.25 7.5 M, FC autoencoder 0.26 M)
    for task, mmacs in (("ic", 12.5), ("kws", 2.66), ("vww", 7.49), ("ad", 0.264)):
        assert mlperf_tiny_graph(task).macs / 1e6 == pytest.approx(mmacs, rel=0.03)


# ---------------------------------------------------------------------- accuracy
@pytest.fixture(scope="module")
def digits():
    import torch

    from edgepass.demo import DigitsNet, demo_path

    torch.manual_seed(0)
    m = DigitsNet()
    m.load_state_dict(torch.load(str(demo_path("digits_cnn.pt"))))
    m.eval()
    z = np.load(str(demo_path("digits_data.npz")))
    return m, z["x_test"], z["y_test"]


def test_accuracy_predictor_digits(digits):
    from edgepass.predictors.accuracy import AccuracyPredictor

    m, x, y = digits
    warnings.simplefilter("ignore")
    kw = dict(max_levels=3, n_fit=6, seed=0)
    ap = AccuracyPredictor(m, x[:200], y[:200], **kw).fit()
    assert ap.info["metric"] == "accuracy" and not ap.info["data_free"]
    rng = np.random.default_rng(7)
    designs = [ap.space.sample(rng) for _ in range(8)]
    truth = [ap.evaluate(d) for d in designs]
    pred = np.array([ap.predict(d) for d in designs])
    assert spearman(pred, truth) > 0.5
    codes = np.stack([ap.space.encode(d) for d in designs])
    assert np.allclose(ap.predict_codes(codes), pred)
    ap2 = AccuracyPredictor(m, x[:200], y[:200], **kw).fit()
    assert np.allclose(ap2.predict_codes(codes), pred), "must be deterministic"
    from edgepass.optimizers.search import moves, neighbours   # the repair's incremental scores agree

    n_choices = [len(c) for _, _, c in ap.space.knobs()]
    for code in codes[:3]:
        knob, new = moves(code, n_choices)
        assert np.allclose(ap.predict_moves(code, knob, new), ap.predict_codes(neighbours(code, n_choices)),
                           rtol=0, atol=1e-12)


def test_accuracy_predictor_data_free(digits):
    import torch

    from edgepass.predictors.accuracy import AccuracyPredictor

    m, x, _ = digits
    warnings.simplefilter("ignore")
    ap = AccuracyPredictor(m, None, example_inputs=(torch.from_numpy(x[:1]),), max_levels=2, n_fit=0,
                           synthetic_samples=64)
    ap.fit()
    assert ap.info["data_free"] and ap.info["metric"] == "fidelity" and "data-free" in ap.info["note"]
    assert ap.predict(ap.space.identity()) == pytest.approx(1.0)
