"""What a compile reports: :class:`Report` (per-layer rows, predicted and measured figures) and
:func:`report_of`, which reads it back from a compiled model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .util import is_torch_module


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


def layer_rows(space, design, table_before, table_after) -> list:
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


def model_bytes(model) -> int:
    if is_torch_module(model):
        import torch

        def size(v) -> int:  # quantized modules keep packed (weight, bias) tuples and dtypes in state_dict
            if isinstance(v, torch.Tensor):
                return v.numel() * v.element_size()
            return sum(size(x) for x in v) if isinstance(v, (tuple, list)) else 0
        return int(sum(size(v) for v in model.state_dict().values()))
    return len(model.SerializeToString())


def report_of(model) -> dict | None:
    """The report a compile attached to ``model`` (an nn.Module or an ONNX ModelProto)."""
    if hasattr(model, "report"):
        return model.report.to_dict()
    for p in getattr(model, "metadata_props", []):
        if p.key == "edgepass.report":
            return json.loads(p.value)
    return None


__all__ = ["LayerReport", "Report", "layer_rows", "model_bytes", "report_of"]
