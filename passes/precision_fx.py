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


def insert_dequantize_barriers(gm: torch.fx.GraphModule, backend) -> int:
    """Fence every "shares its input's observer" op (max pool, relu6, flatten...) with no-op ``.float()``.

    With its own qconfig None, convert_fx still treats such an op as pass-through for quantized
    tensors: it feeds it a quantized tensor and then hands the result to fp32 code (resnet18's
    ``maxpool -> add``: "promoteTypes with quantized numbers"), or assumes its output is already
    quantized and skips the next int8 layer's quantize (mobilenet_v2's ReLU6: silent garbage).
    ``float`` is not a quantizable op, so a ``.float()`` before and after makes convert dequantize
    into and quantize out of the op. A ReLU right after a conv/linear/bn gets no fence in front,
    so conv-bn-relu still fuses into one int8 kernel.
    """
    shared = _share_observer_patterns(backend)
    n_inserted = 0
    for node in list(gm.graph.nodes):
        t = _target(gm, node)
        if t is None or t not in shared or not node.args or not isinstance(node.args[0], torch.fx.Node):
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
    """

    name = "precision"

    def __init__(self, precisions, calibration=None, *, mode: str = "convert", fp16: str = "native",
                 example_inputs=None, reduce_range: bool | None = None, batch_size: int | None = None,
                 max_samples: int | None = None):
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
        self._plan: dict = {}

    def requires(self, model) -> None:
        if not isinstance(model, torch.fx.GraphModule):
            raise PreconditionError(f"PrecisionPassFX takes a torch.fx.GraphModule, not {type(model).__name__}")

    def call(self, model: torch.fx.GraphModule):
        layers = layer_nodes(model)
        check_layers(self.precisions, list(layers))
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
        with torch.no_grad():
            ref = gm(*batches[0])      # before prepare_fx, which folds batch norms into gm in place
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
