"""Latency predictions on one device: of IR graphs (:func:`predict`, :func:`predict_latency`,
:func:`predict_many`) and of the designs of a design space (:class:`LatencyTable`)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from edgepass.devices import get_device
from edgepass.knob_tables import designed_ops, op_combos, summed_tables, table_sums

from .base import Estimate, LayerEstimate
from .features import graph_matrix, op_features
from .latency_model import LatencyModel, check_latencies, device_precision, load_model, predict_matrices
from .latency_ops import op_classes


# ---------------------------------------------------------------------- graphs
def _graph_total(model: LatencyModel, X: np.ndarray, state: dict) -> tuple[float, np.ndarray, float]:
    per_op = model.op_latency(X, state)
    ov = model.overhead_ms(state)
    raw = float(per_op.sum() + ov)
    return raw, per_op, ov


def predict(graph, device, *, model: LatencyModel | None = None) -> Estimate:
    """Latency of an IR graph on a device: per-op rows (scaled so they sum to the total with the
    per-graph overhead as its own row) and the total in ms."""
    m = model or load_model()
    dev = get_device(device)
    state = m.device_state(dev)
    X, ops = graph_matrix(graph, device_precision(dev))
    raw, per_op, ov = _graph_total(m, X, state)
    total = float(m.correct(raw, state))
    check_latencies(per_op, [op.name for op in ops], total, dev)
    scale = total / raw if raw > 0 else 1.0
    layers = [LayerEstimate(name=op.name, kind=op.kind, latency_ms=float(t * scale), macs=int(op.macs),
                            precision=op.precision) for op, t in zip(ops, per_op)]
    layers.append(LayerEstimate(name="(per-graph overhead)", kind="overhead", latency_ms=float(ov * scale)))
    notes = [f"latency: kernel-level MLP ({m.version}), device vector from {state['source']}"]
    if (state.get("opres") is not None or state.get("mix") is not None) and len(X):
        # the few-shot residual / linear model / mixture is fitted on the measured models only: say
        # when this graph is unlike them (unseen op classes, or the total > 2x off the adapted MLP's)
        plain = {k: v for k, v in state.items() if k not in ("opres", "opres_overhead", "mix")}
        if "mlp_ab" in state:
            plain["a"], plain["b"] = state["mlp_ab"]
        ref = float(m.correct(_graph_total(m, X, plain)[0], plain))
        index = state["opres"][0] if state.get("opres") is not None else None
        unseen = set() if index is None or "*" in index else set(op_classes(X)) - set(index)
        if not 0.5 <= total / max(ref, 1e-12) <= 2.0 or unseen:
            notes.append(f"warning: this model is unlike the device's measured models ({len(unseen)} op classes "
                         f"they lacked; {total:.3g} ms vs {ref:.3g} ms from the adapted predictor alone) -- "
                         "measure it or add it to the device fit")
    return Estimate(device=dev.id, latency_ms=total, layers=layers, notes=notes)


def predict_latency(graph, device, *, model: LatencyModel | None = None) -> float:
    """Total predicted latency (ms) of an IR graph."""
    m = model or load_model()
    dev = get_device(device)
    state = m.device_state(dev)
    X, ops = graph_matrix(graph, device_precision(dev))
    raw, per_op, _ = _graph_total(m, X, state)
    total = float(m.correct(raw, state))
    check_latencies(per_op, [op.name for op in ops], total, dev)
    return total


def predict_many(graphs: Iterable, device, *, model: LatencyModel | None = None) -> np.ndarray:
    """Totals (ms) for several graphs on one device (one MLP pass over their stacked ops)."""
    m = model or load_model()
    dev = get_device(device)
    state = m.device_state(dev)
    pairs = [graph_matrix(g, device_precision(dev)) for g in graphs]
    mats = [X for X, _ in pairs]
    totals = predict_matrices(mats, state, m)
    if not (np.isfinite(totals).all() and (totals >= 0).all()):   # find the op to blame
        for (X, ops), total in zip(pairs, totals):
            check_latencies(m.op_latency(X, state), [op.name for op in ops], total, dev)
    return totals



# ---------------------------------------------------------------------- design-space tables
class LatencyTable:
    """Per-op latency of every relevant knob combination of a design space on one device, so that a
    batch of encoded designs (``space.encode``) is scored with array lookups and sums.

    An op's latency depends only on the widths of the channel groups its tensors carry, its own
    kernel and its own precision: those combinations are enumerated per op, predicted in one MLP
    batch, and ops with the same knob set share one summed table.
    """

    def __init__(self, space, device, *, model: LatencyModel | None = None):
        self.space = space
        self.model = m = model or load_model()
        self.device = get_device(device)
        self.state = m.device_state(self.device)
        dprec = device_precision(self.device)
        self.knobs = space.knobs()
        combos = op_combos(space)
        ops = designed_ops(combos)
        X = np.stack([op_features(o, dprec) for o in ops])
        per_op = m.op_latency(X, self.state)
        self.constant, self.tables = summed_tables(combos, per_op)
        self.constant += m.overhead_ms(self.state)
        self.n_ops = len(combos)
        # every design's total lies between these bounds: checked once, not per batch of designs
        low, high = (self.constant + sum(f(t) for _, _, t in self.tables) for f in (np.min, np.max))
        check_latencies(per_op, [o.name for o in ops],
                        m.correct(np.array([low, high]), self.state), self.device)

    def predict_raw(self, codes: np.ndarray) -> np.ndarray:
        return table_sums(codes, self.constant, self.tables)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        """Predicted latency (ms) per row of ``codes`` (n_designs x n_knobs, from ``space.encode``)."""
        return np.asarray(self.model.correct(self.predict_raw(codes), self.state), dtype=np.float64)

    def predict_design(self, design) -> float:
        return float(self.predict(self.space.encode(design)[None])[0])


__all__ = ["predict", "predict_latency", "predict_many", "LatencyTable"]
