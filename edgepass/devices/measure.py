"""Measure an ONNX model's latency on this machine with onnxruntime (CPU).

This is the ground truth the rest of edgepass is checked against: the end-to-end benchmark
compares predicted latency with what :func:`measure` reports for the compiled model, and the
device profiler builds a device's ``signature`` from it. The protocol is therefore fixed and
documented rather than clever: CPU execution provider, ``intra_op_num_threads = threads``,
``inter_op_num_threads = 1``, sequential execution (so per-node times add up and thread counts
mean what they say), random inputs drawn once from the model's declared input shapes (dynamic
dimensions -> 1) with a seeded generator, ``warmup`` untimed runs, then ``runs`` timed runs.
Median and IQR are reported because latency distributions are skewed by the OS scheduler.

Per-node times (``profile=True``) come from onnxruntime's own profiler in a *separate* session,
so the profiler's overhead never inflates the end-to-end numbers.
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from ..errors import InputError

ModelLike = Union[str, os.PathLike, bytes, Any]  # path, serialized bytes, or onnx.ModelProto

_ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16,
    "tensor(int32)": np.int32, "tensor(int64)": np.int64, "tensor(bool)": np.bool_,
}


@dataclass
class NodeTime:
    """Time of one graph node (as named in the session's optimized graph), ms per run."""

    name: str
    op_type: str
    ms: float
    calls_per_run: float


@dataclass
class Measurement:
    """Result of :func:`measure`; ``times_ms`` holds every timed run, in order."""

    model: str
    threads: int
    optimization: str
    runs: int
    warmup: int
    seed: int
    median_ms: float
    iqr_ms: float
    p25_ms: float
    p75_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    times_ms: list[float]
    inputs: dict[str, list[int]]
    provider: str = "CPUExecutionProvider"
    onnxruntime: str = ""
    per_node: list[NodeTime] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``edgepass measure --json``)."""
        return asdict(self)


def _load_bytes(model: ModelLike) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "<bytes>"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        try:
            return path.read_bytes(), str(path)
        except OSError as exc:
            raise InputError(f"cannot read model {path}: {exc.strerror or exc}") from None
    if hasattr(model, "SerializeToString"):  # onnx.ModelProto without importing onnx here
        return model.SerializeToString(), f"<{type(model).__name__}>"
    raise InputError(f"measure() needs an ONNX file path, bytes or onnx.ModelProto, got {type(model).__name__}")


#: ``optimization`` argument -> onnxruntime graph optimization level. "all" is what a deployment
#: uses (fastest) but its layout transforms rename nodes (``conv1`` -> ``h_nchwc``); "basic" or
#: "extended" keep the model's node names in per-node profiles.
OPTIMIZATION_LEVELS = ("all", "extended", "basic", "disable")
#: every latency measured here (candidates, before/after) times at least 20 runs and this long: a
#: small model's 20 runs span under a millisecond, and the medians of such short spans swing by tens
#: of percent on a busy machine
MIN_SECONDS = 0.1


def _session(data: bytes, label: str, threads: int, profile_dir: str | None, optimization: str = "all"):
    import onnxruntime as ort  # heavy import, only when measuring

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[optimization]
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # warnings from ORT would otherwise land in the user's stdout/stderr
    if profile_dir is not None:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "edgepass_profile")
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several pybind types for a corrupt/invalid model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"cannot load ONNX model {label}: {first[:300]}") from None


def _random_inputs(sess, seed: int) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in (inp.shape or [])]  # dynamic -> 1
        dtype = _ORT_DTYPES.get(inp.type)
        if dtype is None:
            raise InputError(f"model input '{inp.name}' has unsupported type {inp.type}")
        if np.issubdtype(dtype, np.floating):
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype is np.bool_:
            arr = rng.random(shape) < 0.5
        else:  # small non-negative ints: valid as indices for Gather/Embedding-like inputs
            arr = rng.integers(0, 2, size=shape).astype(dtype)
        feeds[inp.name] = arr
        shapes[inp.name] = shape
    return feeds, shapes


def _run(sess, feeds: dict[str, np.ndarray], label: str) -> float:
    t0 = time.perf_counter_ns()
    try:
        sess.run(None, feeds)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"running ONNX model {label} failed: {first[:300]}") from None
    return (time.perf_counter_ns() - t0) / 1e6


def _per_node(data: bytes, label: str, threads: int, feeds, runs: int, warmup: int,
              optimization: str) -> list[NodeTime]:
    """Profile in a separate session; keep node events inside the last ``runs`` model runs."""
    with tempfile.TemporaryDirectory(prefix="edgepass-prof-") as tmp:
        sess = _session(data, label, threads, tmp, optimization)
        for _ in range(warmup + runs):
            _run(sess, feeds, label)
        events = json.loads(Path(sess.end_profiling()).read_text())
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[-runs:]
    if not windows:
        return []
    start = windows[0][0]
    totals: dict[str, list[float]] = {}
    op_types: dict[str, str] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time") or e.get("ts", -1) < start:
            continue
        node = name[: -len("_kernel_time")]
        totals.setdefault(node, [0.0, 0])
        totals[node][0] += e.get("dur", 0) / 1e3  # us -> ms
        totals[node][1] += 1
        op_types[node] = (e.get("args") or {}).get("op_name", "")
    n = len(windows)
    out = [NodeTime(name=k, op_type=op_types[k], ms=v[0] / n, calls_per_run=v[1] / n) for k, v in totals.items()]
    return sorted(out, key=lambda t: (-t.ms, t.name))


#: most timed runs ``min_seconds`` may add
MAX_RUNS = 10_000


def measure(model_path_or_proto: ModelLike, *, threads: int = 1, runs: int = 20, warmup: int = 5,
            profile: bool = False, seed: int = 0, optimization: str = "all",
            min_seconds: float = 0.0) -> Measurement:
    """Time ``runs`` inferences of an ONNX model on this CPU (see the module docstring).

    ``min_seconds``: keep timing (up to :data:`MAX_RUNS` runs) until the timed runs add up to at
    least this long. A median of 20 runs of a 0.04 ms model spans under a millisecond and one
    scheduler hiccup moves it by half (measured here: 79 % spread over 10 repeats, 0.6 % with
    2,000 runs); ``Measurement.runs`` is the number actually timed.

    ``optimization`` is onnxruntime's graph optimization level (:data:`OPTIMIZATION_LEVELS`);
    per-node names are those of the optimized graph, so use "basic" to keep the model's names.

    Raises :class:`~edgepass.errors.InputError` for an unreadable, corrupt or unrunnable model
    and for non-positive ``threads``/``runs`` or negative ``warmup``.
    """
    for name, value, low in (("threads", threads, 1), ("runs", runs, 1), ("warmup", warmup, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(min_seconds, (int, float)) or isinstance(min_seconds, bool) or not 0 <= min_seconds < 3600:
        raise InputError(f"min_seconds must be a number of seconds in [0, 3600), got {min_seconds!r}")
    if optimization not in OPTIMIZATION_LEVELS:
        raise InputError(f"optimization must be one of {'/'.join(OPTIMIZATION_LEVELS)}, got {optimization!r}")
    import onnxruntime as ort

    data, label = _load_bytes(model_path_or_proto)
    sess = _session(data, label, threads, None, optimization)
    feeds, shapes = _random_inputs(sess, seed)
    for _ in range(warmup):
        _run(sess, feeds, label)
    times = [_run(sess, feeds, label) for _ in range(runs)]
    total_ms = sum(times)
    while total_ms < 1000 * min_seconds and len(times) < MAX_RUNS:
        times.append(_run(sess, feeds, label))
        total_ms += times[-1]
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    per_node = _per_node(data, label, threads, feeds, runs, warmup, optimization) if profile else []
    return Measurement(
        model=label, threads=threads, optimization=optimization, runs=len(times), warmup=warmup, seed=seed,
        median_ms=statistics.median(times), iqr_ms=q[2] - q[0], p25_ms=q[0], p75_ms=q[2],
        mean_ms=statistics.fmean(times), min_ms=min(times), max_ms=max(times), times_ms=times,
        inputs=shapes, onnxruntime=ort.__version__, per_node=per_node,
    )
