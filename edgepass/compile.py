"""``edgepass.compile``: model + device + budget -> a verified, rewritten model with a report.

One compile = trace -> IR -> design space (restricted by ``ignore`` and the device's precisions)
-> predictors (latency table for the device, accuracy from calibration data) -> optimizer ->
passes (width, kernel, recalibration, fine-tuning, precision) -> verify -> report.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np


from .api import example_inputs_for, is_torch_module
from .errors import MAX_SEED, InfeasibleBudgetError, InputError, OptionError
from .fileio import can_write_in, check_files, check_input, is_device_file
from .fileio import write_atomic  # noqa: F401  (edgepass.compile.write_atomic stays importable)

LOCAL_PREFIX = "local/cpu-ort-"
#: default ``evaluate_top`` with calibration data, and the largest model (MACs) it applies to: each
#: evaluation is a full rewrite (int8 calibration included) plus inference on the calibration data,
#: ~0.1 s for the digits CNN but ~28 s for resnet50 (4.1 GMACs; benchmarks/compile.py)
EVALUATE_TOP = 4
EVALUATE_MAX_MACS = 2e9


@dataclass
class LayerReport:
    name: str
    kind: str
    before: dict
    after: dict
    predicted_ms_before: float | None = None
    predicted_ms_after: float | None = None


@dataclass
class Report:
    """What a compile chose and what it expects (and, on this machine, measured)."""

    device: str
    budget: dict
    method: str
    feasible: bool
    design: dict
    predicted: dict                    # latency_ms / energy_mj / accuracy: original and compiled
    totals: dict                       # macs / params / size_bytes: original and compiled
    layers: list = field(default_factory=list)
    measured: dict | None = None       # on this machine's CPU: latency before/after, miss vs predicted
    seconds: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    verified: bool = False
    #: with ``evaluate_top``: the candidates measured on the calibration data (chosen one marked)
    selection: list | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=float)

    def stable_dict(self) -> dict:
        """The part that depends only on the inputs and options (no timings, no measurements): what is
        embedded in a compiled ONNX model, so identical compiles give byte-identical files."""
        d = self.to_dict()
        d.pop("seconds")
        d.pop("measured")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Report":
        d = dict(d)
        d["layers"] = [LayerReport(**row) for row in d.get("layers", [])]
        d.setdefault("seconds", {})
        d.setdefault("measured", None)
        return cls(**d)

    def table(self) -> str:
        rows = [("layer", "op", "channels", "kernel", "precision", "ms before", "ms after")]
        for r in self.layers:
            ch = f"{r.before['out']}->{r.after['out']}" if r.before["out"] != r.after["out"] else str(r.before["out"])
            k = f"{r.before['kernel']}->{r.after['kernel']}" if r.before["kernel"] != r.after["kernel"] \
                else str(r.before["kernel"])
            p = f"{r.before['precision']}->{r.after['precision']}" if r.before["precision"] != r.after["precision"] \
                else r.before["precision"]
            fmt = (lambda v: "-" if v is None else f"{v:.3f}")
            rows.append((r.name, r.kind, ch, k, p, fmt(r.predicted_ms_before), fmt(r.predicted_ms_after)))
        w = [max(len(x[i]) for x in rows) for i in range(len(rows[0]))]
        out = ["  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(r)) for r in rows]
        out.insert(1, "-" * len(out[0]))
        pr, tot = self.predicted, self.totals
        out.append("")
        out.append(f"device {self.device}  method {self.method}  budget {self._budget_text()}  "
                   f"{'met' if self.feasible else 'NOT MET (closest design)'}")
        out.append(f"latency (predicted)  {pr['latency_ms'][0]:.3f} ms -> {pr['latency_ms'][1]:.3f} ms")
        if pr.get("energy_mj") and pr["energy_mj"][0] is not None:
            out.append(f"energy (predicted)   {pr['energy_mj'][0]:.3f} mJ -> {pr['energy_mj'][1]:.3f} mJ")
        if pr.get("accuracy"):
            out.append(f"accuracy (predicted) {pr['accuracy'][0]:.3f} -> {pr['accuracy'][1]:.3f}")
        out.append(f"MACs {tot['macs'][0] / 1e6:.1f}M -> {tot['macs'][1] / 1e6:.1f}M   "
                   f"params {tot['params'][0] / 1e6:.3f}M -> {tot['params'][1] / 1e6:.3f}M")
        if self.measured:
            m = self.measured
            flag = ("  MISS > 10 %" if m.get("miss") else "") + \
                ("  SLOWER than the original" if m.get("slower_than_original") else "")
            out.append(f"latency (measured here) {m['before_ms']:.3f} ms -> {m['after_ms']:.3f} ms "
                       f"(predicted {pr['latency_ms'][1]:.3f} ms, error {100 * m['error']:+.1f} %){flag}")
        for i, c in enumerate(self.selection or []):
            here = f", measured here {c['measured_ms']:.3f} ms" if "measured_ms" in c else ""
            out.append(f"candidate {i + 1}: predicted {c['predicted_latency_ms']:.3f} ms{here}, predicted accuracy "
                       f"{c['predicted_accuracy']:.3f}, on the calibration data {c['measured_on_calibration']:.3f}"
                       f"{'  <- chosen' if c['chosen'] else ''}")
        out.append("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items()))
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def _budget_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.budget.items() if v not in (None, 0.0))


def _calibration_array(data, graph):
    """Calibration samples of a single-input model as one array (what the accuracy predictor takes)."""
    from .calibration import accuracy_input, samples

    spec = accuracy_input(graph)     # one float input, else a one-line refusal before any work
    if data is None:
        return None
    return samples(data, [spec], what="accuracy prediction")[spec.name]


def _layer_rows(space, design, table_before, table_after) -> list:
    before, after = space.graph, space.design_graph(design)
    rows = []
    pb = {r.name: r.latency_ms for r in (table_before or [])}
    pa = {r.name: r.latency_ms for r in (table_after or [])}
    for op, new in zip(before.layers(), after.layers()):
        def info(o):
            a = o.attrs
            return {"in": int(a.get("in_channels", a.get("in_features", 0))),
                    "out": int(a.get("out_channels", a.get("out_features", 0))),
                    "kernel": int(a["kernel"][0]) if "kernel" in a else None, "precision": o.precision}
        rows.append(LayerReport(op.name, op.kind, info(op), info(new), pb.get(op.name), pa.get(op.name)))
    return rows


def _model_bytes(model) -> int:
    if is_torch_module(model):
        import torch

        def size(v) -> int:  # quantized modules keep packed (weight, bias) tuples and dtypes in state_dict
            if isinstance(v, torch.Tensor):
                return v.numel() * v.element_size()
            return sum(size(x) for x in v) if isinstance(v, (tuple, list)) else 0
        return int(sum(size(v) for v in model.state_dict().values()))
    return len(model.SerializeToString())


def _check_number(name: str, value, *, allow_zero: bool = False) -> None:
    """A budget: None, or a finite real number > 0 (>= 0 with ``allow_zero``); never a bool or a string."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OptionError(f"{name} must be a number, not {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise OptionError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, "
                          f"not {value!r}")


def _check_int(name: str, value, *, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0 or \
            (high is not None and value > high):
        limit = f" up to {high}" if high is not None else ""
        raise OptionError(f"{name} must be a non-negative integer{limit}, not {value!r}")


@dataclass(frozen=True)
class CompileOptions:
    """Every option of a compile: one type shared by :func:`compile`, :func:`compile_fleet` and the CLI.

    Budget: ``latency_ms`` (absolute) or ``latency_fraction`` (of the device's predicted original
    latency: one number that suits a whole fleet), ``energy_mj``, ``max_accuracy_drop``.
    ``cache_dir``: where trained optimizers and fitted accuracy predictors are kept (default
    ``$EDGEPASS_CACHE`` or the user's cache directory). ``plot``: a PNG of the candidate designs'
    predicted latency vs accuracy. ``accuracy_options``: keyword options of the accuracy predictor
    (``max_levels``, ``max_knobs``, ``n_fit``: a cheaper sensitivity sweep for big models);
    ``optimizer_options``: training options of the amortized optimizer (``optimize(train_options=)``).
    ``calibrate_latency``: on this machine's devices (``local/cpu-ort-*``, ONNX input) first measure
    a few designs of the model (original, uniform int8, half width in fp32 and int8) and calibrate the
    latency predictor's fp32 and int8 scales on them; the design then depends on timings, so the
    output is not byte-reproducible.
    ``evaluate_top``: measure this many good designs under the budget (the optimizer's pick and
    repaired uniform designs) on the calibration data, with the same recovery, and keep the best
    measured; ``None`` = 4 with calibration data for models up to 2 GMACs, else 0 (off; it needs
    calibration data).
    ``reconstruct``: with calibration data, refit the rewritten layers (ONNX and PyTorch) to the
    original's outputs by least squares before recalibrating (``None``: only for small models, where
    a rewrite stays well under a second; see :mod:`edgepass.passes.reconstruct`).
    """

    latency_ms: float | None = None
    latency_fraction: float | None = None
    energy_mj: float | None = None
    max_accuracy_drop: float | None = None
    example_inputs: Any = None
    calibration_data: Any = None
    labels: Any = None
    method: str = "amortized"
    precisions: tuple | None = None
    ignore: tuple = ()
    seed: int = 0
    finetune: Any = None
    finetune_steps: int = 200
    measure: bool | None = None
    input_shapes: dict | None = None
    cache_dir: str | None = None
    plot: str | None = None
    accuracy_options: dict | None = None
    optimizer_options: dict | None = None
    evaluate_top: int | None = None
    calibrate_latency: bool = False
    reconstruct: bool | None = None

    def __post_init__(self):
        from .optimizers.api import METHODS

        if not isinstance(self.method, str) or self.method not in METHODS:
            raise OptionError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("latency_ms", "latency_fraction", "energy_mj"):
            _check_number(name, getattr(self, name))
        _check_number("max_accuracy_drop", self.max_accuracy_drop, allow_zero=True)
        if self.latency_fraction is not None and self.latency_ms is not None:
            raise OptionError("give latency_ms or latency_fraction, not both")
        if all(v is None for v in (self.latency_ms, self.latency_fraction, self.energy_mj, self.max_accuracy_drop)):
            raise OptionError("give a budget: latency_ms, latency_fraction, energy_mj and/or max_accuracy_drop")
        _check_int("seed", self.seed, high=MAX_SEED)
        _check_int("finetune_steps", self.finetune_steps)
        if self.evaluate_top is not None:
            _check_int("evaluate_top", self.evaluate_top)
        self._check_kinds()
        # normalise list-like options so options compare and hash by value (one name is one layer)
        object.__setattr__(self, "ignore", (self.ignore,) if isinstance(self.ignore, str) else tuple(self.ignore or ()))
        if self.precisions is not None:
            ps = self.precisions.split(",") if isinstance(self.precisions, str) else self.precisions
            object.__setattr__(self, "precisions", tuple(ps))
        self._check_values()

    def _check_kinds(self) -> None:
        """Options of a fixed type: a wrong one is refused here, not deep inside a compile."""
        for name in ("calibrate_latency",):
            if not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True or False, not {getattr(self, name)!r}")
        for name in ("measure", "reconstruct"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise OptionError(f"{name} must be True, False or None, not {getattr(self, name)!r}")
        for name in ("cache_dir", "plot"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (str, os.PathLike)):
                raise OptionError(f"{name} must be a path, not {type(getattr(self, name)).__name__}")
        for name in ("accuracy_options", "optimizer_options"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise OptionError(f"{name} must be a dict, not {type(getattr(self, name)).__name__}")
        if self.ignore and not isinstance(self.ignore, (str, list, tuple, set, frozenset)):
            raise OptionError(f"ignore must be a layer name or a list of them, not {type(self.ignore).__name__}")

    def _check_values(self) -> None:
        from .space import PRECISIONS

        if not all(isinstance(n, str) for n in self.ignore):
            raise OptionError(f"ignore must list layer names, not {list(self.ignore)!r}")
        bad = [p for p in self.precisions or () if p not in PRECISIONS]
        if bad or (self.precisions is not None and not self.precisions):
            raise OptionError(f"precisions must be a subset of {', '.join(PRECISIONS)}, not {list(self.precisions)!r}")
        if self.input_shapes is not None:
            if not isinstance(self.input_shapes, dict) or not all(
                    isinstance(k, str) and isinstance(dims, (list, tuple)) and dims and
                    all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims)
                    for k, dims in self.input_shapes.items()):
                raise OptionError(f"input_shapes must map input names to positive dimensions, e.g. "
                                  f"{{'input': (1, 3, 224, 224)}}, not {self.input_shapes!r}")

    @classmethod
    def of(cls, options: "CompileOptions | None" = None, **kwargs) -> "CompileOptions":
        """``options`` with ``kwargs`` replaced (unknown names: ``TypeError`` listing the valid ones)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if options is not None and not isinstance(options, cls):
            raise OptionError(f"options must be a CompileOptions (or give keywords), not {type(options).__name__}")
        if unknown:
            raise OptionError(f"unknown compile option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return replace(options, **kwargs) if options is not None else cls(**kwargs)

    def n_evaluated(self, macs: float = 0.0) -> int:
        """How many candidate designs a compile measures on the calibration data (``evaluate_top``;
        default :data:`EVALUATE_TOP` with calibration data for models up to :data:`EVALUATE_MAX_MACS`)."""
        if self.evaluate_top is not None:
            return self.evaluate_top
        return EVALUATE_TOP if self.calibration_data is not None and macs <= EVALUATE_MAX_MACS else 0

    def budget(self, original_ms: float):
        """The :class:`Budget` for a device whose original model is predicted at ``original_ms``."""
        from .optimizers.budget import Budget

        lat = self.latency_ms if self.latency_fraction is None else self.latency_fraction * original_ms
        return Budget(latency_ms=lat, energy_mj=self.energy_mj, max_accuracy_drop=self.max_accuracy_drop)


@dataclass
class Prepared:
    """What a compile computes once per model (shared by every device of a fleet)."""

    torch_input: bool
    source: Any                      # the nn.Module or the loaded ModelProto
    graph: Any
    example_inputs: Any
    calibration: np.ndarray | None   # the accuracy predictor's samples
    fingerprint: str                 # model + data + options that change the analysis (cache keys)
    seconds: dict = field(default_factory=dict)


@dataclass
class Target:
    """The design space and accuracy predictor for one set of allowed precisions."""

    precisions: tuple
    space: Any
    accuracy: Any
    notes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    evaluated: dict = field(default_factory=dict)   # design JSON -> measured metric (shared by a fleet's devices)
    cache: tuple | None = None                      # (cache dir, predictor key): where `evaluated` is kept

    def evaluate(self, design) -> float:
        key = design.to_json(indent=None)
        if key not in self.evaluated:
            self.evaluated[key] = float(self.accuracy.evaluate(design))
            if self.cache is not None:
                from .build_cache import save_evaluations

                save_evaluations(*self.cache, self.evaluated)
        return self.evaluated[key]


def prepare(model, options: CompileOptions) -> Prepared:
    """Trace / load and analyse ``model`` once."""
    t0 = time.perf_counter()
    if is_torch_module(model):
        from .frontends.fx import analyze_fx, trace

        example_inputs = example_inputs_for(model, options.example_inputs)
        graph = analyze_fx(trace(model), example_inputs)
        source = model
    else:
        from .frontends.onnx import analyze_onnx, load_model

        example_inputs = None
        source = load_model(model)
        graph = analyze_onnx(source, input_shapes=options.input_shapes)
    calib = _calibration_array(options.calibration_data, graph)
    fp = _fingerprint(source, example_inputs, calib, options)
    return Prepared(is_torch_module(model), source, graph, example_inputs, calib, fp,
                    {"analyze": time.perf_counter() - t0})


def allowed_precisions(dev, options: CompileOptions) -> tuple:
    """The precisions a compile for ``dev`` may choose (the user's subset of what the device runs)."""
    supported = list(dev.precisions or ["fp32"])
    allowed = [p for p in (options.precisions or supported) if p in supported]
    if not allowed:
        raise InputError(f"none of the precisions {list(options.precisions)} is supported by {dev.id} ({supported})")
    return tuple(sorted(set(allowed) | {"fp32"}))


def target(prep: Prepared, precisions: tuple, options: CompileOptions) -> Target:
    """The restricted design space and the fitted accuracy predictor (from the cache when there)."""
    from .build_cache import load_accuracy, load_evaluations, save_accuracy
    from .predictors.accuracy import AccuracyPredictor
    from .space import build_space

    t0 = time.perf_counter()
    space = build_space(prep.graph).restrict(ignore=options.ignore, precisions=list(precisions))
    kw = dict(options.accuracy_options or {})
    key = f"{prep.fingerprint}-{space.hash()}-{json.dumps(kw, sort_keys=True)}-reconstruct={options.reconstruct}"
    model = prep.source
    acc = load_accuracy(options.cache_dir, key, model=model, space=space, x=prep.calibration, labels=options.labels,
                        example_inputs=prep.example_inputs)
    if acc is None:
        acc = AccuracyPredictor(model, prep.calibration, options.labels, example_inputs=prep.example_inputs,
                                space=space, seed=options.seed, reconstruct=options.reconstruct, **kw).fit()
        save_accuracy(options.cache_dir, key, acc)
    notes = ([acc.info["note"]] if acc.info.get("note") else []) + \
        [f"accuracy predictor: {acc.info.get('metric')} on {acc.info.get('samples')} samples"]
    return Target(precisions, space, acc, notes, {"accuracy_predictor": time.perf_counter() - t0},
                  load_evaluations(options.cache_dir, key), (options.cache_dir, key))


def check_model_arg(model) -> None:
    """``model`` is something a compile can read (a path must be a regular file), before any work."""
    import onnx

    if is_torch_module(model) or isinstance(model, (onnx.ModelProto, bytes, bytearray)):
        return
    if isinstance(model, (str, os.PathLike)):
        check_input(model, "model")
        return
    raise OptionError(f"model must be a torch nn.Module, an onnx.ModelProto, ONNX bytes or a path to an ONNX "
                      f"file, not {type(model).__name__}")


def check_data_arg(opts: CompileOptions) -> None:
    """Calibration data given as a path must be a regular file or a folder (never a FIFO)."""
    if isinstance(opts.calibration_data, (str, os.PathLike)):
        check_input(opts.calibration_data, "calibration data", allow_dir=True)


_NO_CACHE: dict = {}   # unusable cache folder -> the throwaway folder used instead (warned once)


def with_usable_cache(opts: CompileOptions) -> CompileOptions:
    """``opts``, or, when its cache folder cannot be created or written, ``opts`` with a throwaway folder
    removed at exit (one warning): a cache only saves time, it must never cost a compile."""
    from .optimizers.api import cache_dir

    try:
        if can_write_in(cache_dir(opts.cache_dir)):
            return opts
        why = "not writable"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    key = str(opts.cache_dir or "default")
    if key not in _NO_CACHE:
        import atexit
        import shutil
        import sys
        import tempfile

        _NO_CACHE[key] = tempfile.mkdtemp(prefix="edgepass-nocache-")
        atexit.register(shutil.rmtree, _NO_CACHE[key], ignore_errors=True)
        where = opts.cache_dir or "the default cache folder ($EDGEPASS_CACHE or ~/.cache/edgepass)"
        print(f"edgepass: warning: cache folder {where} is unusable ({why}); running without a cache",
              file=sys.stderr)
    return replace(opts, cache_dir=_NO_CACHE[key])


def compile(model, device, options: CompileOptions | None = None, /, **kwargs):
    """Compile ``model`` for ``device`` within the budget; returns the type it was given with a report.

    Options are :class:`CompileOptions` fields, as keywords (``latency_ms=``, ``latency_fraction=``,
    ``energy_mj=``, ``max_accuracy_drop=``, ``example_inputs=``, ``calibration_data=``, ``labels=``,
    ``method=``, ``precisions=``, ``ignore=``, ``seed=``, ``finetune=``, ``finetune_steps=``,
    ``measure=``, ``input_shapes=``, ``cache_dir=``, ``plot=``, ``accuracy_options=``,
    ``optimizer_options=``) and/or as an
    options object.

    ``nn.Module`` -> rewritten ``nn.Module`` with ``.report`` (a :class:`Report`); ONNX
    ``ModelProto`` or path -> ``ModelProto`` with the report's stable part in its metadata (key
    ``edgepass.report``, see :func:`report_of`). ``device``: a database id, a device-file path or a
    ``Device``. An impossible budget raises :class:`InfeasibleBudgetError` whose ``closest`` is
    ``(model, report)`` for the closest design.
    """
    out, report, feasible = compile_with_report(model, device, options, **kwargs)
    if not feasible:
        raise InfeasibleBudgetError(f"no design meets the budget on {report.device}: closest predicted "
                                    f"{report.predicted['latency_ms'][1]:.3f} ms", closest=(out, report))
    return out


def compile_with_report(model, device, options: CompileOptions | None = None, /, **kwargs):
    """:func:`compile` without raising on an infeasible budget: ``(model, Report, feasible)``."""
    from .devices import get_device

    opts = CompileOptions.of(options, **kwargs)
    check_model_arg(model)
    check_data_arg(opts)
    if is_device_file(device):
        check_input(device, "device file")
    dev = get_device(device)
    if opts.plot:
        check_files(inputs={"model": model if isinstance(model, (str, os.PathLike)) else None,
                            "calibration data": opts.calibration_data if isinstance(
                                opts.calibration_data, (str, os.PathLike)) else None}, outputs={"plot": opts.plot})
    opts = with_usable_cache(opts)
    if opts.calibrate_latency:
        _check_local(dev)
    prep = prepare(model, opts)
    tgt = target(prep, allowed_precisions(dev, opts), opts)
    return compile_prepared(prep, tgt, dev, opts)


def compile_prepared(prep: Prepared, tgt: Target, dev, opts: CompileOptions):
    """The per-device part of a compile: optimize -> rewrite -> verify -> report (-> measure, plot)."""
    from .optimizers.api import optimize
    from .predict import predict
    from .rewrite import apply_design, verify

    graph, space, acc, source = prep.graph, tgt.space, tgt.accuracy, prep.source
    t = {**prep.seconds, **tgt.seconds}
    calibration_note, latency_of = None, None
    if opts.calibrate_latency:
        t0 = time.perf_counter()
        latency_of = _local_latency(prep, dev, opts)    # one memo: calibration and candidates share it
        dev, calibration_note = _calibrate_latency(prep, space, dev, latency_of)
        t["calibrate_latency"] = time.perf_counter() - t0
    base = predict(graph, dev)
    budget = opts.budget(base.latency_ms)
    t0 = time.perf_counter()
    result = optimize(space, dev, latency_ms=budget.latency_ms, energy_mj=budget.energy_mj,
                      max_accuracy_drop=budget.max_accuracy_drop, method=opts.method, accuracy_fn=acc.predict_codes,
                      seed=opts.seed, cache=opts.cache_dir, train_options=opts.optimizer_options,
                      candidates=opts.n_evaluated(graph.macs) if prep.calibration is not None else 0)
    t["optimize"] = time.perf_counter() - t0
    notes = list(result.notes) + list(tgt.notes) + ([calibration_note] if calibration_note else [])
    selection = None
    if opts.calibrate_latency and budget.latency_ms is not None and result.feasible and opts.n_evaluated(graph.macs) > 1 \
            and prep.calibration is not None:
        # measuring here anyway: also consider designs predicted up to LOOSE x over the budget (the
        # calibrated predictor still errs by ~15 % on mixed precisions) and keep what *measures* within it
        t0 = time.perf_counter()
        loose = optimize(space, dev, latency_ms=budget.latency_ms * LOOSE, energy_mj=budget.energy_mj,
                         max_accuracy_drop=budget.max_accuracy_drop, method=opts.method,
                         accuracy_fn=acc.predict_codes, seed=opts.seed, cache=opts.cache_dir,
                         train_options=opts.optimizer_options, candidates=opts.n_evaluated(graph.macs))
        have = list(result.candidates or [(result.design, result.latency_ms, result.accuracy)])
        have += [c for c in (loose.candidates or []) if all(c[0] != h[0] for h in have)]
        have += [c for c in _uniform_candidates(space, dev, acc, budget.latency_ms * LOOSE)
                 if all(c[0] != h[0] for h in have)]
        result.candidates = have
        t["optimize"] += time.perf_counter() - t0
    if result.candidates and len(result.candidates) > 1:
        t0 = time.perf_counter()
        selection = _select(tgt, result, notes, latency_of=latency_of if result.feasible and
                            budget.latency_ms is not None else None, budget_ms=budget.latency_ms)
        t["evaluate"] = time.perf_counter() - t0
    unknown = list(graph.graph.get("unknown_ops") or [])
    if unknown:
        notes.append(f"left untouched: operator(s) edgepass does not know ({', '.join(unknown[:8])}); "
                     f"the channels they touch are frozen")
    design = result.design

    # regression guard: never hand back something predicted slower than the original
    ident = space.identity()
    chosen = predict(space.design_graph(design), dev)
    if chosen.latency_ms >= base.latency_ms and design != ident:
        notes.append(f"the chosen design is predicted slower ({chosen.latency_ms:.3f} ms vs {base.latency_ms:.3f} ms): "
                     f"kept the original")
        design, chosen = ident, base

    t0 = time.perf_counter()
    applied = apply_design(source, design, example_inputs=prep.example_inputs, calibration_data=opts.calibration_data,
                           finetune=opts.finetune, finetune_steps=opts.finetune_steps, seed=opts.seed,
                           input_shapes=opts.input_shapes, reconstruct=opts.reconstruct,
                           graph=None if prep.torch_input else prep.graph)
    t["rewrite"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = verify(source, applied.model, design, example_inputs=prep.example_inputs if prep.torch_input else None,
               space=applied.space)
    t["verify"] = time.perf_counter() - t0
    if not v.ok:
        notes.append("verification failed: " + "; ".join(v.problems[:3]))

    new_graph = space.design_graph(design)
    budget_dict = {**budget.to_dict(), "latency_fraction": opts.latency_fraction}
    report = Report(
        device=dev.id, budget=budget_dict, method=result.method, feasible=bool(result.feasible),
        design=design.to_dict(),
        predicted={"latency_ms": [base.latency_ms, chosen.latency_ms],
                   "energy_mj": [base.energy_mj, chosen.energy_mj],
                   "accuracy": [float(acc.predict_codes(space.encode(ident)[None])[0]), float(result.accuracy)]},
        selection=selection,
        totals={"macs": [int(graph.macs), int(new_graph.macs)], "params": [int(graph.params), int(new_graph.params)],
                "size_bytes": [_model_bytes(source), _model_bytes(applied.model)]},
        layers=_layer_rows(space, design, base.layers, chosen.layers), seconds=t, notes=notes, verified=v.ok)

    if opts.measure if opts.measure is not None else (dev.id.startswith(LOCAL_PREFIX) and not prep.torch_input):
        t0 = time.perf_counter()
        report.measured = _measure_here(source, applied.model, dev, chosen.latency_ms)
        t["measure"] = time.perf_counter() - t0
        # kept out of `notes`: the embedded report must not depend on a measurement
        report.measured["slower_than_original"] = report.measured["after_ms"] > report.measured["before_ms"]
    if opts.plot:
        from .plot import plot_front

        t0 = time.perf_counter()
        plot_front(opts.plot, space, dev, acc.predict_codes, result, report, metric=acc.info.get("metric", "accuracy"),
                   seed=opts.seed)
        t["plot"] = time.perf_counter() - t0
    report.seconds["total"] = sum(report.seconds.values())
    out = applied.model
    if prep.torch_input:
        out.report = report
    else:
        meta = {p.key: p for p in out.metadata_props}
        entry = meta.get("edgepass.report") or out.metadata_props.add()
        entry.key, entry.value = "edgepass.report", json.dumps(report.stable_dict(), sort_keys=True, default=float)
    return out, report, bool(result.feasible)


#: designs measured by ``calibrate_latency``: (width ratio, precision)
CALIBRATION_DESIGNS = ((1.0, None), (1.0, "int8"), (0.5, None), (0.5, "int8"))


def _check_local(dev) -> None:
    if not dev.id.startswith(LOCAL_PREFIX):
        raise InputError(f"calibrate_latency measures on this machine: only for the {LOCAL_PREFIX}* devices, "
                         f"not {dev.id}")


def _calibrate_latency(prep: Prepared, space, dev, latency_of):
    """Measure :data:`CALIBRATION_DESIGNS` of the model here and return the device with the latency
    predictor calibrated on them (:func:`edgepass.predictors.latency.calibrate_on_designs`)."""
    from .predictors.latency import calibrate_on_designs

    _check_local(dev)
    if prep.torch_input:
        raise InputError("calibrate_latency measures ONNX models: give the model as ONNX")
    designs = []
    for ratio, precision in CALIBRATION_DESIGNS:
        if precision is not None and not any(precision in ps for ps in space.precisions.values()):
            continue
        d = space.uniform(ratio, precision=precision)
        if all(d != x for x in designs):
            designs.append(d)
    graphs = [space.design_graph(d) for d in designs]
    ms = [latency_of(d) for d in designs]
    cal_dev, info = calibrate_on_designs(dev, graphs, ms)
    note = (f"latency calibrated on {info['designs']} designs of this model measured here: fp32 x{info['fp']:.2f}, "
            f"int8 x{info['int8']:.2f}, +{info['extra_ms']:.3f} ms (largest error on them "
            f"{100 * info['max_rel_error']:.0f} %)")
    return cal_dev, note


#: with calibrate_latency, candidates predicted up to this factor over the latency budget are measured
LOOSE = 1.25
#: every latency measured here (candidates, before/after) times at least 20 runs and this long: a
#: small model's 20 runs span under a millisecond, and the medians of such short spans swing by tens
#: of percent on a busy machine (edgepass.devices.measure.measure)
MIN_SECONDS = 0.1


def _uniform_candidates(space, dev, acc, max_ms: float) -> list:
    """Every uniform design (each width ratio, fp32 and int8 where offered) predicted within ``max_ms``,
    as ``(design, predicted ms, predicted accuracy)``: on this machine they are measured, not trusted."""
    from .optimizers.candidates import uniform_designs
    from .predictors.latency import LatencyTable

    table = LatencyTable(space, dev)
    designs = uniform_designs(space)
    codes = np.stack([space.encode(d) for d in designs])
    lat, a = table.predict(codes), acc.predict_codes(codes)
    return [(d, float(ms), float(x)) for d, ms, x in zip(designs, lat, a) if ms <= max_ms]


def _local_latency(prep: Prepared, dev, opts: CompileOptions):
    """design -> median latency (ms) of the rewritten model measured here (the device's threads),
    each design measured once."""
    from .devices.measure import measure
    from .rewrite import apply_design

    seen: dict = {}

    def latency_of(design) -> float:
        key = design.to_json(indent=None)
        if key not in seen:
            model = apply_design(prep.source, design, calibration_data=opts.calibration_data,
                                 input_shapes=opts.input_shapes, recalibrate=False, graph=prep.graph).model
            seen[key] = float(measure(model, threads=int(dev.threads or 1), runs=20,
                                      min_seconds=MIN_SECONDS).median_ms)
        return seen[key]
    return latency_of


def _select(tgt: Target, result, notes: list, *, latency_of=None, budget_ms=None) -> list:
    """Measure ``result.candidates`` on the calibration data (with the compile's recovery) and make
    the best measured one ``result``'s design; ties keep the optimizer's order (its pick first).
    With ``latency_of`` (this machine), only candidates whose measured latency is within
    ``budget_ms`` are eligible (none: the optimizer's pick stays)."""
    rows = []
    for i, (design, lat, acc) in enumerate(result.candidates):
        rows.append({"design": design.to_dict(), "predicted_latency_ms": lat, "predicted_accuracy": acc,
                     "measured_on_calibration": tgt.evaluate(design), "chosen": False})
        if latency_of is not None:
            rows[-1]["measured_ms"] = latency_of(design)
    eligible = [i for i, r in enumerate(rows) if latency_of is None or r["measured_ms"] <= budget_ms]
    if not eligible:
        notes.append(f"none of {len(rows)} candidates measured within the budget here: kept the optimizer's pick")
        eligible = [0]
    best = max(eligible, key=lambda i: (rows[i]["measured_on_calibration"], -i))
    from .build_cache import confirm_records, decisive_candidates   # cached metrics may not decide unchecked

    decisive = decisive_candidates([r["measured_on_calibration"] for r in rows], eligible, best)
    if not confirm_records(tgt.evaluated, [result.candidates[i][0] for i in decisive], tgt.accuracy.evaluate,
                           tgt.cache):
        return _select(tgt, result, notes, latency_of=latency_of, budget_ms=budget_ms)
    rows[best]["chosen"] = True
    metric = tgt.accuracy.info.get("metric", "accuracy")
    if best != 0:
        notes.append(f"chose candidate {best + 1} of {len(rows)}: {metric} on the calibration data "
                     f"{rows[best]['measured_on_calibration']:.3f} vs {rows[0]['measured_on_calibration']:.3f} "
                     f"for the optimizer's pick" + (" (measured here within the budget)" if latency_of else ""))
        design, lat, acc = result.candidates[best]
        result.design, result.latency_ms, result.accuracy = design, lat, acc
        result.code = tgt.space.encode(design)   # energy: the report re-predicts the chosen design
    return rows


def _fingerprint(source, example_inputs, calib, options: CompileOptions) -> str:
    """A hash of everything the accuracy predictor's result depends on besides the design space."""
    h = hashlib.sha256()
    if is_torch_module(source):
        h.update(type(source).__qualname__.encode())
        for k, v in source.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        for x in example_inputs or ():
            h.update(str(tuple(x.shape)).encode())
    else:
        h.update(source.SerializeToString())
    for arr in (calib, options.labels):
        if arr is not None:
            a = np.ascontiguousarray(np.asarray(arr))
            h.update(f"{a.shape}{a.dtype}".encode())
            h.update(a.tobytes())
    h.update(json.dumps([options.seed, options.input_shapes and sorted(options.input_shapes.items())],
                        default=str).encode())
    return h.hexdigest()[:20]


def _measure_here(original, compiled, dev, predicted_ms) -> dict:
    from .devices.measure import measure

    threads = int(dev.threads or 1)
    before = measure(original, threads=threads, runs=20, min_seconds=MIN_SECONDS).median_ms
    after = measure(compiled, threads=threads, runs=20, min_seconds=MIN_SECONDS).median_ms
    err = predicted_ms / after - 1.0
    return {"before_ms": before, "after_ms": after, "error": err, "miss": abs(err) > 0.10, "threads": threads}


def report_of(model) -> dict | None:
    """The report a compile attached to ``model`` (an nn.Module or an ONNX ModelProto)."""
    if hasattr(model, "report"):
        return model.report.to_dict()
    for p in getattr(model, "metadata_props", []):
        if p.key == "edgepass.report":
            return json.loads(p.value)
    return None


def compile_fleet(model, devices, outdir, options: CompileOptions | None = None, /, **kwargs) -> dict:
    """One model for many devices into ``outdir``: see :func:`edgepass.fleet.compile_fleet`."""
    from .fleet import compile_fleet as _compile_fleet

    return _compile_fleet(model, devices, outdir, options, **kwargs)


__all__ = ["compile", "compile_with_report", "compile_fleet", "CompileOptions", "Report", "report_of", "write_atomic"]
