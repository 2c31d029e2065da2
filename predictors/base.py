"""What every predictor returns, and how the optimizers call them.

Two ways in:

* ``predict(graph, device) -> Estimate`` for one model (an IR :class:`~edgepass.ir.Graph`, e.g.
  ``space.design_graph(design)`` for a design that was not built);
* a *table* for many designs of one space: per-knob cost contributions precomputed once for a
  device, so a batch of designs encoded as choice-index arrays (``DesignSpace.encode``) is scored
  with array lookups and sums — what the optimizers call millions of times.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class LayerEstimate:
    """One operator's share of an estimate."""

    name: str
    kind: str
    latency_ms: float
    energy_mj: float | None = None
    macs: int = 0
    precision: str = "fp32"


@dataclass
class Estimate:
    """Predicted cost of one model on one device."""

    device: str
    latency_ms: float
    energy_mj: float | None = None
    energy_calibrated: bool = False        # True only when fitted on measured energy of this device class
    accuracy: float | None = None          # accuracy or fidelity, when an accuracy predictor was asked
    layers: list = field(default_factory=list)   # list[LayerEstimate], in graph order
    notes: list = field(default_factory=list)    # how the estimate was made (e.g. "energy modelled, not measured")

    def to_dict(self) -> dict:
        return asdict(self)
