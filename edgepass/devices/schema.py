"""The device file format (``"schema": "edgepass.device/1"``) and the :class:`Device` record.

A device is everything the optimizer and the predictors may know about a deployment target
*without* running on it: what it is (kind, runtime, threads, batch), which precisions it runs,
datasheet numbers, an optional measured *signature* (latencies of a fixed reference suite,
filled by ``edgepass profile``), and where all of that came from. Devices are exchanged as
JSON only -- user files are never unpickled or executed -- and every malformed file is
rejected with a one-line :class:`~edgepass.errors.DeviceError` that names the offending field,
because a wrong device silently turns into a wrong latency budget.

:meth:`Device.features` turns a device into the fixed-length numeric vector that the
scalable predictors and the amortized optimizer consume (see :data:`FEATURE_NAMES`).
"""
from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import DeviceError
from ..fileio import read_prefix, write_atomic

SCHEMA = "edgepass.device/1"

KINDS: tuple[str, ...] = ("cpu", "gpu", "mobile-cpu", "mobile-gpu", "npu", "asic", "fpga", "mcu")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
#: Runtimes that get their own one-hot slot in :meth:`Device.features`; any other runtime
#: string is accepted in a file and lands in the ``other`` slot.
KNOWN_RUNTIMES: tuple[str, ...] = (
    "tflite", "tflite-micro", "pytorch-mobile", "pytorch", "tensorflow", "onnxruntime",
    "tensorrt", "openvino", "vitis-ai", "tvm", "vendor", "simulator", "unknown",
)
PROVENANCE_KINDS: tuple[str, ...] = ("measured", "public-benchmark", "datasheet", "synthetic")
#: Numeric datasheet keys that enter the feature vector, in this order. Other numeric keys are
#: allowed in ``datasheet`` (kept, shown) but ignored by :meth:`Device.features`.
DATASHEET_FEATURES: tuple[str, ...] = (
    "cores", "big_cores", "mid_cores", "little_cores", "freq_ghz",
    "peak_gflops", "mem_bandwidth_gbs", "mem_gb", "tdp_w",
)

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
_RUNTIME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")

_REQUIRED = ("schema", "id", "name", "kind", "runtime", "precisions", "provenance")
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "threads": 0, "batch_size": 1, "datasheet": {}, "signature": {}, "notes": "",
    "n_measurements": 0, "measurements": {}, "metrics": [], "aliases": [],
}
_FIELDS = _REQUIRED + tuple(_OPTIONAL_DEFAULTS)

#: A device file is a few KiB; anything this large is refused before it is parsed.
MAX_DEVICE_FILE_BYTES = 1 << 20
#: Device files nest a few levels (provenance.latency_fit.op_residual.instead_of); deeper is hostile.
MAX_JSON_DEPTH = 16
#: Integer literals longer than this are refused (the largest legitimate count fits in 64 bits).
_MAX_INT_DIGITS = 19
#: Upper bounds of the integer fields (threads beyond any machine; ONNX Runtime takes an int32).
_INT_LIMITS = {"threads": 4096, "batch_size": 1 << 20, "n_measurements": (1 << 31) - 1}


def _feature_names() -> tuple[str, ...]:
    names: list[str] = []
    for key in DATASHEET_FEATURES:
        names += [f"log1p_{key}", f"missing_{key}"]
    names += ["log1p_threads", "missing_threads", "log1p_batch_size", "missing_batch_size"]
    names += [f"precision_{p}" for p in PRECISIONS]
    names += [f"kind_{k}" for k in KINDS]
    names += [f"runtime_{r}" for r in KNOWN_RUNTIMES] + ["runtime_other"]
    return tuple(names)


#: Names of the entries of :meth:`Device.features`, in order (the vector's documentation).
FEATURE_NAMES: tuple[str, ...] = _feature_names()


@dataclass(frozen=True)
class Device:
    """One deployment target configuration (hardware x runtime x threads x batch x precision).

    ``threads == 0`` and ``batch_size == 0`` mean "not stated by the source" (runtime default).
    ``measurements`` maps a design-space name (``nb201``, ``fbnet``, ...) to how many
    architectures of that space have public measurements on this device; ``n_measurements`` is
    their sum. ``aliases`` are other ids under which the device is known (e.g. the column
    names of the public tables it was merged from); :func:`get_device` accepts them.
    """

    id: str
    name: str
    kind: str
    runtime: str
    precisions: tuple[str, ...]
    provenance: dict[str, Any]
    threads: int = 0
    batch_size: int = 1
    datasheet: dict[str, float] = field(default_factory=dict)
    signature: dict[str, float] = field(default_factory=dict)
    notes: str = ""
    n_measurements: int = 0
    measurements: dict[str, int] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "device") -> "Device":
        """Validate a parsed JSON object and build a Device (``origin`` prefixes errors)."""
        return cls(**_validate(data, origin))

    @classmethod
    def from_json(cls, text: str | bytes, *, origin: str = "device") -> "Device":
        """Parse and validate the JSON text of one device file."""
        return cls.from_dict(parse_strict_json(text, origin), origin=origin)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (the file format, ``schema`` included)."""
        return {
            "schema": SCHEMA, "id": self.id, "name": self.name, "kind": self.kind,
            "runtime": self.runtime, "threads": self.threads, "batch_size": self.batch_size,
            "precisions": list(self.precisions), "datasheet": dict(self.datasheet),
            "signature": dict(self.signature), "provenance": _plain(self.provenance),
            "notes": self.notes, "n_measurements": self.n_measurements,
            "measurements": dict(self.measurements), "metrics": list(self.metrics),
            "aliases": list(self.aliases),
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Deterministic JSON (sorted keys) so device files diff cleanly."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        """Write the device as a JSON file (atomically: an interrupted save leaves the old file)."""
        write_atomic(Path(path), (self.to_json() + "\n").encode("utf-8"))

    # ------------------------------------------------------------------ predictor input
    def features(self) -> list[float]:
        """Fixed-length numeric vector for predictors; entry ``i`` is :data:`FEATURE_NAMES[i]`.

        Numeric values are ``log1p``-scaled (datasheet numbers span 5 orders of magnitude,
        from a 64 MHz MCU to an A100) and every one has a missing-flag, so "unknown" is never
        confused with "zero". Kind and runtime are one-hot; precisions multi-hot.
        """
        vec: list[float] = []
        for key in DATASHEET_FEATURES:
            vec += _num(self.datasheet.get(key))
        vec += _num(self.threads or None)
        vec += _num(self.batch_size or None)
        vec += [1.0 if p in self.precisions else 0.0 for p in PRECISIONS]
        vec += [1.0 if k == self.kind else 0.0 for k in KINDS]
        runtime = self.runtime if self.runtime in KNOWN_RUNTIMES else None
        vec += [1.0 if r == runtime else 0.0 for r in KNOWN_RUNTIMES] + [0.0 if runtime else 1.0]
        return vec

    def summary(self) -> dict[str, Any]:
        """The row shown by ``edgepass devices``."""
        return {
            "id": self.id, "kind": self.kind, "runtime": self.runtime,
            "n_measurements": self.n_measurements, "precisions": list(self.precisions),
            "spaces": sorted(self.measurements), "provenance": self.provenance.get("kind", ""),
        }


def load_device(path: str | Path) -> Device:
    """Read and validate a device JSON file; every failure is a one-line DeviceError."""
    p = Path(path)
    try:
        raw = read_prefix(p, MAX_DEVICE_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:   # ValueError: a NUL byte in the path
        raise DeviceError(f"device file {p}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if len(raw) > MAX_DEVICE_FILE_BYTES:
        raise DeviceError(f"device file {p.name}: larger than {MAX_DEVICE_FILE_BYTES >> 20} MiB; not a device file")
    return Device.from_json(raw, origin=f"device file {p.name}")


# ---------------------------------------------------------------------- strict JSON
def parse_strict_json(text: str | bytes, origin: str) -> Any:
    """JSON as a device file may hold it, else a one-line DeviceError: UTF-8 only, no NaN/Infinity,
    no duplicate keys (which one would win is a parser's whim), no integer literal longer than
    :data:`_MAX_INT_DIGITS` digits (Python refuses 4300+ with a ValueError), at most
    :data:`MAX_JSON_DEPTH` levels of nesting."""
    try:
        if isinstance(text, (bytes, bytearray)):
            text = bytes(text).decode("utf-8")
        data = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                          parse_int=_bounded_int, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise DeviceError(f"{origin}: not valid JSON (not UTF-8 text)") from None
    except RecursionError:
        raise DeviceError(f"{origin}: not valid JSON (nested more than {MAX_JSON_DEPTH} levels)") from None
    except ValueError as exc:   # json.JSONDecodeError and the hooks' refusals
        raise DeviceError(f"{origin}: not valid JSON ({exc})") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise DeviceError(f"{origin}: not valid JSON (nested more than {MAX_JSON_DEPTH} levels)")
    return data


def _unique_keys(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise ValueError(f"integer literal of {len(text)} digits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (so depth itself cannot blow the stack)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


# ---------------------------------------------------------------------- validation helpers
def _num(value: float | None) -> list[float]:
    if value is None:
        return [0.0, 1.0]
    return [math.log1p(max(float(value), 0.0)), 0.0]


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _validate(data: Any, origin: str) -> dict[str, Any]:
    def fail(name: str, why: str) -> DeviceError:
        return DeviceError(f"{origin}: field '{name}' {why}")

    if not isinstance(data, dict):
        raise DeviceError(f"{origin}: top level must be a JSON object, got {type(data).__name__}")
    for name in _REQUIRED:
        if name not in data:
            raise fail(name, "is missing")
    for name in data:
        if name not in _FIELDS:
            close = difflib.get_close_matches(str(name), _FIELDS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise fail(str(name), f"is not part of {SCHEMA}{hint}")
    if data["schema"] != SCHEMA:
        raise fail("schema", f"must be \"{SCHEMA}\", got {data['schema']!r}")
    out: dict[str, Any] = {}

    for name in ("id", "name", "kind", "runtime"):
        if not isinstance(data[name], str) or not data[name].strip():
            raise fail(name, "must be a non-empty string")
    if not _ID_RE.match(data["id"]):
        raise fail("id", "must be lowercase [a-z0-9._-] segments separated by '/'")
    if data["kind"] not in KINDS:
        raise fail("kind", f"must be one of {'/'.join(KINDS)}, got {data['kind']!r}")
    if not _RUNTIME_RE.match(data["runtime"]):
        raise fail("runtime", "must be a lowercase name such as tflite or onnxruntime")
    out.update(id=data["id"], name=data["name"].strip(), kind=data["kind"], runtime=data["runtime"])

    precisions = data["precisions"]
    if (not isinstance(precisions, list) or not precisions
            or any(p not in PRECISIONS for p in precisions) or len(set(precisions)) != len(precisions)):
        raise fail("precisions", f"must be a list of {'/'.join(PRECISIONS)}")
    out["precisions"] = tuple(p for p in PRECISIONS if p in precisions)  # canonical order

    prov = data["provenance"]
    if not isinstance(prov, dict):
        raise fail("provenance", "must be an object with source, licence and kind")
    for key in ("source", "licence", "kind"):
        if not isinstance(prov.get(key), str) or not prov[key].strip():
            raise fail(f"provenance.{key}", "must be a non-empty string")
    if prov["kind"] not in PROVENANCE_KINDS:
        raise fail("provenance.kind", f"must be one of {'/'.join(PROVENANCE_KINDS)}")
    try:   # deep copy, proves it is plain, finite, shallow JSON
        out["provenance"] = json.loads(json.dumps(prov, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        raise fail("provenance", "must hold plain JSON values (finite numbers, strings, lists, objects)") from None
    if _depth(out["provenance"]) > MAX_JSON_DEPTH:
        raise fail("provenance", f"is nested more than {MAX_JSON_DEPTH} levels")
    for key, check in _FITTED_PARAMETERS.items():
        if key in out["provenance"]:
            try:
                check(out["provenance"][key])
            except _FieldError as exc:
                raise fail(f"provenance.{key}{exc.where}", exc.why) from None

    d = {**_OPTIONAL_DEFAULTS, **{k: v for k, v in data.items() if k in _OPTIONAL_DEFAULTS}}
    for name, limit in _INT_LIMITS.items():
        if not _is_int(d[name]) or not 0 <= d[name] <= limit:
            raise fail(name, f"must be an integer from 0 to {limit}")
    for name in ("datasheet", "signature"):
        if not isinstance(d[name], dict) or not all(
                isinstance(k, str) and _is_number(v) for k, v in d[name].items()):
            raise fail(name, "must be an object of name -> finite number")
    if any(v < 0 for v in d["signature"].values()):
        raise fail("signature", "latencies (ms) must be >= 0")
    if any(v < 0 for v in d["datasheet"].values()):   # counts, GHz, GB/s, W: a negative TDP is negative energy
        raise fail("datasheet", "numbers must be >= 0")
    if not isinstance(d["measurements"], dict) or not all(
            isinstance(k, str) and _is_int(v) and 0 <= v <= _INT_LIMITS["n_measurements"]
            for k, v in d["measurements"].items()):
        raise fail("measurements", "must be an object of space -> non-negative integer")
    for name in ("metrics", "aliases"):
        if not isinstance(d[name], list) or not all(isinstance(v, str) for v in d[name]):
            raise fail(name, "must be a list of strings")
    if not isinstance(d["notes"], str):
        raise fail("notes", "must be a string")
    out.update(
        threads=d["threads"], batch_size=d["batch_size"], n_measurements=d["n_measurements"],
        datasheet={k: float(v) for k, v in sorted(d["datasheet"].items())},
        signature={k: float(v) for k, v in sorted(d["signature"].items())},
        measurements=dict(sorted(d["measurements"].items())),
        metrics=tuple(d["metrics"]), aliases=tuple(d["aliases"]), notes=d["notes"],
    )
    return out


# ---------------------------------------------------------------------- fitted predictor parameters
# ``provenance.latency_fit`` (edgepass device fit) and ``provenance.latency_calibration``
# (--calibrate-latency) are numbers the latency predictor computes with: every field is checked
# for type, shape and finiteness here, so a hand-edited file fails on load, not as a NaN budget.
# (The residual's length depends on the predictor artifact: the predictor checks it on use.)
class _FieldError(Exception):
    def __init__(self, where: str, why: str):
        super().__init__(why)
        self.where, self.why = where, why


def _spec(obj: Any, required: dict, optional: dict, where: str = "") -> None:
    """``obj`` must be an object with every ``required`` key, no key outside both, each value
    accepted by its checker (a callable raising _FieldError)."""
    if not isinstance(obj, dict):
        raise _FieldError(where, "must be an object")
    for key in required:
        if key not in obj:
            raise _FieldError(f"{where}.{key}", "is missing")
    for key, value in obj.items():
        check = required.get(key) or optional.get(key)
        if check is None:
            raise _FieldError(f"{where}.{key}", "is not a field of a fitted device")
        check(value, f"{where}.{key}")


def _string(value: Any, where: str) -> None:
    if not isinstance(value, str):
        raise _FieldError(where, "must be a string")


def _optional_string(value: Any, where: str) -> None:
    if value is not None:
        _string(value, where)


def _finite(value: Any, where: str) -> None:
    if not _is_number(value):
        raise _FieldError(where, "must be a finite number")


def _non_negative(value: Any, where: str) -> None:
    _finite(value, where)
    if value < 0:
        raise _FieldError(where, "must be >= 0")


def _count(value: Any, where: str) -> None:
    if not _is_int(value) or not 0 <= value <= _INT_LIMITS["n_measurements"]:
        raise _FieldError(where, "must be a non-negative integer")


def _list_of(check, *, min_len: int = 0, max_len: int = 4096):
    def run(value: Any, where: str) -> None:
        if not isinstance(value, list) or not min_len <= len(value) <= max_len:
            raise _FieldError(where, f"must be a list of {min_len} to {max_len} entries")
        for i, v in enumerate(value):
            check(v, f"{where}[{i}]")
    return run


_class_weights = _list_of(_list_of(_finite, min_len=3, max_len=3), min_len=1)   # (per op, GMAC, MB) per class
_STATS = {k: _non_negative for k in ("loo_rel_rmse", "none_rel_rmse", "mlp_loo_rel_rmse", "expected_rel_rmse",
                                      "alpha")}


def _op_residual(value: Any, where: str, *, nested: bool = False) -> None:
    """One of fit_op_residual's three forms: ``add``/``replace`` (class weights), ``mix`` (weights of
    trained devices' predictors, which may stand in front of another form)."""
    if value is None:
        return
    mode = value.get("mode") if isinstance(value, dict) else None
    if mode in ("add", "replace"):
        extra = {"overhead_ms": _finite, "model": _string} if mode == "replace" else {}
        _spec(value, {"mode": _string, "classes": _list_of(_string, min_len=1), "w": _class_weights},
              {**_STATS, **extra}, where)
        if len(value["w"]) != len(value["classes"]) or len(set(value["classes"])) != len(value["classes"]):
            raise _FieldError(f"{where}.w", "must hold one row per distinct class")
    elif mode == "mix" and not nested:
        _spec(value, {"mode": _string, "devices": _list_of(_string), "w": _list_of(_non_negative),
                      "overhead_ms": _non_negative},
              {**_STATS, "own_w": _non_negative,
               "instead_of": lambda v, w: _op_residual(v, w, nested=True)}, where)
        if len(value["w"]) != len(value["devices"]):
            raise _FieldError(f"{where}.w", "must hold one weight per device")
    else:
        raise _FieldError(f"{where}.mode", "must be add, replace or mix")


def _latency_fit(value: Any) -> None:
    _spec(value, {"model": _string, "residual": _list_of(_finite, min_len=1, max_len=1024)},
          {"log_offset": _finite, "log_scale": _finite, "k": _count, "init_from": _optional_string,
           "fit_rmse_log": _non_negative, "mlp_loo_rel_rmse": _non_negative, "loo_rel_rmse": _non_negative,
           "models": _list_of(_string, max_len=1 << 20), "op_residual": _op_residual})


def _latency_calibration(value: Any) -> None:
    _spec(value, {"model": _string, "fp": _non_negative, "int8": _non_negative, "extra_ms": _non_negative,
                  "designs": _count}, {"max_rel_error": _non_negative})


_FITTED_PARAMETERS = {"latency_fit": _latency_fit, "latency_calibration": _latency_calibration}
