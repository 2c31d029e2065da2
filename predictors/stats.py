"""Rank correlations and error shares used by the predictors and their benchmarks (numpy only).

``spearman`` uses average ranks for ties; ``kendall`` is Kendall's tau-b by pair counting in blocks
(O(n^2) memory-bounded; fine up to a few thousand points). No scipy dependency.
"""
from __future__ import annotations

import numpy as np


def rankdata(x) -> np.ndarray:
    """Average ranks (1-based); ties share the mean rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho (Pearson correlation of average ranks); nan when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2:
        return float("nan")
    rx, ry = rankdata(x), rankdata(y)
    rx -= rx.mean()
    ry -= ry.mean()
    den = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def kendall(x, y, *, max_n: int = 4000, seed: int = 0) -> float:
    """Kendall's tau-b (pair counting; a seeded sample of ``max_n`` points above that size)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    if n > max_n:
        idx = np.random.default_rng(seed).choice(n, max_n, replace=False)
        x, y, n = x[idx], y[idx], max_n
    conc = disc = tx = ty = 0
    block = 512
    for s in range(0, n, block):
        dx = np.sign(x[s:s + block, None] - x[None, :])
        dy = np.sign(y[s:s + block, None] - y[None, :])
        upper = np.arange(s, min(s + block, n))[:, None] < np.arange(n)[None, :]
        p = dx * dy
        conc += int(((p > 0) & upper).sum())
        disc += int(((p < 0) & upper).sum())
        tx += int(((dx == 0) & (dy != 0) & upper).sum())
        ty += int(((dy == 0) & (dx != 0) & upper).sum())
    den = np.sqrt((conc + disc + tx) * (conc + disc + ty))
    return float((conc - disc) / den) if den > 0 else float("nan")


def mape(pred, true) -> float:
    """Mean absolute percentage error (in %)."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(100 * np.mean(np.abs(pred - true) / np.abs(true)))


def within(pred, true, tol: float = 0.10) -> float:
    """Share of predictions within ``tol`` (relative) of the truth, in [0, 1]."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    return float(np.mean(np.abs(pred - true) <= tol * np.abs(true)))


__all__ = ["rankdata", "spearman", "kendall", "mape", "within"]


def ranking_noise_ceiling(correct, *, splits: int = 50, seed: int = 0) -> dict:
    """How well *any* predictor can rank items by a score measured as a mean over a finite sample,
    e.g. designs by accuracy on a test set (designs a few images apart are tied within noise).

    ``correct``: items x samples (per sample outcome, e.g. 1 = right). The samples are split in
    random halves ``splits`` times; the median Spearman between the halves' rankings, stepped up to
    the full sample (Spearman-Brown), is the measured ranking's reliability r, and a perfect
    predictor's Spearman against the measured ranking is about sqrt(r): ``{"split_half": ...,
    "reliability": r, "ceiling": sqrt(r)}``."""
    correct = np.asarray(correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = correct.shape[1]
    if correct.shape[0] < 3 or n < 4:
        return {"split_half": float("nan"), "reliability": float("nan"), "ceiling": float("nan")}
    halves = []
    for _ in range(splits):
        perm = rng.permutation(n)
        rho = spearman(correct[:, perm[: n // 2]].mean(1), correct[:, perm[n // 2:]].mean(1))
        halves.append(rho if np.isfinite(rho) else 0.0)
    r_half = float(np.median(halves))
    r = 2 * r_half / (1 + r_half) if r_half > 0 else 0.0
    return {"split_half": r_half, "reliability": r, "ceiling": float(np.sqrt(r))}
