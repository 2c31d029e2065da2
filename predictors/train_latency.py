"""Training of the latency MLP (see :mod:`edgepass.predictors.latency`); used by
``scripts/train_latency.py`` and ``benchmarks/predictors.py``."""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from edgepass import dataset, zoo
from edgepass.api import analyze
from edgepass.devices import get_device
from edgepass.space import Design, build_space

from .features import N_OP, graph_matrix, row_features, stable_hash, training_specs
from .latency_model import FORMAT, LatencyModel, device_raw_vector, predict_matrices

EMB = 8
HIDDEN = (128, 64)


def cached_features(spec: str) -> dict | None:
    """dataset.features(spec) if it is cached (never builds)."""
    canon = zoo.parse(spec)["canonical"]
    key = hashlib.sha1(f"{canon}|per_op=True".encode()).hexdigest()
    path = dataset.cache_dir() / key[:2] / f"{key}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


_SPACES: dict = {}


def design_matrix(spec: str, design: str) -> np.ndarray | None:
    """Op features of a measured design (ONNX export of the zoo model, as scripts/measure_cpu.py does)."""
    import io
    import warnings

    if spec not in _SPACES:
        import onnx
        import torch

        zm = zoo.build(spec)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(zm.module, zm.example_inputs, buf, dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"])
        # analyze() hands the ModelProto to the ONNX front end (frontends.onnx.analyze_onnx), imported on
        # demand there: importing that module here would load onnx (~1 s) with this one
        _SPACES[spec] = build_space(analyze(onnx.load_from_string(buf.getvalue())))
    space = _SPACES[spec]
    return graph_matrix(space.design_graph(Design.from_json(design)))[0]


class Data:
    """Training rows over deduplicated op rows: ``U`` unique op features, per graph a CSR of
    (op id, count), rows (graph, device, log y)."""

    def __init__(self):
        self.uid: dict[bytes, int] = {}
        self.U: list[np.ndarray] = []
        self.gkey: dict[tuple, int] = {}
        self.g_ops: list[np.ndarray] = []
        self.g_cnt: list[np.ndarray] = []
        self.g_mat: list[np.ndarray] = []
        self.rows_g: list[int] = []
        self.rows_d: list[str] = []
        self.rows_y: list[float] = []
        self.rows_spec: list[str] = []
        self.rows_design: list[str] = []

    def add_graph(self, key, X: np.ndarray) -> int:
        if key in self.gkey:
            return self.gkey[key]
        ids = []
        for x in X:
            b = np.round(x, 6).tobytes()
            i = self.uid.get(b)
            if i is None:
                i = self.uid[b] = len(self.U)
                self.U.append(x)
            ids.append(i)
        u, c = np.unique(np.asarray(ids), return_counts=True)
        self.gkey[key] = len(self.g_ops)
        self.g_ops.append(u)
        self.g_cnt.append(c.astype(np.float64))
        self.g_mat.append(X)
        return self.gkey[key]


def _override(device: str, precision: str) -> str | None:
    return None if precision == "fp32" else precision


def collect(ts=None, *, specs=None, progress=True, include_designs=True, max_specs=None,
            reuse: Data | None = None) -> Data:
    """All latency rows whose architecture has cached features (plus our CPU designs). ``reuse``: an
    earlier collection whose design op matrices are taken as they are for the same (spec, design)
    keys -- rebuilding ~700 designs is most of the 10 minutes, and a re-measurement changes only the
    latencies."""
    from tqdm import tqdm

    ts = ts or dataset.load()
    specs = specs or training_specs(ts)
    feats = {}
    for s in tqdm(specs[:max_specs] if max_specs else specs, desc="features (cached)", file=sys.stderr,
                  disable=not progress, leave=False):
        f = cached_features(s)
        if f is not None:
            feats[s] = f
    D = Data()
    lat = ts.metric_code == 0
    keep_spec = np.zeros(len(ts.specs), dtype=bool)
    spec_index = {s: i for i, s in enumerate(ts.specs)}
    for s in feats:
        keep_spec[spec_index[s]] = True
    sel = np.nonzero(lat & keep_spec[ts.spec_code] & (ts.value > 0))[0]
    precs = ["fp32", "fp16", "int8"]
    cpu_src = ts.sources.index("edgepass-cpu") if "edgepass-cpu" in ts.sources else -1
    # drop degenerate near-zero values (HW-NAS-Bench pixel3/raspi4 cells): < 2 % of the device median
    med = {}
    for d in np.unique(ts.device_code[sel]):
        med[d] = float(np.median(ts.value[sel][ts.device_code[sel] == d]))
    for i in tqdm(sel, desc="rows", file=sys.stderr, disable=not progress, leave=False):
        dcode = ts.device_code[i]
        v = float(ts.value[i])
        if v < 0.02 * med[dcode]:
            continue
        spec = ts.specs[ts.spec_code[i]]
        design = ts.designs[ts.design_code[i]]
        prec = precs[ts.precision_code[i]]
        if ts.source_code[i] == cpu_src and not design and prec == "int8":
            continue  # naive whole-model quantize_static rows: superseded by edgepass's precision pass
        if design:
            continue  # designs are handled below
        ov = _override(ts.devices[dcode], prec)
        key = (spec, "", ov)
        if key not in D.gkey:
            X = np.stack([row_features(r, ov) for r in feats[spec]["ops"]])
            D.add_graph(key, X)
        D.rows_g.append(D.gkey[key])
        D.rows_d.append(ts.devices[dcode])
        D.rows_y.append(math.log(v))
        D.rows_spec.append(spec)
        D.rows_design.append("")
    if include_designs:
        rows = dataset.load_cpu(with_stats=True)
        drows = [r for r in rows if r["design"]]
        for r in tqdm(drows, desc="designs", file=sys.stderr, disable=not progress, leave=False):
            key = (r["spec"], r["design"], None)
            if key not in D.gkey and reuse is not None and key in reuse.gkey:
                D.add_graph(key, reuse.g_mat[reuse.gkey[key]])
            if key not in D.gkey:
                try:
                    X = design_matrix(r["spec"], r["design"])
                except Exception as exc:  # noqa: BLE001
                    print(f"skip design of {r['spec']}: {exc}", file=sys.stderr)
                    continue
                D.add_graph(key, X)
            D.rows_g.append(D.gkey[key])
            D.rows_d.append(r["device"])
            D.rows_y.append(math.log(float(r["latency_ms"])))
            D.rows_spec.append(r["spec"])
            D.rows_design.append(r["design"])
    return D


def collect_cached(directory, *, progress=True, refresh=False) -> Data:
    """:func:`collect` (about 10 min on a busy 2-core machine: ~4k cached feature files and ~700
    rebuilt designs), pickled in ``directory`` under a key of the dataset files (name, size, mtime).
    When the key changed, the designs' op matrices of the newest earlier pickle are reused
    (``refresh=True`` rebuilds everything, and picks up features cached later)."""
    import os
    import pickle

    root = Path(__file__).resolve().parents[1] / "edgepass" / "data" / "dataset"
    h = hashlib.sha1()
    for f in sorted(root.glob("*")):
        h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"latency_data_{h.hexdigest()[:10]}.pkl"
    if path.is_file() and not refresh:
        with open(path, "rb") as fh:
            return pickle.load(fh)
    previous = None
    if not refresh:  # the dataset changed (e.g. re-measured): keep the earlier collection's designs
        for old in sorted(directory.glob("latency_data_*.pkl"), key=lambda p: p.stat().st_mtime)[-1:]:
            with open(old, "rb") as fh:
                previous = pickle.load(fh)
    specs = training_specs(dataset.load())
    cached = sum(cached_features(s) is not None for s in specs)
    if cached < 0.9 * len(specs):
        # without them collect() keeps only this CPU's designs and a model trained on that is junk
        raise RuntimeError(f"IR features are cached for only {cached} of the {len(specs)} training "
                           f"architectures (in {dataset.cache_dir()}): run scripts/train_latency.py --featurize first")
    D = collect(progress=progress, reuse=previous)
    for old in directory.glob("latency_data_*.pkl"):
        old.unlink()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(D, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    return D


def train(D: Data, *, row_mask=None, epochs: int = 30, batch: int = 512, lr: float = 1e-2, seed: int = 0,
          minutes: float = 10.0, progress: bool = True, version: str = "",
          init: LatencyModel | None = None) -> LatencyModel:
    """Fit the summed MLP on the selected rows; returns a numpy :class:`LatencyModel`.

    ``init``: continue from a trained model (its normalisation, MLP, overhead, P and the embedding
    residuals of the devices it knows; new devices start near zero). On the shared 2-core machine a
    wall-clock budget buys only a few hundred steps, so training is resumable instead of longer."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    idx = np.arange(len(D.rows_g)) if row_mask is None else np.nonzero(row_mask)[0]
    devs = sorted({D.rows_d[i] for i in idx})
    dmap = {d: j for j, d in enumerate(devs)}
    raw = np.stack([device_raw_vector(get_device(d)) for d in devs])
    dev_mu, dev_sd = raw.mean(0), raw.std(0) + 1e-3
    U = np.stack(D.U)
    op_mu, op_sd = U.mean(0), U.std(0) + 1e-3
    if init is not None:
        dev_mu, dev_sd, op_mu, op_sd = (init.a[k] for k in ("dev_mu", "dev_sd", "op_mu", "op_sd"))
    Ut = torch.tensor((U - op_mu) / op_sd, dtype=torch.float32)
    Dn = torch.tensor((raw - dev_mu) / dev_sd, dtype=torch.float32)
    nd, nf = Dn.shape
    P = torch.nn.Parameter(torch.zeros(nf, EMB))
    R = torch.nn.Parameter(0.01 * torch.randn(nd, EMB))
    layers = []
    fan = N_OP + nf + EMB
    for h in HIDDEN:
        layers.append(torch.nn.Linear(fan, h))
        fan = h
    layers.append(torch.nn.Linear(fan, 1))
    mlp = torch.nn.ModuleList(layers)
    with torch.no_grad():
        mlp[-1].bias.fill_(-3.0)
    ov = torch.nn.Linear(nf + EMB, 1)
    with torch.no_grad():
        ov.bias.fill_(-3.0)
        ov.weight.zero_()
    if init is not None:
        with torch.no_grad():
            for i, lin in enumerate(mlp):
                lin.weight.copy_(torch.tensor(init.a[f"W{i}"].T))
                lin.bias.copy_(torch.tensor(init.a[f"b{i}"]))
            ov.weight.copy_(torch.tensor(init.a["ov_w"][None]))
            ov.bias.copy_(torch.tensor(init.a["ov_b"]))
            P.copy_(torch.tensor(init.a["P"]))
            for j, d in enumerate(devs):
                if d in init.dev_index:
                    R[j] = torch.tensor(init.a["R"][init.dev_index[d]])
    params = list(mlp.parameters()) + list(ov.parameters()) + [P, R]
    opt = torch.optim.Adam(params, lr=lr)
    rows_g = np.asarray(D.rows_g)[idx]
    rows_d = np.asarray([dmap[D.rows_d[i]] for i in idx])
    rows_y = np.asarray(D.rows_y)[idx]
    cnt_d = np.bincount(rows_d, minlength=nd)
    w = 1.0 / np.sqrt(cnt_d[rows_d])
    p = w / w.sum()
    g_ops, g_cnt = D.g_ops, D.g_cnt
    steps_per_epoch = max(1, len(idx) // batch)
    total_steps = epochs * steps_per_epoch
    # schedule on the fraction of the budget used (steps or wall time, whichever runs out first), so a
    # time-limited fit still ends with a decayed learning rate
    t0 = time.time()
    bar = tqdm(range(total_steps), desc="training latency MLP", file=sys.stderr, disable=not progress)
    losses = []
    for step in bar:
        b = rng.choice(len(idx), size=batch, p=p)
        gs, ds = rows_g[b], rows_d[b]
        ops = np.concatenate([g_ops[g] for g in gs])
        cnts = np.concatenate([g_cnt[g] for g in gs])
        rid = np.repeat(np.arange(batch), [len(g_ops[g]) for g in gs])
        pair = ops.astype(np.int64) * nd + ds[rid]
        upair, inv = np.unique(pair, return_inverse=True)
        uo, ud = upair // nd, upair % nd
        dn = Dn[ud]
        e = dn @ P + R[ud]
        h = torch.cat([Ut[uo], dn, e], 1)
        for i, lin in enumerate(mlp):
            h = lin(h)
            if i < len(mlp) - 1:
                h = torch.relu(h)
        per = torch.exp(h[:, 0].clamp(max=12))[torch.as_tensor(inv)] * torch.as_tensor(cnts, dtype=torch.float32)
        tot = torch.zeros(batch).index_add(0, torch.as_tensor(rid), per)
        dd = Dn[ds]
        zd = torch.cat([dd, dd @ P + R[ds]], 1)
        tot = tot + torch.exp(ov(zd)[:, 0].clamp(max=12))
        loss = ((torch.log(tot) - torch.as_tensor(rows_y[b], dtype=torch.float32)) ** 2).mean()
        loss = loss + 1e-3 * (R ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        frac = max(step / total_steps, (time.time() - t0) / (minutes * 60))
        for gr in opt.param_groups:
            gr["lr"] = lr * (frac / 0.05 if frac < 0.05 else 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        opt.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if time.time() - t0 > minutes * 60:
            bar.write(f"time limit after {step} steps")
            break
    bar.close()
    arrays = {"op_mu": op_mu, "op_sd": op_sd, "dev_mu": dev_mu, "dev_sd": dev_sd,
              "P": P.detach().double().numpy(), "R": R.detach().double().numpy(),
              "ov_w": ov.weight.detach().double().numpy()[0], "ov_b": ov.bias.detach().double().numpy()}
    for i, lin in enumerate(mlp):
        arrays[f"W{i}"] = lin.weight.detach().double().numpy().T
        arrays[f"b{i}"] = lin.bias.detach().double().numpy()
    header = {"format": FORMAT, "devices": devs, "n_layers": len(mlp), "version": version or f"mlp-{seed}",
              "training": {"rows": int(len(idx)), "graphs": len(D.g_ops), "unique_ops": len(D.U),
                           "devices": len(devs), "steps": len(losses), "seconds": round(time.time() - t0, 1),
                           "final_loss": round(float(np.mean(losses[-100:])), 5)}}
    if init is not None:
        prev = init.header.get("training", {})
        header["training"]["init"] = {"version": init.version, "steps": prev.get("total_steps", prev.get("steps")),
                                      "final_loss": prev.get("final_loss")}
        header["training"]["total_steps"] = len(losses) + int(prev.get("total_steps", prev.get("steps", 0)))
    return LatencyModel(arrays, header)


def predict_rows(model: LatencyModel, D: Data, rows: np.ndarray, device_override=None) -> np.ndarray:
    """Predicted ms for training-table rows (trained devices use their learned residual)."""
    out = np.zeros(len(rows))
    by_dev: dict[str, list[int]] = {}
    for j, i in enumerate(rows):
        by_dev.setdefault(D.rows_d[i], []).append(j)
    for d, js in by_dev.items():
        state = model.device_state(get_device(d)) if device_override is None else device_override
        out[js] = predict_matrices([D.g_mat[D.rows_g[rows[j]]] for j in js], state, model)
    return out


def version_of(model: LatencyModel) -> str:
    return model.header["version"]


def save_artifact(model: LatencyModel, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)


__all__ = ["EMB", "HIDDEN", "cached_features", "design_matrix", "Data", "collect", "collect_cached", "train",
           "predict_rows", "version_of", "save_artifact",
           "stable_hash"]   # re-exported: benchmarks/predictors.py imports it from here
