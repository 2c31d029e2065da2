"""Proxy + monotone map vs the device-conditioned predictor, the accuracy predictor, and energy.

    python benchmarks/predictors_extra.py [--eval 300] [--k 10] [--designs 32] [--quick]

(a) approach 1 vs approach 2 on held-out devices (NB201): for each target, k=10 measured archs
    (seeded); approach 1 = ProxyPredictor with the proxy chosen (i) by device features and (ii) by
    Spearman on the k samples, among HELP's meta-train + meta-valid devices for HELP's meta-test
    targets (HELP's protocol) and among all other devices for the other targets; approach 2 =
    ``edgepass.predictors.latency.fit_device`` on the same k archs (guarded import); baseline =
    log-linear fit of latency on FLOPs from the same k samples. Metrics on ``--eval`` remaining
    archs (seeded sample; approach 1 also on all remaining archs): Spearman, share within +-10 %,
    MAPE. Monotonicity check: flag = Spearman on the k samples < 0.9; "reuse fails" = Spearman of
    the (unadapted) proxy on all remaining archs < 0.9.
(b) accuracy predictor on the bundled digits CNN: sweep + correction on half of the labelled test
    set, truth = accuracy of ``edgepass.apply`` (real int8 convert, BN recalibration) on the other
    half, for ``--designs`` held-out random designs; baseline = Spearman of kept MACs vs accuracy.
(c) energy: MLPerf Tiny leave-one-system-out (predicted from measured latency) and a table of
    modelled energy for a few devices x models.

Writes benchmarks/out/predictors_extra.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

HELP_TEST = {"titan_rtx_256": "help/titan-rtx-b256", "gold_6226": "help/xeon-gold-6226", "fpga": "hwnasbench/fpga",
             "pixel2": "help/pixel2", "raspi4": "hwnasbench/raspi4", "eyeriss": "hwnasbench/eyeriss"}
# HELP's NB201 meta-train and meta-valid devices (the only proxies allowed for its meta-test targets)
HELP_TRAIN = ["help/1080ti-b1", "help/1080ti-b32", "help/1080ti-b256", "help/xeon-silver-4114",
              "help/xeon-silver-4210r", "help/galaxy-a50", "hwnasbench/pixel3", "help/essential-ph1",
              "help/galaxy-s7", "help/titanx-b1", "help/titanx-b32", "help/titanx-b256", "help/xeon-gold-6240"]
OTHERS = ["eagle/core-i7-7820x", "eagle/jetson-nano-fp32", "eagle/sd855-cpu-int8", "nnmeter/pixel4-a76-cpu",
          "nnmeter/adreno640-gpu", "hwnasbench/edgetpu", "hwnasbench/jetson-tx2", "local/cpu-ort-1t"]


def _flops(specs) -> np.ndarray:
    from edgepass.dataset import features

    return np.array([max(features(s, per_op=False)["macs"], 1) for s in specs], dtype=np.float64)


def section_proxy(k: int, n_eval: int, seed: int, quick: bool) -> tuple[list, list, dict]:
    from edgepass.predictors.proxy import ProxyPredictor, choose_proxy, measured_latency
    from edgepass.predictors.stats import mape, spearman, within

    try:
        from edgepass.predictors import latency as lat
        have_lat = hasattr(lat, "fit_device")
    except Exception:  # noqa: BLE001
        lat, have_lat = None, False
    targets = [(name, dev, HELP_TRAIN) for name, dev in HELP_TEST.items()]
    targets += [(dev, dev, None) for dev in (OTHERS[:3] if quick else OTHERS)]
    rows, flags = [], []
    for name, dev, cands in targets:
        table = {s: v for s, v in zip(*_specs_of(dev))}
        specs = sorted(table)
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(specs), k, replace=False)
        ks = [specs[i] for i in idx]
        ky = np.array([table[s] for s in ks])
        rest = [s for i, s in enumerate(specs) if i not in set(idx.tolist())]
        ev = [rest[i] for i in np.random.default_rng(seed + 1).choice(len(rest), min(n_eval, len(rest)), replace=False)]
        ev_y = np.array([table[s] for s in ev])
        rest_y = np.array([table[s] for s in rest])
        cand = cands if cands is not None else None
        p_feat = choose_proxy(dev, cand, space="nb201")
        p_meas = choose_proxy(dev, cand, space="nb201", measurements=(ks, ky))
        row = {"target": name, "device": dev, "n_remaining": len(rest)}
        for tag, prox in (("feat", p_feat), ("kshot", p_meas)):
            pp = ProxyPredictor(prox, candidates=cand)
            rep = pp.fit(ks, ky, target=dev)
            raw = measured_latency(prox, rest)
            ok = np.isfinite(raw)
            rho_reuse = spearman(raw[ok], rest_y[ok])
            pred_ev = pp.predict(ev)
            row.update({f"{tag}_proxy": prox, f"{tag}_k_rho": round(rep.spearman, 3),
                        f"{tag}_map": rep.map_kind, f"{tag}_adapted": rep.adapted, f"{tag}_needs_more": rep.needs_more,
                        f"{tag}_rho_all": round(rho_reuse, 3),
                        f"{tag}_rho": round(spearman(pred_ev, ev_y), 3), f"{tag}_w10": round(within(pred_ev, ev_y), 3),
                        f"{tag}_mape": round(mape(pred_ev, ev_y), 1)})
            if tag == "kshot":
                p_iso, p_ll = pp.map, None
                from edgepass.predictors.proxy import MonotoneMap
                pk = measured_latency(prox, ks)
                pe = measured_latency(prox, ev)
                for kind in ("log-linear", "isotonic"):
                    f = MonotoneMap.fit(pk, ky, kind)
                    row[f"kshot_{kind}_mape"] = round(mape(f(pe), ev_y), 1)
                del p_iso, p_ll
            flags.append({"target": name, "proxy": prox, "choice": tag, "flagged": bool(rep.spearman < 0.9),
                          "fails": bool(rho_reuse < 0.9)})
        # baseline: log-linear latency ~ FLOPs from the same k samples
        fk, fe = _flops(ks), _flops(ev)
        b, a = np.polyfit(np.log(fk), np.log(ky), 1)
        pb = np.exp(a + b * np.log(fe))
        row.update(flops_rho=round(spearman(fe, ev_y), 3), flops_w10=round(within(pb, ev_y), 3),
                   flops_mape=round(mape(pb, ev_y), 1))
        # approach 2: device-conditioned predictor with few-shot fit
        if have_lat:
            try:
                t0 = time.perf_counter()
                from edgepass.devices import get_device
                base = get_device(dev)
                fitted = lat.fit_device(list(zip(ks, ky)), name=f"fit-{name}", base=base)
                m = lat.load_model()
                state = m.device_state(fitted)
                prec = lat.device_precision(fitted)
                mats = [lat.model_matrix(s, prec) for s in ev]
                p2 = np.asarray(lat.predict_matrices(mats, state, m))
                row.update(dc_rho=round(spearman(p2, ev_y), 3), dc_w10=round(within(p2, ev_y), 3),
                           dc_mape=round(mape(p2, ev_y), 1), dc_s=round(time.perf_counter() - t0, 1))
            except Exception as exc:  # noqa: BLE001
                row["dc_note"] = f"failed: {type(exc).__name__}: {str(exc)[:80]}"
        else:
            row["dc_note"] = "edgepass.predictors.latency.fit_device not available"
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr)
    conf = {}
    for choice in ("feat", "kshot"):
        fl = [f for f in flags if f["choice"] == choice]
        tp = sum(f["flagged"] and f["fails"] for f in fl)
        tn = sum(not f["flagged"] and not f["fails"] for f in fl)
        fp = sum(f["flagged"] and not f["fails"] for f in fl)
        fn = sum(not f["flagged"] and f["fails"] for f in fl)
        conf[choice] = {"proxy choice": choice, "cases": len(fl), "reuse fails": tp + fn, "flagged": tp + fp,
                        "TP": tp, "FP": fp, "FN": fn, "TN": tn, "accuracy": round((tp + tn) / max(len(fl), 1), 3)}
    return rows, list(conf.values()), {"flags": flags}


def _specs_of(dev):
    from edgepass.predictors.proxy import measured_table

    t = measured_table(dev, None)
    items = [(s, v) for s, v in t.items() if s.startswith("nb201:")]
    return [s for s, _ in items], [v for _, v in items]


def section_accuracy(n_designs: int, seed: int) -> tuple[list, dict]:
    import torch

    import edgepass
    from edgepass.demo import DigitsNet, demo_path
    from edgepass.predictors.accuracy import AccuracyPredictor
    from edgepass.predictors.stats import kendall, spearman
    from edgepass.rewrite import run_model

    torch.manual_seed(0)
    m = DigitsNet()
    m.load_state_dict(torch.load(str(demo_path("digits_cnn.pt"))))
    m.eval()
    z = np.load(str(demo_path("digits_data.npz")))
    x, y = z["x_test"], z["y_test"]
    half = len(x) // 2
    t0 = time.perf_counter()
    ap = AccuracyPredictor(m, x[:half], y[:half], seed=seed).fit()
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed + 1000)
    designs = [ap.space.sample(rng) for _ in range(n_designs)]
    truth, macs = [], []
    ex = (torch.from_numpy(x[:1]),)
    for d in designs:
        out = edgepass.apply(m, d, example_inputs=ex, calibration_data=x[:half])
        logits = run_model(out, [x[half:]])[0]
        truth.append(float((logits.argmax(1) == y[half:]).mean()))
        macs.append(ap.space.design_graph(d).macs)
    pred = np.array([ap.predict(d) for d in designs])
    add = np.array([ap.additive(d) for d in designs])
    truth = np.array(truth)
    # data-free variant
    ap0 = AccuracyPredictor(m, None, example_inputs=ex, seed=seed).fit()
    pred0 = np.array([ap0.predict(d) for d in designs])
    rows = [
        {"predictor": "sweep + correction (" + ap.info["correction"] + ")", "spearman": round(spearman(pred, truth), 3),
         "kendall": round(kendall(pred, truth), 3), "mae_pts": round(100 * float(np.mean(np.abs(pred - truth))), 2),
         "build_s": round(build_s, 1), "evaluations": ap.info["sweep_evaluations"] + ap.info["fit_designs"]},
        {"predictor": "sweep, additive only", "spearman": round(spearman(add, truth), 3),
         "kendall": round(kendall(add, truth), 3), "mae_pts": round(100 * float(np.mean(np.abs(add - truth))), 2)},
        {"predictor": "data-free fidelity (synthetic inputs)", "spearman": round(spearman(pred0, truth), 3),
         "kendall": round(kendall(pred0, truth), 3), "build_s": ap0.info["sweep_s"] + ap0.info["fit_s"]},
        {"predictor": "baseline: kept MACs", "spearman": round(spearman(macs, truth), 3),
         "kendall": round(kendall(np.array(macs, float), truth), 3)},
    ]
    return rows, {"n_designs": n_designs, "truth_range": [float(truth.min()), float(truth.max())],
                  "info": ap.info, "info_data_free": ap0.info, "truth": truth.tolist(), "pred": pred.tolist()}


def section_energy() -> tuple[list, list, dict]:
    from edgepass.predictors.energy import calibrate, mlperf_tiny_graph, predict_energy

    cal, loso = calibrate()
    rows = []
    for kind, c in cal["classes"].items():
        errs = [r["abs_err_%"] for r in loso if r["kind"] == kind]
        rows.append({"class": kind, "systems": c["n_systems"], "measurements": c["n_rows"],
                     "LOSO MAPE %": round(float(np.mean(errs)), 1), "LOSO median APE %": round(float(np.median(errs)), 1),
                     "within 25 %": round(float(np.mean(np.array(errs) <= 25)), 2),
                     "within 2x": round(float(np.mean(np.array(errs) <= 100)), 2)})
    per_task = []
    for task in ("ad", "ic", "kws", "vww"):
        errs = [r["abs_err_%"] for r in loso if r["task"] == task]
        if errs:
            per_task.append({"class": f"task {task}", "measurements": len(errs), "LOSO MAPE %": round(float(np.mean(errs)), 1),
                             "LOSO median APE %": round(float(np.median(errs)), 1)})
    modelled = []
    import torchvision  # noqa: F401

    from edgepass.api import analyze
    from edgepass.zoo import build
    graphs = {"mlperf ic (ResNet-8)": mlperf_tiny_graph("ic"), "mlperf vww (MBv1-0.25)": mlperf_tiny_graph("vww")}
    for spec in ("tv:mobilenet_v2", "tv:resnet18"):
        try:
            zm = build(spec)
            graphs[spec] = analyze(zm.module, zm.example_inputs)
        except Exception as exc:  # noqa: BLE001
            print(f"  skip {spec}: {exc}", file=sys.stderr)
    devices = ["mlperf-tiny/stmicroelectronics-nucleo-l4r5zi-p", "mlperf-tiny/greenwaves-technologies-gap9-800-370",
               "help/pixel2", "hwnasbench/jetson-tx2", "local/cpu-ort-1t", "help/titan-rtx-b1"]
    for name, g in graphs.items():
        for dev in devices:
            for prec in ("fp32", "int8"):
                try:
                    tot, _, calibrated, note = predict_energy(g, dev, precision=prec)
                    lat_ms = _lat(g, dev)
                except Exception as exc:  # noqa: BLE001
                    tot, calibrated, note, lat_ms = float("nan"), False, str(exc)[:60], None
                modelled.append({"model": name, "device": dev, "precision": prec, "GMACs": round(g.macs / 1e9, 4),
                                 "latency_ms": None if lat_ms is None else round(lat_ms, 3),
                                 "energy_mJ": round(tot, 4), "calibrated": calibrated})
    return rows + per_task, modelled, {"calibration": cal, "loso": loso}


def _lat(g, dev):
    try:
        from edgepass.predictors.latency import predict_latency
        return float(predict_latency(g, dev))
    except Exception:  # noqa: BLE001
        return None


PROXY_COLS = ["target", "kshot_proxy", "kshot_k_rho", "kshot_rho_all", "kshot_map", "kshot_adapted", "kshot_needs_more",
              "kshot_rho", "kshot_w10", "kshot_mape", "feat_proxy", "feat_k_rho", "feat_rho", "feat_w10", "feat_mape",
              "dc_rho", "dc_w10", "dc_mape", "flops_rho", "flops_w10", "flops_mape"]
MAP_COLS = ["target", "kshot_proxy", "kshot_log-linear_mape", "kshot_isotonic_mape", "kshot_map"]
FLAG_COLS = ["proxy choice", "cases", "reuse fails", "flagged", "TP", "FP", "FN", "TN", "accuracy"]
ACC_COLS = ["predictor", "spearman", "kendall", "mae_pts", "build_s", "evaluations"]
EN_COLS = ["class", "systems", "measurements", "LOSO MAPE %", "LOSO median APE %", "within 25 %", "within 2x"]
EN_MOD_COLS = ["model", "device", "precision", "GMACs", "latency_ms", "energy_mJ", "calibrated"]

_CACHE: dict = {}


def sections(k: int = 10, n_eval: int = 300, n_designs: int = 32, seed: int = 0, quick: bool = False) -> list:
    """``[(title, rows, columns)]`` of every table (computed once per process)."""
    key = (k, n_eval, n_designs, seed, quick)
    if key not in _CACHE:
        warnings.simplefilter("ignore")
        prox_rows, conf, extra_p = section_proxy(k, n_eval, seed, quick)
        acc_rows, extra_a = section_accuracy(n_designs, seed)
        en_rows, en_mod, extra_e = section_energy()
        _CACHE[key] = ([
            (f"(a) approach 1 (proxy + monotone map) vs approach 2 (device-conditioned, few-shot) vs FLOPs "
             f"baseline, NB201, k={k}, metrics on {n_eval} held-out archs", prox_rows, PROXY_COLS),
            ("(a') monotone map choice: held-out MAPE (%) of each map (k-shot proxy)", prox_rows, MAP_COLS),
            ("(a'') monotonicity check (flag: Spearman on k < 0.9) vs reuse failing (Spearman on all remaining < 0.9)",
             conf, FLAG_COLS),
            (f"(b) accuracy predictor, digits CNN, {n_designs} held-out random designs", acc_rows, ACC_COLS),
            ("(c) energy: MLPerf Tiny leave-one-system-out (from measured latency)", en_rows, EN_COLS),
            ("(c') modelled energy (latency from the latency predictor)", en_mod, EN_MOD_COLS),
        ], {"proxy": extra_p, "accuracy": extra_a, "energy": extra_e})
    return _CACHE[key][0]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--designs", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    secs = sections(args.k, args.eval, args.designs, args.seed, args.quick)
    for title, rows, cols in secs:
        print(f"\n{title}")
        print_table(rows, cols)
    extra = _CACHE[(args.k, args.eval, args.designs, args.seed, args.quick)][1]
    path = write_json("predictors_extra.json", {"args": vars(args), "wall_s": round(time.perf_counter() - t0, 1),
                                                "sections": [{"title": t, "rows": r, "columns": c} for t, r, c in secs],
                                                "details": json.loads(json.dumps(extra, default=str))})
    print(f"\nwrote {path} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
