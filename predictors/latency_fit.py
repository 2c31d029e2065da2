"""Few-shot adaptation of the latency predictor to a new device: from k measured models
(:func:`read_measurements`, :func:`model_matrix`) fit the device's embedding residual and a
log-space correction (:func:`fit_state`; k leave-one-out refits batched in :func:`fit_embeddings`),
then, where leave-one-out says so, the op-class residual, op-count model or trained-device mixture
of :func:`~edgepass.predictors.latency_residual.fit_op_residual`; :func:`fit_device` returns the
Device carrying the fit (``provenance["latency_fit"]``)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from edgepass import dataset
from edgepass.api import analyze
from edgepass.devices import get_device
from edgepass.devices.schema import Device
from edgepass.errors import InputError
from edgepass.ir import Graph

from .features import graph_matrix, row_features
from .latency_model import (FIT_KEY, LatencyModel, device_precision, device_raw_vector, load_model, predict_matrices,
                            trained_vectors)
from .latency_residual import distinct_ops, fit_op_residual


# ---------------------------------------------------------------------- few-shot adaptation
def _graph_of(model_ref):
    """Graph of a CSV ``model`` cell: a zoo spec or an ONNX path."""
    text = str(model_ref).strip()
    if text.endswith(".onnx") or Path(text).is_file():
        if not Path(text).is_file():
            raise InputError(f"ONNX file not found: {text}")
        return analyze(text)
    try:
        f = dataset.features(text)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot build model {text!r}: {exc}") from None
    return f


def model_matrix(model_ref, precision: str | None = None) -> np.ndarray:
    """Op feature matrix of a zoo spec (via the cached dataset features), ONNX path or IR graph."""
    if isinstance(model_ref, Graph):
        return graph_matrix(model_ref, precision)[0]
    g = _graph_of(model_ref)
    if isinstance(g, dict):
        return np.stack([row_features(r, precision) for r in g["ops"]])
    return graph_matrix(g, precision)[0]


def _trained_embeddings(m: LatencyModel) -> np.ndarray:
    """Embedding ``e = P d + R`` of every trained device."""
    return trained_vectors(m)[:, len(m.a["dev_mu"]):]


def init_residual(m: LatencyModel, mats: list, y: np.ndarray, raw: np.ndarray, fit_scale: bool = True):
    """Start of the few-shot fit: the residual that gives the new device the embedding of the trained
    device whose predictions, after a log-linear map, fit the k measurements best (or zero: the
    device's own features). Gradient descent from zero stays near the feature-only guess; devices
    unlike any datasheet (Eyeriss) need a far-away embedding, and some trained device is usually
    close. Returns (residual, name of the device it came from or None)."""
    dn = (raw - m.a["dev_mu"]) / m.a["dev_sd"]
    base = dn @ m.a["P"]
    cands = np.vstack([base[None], _trained_embeddings(m)])
    X = np.concatenate(mats)
    idx = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    ly = np.log(y)
    best, best_sse = 0, np.inf
    for j, e in enumerate(cands):
        z = np.concatenate([dn, e])
        tot = np.bincount(idx, weights=np.exp(m.op_log_latency(X, z)), minlength=len(mats))
        lp = np.log(tot + math.exp(m.overhead_log(z)))
        if fit_scale and np.ptp(lp) > 1e-9:
            b, a0 = np.polyfit(lp, ly, 1)
            b = min(max(b, 0.5), 1.5)
        else:
            b = 1.0
        a0 = float(np.mean(ly - b * lp))
        sse = float(((a0 + b * lp - ly) ** 2).sum()) * (1.0 if j == 0 else 1.1)  # mild preference for own features
        if sse < best_sse:
            best, best_sse = j, sse
    r = cands[best] - base
    return r, (None if best == 0 else m.devices[best - 1])


def fit_embeddings(m: LatencyModel, mats: list, y: np.ndarray, raw: np.ndarray, masks: np.ndarray, r0: np.ndarray,
                    *, steps: int, ridge: float, fit_scale: bool):
    """Few-shot fits of the device residual r, a log offset and a log scale, one per row of
    ``masks`` (folds x k: which measurements each fit sees), all in one batched optimisation.
    Adam is element-wise and each fold's parameters only enter its own loss, so the folds are
    exactly independent fits; batching makes k leave-one-out refits cost ~3 fits, not k.
    Returns (residuals F x E, offsets F, log scales F, log of each fold's predicted totals F x k,
    the same before the offset and scale)."""
    import torch

    a = m.a
    F, k = masks.shape
    dn = torch.tensor((raw - a["dev_mu"]) / a["dev_sd"])
    Xu, counts = distinct_ops(mats)
    X = torch.tensor((Xu - a["op_mu"]) / a["op_sd"])
    counts_t = torch.tensor(counts)
    Ws = [torch.tensor(a[f"W{i}"]) for i in range(m.n_layers)]
    bs = [torch.tensor(a[f"b{i}"]) for i in range(m.n_layers)]
    P, ovw, ovb = torch.tensor(a["P"]), torch.tensor(a["ov_w"]), torch.tensor(a["ov_b"])
    ly = torch.tensor(np.log(y))
    w = torch.tensor(masks, dtype=torch.float64)
    n_fit = w.sum(1).clamp(min=1)
    r0t = torch.tensor(np.tile(r0, (F, 1)))
    r = r0t.clone().requires_grad_(True)
    off = torch.zeros(F, dtype=torch.float64, requires_grad=True)
    lsc = torch.zeros(F, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([r, off] + ([lsc] if fit_scale else []), lr=0.05)
    nx = X.shape[1]
    xw = X @ Ws[0][:nx]                                       # the op part of layer 0, shared by all folds
    zd = (dn @ Ws[0][nx:nx + len(dn)])[None]

    def log_totals():
        e = dn @ P + r                                        # F x E
        h = torch.relu(xw[None] + (zd + e @ Ws[0][nx + len(dn):] + bs[0])[:, None, :])
        for i in range(1, m.n_layers):
            h = h @ Ws[i] + bs[i]
            if i < m.n_layers - 1:
                h = torch.relu(h)
        tot = torch.exp(h[..., 0]) @ counts_t.T                # F x k
        z_ov = torch.cat([dn.expand(F, -1), e], 1)
        return torch.log(tot + torch.exp(z_ov @ ovw + ovb[0])[:, None])

    for _ in range(steps):
        opt.zero_grad()
        pred = off[:, None] + (1 + lsc[:, None]) * log_totals()
        fold_loss = (w * (pred - ly) ** 2).sum(1) / n_fit + ridge / n_fit * ((r - r0t) ** 2).sum(1) * 0.1 \
            + 0.05 * lsc ** 2
        fold_loss.sum().backward()
        opt.step()
    with torch.no_grad():
        lraw = log_totals()
        pred = off[:, None] + (1 + lsc[:, None]) * lraw
    return r.detach().numpy(), off.detach().numpy(), 1 + lsc.detach().numpy(), pred.numpy(), lraw.numpy()


def fit_state(m: LatencyModel, mats: list, y: np.ndarray, raw: np.ndarray, *, steps: int = 200,
              ridge: float = 1.0, fit_scale: bool = True, nearest_init: bool = False,
              op_residual: bool = True) -> dict:
    """Fit the device residual r (embedding), a log offset and (optionally) a log scale to k
    measured totals ``y`` (ms) of the op matrices ``mats``, starting from zero or, with
    ``nearest_init``, from :func:`init_residual`; then, with ``op_residual``, the op-class residual
    or linear model of :func:`fit_op_residual` when leave-one-out error says it helps (the adapted
    MLP's own leave-one-out error comes from k refits, batched with the main fit). Returns the fit dict.

    ``nearest_init`` is off by default because it did not help when measured (benchmark model, HELP
    NB201 10-shot, 2 draws: eyeriss 0.590/0.586 -> same, pixel2 0.903/0.903 -> 0.869/0.905, raspi4
    0.897/0.869 -> 0.896/0.754; FBNet fpga 0.519/0.509 -> 0.578/0.510): choosing among ~200
    embeddings with 10 samples overfits about as often as it helps."""
    y = np.asarray(y, dtype=np.float64)
    E = m.a["R"].shape[1]
    r0, init_dev = (init_residual(m, mats, y, raw, fit_scale) if nearest_init else (np.zeros(E), None))
    k = len(mats)
    masks = np.ones((1, k), bool)
    loo = op_residual and k >= 4
    if loo:  # fold 0: all k; fold i: all but measurement i-1
        masks = np.vstack([masks, ~np.eye(k, dtype=bool)])
    rs, offs, scales, lpred, lraw = fit_embeddings(m, mats, y, raw, masks, r0, steps=steps, ridge=ridge,
                                                    fit_scale=fit_scale)
    rmse = float(np.sqrt(np.mean((lpred[0] - np.log(y)) ** 2)))
    fit = {"model": m.version, "residual": [float(v) for v in rs[0]],
           "log_offset": float(offs[0]), "log_scale": float(scales[0]), "k": int(k),
           "init_from": init_dev, "fit_rmse_log": round(rmse, 5)}
    if loo:
        mlp_loo = np.exp(lpred[1:][np.arange(k), np.arange(k)])
        res = fit_op_residual(m, mats, y, m.state_from_fit(raw, fit), mlp_loo_ms=mlp_loo,
                              mlp_folds_ms=np.exp(lraw))
        fit["mlp_loo_rel_rmse"] = round(float(np.sqrt(np.mean(((y - mlp_loo) / y) ** 2))), 5)
        if res is not None:
            fit["op_residual"] = res
            p = predict_matrices(mats, m.state_from_fit(raw, fit), m)
            fit["fit_rmse_log"] = round(float(np.sqrt(np.mean((np.log(p) - np.log(y)) ** 2))), 5)
        # what a user can expect on models like the measured ones: the honest leave-one-out error of
        # the predictor kept (fit_op_residual's estimate when it kept a residual or linear model)
        fit["loo_rel_rmse"] = res["expected_rel_rmse"] if res is not None else fit["mlp_loo_rel_rmse"]
    return fit


def fit_quality(fit: dict) -> str:
    """What a few-shot fit promises on unmeasured models, and how well it fits the measured ones, in
    words (CLI line and device notes)."""
    loo = (f"leave-one-out error {100 * fit['loo_rel_rmse']:.1f} % RMS" if "loo_rel_rmse" in fit
           else "fewer than 4 models: no leave-one-out estimate")
    return f"{loo}; log-RMSE on the measured models {fit['fit_rmse_log']}"


def read_measurements(path: str | Path) -> list[tuple[str, float]]:
    """CSV with columns ``model,latency_ms`` -> [(model, ms)]."""
    p = Path(path)
    try:
        with open(p, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:  # a 1 MB field, NUL bytes, not UTF-8
        raise InputError(f"{p}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    if not rows or not {"model", "latency_ms"} <= set(rows[0]):
        raise InputError(f"{p}: expected a CSV with columns model,latency_ms")
    out = []
    for i, r in enumerate(rows, 2):
        try:
            v = float(r["latency_ms"])
        except (TypeError, ValueError):
            raise InputError(f"{p}:{i}: latency_ms {r['latency_ms']!r} is not a number") from None
        if not v > 0:
            raise InputError(f"{p}:{i}: latency_ms must be > 0")
        if not isinstance(r["model"], str) or not r["model"].strip():
            raise InputError(f"{p}:{i}: the model column is empty")
        out.append((r["model"].strip(), v))
    return out


def fit_device(pairs, *, name: str = "fitted-device", base=None, device_id: str | None = None,
               model: LatencyModel | None = None, precision: str | None = None):
    """Few-shot adaptation: ``pairs`` = [(model, latency_ms)] measured on a new device (model: zoo
    spec, ONNX path or IR Graph), or a CSV path with columns ``model,latency_ms``. ``base``: a Device
    (or id/path) whose datasheet/kind/runtime describe the new device, if known. Returns a Device whose
    ``provenance["latency_fit"]`` holds the fitted embedding residual and log-space correction."""
    if isinstance(pairs, (str, Path)):
        pairs = read_measurements(pairs)
    pairs = list(pairs)
    if len(pairs) < 2:
        raise InputError("fit_device needs at least 2 measured models")
    m = model or load_model()
    if precision is None and base is not None:
        precision = device_precision(get_device(base))
    mats = [model_matrix(ref, precision) for ref, _ in pairs]
    y = np.asarray([float(v) for _, v in pairs])
    if base is not None:
        bdev = get_device(base)
        data = bdev.to_dict()
    else:
        data = {"schema": "edgepass.device/1", "kind": "cpu", "runtime": "unknown", "precisions": ["fp32"],
                "notes": ""}
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in name.lower()).strip("-") or "device"
    data.update(id=device_id or f"user/{slug}", name=name, signature=data.get("signature", {}),
                aliases=[], n_measurements=len(pairs), measurements={})
    raw = device_raw_vector(Device.from_dict({**data, "provenance": {"source": "user", "licence": "user",
                                                                      "kind": "measured"}}))
    fit = fit_state(m, mats, y, raw, fit_scale=len(pairs) >= 5)
    fit["models"] = [str(ref) if not hasattr(ref, "graph") else "graph" for ref, _ in pairs]
    data["provenance"] = {"source": "edgepass device fit", "licence": "user", "kind": "measured",
                          FIT_KEY: fit}
    data["notes"] = (data.get("notes") or "") + (f" Latency predictor adapted from {len(pairs)} measured models "
                                                 f"(edgepass device fit; {fit_quality(fit)}).")
    data["notes"] = data["notes"].strip()
    return Device.from_dict(data, origin="fitted device")


__all__ = ["model_matrix", "init_residual", "fit_embeddings", "fit_state", "fit_quality", "read_measurements",
           "fit_device"]
