"""ONNX front end: a ``ModelProto`` (or a path) -> :class:`~edgepass.ir.Graph`.

Shapes come from ONNX shape inference (with data propagation, so exporter shape subgraphs fold).
Tensors computable without the model input (initializers, ``Constant``, ``Shape`` and what is
computed from them only) are *static*: they become :class:`~edgepass.ir.Const` operands, not ops,
which is how the FX front end sees parameters too.

Weighted layers get their module path as name, recovered from (in order) the weight initializer's
name (``layer1.0.conv1.weight``), the dynamo exporter's ``namespace`` metadata, or the legacy
exporter's scoped node name (``/layer1/layer1.0/conv1/Conv``).
"""
from __future__ import annotations

import math
import operator
import os
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from ..errors import InputError, UnsupportedModelError
from ..ir import Const, Graph, Op, UniqueNames

_ELEM = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16",
         onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT32: "int32",
         onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool", onnx.TensorProto.DOUBLE: "fp64"}
_ACT = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "Elu", "Gelu", "Erf",
        "Sqrt", "Exp", "Neg", "Softplus", "Mish", "Selu", "Celu", "Abs", "Reciprocal", "Log", "Floor", "Ceil",
        "Round", "Sign", "Not"}
_IDENTITY = {"Identity", "Dropout"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "binary", "Max": "binary",
           "Min": "binary", "PRelu": "binary", "Where": "binary", "Equal": "binary", "Less": "binary",
           "Greater": "binary"}
_SIMPLE = {"Concat": "concat", "Split": "split", "Slice": "slice", "Gather": "gather", "MaxPool": "pool",
           "AveragePool": "pool", "GlobalAveragePool": "pool", "GlobalMaxPool": "pool", "ReduceMean": "reduce",
           "ReduceSum": "reduce", "ReduceMax": "reduce", "Reshape": "reshape", "Flatten": "reshape",
           "Squeeze": "reshape", "Unsqueeze": "reshape", "Transpose": "transpose", "Expand": "expand",
           "Pad": "pad", "Resize": "resize", "Upsample": "resize", "Softmax": "softmax", "LogSoftmax": "softmax",
           "BatchNormalization": "batchnorm", "LayerNormalization": "layernorm",
           "InstanceNormalization": "groupnorm", "GroupNormalization": "groupnorm", "Cast": "cast",
           "QuantizeLinear": "quantize", "DequantizeLinear": "dequantize"}


#: the largest model input accepted, in elements with the batch (128 MiB of float32, e.g. 3 x 3344 x 3344):
#: a compile runs the model on hundreds of samples of it; a larger declared shape is a typo or an attack
MAX_INPUT_ELEMENTS = 2**25
#: the largest tensor accepted anywhere in the model, in elements (4 GiB of float32)
MAX_TENSOR_ELEMENTS = 2**30


def load_model(model, *, check: bool = True) -> onnx.ModelProto:
    """Read an ONNX model from a path, bytes or a ``ModelProto``; corrupt input -> :class:`InputError`."""
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray)):
        data, where, path = bytes(model), "ONNX bytes", None
    else:
        path = Path(os.fspath(model))
        where = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{where}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{where}: is a directory, not an ONNX file") from None
        except OSError as exc:
            raise InputError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise InputError(f"{where}: empty file, not an ONNX model")
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:
        raise InputError(f"{where}: not a valid ONNX model (cannot parse protobuf: {type(exc).__name__})") from None
    if path is not None and any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer):
        try:  # weights stored beside the model (the dynamo exporter's default for big models)
            onnx.load_external_data_for_model(proto, str(path.parent))
        except Exception as exc:
            raise InputError(f"{where}: cannot read its external weight data ({type(exc).__name__}: {exc})") from None
    if not proto.graph.node or not proto.opset_import:
        raise InputError(f"{where}: not a valid ONNX model (no graph or no opset)")
    if check:
        try:
            onnx.checker.check_model(proto)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"{where}: invalid ONNX model ({first})") from None
    return with_unique_node_names(proto)


def with_unique_node_names(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto``, or a copy whose unnamed or duplicate-named nodes are named ``<OpType>_<index>``: the
    rewrite passes find a layer's node by name (hand-built models often leave names empty)."""
    names = [n.name for n in proto.graph.node]
    if all(names) and len(set(names)) == len(names):
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())     # never rename the caller's nodes
    unique = UniqueNames(filter(None, names), sep="_")
    seen: set = set()
    for i, node in enumerate(proto.graph.node):
        if not node.name or node.name in seen:
            node.name = unique(f"{node.op_type}_{i}")
        seen.add(node.name)
    return proto


def fix_input_shapes(model: onnx.ModelProto, input_shapes: dict | None = None) -> onnx.ModelProto:
    """Copy of ``model`` with concrete input dims: ``input_shapes`` wins, a dynamic batch becomes 1."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    given = dict(input_shapes or {})
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        if inp.name in given:
            shape = _given_shape(inp.name, given.pop(inp.name))
            if len(shape) != len(dims):
                raise InputError(f"input shape for {inp.name!r} has {len(shape)} dims, the model's input has {len(dims)}")
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = v
            _check_input_size(inp.name, shape)
            continue
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if axis == 0:
                d.Clear()
                d.dim_value = 1
            else:
                raise InputError(f"input {inp.name!r} has a dynamic dimension at axis {axis} "
                                 f"({d.dim_param or '?'}); fix it with --input-shape {inp.name}:1,3,224,224")
        _check_input_size(inp.name, [d.dim_value for d in dims])
    if given:
        raise InputError(f"input shape given for unknown input(s): {', '.join(sorted(given))}")
    return model


def _given_shape(name: str, shape) -> list[int]:
    """A user's shape for input ``name`` as positive ints (``input_shapes=`` / ``--input-shape``)."""
    try:
        dims = [operator.index(d) for d in shape]
    except TypeError:
        raise InputError(f"input shape for {name!r} must be a sequence of integers, not {shape!r}") from None
    if not all(d > 0 for d in dims):
        raise InputError(f"input shape for {name!r} must have positive dimensions, not {tuple(dims)}")
    return dims


def _check_input_size(name: str, dims) -> None:
    n = math.prod(int(d) for d in dims)
    if n > MAX_INPUT_ELEMENTS:
        raise InputError(f"input {name!r} of shape {tuple(int(d) for d in dims)} has {n:.3g} elements, over "
                         f"edgepass's limit of {MAX_INPUT_ELEMENTS:.3g} per input (128 MiB of float32)")


def check_tensor_sizes(shapes: dict) -> None:
    """Refuse a model whose shape inference gives a tensor over :data:`MAX_TENSOR_ELEMENTS`, before
    anything allocates it (shapes: tensor name -> dims)."""
    for name, dims in shapes.items():
        n = math.prod(int(d) for d in dims)
        if n > MAX_TENSOR_ELEMENTS:
            raise UnsupportedModelError(f"tensor {name!r} of shape {tuple(dims)} has {n:.3g} elements, over "
                                        f"edgepass's limit of {MAX_TENSOR_ELEMENTS:.3g} (4 GiB of float32)")


def outer_scope_inputs(node) -> list[str]:
    """Names that the subgraphs of ``node`` (If branches, Loop/Scan bodies, nested) read from the
    enclosing graph without listing them as inputs, in first-use order."""
    found: list[str] = []

    def subgraphs(n):
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                yield a.g
            elif a.type == onnx.AttributeProto.GRAPHS:
                yield from a.graphs

    def walk(graph, enclosing: set) -> None:   # enclosing: names defined by the subgraphs around this one
        local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
        for n in graph.node:
            for name in n.input:
                if name and name not in local and name not in enclosing and name not in found:
                    found.append(name)
            for sub in subgraphs(n):
                walk(sub, enclosing | local)
            local.update(o for o in n.output if o)

    for sub in subgraphs(node):
        walk(sub, set())
    return found


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _module_from_namespace(node) -> str | None:
    for p in node.metadata_props:
        if p.key == "namespace":
            name = None
            for comp in p.value.split("/"):
                n, _, cls = comp.partition(": ")
                if n and cls and not cls.startswith("aten."):
                    name = n
            return name
    return None


def _module_from_scope(node_name: str) -> str | None:
    """``/layer1/layer1.0/conv1/Conv`` -> ``layer1.0.conv1`` (legacy exporter scopes)."""
    if not node_name.startswith("/"):
        return None
    comps = [c for c in node_name.split("/")[1:-1] if c]
    if not comps:
        return None
    quals: list[str] = []
    for i, c in enumerate(comps):
        if i and c.startswith(comps[i - 1] + "."):
            parent = quals[-2] if len(quals) > 1 else ""
            quals[-1] = f"{parent}.{c}" if parent else c
        else:
            quals.append(f"{quals[-1]}.{c}" if quals else c)
    return quals[-1]


_REWRITE_SUFFIX = re.compile(r"(_quantized|_fp16)(\.\d+)?$")


def _layer_name(node, weight_name: str | None) -> str | None:
    if weight_name:
        while _REWRITE_SUFFIX.search(weight_name):  # names given by our own precision pass
            weight_name = _REWRITE_SUFFIX.sub("", weight_name)
        for suffix in (".weight", ".in_proj_weight"):
            if weight_name.endswith(suffix):
                return weight_name[: -len(suffix)] if suffix == ".weight" else weight_name[: -len(suffix)]
    return _module_from_namespace(node) or _module_from_scope(node.name)


class _Builder:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        g = model.graph
        self.inits = {i.name: i for i in g.initializer}
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, str] = {}
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            tt = vi.type.tensor_type
            if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
                self.shapes[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
            self.dtypes[vi.name] = _ELEM.get(tt.elem_type, "fp32")
        for i in g.initializer:
            self.shapes[i.name] = tuple(i.dims)
            self.dtypes[i.name] = _ELEM.get(i.data_type, "fp32")
        self.static: dict[str, str] = {n: n for n in self.inits}   # static tensor -> source initializer/tensor
        self.values: dict[str, np.ndarray] = {}
        self.ops: list[Op] = []
        self.unique = UniqueNames()
        self.unknown: list[str] = []

    def value(self, t: str):
        """Numeric value of a static tensor when cheaply known (initializers, Constant nodes)."""
        if t in self.values:
            return self.values[t]
        src = self.static.get(t)
        if src in self.inits:
            return numpy_helper.to_array(self.inits[src])
        return None

    def const(self, t: str, position: int, role: str) -> Const:
        src = self.static.get(t, t)
        shape = self.shapes.get(t, self.shapes.get(src, ()))
        dtype = self.dtypes.get(src, self.dtypes.get(t, "fp32"))
        return Const(src, tuple(shape), dtype, position, role)

    def mark_static(self, node, outer: list | None = None) -> bool:
        """``outer``: the node's :func:`outer_scope_inputs`, when the caller has them already."""
        ins = [i for i in node.input if i] + (outer_scope_inputs(node) if outer is None else outer)
        if node.op_type == "Constant":
            for o in node.output:
                self.static[o] = o
                v = _attrs(node)
                t = v.get("value")
                if t is not None:
                    arr = numpy_helper.to_array(t)
                    self.values[o] = arr
                    self.shapes.setdefault(o, tuple(arr.shape))
                    self.dtypes[o] = _ELEM.get(t.data_type, "fp32")
            return True
        if node.op_type == "Shape" or (ins and all(i in self.static for i in ins)):
            for o in node.output:
                # Identity/Cast/DequantizeLinear of an initializer still *is* that initializer for slicing
                self.static[o] = self.static.get(ins[0], o) if (ins and node.op_type in (
                    "Identity", "Cast", "DequantizeLinear")) else o
            if node.op_type == "DequantizeLinear" and ins and self.static.get(ins[0]) in self.inits:
                self.dtypes[node.output[0] + "@quant"] = self.dtypes.get(self.static[ins[0]], "fp32")
            return True
        return False

    def visit(self, idx: int, node) -> None:
        outer = outer_scope_inputs(node)
        if self.mark_static(node, outer):
            return
        t = node.op_type
        a = _attrs(node)
        acts = [(i, name) for i, name in enumerate(node.input) if name and name not in self.static]
        # If/Loop/Scan bodies read outer tensors by name: they are inputs too (their channels must stay)
        acts += [(len(node.input) + j, name) for j, name in enumerate(outer)
                 if name not in self.static and name not in node.input]
        consts = [self.const(name, i, "other") for i, name in enumerate(node.input) if name and name in self.static]
        missing = [n for _, n in acts if n not in self.shapes] + [o for o in node.output if o and o not in self.shapes]
        name = node.name or f"{t}_{idx}"
        attrs: dict = {}
        kind = None
        precision = "fp32"
        if missing:
            kind = "unknown"
            attrs["reason"] = f"no static shape for {missing[0]}"
        elif t == "Conv" and len(acts) == 1 and node.input[1] in self.static:
            w = self.const(node.input[1], 1, "weight")
            k = tuple(w.shape[2:])
            n = len(k)
            pads = list(a.get("pads", [0] * 2 * n))
            auto = a.get("auto_pad", b"NOTSET")
            auto = auto.decode() if isinstance(auto, bytes) else auto
            if auto not in ("NOTSET", "VALID"):
                pads = [(d * (kk - 1)) // 2 for d, kk in zip(a.get("dilations", [1] * n), k)] * 2
            groups = int(a.get("group", 1))
            attrs = dict(in_channels=w.shape[1] * groups, out_channels=w.shape[0], kernel=k,
                         stride=tuple(a.get("strides", [1] * n)), padding=tuple(pads[:n]), pads=tuple(pads),
                         dilation=tuple(a.get("dilations", [1] * n)), groups=groups, bias=len(node.input) > 2 and bool(node.input[2]))
            consts = [w] + ([self.const(node.input[2], 2, "bias")] if attrs["bias"] else [])
            name = _layer_name(node, w.name) or name
            kind = "conv"
            precision = self.weight_precision(node.input[1])
        elif t in ("Gemm", "MatMul") and len(acts) == 1 and len(node.input) > 1 and node.input[1] in self.static \
                and len(self.shapes.get(node.input[1], ())) == 2 and not a.get("transA", 0):
            w = self.const(node.input[1], 1, "weight")
            trans = bool(a.get("transB", 0))
            kin, kout = (w.shape[1], w.shape[0]) if trans else (w.shape[0], w.shape[1])
            has_bias = t == "Gemm" and len(node.input) > 2 and bool(node.input[2])
            attrs = dict(in_features=kin, out_features=kout, bias=has_bias, weight_transposed=not trans)
            consts = [w] + ([self.const(node.input[2], 2, "bias")] if has_bias else [])
            name = _layer_name(node, w.name) or name
            kind = "linear"
            precision = self.weight_precision(node.input[1])
        elif t in ("MatMul", "Gemm"):
            kind = "matmul"
            attrs["k"] = self.shapes[acts[0][1]][-1] if acts else 0
            if len(acts) != 2:
                kind, attrs = "unknown", {"reason": "matmul with a constant left operand"}
        elif t in _ACT:
            kind = "act"
            attrs["fn"] = t.lower()
        elif t in _IDENTITY:
            kind = "identity"
        elif t in _BINARY:
            kind = _BINARY[t]
        elif t == "Gather" and self.is_identity_gather(node, a):
            kind = "reshape"  # the dynamo exporter writes some flattens as a gather of arange indices
            attrs = {"gather_indices": node.input[1]}
        elif t in _SIMPLE:
            kind = _SIMPLE[t]
            attrs = self.simple_attrs(kind, t, node, a, consts)
            if kind in ("batchnorm", "layernorm", "groupnorm"):
                consts = [Const(c.name, c.shape, c.dtype, c.position,
                                "param" if c.position in (1, 2) else "other") for c in consts]
        else:
            kind = "unknown"
        if kind == "unknown":
            self.unknown.append(t)
            attrs.setdefault("type", t)
        outs = [o for o in node.output if o]
        op = Op(name=self.unique(name), kind=kind, ref=node.name or name, backend_op=t,
                inputs=[n for _, n in acts], outputs=outs,
                in_shapes=[self.shapes.get(n, ()) for _, n in acts],
                out_shapes=[self.shapes.get(o, ()) for o in outs], consts=consts, attrs=attrs,
                input_positions=[i for i, _ in acts], precision=precision, order=idx)
        self.ops.append(op)

    def is_identity_gather(self, node, a) -> bool:
        idx = self.value(node.input[1]) if len(node.input) > 1 else None
        shape = self.shapes.get(node.input[0])
        if idx is None or not shape or np.ndim(idx) == 0:
            return False
        n = shape[int(a.get("axis", 0)) % len(shape)]
        return idx.size == n and np.array_equal(idx.ravel(), np.arange(n))

    def weight_precision(self, w: str) -> str:
        if w + "@quant" in self.dtypes:
            return "int8"
        return {"fp16": "fp16", "bf16": "bf16", "int8": "int8"}.get(self.dtypes.get(self.static.get(w, w), "fp32"), "fp32")

    def simple_attrs(self, kind, t, node, a, consts) -> dict:
        ins = list(node.input)
        rank = len(self.shapes.get(ins[0], ())) if ins and ins[0] else 0
        if kind == "concat":
            return {"axis": int(a["axis"]) % len(self.shapes[node.output[0]])}
        if kind == "split":
            sizes = a.get("split")
            if sizes is None and len(ins) > 1 and ins[1]:
                v = self.value(ins[1])
                sizes = v.tolist() if v is not None else None
            return {"axis": int(a.get("axis", 0)) % rank, "sizes": list(sizes) if sizes is not None else None}
        if kind == "slice":
            vals = [self.value(i) if i else None for i in ins[1:5]]
            starts, ends = vals[0], vals[1]
            axes = vals[2] if len(vals) > 2 and vals[2] is not None else np.arange(len(starts) if starts is not None else 0)
            steps = vals[3] if len(vals) > 3 and vals[3] is not None else np.ones(len(axes), dtype=np.int64)
            if starts is None or ends is None or len(axes) != 1:
                return {"axis": None}
            return {"axis": int(axes[0]) % rank, "start": int(starts[0]), "end": int(ends[0]), "step": int(steps[0])}
        if kind == "gather":
            idx = self.value(ins[1])
            return {"axis": int(a.get("axis", 0)) % rank,
                    "index": int(idx) if idx is not None and np.ndim(idx) == 0 else None}
        if kind == "pool":
            attrs = {"mode": "max" if "Max" in t else "avg"}
            if t.startswith("Global"):
                attrs["adaptive"] = True
            else:
                attrs.update(kernel=tuple(a.get("kernel_shape", ())), stride=tuple(a.get("strides", ())))
            return attrs
        if kind == "reduce":
            axes = a.get("axes")
            if axes is None and len(ins) > 1 and ins[1]:
                v = self.value(ins[1])
                axes = v.tolist() if v is not None else None
            if axes is None:
                axes = [] if a.get("noop_with_empty_axes", 0) else list(range(rank))
            return {"axes": sorted(int(x) % rank for x in axes), "keepdims": bool(a.get("keepdims", 1))}
        if kind == "transpose":
            return {"perm": list(a.get("perm", reversed(range(rank))))}
        if kind == "softmax":
            return {"axis": int(a.get("axis", -1)) % rank}
        if kind == "batchnorm":
            return {"channels": int(self.shapes.get(ins[1], (0,))[0]), "axis": 1, "affine": True}
        if kind == "layernorm":
            axis = int(a.get("axis", -1)) % rank
            return {"channels": int(self.shapes[ins[0]][-1]), "axes": rank - axis, "affine": True}
        if kind == "groupnorm":
            return {"channels": int(self.shapes[ins[0]][1]), "groups": int(a.get("num_groups", 0))}
        return {}


def _ort_reason(exc: Exception) -> str:
    """onnxruntime's message without its status prefix and C++ source location, two sentences at most."""
    text = " ".join(str(exc).split()).split(" : ")[-1]
    text = re.sub(r"^/\S+:\d+ .*?\) (?=[A-Z])", "", text)       # "/src/file.h:46 void f(...) Message"
    return " ".join(re.split(r"(?<=\.) ", text)[:2])[:240] or type(exc).__name__


def inference_session(model: onnx.ModelProto | bytes, options=None):
    """An onnxruntime CPU session of ``model``. A model onnxruntime cannot build (a custom-domain op,
    an opset newer than this onnxruntime) is an :class:`UnsupportedModelError`: analysis and
    prediction work without running it, but calibration, accuracy estimates and verification run it."""
    import onnxruntime as ort

    data = model if isinstance(model, (bytes, bytearray)) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 -- onnxruntime raises its own Fail / InvalidGraph / RuntimeError
        raise UnsupportedModelError(f"onnxruntime cannot run this model ({_ort_reason(exc)}); a compile runs the "
                                    f"model (analyze and predict do not)") from None


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ONNX shape inference failed: {first}") from None


def _shapes_by_running(model: onnx.ModelProto, names: list[str]) -> dict[str, tuple]:
    """Shapes of ``names`` from one onnxruntime run on zeros: for what shape inference cannot fold."""
    import onnxruntime as ort

    m = onnx.ModelProto.FromString(model.SerializeToString())
    known = {o.name for o in m.graph.output}
    for n in names:
        if n not in known:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    inits = {i.name for i in m.graph.initializer}
    feeds = {}
    for inp in m.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        feeds[inp.name] = np.zeros([d.dim_value for d in tt.shape.dim], dtype=dtype)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        outs = sess.run(names, feeds)
    except Exception:
        return {}
    return {n: tuple(np.shape(v)) for n, v in zip(names, outs)}


def analyze_onnx(model, *, input_shapes: dict | None = None, model_name: str | None = None) -> Graph:
    proto = load_model(model)
    inferred = infer_shapes(fix_input_shapes(proto, input_shapes))
    b = _Builder(inferred)
    check_tensor_sizes(b.shapes)
    for node in inferred.graph.node:
        b.mark_static(node)
    missing = sorted({o for node in inferred.graph.node for o in node.output
                      if o and o not in b.shapes and o not in b.static})
    if missing:
        b.shapes.update(_shapes_by_running(inferred, missing))
    b.static = {n: n for n in b.inits}
    b.values = {}
    for i, node in enumerate(inferred.graph.node):
        b.visit(i, node)
    inits = {i.name for i in inferred.graph.initializer}
    inputs = [i.name for i in inferred.graph.input if i.name not in inits]
    outputs = [o.name for o in inferred.graph.output]
    tensors = {t: s for t, s in b.shapes.items() if t not in b.static}
    if model_name is None:
        model_name = Path(os.fspath(model)).stem if isinstance(model, (str, os.PathLike)) else (
            proto.graph.name or "model")
    g = Graph.from_ops(b.ops, backend="onnx", inputs=inputs, outputs=outputs, tensors=tensors,
                       unknown_ops=b.unknown, model_name=model_name)
    # parameters as torch counts them: weight-like initializers (float, or int8/int32 behind a
    # DequantizeLinear), minus batch-norm running statistics and quantization scales / zero points
    skip = {c.name for op in b.ops if op.kind == "batchnorm" for c in op.consts if c.position in (3, 4)}
    skip |= {n.input[i] for n in inferred.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
             for i in (1, 2) if len(n.input) > i}
    kinds = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
             onnx.TensorProto.INT32)
    g.graph["total_params"] = sum(int(np.prod(i.dims)) for i in inferred.graph.initializer
                                  if i.data_type in kinds and i.name not in skip)
    g.graph["proto"] = proto
    return g
