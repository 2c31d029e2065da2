"""Per-op corrections of a trained device with many own measurements (this CPU, ``local/cpu-ort-*``),
fitted on its rows only: the non-negative per-op correction of the shared MLP
(:func:`fit_correction`, basis :func:`~edgepass.predictors.latency_ops.correction_basis`) and, on
top of it, a small per-op residual network (:func:`fit_op_net`). Both stay per op, so graph sums and
:class:`~edgepass.predictors.latency_predict.LatencyTable` stay exact; ``scripts/train_latency.py``
stores them in the artifact (:meth:`LatencyModel.with_corrections`)."""
from __future__ import annotations

import math

import numpy as np

from .latency_model import DEVICE_CORRECTIONS, LatencyModel
from .latency_ops import CORR_TERMS, N_CORR_OP, correction_basis, opnet_inputs


# ---------------------------------------------------------------------- per-device correction
def correction_rows(m: LatencyModel, mats: list, state: dict) -> np.ndarray:
    """Per graph: summed basis of its ops ++ [1, MLP overhead ms] (uncorrected state)."""
    base = {k: v for k, v in state.items() if k not in DEVICE_CORRECTIONS}
    X = np.concatenate(mats)
    B = correction_basis(X, m.basis_ms(X, base["z"]))
    idx = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    A = np.zeros((len(mats), N_CORR_OP))
    np.add.at(A, idx, B)
    ov = math.exp(m.overhead_log(base["z"]))
    return np.concatenate([A, np.ones((len(mats), 1)), np.full((len(mats), 1), ov)], 1)


#: per-graph overhead of onnxruntime's session.run here, measured rather than fitted: a model of one
#: Relu on 1x1x8x8 takes 0.005 ms (median of 10,000 runs, 1 and 2 threads: `edgepass measure relu.onnx
#: --runs 200 --min-seconds 0.5 [--threads 2]`). Fitted, the intercept came out at 0.076 ms (the
#: training rows' smallest models take 0.28 ms, so nothing pins it down) and the bundled 0.042 ms
#: digits CNN was predicted at 0.123 ms; fixed, 0.055 ms, while the held-out share within +-10 % went
#: 0.824 -> 0.817 (``benchmarks/predictors.py`` sections (c) and (c')).
GRAPH_OVERHEAD_MS = {"local/cpu-ort-1t": 0.005, "local/cpu-ort-2t": 0.005}


def fit_correction(m: LatencyModel, mats: list, y, state: dict, *, ridge: float = 0.03,
                   min_share: float = 0.02, overhead_ms: float | None = None) -> np.ndarray:
    """Non-negative weights of the per-op correction: robust (soft-L1, scale 0.1) least squares of
    ``log(predicted / measured)`` with a small ridge pulling towards the identity (MLP as is).

    Why robust log error: busy-machine measurements have heavy tails (2-thread rows: median IQR 27 %
    of the median); plain least squares on relative error chased them and made 2-thread predictions
    worse than no correction (measured in ``benchmarks/predictors.py`` development: within +-10 %
    0.13 vs 0.26 uncorrected; soft-L1 log fit 0.34).

    ``overhead_ms``: the device's per-graph overhead, measured, instead of fitting it (rows of
    models much larger than the overhead cannot pin it down: see :data:`GRAPH_OVERHEAD_MS`)."""
    from scipy.optimize import least_squares

    y = np.asarray(y, dtype=np.float64)
    A = correction_rows(m, mats, state)
    nt = len(CORR_TERMS)
    w0 = np.zeros(A.shape[1])
    w0[0:N_CORR_OP:nt] = 1.0
    w0[-1] = 1.0
    # an (op group, precision) slot that carries < 2 % of the measured latency in 9 of 10 graphs
    # that have it is not identifiable: its weights stay at the prior (the MLP as is; fp32-twin ms
    # for int8). Left free, the int8 Linear slot took ~1 ms per op (a stand-in for per-graph int8
    # overheads) and made the tiny digits CNN "10x slower" in int8.
    free = np.ones(A.shape[1], dtype=bool)
    for s in range(0, N_CORR_OP, nt):
        share = A[:, s][A[:, s] > 0] / y[A[:, s] > 0]
        if len(share) == 0 or np.quantile(share, 0.9) < min_share:
            free[s:s + nt] = False
    if overhead_ms is not None:   # a measured per-graph overhead, not a fitted one
        w0[-2:] = (overhead_ms, 0.0)
        free[-2:] = False
    fixed = A[:, ~free] @ w0[~free]
    Af = A[:, free]
    sc = np.sqrt(((Af / y[:, None]) ** 2).mean(0)) + 1e-12
    As = Af / sc
    w0f = w0[free]

    def resid(ws):
        return np.concatenate([np.log((As @ ws + fixed) / y + 1e-9), ridge * (ws - w0f * sc)])

    fit = least_squares(resid, w0f * sc, bounds=(0, np.inf), loss="soft_l1", f_scale=0.1, max_nfev=300)
    w = w0.copy()
    w[free] = fit.x / sc
    return w


# ---------------------------------------------------------------------- per-op residual network
def fit_op_net(m: LatencyModel, mats: list, y, state: dict, *, hidden: int = 16, weight_decay: float = 1e-3,
               steps: int = 1500, lr: float = 3e-3, seed: int = 0) -> tuple:
    """Per-op residual network of a device with many own measurements, on top of its per-op
    correction (``state["corr"]``): op ms x exp(net(op)), fitted end to end on graph totals
    (pseudo-Huber loss on log(predicted / measured), scale 0.05; weight decay on the hidden layer
    and on the gains; deterministic under ``seed``). Returns the ``OPNET_ARRAYS`` tuple.

    Why: the linear correction has one set of weights per op group and precision, so it cannot
    express effects of an op's shape taken jointly, such as channel alignment; on this CPU's
    held-out models the share within +-10 % went 0.665 -> 0.817 with it (``benchmarks/predictors.py``
    section (c), with the measured overhead; a wider layer, more steps or a lower weight decay did
    no better there)."""
    import torch

    if state.get("corr") is None:
        raise ValueError("fit_op_net needs a corrected device state (state['corr'])")
    y = np.asarray(y, dtype=np.float64)
    X = np.concatenate(mats)
    base = {k: v for k, v in state.items() if k != "opnet"}
    per = m.op_latency(X, base)
    # distinct op rows only (designs repeat most ops): the network runs once per distinct row
    U, inv = np.unique(np.concatenate([opnet_inputs(m, X), per[:, None]], 1), axis=0, return_inverse=True)
    graph = np.repeat(np.arange(len(mats)), [len(x) for x in mats])
    rng = np.random.default_rng(seed)
    n_in = U.shape[1] - 1
    bound = 1.0 / math.sqrt(n_in)
    W0 = torch.tensor(rng.uniform(-bound, bound, (n_in, hidden)), requires_grad=True)
    b0 = torch.tensor(rng.uniform(-bound, bound, hidden), requires_grad=True)
    w1 = torch.zeros(hidden, dtype=torch.float64, requires_grad=True)   # starts as the correction
    b1 = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    inp, per_u = torch.tensor(U[:, :-1]), torch.tensor(U[:, -1])
    inv_t, graph_t = torch.tensor(inv.ravel()), torch.tensor(graph)
    log_y = torch.tensor(np.log(y))
    overhead = m.overhead_ms(base)
    opt = torch.optim.Adam([W0, b0, w1, b1], lr=lr)
    for _ in range(steps):
        g = torch.tanh(inp @ W0 + b0) @ w1 + b1
        tot = torch.zeros(len(mats), dtype=torch.float64).index_add_(0, graph_t, (per_u * torch.exp(g))[inv_t])
        r = torch.log(torch.clamp(tot + overhead, min=1e-9)) - log_y
        loss = torch.sqrt(r ** 2 + 0.05 ** 2).mean() + weight_decay * ((W0 ** 2).sum() + (b0 ** 2).sum()
                                                                        + (g ** 2).mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tuple(t.detach().numpy().copy() for t in (W0, b0, w1, b1))


__all__ = ["correction_rows", "GRAPH_OVERHEAD_MS", "fit_correction", "fit_op_net"]
