"""Per-op feature vectors of the IR and the architecture subset the latency predictor learns from.

An op's feature vector (:data:`OP_FEATURES`) is computed from an :class:`~edgepass.ir.Op` or from the
cached per-op rows of :func:`edgepass.dataset.features` (same keys), so the training set and a user's
graph see exactly the same numbers:

kind one-hot (:data:`KIND_GROUPS`), log1p MACs / bytes read / bytes written / params, kernel size,
stride, grouped and depthwise flags, log channels in/out, log output and input spatial size, and
precision one-hot (fp32/fp16/int8). Weighted-op precision can be overridden (public int8 rows are
measured with the whole network in int8 while the zoo builds fp32 graphs).
"""
from __future__ import annotations

import math
import zlib

import numpy as np

KIND_GROUPS = ("conv", "linear", "matmul", "batchnorm", "layernorm", "act", "identity", "add", "mul", "binary",
               "concat", "split", "slice", "pool", "global_pool", "reduce", "reshape", "transpose", "pad",
               "resize", "softmax", "quantize", "other")
_KIND_MAP = {"sub": "binary", "div": "binary", "binary": "binary", "gather": "slice", "expand": "reshape",
             "cast": "quantize", "dequantize": "quantize", "groupnorm": "layernorm"}
PRECISIONS = ("fp32", "fp16", "int8")
OP_FEATURES = tuple(f"kind_{k}" for k in KIND_GROUPS) + (
    "log_macs", "log_bytes_read", "log_bytes_written", "log_params", "kernel", "stride", "grouped", "depthwise",
    "log_cin", "log_cout", "log_hw_out", "log_hw_in", "log_macs_per_byte") + tuple(f"prec_{p}" for p in PRECISIONS)
N_OP = len(OP_FEATURES)
#: feature name -> its column in an op feature vector
OP_FEATURE_INDEX = {n: i for i, n in enumerate(OP_FEATURES)}
_KIND_INDEX = {k: i for i, k in enumerate(KIND_GROUPS)}


def _kind_slot(kind: str) -> int:
    k = _KIND_MAP.get(kind, kind)
    return _KIND_INDEX.get(k, _KIND_INDEX["other"])


def _chw(shape) -> tuple[int, int]:
    """(channels, spatial size) of an activation shape (NCHW for rank 4, else last axis)."""
    if not shape:
        return 1, 1
    shape = [int(s) for s in shape]
    if len(shape) == 4:
        return shape[1], shape[2] * shape[3]
    if len(shape) == 3:
        return shape[-1], shape[1]
    return shape[-1], 1


def op_vector(kind: str, in_shapes, out_shapes, macs: int, params: int, bytes_read: int, bytes_written: int,
              kernel, stride, groups: int, precision: str) -> np.ndarray:
    v = np.zeros(N_OP, dtype=np.float64)
    v[_kind_slot(kind)] = 1.0
    j = len(KIND_GROUPS)
    cin, hw_in = _chw(in_shapes[0] if in_shapes else None)
    cout, hw_out = _chw(out_shapes[0] if out_shapes else None)
    k = float(kernel[0]) if kernel else 0.0
    s = float(stride[0]) if stride else 0.0
    g = int(groups or 1)
    v[j:j + 13] = (math.log1p(macs), math.log1p(bytes_read), math.log1p(bytes_written), math.log1p(params), k, s,
                   1.0 if g > 1 else 0.0, 1.0 if (g > 1 and g == cin) else 0.0, math.log1p(cin), math.log1p(cout),
                   math.log1p(hw_out), math.log1p(hw_in), math.log1p(macs) - math.log1p(bytes_read + bytes_written))
    v[j + 13 + (PRECISIONS.index(precision) if precision in PRECISIONS else 0)] = 1.0
    return v


def op_features(op, precision: str | None = None) -> np.ndarray:
    """Feature vector of an IR :class:`~edgepass.ir.Op` (``precision`` overrides a weighted op's)."""
    a = op.attrs
    prec = precision if (precision and op.kind in ("conv", "linear")) else op.precision
    return op_vector(op.kind, op.in_shapes, op.out_shapes, op.macs, op.params, op.bytes_read, op.bytes_written,
                     a.get("kernel"), a.get("stride"), a.get("groups", 1), prec)


def row_features(row: dict, precision: str | None = None) -> np.ndarray:
    """Feature vector of one cached per-op row of :func:`edgepass.dataset.features`."""
    prec = precision if (precision and row["kind"] in ("conv", "linear")) else row.get("precision", "fp32")
    return op_vector(row["kind"], row["in_shapes"], row["out_shapes"], row["macs"], row["params"], row["bytes_read"],
                     row["bytes_written"], row.get("kernel"), row.get("stride"), row.get("groups", 1), prec)


def graph_matrix(graph, precision: str | None = None) -> tuple[np.ndarray, list]:
    """(n_ops x N_OP matrix, ops) of an IR graph, ops in topological order."""
    ops = list(graph.ops())
    if not ops:
        return np.zeros((0, N_OP)), ops
    return np.stack([op_features(op, precision) for op in ops]), ops


# ---------------------------------------------------------------------- training subset
def stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


#: architectures per space that get IR features in training (the rest of a space is not featurized:
#: building 30k models at ~0.2 s each does not fit the training budget); our CPU's are always in.
SUBSET = {"nb201": 1000, "fbnet": 600, "ofa": 300, "anb": 300, "tv": 10_000}


def training_specs(ts, subset: dict | None = None) -> list[str]:
    """Deterministic architecture subset: every spec our CPU measured plus the first ``subset[space]``
    specs of each space by a stable hash; interleaved by space."""
    subset = SUBSET if subset is None else subset
    cpu = set()
    if "edgepass-cpu" in ts.sources:
        src = ts.sources.index("edgepass-cpu")
        cpu = {ts.specs[i] for i in np.unique(ts.spec_code[ts.source_code == src])}
    by_space: dict[str, list[str]] = {}
    for s in ts.specs:
        by_space.setdefault(s.split(":", 1)[0].split("@", 1)[0], []).append(s)
    lists = []
    for space, specs in by_space.items():
        specs = sorted(specs, key=lambda s: (s not in cpu, stable_hash(s)))
        n = subset.get(space, 0) + sum(1 for s in specs if s in cpu)
        lists.append(specs[:n])
    out = []
    for i in range(max(len(x) for x in lists)):
        out += [x[i] for x in lists if i < len(x)]
    return out
