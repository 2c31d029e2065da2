"""``edgepass.compile``: model + device + budget -> a verified, rewritten model with a report.

One compile = trace -> IR -> design space (restricted by ``ignore`` and the device's precisions)
-> predictors (latency table for the device, accuracy from calibration data) -> optimizer ->
passes (width, kernel, recalibration, fine-tuning, precision) -> verify -> report.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


from .api import example_inputs_for, is_torch_module
from .errors import InfeasibleBudgetError, InputError

LOCAL_PREFIX = "local/cpu-ort-"


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
            flag = "  MISS > 10 %" if m.get("miss") else ""
            out.append(f"latency (measured here) {m['before_ms']:.3f} ms -> {m['after_ms']:.3f} ms "
                       f"(predicted {pr['latency_ms'][1]:.3f} ms, error {100 * m['error']:+.1f} %){flag}")
        out.append("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in self.seconds.items()))
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def _budget_text(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.budget.items() if v not in (None, 0.0))


def _calibration_array(data, graph):
    """Calibration samples of a single-input model as one array (what the accuracy predictor takes)."""
    if data is None:
        return None
    from .calibration import InputSpec, samples

    inputs = graph.graph["inputs"]
    if len(inputs) != 1:
        raise InputError("accuracy prediction supports single-input models; give calibration data for one input")
    shape = graph.graph["tensors"][inputs[0]]
    spec = InputSpec(inputs[0], (None, *shape[1:]), np.float32)
    return samples(data, [spec], what="accuracy prediction")[inputs[0]]


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
        return int(sum(t.numel() * t.element_size() for t in model.state_dict().values()))
    return len(model.SerializeToString())


def compile(model, device, *, latency_ms=None, energy_mj=None, max_accuracy_drop=None, example_inputs=None,
            calibration_data=None, method: str = "amortized", precisions=None, ignore=None, seed: int = 0,
            finetune=None, finetune_steps: int = 200, labels=None, measure: bool | None = None,
            input_shapes: dict | None = None):
    """Compile ``model`` for ``device`` within the budget; returns the type it was given with a report.

    ``nn.Module`` -> rewritten ``nn.Module`` with ``.report`` (a :class:`Report`); ONNX
    ``ModelProto`` or path -> ``ModelProto`` with the report's stable part in its metadata (key
    ``edgepass.report``, see :func:`report_of`). ``device``: a database id, a device-file path or a
    ``Device``. An impossible budget raises :class:`InfeasibleBudgetError` whose ``closest`` is
    ``(model, report)`` for the closest design.
    """
    out, report, feasible = compile_with_report(
        model, device, latency_ms=latency_ms, energy_mj=energy_mj, max_accuracy_drop=max_accuracy_drop,
        example_inputs=example_inputs, calibration_data=calibration_data, method=method, precisions=precisions,
        ignore=ignore, seed=seed, finetune=finetune, finetune_steps=finetune_steps, labels=labels, measure=measure,
        input_shapes=input_shapes)
    if not feasible:
        raise InfeasibleBudgetError(f"no design meets the budget on {report.device}: closest predicted "
                                    f"{report.predicted['latency_ms'][1]:.3f} ms", closest=(out, report))
    return out


def compile_with_report(model, device, *, latency_ms=None, energy_mj=None, max_accuracy_drop=None,
                        example_inputs=None, calibration_data=None, method: str = "amortized", precisions=None,
                        ignore=None, seed: int = 0, finetune=None, finetune_steps: int = 200, labels=None,
                        measure: bool | None = None, input_shapes: dict | None = None):
    """:func:`compile` without raising on an infeasible budget: ``(model, Report, feasible)``."""
    from .devices import get_device
    from .optimizers.api import optimize
    from .optimizers.budget import Budget
    from .predict import predict
    from .rewrite import apply_design, verify
    from .space import build_space

    t = {}
    t0 = time.perf_counter()
    budget = Budget(latency_ms=latency_ms, energy_mj=energy_mj, max_accuracy_drop=max_accuracy_drop)
    dev = get_device(device)
    torch_input = is_torch_module(model)
    if torch_input:
        from .frontends.fx import analyze_fx, trace

        example_inputs = example_inputs_for(model, example_inputs)
        graph = analyze_fx(trace(model), example_inputs)
        source = model
    else:
        from .frontends.onnx import analyze_onnx, load_model

        source = load_model(model)
        graph = analyze_onnx(source, input_shapes=input_shapes)
    allowed = [p for p in (precisions or dev.precisions or ["fp32"]) if p in (dev.precisions or ["fp32"])]
    if not allowed:
        raise InputError(f"none of the precisions {precisions} is supported by {dev.id} ({dev.precisions})")
    space = build_space(graph).restrict(ignore=ignore or (), precisions=allowed + ["fp32"])
    t["analyze"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    from .predictors.accuracy import AccuracyPredictor

    acc = AccuracyPredictor(model if torch_input else source, _calibration_array(calibration_data, graph),
                            labels, example_inputs=example_inputs if torch_input else None, space=space,
                            seed=seed).fit()
    t["accuracy_predictor"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = optimize(space, dev, latency_ms=latency_ms, energy_mj=energy_mj, max_accuracy_drop=max_accuracy_drop,
                      method=method, accuracy_fn=acc.predict_codes, seed=seed)
    t["optimize"] = time.perf_counter() - t0
    notes = list(result.notes) + ([acc.info["note"]] if acc.info.get("note") else []) + \
        [f"accuracy predictor: {acc.info.get('metric')} on {acc.info.get('samples')} samples"]
    design = result.design

    # regression guard: never hand back something predicted slower than the original
    ident = space.identity()
    base = predict(graph, dev)
    chosen = predict(space.design_graph(design), dev)
    if chosen.latency_ms >= base.latency_ms and design != ident:
        notes.append(f"the chosen design is predicted slower ({chosen.latency_ms:.3f} ms vs {base.latency_ms:.3f} ms): "
                     f"kept the original")
        design, chosen = ident, base

    t0 = time.perf_counter()
    applied = apply_design(model if torch_input else source, design, example_inputs=example_inputs,
                           calibration_data=calibration_data, finetune=finetune, finetune_steps=finetune_steps,
                           seed=seed, input_shapes=input_shapes)
    t["rewrite"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = verify(model if torch_input else source, applied.model, design,
               example_inputs=example_inputs if torch_input else None, space=applied.space)
    t["verify"] = time.perf_counter() - t0
    if not v.ok:
        notes.append("verification failed: " + "; ".join(v.problems[:3]))

    new_graph = space.design_graph(design)
    report = Report(
        device=dev.id, budget=budget.to_dict(), method=result.method, feasible=bool(result.feasible),
        design=design.to_dict(),
        predicted={"latency_ms": [base.latency_ms, chosen.latency_ms],
                   "energy_mj": [base.energy_mj, chosen.energy_mj],
                   "accuracy": [float(acc.predict_codes(space.encode(ident)[None])[0]), float(result.accuracy)]},
        totals={"macs": [int(graph.macs), int(new_graph.macs)], "params": [int(graph.params), int(new_graph.params)],
                "size_bytes": [_model_bytes(source), _model_bytes(applied.model)]},
        layers=_layer_rows(space, design, base.layers, chosen.layers), seconds=t, notes=notes, verified=v.ok)

    if measure if measure is not None else (dev.id.startswith(LOCAL_PREFIX) and not torch_input):
        report.measured = _measure_here(source, applied.model, dev, chosen.latency_ms)
        if report.measured["after_ms"] > report.measured["before_ms"]:
            report.notes.append("measured slower than the original on this machine")
    report.seconds["total"] = sum(report.seconds.values())
    out = applied.model
    if torch_input:
        out.report = report
    else:
        meta = {p.key: p for p in out.metadata_props}
        entry = meta.get("edgepass.report") or out.metadata_props.add()
        entry.key, entry.value = "edgepass.report", json.dumps(report.stable_dict(), sort_keys=True, default=float)
    return out, report, bool(result.feasible)


def _measure_here(original, compiled, dev, predicted_ms) -> dict:
    from .devices.measure import measure

    threads = int(dev.threads or 1)
    before = measure(original, threads=threads, runs=20).median_ms
    after = measure(compiled, threads=threads, runs=20).median_ms
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


def write_atomic(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename."""
    path = Path(path)
    if not path.parent.exists():
        raise InputError(f"{path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = ["compile", "Report", "report_of", "write_atomic"]
