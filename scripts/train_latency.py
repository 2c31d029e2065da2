#!/usr/bin/env python
"""Train the shipped latency predictor: ``edgepass/data/predictors/latency.npz``.

    .venv/bin/python scripts/train_latency.py [--minutes 8] [--out PATH]

Uses every latency row of the training set (public + our CPU, incl. random designs) whose
architecture has cached IR features (``dataset.features``; the subset is
``edgepass.predictors.features.training_specs``: every architecture our CPU measured plus a stable-hash
sample per space -- featurize it first with ``--featurize``). Our naive whole-model int8 rows are
dropped (superseded by the precision-pass rows); throughput-only rows are not used. 10 % of the
graphs are held out for the report stored in the artifact header, then the model is refitted on all.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget (per fit)")
    ap.add_argument("--out", type=Path, default=ROOT / "edgepass" / "data" / "predictors" / "latency.npz")
    ap.add_argument("--featurize", action="store_true", help="build missing IR features first (slow: ~0.2 s/arch)")
    ap.add_argument("--no-holdout", action="store_true", help="skip the held-out check (one fit only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-cache", type=Path, default=ROOT / "benchmarks" / "out",
                    help="where the collected training rows are pickled (collect takes ~10 min)")
    ap.add_argument("--init", type=Path, metavar="MODEL", help="continue training from MODEL (e.g. the shipped artifact)")
    ap.add_argument("--lr", type=float, default=1e-2, help="peak learning rate (use ~3e-3 with --init)")
    ap.add_argument("--recollect", action="store_true", help="rebuild the pickled training rows")
    ap.add_argument("--corrections-only", type=Path, metavar="MODEL",
                    help="keep MODEL's MLP, (re)fit only the per-device corrections, write --out")
    ap.add_argument("--compare", action="store_true",
                    help="only compare model families on held-out graphs (summed MLP vs gradient boosting on graph summaries)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # shared 2-core machine
    from edgepass import dataset
    from edgepass.predictors.features import training_specs
    from edgepass.predictors.train_latency import collect_cached, predict_rows, train

    if args.featurize:
        from tqdm import tqdm

        for s in tqdm(training_specs(dataset.load()), desc="featurizing", file=sys.stderr):
            dataset.features(s)
    t0 = time.time()
    D = collect_cached(args.data_cache, refresh=args.recollect)
    print(f"{len(D.rows_g)} rows, {len(D.g_ops)} graphs, {len(D.U)} unique ops, {len(set(D.rows_d))} devices "
          f"({time.time() - t0:.0f} s)", file=sys.stderr)
    if args.compare:
        return compare(D, args.minutes, args.seed)
    if args.corrections_only:
        from edgepass.predictors.latency import LatencyModel

        model = add_corrections(LatencyModel.load(args.corrections_only), D)
        model.header["training"]["command"] = "python scripts/train_latency.py " + " ".join(argv or sys.argv[1:])
        write(model, args.out)
        return 0
    heldout = {}
    if not args.no_holdout:
        rng = np.random.default_rng(args.seed)
        gte = rng.random(len(D.g_ops)) < 0.1
        te_mask = gte[np.asarray(D.rows_g)]
        m = train(D, row_mask=~te_mask, minutes=args.minutes / 2, seed=args.seed, version="holdout")
        te = np.nonzero(te_mask)[0]
        p = predict_rows(m, D, te)
        y = np.exp(np.asarray(D.rows_y)[te])
        err = np.abs(p / y - 1)
        cpu = np.char.startswith(np.asarray(D.rows_d)[te].astype(str), "local/")
        heldout = {"rows": int(len(te)), "within10": round(float((err <= 0.1).mean()), 4),
                   "median_rel_err": round(float(np.median(err)), 4),
                   "cpu_within10": round(float((err[cpu] <= 0.1).mean()), 4) if cpu.any() else None}
        print(f"held-out graphs (trained devices): {heldout}", file=sys.stderr)
    version = f"mlp-{time.strftime('%Y%m%d')}-{len(D.rows_g)}r"
    from edgepass.predictors.latency import LatencyModel

    init = LatencyModel.load(args.init) if args.init else None
    model = train(D, minutes=args.minutes, seed=args.seed, version=version, init=init, lr=args.lr)
    model.header["training"]["heldout_graphs_10pct"] = heldout
    model = add_corrections(model, D)
    model.header["training"]["command"] = "python scripts/train_latency.py " + " ".join(argv or sys.argv[1:])
    write(model, args.out)
    print(f"{time.time() - t0:.0f} s", file=sys.stderr)
    return 0


#: devices with enough own measurements for a per-device correction (our CPU, onnxruntime 1/2 threads)
MIN_CORRECTION_ROWS = 200


def add_corrections(model, D):
    """Fit :func:`edgepass.predictors.latency.fit_correction` and then
    :func:`~edgepass.predictors.latency.fit_op_net` on every trained ``local/`` device with >=
    MIN_CORRECTION_ROWS rows (all its rows, designs included)."""
    from edgepass.devices import get_device
    from edgepass.predictors.latency import GRAPH_OVERHEAD_MS, fit_correction, fit_op_net

    rows_d = np.asarray(D.rows_d)
    corr, nets = {}, {}
    for dev in sorted({d for d in D.rows_d if d.startswith("local/") and d in model.dev_index}):
        rows = np.nonzero(rows_d == dev)[0]
        if len(rows) < MIN_CORRECTION_ROWS:
            continue
        st = model.uncorrected_state(get_device(dev))
        mats, y = [D.g_mat[D.rows_g[i]] for i in rows], np.exp(np.asarray(D.rows_y)[rows])
        corr[dev] = fit_correction(model, mats, y, st, overhead_ms=GRAPH_OVERHEAD_MS.get(dev))
        nets[dev] = fit_op_net(model, mats, y, {**st, "corr": corr[dev]})
        print(f"correction and residual network for {dev}: {len(rows)} rows", file=sys.stderr)
    out = model.with_corrections(corr, nets)
    out.header["training"]["corrections"] = {d: int((rows_d == d).sum()) for d in corr}
    return out


def write(model, path: Path) -> None:
    """Write atomically (other processes load the shipped artifact live)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    model.save(tmp)
    os.replace(tmp, path)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


def compare(D, minutes: float, seed: int) -> int:
    """Held-out graphs (10 %) of trained devices: summed per-op MLP vs HistGradientBoosting on
    whole-graph summaries (+ device features + device one-hot), both in log space."""
    import json

    from sklearn.ensemble import HistGradientBoostingRegressor

    from edgepass.devices import get_device
    from edgepass.predictors.latency import device_raw_vector
    from edgepass.predictors.train_latency import predict_rows, train
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from predictors import summary_features

    rng = np.random.default_rng(seed)
    gte = rng.random(len(D.g_ops)) < 0.1
    te_mask = gte[np.asarray(D.rows_g)]
    tr, te = np.nonzero(~te_mask)[0], np.nonzero(te_mask)[0]
    y = np.asarray(D.rows_y)
    devs = sorted(set(D.rows_d))
    dvec = {d: device_raw_vector(get_device(d)) for d in devs}
    gsum = [np.concatenate([np.log1p(summary_features(x)[1:]), x.mean(0)]) for x in D.g_mat]
    def F(rows):
        return np.stack([np.concatenate([gsum[D.rows_g[i]], dvec[D.rows_d[i]], [devs.index(D.rows_d[i])]]) for i in rows])
    t = time.time()
    gb = HistGradientBoostingRegressor(max_iter=600, learning_rate=0.1, max_leaf_nodes=63,
                                       categorical_features=[F(tr[:1]).shape[1] - 1], random_state=seed)
    gb.fit(F(tr), y[tr])
    gb_s = time.time() - t
    pg = np.exp(gb.predict(F(te)))
    t = time.time()
    m = train(D, row_mask=~te_mask, minutes=minutes, seed=seed, version="compare")
    mlp_s = time.time() - t
    pm = predict_rows(m, D, te)
    yt = np.exp(y[te])
    cpu = np.char.startswith(np.asarray(D.rows_d)[te].astype(str), "local/")
    def score(p):
        e = np.abs(p / yt - 1)
        return {"within10": round(float((e <= 0.1).mean()), 4), "median_err": round(float(np.median(e)), 4),
                "cpu_within10": round(float((e[cpu] <= 0.1).mean()), 4)}
    res = {"rows_test": int(len(te)), "gbm_graph_summary": {**score(pg), "train_s": round(gb_s, 1)},
           "mlp_summed_per_op": {**score(pm), "train_s": round(mlp_s, 1)}}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
