"""The training set: every public latency measurement whose architecture the zoo can build, plus
edgepass's own onnxruntime CPU measurements, keyed by the device ids of the embedded database.

    from edgepass import dataset
    ts = dataset.load()                       # TrainingSet (public + our CPU rows)
    ts.counts("source")                       # rows per source
    nb = ts.select(device="help/pixel2", space="nb201", metric="latency_ms")
    feats = dataset.features(nb.specs[nb.spec_code[0]])   # IR summary of that architecture (cached)

Shipped package data (``edgepass/data/dataset/``; format in docs/training-set.md):

* ``public.npz``   -- the public table (``edgepass.training-set/1``), built by
  ``scripts/build_training_set.py`` from shared/data; header ``meta.report`` holds the per-source
  counts of kept / duplicate / not-buildable rows.
* ``cpu_ort.csv.gz`` (+ ``cpu_ort_per_node.jsonl.gz``, ``cpu_ort_meta.json``) -- our measurements
  (``scripts/measure_cpu.py``), devices ``local/cpu-ort-1t`` / ``local/cpu-ort-2t``, source
  ``edgepass-cpu``.

Nothing here reads outside the package at run time. IR features are computed on demand with
:func:`edgepass.analyze` and cached per spec (``$EDGEPASS_CACHE`` or ``~/.cache/edgepass``).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .. import zoo
from ..api import analyze
from ..errors import InputError
from ..fileio import read_prefix, write_atomic
from .table import FORMAT, METRICS, PRECISIONS, TrainingSet

__all__ = ["load", "load_public", "load_cpu", "cpu_per_node", "report", "features", "cache_dir",
           "TrainingSet", "FORMAT", "METRICS", "PRECISIONS", "CPU_SOURCE"]

CPU_SOURCE = "edgepass-cpu"
_DATA = ("data", "dataset")


def _resource(name: str):
    return resources.files("edgepass").joinpath(*_DATA, name)


@lru_cache(maxsize=1)
def load_public() -> TrainingSet:
    """The shipped public table (cached; treat it as read-only)."""
    return TrainingSet.read(_resource("public.npz").read_bytes())


def load_cpu(*, with_stats: bool = False) -> TrainingSet | list[dict[str, str]]:
    """Our CPU measurements as a TrainingSet (source ``edgepass-cpu``), or the raw CSV rows
    (median, IQR, quartiles, min, runs) with ``with_stats=True``."""
    res = _resource("cpu_ort.csv.gz")
    if not res.is_file():
        rows: list[dict[str, str]] = []
    else:
        with gzip.open(io.BytesIO(res.read_bytes()), "rt", newline="") as fh:
            rows = list(csv.DictReader(fh))
    if with_stats:
        return rows
    return TrainingSet.from_rows([(r["device"], r["spec"], r["precision"], "latency_ms", float(r["latency_ms"]),
                                   CPU_SOURCE, r["design"]) for r in rows])


def cpu_per_node() -> list[dict[str, Any]]:
    """Per-node onnxruntime profiles of the profiled subset of our CPU measurements."""
    res = _resource("cpu_ort_per_node.jsonl.gz")
    if not res.is_file():
        return []
    with gzip.open(io.BytesIO(res.read_bytes()), "rt") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load(*, include_cpu: bool = True) -> TrainingSet:
    """Public rows plus (by default) our CPU rows, in one table."""
    pub = load_public()
    return TrainingSet.concat([pub, load_cpu()]) if include_cpu else pub


def report() -> dict[str, Any]:
    """Build report of the public table: per source rows, kept, duplicates, not buildable (+ why)."""
    return load_public().meta.get("report", {})


# ---------------------------------------------------------------------- IR features (lazy, cached)
def cache_dir() -> Path:
    """Where per-spec IR features are cached: ``$EDGEPASS_CACHE/features`` or ``~/.cache/edgepass/features``."""
    base = os.environ.get("EDGEPASS_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgepass")
    return Path(base) / "features"


def _op_row(op) -> dict[str, Any]:
    a = op.attrs
    return {"name": op.name, "kind": op.kind, "in_shapes": [list(s) if s else [] for s in op.in_shapes],
            "out_shapes": [list(s) if s else [] for s in op.out_shapes], "macs": int(op.macs),
            "params": int(op.params), "bytes_read": int(op.bytes_read), "bytes_written": int(op.bytes_written),
            "kernel": list(a["kernel"]) if "kernel" in a else None, "stride": list(a["stride"]) if "stride" in a else None,
            "groups": int(a.get("groups", 1)), "precision": op.precision}


def features(spec: str, *, per_op: bool = True, cache: bool = True) -> dict[str, Any]:
    """IR features of a zoo architecture: ``Graph.summary()`` plus (``per_op``) one row per op.

    Built with ``edgepass.analyze(zoo.build(spec).module, example_inputs)`` on first use and
    cached as JSON per spec (sha1 of the canonical spec) -- 25k+ architectures are far too many
    to precompute or ship.
    """
    canon = zoo.parse(spec)["canonical"]
    key = hashlib.sha1(f"{canon}|per_op={per_op}".encode()).hexdigest()
    path = cache_dir() / key[:2] / f"{key}.json"
    if cache:
        cached = read_cached_features(path, canon, per_op=per_op)
        if cached is not None:
            return cached
    zm = zoo.build(canon)
    graph = analyze(zm.module, zm.example_inputs)
    out = {"spec": canon, **graph.summary()}
    if per_op:
        out["ops"] = [_op_row(op) for op in graph.ops()]
    if cache:
        try:   # atomic: a concurrent reader or a killed writer never leaves half an entry
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(out, separators=(",", ":")).encode())
        except (OSError, InputError):
            pass  # a read-only home must not break feature extraction
    return out


#: the cached per-op rows (``_op_row``): key -> accepted types
_OP_ROW_TYPES = {"name": (str,), "kind": (str,), "in_shapes": (list,), "out_shapes": (list,), "macs": (int,),
                 "params": (int,), "bytes_read": (int,), "bytes_written": (int,), "kernel": (list, type(None)),
                 "stride": (list, type(None)), "groups": (int,), "precision": (str, type(None))}
_SUMMARY_COUNTS = ("macs", "params", "n_ops", "n_layers", "bytes_read", "bytes_written")
#: larger entries are not features of any zoo architecture
_MAX_FEATURE_BYTES = 64 << 20


def read_cached_features(path: Path, canon: str, *, per_op: bool = True) -> dict[str, Any] | None:
    """The cached features at ``path`` when they are what :func:`features` writes for ``canon``;
    None when absent, and None with a one-line warning when malformed (then rebuilt and overwritten)."""
    try:
        raw = read_prefix(path, _MAX_FEATURE_BYTES + 1)
    except OSError:
        return None
    try:
        data = json.loads(raw.decode("utf-8")) if len(raw) <= _MAX_FEATURE_BYTES else None
    except (UnicodeDecodeError, ValueError, RecursionError):
        data = None
    why = "not valid JSON" if data is None else _features_problem(data, canon, per_op)
    if why:
        print(f"edgepass: warning: ignoring cache entry {path} ({why}); recomputing", file=sys.stderr)
        return None
    return data


def _features_problem(data: Any, canon: str, per_op: bool) -> str | None:
    """Why ``data`` is not a features entry of ``canon`` (None when it is)."""
    if not isinstance(data, dict) or data.get("spec") != canon:
        return "not the features of this architecture"
    if not all(_is_count(data.get(k)) for k in _SUMMARY_COUNTS):
        return "summary counts missing or not non-negative integers"
    if not per_op:
        return None
    ops = data.get("ops")
    if not isinstance(ops, list):
        return "per-op rows missing"
    for row in ops:
        if not (isinstance(row, dict) and set(row) == set(_OP_ROW_TYPES)
                and all(isinstance(row[k], t) for k, t in _OP_ROW_TYPES.items())
                and all(_is_count(row[k]) for k in ("macs", "params", "bytes_read", "bytes_written", "groups"))
                and all(_is_counts(shape) for shape in row["in_shapes"] + row["out_shapes"])
                and all(row[k] is None or _is_counts(row[k]) for k in ("kernel", "stride"))):
            return "a per-op row with missing, extra or mistyped fields"
    return None


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_counts(v: Any) -> bool:
    return isinstance(v, list) and all(map(_is_count, v))
