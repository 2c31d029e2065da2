"""The obvious alternatives to edgepass, each brought to a target *measured* latency on this CPU.

    from edgepass.baselines import to_latency
    r = to_latency(onnx_model, "uniform", target_ms=0.5 * original_ms, calibration=x_cal)
    r.model, r.measured_ms, r.within, r.param

Kinds (:data:`KINDS`):

* ``uniform``      -- one width multiplier for every channel group (MobileNet's alpha);
* ``int8``         -- every layer int8 (QDQ, ranges from the calibration data), widths unchanged;
* ``uniform+int8`` -- both;
* ``magnitude``    -- FLOPs-guided magnitude pruning: every channel of every group ranked *globally*
  by its filters' L1 norm (each layer's norms divided by their mean, so layers of different fan-in
  compare), channels dropped from the bottom until the model's MACs reach a target. It is guided
  by MACs, not by latency: that is the point of the comparison.

Why the tuning loop: a baseline is only a fair comparison at the *same measured latency*, and
latency is not proportional to width or MACs (fixed per-op costs, vector widths). So the one
parameter of each baseline (multiplier, MACs fraction) is bisected with real onnxruntime timings
(:func:`edgepass.devices.measure.measure`, 1 thread, median) until the measured latency is within
``tol`` (5 %) of the target. ``int8`` has no parameter: it is measured once and reported as is.

Baselines get the same recovery edgepass gets: least-squares reconstruction where compile would
run it (``reconstruct``), batch-norm recalibration (statistics matching for ONNX) on the
calibration data, and int8 ranges calibrated on it. Widths are any multiple of a
group's granularity and of the CPU's vector block (see :func:`channel_step`) -- finer than edgepass's offered choices, so the
bisection can get close to its target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .devices.measure import measure
from .errors import InputError
from .frontends.onnx import analyze_onnx, load_model
from .passes.plan import channel_importance
from .rewrite import build_pipeline
from .space import ChannelGroup, DesignSpace, build_space

KINDS = ("uniform", "int8", "uniform+int8", "magnitude")
#: the smallest multiplier / MACs fraction the bisection tries
MIN_PARAM = 0.02
#: baseline widths are multiples of this where the group allows; None: this CPU's vector block
CHANNEL_MULTIPLE: int | None = None


@dataclass
class BaselineResult:
    kind: str
    target_ms: float
    measured_ms: float
    within: bool                    # |measured / target - 1| <= tol
    param: float | None             # width multiplier or MACs fraction (None for int8)
    model: object = field(repr=False, default=None)   # onnx.ModelProto
    design: dict = field(default_factory=dict)
    macs: int = 0
    trace: list = field(default_factory=list)          # [(param, measured ms)] in bisection order
    note: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "target_ms": self.target_ms, "measured_ms": self.measured_ms,
                "within": self.within, "param": self.param, "macs": self.macs, "trace": self.trace,
                "note": self.note}


# --------------------------------------------------------------------------------------------
# designs
# --------------------------------------------------------------------------------------------
def vector_channels() -> int:
    """Channel block of onnxruntime's blocked (NCHWc) conv kernels on this CPU: 16 floats with
    AVX-512, else 8. Widths off a multiple of it fall back to slower kernels."""
    try:
        with open("/proc/cpuinfo") as f:
            return 16 if " avx512f" in f.read() else 8
    except OSError:
        return 8


def channel_step(g) -> int:
    """Widths a baseline may give group ``g``: multiples of :func:`vector_channels` (and of its
    granularity) when its width is one, else of its granularity. Why: one channel off the block
    size doubled a small CNN's latency here, and deployed models round widths the same way."""
    m = math.lcm(CHANNEL_MULTIPLE or vector_channels(), g.granularity)
    return m if g.width % m == 0 else g.granularity


def fine_space(space):
    """A copy of ``space`` whose groups offer every multiple of their :func:`channel_step`."""
    groups = [ChannelGroup(g.id, g.width, g.members, list(range(g.width, 0, -channel_step(g))), g.granularity,
                           g.frozen) for g in space.groups]
    return DesignSpace(space.graph, groups, space.frozen, space.kernels, space.precisions, space.layouts,
                       space.op_layouts)


def _round_width(g, w: float) -> int:
    m = channel_step(g)
    return int(min(g.width, max(m, round(w / m) * m)))


def uniform_design(space, multiplier: float, *, precision: str | None = None):
    """Every group at ``multiplier`` x its width (any multiple of its granularity)."""
    d = space.identity()
    for g in space.groups:
        d.widths[g.id] = _round_width(g, multiplier * g.width)
    if precision is not None:
        d.precisions = {layer: precision for layer, ps in space.precisions.items() if precision in ps}
    return d


def global_channel_scores(space, proto) -> dict:
    """Group id -> per-channel L1 score, on one global scale (each producer's norms / their mean)."""
    inits = {t.name: t for t in load_model(proto).graph.initializer}
    import onnx.numpy_helper as nh

    scores = channel_importance(space, lambda name: nh.to_array(inits[name]), importance="l1")
    out = {}
    for g in space.groups:
        producers = max(1, sum(1 for _, role in g.members if role == "out"))
        out[g.id] = np.asarray(scores[g.id], dtype=np.float64) / producers
    return out


def magnitude_design(space, scores: dict, macs_fraction: float):
    """Keep the globally highest-scored channels until MACs <= ``macs_fraction`` x the original.

    Bisects the global score threshold (MACs only go down as it rises); every group keeps at
    least one granule. Returns the design with the most MACs under the target."""
    full = space.graph.macs
    target = macs_fraction * full

    def design_at(threshold: float):
        d = space.identity()
        for g in space.groups:
            s = scores[g.id]
            if g.granularity > 1:
                s = np.repeat(s.reshape(-1, g.granularity).sum(1) / g.granularity, g.granularity)
            kept = int((s >= threshold).sum())
            d.widths[g.id] = _round_width(g, max(kept, g.granularity)) if kept < g.width else g.width
        return d

    values = np.unique(np.concatenate([scores[g.id] for g in space.groups]))
    lo, hi = 0, len(values)       # values[:lo] thresholds too permissive; index hi == "drop all"
    best = design_at(np.inf)
    if space.design_graph(best).macs > target:
        return best                # even one granule per group is over the target
    while lo < hi:                 # smallest threshold index whose design fits
        mid = (lo + hi) // 2
        d = design_at(values[mid])
        if space.design_graph(d).macs <= target:
            best, hi = d, mid
        else:
            lo = mid + 1
    return best


# --------------------------------------------------------------------------------------------
# realise and measure
# --------------------------------------------------------------------------------------------
def realise(proto, space, design, calibration=None, *, recalibrate: bool = True, reconstruct: bool | None = None):
    """The ONNX model of ``design`` (widths from ``space``, which may be a :func:`fine_space`)."""
    import onnx
    import onnx_ir as ir

    design = space.validate(design)
    if design == space.identity():
        return onnx.ModelProto.FromString(proto.SerializeToString())
    pipe = build_pipeline(space, design, framework="onnx", calibration_data=calibration, importance="l1",
                          original=proto, recalibrate=recalibrate, reconstruct=reconstruct)
    return ir.to_proto(pipe(ir.from_proto(onnx.ModelProto.FromString(proto.SerializeToString()))).model)


def measured_ms(proto, *, runs: int = 100, repeats: int = 3, min_seconds: float = 0.1) -> float:
    """Median over ``repeats`` medians of at least ``runs`` timed runs and ``min_seconds`` each (1 thread).

    Robust to a noisy neighbour; ``min_seconds`` matters for sub-millisecond models, where 100 runs
    span ~20 ms and one scheduler burst moved a median by 16 % here."""
    return float(np.median([measure(proto, threads=1, runs=runs, warmup=10, seed=i,
                                    min_seconds=min_seconds).median_ms for i in range(repeats)]))


def to_latency(model, kind: str, target_ms: float, *, calibration=None, tol: float = 0.05, steps: int = 8,
               grid_points: int = 9, max_brackets: int = 3, runs: int = 100, repeats: int = 3,
               min_seconds: float = 0.1, space=None, reconstruct: bool | None = None,
               measure=None) -> BaselineResult:
    """Baseline ``kind`` of the ONNX ``model`` tuned to ``target_ms`` measured on this CPU.

    The parameter (in ``[MIN_PARAM, 1]``) is measured on a grid of ``grid_points``; the largest one
    within ``tol`` of the target wins, else the brackets around the target (up to ``max_brackets``,
    largest parameter first) are bisected ``steps`` times each; failing that, the closest model measured is returned with
    ``within=False`` (e.g. a target below what the narrowest model reaches). The search measures
    statistics-matched models; the one returned gets the recovery ``reconstruct`` asks for (as in
    :func:`edgepass.apply`; weights only, so its latency is the one measured). ``measure``: a
    function ONNX model -> ms to use instead of timing on this CPU (:func:`measured_ms` with
    ``runs``/``repeats``/``min_seconds``), e.g. a predictor, or a fixed cost model in tests."""
    if kind not in KINDS:
        raise InputError(f"baseline must be one of {', '.join(KINDS)}, not {kind!r}")
    if not target_ms > 0:
        raise InputError(f"target latency must be > 0 ms, got {target_ms}")
    if "int8" in kind and calibration is None:
        raise InputError(f"the {kind} baseline needs calibration data (int8 ranges)")
    proto = load_model(model)
    space = fine_space(space if space is not None else build_space(analyze_onnx(proto)))
    precision = "int8" if "int8" in kind else None
    scores = global_channel_scores(space, proto) if kind == "magnitude" else None

    def design_of(p):
        if kind == "magnitude":
            return magnitude_design(space, scores, p)
        return uniform_design(space, p, precision=precision)

    cache: dict = {}

    def timed(m) -> float:
        if measure is not None:
            return float(measure(m))
        return measured_ms(m, runs=runs, repeats=repeats, min_seconds=min_seconds)

    def evaluate(p):
        d = design_of(p)
        key = d.to_json()
        if key not in cache:
            m = realise(proto, space, d, calibration, reconstruct=False)
            ms = timed(m)
            if abs(ms / target_ms - 1) <= tol:   # a hit is confirmed by a second measurement (shared CPUs)
                ms = float(np.median([ms, timed(m)]))
            cache[key] = (m, ms, d)
        return cache[key]

    trace = []

    def done(p, entry, note=""):
        m, ms, d = entry
        if reconstruct is not False and calibration is not None:
            m = realise(proto, space, d, calibration, reconstruct=reconstruct)
        return BaselineResult(kind, target_ms, ms, abs(ms / target_ms - 1) <= tol, p, m, d.to_dict(),
                              int(space.design_graph(d).macs), trace, note)

    if kind == "int8":
        entry = evaluate(1.0)
        trace.append((None, entry[1]))
        return done(None, entry, "no parameter: measured as is")
    # latency is not monotone in the parameter (kernel choice flips at block sizes), so first a
    # grid, then bisection inside the brackets [p_i, p_i+1] around the target
    grid = np.linspace(MIN_PARAM, 1.0, grid_points)
    measured = []
    for p in grid[::-1]:
        entry = evaluate(float(p))
        trace.append((round(float(p), 4), entry[1]))
        measured.append((float(p), entry))

    def pick():
        ok = [(p, e) for p, e in measured if abs(e[1] / target_ms - 1) <= tol]
        if ok:   # the most capacity among the hits
            return max(ok, key=lambda pe: pe[0])
        return None

    hit = pick()
    if hit:
        return done(*hit)
    measured.sort(key=lambda pe: pe[0])
    brackets = [(a, b) for a, b in zip(measured, measured[1:]) if a[1][1] < target_ms < b[1][1]]
    for (lo, _), (hi, _) in brackets[::-1][:max_brackets]:   # largest parameter first
        for _ in range(steps):
            p = (lo + hi) / 2
            entry = evaluate(p)
            trace.append((round(p, 4), entry[1]))
            measured.append((p, entry))
            if abs(entry[1] / target_ms - 1) <= tol:
                return done(p, entry)
            lo, hi = (p, hi) if entry[1] < target_ms else (lo, p)
    p, entry = min(measured, key=lambda pe: (abs(pe[1][1] - target_ms), -pe[0]))
    if entry[1] > target_ms and p == MIN_PARAM:
        return done(p, entry, "target below the narrowest model's latency")
    return done(p, entry, f"closest of {len(trace)} measured")


__all__ = ["KINDS", "BaselineResult", "fine_space", "uniform_design", "global_channel_scores", "magnitude_design",
           "realise", "measured_ms", "to_latency"]
