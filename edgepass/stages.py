"""The stages of one compile: model -> IR and calibration (:func:`prepare`, once per model) -> design
space and accuracy predictor (:func:`target`, once per set of precisions) -> per device
(:func:`compile_prepared`): optimize -> choose -> guard -> rewrite -> verify -> report.

:func:`edgepass.compile` runs them for one device, :func:`edgepass.compile_fleet` shares the first two
across many (docs/architecture.md walks through one compile)."""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from .build_cache import load_accuracy, load_evaluations, save_accuracy, save_evaluations
from .calibration import accuracy_input, samples
from .compile_options import CompileOptions
from .devices import get_device
from .errors import InputError, OptionError
from .fileio import can_write_in, check_files, check_input, is_device_file
from .frontends.fx import analyze_fx, trace
from .frontends.onnx import analyze_onnx, load_model
from .optimizers.api import optimize
from .plot import plot_front
from .predictors.accuracy import AccuracyPredictor
from .predictors.latency import LatencyTable
from .predictors.predict import predict
from .report import Report, layer_rows, model_bytes
from .rewrite import apply_design, verify
from .selection import (LOCAL_PREFIX, LOOSE, calibrate_latency, check_local, local_latency, measure_here, select,
                        uniform_candidates)
from .space import build_space
from .util import cache_dir, example_inputs_for, is_torch_module


def calibration_array(data, graph):
    """Calibration samples of a single-input model as one array (what the accuracy predictor takes)."""
    spec = accuracy_input(graph)     # one float input, else a one-line refusal before any work
    if data is None:
        return None
    return samples(data, [spec], what="accuracy prediction")[spec.name]


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
                save_evaluations(*self.cache, self.evaluated)
        return self.evaluated[key]


def prepare(model, options: CompileOptions) -> Prepared:
    """Trace / load and analyse ``model`` once."""
    t0 = time.perf_counter()
    if is_torch_module(model):
        example_inputs = example_inputs_for(model, options.example_inputs)
        graph = analyze_fx(trace(model), example_inputs)
        source = model
    else:
        example_inputs = None
        source = load_model(model)
        graph = analyze_onnx(source, input_shapes=options.input_shapes)
    calib = calibration_array(options.calibration_data, graph)
    fp = fingerprint(source, example_inputs, calib, options)
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
    try:
        if can_write_in(cache_dir(opts.cache_dir)):
            return opts
        why = "not writable"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
    key = str(opts.cache_dir or "default")
    if key not in _NO_CACHE:
        _NO_CACHE[key] = tempfile.mkdtemp(prefix="edgepass-nocache-")
        atexit.register(shutil.rmtree, _NO_CACHE[key], ignore_errors=True)
        where = opts.cache_dir or "the default cache folder ($EDGEPASS_CACHE or ~/.cache/edgepass)"
        print(f"edgepass: warning: cache folder {where} is unusable ({why}); running without a cache",
              file=sys.stderr)
    return replace(opts, cache_dir=_NO_CACHE[key])


def compile_model(model, device, opts: CompileOptions):
    """:func:`edgepass.compile_with_report` once its options are made: ``(model, Report, feasible)``."""
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
        check_local(dev)
    prep = prepare(model, opts)
    tgt = target(prep, allowed_precisions(dev, opts), opts)
    return compile_prepared(prep, tgt, dev, opts)


def compile_prepared(prep: Prepared, tgt: Target, dev, opts: CompileOptions):
    """The per-device part of a compile, stage by stage: (calibrate the latency predictor here) ->
    optimize -> choose among the candidates -> regression guard -> rewrite -> verify -> report
    (-> measure here, plot)."""
    t = {**prep.seconds, **tgt.seconds}
    latency_of, calibration_note = None, None
    if opts.calibrate_latency:
        t0 = time.perf_counter()
        latency_of = local_latency(prep, dev, opts)    # one memo: calibration and candidates share it
        dev, calibration_note = calibrate_latency(prep, tgt.space, dev, latency_of)
        t["calibrate_latency"] = time.perf_counter() - t0
    base = predict(prep.graph, dev)
    budget = opts.budget(base.latency_ms)

    t0 = time.perf_counter()
    result = optimize_design(prep, tgt, dev, opts, budget, latency_of)
    t["optimize"] = time.perf_counter() - t0
    notes = list(result.notes) + list(tgt.notes) + ([calibration_note] if calibration_note else [])
    selection = None
    if result.candidates and len(result.candidates) > 1:
        t0 = time.perf_counter()
        selection = select(tgt, result, notes, latency_of=latency_of if result.feasible and
                           budget.latency_ms is not None else None, budget_ms=budget.latency_ms)
        t["evaluate"] = time.perf_counter() - t0
    unknown = list(prep.graph.graph.get("unknown_ops") or [])
    if unknown:
        notes.append(f"left untouched: operator(s) edgepass does not know ({', '.join(unknown[:8])}); "
                     f"the channels they touch are frozen")
    design, chosen = guard_regression(tgt.space, result.design, dev, base, notes)

    t0 = time.perf_counter()
    applied = apply_design(prep.source, design, example_inputs=prep.example_inputs,
                           calibration_data=opts.calibration_data, finetune=opts.finetune,
                           finetune_steps=opts.finetune_steps, seed=opts.seed, input_shapes=opts.input_shapes,
                           reconstruct=opts.reconstruct, graph=None if prep.torch_input else prep.graph)
    t["rewrite"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = verify(prep.source, applied.model, design, example_inputs=prep.example_inputs if prep.torch_input else None,
               space=applied.space)
    t["verify"] = time.perf_counter() - t0
    if not v.ok:
        notes.append("verification failed: " + "; ".join(v.problems[:3]))

    report = make_report(prep, tgt, dev, opts, budget, result, design, (base, chosen), applied.model, selection,
                         t, notes, v.ok)
    if opts.measure if opts.measure is not None else (dev.id.startswith(LOCAL_PREFIX) and not prep.torch_input):
        t0 = time.perf_counter()
        report.measured = measure_here(prep.source, applied.model, dev, chosen.latency_ms)
        t["measure"] = time.perf_counter() - t0
        # kept out of `notes`: the embedded report must not depend on a measurement
        report.measured["slower_than_original"] = report.measured["after_ms"] > report.measured["before_ms"]
    if opts.plot:
        t0 = time.perf_counter()
        plot_front(opts.plot, tgt.space, dev, tgt.accuracy.predict_codes, result, report,
                   metric=tgt.accuracy.info.get("metric", "accuracy"), seed=opts.seed)
        t["plot"] = time.perf_counter() - t0
    report.seconds["total"] = sum(report.seconds.values())
    return attach_report(applied.model, report, prep.torch_input), report, bool(result.feasible)


def optimize_design(prep: Prepared, tgt: Target, dev, opts: CompileOptions, budget, latency_of):
    """The optimizer's design and, for ``evaluate_top``, its candidates: with ``calibrate_latency``
    also designs predicted up to :data:`LOOSE` x over the budget (the calibrated predictor still errs
    by ~15 % on mixed precisions) and every uniform design, to keep what *measures* within it."""
    space, acc, n_evaluated = tgt.space, tgt.accuracy, opts.n_evaluated(prep.graph.macs)
    table = LatencyTable(space, dev)    # one per device: every optimize call and candidate below shares it
    common = dict(method=opts.method, accuracy_fn=acc.predict_codes, seed=opts.seed, cache=opts.cache_dir,
                  train_options=opts.optimizer_options, latency_table=table)
    result = optimize(space, dev, budget=budget, **common,
                      candidates=n_evaluated if prep.calibration is not None else 0)
    if latency_of is not None and budget.latency_ms is not None and result.feasible and n_evaluated > 1 \
            and prep.calibration is not None:
        loose = optimize(space, dev, budget=replace(budget, latency_ms=budget.latency_ms * LOOSE), **common,
                         candidates=n_evaluated)
        have = list(result.candidates or [(result.design, result.latency_ms, result.accuracy)])
        have += [c for c in (loose.candidates or []) if all(c[0] != h[0] for h in have)]
        have += [c for c in uniform_candidates(space, table, acc, budget.latency_ms * LOOSE)
                 if all(c[0] != h[0] for h in have)]
        result.candidates = have
    return result


def guard_regression(space, design, dev, base, notes: list):
    """``(design, its prediction)``, or the original when the design is predicted slower than it:
    a compile never hands back something predicted slower than what it was given."""
    chosen = predict(space.design_graph(design), dev)
    ident = space.identity()
    if chosen.latency_ms >= base.latency_ms and design != ident:
        notes.append(f"the chosen design is predicted slower ({chosen.latency_ms:.3f} ms vs {base.latency_ms:.3f} ms): "
                     f"kept the original")
        return ident, base
    return design, chosen


def make_report(prep: Prepared, tgt: Target, dev, opts: CompileOptions, budget, result, design, predictions,
                compiled, selection, seconds: dict, notes: list, verified: bool) -> Report:
    base, chosen = predictions
    space, acc, graph = tgt.space, tgt.accuracy, prep.graph
    new_graph = space.design_graph(design)
    return Report(
        device=dev.id, budget={**budget.to_dict(), "latency_fraction": opts.latency_fraction}, method=result.method,
        feasible=bool(result.feasible), design=design.to_dict(),
        predicted={"latency_ms": [base.latency_ms, chosen.latency_ms],
                   "energy_mj": [base.energy_mj, chosen.energy_mj],
                   "accuracy": [float(acc.predict_codes(space.encode(space.identity())[None])[0]),
                                float(result.accuracy)]},
        selection=selection,
        totals={"macs": [int(graph.macs), int(new_graph.macs)], "params": [int(graph.params), int(new_graph.params)],
                "size_bytes": [model_bytes(prep.source), model_bytes(compiled)]},
        layers=layer_rows(space, design, base.layers, chosen.layers), seconds=seconds, notes=notes, verified=verified)


def attach_report(model, report: Report, torch_input: bool):
    """``model`` carrying ``report``: as ``.report`` on an nn.Module, as the stable part in an ONNX
    model's metadata (key ``edgepass.report``: identical compiles give identical files)."""
    if torch_input:
        model.report = report
    else:
        meta = {p.key: p for p in model.metadata_props}
        entry = meta.get("edgepass.report") or model.metadata_props.add()
        entry.key, entry.value = "edgepass.report", json.dumps(report.stable_dict(), sort_keys=True, default=float)
    return model


def fingerprint(source, example_inputs, calib, options: CompileOptions) -> str:
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


__all__ = ["Prepared", "Target", "prepare", "target", "allowed_precisions", "check_model_arg", "check_data_arg",
           "with_usable_cache", "compile_model", "compile_prepared", "fingerprint", "calibration_array"]
