"""The compile cache's accuracy-predictor entries (``--cache-dir``).

A fitted :class:`~edgepass.predictors.accuracy.AccuracyPredictor` is the slow part of a compile
(hundreds of rewrites measured on the calibration data), and it depends only on the model, the
data, the design space and its options, not on the device: it is stored once as JSON (never a
pickle: a cache directory may be shared) and reloaded by later compiles and by every device of a
fleet. The key also covers the predictor's source code, so editing the predictor invalidates it.
Trained optimizers live in the same directory (``edgepass.optimizers.api.cache_dir``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

# the inputs, re-attached from the current compile on load rather than stored
_INPUTS = ("model", "space", "x", "labels", "example_inputs", "knobs", "reference", "_flat")   # + derived tables
_VERSION = 3   # 2: one-pass ONNX recalibration; 3: least-squares reconstruction (measured metrics changed)


def _source_sha() -> str:
    from .predictors import accuracy

    return hashlib.sha256(Path(accuracy.__file__).read_bytes()).hexdigest()[:12]


def _path(cache_dir, key: str) -> Path:
    from .optimizers.api import cache_dir as resolve

    digest = hashlib.sha256(f"{_VERSION}-{_source_sha()}-{key}".encode()).hexdigest()[:24]
    return resolve(cache_dir) / "accuracy" / f"{digest}.json"


def _encode(v):
    if isinstance(v, np.ndarray):
        return {"__ndarray__": v.tolist(), "dtype": str(v.dtype)}
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return {"__tuple__": [_encode(x) for x in v]}
    if isinstance(v, list):
        return [_encode(x) for x in v]
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise TypeError("non-string keys")
        return {k: _encode(x) for k, x in v.items()}
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot store a {type(v).__name__}")


def _decode(v):
    if isinstance(v, dict):
        if "__ndarray__" in v:
            return np.asarray(v["__ndarray__"], dtype=v["dtype"])
        if "__tuple__" in v:
            return tuple(_decode(x) for x in v["__tuple__"])
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def save_accuracy(cache_dir, key: str, predictor) -> bool:
    """Store ``predictor``'s fitted state; False (and nothing written) when it cannot be stored."""
    from .compile import write_atomic
    from .errors import InputError

    try:
        state = {k: _encode(v) for k, v in vars(predictor).items() if k not in _INPUTS}
        text = json.dumps({"class": type(predictor).__qualname__, "state": state}, sort_keys=True)
        path = _path(cache_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode())
        return True
    except (TypeError, ValueError, OSError, InputError):
        return False


def load_accuracy(cache_dir, key: str, *, model, space, x, labels, example_inputs):
    """The cached predictor for ``key`` with the current inputs re-attached, or None."""
    from .api import is_torch_module
    from .predictors.accuracy import AccuracyPredictor

    try:
        path = _path(cache_dir, key)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # an unreadable entry is a miss, not an error
    if data.get("class") != AccuracyPredictor.__qualname__:
        return None
    pred = AccuracyPredictor.__new__(AccuracyPredictor)
    pred.__dict__.update({k: _decode(v) for k, v in data["state"].items()})
    pred.model, pred.space, pred.example_inputs = model, space, example_inputs
    pred.torch = is_torch_module(model)
    pred.x = None if x is None else np.asarray(x, dtype=np.float32)
    pred.labels = None if labels is None else np.asarray(labels)
    pred.knobs = space.knobs()
    # the original's top-1 on the same data: what fidelity is measured against (compile's evaluate_top)
    ref = getattr(pred, "reference_logits", None)
    pred.reference = None if ref is None else np.asarray(ref).argmax(1)
    return pred


def _evals_path(cache_dir, key: str) -> Path:
    return _path(cache_dir, key).with_suffix(".evaluated.json")


def load_evaluations(cache_dir, key: str) -> dict:
    """Design JSON -> metric measured on the calibration data (compile's ``evaluate_top``) for the
    predictor of ``key``; {} when none are cached or the file is unreadable."""
    try:
        data = json.loads(_evals_path(cache_dir, key).read_text())
        return {str(k): float(v) for k, v in data.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def save_evaluations(cache_dir, key: str, evaluated: dict) -> None:
    """Store ``evaluated`` next to the predictor (deterministic values: a later compile reuses them)."""
    from .compile import write_atomic
    from .errors import InputError

    try:
        path = _evals_path(cache_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(evaluated, sort_keys=True).encode())
    except (OSError, InputError):
        pass   # a read-only cache only costs time


__all__ = ["save_accuracy", "load_accuracy", "load_evaluations", "save_evaluations"]
