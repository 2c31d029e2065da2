"""Calibration data: whatever the user hands over, turned into a fixed list of model feeds.

int8 needs activation ranges, so the precision passes run the model on representative inputs.
Users have those in many shapes; this module accepts

- a torch tensor or a numpy array, batched along axis 0 (single-input models);
- a list / iterable of batches, each a tensor/array, a tuple of them (one per input, in order)
  or a dict ``{input name: array}``;
- a dict ``{input name: array}`` (each batched along axis 0);
- a path to a ``.npz`` (arrays keyed by input name; a single-input model accepts a file with one
  array under any key, or the array named ``calibration``), a ``.npy`` file, or a directory of
  ``.npy`` / ``.npz`` files (read in sorted name order, each one a batch);
- ``None``: :data:`DEFAULT_SAMPLES` seeded standard-normal samples of the model's input shape,
  with a warning, because ranges measured on noise are not the ranges of real data.

Everything is concatenated sample-wise and re-cut into batches of a fixed size (the model's own
batch dimension when it is fixed, :data:`DEFAULT_BATCH` otherwise), so the feeds, and therefore
the calibrated scales, depend only on the samples and their order, never on how the user batched
them. Bad data (missing input, wrong rank or size, non-numeric or integer data for a float input)
is an :class:`~edgepass.errors.InputError` with a one-line message.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, UnsupportedModelError

DEFAULT_SAMPLES = 32
DEFAULT_SEED = 0
DEFAULT_BATCH = 16


@dataclass(frozen=True)
class InputSpec:
    """One model input: name, shape (``None`` for a dynamic dimension) and numpy dtype."""

    name: str
    shape: tuple
    dtype: Any = np.float32


# --------------------------------------------------------------------------------------------
# input specs of the two back ends
# --------------------------------------------------------------------------------------------
def onnx_input_specs(model) -> list[InputSpec]:
    """Graph inputs (not initializers) of an ONNX ``ModelProto`` or ``onnx_ir.Model``."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        import onnx_ir as ir

        model = ir.to_proto(model)
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        specs.append(InputSpec(inp.name, dims, onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)))
    return specs


def fx_input_specs(gm, example_inputs=None) -> list[InputSpec]:
    """Placeholders of a GraphModule; shapes from ``example_inputs`` or ShapeProp metadata.

    The batch axis is left dynamic: FX modules take any batch size.
    """
    import torch

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if example_inputs is not None:
        ex = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
        if len(ex) != len(placeholders):
            raise InputError(f"{len(ex)} example inputs given, the module takes {len(placeholders)}")
        return [InputSpec(n.name, (None,) + tuple(t.shape[1:]), _np_dtype(t.dtype)) for n, t in zip(placeholders, ex)]
    specs = []
    for n in placeholders:
        meta = n.meta.get("tensor_meta")
        shape = (None,) + tuple(int(d) for d in meta.shape[1:]) if meta is not None else None
        dtype = _np_dtype(meta.dtype) if meta is not None else np.float32
        specs.append(InputSpec(n.name, shape, dtype))
    return specs


def graph_input_specs(graph) -> list[InputSpec]:
    """Input specs of an analysed model (an IR :class:`~edgepass.ir.Graph` of either front end):
    dtypes from the backend model, shapes as analysed (fixed), the batch axis dynamic."""
    backend = graph.graph.get("proto") if graph.graph.get("backend") == "onnx" else graph.graph.get("gm")
    if backend is None:
        dtypes = {}
    elif graph.graph.get("backend") == "onnx":
        dtypes = {s.name: s.dtype for s in onnx_input_specs(backend)}
    else:
        dtypes = {s.name: s.dtype for s in fx_input_specs(backend)}
    tensors = graph.graph["tensors"]
    return [InputSpec(name, (None, *tensors[name][1:]) if name in tensors else None, dtypes.get(name, np.float32))
            for name in graph.graph["inputs"]]


def accuracy_input(graph) -> InputSpec:
    """The model's one floating-point input, which the accuracy predictor feeds (its own synthetic
    samples or the calibration data); any other model is not supported by a compile."""
    specs = graph_input_specs(graph)
    listed = ", ".join(f"{s.name} ({np.dtype(s.dtype).name})" for s in specs) or "none"
    if len(specs) != 1 or not np.issubdtype(np.dtype(specs[0].dtype), np.floating):
        raise UnsupportedModelError(f"a compile estimates accuracy by running the model on one floating-point "
                                    f"input; this model's inputs: {listed} (analyze, predict and apply work)")
    return specs[0]


def _np_dtype(torch_dtype):
    import torch

    return torch.empty((), dtype=torch_dtype).numpy().dtype


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------
def _as_array(x, where: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:
        raise InputError(f"calibration data {where}: cannot read as an array ({type(exc).__name__})") from None
    if arr.dtype == object:
        raise InputError(f"calibration data {where}: not a numeric array (ragged or object data)")
    return arr


MAX_CALIBRATION_SAMPLES = 4096           # read from files; more samples change nothing the passes measure
MAX_CALIBRATION_BYTES = 512 << 20        # per input, so a small compressed file cannot expand into GiBs


class _ReadBudget:
    """Samples and bytes still allowed from calibration files (a directory shares one budget)."""

    def __init__(self):
        self.samples, self.bytes, self.capped = MAX_CALIBRATION_SAMPLES, MAX_CALIBRATION_BYTES, []

    def rows(self, shape: tuple, dtype: np.dtype) -> int:
        """How many of an array's samples (axis 0) may be read."""
        if not shape:
            return 0
        row_bytes = max(1, int(np.prod(shape[1:], dtype=np.float64)) * dtype.itemsize)
        return int(min(shape[0], self.samples, self.bytes // row_bytes))

    def spend(self, n: int, shape: tuple, dtype: np.dtype, where: str) -> None:
        if shape and n < shape[0]:
            self.capped.append(f"{where}: {n} of {shape[0]}")
        if shape:
            self.samples -= n
            self.bytes -= n * max(1, int(np.prod(shape[1:], dtype=np.float64))) * dtype.itemsize


def _npy_header(fh, where: str):
    """(shape, fortran order, dtype) of an .npy stream, read without reading the data."""
    try:
        version = np.lib.format.read_magic(fh)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = read(fh, max_header_size=10_000)
    except Exception as exc:
        raise InputError(f"{where}: not a readable .npy array ({type(exc).__name__})") from None
    if dtype.hasobject:
        raise InputError(f"{where}: not a numeric array (object data is never unpickled)")
    return tuple(int(d) for d in shape), fortran, dtype


def _read_rows(fh, shape: tuple, fortran: bool, dtype: np.dtype, n: int, where: str) -> np.ndarray:
    """The first ``n`` samples of an array whose header was just read from ``fh`` (reads only those)."""
    if fortran and shape and n < shape[0]:
        raise InputError(f"{where}: a Fortran-ordered array over the calibration limit; save it C-ordered")
    count = int(np.prod((n, *shape[1:]) if shape else (), dtype=np.float64))
    data = fh.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise InputError(f"{where}: truncated array data")
    arr = np.frombuffer(data, dtype=dtype, count=count)
    out_shape = (n, *shape[1:]) if shape else ()
    return (arr.reshape(out_shape[::-1]).T if fortran else arr.reshape(out_shape)).copy()


def _load_npy(path: Path, budget: _ReadBudget) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            shape, fortran, dtype = _npy_header(fh, str(path))
            n = budget.rows(shape, dtype)
            arr = _read_rows(fh, shape, fortran, dtype, n, str(path))
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    budget.spend(n, shape, dtype, str(path))
    return arr


def _load_npz(path: Path, specs: list[InputSpec], budget: _ReadBudget) -> dict:
    """The arrays of an .npz, each member's header read first so that at most the budget is expanded."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            members = {m[:-4]: m for m in z.namelist() if m.endswith(".npy")}
            headers = {}
            for key, member in members.items():
                with z.open(member) as fh:
                    headers[key] = _npy_header(fh, f"{path}[{key}]")
            wanted = _npz_keys(path, list(members), specs)
            n = min((budget.rows(headers[k][0], headers[k][2]) for k in wanted.values() if headers[k][0]),
                    default=0)   # the same sample count for every input
            arrays = {}
            for name, key in wanted.items():
                shape, fortran, dtype = headers[key]
                with z.open(members[key]) as fh:
                    _npy_header(fh, f"{path}[{key}]")
                    arrays[name] = _read_rows(fh, shape, fortran, dtype, n if shape else 0, f"{path}[{key}]")
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise InputError(f"{path}: cannot read as .npz ({type(exc).__name__})") from None
    for name, key in wanted.items():
        budget.spend(n, headers[key][0], headers[key][2], f"{path}[{key}]")
    return arrays


def _npz_keys(path: Path, keys: list, specs: list[InputSpec]) -> dict:
    """``{input name: npz key}``: keys named after the inputs, or for one input its only array or
    the array named ``calibration``."""
    names = [s.name for s in specs]
    if all(n in keys for n in names):
        return {n: n for n in names}
    if len(specs) == 1:
        if len(keys) == 1:
            return {names[0]: keys[0]}
        if "calibration" in keys:
            return {names[0]: "calibration"}
    missing = [n for n in names if n not in keys]
    raise InputError(f"{path}: no array for input(s) {', '.join(missing)} (keys: {', '.join(sorted(keys)) or 'none'})")


def _load_path(path: Path, specs: list[InputSpec], budget: _ReadBudget) -> list:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz") and p.is_file())
        if not files:
            raise InputError(f"{path}: no .npy or .npz files in this directory")
        out: list = []
        for f in files:
            if budget.samples <= 0 or budget.bytes <= 0:
                budget.capped.append(f"{path}: files from {f.name} on")
                break
            out.extend(_load_path(f, specs, budget))
        return out
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.suffix == ".npz":
        return [_load_npz(path, specs, budget)]
    if path.suffix == ".npy":
        return [_load_npy(path, budget)]
    raise InputError(f"{path}: calibration data must be a .npz or .npy file or a directory of them")


def _load_files(path: Path, specs: list[InputSpec]) -> list:
    budget = _ReadBudget()
    batches = _load_path(path, specs, budget)
    if budget.capped:
        warnings.warn(f"calibration data over the limit ({MAX_CALIBRATION_SAMPLES} samples, "
                      f"{MAX_CALIBRATION_BYTES >> 20} MiB per input): used the first samples only "
                      f"({'; '.join(budget.capped[:3])})", stacklevel=4)
    return batches


def _to_batch_dict(batch, specs: list[InputSpec], where: str) -> dict:
    """One batch in any accepted form -> ``{input name: array}``."""
    names = [s.name for s in specs]
    if isinstance(batch, dict):
        missing = [n for n in names if n not in batch]
        if missing:
            raise InputError(f"calibration data {where}: missing input(s) {', '.join(missing)} "
                             f"(the model's inputs: {', '.join(names)})")
        extra = sorted(set(map(str, batch)) - set(names))
        if extra:
            raise InputError(f"calibration data {where}: unknown input(s) {', '.join(extra)} "
                             f"(the model's inputs: {', '.join(names)})")
        return {n: _as_array(batch[n], f"{where}[{n!r}]") for n in names}
    if isinstance(batch, (tuple, list)) and not (len(specs) == 1 and _is_numeric_nested(batch)):
        if len(batch) != len(specs):
            raise InputError(f"calibration data {where}: {len(batch)} arrays for a model with {len(specs)} inputs")
        return {n: _as_array(b, f"{where}[{i}]") for i, (n, b) in enumerate(zip(names, batch))}
    if len(specs) != 1:
        raise InputError(f"calibration data {where}: the model has {len(specs)} inputs "
                         f"({', '.join(names)}); give a dict {{input name: array}} or a tuple per batch")
    return {names[0]: _as_array(batch, where)}


def _is_numeric_nested(x) -> bool:
    """A plain nested list of numbers (one array), as opposed to a tuple of arrays."""
    first = x[0] if len(x) else None
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, (int, float, np.number))


def _check(arr: np.ndarray, spec: InputSpec, where: str) -> np.ndarray:
    if spec.shape is not None:
        if arr.ndim != len(spec.shape):
            raise InputError(f"calibration data for {spec.name!r}{where}: {arr.ndim}-d array of shape "
                             f"{tuple(arr.shape)}, the model expects {len(spec.shape)}-d {_fmt(spec.shape)} "
                             f"(batched along axis 0)")
        bad = [i for i, (a, s) in enumerate(zip(arr.shape, spec.shape)) if i > 0 and s is not None and a != s]
        if bad:
            raise InputError(f"calibration data for {spec.name!r}{where}: shape {tuple(arr.shape)} does not "
                             f"match the model's input {_fmt(spec.shape)} at axis {bad[0]}")
    want = np.dtype(spec.dtype)
    if arr.dtype != want:
        ok = (np.issubdtype(want, np.floating) and np.issubdtype(arr.dtype, np.floating)) or (
            np.issubdtype(want, np.integer) and np.issubdtype(arr.dtype, np.integer))
        if not ok:
            raise InputError(f"calibration data for {spec.name!r}{where}: dtype {arr.dtype}, the model expects {want}")
        arr = arr.astype(want)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"calibration data for {spec.name!r}{where}: contains NaN or infinity")
    return np.ascontiguousarray(arr)


def _fmt(shape) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def default_samples(specs: list[InputSpec], n: int = DEFAULT_SAMPLES, seed: int = DEFAULT_SEED) -> dict:
    """``n`` seeded standard-normal samples per input (the documented fallback when no data is given)."""
    rng = np.random.default_rng(seed)
    return {s.name: random_array(rng, (n,) + _sample_shape(s, "pass calibration data"), s.dtype) for s in specs}


def random_array(rng, shape, dtype) -> np.ndarray:
    """Standard-normal floats; zeros for integer and bool inputs (indices: 0 is in range of any table)."""
    if np.issubdtype(np.dtype(dtype), np.floating):
        return rng.standard_normal(shape).astype(dtype)
    return np.zeros(shape, dtype=dtype)


def random_feed(specs: list[InputSpec], seed: int = DEFAULT_SEED) -> dict:
    """One seeded input per spec of its exact shape (a dynamic batch is 1) and dtype: a model's test run."""
    rng = np.random.default_rng(seed)
    return {s.name: random_array(rng, ((s.shape[0] or 1) if s.shape else 1,) +
                                 _sample_shape(s, f"give its shape (--input-shape {s.name}:1,3,224,224)"), s.dtype)
            for s in specs}


def _sample_shape(spec: InputSpec, advice: str) -> tuple:
    """The shape of one sample of ``spec`` (all but the batch axis), which must be fixed to make data up."""
    if spec.shape is None or any(d is None for d in spec.shape[1:]):
        raise InputError(f"input {spec.name!r} has no fixed shape {_fmt(spec.shape) if spec.shape else ''}: {advice}")
    return tuple(spec.shape[1:])


def samples(data, specs: list[InputSpec], *, what: str = "int8") -> dict:
    """All calibration samples as ``{input name: array}``, concatenated along axis 0 and checked."""
    if not specs:
        raise InputError("the model has no inputs to calibrate")
    if data is None:
        warnings.warn(f"no calibration data given: {what} ranges come from {DEFAULT_SAMPLES} random normal inputs "
                      f"(seed {DEFAULT_SEED}); accuracy will suffer, pass representative inputs", stacklevel=3)
        return default_samples(specs)
    if isinstance(data, (str, os.PathLike)):
        batches = _load_files(Path(os.fspath(data)), specs)
    elif isinstance(data, dict) or isinstance(data, np.ndarray) or hasattr(data, "detach"):
        batches = [data]
    elif isinstance(data, tuple) and len(specs) > 1:
        batches = [data]  # one batch, one array per input
    else:
        try:
            batches = list(data)
        except TypeError:
            raise InputError(f"calibration data: cannot use a {type(data).__name__} (give an array, a tensor, "
                             f"a list of batches, a dict of arrays, or a .npz path)") from None
        if batches and len(specs) == 1 and all(isinstance(b, (int, float, np.number)) for b in batches):
            batches = [np.asarray(batches)]
    if not batches:
        raise InputError("calibration data is empty")
    per_input: dict[str, list] = {s.name: [] for s in specs}
    for i, b in enumerate(batches):
        where = f" (batch {i})" if len(batches) > 1 else ""
        d = _to_batch_dict(b, specs, f"batch {i}" if len(batches) > 1 else "")
        counts = {d[s.name].shape[0] if d[s.name].ndim else 0 for s in specs}
        if len(counts) != 1:
            raise InputError(f"calibration data{where}: inputs have different sample counts {sorted(counts)}")
        for s in specs:
            per_input[s.name].append(_check(d[s.name], s, where))
    out = {n: np.concatenate(v, axis=0) for n, v in per_input.items()}
    if next(iter(out.values())).shape[0] == 0:
        raise InputError("calibration data is empty (0 samples)")
    return out


def check_outputs_finite(outputs: np.ndarray, inputs: np.ndarray) -> None:
    """Refuse calibration data on which the original model's ``outputs`` overflow (finite but extreme
    values, e.g. near float32's maximum): no int8 range, refit or accuracy can be measured on it."""
    if np.isfinite(outputs).all():
        return
    peak = float(np.max(np.abs(inputs))) if inputs.size else 0.0
    raise InputError(f"calibration data: the model's outputs on it are not finite (they overflow; largest "
                     f"|input| {peak:.3g}): give data scaled as the model expects")


def _batch_size(specs: list[InputSpec], batch_size: int | None) -> int:
    fixed = {s.shape[0] for s in specs if s.shape and s.shape[0] is not None}
    if len(fixed) > 1:
        raise InputError(f"inputs have different fixed batch sizes {sorted(fixed)}")
    if fixed:
        return fixed.pop()
    return int(batch_size or DEFAULT_BATCH)


def calibration_feeds(data, model, *, batch_size: int | None = None, max_samples: int | None = None,
                      what: str = "int8") -> list[dict]:
    """Feed dicts for an ONNX model (``ModelProto`` / ``onnx_ir.Model``), in a fixed order.

    Samples beyond a whole number of batches of a fixed-batch model are dropped (a model exported
    with batch 1 is fed one sample at a time, so nothing is lost there).
    """
    specs = onnx_input_specs(model)
    return _cut(samples(data, specs, what=what), specs, batch_size, max_samples)


def _cut(allx: dict, specs, batch_size, max_samples) -> list[dict]:
    n = next(iter(allx.values())).shape[0]
    if max_samples is not None:
        n = min(n, int(max_samples))
    bs = _batch_size(specs, batch_size)
    fixed = any(s.shape and s.shape[0] is not None for s in specs)
    stops = range(0, n - bs + 1 if fixed else n, bs)
    feeds = [{k: v[i:i + bs] for k, v in allx.items()} for i in stops]
    if not feeds:
        raise InputError(f"calibration data has {n} samples, the model's fixed batch size is {bs}")
    return feeds


def calibration_tensors(data, gm, example_inputs=None, *, batch_size: int | None = None,
                        max_samples: int | None = None, what: str = "int8") -> list[tuple]:
    """Batches for a torch.fx ``GraphModule``: a list of tuples of tensors, one per placeholder."""
    import torch

    specs = fx_input_specs(gm, example_inputs)
    if data is None and any(s.shape is None for s in specs):
        raise InputError("no calibration data and no example inputs: cannot tell the module's input shape")
    if any(s.shape is None for s in specs):  # no metadata: accept the data's own shape
        specs = [InputSpec(s.name, None, s.dtype) for s in specs]
    feeds = _cut(samples(data, specs, what=what), specs, batch_size, max_samples)
    return [tuple(torch.from_numpy(f[s.name]) for s in specs) for f in feeds]
