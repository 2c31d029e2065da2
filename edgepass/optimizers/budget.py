"""What an optimizer is asked for: one type shared by both optimizers, the API and the CLI."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Budget:
    """Constraints and goal.

    * ``latency_ms`` / ``energy_mj`` set: maximise predicted accuracy subject to the caps;
    * ``max_accuracy_drop`` set (and no cap): minimise latency subject to accuracy >= reference - drop;
    * ``tradeoff`` > 0 with ``latency_ms``: maximise accuracy - tradeoff * latency / latency_ms
      (the cap still holds).
    """

    latency_ms: float | None = None
    energy_mj: float | None = None
    max_accuracy_drop: float | None = None
    tradeoff: float = 0.0

    def __post_init__(self):
        for name in ("latency_ms", "energy_mj", "max_accuracy_drop"):
            v = getattr(self, name)
            if v is not None and (not np.isfinite(v) or v < 0 or (v == 0 and name != "max_accuracy_drop")):
                raise InputError(f"budget {name} must be a positive number, not {v!r}")
        if self.latency_ms is None and self.energy_mj is None and self.max_accuracy_drop is None:
            raise InputError("give a budget: latency_ms, energy_mj and/or max_accuracy_drop")
        if self.tradeoff < 0:
            raise InputError("tradeoff must be >= 0")

    @property
    def mode(self) -> str:
        if self.latency_ms is None and self.energy_mj is None:
            return "min_latency"
        return "max_accuracy"

    def violation(self, latency, energy, accuracy, reference_accuracy: float | None = None) -> np.ndarray:
        """How far each candidate is outside the budget (0 = feasible), in relative units."""
        v = np.zeros(np.shape(latency), dtype=np.float64)
        if self.latency_ms is not None:
            v += np.maximum(0.0, np.asarray(latency) / self.latency_ms - 1.0)
        if self.energy_mj is not None and energy is not None:
            v += np.maximum(0.0, np.asarray(energy) / self.energy_mj - 1.0)
        if self.max_accuracy_drop is not None and reference_accuracy is not None:
            floor = reference_accuracy - self.max_accuracy_drop
            v += np.maximum(0.0, floor - np.asarray(accuracy)) / max(abs(reference_accuracy), 1e-9)
        return v

    def objective(self, latency, energy, accuracy) -> np.ndarray:
        """Higher is better (feasibility is handled separately)."""
        if self.mode == "min_latency":
            return -np.asarray(latency, dtype=np.float64)
        obj = np.asarray(accuracy, dtype=np.float64).copy()
        if self.tradeoff and self.latency_ms:
            obj -= self.tradeoff * np.asarray(latency) / self.latency_ms
        return obj

    def to_dict(self) -> dict:
        return asdict(self)
