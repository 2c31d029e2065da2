"""Device populations for training the amortized optimizer on a tabulated space.

Real devices come with a full cost table for the space (NAS-Bench-201 latency of every cell);
synthetic devices are geometric interpolations of two real ones (log-latency mixed with a random
weight, then scaled), which keeps the rank structure real hardware has while filling the space
between devices. A device is presented to the network by its *reference vector*: the centred
log-latency of a few fixed reference designs, i.e. what a user measures on a new device.
"""
from __future__ import annotations

import numpy as np

from .amortized import TrainingPair
from .budget import Budget
from .search import exhaustive

QUANTILES = (10, 25, 50, 75, 90)


def reference_designs(n_designs: int, k: int = 10, seed: int = 0) -> np.ndarray:
    """Indices of the ``k`` reference designs (fixed for a space: the same on every device)."""
    return np.sort(np.random.default_rng(seed).choice(n_designs, size=k, replace=False))


def reference_vector(latency: np.ndarray, refs: np.ndarray) -> tuple[np.ndarray, float]:
    """(centred log-latency of the reference designs, the centre)."""
    v = np.log(np.maximum(np.asarray(latency)[refs], 1e-6))
    c = float(v.mean())
    return v - c, c


def budget_feature(latency_ms: float, centre: float) -> np.ndarray:
    return np.array([np.log(latency_ms) - centre])


#: the amortized optimizer is asked at the budget and slightly tighter / looser (one batch): the best
#: repaired design wins, which guards against one off decode (NB201: max gap 1.17 -> see benchmarks)
BUDGET_SCALES = (0.9, 1.0, 1.1)


def budget_features(latency_ms: float, centre: float, scales=BUDGET_SCALES) -> np.ndarray:
    """:func:`budget_feature` at ``latency_ms`` x each of ``scales`` (rows)."""
    return np.stack([budget_feature(latency_ms * s, centre) for s in scales])


def synthetic_devices(tables: dict, n: int, seed: int = 0) -> dict:
    """``n`` devices interpolated between random pairs of the real ``tables``."""
    rng = np.random.default_rng(seed)
    names = sorted(tables)
    out = {}
    for i in range(n):
        a, b = rng.choice(len(names), size=2, replace=False)
        w = rng.uniform(0, 1)
        scale = np.exp(rng.normal(0, 0.5))
        la, lb = np.log(tables[names[a]]), np.log(tables[names[b]])
        out[f"synthetic/{i}"] = np.exp(w * la + (1 - w) * lb) * scale
    return out


def training_pairs(problem_for, tables: dict, refs: np.ndarray, *, budgets_per_device: int = 24,
                   seed: int = 0) -> list[TrainingPair]:
    """Exact optima for random budgets (between the 2nd and 98th latency percentile) on every device."""
    rng = np.random.default_rng(seed)
    pairs = []
    for name in sorted(tables):
        lat = tables[name]
        vec, centre = reference_vector(lat, refs)
        problem = problem_for(lat)
        lo, hi = np.percentile(lat, [2, 98])
        for L in np.exp(rng.uniform(np.log(lo), np.log(hi), budgets_per_device)):
            best = exhaustive(problem, Budget(latency_ms=float(L)))
            pairs.append(TrainingPair(vec, budget_feature(L, centre), best.code))
    return pairs
