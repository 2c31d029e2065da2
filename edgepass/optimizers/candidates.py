"""A short list of good, different designs under one budget, for a final choice by evaluation.

The optimizers rank designs with the *predicted* accuracy, whose ranking is imperfect (Spearman
0.8-0.9 on held-out designs of the digits CNNs). When calibration data is at hand, compile measures
a few candidates on it and keeps the best measured one. The candidates are the optimizer's pick
plus the widest uniform designs that fit the budget (fp32, and int8 where offered: the uniform
baselines as the latency predictor sees them) and the greedy repair (+ polish) of uniform starting
points. So with this step a compile keeps the uniform baseline whenever that measures better.
"""
from __future__ import annotations

import numpy as np

from .budget import Budget
from .search import repair

#: uniform width ratios tried, widest first
RATIOS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)


def _precisions(space) -> list:
    return [None] + (["int8"] if any("int8" in ps for ps in space.precisions.values()) else [])


def uniform_designs(space) -> list:
    """The uniform design of every ratio of :data:`RATIOS`, in fp32 and (where offered) int8."""
    return [space.uniform(r, precision=p) for p in _precisions(space) for r in RATIOS]


def widest_uniform(problem, budget: Budget, space, precision=None, reference_accuracy=None) -> np.ndarray | None:
    """Code of the widest uniform design (all layers at ``precision``) that meets the budget under
    the predictors: the uniform-scaling baseline as the predictor sees it; None if none does."""
    for r in RATIOS:
        code = space.encode(space.uniform(r, precision=precision))
        ev = problem.evaluate(code[None])
        if budget.violation(ev["latency_ms"], ev["energy_mj"], ev["accuracy"], reference_accuracy)[0] <= 0:
            return code
    return None


def candidate_codes(problem, budget: Budget, space, first, *, k: int = 4, reference_accuracy=None,
                    polish: int = 20) -> list[np.ndarray]:
    """Up to ``k`` distinct feasible codes, in this order: ``first`` (the optimizer's pick), the
    widest feasible uniform design in int8 (where offered), the same in fp32, then the greedy repair
    (+ polish) of the uniform designs of every ratio and precision, best predicted objective first."""
    first = np.asarray(first, dtype=np.int64)
    out, seen = [first], {first.tobytes()}

    def add(code):
        if code is not None and len(out) < k and code.tobytes() not in seen:
            seen.add(code.tobytes())
            out.append(np.asarray(code, dtype=np.int64))
    for p in reversed(_precisions(space)):
        add(widest_uniform(problem, budget, space, p, reference_accuracy))
    scored = []
    for d in uniform_designs(space):
        res = repair(problem, budget, space.encode(d), reference_accuracy=reference_accuracy, polish=polish)
        if res.feasible:
            ev = problem.evaluate(np.asarray(res.code)[None])
            obj = float(budget.objective(ev["latency_ms"], ev["energy_mj"], ev["accuracy"])[0])
            scored.append((-obj, len(scored), np.asarray(res.code, dtype=np.int64)))
    for _, _, code in sorted(scored, key=lambda t: (t[0], t[1])):
        add(code)
    return out


__all__ = ["candidate_codes", "uniform_designs", "widest_uniform", "RATIOS"]
