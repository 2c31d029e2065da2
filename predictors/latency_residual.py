"""Few-shot op-class residual, op-count model and trained-device mixture (:func:`fit_op_residual`):
what a few-shot device fit (:func:`edgepass.predictors.latency_fit.fit_state`) puts in place of, or
on top of, the adapted MLP when leave-one-out error says it pays. Evaluated per op by
:mod:`edgepass.predictors.latency_ops` and :class:`~edgepass.predictors.latency_model.LatencyModel`."""
from __future__ import annotations

import math

import numpy as np

from .latency_model import LatencyModel, predict_matrices, trained_vectors
from .latency_ops import op_classes, op_terms


# ---------------------------------------------------------------------- few-shot op-class residual
#: how many trained devices a few-shot mixture draws on
MIX_DEVICES = 5
#: the mixture replaces the best other few-shot predictor when its leave-one-out error is below this
#: fraction of that predictor's (0 turns it off)
MIX_MARGIN = 0.8
OPRES_ALPHAS = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)


def class_matrix(mats: list, classes: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """(graphs x 3 * classes) summed op terms per class."""
    cls = [op_classes(X) for X in mats]
    if classes is None:
        classes = sorted({c for cs in cls for c in cs})
    index = {c: i for i, c in enumerate(classes)}
    F = np.zeros((len(mats), 3 * len(classes)))
    for g, (X, cs) in enumerate(zip(mats, cls)):
        if not cs:
            continue
        T = op_terms(np.asarray(X, dtype=np.float64))
        for c, t in zip(cs, T):
            if c in index:  # a class the fit never saw contributes nothing
                F[g, 3 * index[c]:3 * index[c] + 3] += t
    return F, classes


def fit_op_residual(m: LatencyModel, mats: list, y, state: dict, *, margin: float = 0.6,
                    mlp_loo_ms=None, count_margin: float = 0.4, count_max_rel_rmse: float = 0.1,
                    mix_margin: float | None = None, mlp_folds_ms=None, alphas=OPRES_ALPHAS) -> dict | None:
    """Additive per-op-class correction of a few-shot fit, or None when it does not pay.

    The shared MLP carries the cost *ratios* between op kinds that its training devices taught it;
    a device unlike them breaks exactly those (Eyeriss runs a 3x3 average pool as slowly as a 3x3
    conv, where every CPU/GPU finds pools cheap). So the k measured totals, mapped back through the
    state's log offset/scale, are fitted as MLP total + sum over op classes of (ms per op, per GMAC,
    per MB) -- ridge regression on relative error, the ridge strength chosen by closed-form
    leave-one-out error, and kept only when that error is below ``margin`` x the error of no
    correction (with 10 samples any free fit looks good in-sample; leave-one-out does not: on
    measurements that are the MLP's own predictions x 3 % noise, 10 torchvision models, it kept
    a residual in 2 of 30 draws at 0.6, 5 of 30 at 0.8).

    Given ``mlp_loo_ms`` (the adapted MLP's leave-one-out predictions, from k refits, as
    :func:`fit_state` makes them), a plain linear model (``mode: "replace"``: op counts per class,
    or whole-graph op count/GMACs/MB) is kept instead when its leave-one-out error is under
    ``count_margin`` x the best so far and its relative RMSE under ``count_max_rel_rmse``. The
    second bar is there because with 10 noisy measurements (HELP NB201 raspi4: the MLP itself is
    30 % off in leave-one-out) the leave-one-out errors are too noisy to choose by: one draw picked
    a count model that ranked the rest at Spearman 0.22.

    Last, given ``mlp_loo_ms``, a non-negative mixture of the trained devices' own predictors and the
    adapted MLP (``mode: "mix"``, :func:`_mix_fit`: the ``MIX_DEVICES`` trained devices whose
    predictions are closest to the measurements up to a scale, NNLS on relative error) replaces the
    choice so far when its leave-one-out error (device choice redone per fold, the MLP column from
    ``mlp_folds_ms``, the k refits) is under ``mix_margin`` (``MIX_MARGIN``) x that choice's; the
    replaced choice is kept under ``instead_of``. It is approach 1 without measuring a proxy: the new
    device is read as a blend of devices the MLP knows. Measured (benchmark model, 3 draws of 10):
    HELP FBNet fpga 0.78 -> 0.85, NB201 unchanged; held-out phones/boards jetson-nano 0.56 -> 0.71.
    At a margin of 1.0 it also replaced the MLP on NB201 raspi4 and lost 0.03 there.

    Measured in ``benchmarks/predictors.py`` (benchmark model, 10 samples, 3 draws): HELP NB201
    Spearman eyeriss 0.59 -> 0.99 (the count model), fpga 0.974 -> 0.999, titan_rtx 0.96 -> 1.00;
    FBNet fpga 0.51 -> 0.92, eyeriss 0.68 -> 0.89 (whole-graph totals; 0.70/0.68 when the
    count model was judged against the MLP's in-sample error); declined on pixel2/raspi4
    and on most leave-one-device-out phones."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 4:
        return None
    base = {k: v for k, v in state.items() if k not in ("opres", "a", "b")}
    base.update(a=0.0, b=1.0)
    raw = predict_matrices(mats, base, m)
    t_raw = np.exp((np.log(y) - state.get("a", 0.0)) / state.get("b", 1.0))
    F, classes = class_matrix(mats)
    if not np.any(F):
        return None
    t = (t_raw - raw) / t_raw
    none_err = float(np.mean(t ** 2))
    err, alpha, coef = ridge_loo(F / t_raw[:, None], t, alphas)
    kept = alpha is not None and err < margin * none_err
    out = None
    if kept:
        out = {"mode": "add", "classes": classes, "w": coef.reshape(-1, 3).round(9).tolist(), "alpha": alpha,
               "loo_rel_rmse": round(math.sqrt(err), 5), "none_rel_rmse": round(math.sqrt(none_err), 5)}
    if mlp_loo_ms is None:
        return out
    # a linear model alone, for devices whose latency is a plain sum: ms per op of each class
    # (a simulated accelerator: HELP's NB201 Eyeriss) or ms per op, per GMAC and per MB of the
    # whole graph (FBNet on FPGA/Eyeriss), each + ms per graph. Compared with honest errors: the
    # MLP's from its k refits; the residual's scaled by how much leave-one-out inflates the MLP's
    # in-sample error (the residual is fitted on top of the MLP fitted to all k)
    mlp_err = float(np.mean(((y - np.asarray(mlp_loo_ms, dtype=np.float64)) / y) ** 2))
    ref = min(mlp_err, err * mlp_err / none_err) if kept and none_err > 0 else mlp_err
    best = ref  # the honest error of the best candidate so far
    if out is not None:
        out["expected_rel_rmse"] = round(math.sqrt(ref), 5)
    n_cls = len(classes)
    for name, C in (("counts", F[:, 0::3]), ("totals", F.reshape(len(F), n_cls, 3).sum(1))):
        y_err, lin = _linear_model(np.c_[C, np.ones(len(F))], y, alphas)
        if lin is None or not (y_err < count_margin * ref and y_err < count_max_rel_rmse ** 2):
            continue
        ref = y_err / count_margin  # the next candidate must beat this one outright
        if name == "counts":
            w = np.zeros((n_cls, 3))
            w[:, 0] = lin[:-1]
            cls = classes
        else:
            w, cls = lin[None, :-1], ["*"]
        out = {"mode": "replace", "model": name, "classes": cls, "w": w.round(9).tolist(),
               "overhead_ms": float(lin[-1]), "loo_rel_rmse": round(math.sqrt(y_err), 5),
               "none_rel_rmse": round(math.sqrt(none_err), 5), "mlp_loo_rel_rmse": round(math.sqrt(mlp_err), 5),
               "expected_rel_rmse": round(math.sqrt(y_err), 5)}
        best = y_err
    mix_margin = MIX_MARGIN if mix_margin is None else mix_margin
    if mix_margin > 0:
        # a non-negative mixture of the adapted MLP and of trained devices' own predictors: the new
        # device may share the latency structure of a few devices the MLP was trained on, which the
        # embedding fit, started from datasheet features, does not find with 10 samples
        T = device_totals(m, mats, trained_vectors(m))
        own = own_folds = None
        if mlp_folds_ms is not None and np.all(np.isfinite(mlp_folds_ms)):  # raw totals can overflow
            own, own_folds = mlp_folds_ms[0], mlp_folds_ms[1:]
        mix_err = float(np.mean((_mix_loo(T, y, own_folds=own_folds) / y - 1) ** 2))
        cols, w, c, w0 = _mix_fit(T, y, own=own)
        # NNLS leaves round-off weights on columns it does not use: drop parts under 1e-6 of the total
        share = np.r_[0.0 if own is None else w0 * own.max(), w * T[:, cols].max(0)] / y.min()
        w0, keep = (w0 if share[0] > 1e-6 else 0.0), share[1:] > 1e-6
        if mix_err < mix_margin * best and (keep.any() or w0 > 0 or c > 0):
            out = {"mode": "mix", "own_w": w0, "devices": [m.devices[j] for j in cols[keep]],
                   "w": w[keep].tolist(), "overhead_ms": c,
                   "loo_rel_rmse": round(math.sqrt(mix_err), 5), "none_rel_rmse": round(math.sqrt(none_err), 5),
                   "mlp_loo_rel_rmse": round(math.sqrt(mlp_err), 5), "expected_rel_rmse": round(math.sqrt(mix_err), 5),
                   "instead_of": out}  # what would be used without the mixture (None: the adapted MLP)
    return out


def _linear_model(C: np.ndarray, y: np.ndarray, alphas) -> tuple[float, np.ndarray | None]:
    """Ridge fit of ``y`` (ms) on the columns of ``C`` (relative error, strength by leave-one-out):
    (leave-one-out mean squared relative error, coefficients) or (inf, None)."""
    err, _, coef = ridge_loo(C / y[:, None], np.ones(len(y)), alphas)
    return err, coef


def ridge_loo(A: np.ndarray, t: np.ndarray, alphas, *, h0: float = 0.0):
    """Ridge regression of ``t`` on the columns of ``A`` (scaled to unit RMS; all-zero columns get 0),
    its strength chosen among ``alphas`` by closed-form leave-one-out error (``h0``: leverage every
    row has besides ``A``'s, 1/n for a centred intercept). Returns (leave-one-out mean squared error,
    alpha, coefficients on ``A``'s columns), or (inf, None, None) when ``A`` has no non-zero column."""
    sc = np.sqrt((A ** 2).mean(0))
    keep = sc > 1e-12
    if not keep.any():
        return np.inf, None, None
    As = A[:, keep] / sc[keep]
    U, s, Vt = np.linalg.svd(As, full_matrices=False)
    best_err, best_alpha, best_w = np.inf, None, None
    for a in alphas:
        w = Vt.T @ ((s / (s ** 2 + a)) * (U.T @ t))
        h = (U ** 2 * (s ** 2 / (s ** 2 + a))).sum(1) + h0
        err = float(np.mean(((t - As @ w) / np.maximum(1 - h, 1e-6)) ** 2))
        if err < best_err:
            best_err, best_alpha, best_w = err, a, w
    coef = np.zeros(A.shape[1])
    coef[keep] = best_w / sc[keep]
    return best_err, best_alpha, coef


# ---------------------------------------------------------------------- trained-device mixture
def distinct_ops(mats: list) -> tuple[np.ndarray, np.ndarray]:
    """(distinct op rows of ``mats``, graphs x distinct-rows count matrix): models of one space repeat
    the same ops (NB201: ~2,300 op rows in 10 cells, far fewer distinct ones), so the MLP runs on
    distinct rows and the count matrix sums them per graph."""
    Xu, inv = np.unique(np.concatenate(mats), axis=0, return_inverse=True)
    C = np.zeros((len(mats), len(Xu)))
    np.add.at(C, (np.repeat(np.arange(len(mats)), [len(x) for x in mats]), inv.ravel()), 1.0)
    return Xu, C


def device_totals(m: LatencyModel, mats: list, Z: np.ndarray) -> np.ndarray:
    """(graphs x devices) predicted totals in ms of the op matrices ``mats`` under each device vector
    of ``Z`` (MLP + per-graph overhead, no corrections)."""
    Xu, C = distinct_ops(mats)
    out = np.empty((len(mats), len(Z)))
    for j, z in enumerate(Z):
        out[:, j] = C @ np.exp(m.op_log_latency(Xu, z)) + math.exp(m.overhead_log(z))
    return out


def _mix_fit(T: np.ndarray, y: np.ndarray, n_devices: int = MIX_DEVICES, own: np.ndarray | None = None):
    """Non-negative mixture of trained devices' predictions: the ``n_devices`` columns of ``T``
    (graphs x devices, ms) closest to ``y`` up to a scale (variance of the log ratio), plus ``own``
    (the adapted MLP's raw totals) when given, then ``y ~ own w0 + T_sel w + c`` with all weights
    >= 0, on relative error (NNLS). Returns (columns, w, c, w0)."""
    from scipy.optimize import nnls

    score = (np.log(y)[:, None] - np.log(np.maximum(T, 1e-12))).var(0)
    cols = np.sort(np.argsort(score, kind="stable")[:n_devices])
    A = np.hstack(([] if own is None else [own[:, None]]) + [T[:, cols], np.ones((len(y), 1))]) / y[:, None]
    sc = np.median(A, 0)  # unit columns: a few-shot embedding's raw totals can be 1e17 ms (its offset rescales them)
    w, _ = nnls(A / sc, np.ones(len(y)))
    w = w / sc
    w0, w = (0.0, w) if own is None else (float(w[0]), w[1:])
    return cols, w[:-1], float(w[-1]), w0


def _mix_loo(T: np.ndarray, y: np.ndarray, n_devices: int = MIX_DEVICES, own_folds: np.ndarray | None = None):
    """Leave-one-out predictions of :func:`_mix_fit`; the device choice is redone in every fold and,
    given ``own_folds`` (k x k: row i = the totals of the adapted MLP fitted without measurement i),
    the adapted MLP's column is that fold's."""
    out = np.empty(len(y))
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        own = None if own_folds is None else own_folds[i]
        cols, w, c, w0 = _mix_fit(T[keep], y[keep], n_devices, None if own is None else own[keep])
        out[i] = T[i, cols] @ w + c + (0.0 if own is None else w0 * own[i])
    return out


__all__ = ["MIX_DEVICES", "MIX_MARGIN", "OPRES_ALPHAS", "class_matrix", "fit_op_residual", "ridge_loo",
           "distinct_ops", "device_totals"]
