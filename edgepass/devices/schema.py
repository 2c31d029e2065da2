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
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DeviceError(f"{origin}: not valid JSON ({exc})") from None
        return cls.from_dict(data, origin=origin)

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
        """Write the device as a JSON file."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

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
        raw = p.read_bytes()
    except OSError as exc:
        raise DeviceError(f"device file {p}: cannot read ({exc.strerror or exc})") from None
    return Device.from_json(raw, origin=f"device file {p.name}")


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
    out["provenance"] = json.loads(json.dumps(prov))  # deep copy, proves it is JSON-able

    d = {**_OPTIONAL_DEFAULTS, **{k: v for k, v in data.items() if k in _OPTIONAL_DEFAULTS}}
    for name in ("threads", "batch_size", "n_measurements"):
        if not _is_int(d[name]) or d[name] < 0:
            raise fail(name, "must be a non-negative integer")
    for name in ("datasheet", "signature"):
        if not isinstance(d[name], dict) or not all(
                isinstance(k, str) and _is_number(v) for k, v in d[name].items()):
            raise fail(name, "must be an object of name -> finite number")
    if any(v < 0 for v in d["signature"].values()):
        raise fail("signature", "latencies (ms) must be >= 0")
    if not isinstance(d["measurements"], dict) or not all(
            isinstance(k, str) and _is_int(v) and v >= 0 for k, v in d["measurements"].items()):
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
