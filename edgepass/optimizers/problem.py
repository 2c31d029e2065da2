"""Optimisation problems as the optimizers see them: knobs with a number of choices each, and a
vectorised ``evaluate(codes)`` that returns predicted accuracy, latency and energy for a batch of
designs (``codes``: int array ``[n_designs, n_knobs]``, one choice index per knob).

Two concrete kinds:

* :class:`LookupProblem` — an enumerable space whose every design has a tabulated value
  (NAS-Bench-201: 15,625 cells with measured or predicted latency per device and a published
  accuracy);
* :class:`AdditiveProblem` — costs that are sums of small tables over one or two knobs (a layer's
  latency depends on its input and output widths, its kernel and its precision; accuracy as a sum of
  per-knob sensitivities): what the predictors produce for a model's design space. Its expectation
  under independent per-knob distributions is exact and differentiable, which the amortized
  optimizer trains through.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def move_scorer(fn):
    """``fn``'s incremental scorer of one-knob moves, ``moves(code, knob, new) -> values`` of ``code``
    with ``code[knob[m]] = new[m]`` for every m, or None: a function's own ``moves`` attribute, or
    ``predict_moves`` of the object whose bound method ``fn`` is (TableCosts, AccuracyPredictor)."""
    if fn is None:
        return None
    scorer = getattr(fn, "moves", None)
    return scorer if scorer is not None else getattr(getattr(fn, "__self__", None), "predict_moves", None)


def score_neighbours(fn, code, nbs, knob, new) -> np.ndarray:
    """``fn(nbs)`` for the neighbours ``nbs`` of ``code`` (one move each), incrementally where ``fn``
    has a :func:`move_scorer`."""
    scorer = move_scorer(fn)
    return np.asarray(fn(nbs) if scorer is None else scorer(code, knob, new), dtype=np.float64)


class Problem:
    n_choices: list

    @property
    def n_knobs(self) -> int:
        return len(self.n_choices)

    def evaluate(self, codes: np.ndarray) -> dict:
        raise NotImplementedError

    def size_log10(self) -> float:
        return float(np.sum(np.log10(self.n_choices)))


@dataclass
class LookupProblem(Problem):
    """Every design tabulated: ``index = sum(code[i] * strides[i])`` into the value arrays."""

    n_choices: list
    accuracy: np.ndarray
    latency_ms: np.ndarray
    energy_mj: np.ndarray | None = None

    def __post_init__(self):
        self.n_choices = [int(n) for n in self.n_choices]
        self.strides = np.cumprod([1] + self.n_choices[:0:-1])[::-1].astype(np.int64)
        n = int(np.prod(self.n_choices))
        if len(self.accuracy) != n or len(self.latency_ms) != n:
            raise ValueError("value tables must have one entry per design")

    def index(self, codes) -> np.ndarray:
        return np.asarray(codes, dtype=np.int64) @ self.strides

    def codes(self, index) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        return (index[..., None] // self.strides) % np.asarray(self.n_choices)

    def all_codes(self) -> np.ndarray:
        return self.codes(np.arange(int(np.prod(self.n_choices))))

    def evaluate(self, codes) -> dict:
        i = self.index(codes)
        return {"accuracy": self.accuracy[i], "latency_ms": self.latency_ms[i],
                "energy_mj": None if self.energy_mj is None else self.energy_mj[i]}


@dataclass
class Term:
    """A cost table over one or two knobs: ``table[c_i]`` or ``table[c_i, c_j]``."""

    knobs: tuple
    table: np.ndarray


@dataclass
class AdditiveProblem(Problem):
    n_choices: list
    latency_terms: list = field(default_factory=list)     # list[Term]
    accuracy_terms: list = field(default_factory=list)    # list[Term]; accuracy = base + sum
    energy_terms: list = field(default_factory=list)
    latency_base: float = 0.0
    accuracy_base: float = 0.0
    energy_base: float = 0.0

    @staticmethod
    def _sum(codes, terms, base):
        codes = np.asarray(codes, dtype=np.int64)
        out = np.full(codes.shape[0], base, dtype=np.float64)
        for t in terms:
            if len(t.knobs) == 1:
                out += t.table[codes[:, t.knobs[0]]]
            else:
                out += t.table[codes[:, t.knobs[0]], codes[:, t.knobs[1]]]
        return out

    def evaluate(self, codes) -> dict:
        codes = np.atleast_2d(codes)
        return {"accuracy": self._sum(codes, self.accuracy_terms, self.accuracy_base),
                "latency_ms": self._sum(codes, self.latency_terms, self.latency_base),
                "energy_mj": self._sum(codes, self.energy_terms, self.energy_base) if self.energy_terms else None}

    def expected(self, probs, terms, base):
        """Exact expectation under independent per-knob distributions (torch tensors ``[batch, n_i]``)."""
        import torch

        out = torch.full((probs[0].shape[0],), float(base), dtype=probs[0].dtype)
        for t in terms:
            tab = torch.as_tensor(t.table, dtype=probs[0].dtype)
            if len(t.knobs) == 1:
                out = out + probs[t.knobs[0]] @ tab
            else:
                out = out + torch.einsum("bi,ij,bj->b", probs[t.knobs[0]], tab, probs[t.knobs[1]])
        return out


@dataclass
class CallableProblem(Problem):
    """A problem whose costs come from vectorised callables (predictors of a model's design space)."""

    n_choices: list
    accuracy_fn: object
    latency_fn: object
    energy_fn: object = None
    latency_table: object = None   # the LatencyTable behind latency_fn (model spaces)

    def evaluate(self, codes) -> dict:
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        return {"accuracy": np.asarray(self.accuracy_fn(codes), dtype=np.float64),
                "latency_ms": np.asarray(self.latency_fn(codes), dtype=np.float64),
                "energy_mj": None if self.energy_fn is None else np.asarray(self.energy_fn(codes), dtype=np.float64)}

    def evaluate_neighbours(self, code, nbs, knob, new) -> dict:
        """:meth:`evaluate` of ``nbs`` (``code`` with one knob moved each; the repair's hot loop),
        incrementally where a cost function can (:func:`move_scorer`)."""
        energy = None if self.energy_fn is None else score_neighbours(self.energy_fn, code, nbs, knob, new)
        return {"accuracy": score_neighbours(self.accuracy_fn, code, nbs, knob, new),
                "latency_ms": score_neighbours(self.latency_fn, code, nbs, knob, new), "energy_mj": energy}
