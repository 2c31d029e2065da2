"""Every option of a compile in one type, :class:`CompileOptions`, shared by :func:`edgepass.compile`,
:func:`edgepass.compile_fleet` and the CLI; each value is checked when the options are made."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import MAX_SEED, OptionError
from .ir import PRECISIONS
from .optimizers.budget import Budget
from .optimizers.methods import METHODS

#: default ``evaluate_top`` with calibration data, and the largest model (MACs) it applies to: each
#: evaluation is a full rewrite (int8 calibration included) plus inference on the calibration data,
#: ~0.1 s for the digits CNN but ~28 s for resnet50 (4.1 GMACs; benchmarks/compile.py)
EVALUATE_TOP = 4
EVALUATE_MAX_MACS = 2e9


def check_number(name: str, value, *, allow_zero: bool = False) -> None:
    """A budget: None, or a finite real number > 0 (>= 0 with ``allow_zero``); never a bool or a string."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise OptionError(f"{name} must be a number, not {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise OptionError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number, "
                          f"not {value!r}")


def check_int(name: str, value, *, high: int | None = None) -> None:
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
        if not isinstance(self.method, str) or self.method not in METHODS:
            raise OptionError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        for name in ("latency_ms", "latency_fraction", "energy_mj"):
            check_number(name, getattr(self, name))
        check_number("max_accuracy_drop", self.max_accuracy_drop, allow_zero=True)
        if self.latency_fraction is not None and self.latency_ms is not None:
            raise OptionError("give latency_ms or latency_fraction, not both")
        if all(v is None for v in (self.latency_ms, self.latency_fraction, self.energy_mj, self.max_accuracy_drop)):
            raise OptionError("give a budget: latency_ms, latency_fraction, energy_mj and/or max_accuracy_drop")
        check_int("seed", self.seed, high=MAX_SEED)
        check_int("finetune_steps", self.finetune_steps)
        if self.evaluate_top is not None:
            check_int("evaluate_top", self.evaluate_top)
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
        lat = self.latency_ms if self.latency_fraction is None else self.latency_fraction * original_ms
        return Budget(latency_ms=lat, energy_mj=self.energy_mj, max_accuracy_drop=self.max_accuracy_drop)


__all__ = ["CompileOptions", "EVALUATE_TOP", "EVALUATE_MAX_MACS", "check_number", "check_int"]
