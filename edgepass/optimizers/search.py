"""Per-device search (the baseline the amortized optimizer is measured against), exhaustive
enumeration for small spaces, and the feasibility repair every decoded design goes through."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .budget import Budget
from .problem import LookupProblem, Problem


@dataclass
class SearchResult:
    code: np.ndarray
    accuracy: float
    latency_ms: float
    energy_mj: float | None
    feasible: bool
    seconds: float
    evaluations: int = 0
    history: list = field(default_factory=list)   # best objective per iteration
    front: list | None = None                      # (latency_ms, accuracy) of the final candidates


def rank_key(problem: Problem, budget: Budget, codes, reference_accuracy, ev=None):
    ev = problem.evaluate(codes) if ev is None else ev
    viol = budget.violation(ev["latency_ms"], ev["energy_mj"], ev["accuracy"], reference_accuracy)
    obj = budget.objective(ev["latency_ms"], ev["energy_mj"], ev["accuracy"])
    # feasible designs first (by objective), then the least violating
    key = np.where(viol <= 0, obj, -1e9 - viol)
    return key, viol, ev


def _result(problem, budget, code, reference_accuracy, t0, evals, history=()):
    ev = problem.evaluate(code[None])
    viol = budget.violation(ev["latency_ms"], ev["energy_mj"], ev["accuracy"], reference_accuracy)[0]
    return SearchResult(np.asarray(code, dtype=np.int64), float(ev["accuracy"][0]), float(ev["latency_ms"][0]),
                        None if ev["energy_mj"] is None else float(ev["energy_mj"][0]), bool(viol <= 0),
                        time.perf_counter() - t0, evals, list(history))


def result_of(problem: Problem, budget: Budget, code, *, reference_accuracy=None) -> SearchResult:
    """One design's predicted figures and feasibility, as a search would report it."""
    return _result(problem, budget, np.asarray(code, dtype=np.int64), reference_accuracy, time.perf_counter(), 1)


def exhaustive(problem: Problem, budget: Budget, *, reference_accuracy=None, chunk: int = 1 << 18,
               limit: float = 5e6) -> SearchResult:
    """The exact optimum, when the space is small enough to enumerate (NAS-Bench-201: 15,625)."""
    t0 = time.perf_counter()
    n = int(np.prod(problem.n_choices))
    if n > limit:
        raise ValueError(f"space has {n:.3g} designs; exhaustive enumeration is capped at {limit:.3g}")
    best_key, best_code = -np.inf, None
    for start in range(0, n, chunk):
        idx = np.arange(start, min(n, start + chunk))
        codes = problem.codes(idx) if isinstance(problem, LookupProblem) else _codes_from_index(problem, idx)
        key, _, _ = rank_key(problem, budget, codes, reference_accuracy)
        i = int(np.argmax(key))
        if key[i] > best_key:
            best_key, best_code = key[i], codes[i]
    return _result(problem, budget, best_code, reference_accuracy, t0, n)


def _codes_from_index(problem, idx):
    strides = np.cumprod([1] + list(problem.n_choices)[:0:-1])[::-1]
    return (idx[:, None] // strides) % np.asarray(problem.n_choices)


def evolutionary(problem: Problem, budget: Budget, *, population: int = 100, iterations: int = 500,
                 parent_ratio: float = 0.25, mutation_ratio: float = 0.5, mutate_prob: float = 0.1,
                 seed: int = 0, reference_accuracy=None, init=None, patience: int | None = None) -> SearchResult:
    """Evolutionary search in the style Once-for-All uses per device: keep the best quarter, refill
    half by mutation and half by crossover. Seeded and deterministic. ``patience`` stops early after
    that many iterations without improvement (None: run all iterations)."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = np.asarray(problem.n_choices)
    pop = rng.integers(0, n, size=(population, len(n)))
    if init is not None:
        init = np.atleast_2d(np.asarray(init, dtype=np.int64))
        pop[: len(init)] = init[:population]
    key, _, _ = rank_key(problem, budget, pop, reference_accuracy)
    evals, history, stale = population, [], 0
    n_parents = max(2, int(population * parent_ratio))
    for _ in range(iterations):
        order = np.argsort(-key, kind="stable")
        parents, pkey = pop[order[:n_parents]], key[order[:n_parents]]
        n_mut = int((population - n_parents) * mutation_ratio)
        n_cross = population - n_parents - n_mut
        base = parents[rng.integers(0, n_parents, n_mut)]
        mask = rng.random(base.shape) < mutate_prob
        mutants = np.where(mask, rng.integers(0, n, size=base.shape), base)
        a, b = parents[rng.integers(0, n_parents, n_cross)], parents[rng.integers(0, n_parents, n_cross)]
        children = np.where(rng.random(a.shape) < 0.5, a, b)
        new = np.concatenate([mutants, children])
        nkey, _, _ = rank_key(problem, budget, new, reference_accuracy)
        evals += len(new)
        pop, key = np.concatenate([parents, new]), np.concatenate([pkey, nkey])
        best = float(key.max())
        stale = stale + 1 if history and best <= history[-1] else 0
        history.append(best)
        if patience is not None and stale >= patience:
            break
    r = _result(problem, budget, pop[int(np.argmax(key))], reference_accuracy, t0, evals, history)
    ev = problem.evaluate(pop)
    r.front = sorted(zip(np.asarray(ev["latency_ms"], dtype=float).tolist(),
                         np.asarray(ev["accuracy"], dtype=float).tolist()))
    return r


@lru_cache(maxsize=32)
def _moves(n_choices: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(knob, offset) of every one-knob move, knob by knob; the offset skips the current choice."""
    knob = np.repeat(np.arange(len(n_choices)), np.maximum(np.asarray(n_choices, dtype=np.int64) - 1, 0))
    offset = np.concatenate([np.arange(n - 1) for n in n_choices]) if len(n_choices) else np.zeros(0, int)
    return knob, offset.astype(np.int64)


def moves(code: np.ndarray, n_choices) -> tuple[np.ndarray, np.ndarray]:
    """``(knob, new choice)`` of every one-knob move from ``code``, in :func:`neighbours`' order."""
    code = np.asarray(code, dtype=np.int64)
    knob, offset = _moves(n_choices if isinstance(n_choices, tuple) else tuple(map(int, n_choices)))
    return knob, offset + (offset >= code[knob])


def _neighbours(code: np.ndarray, n_choices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(:func:`neighbours`, and the knob and new choice of each)."""
    code = np.asarray(code, dtype=np.int64)
    knob, new = moves(code, n_choices)
    out = np.repeat(code[None], len(knob), axis=0)
    out[np.arange(len(knob)), knob] = new
    return out, knob, new


def neighbours(code: np.ndarray, n_choices) -> np.ndarray:
    """Every design one knob away from ``code`` (knob by knob, choices ascending; vectorised)."""
    return _neighbours(code, n_choices)[0]


def neighbour_ranks(problem: Problem, budget: Budget, code, reference_accuracy):
    """``(neighbours, key, violation, evaluation)`` of every design one knob away from ``code``.
    Problems with ``evaluate_neighbours(code, nbs, knob, new)`` score them incrementally (only the
    cost terms a move touches), the rest through ``evaluate``."""
    code = np.asarray(code, dtype=np.int64)
    nbs, knob, new = _neighbours(code, problem.n_choices)
    fast = getattr(problem, "evaluate_neighbours", None)
    ev = None if fast is None else fast(code, nbs, knob, new)
    key, viol, ev = rank_key(problem, budget, nbs, reference_accuracy, ev)
    return nbs, key, viol, ev


def repair(problem: Problem, budget: Budget, code, *, reference_accuracy=None, polish: int = 0,
           max_steps: int = 10_000) -> SearchResult:
    """Make ``code`` meet the budget under the predictors, greedily: each step takes the one-knob change
    that removes the most violation per unit of objective lost (narrowing / quantizing where it costs
    least accuracy per ms). Reports ``feasible=False`` with the closest design when nothing meets the
    budget. ``polish`` > 0 then climbs: up to that many one-knob moves that improve the objective
    while staying feasible."""
    t0 = time.perf_counter()
    code = np.asarray(code, dtype=np.int64).copy()
    evals = 0
    key, viol, ev = rank_key(problem, budget, code[None], reference_accuracy)
    v, obj = float(viol[0]), float(budget.objective(ev["latency_ms"], ev["energy_mj"], ev["accuracy"])[0])
    steps = 0
    while v > 0 and steps < max_steps:
        nbs, _, nviol, nev = neighbour_ranks(problem, budget, code, reference_accuracy)
        nobj = budget.objective(nev["latency_ms"], nev["energy_mj"], nev["accuracy"])
        evals += len(nbs)
        gain = v - nviol
        ok = gain > 1e-12
        if not ok.any():
            break
        cost = np.maximum(obj - nobj, 0.0) + 1e-9
        score = np.where(ok, gain / cost, -np.inf)
        i = int(np.argmax(score))
        code, v, obj = nbs[i], float(nviol[i]), float(nobj[i])
        if v <= 0:     # feasible by the neighbour scores: confirm by a full evaluation
            v, obj = _exact(problem, budget, code, reference_accuracy)
        steps += 1
    for _ in range(polish if v <= 0 else 0):
        nbs, nkey, nviol, _ = neighbour_ranks(problem, budget, code, reference_accuracy)
        evals += len(nbs)
        i = int(np.argmax(nkey))
        if nviol[i] > 0 or nkey[i] <= obj + 1e-12:
            break
        new_v, new_obj = _exact(problem, budget, nbs[i], reference_accuracy)
        if new_v > 0:            # feasible only by the incremental sum's rounding: stop here
            break
        code, obj = nbs[i], new_obj
    return _result(problem, budget, code, reference_accuracy, t0, evals)


def _exact(problem, budget, code, reference_accuracy) -> tuple[float, float]:
    """(violation, objective) of one design by a full evaluation: incremental neighbour scores
    choose the move, this decides feasibility, so a repaired design meets the budget exactly."""
    _, viol, ev = rank_key(problem, budget, code[None], reference_accuracy)
    return float(viol[0]), float(budget.objective(ev["latency_ms"], ev["energy_mj"], ev["accuracy"])[0])


def best_repaired(problem: Problem, budget: Budget, codes, *, reference_accuracy=None, polish: int = 0) -> SearchResult:
    """:func:`repair` (+ polish) each of ``codes`` and keep the best: feasible first, then by objective
    (infeasible ones: the fastest). Used to finish the amortized optimizers' several decodes."""
    best, best_key = None, None
    for code in codes:
        r = repair(problem, budget, code, reference_accuracy=reference_accuracy, polish=polish)
        obj = float(np.asarray(budget.objective(r.latency_ms, r.energy_mj, r.accuracy)).ravel()[0])
        key = (r.feasible, obj if r.feasible else -r.latency_ms)
        if best_key is None or key > best_key:
            best, best_key = r, key
    return best
