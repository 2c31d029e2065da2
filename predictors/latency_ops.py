"""Per-op terms of the latency predictor's corrections, as inference evaluates them (numpy only).

* the basis of a trained device's per-op correction (:func:`correction_basis`; fitted by
  :func:`edgepass.predictors.latency_correction.fit_correction`),
* the forward pass of its per-op residual network (:func:`opnet_log_gain`; fitted by
  :func:`edgepass.predictors.latency_correction.fit_op_net`),
* the op classes and per-op ms of a few-shot op-class residual (:func:`op_classes`,
  :func:`op_residual_ms`, :func:`opres_state`; fitted by
  :func:`edgepass.predictors.latency_residual.fit_op_residual`).

:class:`~edgepass.predictors.latency_model.LatencyModel` applies them per op, so graph sums and
:class:`~edgepass.predictors.latency_tables.LatencyTable` stay exact.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .features import KIND_GROUPS, OP_FEATURE_INDEX

if TYPE_CHECKING:
    from .latency_model import LatencyModel


# ---------------------------------------------------------------------- per-device correction
# A device with many own measurements (this CPU: ~4k rows) gets a correction of the shared MLP fitted
# on its rows only. Per op, latency = B(op) . w with B = [MLP ms, GMACs, MB moved, 1] for each
# (op group, int8 or not; an int8 op's "MLP ms" is that of its fp32 twin); per graph overhead =
# w0 + w1 * MLP overhead. w >= 0 (NNLS), so every op
# stays non-negative and a graph is still a sum of op latencies (LatencyTable stays exact). The
# int8/non-int8 split is what makes int8 convs ~2-3x faster than fp32 on this CPU, which the shared
# MLP (80k public rows, few int8 CPU rows) does not learn; the intercept absorbs the per-graph
# overhead that made tiny models +170 %.
CORR_GROUPS = ("conv", "dwconv", "linear", "other")
CORR_TERMS = ("mlp_ms", "gmacs", "mbytes", "count")
N_CORR_OP = len(CORR_GROUPS) * 2 * len(CORR_TERMS)


def correction_basis(X: np.ndarray, per_op_ms: np.ndarray) -> np.ndarray:
    """(n_ops x N_CORR_OP) basis of :func:`~edgepass.predictors.latency_correction.fit_correction` from raw
    op features and MLP ms."""
    j = OP_FEATURE_INDEX
    X = np.asarray(X, dtype=np.float64)
    conv = X[:, j["kind_conv"]] > 0
    grouped = X[:, j["grouped"]] > 0
    lin = (X[:, j["kind_linear"]] > 0) | (X[:, j["kind_matmul"]] > 0)
    group = np.where(conv & ~grouped, 0, np.where(conv, 1, np.where(lin, 2, 3)))
    slot = group * 2 + (X[:, j["prec_int8"]] > 0)
    terms = np.stack([per_op_ms, np.expm1(X[:, j["log_macs"]]) / 1e9,
                      (np.expm1(X[:, j["log_bytes_read"]]) + np.expm1(X[:, j["log_bytes_written"]])) / 1e6,
                      np.ones(len(X))], 1)
    B = np.zeros((len(X), N_CORR_OP))
    nt = len(CORR_TERMS)
    for t in range(nt):
        B[np.arange(len(X)), slot * nt + t] = terms[:, t]
    return B


# ---------------------------------------------------------------------- per-op residual network
#: arrays of a per-op residual network: tanh(inputs @ W0 + b0) @ w1 + b1 = log gain of the op
OPNET_ARRAYS = ("W0", "b0", "w1", "b1")
#: channel alignments the network sees as flags: onnxruntime's CPU kernels (AVX-512 here) run
#: fastest on channel counts that are multiples of 16 (a 24-channel conv measured as slow as 32)
OPNET_ALIGN = (16, 8)


def opnet_inputs(m: LatencyModel, X: np.ndarray) -> np.ndarray:
    """Network inputs per op row: the MLP's standardised features + "not a multiple of 16 / 8"
    flags of the input and output channels."""
    j = OP_FEATURE_INDEX
    X = np.asarray(X, dtype=np.float64)
    ch = np.rint(np.expm1(X[:, [j["log_cin"], j["log_cout"]]]))
    flags = [(ch % a != 0).astype(np.float64) for a in OPNET_ALIGN]
    return np.concatenate([(X - m.a["op_mu"]) / m.a["op_sd"], *flags], 1)


def opnet_log_gain(m: LatencyModel, X: np.ndarray, net) -> np.ndarray:
    """log of the multiplicative gain the network puts on each op row's corrected latency."""
    W0, b0, w1, b1 = net
    return np.tanh(opnet_inputs(m, X) @ W0 + b0) @ w1 + float(np.asarray(b1).reshape(-1)[0])


# ---------------------------------------------------------------------- few-shot op-class residual
def op_classes(X: np.ndarray) -> list[str]:
    """Class of each op row for the few-shot residual: kind, kernel (conv and pool only),
    depthwise, int8 -- e.g. ``pool|k3|dw0|q0``."""
    j = OP_FEATURE_INDEX
    X = np.asarray(X, dtype=np.float64)
    if len(X) == 0:
        return []
    kind = np.argmax(X[:, :len(KIND_GROUPS)], 1)
    spatial = np.isin(kind, [KIND_GROUPS.index("conv"), KIND_GROUPS.index("pool")])
    k = np.where(spatial, X[:, j["kernel"]], 0).astype(int)
    dw = (X[:, j["depthwise"]] > 0).astype(int)
    q = (X[:, j["prec_int8"]] > 0).astype(int)
    return [f"{KIND_GROUPS[a]}|k{b}|dw{c}|q{d}" for a, b, c, d in zip(kind, k, dw, q)]


def op_terms(X: np.ndarray) -> np.ndarray:
    """[1, GMACs, MB moved] per op row: the residual is ms per op, per GMAC and per MB of its class."""
    j = OP_FEATURE_INDEX
    return np.stack([np.ones(len(X)), np.expm1(X[:, j["log_macs"]]) / 1e9,
                     (np.expm1(X[:, j["log_bytes_read"]]) + np.expm1(X[:, j["log_bytes_written"]])) / 1e6], 1)


def op_residual_ms(X: np.ndarray, opres, *, with_seen: bool = False):
    """Per-op extra ms of a fitted op-class residual ``(class -> row, weights)``; 0 for unseen classes
    (and, with ``with_seen``, the mask of ops whose class the fit saw)."""
    index, W = opres
    X = np.asarray(X, dtype=np.float64)
    anyc = index.get("*", -1)  # a model on whole-graph totals: one row for every op
    rows = np.array([index.get(c, anyc) for c in op_classes(X)], dtype=int)
    seen = rows >= 0
    out = np.zeros(len(X))
    if seen.any():
        out[seen] = (op_terms(X[seen]) * W[rows[seen]]).sum(1)
    return (out, seen) if with_seen else out


def opres_state(res: dict) -> tuple[dict, np.ndarray]:
    """The ``state["opres"]`` form ``(class -> row, weights)`` of a
    :func:`~edgepass.predictors.latency_residual.fit_op_residual` dict."""
    return {k: i for i, k in enumerate(res["classes"])}, np.asarray(res["w"], dtype=np.float64)


__all__ = ["CORR_GROUPS", "CORR_TERMS", "N_CORR_OP", "correction_basis", "OPNET_ARRAYS", "OPNET_ALIGN",
           "opnet_inputs", "opnet_log_gain", "op_classes", "op_terms", "op_residual_ms", "opres_state"]
