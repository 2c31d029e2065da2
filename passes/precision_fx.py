"""Precision pass, torch.fx back end: per-layer fp32 / fp16 / int8 on a ``GraphModule``.

int8 is torch's FX graph-mode quantization: a ``QConfigMapping`` whose global qconfig is None and
that sets a qconfig only for the module names marked int8 (``set_module_name``), ``prepare_fx``,
calibration, then

- ``mode="convert"``: ``convert_fx`` -> a deployable module with quantized kernels (x86 backend,
  fbgemm/oneDNN);
- ``mode="fake"``: ``prepare_qat_fx`` instead, calibrated, then observers frozen and fake-quant
  kept on: the fp32 module computes what the int8 one would, with no convert, which is the cheap
  accuracy estimate an optimizer wants in its loop.

Both modes use the same observers (MinMax activations, per-channel symmetric int8 weights), so the
fake module's scales are the convert module's scales. MinMax, not the x86 default Histogram
observer: equal accuracy on the digits model and a fraction of the calibration time.
Activations are uint8 over the full 0..255 range when the CPU has VNNI (no u8*s8 saturation
there); without VNNI the 7-bit ``reduce_range`` fbgemm needs.

Why not the torch.export flow (PT2E, ``torchao.quantization.pt2e``, torchao 0.18.0 on torch 2.14.1):
it imports and selects layers by module name, but its x86 quantizer fails on resnet18 ("Input
partition has more than one output node", even with a global config), its converted module is an
aten-level graph of fp32 ops between quantize/dequantize (int8 kernels only under torch.compile),
and that graph loses the layer names the IR, the verifier and a design rely on.

Note that ``prepare_fx`` also folds eval-mode BatchNorm into the preceding conv of *every*
conv-bn pattern, int8 or not; numerically that is the same network.

fp16 casts the layer's parameters to float16 and wraps its call in ``x.half()`` / ``y.float()``,
so neighbours stay fp32. torch's CPU fp16 convolution exists but is slow on x86 (measured about
10-20x slower than fp32 on this machine: resnet18 1.7 s vs 81 ms), so ``fp16="simulate"`` rounds weights and activations
through float16 and computes in float32 instead (fp16 numerics at fp32 speed); ``mode="fake"``
always simulates. When a native fp16 call fails, the pass falls back to simulation and says so
in the change line.
"""
from __future__ import annotations

import functools
import warnings

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from edgepass.calibration import calibration_tensors
from edgepass.errors import InputError, UnsupportedModelError

from .base import PostconditionError, PreconditionError, RewritePass
from .precision_onnx import check_layers, check_precisions

_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@functools.lru_cache(maxsize=1)
def has_vnni() -> bool:
    """True when this x86 CPU has a VNNI dot product (u8*s8 without intermediate saturation)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def qconfig(mode: str = "convert", reduce_range: bool | None = None):
    """The int8 QConfig both modes share: MinMax uint8 activations, per-channel symmetric int8 weights."""
    from torch.ao.quantization import FakeQuantize, MinMaxObserver, PerChannelMinMaxObserver, QConfig

    rr = (not has_vnni()) if reduce_range is None else reduce_range
    qmax = 127 if rr else 255
    act = dict(observer=MinMaxObserver, dtype=torch.quint8, qscheme=torch.per_tensor_affine,
               quant_min=0, quant_max=qmax)
    wgt = dict(observer=PerChannelMinMaxObserver, dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
               quant_min=-128, quant_max=127)
    if mode == "fake":
        return QConfig(activation=FakeQuantize.with_args(**act), weight=FakeQuantize.with_args(**wgt))
    a = {k: v for k, v in act.items() if k != "observer"}
    w = {k: v for k, v in wgt.items() if k != "observer"}
    return QConfig(activation=MinMaxObserver.with_args(**a), weight=PerChannelMinMaxObserver.with_args(**w))


def layer_nodes(gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
    """Weighted layers called as modules: ``{module path: call_module node}`` (the IR's layer names)."""
    out = {}
    for n in gm.graph.nodes:
        if n.op == "call_module" and n.target not in out:
            mod = gm.get_submodule(n.target)
            if isinstance(mod, _LAYER_TYPES) or _is_fused_layer(mod):
                out[n.target] = n
    return out


def _is_fused_layer(mod) -> bool:
    try:
        from torch.ao.nn.intrinsic import _FusedModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(mod, _FusedModule) and isinstance(mod[0], _LAYER_TYPES)


_FUNCTIONAL_LAYERS = {torch.nn.functional.linear: nn.Linear, torch.nn.functional.conv1d: nn.Conv1d,
                      torch.nn.functional.conv2d: nn.Conv2d, torch.nn.functional.conv3d: nn.Conv3d}
_CONV_ARGS = (("stride", 1), ("padding", 0), ("dilation", 1), ("groups", 1))  # F.convNd after (x, w, b)


def _call_arg(node: torch.fx.Node, pos: int, name: str, default=None):
    return node.args[pos] if len(node.args) > pos else node.kwargs.get(name, default)


def _functional_layer_owner(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    """The module path ``m`` of ``F.linear(x, m.weight, m.bias)`` / ``F.convNd(...)`` (the IR's layer
    name) when ``m`` holds nothing else, so a plain nn.Linear / nn.ConvNd can take its place."""
    weight, bias = _call_arg(node, 1, "weight"), _call_arg(node, 2, "bias")
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and weight.target.endswith(".weight")):
        return None
    owner = weight.target[:-len(".weight")]
    if bias is not None and not (isinstance(bias, torch.fx.Node) and bias.op == "get_attr"
                                 and bias.target == f"{owner}.bias"):
        return None
    mod = gm.get_submodule(owner)
    state = {k for k, v in list(mod.named_parameters()) + list(mod.named_buffers()) if v is not None}
    if next(mod.children(), None) is not None or not state <= {"weight", "bias"}:
        return None
    return owner


def _plain_layer(node: torch.fx.Node, weight: torch.Tensor, bias) -> nn.Module:
    """An nn.Linear / nn.ConvNd that computes ``node`` (a functional call) with these parameters."""
    cls = _FUNCTIONAL_LAYERS[node.target]
    with torch.device("meta"):
        if cls is nn.Linear:
            layer = cls(weight.shape[1], weight.shape[0], bias=bias is not None)
        else:
            kw = {name: _call_arg(node, 3 + i, name, default) for i, (name, default) in enumerate(_CONV_ARGS)}
            layer = cls(weight.shape[1] * kw["groups"], weight.shape[0], tuple(weight.shape[2:]),
                        bias=bias is not None, **kw)
    layer.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        layer.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias, requires_grad=False)
    return layer


def functional_layers_to_modules(gm: torch.fx.GraphModule, names) -> list[str]:
    """Make the functional conv/linear layers named in ``names`` module calls, in place.

    A module FX traces through (timm's ``Linear``, an nn.Linear subclass whose forward calls
    ``F.linear(x, self.weight, self.bias)``) leaves a functional call the IR names after the module
    (``classifier``) but that torch's quantization cannot target by name. The module is replaced by
    a plain nn.Linear / nn.ConvNd holding the same parameters and the call becomes a call of it
    (same node, same name). Returns the layers converted.
    """
    names, done = set(names), []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _FUNCTIONAL_LAYERS:
            continue
        owner = _functional_layer_owner(gm, node)
        if owner is None or owner not in names or owner in done:  # a layer called twice keeps its 2nd call
            continue
        old = gm.get_submodule(owner)
        gm.set_submodule(owner, _plain_layer(node, old.weight, getattr(old, "bias", None)))
        inputs = [a for a in node.all_input_nodes if a.op == "get_attr"]
        node.op, node.target, node.args, node.kwargs = "call_module", owner, (_call_arg(node, 0, "input"),), {}
        for a in inputs:
            if not a.users:
                gm.graph.erase_node(a)
        done.append(owner)
    if done:
        gm.graph.lint()
        gm.recompile()
    return done


def _round_fp16(x):
    """Round through float16, compute on in float32 (fp16 simulation)."""
    return x.half().float()


def _wrap_fp16(gm: torch.fx.GraphModule, node: torch.fx.Node, simulate: bool) -> None:
    """Cast the layer's parameters and wrap its call: x -> half -> layer -> float."""
    mod = gm.get_submodule(node.target)
    g = gm.graph
    x = node.args[0]
    with g.inserting_before(node):
        xh = g.call_method("half", (x,))
        if simulate:
            xh = g.call_method("float", (xh,))
    node.replace_input_with(x, xh)
    with g.inserting_after(node):
        y = g.call_method("half", (node,)) if simulate else node
        with g.inserting_after(y):
            yf = g.call_method("float", (y,))
    node.replace_all_uses_with(yf, delete_user_cb=lambda u: u not in (y, yf))
    with torch.no_grad():
        for p in list(mod.parameters()) + list(mod.buffers()):
            if p.is_floating_point():
                p.data = p.data.half().float() if simulate else p.data.half()


def _native_fp16_works() -> bool:
    """Whether this torch build runs a float16 conv and linear on CPU at all."""
    try:
        with torch.no_grad():
            nn.Conv2d(2, 2, 3).half()(torch.zeros(1, 2, 4, 4, dtype=torch.float16))
            nn.Linear(2, 2).half()(torch.zeros(1, 2, dtype=torch.float16))
        return True
    except Exception:
        return False


_FUSABLE_ACTS = (nn.ReLU, torch.relu, torch.nn.functional.relu, "relu", "relu_")  # conv/linear/bn + relu fuse
_FUSABLE_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _share_observer_patterns(backend) -> set:
    """Ops the backend runs on quantized tensors as is (pooling, relu, reshapes...)."""
    from torch.ao.quantization.backend_config import ObservationType

    return {c.pattern for c in backend.configs
            if c.observation_type == ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT and not isinstance(c.pattern, tuple)}


def _target(gm, node):
    if node.op == "call_module":
        return type(gm.get_submodule(node.target))
    return node.target if node.op in ("call_function", "call_method") else None


def _produces_tensor(node: torch.fx.Node) -> bool:
    """Whether ``node`` computes a tensor, not shape arithmetic such as ``x.size(1) // 2`` (ShapeProp's
    ``type``; a node it did not run counts as a tensor)."""
    kind = node.meta.get("type")
    return kind is None or issubclass(kind, torch.Tensor)


def insert_dequantize_barriers(gm: torch.fx.GraphModule, backend) -> int:
    """Fence every "shares its input's observer" op (max pool, relu6, flatten...) with no-op ``.float()``.

    With its own qconfig None, convert_fx still treats such an op as pass-through for quantized
    tensors: it feeds it a quantized tensor and then hands the result to fp32 code (resnet18's
    ``maxpool -> add``: "promoteTypes with quantized numbers"), or assumes its output is already
    quantized and skips the next int8 layer's quantize (mobilenet_v2's ReLU6: silent garbage).
    ``float`` is not a quantizable op, so a ``.float()`` before and after makes convert dequantize
    into and quantize out of the op. A ReLU right after a conv/linear/bn gets no fence in front,
    so conv-bn-relu still fuses into one int8 kernel. Shape arithmetic (``floordiv`` of a
    ``size()`` in a channel shuffle) is left alone when the graph carries ShapeProp metadata.
    """
    shared = _share_observer_patterns(backend)
    n_inserted = 0
    for node in list(gm.graph.nodes):
        t = _target(gm, node)
        if t is None or t not in shared or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        if not (_produces_tensor(node) and _produces_tensor(node.args[0])):
            continue
        src = node.args[0]
        fusable = t in _FUSABLE_ACTS and src.op == "call_module" and isinstance(
            gm.get_submodule(src.target), _FUSABLE_PRODUCERS)
        if not fusable:
            with gm.graph.inserting_before(node):
                before = gm.graph.call_method("float", (src,))
            node.replace_input_with(src, before)
            n_inserted += 1
        with gm.graph.inserting_after(node):
            after = gm.graph.call_method("float", (node,))
        node.replace_all_uses_with(after, delete_user_cb=lambda u: u is not after)
        n_inserted += 1
    gm.graph.lint()
    gm.recompile()
    return n_inserted


def views_to_reshapes(gm: torch.fx.GraphModule) -> int:
    """``x.view(shape)`` -> ``x.reshape(shape)``: int8 convs return channels-last tensors, which
    ``view`` cannot flatten (the classic MNIST net's ``x.view(x.size(0), -1)``). Same values; reshape
    copies only when a view is impossible. ``view(dtype)`` is left alone."""
    n = 0
    for node in gm.graph.nodes:
        if node.op == "call_method" and node.target == "view" and not node.kwargs and \
                not any(isinstance(a, torch.dtype) for a in node.args[1:]):
            node.target = "reshape"
            n += 1
    if n:
        gm.recompile()
    return n


def adopt(gm: torch.fx.GraphModule, new: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Make ``gm`` the module ``new`` is (same object, new graph, submodules and tensors): the pass is
    in place, torch.ao's prepare/convert return new modules."""
    for store in ("_modules", "_parameters", "_buffers"):
        getattr(gm, store).clear()
        getattr(gm, store).update(getattr(new, store))
    gm.meta = dict(getattr(new, "meta", {}))
    gm.graph = new.graph  # re-owns the graph and recompiles forward
    return gm


class PrecisionPassFX(RewritePass):
    """Per-layer precision for a torch.fx ``GraphModule``, in place.

    ``precisions``: ``{layer (module path): "fp32"|"fp16"|"int8"}`` or a Design. ``calibration``:
    anything :mod:`edgepass.calibration` accepts; ``example_inputs`` give the input shape when
    there is no data and the module carries no ShapeProp metadata. ``mode``: ``"convert"``
    (deployable int8) or ``"fake"`` (fake-quant estimate). ``fp16``: ``"native"`` or ``"simulate"``.
    ``graph``: the model's IR (``edgepass.analyze``) when the caller has it; its layer names are
    the ones a design may use, and a layer torch cannot requantize (a MultiheadAttention
    projection, ``x @ W``) is refused by name unless the design keeps it fp32.
    """

    name = "precision"

    def __init__(self, precisions, calibration=None, *, mode: str = "convert", fp16: str = "native",
                 example_inputs=None, reduce_range: bool | None = None, batch_size: int | None = None,
                 max_samples: int | None = None, graph=None):
        super().__init__()
        if mode not in ("convert", "fake"):
            raise InputError(f"mode must be 'convert' or 'fake', not {mode!r}")
        if fp16 not in ("native", "simulate"):
            raise InputError(f"fp16 must be 'native' or 'simulate', not {fp16!r}")
        self.precisions = check_precisions(precisions)
        self.calibration = calibration
        self.mode = mode
        self.fp16 = "simulate" if mode == "fake" else fp16
        self.example_inputs = example_inputs
        self.reduce_range = reduce_range
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.graph = graph
        self._plan: dict = {}

    def requires(self, model) -> None:
        if not isinstance(model, torch.fx.GraphModule):
            raise PreconditionError(f"PrecisionPassFX takes a torch.fx.GraphModule, not {type(model).__name__}")

    def _layers(self, gm: torch.fx.GraphModule) -> dict[str, torch.fx.Node]:
        """The layers this pass can set, after checking every layer the design names exists and
        that each one it lowers from fp32 is one torch can rewrite."""
        lowered = [k for k, p in self.precisions.items() if p != "fp32"]
        functional_layers_to_modules(gm, lowered)
        layers = layer_nodes(gm)
        check_layers(self.precisions, list(layers) if self.graph is None else
                     list(dict.fromkeys([op.name for op in self.graph.layers()] + list(layers))))
        for k in lowered:
            if k not in layers:
                raise UnsupportedModelError(
                    f"layer {k}: {self.precisions[k]} is not possible in the PyTorch back end (not a conv or "
                    f"linear module call: attention projection, matmul or functional op); keep it fp32 or "
                    f"use the ONNX back end")
        return layers

    def call(self, model: torch.fx.GraphModule):
        layers = self._layers(model)
        int8 = [k for k in layers if self.precisions.get(k) == "int8"]
        fp16 = [k for k in layers if self.precisions.get(k) == "fp16"]
        self._plan = {"int8": int8, "fp16": fp16}
        changes: list[str] = []
        training = model.training
        gm = model.eval()
        if int8:
            adopt(gm, self._int8(gm, int8))
            if self.mode == "convert":
                changes += [f"{k}: fp32 -> int8 (torch.ao convert_fx, x86 backend, per-channel weights)" for k in int8]
            else:
                changes += [f"{k}: fp32 -> int8 fake-quant (prepare_qat_fx, calibrated, observers frozen)"
                            for k in int8]
        if fp16:
            simulate = self.fp16 == "simulate" or not _native_fp16_works()
            how = ("simulated: fp16-rounded weights and activations, fp32 compute" if simulate
                   else "fp16 weights, input cast to fp16, output cast to fp32")
            nodes = layer_nodes(gm)
            for k in fp16:
                _wrap_fp16(gm, nodes[k], simulate)
            gm.graph.lint()
            gm.recompile()
            reason = " (native fp16 unavailable on this CPU)" if simulate and self.fp16 == "native" else ""
            changes += [f"{k}: fp32 -> fp16 ({how}){reason}" for k in fp16]
        gm.train(training and not int8)  # quantized / fake-quant modules are for inference
        return self.result(gm, changes)

    def _int8(self, gm: torch.fx.GraphModule, int8: list[str]) -> torch.fx.GraphModule:
        """The quantized (or fake-quantized) module, built from ``gm`` (which prepare_fx partly rewrites)."""
        from torch.ao.quantization import QConfigMapping, disable_observer
        from torch.ao.quantization.backend_config import get_native_backend_config
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

        batches = calibration_tensors(self.calibration, gm, self.example_inputs, batch_size=self.batch_size,
                                      max_samples=self.max_samples)
        qc = qconfig(self.mode, self.reduce_range)
        mapping = QConfigMapping().set_global(None)
        for k in int8:
            mapping.set_module_name(k, qc)
        backend = get_native_backend_config()
        with torch.no_grad():  # before prepare_fx, which folds batch norms into gm in place
            ref = ShapeProp(gm).propagate(*batches[0])  # and tells tensors from shape arithmetic
        views_to_reshapes(gm)
        insert_dequantize_barriers(gm, backend)
        if self.mode == "fake":
            prepared = prepare_qat_fx(gm.train(), mapping, batches[0], backend_config=backend).eval()
        else:
            prepared = prepare_fx(gm, mapping, batches[0], backend_config=backend)
        with torch.no_grad():
            for b in batches:
                prepared(*b)
        if self.mode == "fake":
            prepared.apply(disable_observer)
            return prepared
        converted = convert_fx(prepared, backend_config=backend)
        try:
            with torch.no_grad():
                out = converted(*batches[0])
        except Exception as exc:  # torch.ao cannot lower this mix of int8 and fp32 ops
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedModelError(f"torch int8 conversion produced a module that does not run ({msg}); "
                                        f"use mode='fake' or the ONNX back end") from None
        if isinstance(out, torch.Tensor) and isinstance(ref, torch.Tensor) and ref.float().norm() > 0:
            cos = torch.nn.functional.cosine_similarity(out.float().ravel(), ref.float().ravel(), dim=0)
            if not torch.isfinite(cos) or cos < 0.5:  # useless int8 model: say so, the verifier decides
                warnings.warn(f"int8 output is far from fp32 (cosine {float(cos):.2f} on a calibration batch): "
                              f"activations too small or wide for 8 bits, or calibration data unrepresentative",
                              stacklevel=2)
        return converted

    def ensures(self, model) -> None:
        if not isinstance(model, torch.fx.GraphModule):
            raise PostconditionError("precision pass did not return a GraphModule")
        mods = dict(model.named_modules())
        for k in self._plan.get("int8", []):
            m = mods.get(k)
            if m is None:
                raise PostconditionError(f"int8 layer {k}: module missing after quantization")
            if self.mode == "convert" and not type(m).__module__.startswith("torch.ao.nn.quantized") and \
                    not type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized"):
                raise PostconditionError(f"int8 layer {k}: still {type(m).__name__}, not a quantized module")
            if self.mode == "fake" and not hasattr(m, "weight_fake_quant"):
                raise PostconditionError(f"int8 layer {k}: no weight fake-quant")
        for k in self._plan.get("fp16", []):
            m = mods.get(k)
            w = getattr(m[0] if _is_fused_layer(m) else m, "weight", None)
            if w is None:
                raise PostconditionError(f"fp16 layer {k}: module missing")
            if self.fp16 == "native" and w.dtype != torch.float16 and _native_fp16_works():
                raise PostconditionError(f"fp16 layer {k}: weight is {w.dtype}, not float16")
