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
import math
import sys
from pathlib import Path

import numpy as np

from .errors import InputError
from .fileio import read_prefix, write_atomic
from .predictors import accuracy
from .predictors.accuracy import AccuracyPredictor, CORRECTIONS
from .util import cache_dir as cache_root, is_torch_module

# the inputs, re-attached from the current compile on load rather than stored
_INPUTS = ("model", "space", "x", "labels", "example_inputs", "knobs", "reference", "_flat")   # + derived tables
_VERSION = 3   # 2: one-pass ONNX recalibration; 3: least-squares reconstruction (measured metrics changed)
#: a cache entry larger than this is not one we wrote for any model edgepass compiles
MAX_ENTRY_BYTES = 512 << 20
_ARRAY_DTYPES = ("float64", "float32", "int64")


def _source_sha() -> str:
    return hashlib.sha256(Path(accuracy.__file__).read_bytes()).hexdigest()[:12]


def accuracy_entry_path(cache_dir, key: str) -> Path:
    digest = hashlib.sha256(f"{_VERSION}-{_source_sha()}-{key}".encode()).hexdigest()[:24]
    return cache_root(cache_dir) / "accuracy" / f"{digest}.json"


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


class CacheEntryError(ValueError):
    """A cache file with the expected format but content this version did not write: a miss."""


def _warn_ignored(path: Path, why: str) -> None:
    """One stderr line per bad entry (it is recomputed and overwritten, so it is not seen twice)."""
    print(f"edgepass: warning: ignoring cache entry {path} ({why}); recomputing", file=sys.stderr)


def _read_json(path: Path):
    """The parsed entry, None when absent; CacheEntryError when unreadable, oversized or not JSON."""
    try:
        raw = read_prefix(path, MAX_ENTRY_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CacheEntryError(f"unreadable: {exc.strerror or exc}") from None
    if len(raw) > MAX_ENTRY_BYTES:
        raise CacheEntryError(f"larger than {MAX_ENTRY_BYTES >> 20} MiB")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise CacheEntryError("not valid JSON") from None


def _decode(v):
    """:func:`_encode`'s inverse, accepting only what it writes: numeric arrays of the dtypes a
    predictor holds (never object arrays), tuples, lists, string-keyed objects, scalars."""
    if isinstance(v, dict):
        if "__ndarray__" in v:
            if set(v) != {"__ndarray__", "dtype"} or v["dtype"] not in _ARRAY_DTYPES:
                raise CacheEntryError("an array entry with an unexpected dtype or extra keys")
            try:
                return np.asarray(v["__ndarray__"], dtype=v["dtype"])
            except (TypeError, ValueError, OverflowError):
                raise CacheEntryError("an array entry that is not a rectangular numeric array") from None
        if "__tuple__" in v:
            if set(v) != {"__tuple__"} or not isinstance(v["__tuple__"], list):
                raise CacheEntryError("a malformed tuple entry")
            return tuple(_decode(x) for x in v["__tuple__"])
        return {k: _decode(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


# -- the accuracy predictor's state: every stored attribute, its type and shape ----------------
def _expect(ok: bool, name: str, why: str) -> None:
    if not ok:
        raise CacheEntryError(f"{name} {why}")


def _is_finite_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _finite_array(v, name: str, ndim: int) -> None:
    _expect(isinstance(v, np.ndarray) and v.ndim == ndim and v.dtype.kind == "f" and bool(np.isfinite(v).all()),
            name, f"must be a finite {ndim}-d float array")


def _check_bool(v, name, ctx):
    _expect(isinstance(v, bool), name, "must be true or false")


def _check_optional_bool(v, name, ctx):
    _expect(v is None or isinstance(v, bool), name, "must be true, false or null")


def _check_count(v, name, ctx):
    _expect(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 31, name, "must be a count")


def _check_metric_value(v, name, ctx):
    _expect(_is_finite_number(v) and 0.0 <= v <= 1.0, name, "must be a number in [0, 1]")


def _check_metric_name(v, name, ctx):
    _expect(v in ("accuracy", "fidelity"), name, "must be accuracy or fidelity")


def _check_per_knob(v, name, ctx):
    """One finite row per knob of the current space, one value per choice."""
    knobs = ctx["knobs"]
    _expect(isinstance(v, list) and len(v) == len(knobs), name, f"must hold one row per knob ({len(knobs)})")
    for row, (_, _, choices) in zip(v, knobs):
        _finite_array(row, name, 1)
        _expect(len(row) == len(choices), name, "rows must hold one value per choice")


def _check_logits(v, name, ctx):
    _finite_array(v, name, 2)
    _expect(ctx["samples"] is None or len(v) == ctx["samples"], name, "must hold one row per calibration sample")


def _check_correction(v, name, ctx):
    _expect(isinstance(v, dict) and v.get("kind") in CORRECTIONS, name, f"kind must be one of {CORRECTIONS}")
    fields = {"kind", "loo_mae", "loo_spearman"} | ({"xs", "ys"} if v["kind"] in ("isotonic", "damage") else
                                                  {"w"} if v["kind"] == "ridge" else set())
    _expect(set(v) <= fields and set(v) >= fields - {"loo_mae", "loo_spearman"}, name, "has unexpected fields")
    for key in ("loo_mae", "loo_spearman"):
        scores = v.get(key, {})
        _expect(isinstance(scores, dict) and all(map(_is_finite_number, scores.values())), name, f"{key} malformed")
    numbers = {k: v[k] for k in ("xs", "ys", "w") if k in v}
    _expect(all(isinstance(x, list) and all(map(_is_finite_number, x)) for x in numbers.values()),
            name, "must hold lists of finite numbers")
    if "xs" in v:
        _expect(len(v["xs"]) == len(v["ys"]) and all(a <= b for a, b in zip(v["xs"], v["xs"][1:])),
                name, "xs must increase and match ys")
    _expect(len(v.get("w", [0] * 5)) == 5, name, "w must hold 5 coefficients")


def _check_info(v, name, ctx):
    """Free-form report metadata, but plain, finite and small."""
    try:
        text = json.dumps(v, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        text = None
    _expect(isinstance(v, dict) and text is not None and len(text) < 1 << 20, name, "must be a plain JSON object")


_STATE_SCHEMA = {
    "base": _check_metric_value, "batch_size": _check_count, "correction": _check_correction,
    "damage": _check_per_knob, "delta": _check_per_knob, "data_free": _check_bool, "info": _check_info,
    "max_knobs": _check_count, "max_levels": _check_count, "metric": _check_metric_name, "n_fit": _check_count,
    "recalibrate": _check_bool, "reconstruct": _check_optional_bool, "reference_logits": _check_logits,
    "seed": _check_count, "torch": _check_bool,
}


def _checked_state(data, *, knobs, samples) -> dict:
    """The decoded predictor state of a cache entry, or CacheEntryError: exactly the keys of
    :data:`_STATE_SCHEMA` (no more, no fewer), each of the type and shape the current space needs."""
    _expect(isinstance(data, dict) and set(data) == {"class", "state"}, "entry", "must hold class and state")
    _expect(data["class"] == AccuracyPredictor.__qualname__, "class", f"must be {AccuracyPredictor.__qualname__}")
    _expect(isinstance(data["state"], dict), "state", "must be an object")
    state = {k: _decode(v) for k, v in data["state"].items()}
    unknown, missing = sorted(set(state) - set(_STATE_SCHEMA)), sorted(set(_STATE_SCHEMA) - set(state))
    _expect(not unknown and not missing, "state", f"keys differ (unknown {unknown[:3]}, missing {missing[:3]})")
    ctx = {"knobs": knobs, "samples": samples}
    for key, check in _STATE_SCHEMA.items():
        check(state[key], f"state.{key}", ctx)
    _expect(state["base"] is not None and state["info"].get("metric", state["metric"]) == state["metric"],
            "state.info", "disagrees with state.metric")
    return state


def save_accuracy(cache_dir, key: str, predictor) -> bool:
    """Store ``predictor``'s fitted state; False (and nothing written) when it cannot be stored."""
    try:
        state = {k: _encode(v) for k, v in vars(predictor).items() if k not in _INPUTS}
        text = json.dumps({"class": type(predictor).__qualname__, "state": state}, sort_keys=True, allow_nan=False)
        path = accuracy_entry_path(cache_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text.encode())
        return True
    except (TypeError, ValueError, OSError, InputError):
        return False


def load_accuracy(cache_dir, key: str, *, model, space, x, labels, example_inputs):
    """The cached predictor for ``key`` with the current inputs re-attached, or None (absent, or an
    entry that fails :func:`_checked_state`: warned about once, then recomputed and overwritten)."""
    try:
        path = accuracy_entry_path(cache_dir, key)
    except OSError:
        return None   # an unusable cache folder is a miss, not an error
    knobs = space.knobs()
    try:
        data = _read_json(path)
        if data is None:
            return None
        state = _checked_state(data, knobs=knobs, samples=None if x is None else len(x))
    except CacheEntryError as exc:
        _warn_ignored(path, str(exc))
        return None
    pred = AccuracyPredictor.__new__(AccuracyPredictor)
    pred.__dict__.update(state)
    pred.model, pred.space, pred.example_inputs = model, space, example_inputs
    pred.torch = is_torch_module(model)
    pred.x = None if x is None else np.asarray(x, dtype=np.float32)
    pred.labels = None if labels is None else np.asarray(labels)
    pred.knobs = knobs
    # the original's top-1 on the same data: what fidelity is measured against (compile's evaluate_top)
    pred.reference = pred.reference_logits.argmax(1)
    return pred


# -- evaluation records: design JSON -> metric measured on the calibration data -----------------
class EvaluationRecords(dict):
    """Design JSON -> measured metric; ``unconfirmed`` holds the keys read from the cache, which
    :func:`confirm_records` re-measures before they may decide a compile's choice."""

    def __init__(self, *args, unconfirmed=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.unconfirmed = set(unconfirmed)


def evaluations_path(cache_dir, key: str) -> Path:
    return accuracy_entry_path(cache_dir, key).with_suffix(".evaluated.json")


def load_evaluations(cache_dir, key: str) -> EvaluationRecords:
    """Design JSON -> metric measured on the calibration data (compile's ``evaluate_top``) for the
    predictor of ``key``, all marked unconfirmed; empty when none are cached or the file is
    malformed (then warned about; the next save overwrites it)."""
    try:
        path = evaluations_path(cache_dir, key)
        data = _read_json(path)
        if data is None:
            return EvaluationRecords()
        _expect(isinstance(data, dict), "records", "must be an object")
        for design, metric in data.items():
            _check_metric_value(metric, "a record's metric", None)
    except OSError:
        return EvaluationRecords()
    except CacheEntryError as exc:
        _warn_ignored(path, str(exc))
        return EvaluationRecords()
    return EvaluationRecords({k: float(v) for k, v in data.items()}, unconfirmed=data)


def save_evaluations(cache_dir, key: str, evaluated: dict) -> None:
    """Store ``evaluated`` next to the predictor (deterministic values: a later compile reuses them)."""
    try:
        path = evaluations_path(cache_dir, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(dict(evaluated), sort_keys=True).encode())
    except (OSError, InputError):
        pass   # a read-only cache only costs time


#: a re-measured metric differs from its record by at most this much (the same deterministic
#: rewrite and inference; more is a stale or planted record)
RECORD_TOLERANCE = 1e-6


def decisive_candidates(metrics: list, eligible: list, best: int) -> list:
    """The candidates whose metric decides a best-of choice: the winner, the runner-up and the
    optimizer's own pick (index 0, what the choice departs from)."""
    rest = sorted((i for i in eligible if i != best), key=lambda i: (-metrics[i], i))
    return list(dict.fromkeys([best, *rest[:1], 0]))


def confirm_records(evaluated: dict, designs: list, measure, cache=None) -> bool:
    """Re-measure those of ``designs`` whose metric came from the cache (``measure(design)``).
    True when every one agrees with its record; otherwise every record read from the cache is
    dropped (they are measured again on the next request) and the cache file is rewritten with the
    confirmed ones only, and False: the caller must choose again."""
    unconfirmed = getattr(evaluated, "unconfirmed", set())
    wrong = []
    for design in designs:
        key = design.to_json(indent=None)
        if key in unconfirmed:
            metric = float(measure(design))
            unconfirmed.discard(key)
            if not abs(metric - evaluated[key]) <= RECORD_TOLERANCE:
                wrong.append(key)
                evaluated[key] = metric
    if not wrong:
        return True
    for key in list(unconfirmed):
        evaluated.pop(key, None)
    unconfirmed.clear()
    where = evaluations_path(*cache) if cache is not None else "the cache"
    print(f"edgepass: warning: {len(wrong)} cached evaluation record(s) in {where} disagree with a new "
          f"measurement; dropped the unconfirmed records and measuring again", file=sys.stderr)
    if cache is not None:
        save_evaluations(*cache, evaluated)
    return False


__all__ = ["save_accuracy", "load_accuracy", "load_evaluations", "save_evaluations", "EvaluationRecords",
           "confirm_records", "decisive_candidates", "CacheEntryError"]
