"""Precision pass, ONNX back end: per-layer fp32 / fp16 / int8.

int8 is onnxruntime's static quantizer (``quantize_static``) in QDQ format, restricted with
``nodes_to_quantize`` to the layers the design marks int8. Choices, measured on this machine's
CPU (AVX-512 VNNI, onnxruntime 1.32, 1 thread, see ``benchmarks/precision_probe.py``):

- weights int8, symmetric, per output channel (accuracy; free at run time);
- activations **uint8** (U8S8): onnxruntime fuses every ``DQ -> Conv -> Q`` into ``QLinearConv``
  and runs it on the VNNI u8*s8 dot product (no saturation with VNNI, so no ``reduce_range``).
  With int8 activations (S8S8) it left about half of resnet18's convs as fp32 ``Conv`` between
  Q/DQ pairs and was no faster than fp32;
- the parameter-free ops *between* int8 layers (ReLU/Clip, Add, max/global pooling, reshapes,
  concat) are quantized too ("glue"): otherwise every int8 layer's output bounces through
  DequantizeLinear -> fp32 op -> QuantizeLinear, which cost mobilenet_v2 more than half of its int8
  speed-up. Only ops whose every activation input already comes from the int8 region are glue, so
  no fp32 layer ever gets a quantized weight;
- except ``AveragePool``: onnxruntime has no NHWC int8 average pool (MaxPool becomes the fast
  ``NhwcMaxPool`` next to QLinearConvs), and its ``QLinearAveragePool`` is 3-18x slower than the
  fp32 pool plus the conversions (``benchmarks/precision_probe.py --pools``). As glue it made an
  NB201 design with 7 int8 convs 7.8x slower than fp32 (47 pools in the closure); left fp32 the
  same design runs at 1.0x, another goes 1.22x -> 0.70x, densenet121 all-int8 0.45x -> 0.41x.
  (A pool whose consumer is an int8 layer still gets fused into QLinearAveragePool by onnxruntime:
  the layer's input Q/DQ surrounds it);
- MinMax calibration by default (best measured accuracy on the bundled digits model; ``Entropy``
  and ``Percentile`` are available through ``calibrate_method``).

Before quantizing, unnamed nodes get stable names (``{op_type}_{index}``, the IR's own fallback,
so ``Op.ref`` finds them) and ``Identity`` nodes reading an initializer are folded into a copy of
it: the legacy exporter deduplicates equal tensors that way, and a conv whose bias is not an
initializer is skipped by the quantizer's bias step and never fused into QLinearConv.

fp16 is written here with onnx-ir (onnxconverter-common is not a dependency): the layer's weight
and bias are stored as float16, its input is ``Cast`` to float16 (one Cast per source tensor,
shared by all fp16 consumers) and its output ``Cast`` back to float32, so the neighbours and the
graph's interface stay fp32. Per layer rather than per region because it is always type-correct
whatever the ops in between, and it is not slower: onnxruntime's CPU provider has no fp16 conv on
x86, inserts casts around the fp16 nodes and then removes the back-to-back casts, so the
optimised graph is the fp32 one (measured: same latency as fp32) while the file carries fp16
weights (half the bytes) and fp16 compute for back ends that have it.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from edgepass.api import analyze
from edgepass.calibration import calibration_feeds
from edgepass.errors import InputError

from .base import PostconditionError, PreconditionError, RewritePass

PRECISIONS = ("fp32", "fp16", "int8")
# parameter-free ops that stay in the int8 region when all their activation inputs come from it
GLUE_OPS = frozenset({"Relu", "Clip", "Add", "MaxPool", "GlobalAveragePool", "Flatten", "Reshape",
                      "Squeeze", "Unsqueeze", "Transpose", "Concat", "Resize", "Split", "Sigmoid", "Mul",
                      "LeakyRelu"})
# op types onnxruntime fuses into int8 kernels (QLinearSigmoid, QLinearMul, ...) when wrapped in Q/DQ;
# the quantizer's QDQ registry leaves them out unless asked
_EXTRA_QDQ_TYPES = ("Sigmoid", "Mul", "Add", "LeakyRelu", "Concat", "GlobalAveragePool")
_CALIBRATE = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile", "distribution": "Distribution"}
_QTYPES = {"uint8": "QUInt8", "int8": "QInt8"}


def check_precisions(precisions) -> dict:
    """``{layer: "fp32"|"fp16"|"int8"}`` or a one-line :class:`InputError`."""
    if precisions is None:
        return {}
    if hasattr(precisions, "precisions") and not isinstance(precisions, dict):  # a Design
        precisions = precisions.precisions
    if not isinstance(precisions, dict):
        raise InputError(f"precisions must be a dict {{layer: precision}}, not {type(precisions).__name__}")
    bad = {k: v for k, v in precisions.items() if v not in PRECISIONS}
    if bad:
        k, v = next(iter(sorted(bad.items())))
        raise InputError(f"precision {v!r} for layer {k!r} is not one of {', '.join(PRECISIONS)}")
    return {str(k): v for k, v in precisions.items()}


def check_layers(precisions: dict, known) -> None:
    unknown = sorted(set(precisions) - set(known))
    if unknown:
        few = ", ".join(list(known)[:5]) + (", ..." if len(known) > 5 else "")
        raise InputError(f"unknown layer(s) in precisions: {', '.join(unknown[:5])}"
                         f"{' ...' if len(unknown) > 5 else ''} (the model's layers: {few})")


@contextlib.contextmanager
def _quiet_ort():
    """Silence onnxruntime's C++ warnings, the quantizer's ``logging.warning`` advice and its prints."""
    import io

    import onnxruntime as ort

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default
        logging.disable(previous)


def name_nodes(proto: onnx.ModelProto) -> int:
    """Give unnamed (or duplicate-named) nodes the IR's fallback name ``{op_type}_{index}``; returns how many."""
    used = {n.name for n in proto.graph.node if n.name}
    seen: set[str] = set()
    renamed = 0
    for i, n in enumerate(proto.graph.node):
        if n.name and n.name not in seen:
            seen.add(n.name)
            continue
        base = f"{n.op_type}_{i}"
        name, k = base, 1
        while name in used or name in seen:
            k += 1
            name = f"{base}#{k}"
        n.name = name
        seen.add(name)
        used.add(name)
        renamed += 1
    return renamed


def fold_identity_initializers(proto: onnx.ModelProto) -> int:
    """Replace ``Identity(initializer)`` by a copy of the initializer under the Identity's output name."""
    inits = {i.name: i for i in proto.graph.initializer}
    outputs = {o.name for o in proto.graph.output}
    keep, folded = [], 0
    for n in proto.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] not in outputs:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            proto.graph.initializer.append(t)
            inits[t.name] = t
            folded += 1
        else:
            keep.append(n)
    if folded:
        del proto.graph.node[:]
        proto.graph.node.extend(keep)
        used = {i for n in keep for i in n.input} | outputs
        live = [i for i in proto.graph.initializer if i.name in used]
        del proto.graph.initializer[:]
        proto.graph.initializer.extend(live)
    return folded


def glue_nodes(graph, int8_layers: set) -> list[str]:
    """Node names of the parameter-free ops fed only by the int8 region (forward closure)."""
    region = {op.name for op in graph.layers() if op.name in int8_layers}
    glue = []
    for op in graph.ops():
        if op.name in region or op.backend_op not in GLUE_OPS or not op.inputs:
            continue
        producers = [graph.producer(t) for t in op.inputs]
        if all(p is not None and p.name in region for p in producers):
            region.add(op.name)
            glue.append(op.ref)
    return glue


class _Reader:
    """``CalibrationDataReader`` over a fixed list of feeds (deterministic order)."""

    def __init__(self, feeds):
        self.feeds = feeds
        self.i = 0

    def get_next(self):
        if self.i >= len(self.feeds):
            return None
        self.i += 1
        return self.feeds[self.i - 1]

    def rewind(self):
        self.i = 0

    def __len__(self):
        return len(self.feeds)

    def __iter__(self):
        return iter(self.feeds)


def quantize_int8(proto: onnx.ModelProto, nodes: list[str], feeds: list[dict], *, per_channel: bool = True,
                  activation_type: str = "uint8", calibrate_method: str = "minmax", extra_options=None) -> onnx.ModelProto:
    """``quantize_static`` in QDQ format on ``nodes`` only; temp files under fixed names for determinism."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry

    options = {"ActivationSymmetric": False, "WeightSymmetric": True}
    options.update(extra_options or {})
    with tempfile.TemporaryDirectory(prefix="edgepass-int8-") as tmp, _quiet_ort():
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        onnx.save_model(proto, str(src))
        quantize_static(str(src), str(dst), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        reduce_range=False, activation_type=getattr(QuantType, _QTYPES[activation_type]),
                        weight_type=QuantType.QInt8, nodes_to_quantize=list(nodes),
                        op_types_to_quantize=sorted(set(QDQRegistry) | set(_EXTRA_QDQ_TYPES)),
                        calibrate_method=getattr(CalibrationMethod, _CALIBRATE[calibrate_method]),
                        extra_options=options)
        return onnx.load_model(str(dst))


# --------------------------------------------------------------------------------------------
# fp16
# --------------------------------------------------------------------------------------------
def _unique(name: str, used: set) -> str:
    base, k = name, 1
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def _fp16_const(graph: ir.Graph, value: ir.Value, node: ir.Node, used: set) -> ir.Value:
    """The float16 version of an initializer operand of ``node`` (in place when ``node`` is its only user)."""
    arr = value.const_value.numpy().astype(np.float16)
    sole_user = all(u.node is node for u in value.uses()) and not value.is_graph_output() and not value.is_graph_input()
    if sole_user and value.name in graph.initializers:
        value.const_value = ir.tensor(arr, name=value.name)
        value.type = ir.TensorType(ir.DataType.FLOAT16)
        value.dtype = ir.DataType.FLOAT16
        return value
    name = _unique(f"{value.name}_fp16", used)
    new = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.FLOAT16),
                   const_value=ir.tensor(arr, name=name))
    graph.register_initializer(new)
    return new


def _cast(x: ir.Value, to: ir.DataType, name: str, out_name: str, out: ir.Value | None = None) -> ir.Node:
    out = out or ir.Value(name=out_name, type=ir.TensorType(to), shape=x.shape)
    return ir.Node("", "Cast", [x], [ir.AttrInt64("to", int(to))], outputs=[out], name=name)


def convert_fp16(model: ir.Model, node_names: list[str]) -> None:
    """Store the weights of ``node_names`` as float16 and wrap each node in Casts (in place)."""
    graph = model.graph
    nodes = {n.name: n for n in graph}
    used = {v.name for n in graph for v in list(n.inputs) + list(n.outputs) if v is not None}
    used |= set(graph.initializers) | {v.name for v in graph.inputs}
    node_names_used = {n.name for n in graph}
    casts: dict[int, ir.Value] = {}   # id(source value) -> its fp16 cast, shared by all fp16 consumers
    todo = set(node_names)
    missing = todo - set(nodes)
    if missing:
        raise PostconditionError(f"fp16 layers not found in the model: {', '.join(sorted(missing))}")
    for node in list(graph):          # graph order, so a shared Cast goes before its first consumer
        if node.name not in todo:
            continue
        for i, v in enumerate(node.inputs[1:], start=1):
            if v is None or v.dtype != ir.DataType.FLOAT:
                continue
            if v.const_value is not None:
                node.replace_input_with(i, _fp16_const(graph, v, node, used))
            else:  # a computed weight/bias (not an initializer): cast it like the activation
                c = _cast(v, ir.DataType.FLOAT16, _unique(f"{node.name}/cast_{i}_fp16", node_names_used),
                          _unique(f"{v.name}_fp16", used))
                graph.insert_before(node, c)
                node.replace_input_with(i, c.outputs[0])
        x = node.inputs[0]
        if id(x) not in casts:
            c = _cast(x, ir.DataType.FLOAT16, _unique(f"{node.name}/cast_in_fp16", node_names_used),
                      _unique(f"{x.name}_fp16", used))
            graph.insert_before(node, c)
            casts[id(x)] = c.outputs[0]
        node.replace_input_with(0, casts[id(x)])
        y = node.outputs[0]
        back = ir.Value(name=y.name, type=ir.TensorType(ir.DataType.FLOAT), shape=y.shape)
        y.replace_all_uses_with(back, replace_graph_outputs=True)
        y.name = _unique(f"{back.name}_fp16", used)
        y.type = ir.TensorType(ir.DataType.FLOAT16)
        y.dtype = ir.DataType.FLOAT16
        graph.insert_after(node, _cast(y, ir.DataType.FLOAT, _unique(f"{node.name}/cast_out_fp32", node_names_used),
                                       back.name, out=back))


# --------------------------------------------------------------------------------------------
# the pass
# --------------------------------------------------------------------------------------------
def adopt(model: ir.Model, new: ir.Model) -> ir.Model:
    """Make ``model`` hold ``new``'s graph and functions (the pass is in place; quantize_static is not)."""
    model.graph = new.graph
    model.ir_version = new.ir_version
    model.functions.clear()
    model.functions.update(new.functions)
    return model


class PrecisionPassONNX(RewritePass):
    """Per-layer precision for an ONNX model, in place on an ``onnx_ir.Model``.

    ``precisions``: ``{layer name: "fp32"|"fp16"|"int8"}`` (a :class:`~edgepass.space.Design` works
    too); layers not named stay as they are. ``calibration``: anything
    :mod:`edgepass.calibration` accepts (None: seeded random inputs, with a warning).
    """

    name = "precision"

    def __init__(self, precisions, calibration=None, *, per_channel: bool = True, activation_type: str = "uint8",
                 calibrate_method: str = "minmax", quantize_glue: bool = True, batch_size: int | None = None,
                 max_samples: int | None = None, extra_options: dict | None = None, graph=None):
        """``graph``: the IR of a model with the same nodes (names, order, types) as the one this
        pass will get, e.g. before a width rewrite; saves analysing it again (checked: any layer it
        does not find by name and the model is analysed after all)."""
        super().__init__()
        self.graph = graph
        self.precisions = check_precisions(precisions)
        if activation_type not in _QTYPES:
            raise InputError(f"activation_type must be one of {', '.join(_QTYPES)}, not {activation_type!r}")
        if calibrate_method not in _CALIBRATE:
            raise InputError(f"calibrate_method must be one of {', '.join(_CALIBRATE)}, not {calibrate_method!r}")
        self.calibration = calibration
        self.per_channel = per_channel
        self.activation_type = activation_type
        self.calibrate_method = calibrate_method
        self.quantize_glue = quantize_glue
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.extra_options = extra_options
        self._plan: dict = {}

    def requires(self, model) -> None:
        if not isinstance(model, ir.Model):
            raise PreconditionError(f"PrecisionPassONNX takes an onnx_ir.Model, not {type(model).__name__}")

    def call(self, model: ir.Model):
        proto = ir.to_proto(model)              # quantize_static works on protos and files: a copy
        name_nodes(proto)
        names = {n.name: n.op_type for n in proto.graph.node}
        graph = self.graph
        if graph is None or any(names.get(op.ref) != op.backend_op for op in graph.ops()):
            graph = analyze(proto)
        layers = {op.name: op for op in graph.layers()}
        check_layers(self.precisions, list(layers))
        want = {k: v for k, v in self.precisions.items() if v != layers[k].precision}
        int8 = [k for k in layers if want.get(k) == "int8"]
        fp16 = [k for k in layers if want.get(k) == "fp16"]
        back = [k for k in layers if want.get(k) == "fp32"]
        if back:
            raise InputError(f"layer {back[0]!r} is already {layers[back[0]].precision}; the precision pass only "
                             f"lowers fp32 layers (start from the fp32 model)")
        self._plan = {"int8": {k: layers[k].ref for k in int8}, "fp16": {k: layers[k].ref for k in fp16}}
        changes: list[str] = []
        if int8 or fp16:
            fold_identity_initializers(proto)
        if int8:
            feeds = calibration_feeds(self.calibration, proto, batch_size=self.batch_size,
                                      max_samples=self.max_samples, what="int8")
            glue = glue_nodes(graph, set(int8)) if self.quantize_glue else []
            proto = quantize_int8(proto, [layers[k].ref for k in int8] + glue, feeds, per_channel=self.per_channel,
                                  activation_type=self.activation_type, calibrate_method=self.calibrate_method,
                                  extra_options=self.extra_options)
            n = sum(next(iter(f.values())).shape[0] for f in feeds)
            wq = "per-channel" if self.per_channel else "per-tensor"
            changes += [f"{k}: fp32 -> int8 (QDQ, int8 {wq} weights, {self.activation_type} activations, "
                        f"{self.calibrate_method} calibration on {n} samples)" for k in int8]
            if glue:
                changes.append(f"{len(glue)} parameter-free ops between int8 layers run int8 too")
        if not changes and not fp16:
            return self.result(model, [])
        out = ir.from_proto(proto)
        if fp16:
            convert_fp16(out, [layers[k].ref for k in fp16])
            changes += [f"{k}: fp32 -> fp16 (fp16 weights, Cast in/out)" for k in fp16]
        return self.result(adopt(model, out), changes)

    def ensures(self, model: ir.Model) -> None:
        proto = ir.to_proto(model)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PostconditionError(f"precision pass produced an invalid model: {first}") from None
        nodes = {n.name: n for n in model.graph}
        for layer, ref in self._plan.get("int8", {}).items():
            node = nodes.get(ref)
            if node is None:
                raise PostconditionError(f"int8 layer {layer}: node {ref!r} missing after quantization")
            x, w = node.inputs[0], node.inputs[1]
            if not (_produced_by(x, "DequantizeLinear") and _produced_by(w, "DequantizeLinear")):
                raise PostconditionError(f"int8 layer {layer}: input or weight is not dequantized (no QDQ)")
            wq = w.producer().inputs[0]
            if wq.const_value is None or wq.dtype not in (ir.DataType.INT8, ir.DataType.UINT8):
                raise PostconditionError(f"int8 layer {layer}: weight is not stored as int8")
            if not any(u.node.op_type == "QuantizeLinear" for u in node.outputs[0].uses()):
                raise PostconditionError(f"int8 layer {layer}: output is not quantized")
        for layer, ref in self._plan.get("fp16", {}).items():
            node = nodes.get(ref)
            if node is None or node.inputs[1].dtype != ir.DataType.FLOAT16:
                raise PostconditionError(f"fp16 layer {layer}: weight is not float16")


def _produced_by(v: ir.Value | None, op_type: str) -> bool:
    return v is not None and v.producer() is not None and v.producer().op_type == op_type
