"""``edgepass.optimizers``: a design for a device and a budget, by search or by the amortized optimizer."""
from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DeviceError, InfeasibleBudgetError, InputError
from .amortized import AmortizedOptimizer
from .budget import Budget
from .problem import Problem
from .search import evolutionary, exhaustive, repair

METHODS = ("amortized", "search", "exhaustive")


@dataclass
class OptimizeResult:
    """The chosen design and its predicted figures."""

    design: object                 # a Design (model spaces) or a zoo spec string (zoo spaces)
    latency_ms: float
    energy_mj: float | None
    accuracy: float
    feasible: bool
    seconds: float
    method: str
    code: np.ndarray | None = None
    notes: list = field(default_factory=list)


@dataclass
class CallableProblem(Problem):
    """A problem whose costs come from vectorised callables (predictors of a model's design space)."""

    n_choices: list
    accuracy_fn: object
    latency_fn: object
    energy_fn: object = None

    def evaluate(self, codes) -> dict:
        codes = np.atleast_2d(np.asarray(codes, dtype=np.int64))
        return {"accuracy": np.asarray(self.accuracy_fn(codes), dtype=np.float64),
                "latency_ms": np.asarray(self.latency_fn(codes), dtype=np.float64),
                "energy_mj": None if self.energy_fn is None else np.asarray(self.energy_fn(codes), dtype=np.float64)}


def cache_dir(path=None) -> Path:
    """Where trained optimizers are kept: ``path``, ``$EDGEPASS_CACHE`` or the user's cache directory."""
    base = Path(path or os.environ.get("EDGEPASS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() /
                                                                                 ".cache")) / "edgepass")
    base.mkdir(parents=True, exist_ok=True)
    return base


# --------------------------------------------------------------------------------------------
# NAS-Bench-201 (zoo space)
# --------------------------------------------------------------------------------------------
def _nb201_optimizer(zsp, *, cache=None, progress=True) -> AmortizedOptimizer:
    """The amortized optimizer for NB201, trained on every fully measured device (cached)."""
    from .population import reference_designs, synthetic_devices, training_pairs

    key = hashlib.sha256(b"nb201-amortized-v1").hexdigest()[:16]
    path = cache_dir(cache) / f"amortized-nb201-{key}.npz"
    if path.exists():
        return AmortizedOptimizer.load(path)
    from .. import dataset

    print("[edgepass] training the amortized optimizer for nb201 (once; cached)", file=sys.stderr)
    ts = dataset.load().select(space="nb201", metric="latency_ms")
    counts = np.bincount(ts.device_code, minlength=len(ts.devices))
    tables = {}
    for code in np.nonzero(counts >= len(zsp.accuracy))[0]:
        lat = zsp.latency_table(ts.devices[code])
        if not np.isnan(lat).any() and (lat > 0).all():
            tables[ts.devices[code]] = lat
    refs = reference_designs(len(zsp.accuracy))
    pairs = training_pairs(zsp.problem, {**tables, **synthetic_devices(tables, 200)}, refs)
    opt = AmortizedOptimizer(zsp.n_choices, device_dim=len(refs))
    opt.fit(pairs, progress=progress)
    opt.save(path)
    return opt


def _optimize_zoo(zsp, device, budget: Budget, method: str, seed: int, cache) -> OptimizeResult:
    from ..devices import get_device
    from .population import budget_feature, reference_designs, reference_vector

    dev = get_device(device)
    lat = zsp.latency_table(dev.id)
    if np.isnan(lat).any():
        raise DeviceError(f"device {dev.id} has no NAS-Bench-201 latency table in the training set; "
                          f"pick a device from `edgepass devices` that measured nb201")
    problem = zsp.problem(lat)
    t0 = time.perf_counter()
    notes = [f"latency: measured table of {dev.id} ({len(lat)} cells)"]
    if method == "exhaustive":
        r = exhaustive(problem, budget)
    elif method == "search":
        r = evolutionary(problem, budget, seed=seed)
    else:
        opt = _nb201_optimizer(zsp, cache=cache)
        refs = reference_designs(len(zsp.accuracy))
        vec, centre = reference_vector(lat, refs)
        r = opt.optimize(problem, budget, vec, budget_feature(budget.latency_ms or float(np.median(lat)), centre))
    return OptimizeResult(zsp.spec(r.code), r.latency_ms, r.energy_mj, r.accuracy, r.feasible,
                          time.perf_counter() - t0, method, r.code, notes)


# --------------------------------------------------------------------------------------------
# a model's design space
# --------------------------------------------------------------------------------------------
def model_problem(space, device, *, accuracy_fn=None, energy=True):
    """Predicted accuracy / latency / energy of a model's designs on ``device`` as a Problem."""
    from ..predictors.latency import LatencyTable

    table = LatencyTable(space, device)
    notes = [f"latency: edgepass latency predictor for {table.device.id}"]
    if accuracy_fn is None:
        try:
            from ..predictors.accuracy import data_free_accuracy_fn
        except ImportError:
            raise InputError("no accuracy predictor available: pass accuracy_fn (codes -> accuracy)") from None
        accuracy_fn = data_free_accuracy_fn(space)
        notes.append("accuracy: data-free estimate (no calibration data)")
    n_choices = [len(c) for _, _, c in space.knobs()]
    return CallableProblem(n_choices, accuracy_fn, table.predict), notes


def optimize(model_or_space, device, *, latency_ms=None, energy_mj=None, max_accuracy_drop=None,
             method: str = "amortized", example_inputs=None, accuracy_fn=None, seed: int = 0, cache=None,
             strict: bool = False) -> OptimizeResult:
    """A design of ``model_or_space`` for ``device`` within the budget.

    ``model_or_space``: a zoo space (``edgepass.zoo.space("nb201")``), or a model / ``DesignSpace``
    (then the latency predictor and ``accuracy_fn``, codes -> predicted accuracy, score designs).
    ``method``: ``"amortized"`` (one forward pass + repair), ``"search"`` (evolutionary, population
    100 x 500 iterations) or ``"exhaustive"`` (small spaces). With ``strict=True`` an infeasible
    budget raises :class:`InfeasibleBudgetError` (the closest design attached); otherwise the result
    says ``feasible=False``.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    budget = Budget(latency_ms=latency_ms, energy_mj=energy_mj, max_accuracy_drop=max_accuracy_drop)
    from ..zoo.spaces import ZooSpace

    if isinstance(model_or_space, ZooSpace):
        result = _optimize_zoo(model_or_space, device, budget, method, seed, cache)
    else:
        from ..space import DesignSpace, design_space

        space = model_or_space if isinstance(model_or_space, DesignSpace) else design_space(model_or_space,
                                                                                            example_inputs)
        problem, notes = model_problem(space, device, accuracy_fn=accuracy_fn)
        ident = space.encode(space.identity())
        ref = float(problem.evaluate(ident[None])["accuracy"][0])
        t0 = time.perf_counter()
        if method == "exhaustive":
            r = exhaustive(problem, budget, reference_accuracy=ref)
        else:
            if method == "amortized":
                notes.append("no amortized optimizer is trained for this space yet: searched instead")
            r = evolutionary(problem, budget, seed=seed, reference_accuracy=ref, init=ident[None])
            r = repair(problem, budget, r.code, reference_accuracy=ref)
        result = OptimizeResult(space.decode(r.code), r.latency_ms, r.energy_mj, r.accuracy, r.feasible,
                                time.perf_counter() - t0, "search" if method == "amortized" else method,
                                r.code, notes)
    if strict and not result.feasible:
        raise InfeasibleBudgetError(f"no design meets the budget; closest: {result.latency_ms:.3g} ms, "
                                    f"accuracy {result.accuracy:.3g}", closest=result)
    return result
