"""Amortized optimizer vs per-device search: NAS-Bench-201 (measured latency) and real models.

Section 1, NAS-Bench-201. Train the amortized optimizer once on every device of the training set that
measured all 15,625 NB201 cells, except HELP's six meta-test devices, plus synthetic devices
interpolated between them; then, for each held-out device and budgets at the 10/25/50/75/90th
percentile of its latency distribution, compare the amortized design (one forward pass + repair)
with the exhaustive optimum and with evolutionary search (population 100, 500 iterations, as
Once-for-All) -- accuracy (CIFAR-10 valid, 200 epochs), whether the budget is met, and time per
device. Baseline in the same table: uniform random search with the same number of evaluations as
the amortized repair. The cost model is the held-out device's *measured* latency table, so budgets
met "under the predictor" and "measured" are the same figure there.

Section 2, approach 1 in the loop (NB201). For each held-out device: optimize with a proxy device's
measured table mapped by the monotone map fitted on 10 measured reference cells of the target
(predictors/proxy.py; proxy chosen by Spearman on those cells among the training devices), vs with
the device's own table: accuracy lost by reusing the proxy, and whether the proxy-chosen cell meets
the budget on the target's measured latency.

Section 3, real models (torchvision resnet18, mobilenet_v2, efficientnet_b0 with random weights,
analysed via FX; width x kernel x precision). Latency: the shipped latency predictor's tables
(LatencyTable) per database device; 20 devices held out from training. Accuracy: the data-free
weight-energy score (edgepass/optimizers/sensitivity.py; not accuracy -- no data for random-weight
models). Per held-out device and budgets at 10/30/50/70/90 % of its log feasible range: the
amortized design (the network asked for the budget and +-10 % of it in one batch, each decode
repaired, the best kept; with and without the polish), evolutionary search (100 x 500, seeded with
the identity, then repaired) and the obvious baseline, the greedy repair from the identity design
(+ polish); objective gap vs evolutionary in % of its score, budgets met under the
predictor, time per device. Then a fleet of 1,000 synthetic devices (interpolated between the
held-out ones) for one model: one batched forward pass + a repair each. A PNG of the fronts
(benchmarks/out/optimizers_fronts.png).

    python benchmarks/optimizers.py [--synthetic 200] [--budgets-per-device 24] [--fleet 1000]
           [--models resnet18,mobilenet_v2,efficientnet_b0] [--model-synthetic 300] [--skip-nb201]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, print_table, write_json  # noqa: E402

from edgepass.optimizers import AmortizedOptimizer, Budget, CallableProblem, evolutionary, exhaustive, repair  # noqa: E402
from edgepass.optimizers.api import nb201_full_tables  # noqa: E402
from edgepass.optimizers.population import (QUANTILES, budget_feature, budget_features, reference_designs,  # noqa: E402
                                          reference_vector, synthetic_devices, training_pairs)
from edgepass.optimizers.zoo_space import space  # noqa: E402

HELD_OUT = {"titan_rtx_256": "help/titan-rtx-b256", "gold_6226": "help/xeon-gold-6226", "fpga": "hwnasbench/fpga",
            "pixel2": "help/pixel2", "raspi4": "hwnasbench/raspi4", "eyeriss": "hwnasbench/eyeriss"}


def nb201_section(args) -> tuple[list, dict, list]:
    sp = space("nb201")
    tables = nb201_full_tables(sp)
    held = {k: v for k, v in HELD_OUT.items() if v in tables}
    train = {k: v for k, v in tables.items() if k not in held.values()}
    print(f"[optimizers] {len(train)} training devices, {len(held)} held out, {args.synthetic} synthetic",
          file=sys.stderr)
    refs = reference_designs(len(sp.accuracy))
    population = {**train, **synthetic_devices(train, args.synthetic, seed=0)}
    t0 = time.perf_counter()
    pairs = training_pairs(sp.problem, population, refs, budgets_per_device=args.budgets_per_device)
    t_labels = time.perf_counter() - t0
    opt = AmortizedOptimizer(sp.n_choices, device_dim=len(refs))
    fit = opt.fit(pairs, epochs=args.epochs)
    print(f"[optimizers] labels {t_labels:.1f} s, training {fit['seconds']:.1f} s", file=sys.stderr)

    rows = []
    for short, dev in held.items():
        lat = tables[dev]
        problem = sp.problem(lat)
        vec, centre = reference_vector(lat, refs)
        for q in QUANTILES:
            L = float(np.percentile(lat, q))
            budget = Budget(latency_ms=L)
            best = exhaustive(problem, budget)
            t = time.perf_counter()
            am = opt.optimize(problem, budget, vec, budget_features(L, centre))
            t_am = time.perf_counter() - t
            raw = opt.decode(vec, budget_feature(L, centre))[0]
            raw_ev = problem.evaluate(raw[None])
            evo = evolutionary(problem, budget, seed=0)
            rng = np.random.default_rng(q)
            rand = rng.integers(0, 5, size=(max(am.evaluations, 1), 6))
            ev = problem.evaluate(rand)
            ok = ev["latency_ms"] <= L
            rand_acc = float(ev["accuracy"][ok].max()) if ok.any() else float("nan")
            rows.append({"device": short, "pct": q, "budget_ms": L, "optimum_acc": best.accuracy,
                         "amortized_acc": am.accuracy, "gap": best.accuracy - am.accuracy,
                         "raw_net_acc": float(raw_ev["accuracy"][0]),
                         "raw_net_fits": bool(raw_ev["latency_ms"][0] <= L), "amortized_fits": am.feasible,
                         "evo_acc": evo.accuracy, "evo_gap": best.accuracy - evo.accuracy, "random_acc": rand_acc,
                         "amortized_ms": 1000 * t_am, "evo_ms": 1000 * evo.seconds})
    gaps = [r["gap"] for r in rows]
    summary = {"mean_gap": float(np.mean(gaps)), "max_gap": float(np.max(gaps)),
               "budget_met_%": 100.0 * float(np.mean([r["amortized_fits"] for r in rows])),
               "raw_network_fits_%": 100.0 * float(np.mean([r["raw_net_fits"] for r in rows])),
               "median_amortized_ms": statistics.median(r["amortized_ms"] for r in rows),
               "median_evo_ms": statistics.median(r["evo_ms"] for r in rows)}
    summary["speedup"] = summary["median_evo_ms"] / summary["median_amortized_ms"]

    # a fleet: one batched forward pass for every device, then the repair per device
    fleet = synthetic_devices(tables, args.fleet, seed=123)
    vecs, feats, problems, budgets = [], [], [], []
    rng = np.random.default_rng(7)
    for name in sorted(fleet):
        v, c = reference_vector(fleet[name], refs)
        L = float(np.percentile(fleet[name], rng.uniform(10, 90)))
        vecs.append(v)
        feats.append(budget_feature(L, c))
        problems.append(sp.problem(fleet[name]))
        budgets.append(Budget(latency_ms=L))
    t = time.perf_counter()
    codes = opt.decode(np.array(vecs), np.array(feats))
    fits = [repair(p, b, c, polish=3).feasible for p, b, c in zip(problems, budgets, codes)]
    summary["fleet_devices"] = args.fleet
    summary["fleet_seconds"] = time.perf_counter() - t
    summary["fleet_budget_met_%"] = 100.0 * float(np.mean(fits))
    summary.update({"training_pairs": len(pairs), "label_seconds": t_labels, "train_seconds": fit["seconds"],
                    "train_devices": len(train), "synthetic_devices": args.synthetic})
    return rows, summary, approach1_rows(sp, tables, train, held, opt, refs)


def approach1_rows(sp, tables, train, held, opt, refs) -> list:
    """Optimize with a proxy device's table + monotone map vs the device's own table (NB201)."""
    from edgepass.predictors.proxy import choose_proxy, fit_monotone_map

    rows = []
    specs = [sp.spec(c) for c in sp.problem(tables[next(iter(held.values()))]).codes(refs)]
    for short, dev in held.items():
        lat = tables[dev]
        target_ms = lat[refs]
        proxy = choose_proxy(dev, candidates=sorted(train), space="nb201", measurements=(specs, target_ms))
        mapping, _ = fit_monotone_map(tables[proxy][refs], target_ms)
        mapped = np.asarray(mapping(tables[proxy]), dtype=np.float64)
        true_p, proxy_p = sp.problem(lat), sp.problem(mapped)
        rho = float(_spearman(tables[proxy], lat))
        rho10 = float(_spearman(tables[proxy][refs], target_ms))     # what the user can check: 10 cells
        for q in QUANTILES:
            L = float(np.percentile(lat, q))
            b = Budget(latency_ms=L)
            own = exhaustive(true_p, b)
            via = exhaustive(proxy_p, b)
            via_true = true_p.evaluate(via.code[None])
            vec, centre = reference_vector(mapped, refs)
            am = opt.optimize(proxy_p, b, vec, budget_features(L, centre))
            am_true = true_p.evaluate(am.code[None])
            rows.append({"device": short, "proxy": proxy, "spearman_all": rho, "spearman_10": rho10,
                         "flagged": rho10 < 0.9, "pct": q, "own_acc": own.accuracy,
                         "proxy_acc": float(via_true["accuracy"][0]),
                         "lost": own.accuracy - float(via_true["accuracy"][0]),
                         "proxy_fits_measured": bool(via_true["latency_ms"][0] <= L),
                         "proxy_amortized_acc": float(am_true["accuracy"][0]),
                         "proxy_amortized_fits": bool(am_true["latency_ms"][0] <= L)})
    return rows


def _spearman(a, b) -> float:
    from edgepass.predictors.stats import spearman

    return spearman(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------
# real models
# --------------------------------------------------------------------------------------------
FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def model_space_of(name: str):
    import torch
    import torchvision

    from edgepass.space import design_space

    model = getattr(torchvision.models, name)(weights=None).eval()
    return design_space(model, (torch.randn(1, 3, 224, 224),))


def accuracy_fn_of(space):
    try:
        from edgepass.predictors.accuracy import data_free_accuracy_fn
    except ImportError:
        from edgepass.optimizers.sensitivity import weight_energy_fn

        return weight_energy_fn(space), "weight-energy score (data-free)"
    return data_free_accuracy_fn(space), "data_free_accuracy_fn"


def model_section(name: str, args) -> dict:
    from edgepass.optimizers import model_space as ms

    t0 = time.perf_counter()
    sp = model_space_of(name)
    acc, acc_kind = accuracy_fn_of(sp)
    costs = ms.device_costs(sp, progress=True)
    t_tables = time.perf_counter() - t0
    names = sorted(costs)
    held = sorted(np.random.default_rng(0).choice(names, size=args.held_out_devices, replace=False).tolist())
    train = {k: v for k, v in costs.items() if k not in held}
    t0 = time.perf_counter()
    opt = ms.train(sp, acc, costs=train, synthetic=args.model_synthetic, epochs=args.model_epochs, progress=True)
    t_train = time.perf_counter() - t0
    print(f"[optimizers] {name}: {len(sp.knobs())} knobs, 10^{sp.size():.1f} designs, tables {t_tables:.1f} s, "
          f"labels + training {t_train:.1f} s ({opt.info['pairs']} pairs)", file=sys.stderr)
    n_choices = [len(c) for _, _, c in sp.knobs()]
    ident = opt.refs[0]
    rows, fronts = [], None
    for dev in held:
        c = costs[dev]
        problem = CallableProblem(n_choices, acc, c.predict)
        lo, hi = ms.feasible_range(c, opt.refs)
        for f in FRACTIONS:
            L = float(np.exp(np.log(lo * 1.02) + f * (np.log(hi) - np.log(lo * 1.02))))
            b = Budget(latency_ms=L)
            t = time.perf_counter()
            am = opt.optimize(problem, b, c)
            t_am = time.perf_counter() - t
            t = time.perf_counter()
            am0 = opt.optimize(problem, b, c, polish=0)
            t_am0 = time.perf_counter() - t
            t = time.perf_counter()
            gr = repair(problem, b, ident, polish=30)
            t_gr = time.perf_counter() - t
            t = time.perf_counter()
            evo = evolutionary(problem, b, seed=0, init=ident[None])
            evo_front = evo.front
            evo = repair(problem, b, evo.code)
            t_evo = time.perf_counter() - t
            rows.append({"model": name, "device": dev, "frac": f, "budget_ms": L, "evo": evo.accuracy,
                         "amortized": am.accuracy, "gap_%": 100 * (evo.accuracy - am.accuracy) / evo.accuracy,
                         "no_polish_gap_%": 100 * (evo.accuracy - am0.accuracy) / evo.accuracy,
                         "greedy_gap_%": 100 * (evo.accuracy - gr.accuracy) / evo.accuracy,
                         "am_fits": am.feasible and am.latency_ms <= L, "am0_fits": am0.feasible,
                         "evo_fits": evo.feasible, "am_ms": 1000 * t_am, "am0_ms": 1000 * t_am0,
                         "greedy_ms": 1000 * t_gr, "evo_ms": 1000 * t_evo})
            if fronts is None and f == 0.5:
                fronts = {"device": dev, "budget_ms": L, "evo": evo_front, "amortized": opt.front(problem, c),
                          "chosen": [am.latency_ms, am.accuracy], "evo_chosen": [evo.latency_ms, evo.accuracy],
                          "greedy": _greedy_front(problem, c, opt.refs, ident)}
    summary = {"model": name, "knobs": len(sp.knobs()), "log10_designs": round(sp.size(), 1),
               "accuracy_fn": acc_kind, "train_devices": len(train), "held_out": len(held),
               "pairs": opt.info["pairs"], "tables_s": t_tables, "train_s": t_train,
               "mean_gap_%": float(np.mean([r["gap_%"] for r in rows])),
               "max_gap_%": float(np.max([r["gap_%"] for r in rows])),
               "mean_gap_no_polish_%": float(np.mean([r["no_polish_gap_%"] for r in rows])),
               "mean_greedy_gap_%": float(np.mean([r["greedy_gap_%"] for r in rows])),
               "budget_met_%": 100.0 * float(np.mean([r["am_fits"] for r in rows])),
               "median_am_ms": statistics.median(r["am_ms"] for r in rows),
               "median_am_no_polish_ms": statistics.median(r["am0_ms"] for r in rows),
               "median_greedy_ms": statistics.median(r["greedy_ms"] for r in rows),
               "median_evo_ms": statistics.median(r["evo_ms"] for r in rows)}
    summary["evo/am"] = summary["median_evo_ms"] / summary["median_am_ms"]
    summary["evo/am_no_polish"] = summary["median_evo_ms"] / summary["median_am_no_polish_ms"]
    if args.fleet and name == args.fleet_model:
        summary.update(fleet(opt, sp, acc, {k: costs[k] for k in held}, args.fleet))
    return {"rows": rows, "summary": summary, "fronts": fronts}


def _greedy_front(problem, costs, refs, ident, n: int = 12) -> list:
    from edgepass.optimizers import model_space as ms

    lo, hi = ms.feasible_range(costs, refs)
    out = []
    for L in np.exp(np.linspace(np.log(lo * 1.02), np.log(hi), n)):
        r = repair(problem, Budget(latency_ms=float(L)), ident, polish=30)
        out.append((r.latency_ms, r.accuracy))
    return out


def fleet(opt, sp, acc, held_costs: dict, n: int) -> dict:
    """``n`` synthetic devices between the held-out ones: one batched forward pass + a repair each."""
    from edgepass.optimizers import model_space as ms

    devices = ms.synthetic_costs(held_costs, n, seed=123, prefix="fleet")
    rng = np.random.default_rng(7)
    n_choices = [len(c) for _, _, c in sp.knobs()]
    t = time.perf_counter()
    costs = [devices[k] for k in sorted(devices)]
    ranges = [ms.feasible_range(c, opt.refs) for c in costs]
    budgets = [float(np.exp(rng.uniform(np.log(lo * 1.02), np.log(hi)))) for lo, hi in ranges]
    codes = opt.decode_many(costs, budgets)
    fits = []
    for c, L, code in zip(costs, budgets, codes):
        r = repair(CallableProblem(n_choices, acc, c.predict), Budget(latency_ms=L), code, polish=3)
        fits.append(r.feasible and r.latency_ms <= L)
    return {"fleet_devices": n, "fleet_seconds": time.perf_counter() - t,
            "fleet_budget_met_%": 100.0 * float(np.mean(fits))}


def plot_fronts(fronts: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    items = [(k, v) for k, v in fronts.items() if v]
    fig, axes = plt.subplots(1, len(items), figsize=(5 * len(items), 4), squeeze=False)
    for ax, (name, f) in zip(axes[0], items):
        for key, style, label in (("evo", ".", "evolutionary: final population"),
                                  ("greedy", "s-", "greedy repair from identity"),
                                  ("amortized", "o", "amortized network (raw, budget sweep) + reference designs")):
            pts = np.asarray(f[key] or [])
            if len(pts):
                ax.plot(pts[:, 0], pts[:, 1], style, ms=4, alpha=0.7, label=label)
        ax.axvline(f["budget_ms"], color="grey", ls="--", lw=1, label="budget")
        ax.plot(*f["chosen"], "r*", ms=14, label="amortized + repair (chosen)")
        ax.plot(*f["evo_chosen"], "kx", ms=10, label="evolutionary (chosen)")
        ax.set_title(f"{name} on {f['device']}")
        ax.set_xlabel("predicted latency (ms)")
        ax.set_ylabel("weight-energy score")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", type=int, default=200)
    ap.add_argument("--budgets-per-device", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--fleet", type=int, default=1000)
    ap.add_argument("--fleet-model", default="mobilenet_v2")
    ap.add_argument("--models", default="resnet18,mobilenet_v2,efficientnet_b0")
    ap.add_argument("--model-synthetic", type=int, default=300)
    ap.add_argument("--model-epochs", type=int, default=80)
    ap.add_argument("--held-out-devices", type=int, default=20)
    ap.add_argument("--skip-nb201", action="store_true")
    ap.add_argument("--json", default="optimizers.json")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    out = {}
    if not args.skip_nb201:
        rows, summary, a1 = nb201_section(args)
        print("== NAS-Bench-201, held-out HELP devices (measured latency) ==")
        print_table(rows, ["device", "pct", "budget_ms", "optimum_acc", "amortized_acc", "gap", "raw_net_acc",
                           "raw_net_fits", "amortized_fits", "evo_acc", "evo_gap", "random_acc", "amortized_ms",
                           "evo_ms"])
        print()
        for k, v in summary.items():
            print(f"{k:22s} {v:.4g}" if isinstance(v, float) else f"{k:22s} {v}")
        print("\n== approach 1 in the loop: proxy table + monotone map (10 cells) vs own table, NB201 ==")
        print_table(a1, ["device", "proxy", "spearman_all", "spearman_10", "flagged", "pct", "own_acc", "proxy_acc",
                         "lost", "proxy_fits_measured", "proxy_amortized_acc", "proxy_amortized_fits"])
        per_dev = {}
        for r in a1:
            per_dev.setdefault(r["device"], []).append(r)
        a1_sum = []
        for d, rs in per_dev.items():
            fit = [r["lost"] for r in rs if r["proxy_fits_measured"]]
            a1_sum.append({"device": d, "proxy": rs[0]["proxy"], "spearman_10": rs[0]["spearman_10"],
                           "flagged": rs[0]["flagged"], "mean_lost_all": float(np.mean([r["lost"] for r in rs])),
                           "mean_lost_when_fits": float(np.mean(fit)) if fit else None,
                           "fits_measured_%": 100.0 * float(np.mean([r["proxy_fits_measured"] for r in rs]))})
        print("\nper device (lost = own-table optimum - proxy-chosen accuracy; negative only when the proxy's choice "
              "breaks the measured budget)")
        print_table(a1_sum, ["device", "proxy", "spearman_10", "flagged", "mean_lost_all", "mean_lost_when_fits",
                             "fits_measured_%"])
        out.update(nb201=rows, summary=summary, held_out=HELD_OUT, approach1=a1, approach1_summary=a1_sum)
    models, fronts = [], {}
    for name in [m for m in args.models.split(",") if m]:
        res = model_section(name, args)
        models.append(res)
        fronts[name] = res["fronts"]
        out[f"model_{name}"] = res["rows"]
    if models:
        print("\n== real models: amortized vs evolutionary on held-out database devices (predicted costs) ==")
        cols = ["model", "knobs", "log10_designs", "train_devices", "held_out", "pairs", "train_s", "mean_gap_%",
                "max_gap_%", "mean_gap_no_polish_%", "mean_greedy_gap_%", "budget_met_%", "median_am_ms",
                "median_am_no_polish_ms", "median_greedy_ms", "median_evo_ms", "evo/am", "evo/am_no_polish"]
        print_table([m["summary"] for m in models], cols)
        for m in models:
            if "fleet_devices" in m["summary"]:
                s = m["summary"]
                print(f"\nfleet: {s['fleet_devices']} devices of {s['model']} in {s['fleet_seconds']:.2f} s, "
                      f"budget met {s['fleet_budget_met_%']:.1f} %")
        out["models"] = [m["summary"] for m in models]
        out["fronts"] = fronts
        png = plot_fronts(fronts, OUT / "optimizers_fronts.png")
        if png:
            print(f"written {png}", file=sys.stderr)
    path = write_json(args.json, out)
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
