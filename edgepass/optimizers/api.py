"""``edgepass.optimizers``: a design for a device and a budget, by search or by the amortized optimizer."""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .. import dataset
from ..devices import get_device
from ..errors import DeviceError, EdgepassError, InfeasibleBudgetError, InputError
from ..predictors.energy import EnergyTable
from ..predictors.latency import LatencyTable, artifact_sha
from ..space import DesignSpace, design_space
from ..util import cache_dir
from . import model_space
from .amortized import AmortizedOptimizer
from .budget import Budget
from .candidates import candidate_codes
from .methods import METHODS
from .model_space import TableCosts
from .population import budget_features, reference_designs, reference_vector, synthetic_devices, training_pairs
from .problem import CallableProblem
from .search import evolutionary, exhaustive, repair, result_of
from .sensitivity import weight_energy_fn
from .zoo_space import ZooSpace



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
    front: list | None = None      # (latency_ms, accuracy) of candidate designs the optimizer saw, or None
    #: with ``candidates=k``: up to k distinct feasible designs as (design, latency_ms, accuracy), the
    #: chosen one first (see :mod:`edgepass.optimizers.candidates`)
    candidates: list | None = None


# --------------------------------------------------------------------------------------------
# NAS-Bench-201 (zoo space)
# --------------------------------------------------------------------------------------------
def nb201_full_tables(zsp) -> dict:
    """``{device: latency of all 15,625 cells}`` for every device of the training set that measured them all."""
    ts = dataset.load().select(space="nb201", metric="latency_ms")
    counts = np.bincount(ts.device_code, minlength=len(ts.devices))
    tables = {}
    for code in np.nonzero(counts >= len(zsp.accuracy))[0]:
        lat = zsp.latency_table(ts.devices[code])
        if not np.isnan(lat).any() and (lat > 0).all():
            tables[ts.devices[code]] = lat
    return tables


def _nb201_optimizer(zsp, *, cache=None, progress=True) -> AmortizedOptimizer:
    """The amortized optimizer for NB201, trained on every fully measured device (cached)."""
    key = hashlib.sha256(b"nb201-amortized-v1").hexdigest()[:16]
    path = cache_dir(cache) / f"amortized-nb201-{key}.npz"
    if path.exists():
        try:
            return AmortizedOptimizer.load(path)
        except (OSError, ValueError):
            pass                                   # unreadable or not ours: train again, overwrite it
    print("[edgepass] training the amortized optimizer for nb201 (once; cached)", file=sys.stderr)
    tables = nb201_full_tables(zsp)
    refs = reference_designs(len(zsp.accuracy))
    pairs = training_pairs(zsp.problem, {**tables, **synthetic_devices(tables, 200)}, refs)
    opt = AmortizedOptimizer(zsp.n_choices, device_dim=len(refs))
    opt.fit(pairs, progress=progress)
    opt.save(path)
    return opt


def _optimize_zoo(zsp, device, budget: Budget, method: str, seed: int, cache) -> OptimizeResult:
    if budget.energy_mj is not None:   # no per-op energy for table-priced spaces: refuse rather than ignore
        raise InputError("energy budgets need a model's design space (priced per op); zoo spaces are priced by "
                         "measured latency tables only: give latency_ms")
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
        r = opt.optimize(problem, budget, vec, budget_features(budget.latency_ms or float(np.median(lat)), centre))
    return OptimizeResult(zsp.spec(r.code), r.latency_ms, r.energy_mj, r.accuracy, r.feasible,
                          time.perf_counter() - t0, method, r.code, notes)


# --------------------------------------------------------------------------------------------
# a model's design space
# --------------------------------------------------------------------------------------------
def model_optimizer(space, accuracy_fn, *, cache=None, seed: int = 0, options: dict | None = None,
                    progress: bool = True):
    """The trained amortized optimizer of ``space`` for ``accuracy_fn``: loaded from the cache, or
    trained once (over the database devices + synthetic ones) and saved there."""
    import json

    options = dict(options or {})
    allowed = set(model_space.TRAIN_OPTIONS)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InputError(f"unknown amortized optimizer option(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(allowed))}")
    parts = [space.hash(), model_space.accuracy_key(accuracy_fn, space), artifact_sha(), model_space.FORMAT,
             json.dumps({"seed": seed, **options}, sort_keys=True)]
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    path = cache_dir(cache) / f"amortized-{space.hash()}-{key}.npz"
    if path.exists():
        try:
            opt = model_space.ModelSpaceOptimizer.load(path)
            opt.info["key"] = key
            return opt
        except (OSError, ValueError, KeyError):
            pass                                   # unreadable or stale: train again
    print(f"[edgepass] training the amortized optimizer for this design space (once; cached in {path.parent})",
          file=sys.stderr)
    opt = model_space.train(space, accuracy_fn, seed=seed, progress=progress, **options)
    opt.info["key"] = key
    try:
        opt.save(path)
    except (OSError, EdgepassError):
        pass                                       # an unwritable cache costs time, never the compile
    return opt


def model_problem(space, device, *, accuracy_fn=None, energy=False, latency_table=None):
    """Predicted accuracy / latency (and with ``energy``, energy) of a model's designs on ``device``
    as a Problem. Energy (:class:`~edgepass.predictors.energy.EnergyTable`) costs a second pass over
    the knob combinations, so it is built only when asked for (an energy budget). ``latency_table``:
    the device's :class:`LatencyTable` of ``space`` when the caller has built it already."""
    table = latency_table if latency_table is not None else LatencyTable(space, device)
    notes = [f"latency: edgepass latency predictor for {table.device.id}"]
    if accuracy_fn is None:
        accuracy_fn = weight_energy_fn(space)
        notes.append("accuracy: " + accuracy_fn.description)
    n_choices = [len(c) for _, _, c in space.knobs()]
    latency_fn = table.predict
    if table.state["a"] == 0.0 and table.state["b"] == 1.0 and table.tables:
        latency_fn = TableCosts.of(table).predict     # same sums, one gather per batch (no few-shot correction)
    energy_fn = None
    if energy:
        et = EnergyTable(table)
        energy_fn = et.predict
        notes.append(f"energy: {'calibrated on measurements' if et.calibrated else 'modelled, not measured'} "
                     f"({table.device.kind} class; static {et.static_w:.3g} W x predicted latency)")
    return CallableProblem(n_choices, accuracy_fn, latency_fn, energy_fn=energy_fn, latency_table=table), notes


def optimize(model_or_space, device, *, latency_ms=None, energy_mj=None, max_accuracy_drop=None,
             method: str = "amortized", example_inputs=None, accuracy_fn=None, seed: int = 0, cache=None,
             strict: bool = False, train_options: dict | None = None, candidates: int = 0,
             budget: Budget | None = None, latency_table=None) -> OptimizeResult:
    """A design of ``model_or_space`` for ``device`` within the budget.

    ``model_or_space``: a zoo space (``edgepass.zoo.space("nb201")``), or a model / ``DesignSpace``
    (then the latency predictor and ``accuracy_fn``, codes -> predicted accuracy, score designs).
    ``method``: ``"amortized"`` (one forward pass + repair), ``"search"`` (evolutionary, population
    100 x 500 iterations) or ``"exhaustive"`` (small spaces). With ``strict=True`` an infeasible
    budget raises :class:`InfeasibleBudgetError` (the closest design attached); otherwise the result
    says ``feasible=False``. For a model's space the amortized optimizer is trained on first use
    (progress on stderr) and cached under ``cache_dir(cache)``, keyed by the space, the accuracy
    function, the latency predictor and ``seed``/``train_options`` (keyword arguments of
    :func:`edgepass.optimizers.model_space.train`, e.g. ``{"synthetic": 50, "epochs": 20}``).
    ``result.front``: (latency_ms, accuracy) of candidate designs seen (None for exhaustive/zoo).
    ``candidates`` > 1 (model spaces, feasible budgets): ``result.candidates`` also lists other good
    designs under the budget (repaired uniform starts), for a final choice by evaluation.
    ``budget``: a :class:`Budget` instead of ``latency_ms``/``energy_mj``/``max_accuracy_drop``;
    ``latency_table``: the device's latency table of the space, when the caller has it (a compile
    builds one per device and shares it).
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if budget is None:
        budget = Budget(latency_ms=latency_ms, energy_mj=energy_mj, max_accuracy_drop=max_accuracy_drop)
    elif any(v is not None for v in (latency_ms, energy_mj, max_accuracy_drop)):
        raise InputError("give budget= or latency_ms/energy_mj/max_accuracy_drop, not both")

    if isinstance(model_or_space, ZooSpace):
        result = _optimize_zoo(model_or_space, device, budget, method, seed, cache)
    else:
        space = model_or_space if isinstance(model_or_space, DesignSpace) else design_space(model_or_space,
                                                                                            example_inputs)
        problem, notes = model_problem(space, device, accuracy_fn=accuracy_fn, energy=budget.energy_mj is not None,
                                       latency_table=latency_table)
        ident = space.encode(space.identity())
        ref = float(problem.evaluate(ident[None])["accuracy"][0])
        t0 = time.perf_counter()
        front = None
        used = method
        if method == "amortized" and budget.latency_ms is None:
            notes.append("the amortized optimizer takes a latency budget: searched instead")
            used = "search"
        if not problem.n_choices:       # no weights, or only frozen / unknown ops: keep the model as it is
            notes.append("nothing to optimize: the model has no layer whose width, kernel or precision can change; "
                         "kept the original")
            r = result_of(problem, budget, ident, reference_accuracy=ref)
        elif used == "exhaustive":
            r = exhaustive(problem, budget, reference_accuracy=ref)
        elif used == "amortized":
            opt = model_optimizer(space, problem.accuracy_fn, cache=cache, seed=seed, options=train_options)
            r = opt.optimize(problem, budget, problem.latency_table, reference_accuracy=ref)
            front = opt.front(problem, problem.latency_table)
            notes.append(f"amortized optimizer {opt.info.get('key', '')} (trained on {opt.info.get('real_devices')} "
                         f"database + {opt.info.get('synthetic_devices')} synthetic devices)")
        else:
            r = evolutionary(problem, budget, seed=seed, reference_accuracy=ref, init=ident[None])
            front = r.front
            r = repair(problem, budget, r.code, reference_accuracy=ref)
        if front is not None:
            front = front + [(float(r.latency_ms), float(r.accuracy))]
        alts = None
        if candidates > 1 and r.feasible and problem.n_choices:
            codes = candidate_codes(problem, budget, space, r.code, k=candidates, reference_accuracy=ref)
            ev = problem.evaluate(np.stack(codes))
            alts = [(space.decode(c), float(lat), float(acc))
                    for c, lat, acc in zip(codes, ev["latency_ms"], ev["accuracy"])]
        result = OptimizeResult(space.decode(r.code), r.latency_ms, r.energy_mj, r.accuracy, r.feasible,
                                time.perf_counter() - t0, used, r.code, notes, front, alts)
    if strict and not result.feasible:
        raise InfeasibleBudgetError(f"no design meets the budget; closest: {result.latency_ms:.3g} ms, "
                                    f"accuracy {result.accuracy:.3g}", closest=result)
    return result
