"""``--plot``: the candidate designs of a compile, predicted latency vs predicted accuracy.

The Pareto front (fastest design for each accuracy), the chosen design, the original model and the
latency budget. Candidates are the optimizer's own evaluated designs when it reports them
(``OptimizeResult.front``), otherwise a few hundred random and uniform-width designs scored by the
same predictors the optimizer used. matplotlib is imported only here (``pip install 'edgepass[plot]'``).
"""
from __future__ import annotations

import io

import numpy as np

from .errors import InputError
from .fileio import write_atomic
from .optimizers.api import model_problem

N_RANDOM = 300


def candidates(space, device, accuracy_fn, result=None, *, seed: int = 0) -> np.ndarray:
    """``[n, 2]`` (predicted latency ms, predicted accuracy) of candidate designs."""
    front = getattr(result, "front", None)
    if front is not None and len(front):
        return np.asarray(front, dtype=np.float64)[:, :2]

    problem, _ = model_problem(space, device, accuracy_fn=accuracy_fn)
    rng = np.random.default_rng(seed)
    designs = [space.sample(rng) for _ in range(N_RANDOM)]
    precisions = sorted({p for ps in space.precisions.values() for p in ps})
    for ratio in np.linspace(0.25, 1.0, 16):
        for p in [None] + precisions:
            designs.append(space.uniform(float(ratio), precision=p))
    codes = np.stack([space.encode(d) for d in designs])
    ev = problem.evaluate(codes)
    return np.column_stack([ev["latency_ms"], ev["accuracy"]])


def pareto(points: np.ndarray) -> np.ndarray:
    """The non-dominated points (lower latency, higher accuracy), sorted by latency."""
    order = np.lexsort((-points[:, 1], points[:, 0]))
    best, keep = -np.inf, []
    for i in order:
        if points[i, 1] > best:
            keep.append(i)
            best = points[i, 1]
    return points[keep]


def plot_front(path, space, device, accuracy_fn, result, report, *, metric: str = "accuracy", seed: int = 0) -> None:
    """Write the PNG (atomically; the same inputs give the same bytes)."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install 'edgepass[plot]'") from None
    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    pts = candidates(space, device, accuracy_fn, result, seed=seed)
    front = pareto(pts)
    lat, acc = report.predicted["latency_ms"], report.predicted["accuracy"]
    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    ax = fig.subplots()
    ax.scatter(pts[:, 0], pts[:, 1], s=6, c="#b0b0b0", label=f"candidates ({len(pts)})")
    ax.step(front[:, 0], front[:, 1], where="post", c="#1f77b4", lw=1.5, label="Pareto front")
    ax.scatter([lat[0]], [acc[0]], marker="x", s=60, c="k", label="original", zorder=3)
    ax.scatter([lat[1]], [acc[1]], marker="*", s=160, c="#d62728", label="chosen", zorder=4)
    if report.budget.get("latency_ms"):
        ax.axvline(report.budget["latency_ms"], ls="--", c="#d62728", lw=1, label="latency budget")
    ax.set_xlabel(f"predicted latency on {report.device} (ms)")
    ax.set_ylabel(f"predicted {metric}")
    ax.set_title(f"{report.device}: {'budget met' if report.feasible else 'budget NOT met'}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    write_atomic(path, buf.getvalue())


__all__ = ["candidates", "pareto", "plot_front"]
