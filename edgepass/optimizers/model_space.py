"""The amortized optimizer for a *model's* design space (width x kernel x precision knobs).

Costs
    A device's predicted latency over the space is the :class:`~edgepass.predictors.latency.LatencyTable`
    of the shipped latency predictor: a constant plus sums of small tables over one to three knobs.
    :class:`TableCosts` keeps just those arrays, so a device is cheap to copy, score and mix.

Device population
    Every database device the latency predictor was trained on (its table), plus synthetic devices:
    geometric interpolations of two real devices' tables entry by entry (each op's cost mixes, so
    the rank structure of real hardware is kept), scaled by a random speed factor and jittered per
    op group (a device whose relative op costs differ a little from any real one).

Device vector
    The centred log-latency of fixed *reference designs* of the space (identity, uniform width
    ratios in each precision, a few seeded random designs) under the device's costs: what a user
    can measure on a new device by timing those designs, and directly about this space (the
    predictor's internal device embedding would tie the optimizer to one predictor version and
    misses few-shot corrections). The budget enters as its log ratio to the device's identity and
    cheapest reference latency, i.e. where it sits in the device's feasible range.

Decoding
    The network is asked for the budget and for +-10 % of it in one batch; each decoded design is
    repaired (the budget is then guaranteed under the predictor, or reported infeasible with the
    closest design) and polished by a few one-knob climbs, and the best one is kept. Measured: with
    one decode the worst case on held-out devices was 1.8 % below evolutionary search (resnet18),
    with three 0.7 %.

Labels
    For each (device, budget) the label is the greedy repair from the identity design (narrow or
    quantize where it costs least accuracy per ms, then hill-climbing polish), warm-started along
    each device's budgets from loose to tight. Chosen by measurement (``benchmarks/optimizers.py``,
    column ``mean_greedy_gap_%``): on these spaces it matches or beats evolutionary search
    (population 100, 500 iterations) at a few percent of its time, which is what makes a large
    training population affordable. Training through the differentiable predictors
    (Gumbel-softmax on the additive tables) was not tried: the accuracy function is a black box
    here (any ``codes -> accuracy`` callable).
"""
from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass

import numpy as np

from ..predictors.latency import LatencyTable, load_model
from .amortized import AmortizedOptimizer, TrainingPair
from .budget import Budget
from .problem import CallableProblem
from .search import best_repaired, neighbour_ranks, rank_key, repair

FORMAT = "edgepass.amortized-model/1"
#: keyword options of :func:`train` a caller may set (``optimize(train_options=...)``)
TRAIN_OPTIONS = ("devices", "synthetic", "budgets_per_device", "epochs", "hidden", "polish")


# --------------------------------------------------------------------------------------------
# costs
# --------------------------------------------------------------------------------------------
@dataclass
class TableCosts:
    """Additive latency tables of one device over a design space (a LatencyTable's arrays)."""

    knob_sets: list          # per table: knob indices
    strides: list            # per table: strides into the flat table
    tables: list             # per table: flat latency (ms)
    constant: float
    name: str = ""

    @classmethod
    def of(cls, latency_table, name: str = "") -> "TableCosts":
        """From a :class:`LatencyTable` (its raw sums: devices of the database need no correction)."""
        ks = [t[0] for t in latency_table.tables]
        st = [t[1] for t in latency_table.tables]
        tb = [np.asarray(t[2], dtype=np.float64).copy() for t in latency_table.tables]
        return cls(ks, st, tb, float(latency_table.constant), name or latency_table.device.id)

    def _gather_plan(self):
        """(knob index and stride per table slot, offset per table, all tables flat): gathers and
        integer sums score a batch instead of one fancy-index per table (the optimizers' hot loop;
        no BLAS, which contends for the cores)."""
        if getattr(self, "_plan", None) is None:
            width = max(len(k) for k in self.knob_sets)
            K = np.zeros((len(self.tables), width), dtype=np.int64)
            ST = np.zeros((len(self.tables), width), dtype=np.int64)      # stride 0: an unused slot
            for j, (ks, st) in enumerate(zip(self.knob_sets, self.strides)):
                K[j, :len(ks)], ST[j, :len(ks)] = ks, st
            sizes = [len(t) for t in self.tables]
            offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self._plan = (K, ST, offsets, np.concatenate(self.tables))
        return self._plan

    def predict(self, codes) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim == 1:
            codes = codes[None]
        if not self.tables:
            return np.full(len(codes), self.constant, dtype=np.float64)
        K, ST, offsets, flat = self._gather_plan()
        idx = (codes[:, K] * ST).sum(2) + offsets
        return self.constant + flat[idx].sum(1)

    def _move_plan(self, n: int):
        """Per knob (of ``n``), the tables that hold it and its stride in each (padded with a table
        index one past the last, whose entries read 0): what one-knob moves need to update a sum."""
        if getattr(self, "_moves", None) is None or len(self._moves[0]) != n:
            holds = [[] for _ in range(n)]
            for j, (ks, st) in enumerate(zip(self.knob_sets, self.strides)):
                for k, s in zip(ks, st):
                    holds[k].append((j, s))
            width = max((len(h) for h in holds), default=0) or 1
            TJ = np.full((n, width), len(self.tables), dtype=np.int64)
            TS = np.zeros((n, width), dtype=np.int64)
            for k, h in enumerate(holds):
                for i, (j, s) in enumerate(h):
                    TJ[k, i], TS[k, i] = j, s
            self._moves = (TJ, TS, np.append(self._gather_plan()[3], 0.0))
        return self._moves

    def predict_moves(self, code, knob, new) -> np.ndarray:
        """Latency of ``code`` with ``code[knob[m]] = new[m]``, for every move m: the sum of ``code``
        plus the change in the tables each move touches (the repair's hot loop: a few tables per
        move instead of every table per neighbour)."""
        code = np.asarray(code, dtype=np.int64)
        if not self.tables:
            return np.full(len(knob), self.constant, dtype=np.float64)
        K, ST, offsets, flat = self._gather_plan()
        TJ, TS, flat0 = self._move_plan(len(code))
        cur = np.append((code[K] * ST).sum(1) + offsets, len(flat))   # + the padding table's entry
        base = self.constant + flat[cur[:-1]].sum()
        at = cur[TJ[knob]]
        delta = flat0[at + (np.asarray(new) - code[knob])[:, None] * TS[knob]] - flat0[at]
        return base + delta.sum(1)

    def healthy(self) -> bool:
        return np.isfinite(self.constant) and all(np.isfinite(t).all() and (t >= 0).all() for t in self.tables)

    def mixed(self, other: "TableCosts", w: float, scale: float, jitter: np.ndarray | None, name: str) -> "TableCosts":
        """exp(w log self + (1-w) log other) * scale, per table entry (jitter: one log factor per table)."""
        tabs = []
        for i, (a, b) in enumerate(zip(self.tables, other.tables)):
            t = np.exp(w * np.log(np.maximum(a, 1e-9)) + (1 - w) * np.log(np.maximum(b, 1e-9))) * scale
            tabs.append(t * (np.exp(jitter[i]) if jitter is not None else 1.0))
        la, lb = np.log(max(self.constant, 1e-9)), np.log(max(other.constant, 1e-9))
        const = float(np.exp(w * la + (1 - w) * lb) * scale)
        return TableCosts(self.knob_sets, self.strides, tabs, const, name)


def device_costs(space, devices=None, *, progress: bool = False) -> dict:
    """``{device id: TableCosts}`` for ``devices`` (default: every device the latency predictor was
    trained on), skipping devices whose predicted tables are not finite."""
    model = load_model()
    ids = list(model.devices) if devices is None else list(devices)
    it = ids
    if progress:
        from tqdm import tqdm

        it = tqdm(ids, desc="latency tables", unit="device", leave=False, file=sys.stderr)
    out = {}
    for dev in it:
        tc = TableCosts.of(LatencyTable(space, dev, model=model))
        if tc.healthy():
            out[tc.name] = tc
    return out


def synthetic_costs(real: dict, n: int, *, seed: int = 0, jitter: float = 0.15, prefix: str = "synthetic") -> dict:
    """``n`` devices interpolated between random pairs of ``real`` (see the module doc)."""
    rng = np.random.default_rng(seed)
    names = sorted(real)
    out = {}
    for i in range(n):
        a, b = rng.choice(len(names), size=2, replace=False)
        ca, cb = real[names[a]], real[names[b]]
        jit = rng.normal(0, jitter, len(ca.tables)) if jitter else None
        out[f"{prefix}/{i}"] = ca.mixed(cb, float(rng.uniform()), float(np.exp(rng.normal(0, 0.5))), jit,
                                        f"{prefix}/{i}")
    return out


# --------------------------------------------------------------------------------------------
# device vector and budget feature
# --------------------------------------------------------------------------------------------
def reference_codes(space, n_random: int = 6, seed: int = 0) -> np.ndarray:
    """Fixed reference designs of the space (the same for every device): identity, uniform widths
    x each precision, smallest kernels, a few seeded random designs. Row 0 is the identity."""
    precs = sorted({p for ps in space.precisions.values() for p in ps})
    designs = [space.identity()]
    for ratio in (0.25, 0.5, 0.75, 1.0):
        for p in [None] + precs:
            designs.append(space.uniform(ratio, precision=p))
    designs.append(space.uniform(0.25, precision=None, min_kernels=True))
    rng = np.random.default_rng(seed)
    designs += [space.sample(rng) for _ in range(n_random)]
    codes = np.stack([space.encode(d) for d in designs])
    _, first = np.unique(codes, axis=0, return_index=True)
    return codes[np.sort(first)]


def smallest_code(n_choices) -> np.ndarray:
    """Last choice of every knob: narrowest width, smallest kernel, last precision offered."""
    return np.asarray(n_choices, dtype=np.int64) - 1


def device_vector(costs, refs: np.ndarray) -> tuple[np.ndarray, float]:
    """(centred log-latency of the reference designs, the centre)."""
    v = np.log(np.maximum(costs.predict(refs), 1e-9))
    c = float(v.mean())
    return v - c, c


def budget_features(latency_ms: float, ref_latency: np.ndarray) -> np.ndarray:
    """log(budget / identity latency), log(budget / cheapest reference latency)."""
    return np.array([np.log(latency_ms / ref_latency[0]), np.log(latency_ms / ref_latency.min())])


def feasible_range(costs, refs: np.ndarray) -> tuple[float, float]:
    """(cheapest reference latency, identity latency) of a device."""
    lat = costs.predict(refs)
    return float(lat.min()), float(lat[0])


# --------------------------------------------------------------------------------------------
# problems and labels
# --------------------------------------------------------------------------------------------
def coarse_descent(problem, budget: Budget, code, *, max_moves: int = 8, max_steps: int = 10_000) -> np.ndarray:
    """Towards the budget in big steps: like :func:`repair`, but while far from it each step applies
    the best moves (gain per objective lost) of several different knobs at once -- as many as the
    violation left needs, up to ``max_moves``; near the budget it is one move per step."""
    code = np.asarray(code, dtype=np.int64).copy()
    _, viol, ev = rank_key(problem, budget, code[None], None)
    v, obj = float(viol[0]), float(budget.objective(ev["latency_ms"], ev["energy_mj"], ev["accuracy"])[0])
    knob_of = None
    for _ in range(max_steps):
        if v <= 0:
            break
        nbs, _, nviol, nev = neighbour_ranks(problem, budget, code, None)
        if knob_of is None:
            knob_of = np.repeat(np.arange(len(code)), np.asarray(problem.n_choices) - 1)
        nobj = budget.objective(nev["latency_ms"], nev["energy_mj"], nev["accuracy"])
        gain = v - nviol
        ok = gain > 1e-12
        if not ok.any():
            break
        score = np.where(ok, gain / (np.maximum(obj - nobj, 0.0) + 1e-9), -np.inf)
        order = np.argsort(-score, kind="stable")
        want = int(np.clip(v / (2 * gain[order[0]]), 1, max_moves))    # moves the violation still needs
        taken, new = set(), code.copy()
        for i in order:
            if len(taken) >= want or not ok[i]:
                break
            k = int(knob_of[i])
            if k not in taken:
                taken.add(k)
                new[k] = nbs[i][k]
        _, nv, nev1 = rank_key(problem, budget, new[None], None)
        code, v = new, float(nv[0])
        obj = float(budget.objective(nev1["latency_ms"], nev1["energy_mj"], nev1["accuracy"])[0])
    return code


def greedy_labels(problem, budgets, start, *, polish: int = 30, coarse: bool = True):
    """Best designs for ``budgets`` by repair + polish, warm-started from loose to tight budgets
    (``coarse``: big steps first, see :func:`coarse_descent`; the exact repair + polish finish)."""
    out = {}
    code = np.asarray(start, dtype=np.int64)
    for L in sorted(budgets, reverse=True):
        b = Budget(latency_ms=float(L))
        if coarse:
            code = coarse_descent(problem, b, code)
        r = repair(problem, b, code, polish=polish)
        out[float(L)] = r
        code = r.code
    return [out[float(L)] for L in budgets]


def sample_budgets(rng, lo: float, hi: float, n: int) -> np.ndarray:
    """Budgets log-uniform over a device's feasible range (just above the cheapest design up to the identity).
    A small model's identity can be within 2 % of its cheapest design (fixed per-op overheads dominate):
    the range then shrinks to the identity's latency rather than turning upside down."""
    return np.exp(rng.uniform(np.log(min(lo * 1.02, hi)), np.log(hi), n))


def training_pairs(space, accuracy_fn, costs: dict, refs: np.ndarray, *, budgets_per_device: int = 8,
                   seed: int = 0, polish: int = 30, progress: bool = False) -> list[TrainingPair]:
    rng = np.random.default_rng(seed)
    n_choices = [len(c) for _, _, c in space.knobs()]
    ident = refs[0]
    pairs = []
    names = sorted(costs)
    it = names
    if progress:
        from tqdm import tqdm

        it = tqdm(names, desc="labelling designs", unit="device", leave=False, file=sys.stderr)
    for name in it:
        c = costs[name]
        vec, _ = device_vector(c, refs)
        ref_lat = c.predict(refs)
        budgets = sample_budgets(rng, ref_lat.min(), ref_lat[0], budgets_per_device)
        problem = CallableProblem(n_choices, accuracy_fn, c.predict)
        for L, r in zip(budgets, greedy_labels(problem, budgets, ident, polish=polish)):
            if r.feasible:
                pairs.append(TrainingPair(vec, budget_features(L, ref_lat), r.code))
    return pairs


# --------------------------------------------------------------------------------------------
# the trained optimizer of one space
# --------------------------------------------------------------------------------------------
class ModelSpaceOptimizer:
    """An :class:`AmortizedOptimizer` plus the reference designs its device vector is made of."""

    def __init__(self, net: AmortizedOptimizer, refs: np.ndarray, info: dict | None = None):
        self.net, self.refs, self.info = net, np.asarray(refs, dtype=np.int64), dict(info or {})
        self.timings: dict = {}

    def features(self, costs, latency_ms: float) -> tuple[np.ndarray, np.ndarray]:
        ref_lat = costs.predict(self.refs)                   # the device's reference latencies, once
        v = np.log(np.maximum(ref_lat, 1e-9))
        return v - v.mean(), budget_features(latency_ms, ref_lat)

    def decode_many(self, costs_list, budgets) -> np.ndarray:
        """Raw network designs for a fleet: one batched forward pass."""
        feats = [self.features(c, L) for c, L in zip(costs_list, budgets)]
        return self.net.decode(np.stack([f[0] for f in feats]), np.stack([f[1] for f in feats]))

    def optimize(self, problem, budget: Budget, costs, *, polish: int = 10, reference_accuracy=None,
                 candidates: int = 3):
        """One device: forward pass + repair (+ polish) under ``problem``'s predicted costs.
        ``candidates`` > 1: the network is also asked for slightly tighter/looser budgets (same batch)
        and the best repaired design wins, which guards against one off decode."""
        t0 = time.perf_counter()
        L = budget.latency_ms if budget.latency_ms is not None else feasible_range(costs, self.refs)[1]
        vec, _ = self.features(costs, L)
        ref_lat = costs.predict(self.refs)
        scales = np.exp(np.linspace(-0.1, 0.1, candidates)) if candidates > 1 else np.ones(1)
        feats = np.stack([budget_features(L * f, ref_lat) for f in scales])
        codes = np.unique(self.net.decode(np.repeat(vec[None], len(scales), 0), feats), axis=0)
        # polishing every decode measured better than polishing only the best (1.4 % worst gap)
        best = best_repaired(problem, budget, codes, reference_accuracy=reference_accuracy, polish=polish)
        best.seconds = time.perf_counter() - t0
        return best

    def front(self, problem, costs, n: int = 24) -> list:
        """(latency_ms, accuracy) of the network's designs over the device's feasible range (one batch)."""
        lo, hi = feasible_range(costs, self.refs)
        budgets = np.exp(np.linspace(np.log(lo * 1.02), np.log(hi), n))
        vec, _ = device_vector(costs, self.refs)
        ref_lat = costs.predict(self.refs)
        codes = self.net.decode(np.repeat(vec[None], n, 0), np.stack([budget_features(L, ref_lat) for L in budgets]))
        ev = problem.evaluate(np.concatenate([codes, self.refs]))
        return sorted(zip(ev["latency_ms"].tolist(), ev["accuracy"].tolist()))

    def save(self, path):
        meta = {k: v for k, v in self.info.items() if k != "key"}
        return self.net.save(path, extra={"refs": self.refs}, meta={"format": FORMAT, **meta})

    @classmethod
    def load(cls, path) -> "ModelSpaceOptimizer":
        net, extra, meta = AmortizedOptimizer.load(path, with_extra=True)
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a {FORMAT} file")
        return cls(net, extra["refs"], meta)


def accuracy_key(accuracy_fn, space, n_probe: int = 64) -> str:
    """Identifies an accuracy function by its rounded outputs on fixed probe designs of the space."""
    rng = np.random.default_rng(12345)
    codes = np.stack([space.encode(space.identity())] + [space.encode(space.sample(rng)) for _ in range(n_probe)])
    vals = np.round(np.asarray(accuracy_fn(codes), dtype=np.float64), 6)
    return hashlib.sha256(vals.tobytes()).hexdigest()[:16]


def train(space, accuracy_fn, *, devices=None, synthetic: int = 300, budgets_per_device: int = 8,
          epochs: int = 80, hidden: int = 256, polish: int = 30, seed: int = 0, progress: bool = True,
          costs: dict | None = None) -> ModelSpaceOptimizer:
    """Train the amortized optimizer of ``space`` (see the module doc). ``costs``: precomputed
    ``{device: TableCosts}`` of the real devices (else :func:`device_costs` of ``devices``)."""
    t0 = time.perf_counter()
    real = costs if costs is not None else device_costs(space, devices, progress=progress)
    if len(real) < 2:
        raise ValueError("the amortized optimizer needs at least two devices with latency tables")
    population = {**real, **synthetic_costs(real, synthetic, seed=seed)}
    refs = reference_codes(space)
    pairs = training_pairs(space, accuracy_fn, population, refs, budgets_per_device=budgets_per_device,
                           seed=seed, polish=polish, progress=progress)
    t_labels = time.perf_counter() - t0
    n_choices = [len(c) for _, _, c in space.knobs()]
    net = AmortizedOptimizer(n_choices, device_dim=len(refs), budget_dim=2, hidden=hidden, seed=seed)
    fit = net.fit(pairs, epochs=epochs, progress=progress)
    info = {"space": space.hash(), "real_devices": len(real), "synthetic_devices": synthetic, "pairs": len(pairs),
            "epochs": epochs, "seed": seed}        # saved with the weights: no timings (byte-identical files)
    opt = ModelSpaceOptimizer(net, refs, info)
    opt.timings = {"label_seconds": round(t_labels, 2), "train_seconds": round(fit["seconds"], 2)}
    return opt
