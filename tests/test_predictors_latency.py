"""Latency predictor: artifact, predictions, LatencyTable, few-shot fit, CLI (small slices, < 60 s)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from edgepass.cli import main
from edgepass.predictors import latency as L
from edgepass.predictors.features import OP_FEATURE_INDEX


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 32, 3, padding=1)
        self.b1 = torch.nn.BatchNorm2d(32)
        self.c2 = torch.nn.Conv2d(32, 64, 5, padding=2, stride=2)
        self.b2 = torch.nn.BatchNorm2d(64)
        self.c3 = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.relu(self.c3(x)) + x
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def space():
    from edgepass import design_space

    torch.manual_seed(0)
    return design_space(Small().eval(), (torch.randn(1, 3, 64, 64),))


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_artifact_loads_fast():
    t = time.perf_counter()
    m = L.LatencyModel.load()
    assert time.perf_counter() - t < 1.0
    assert m.devices and "local/cpu-ort-1t" in m.devices
    assert m.a["W0"].shape[0] > 30


def test_positive_and_monotone_in_width(space):
    lat = [L.predict_latency(space.design_graph(space.uniform(r)), "local/cpu-ort-1t") for r in (1.0, 0.75, 0.5, 0.25)]
    assert all(v > 0 for v in lat)
    assert all(a >= b for a, b in zip(lat, lat[1:])), lat
    est = L.predict(space.graph, "help/pixel2")
    assert est.latency_ms > 0 and all(r.latency_ms >= 0 for r in est.layers)
    assert abs(sum(r.latency_ms for r in est.layers) - est.latency_ms) < 1e-6 * est.latency_ms


def test_table_agrees_with_predict(space):
    tab = L.LatencyTable(space, "local/cpu-ort-1t")
    designs = [space.sample(i) for i in range(8)] + [space.identity()]
    codes = np.stack([space.encode(d) for d in designs])
    fast = tab.predict(codes)
    for d, f in zip(designs, fast):
        slow = L.predict_latency(space.design_graph(d), "local/cpu-ort-1t")
        assert abs(f - slow) <= 1e-6 * slow
        assert abs(tab.predict_design(d) - slow) <= 1e-6 * slow


def test_few_shot_improves_over_no_adaptation():
    """An unseen device described by another device's datasheet (eyeriss latencies, a phone's features):
    10 measured archs must beat the feature-only guess."""
    from dataclasses import replace

    from edgepass import dataset
    from edgepass.devices import get_device

    ts = dataset.load().select(device="hwnasbench/eyeriss", space="nb201", metric="latency_ms")
    idx = np.argsort(ts.spec_code)[:24]
    specs = [ts.specs[ts.spec_code[i]] for i in idx]
    y = np.asarray([ts.value[i] for i in idx], dtype=float)
    dev = replace(get_device("help/pixel2"), id="test/unknown-accelerator", aliases=())
    m = L.load_model()
    mats = [L.model_matrix(s) for s in specs]
    st0 = m.device_state(dev)
    p0 = L.predict_matrices(mats[10:], st0, m)
    fitted = L.fit_device(list(zip(specs[:10], y[:10])), name="eyeriss copy", base=dev)
    p1 = L.predict_matrices(mats[10:], m.device_state(fitted), m)
    err0 = np.median(np.abs(p0 / y[10:] - 1))
    err1 = np.median(np.abs(p1 / y[10:] - 1))
    assert err1 < err0
    assert spearman(p1, y[10:]) >= spearman(p0, y[10:]) - 0.05


def test_batched_leave_one_out_folds_are_independent_fits():
    """fit_state's leave-one-out refits run batched (one optimisation for all folds, on distinct op
    rows): each fold must equal a separate fit on its k-1 measurements, and leave-one-out error must
    exceed in-sample error (what the op-count model is compared with)."""
    from edgepass.devices import get_device

    m = L.load_model()
    specs = [f"nb201:|nor_conv_3x3~0|+|{a}~0|{b}~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"
             for a in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3") for b in ("avg_pool_3x3", "nor_conv_3x3")]
    mats = [L.model_matrix(s) for s in specs]
    st = m.uncorrected_state(get_device("help/pixel2"))
    y = L.predict_matrices(mats, st, m) * np.exp(np.random.default_rng(0).normal(0, 0.1, len(mats)))
    raw = L.device_raw_vector(get_device("help/xeon-gold-6226"))
    k = len(mats)
    masks = np.vstack([np.ones((1, k), bool), ~np.eye(k, dtype=bool)[:3]])
    r, off, sc, lp, _ = L.fit_embeddings(m, mats, y, raw, masks, np.zeros(m.a["R"].shape[1]), steps=100,
                                         ridge=1.0, fit_scale=True)
    for f in range(1, 4):
        keep = masks[f]
        r1, off1, sc1, _, _ = L.fit_embeddings(m, [x for x, kk in zip(mats, keep) if kk], y[keep], raw,
                                               np.ones((1, k - 1), bool), np.zeros(m.a["R"].shape[1]), steps=100,
                                               ridge=1.0, fit_scale=True)
        assert np.allclose(r[f], r1[0], atol=1e-6) and abs(off[f] - off1[0]) < 1e-6 and abs(sc[f] - sc1[0]) < 1e-6
    fit = L.fit_state(m, mats, y, raw)
    assert fit["mlp_loo_rel_rmse"] > 0 and fit["mlp_loo_rel_rmse"] ** 2 > np.mean((np.exp(lp[0]) / y - 1) ** 2) * 0.9


def test_cli_predict_and_errors(capsys, tmp_path):
    assert main(["predict", "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|",
                 "--device", "local/cpu-ort-1t"]) == 0
    out = capsys.readouterr().out
    assert "ms" in out and "local/cpu-ort-1t" in out
    assert main(["predict", "tv:squeezenet1_1", "--device", "help/pixel2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["latency_ms"] > 0 and d["layers"]
    # energy comes with every prediction: per-layer rows that add up, modelled on a phone
    assert d["energy_mj"] > 0 and d["energy_calibrated"] is False
    assert sum(r["energy_mj"] or 0.0 for r in d["layers"]) == pytest.approx(d["energy_mj"], rel=1e-6)
    assert main(["predict", "tv:squeezenet1_1", "--device", "no/such-device"]) == 5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["predict", str(bad), "--device", "local/cpu-ort-1t"]) == 2
    assert main(["predict", "nope:xyz", "--device", "local/cpu-ort-1t"]) == 2


def test_predict_reports_energy_calibrated_where_measured():
    """``edgepass.predict`` fills the energy fields from the energy predictor and says whether the
    device's class is calibrated on measurements (MLPerf Tiny microcontrollers) or only modelled."""
    import edgepass

    spec = "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_1x1~2|"
    mcu = edgepass.predict(spec, "mlperf-tiny/bosch-nucleo-l4r5zi")
    cpu = edgepass.predict(spec, "local/cpu-ort-1t")
    assert mcu.energy_calibrated is True and cpu.energy_calibrated is False
    assert mcu.energy_mj > 0 and cpu.energy_mj > 0
    assert any("calibrated on" in n for n in mcu.notes) and any("modelled" in n for n in cpu.notes)
    assert not any("energy not estimated" in n for n in cpu.notes)


def test_cli_device_fit(tmp_path, capsys):
    from edgepass.devices import get_device

    specs = ["nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
             "nb201:|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",
             "nb201:|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
             "nb201:|avg_pool_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"]
    csv = tmp_path / "m.csv"
    csv.write_text("model,latency_ms\n" + "".join(f"{s},{v}\n" for s, v in zip(specs, (9.0, 1.0, 3.0, 4.0))))
    out = tmp_path / "dev.json"
    capsys.readouterr()
    assert main(["device", "fit", str(csv), "--name", "My board", "-o", str(out)]) == 0
    dev = get_device(str(out))
    fit = dev.provenance["latency_fit"]
    assert fit["k"] == 4 and len(fit["residual"]) == L.load_model().a["R"].shape[1]
    # the user is told what to expect on unseen models: the leave-one-out error of the kept predictor
    printed = capsys.readouterr().out
    assert f"leave-one-out error {100 * fit['loo_rel_rmse']:.1f} % RMS" in printed and fit["loo_rel_rmse"] > 0
    assert "leave-one-out error" in dev.notes
    assert main(["predict", specs[0], "--device", str(out)]) == 0
    capsys.readouterr()
    empty = tmp_path / "e.csv"
    empty.write_text("model,ms\n")
    assert main(["device", "fit", str(empty), "--name", "x", "-o", str(tmp_path / "x.json")]) == 2


@pytest.fixture(scope="module")
def cpu_designs(space):
    """(shipped model, this CPU's 1-thread device, its state without own corrections, 50 sampled
    designs, their op matrices): the synthetic-device correction tests fit on 40 and check 10."""
    from edgepass.devices import get_device

    m = L.load_model()
    dev = get_device("local/cpu-ort-1t")
    designs = [space.sample(i) for i in range(50)]
    return m, dev, m.uncorrected_state(dev), designs, [L.graph_matrix(space.design_graph(d))[0] for d in designs]


def _saved_table_agrees(m, path, space, dev, designs, mats, expected, rtol) -> dict:
    """Save and reload ``m``; its LatencyTable on ``designs`` equals its predictions, which equal
    ``expected`` within ``rtol`` (float32 storage). Returns the reloaded device state."""
    m.save(path)
    m2 = L.LatencyModel.load(path)
    st2 = m2.device_state(dev)
    tab = L.LatencyTable(space, dev, model=m2)
    codes = np.stack([space.encode(d) for d in designs])
    est = L.predict_matrices(mats, st2, m2)
    assert np.allclose(tab.predict(codes), est, rtol=1e-5)
    assert np.allclose(est, expected, rtol=rtol)
    return st2


def test_per_device_correction_fits_scaled_truth_and_keeps_table_exact(space, cpu_designs, tmp_path):
    """A synthetic device whose int8 convs run 3x faster and every graph pays 0.5 ms: the per-op
    correction fitted on 40 designs recovers it on 10 others; the LatencyTable stays an exact sum;
    the corrected model survives save/load."""
    m, dev, st, designs, mats = cpu_designs
    j = OP_FEATURE_INDEX

    def truth(X):
        per = m.op_latency(X, st)
        fast = (X[:, j["kind_conv"]] > 0) & (X[:, j["prec_int8"]] > 0)
        return float((per * np.where(fast, 1 / 3, 1.0)).sum() + 0.5)

    y = np.array([truth(X) for X in mats])
    w = L.fit_correction(m, mats[:40], y[:40], st)
    assert np.all(w >= 0)
    plain = L.predict_matrices(mats[40:], st, m)
    fixed = L.predict_matrices(mats[40:], {**st, "corr": w}, m)
    assert np.median(np.abs(fixed / y[40:] - 1)) < 0.5 * np.median(np.abs(plain / y[40:] - 1))
    assert np.median(np.abs(fixed / y[40:] - 1)) < 0.05
    st2 = _saved_table_agrees(m.with_corrections({"local/cpu-ort-1t": w}), tmp_path / "c.npz", space, dev,
                              designs[40:], mats[40:], fixed, rtol=1e-4)
    assert "corr" in st2 and "correction" in st2["source"]


def test_op_net_learns_channel_alignment_and_keeps_table_exact(space, cpu_designs, tmp_path):
    """A device on which convs whose output channels are not a multiple of 16 run 1.6x slower (a
    joint shape effect the linear correction cannot express): the per-op residual network fitted
    on 40 designs halves the correction's error on 10 others, deterministically; the LatencyTable
    stays an exact sum with it, after save/load."""
    m, dev, st, designs, mats = cpu_designs
    j = OP_FEATURE_INDEX

    def truth(X):
        per = m.op_latency(X, st)
        cout = np.rint(np.expm1(X[:, j["log_cout"]]))
        slow = (X[:, j["kind_conv"]] > 0) & (cout % 16 != 0)
        return float((per * np.where(slow, 1.6, 1.0)).sum())

    y = np.array([truth(X) for X in mats])
    assert np.ptp([truth(X) / L.predict_matrices([X], st, m)[0] for X in mats]) > 0.1   # the effect is there
    w = L.fit_correction(m, mats[:40], y[:40], st)
    net = L.fit_op_net(m, mats[:40], y[:40], {**st, "corr": w}, steps=800)
    again = L.fit_op_net(m, mats[:40], y[:40], {**st, "corr": w}, steps=800)
    assert all(np.array_equal(a, b) for a, b in zip(net, again))
    corr_only = L.predict_matrices(mats[40:], {**st, "corr": w}, m)
    with_net = L.predict_matrices(mats[40:], {**st, "corr": w, "opnet": net}, m)
    err_c = np.median(np.abs(corr_only / y[40:] - 1))
    err_n = np.median(np.abs(with_net / y[40:] - 1))
    assert err_n < 0.5 * err_c, (err_n, err_c)
    mc = m.with_corrections({"local/cpu-ort-1t": w}, {"local/cpu-ort-1t": net})
    st2 = _saved_table_agrees(mc, tmp_path / "n.npz", space, dev, designs[40:], mats[40:], with_net, rtol=1e-3)
    assert "opnet" in st2 and "residual network" in st2["source"]
    assert "opnet" not in mc.with_corrections({}).device_state(dev)
    with pytest.raises(ValueError, match="corrected"):
        L.fit_op_net(m, mats[:40], y[:40], st)


def test_few_shot_op_class_residual_learns_a_cost_ratio_the_mlp_lacks(space, tmp_path):
    """A device on which every 5x5 conv costs 0.3 ms more than the shared MLP thinks (no 5x5
    support, say; the designs take 0.1-2 ms): from 20 measured designs the few-shot fit keeps an
    op-class residual (leave-one-out says it pays), which predicts 20 held-out designs much better
    than the embedding fit alone; the residual travels in the device file and the LatencyTable
    stays an exact sum. (With 10 designs leave-one-out declines here: 5x5 convs are split over an
    fp32 and an int8 class, each in only a few of them.)"""
    from edgepass.devices import get_device

    m = L.load_model()
    base = get_device("local/cpu-ort-1t")
    st = m.uncorrected_state(base)
    designs = [space.sample(i) for i in range(40)]
    graphs = [space.design_graph(d) for d in designs]
    mats = [L.graph_matrix(g)[0] for g in graphs]
    j = OP_FEATURE_INDEX
    k5 = np.array([((X[:, j["kind_conv"]] > 0) & (X[:, j["kernel"]] == 5)).sum() for X in mats])
    assert 0 < (k5[:20] > 0).sum() < 20 and 0 < (k5[20:] > 0).sum() < 20  # the knob varies in both sets
    y = np.array([float(m.op_latency(X, st).sum() + m.overhead_ms(st)) for X in mats]) + 0.3 * k5
    raw = L.device_raw_vector(base)
    fit = L.fit_state(m, mats[:20], y[:20], raw)
    assert fit.get("op_residual"), "leave-one-out should keep the residual"
    assert "conv|k5|dw0|q0" in fit["op_residual"]["classes"]
    plain = L.predict_matrices(mats[20:], m.state_from_fit(raw, {**fit, "op_residual": None}), m)
    fixed = L.predict_matrices(mats[20:], m.state_from_fit(raw, fit), m)
    err = lambda p: float(np.median(np.abs(p / y[20:] - 1)))  # noqa: E731
    assert err(fixed) < 0.5 * err(plain) and err(fixed) < 0.1
    dev = L.fit_device(list(zip(graphs[:20], y[:20])), name="no-5x5 board", base=base)
    path = tmp_path / "board.json"
    dev.save(path)
    again = get_device(str(path))
    stf = m.device_state(again)
    assert "op-class residual" in stf["source"]
    tab = L.LatencyTable(space, again, model=m)
    codes = np.stack([space.encode(d) for d in designs[20:]])
    assert np.allclose(tab.predict(codes), L.predict_matrices(mats[20:], stf, m), rtol=1e-6)


def test_few_shot_count_model_replaces_the_mlp_on_a_count_device(space):
    """A device whose latency is exactly a sum of per-class op costs (a simulated accelerator, like
    HELP's Eyeriss): leave-one-out prefers the op-count model to the adapted MLP and it predicts
    held-out designs made of the op classes it saw to within 1 %, LatencyTable included."""
    from dataclasses import replace

    from edgepass.devices import get_device

    m = L.load_model()
    cost = {"conv|k3|dw0|q0": 0.20, "conv|k3|dw0|q1": 0.08, "conv|k5|dw0|q0": 0.55, "conv|k5|dw0|q1": 0.30,
            "conv|k3|dw1|q0": 0.05, "conv|k3|dw1|q1": 0.04, "act|k0|dw0|q0": 0.01, "batchnorm|k0|dw0|q0": 0.0,
            "add|k0|dw0|q0": 0.02}
    designs = [space.sample(i) for i in range(30)]
    mats = [L.graph_matrix(space.design_graph(d))[0] for d in designs]
    y = np.array([0.3 + sum(cost.get(c, 0.03) for c in L.op_classes(X)) for X in mats])
    base = get_device("local/cpu-ort-1t")
    raw = L.device_raw_vector(base)
    fit = L.fit_state(m, mats[:10], y[:10], raw)
    assert fit.get("op_residual") and fit["op_residual"]["mode"] == "replace"
    st = m.state_from_fit(raw, fit)
    assert "op-count model" in st["source"] and fit["op_residual"]["model"] == "counts"
    p = L.predict_matrices(mats[10:], st, m)
    seen = set(fit["op_residual"]["classes"])
    known = np.array([set(L.op_classes(X)) <= seen for X in mats[10:]])
    assert known.sum() >= 10 and not known.all()  # a class no measured design had keeps the MLP's ms
    assert np.max(np.abs(p[known] / y[10:][known] - 1)) < 0.01
    assert np.all(p[~known] > 0.9 * p[known].min())
    dev = replace(base, id="user/counting-board", aliases=[],
                  provenance={**base.provenance, L.FIT_KEY: fit})
    tab = L.LatencyTable(space, dev, model=m)
    codes = np.stack([space.encode(d) for d in designs[10:]])
    assert np.allclose(tab.predict(codes), p, rtol=1e-6)
    odd = designs[10 + int(np.nonzero(~known)[0][0])]
    notes = L.predict(space.design_graph(odd), dev, model=m).notes
    assert any("unlike the device's measured models" in n for n in notes)
    assert not any("unlike" in n for n in L.predict(space.design_graph(designs[0]), dev, model=m).notes)


def test_few_shot_mixture_of_trained_devices(space, tmp_path):
    """A device whose latency is 0.8 x what the predictor says for Eyeriss + 0.2 x a Titan RTX
    + 0.05 ms, measured on 10 designs, while its datasheet says "CPU": leave-one-out prefers the
    non-negative mixture of trained devices' predictors to the adapted MLP; it finds those two
    devices and predicts 20 held-out designs to within 1 %, through a saved device file and the
    LatencyTable alike."""
    from dataclasses import replace

    from edgepass.devices import get_device

    m = L.load_model()
    designs = [space.sample(i) for i in range(30)]
    mats = [L.graph_matrix(space.design_graph(d))[0] for d in designs]
    T = L.device_totals(m, mats, L.trained_vectors(m))
    a, b = m.dev_index["hwnasbench/eyeriss"], m.dev_index["help/titan-rtx-b1"]
    y = 0.8 * T[:, a] + 0.2 * T[:, b] + 0.05
    base = get_device("local/cpu-ort-1t")
    raw = L.device_raw_vector(base)
    fit = L.fit_state(m, mats[:10], y[:10], raw)
    res = fit["op_residual"]
    assert res["mode"] == "mix" and {"hwnasbench/eyeriss", "help/titan-rtx-b1"} <= set(res["devices"])
    assert res["loo_rel_rmse"] < 0.01 < res["mlp_loo_rel_rmse"]
    st = m.state_from_fit(raw, fit)
    assert "mixture of trained devices" in st["source"]
    p = L.predict_matrices(mats[10:], st, m)
    assert np.max(np.abs(p / y[10:] - 1)) < 0.01
    plain = L.predict_matrices(mats[10:], m.state_from_fit(raw, {**fit, "op_residual": None}), m)
    assert np.median(np.abs(plain / y[10:] - 1)) > 0.02  # the adapted MLP alone is further off
    dev = replace(base, id="user/mixed-board", aliases=[], provenance={**base.provenance, L.FIT_KEY: fit})
    dev.save(tmp_path / "board.json")
    again = get_device(str(tmp_path / "board.json"))
    tab = L.LatencyTable(space, again, model=m)
    codes = np.stack([space.encode(d) for d in designs[10:]])
    assert np.allclose(tab.predict(codes), p, rtol=1e-6)
    est = L.predict(space.design_graph(designs[12]), again, model=m)
    assert est.latency_ms == pytest.approx(p[2], rel=1e-6)
    assert abs(sum(r.latency_ms for r in est.layers) - est.latency_ms) < 1e-9 * est.latency_ms + 1e-12


def test_few_shot_fit_of_a_device_that_takes_the_same_time_for_every_model(space):
    """Six designs all measured at 1 ms (a runtime dominated by fixed overhead): the fit predicts
    1 ms for designs it never saw, and says in words what it kept (no empty or round-off parts)."""
    m = L.load_model()
    graphs = [space.design_graph(space.sample(i)) for i in range(8)]
    dev = L.fit_device([(g, 1.0) for g in graphs[:6]], name="flat board", model=m)
    fit = dev.provenance[L.FIT_KEY]
    assert [L.predict_latency(g, dev, model=m) for g in graphs[6:]] == pytest.approx([1.0, 1.0], rel=1e-3)
    source = L.fit_source(fit)
    assert "()" not in source and "(;" not in source and "e-1" not in source


def test_few_shot_op_class_residual_rarely_fits_noise():
    """Measurements that are the MLP's own predictions times 3 % noise give leave-one-out no reason
    to add a residual: over 20 noise draws on 10 torchvision models it is kept at most 3 times
    (measured: once), and the op-count model never replaces the MLP."""
    from edgepass.devices import get_device

    m = L.load_model()
    st = m.uncorrected_state(get_device("local/cpu-ort-1t"))
    specs = ("tv:resnet18", "tv:mobilenet_v2", "tv:squeezenet1_1", "tv:shufflenet_v2_x1_0", "tv:mnasnet0_5",
             "tv:resnet34", "tv:mobilenet_v3_small", "tv:regnet_y_400mf", "tv:efficientnet_b0", "tv:googlenet")
    mats = [L.model_matrix(s) for s in specs]
    clean = L.predict_matrices(mats, st, m)
    # the MLP's leave-one-out predictions are the clean ones: its error is the noise itself
    fits = [L.fit_op_residual(m, mats, clean * np.exp(np.random.default_rng(seed).normal(0, 0.03, len(mats))), st,
                              mlp_loo_ms=clean) for seed in range(20)]
    assert sum(f is not None for f in fits) <= 3
    assert all(f is None or f["mode"] == "add" for f in fits)


def test_calibration_on_measured_designs_recovers_per_precision_gains(digits_onnx):
    """calibrate_on_designs fits fp32 / int8 gains and an offset from measured designs of one model
    and every prediction path (predict, LatencyTable) uses them."""
    import edgepass
    from edgepass.predictors.latency import CALIBRATION_KEY, LatencyTable, calibrate_on_designs, predict

    sp = edgepass.design_space(str(digits_onnx))
    dev = "local/cpu-ort-1t"
    designs = [sp.uniform(r, precision=p) for r in (1.0, 0.5, 0.75) for p in (None, "int8")]
    graphs = [sp.design_graph(d) for d in designs]
    # "measurements" made from the uncalibrated predictor's own split: fp32 x 2, int8 x 0.25, +0.01 ms
    from edgepass.predictors.features import graph_matrix
    from edgepass.predictors.latency import load_model

    m = load_model()
    st = m.device_state(dev)
    y = []
    for g in graphs:
        X = graph_matrix(g)[0]
        per = m.op_latency(X, st)
        q = X[:, OP_FEATURE_INDEX["prec_int8"]] > 0
        y.append(2.0 * (per[~q].sum() + m.overhead_ms(st)) + 0.25 * per[q].sum() + 0.01)
    cal, info = calibrate_on_designs(dev, graphs, y)
    assert info["fp"] == pytest.approx(2.0, rel=1e-3) and info["int8"] == pytest.approx(0.25, rel=1e-2)
    assert info["extra_ms"] == pytest.approx(0.01, rel=1e-2) and info["max_rel_error"] < 1e-3
    assert cal.provenance[CALIBRATION_KEY] == info and cal.id == dev
    table = LatencyTable(sp, cal)
    for d, want in zip(designs, y):
        assert predict(sp.design_graph(d), cal).latency_ms == pytest.approx(want, rel=1e-6)
        assert table.predict_design(d) == pytest.approx(want, rel=1e-6)
