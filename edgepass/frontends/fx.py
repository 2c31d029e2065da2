"""torch.fx front end: ``symbolic_trace`` + ``ShapeProp`` -> :class:`~edgepass.ir.Graph`.

Parameters reached through ``get_attr`` become :class:`~edgepass.ir.Const` operands of the op that
uses them (as ONNX initializers are), and ``getitem`` on a multi-output op is an alias, not an op,
so the IR matches the ONNX front end's op for op on weighted layers.
"""
from __future__ import annotations

import contextlib
import io
import operator
from typing import Any

import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from ..errors import UnsupportedModelError
from ..ir import Const, Graph, Op, UniqueNames

_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8",
           torch.uint8: "uint8", torch.int32: "int32", torch.int64: "int64", torch.bool: "bool"}

_ACT_MODULES = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.GELU, torch.nn.Hardswish,
                torch.nn.Hardsigmoid, torch.nn.Sigmoid, torch.nn.Tanh, torch.nn.LeakyReLU, torch.nn.ELU,
                torch.nn.Mish, torch.nn.Softplus, torch.nn.Hardtanh, torch.nn.SELU, torch.nn.CELU)
_IDENTITY_MODULES = (torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d,
                     torch.nn.AlphaDropout)
_FUNC_KINDS = {
    "add": "add", "iadd": "add", "__add__": "add", "__radd__": "add",
    "sub": "sub", "isub": "sub", "__sub__": "sub", "__rsub__": "sub",
    "mul": "mul", "imul": "mul", "__mul__": "mul", "__rmul__": "mul",
    "truediv": "div", "div": "div", "__truediv__": "div", "itruediv": "div",
    "matmul": "matmul", "bmm": "matmul",
    "relu": "act", "relu_": "act", "relu6": "act", "hardtanh": "act", "sigmoid": "act", "hardsigmoid": "act",
    "hardswish": "act", "silu": "act", "gelu": "act", "tanh": "act", "softplus": "act", "leaky_relu": "act",
    "elu": "act", "clamp": "act", "clip": "act", "mish": "act", "sqrt": "act", "exp": "act", "neg": "act",
    "dropout": "identity", "contiguous": "identity", "clone": "identity", "detach": "identity",
    "float": "identity", "type_as": "identity", "half": "cast", "to": "cast",
    "quantize_per_tensor": "quantize", "quantize_per_channel": "quantize", "dequantize": "dequantize",
    "add_relu": "add", "stochastic_depth": "identity",  # identity in eval mode
    "cat": "concat", "concat": "concat",
    "flatten": "reshape", "view": "reshape", "reshape": "reshape", "squeeze": "reshape", "unsqueeze": "reshape",
    "permute": "transpose", "transpose": "transpose",
    "chunk": "split", "split": "split",
    "adaptive_avg_pool2d": "pool", "avg_pool2d": "pool", "max_pool2d": "pool", "adaptive_max_pool2d": "pool",
    "mean": "reduce", "sum": "reduce", "amax": "reduce",
    "softmax": "softmax", "log_softmax": "softmax",
    "expand": "expand", "pad": "pad", "interpolate": "resize",
    "layer_norm": "layernorm", "batch_norm": "batchnorm", "linear": "linear", "conv2d": "conv",
}
_NON_TENSOR = {"size", "dim", "getattr", "numel"}


def _shape(meta) -> tuple:
    return tuple(int(d) for d in meta.shape)


def _target_name(node: torch.fx.Node) -> str:
    t = node.target
    return t if isinstance(t, str) else getattr(t, "__name__", str(t))


def _fetch_attr(gm: torch.nn.Module, target: str):
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _pair(v, n=2):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def trace(module: torch.nn.Module) -> torch.fx.GraphModule:
    """Symbolically trace ``module`` (a ``GraphModule`` is returned as is)."""
    if isinstance(module, torch.fx.GraphModule):
        return module
    try:
        return torch.fx.symbolic_trace(module)
    except Exception as exc:  # TraceError, TypeError from Proxy bool(), ...
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(
            f"torch.fx cannot trace {type(module).__name__} ({msg}); data-dependent control flow is not "
            f"supported: export the model to ONNX and pass the .onnx file instead") from None


def has_quantized_kernels(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds modules left by torch's int8 conversion (``torch.ao.nn.quantized``,
    ``torch.ao.nn.intrinsic.quantized``: conv+relu fused)."""
    return any(type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
               for m in module.modules())


def propagate_shapes(gm: torch.fx.GraphModule, example_inputs) -> None:
    """Run ShapeProp in eval mode without touching the caller's training flags or grads."""
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            # shapes only: fake tensors skip the arithmetic (3x faster on a ResNet-50); quantized
            # kernels (fused ones too) have no fake implementation, so int8 modules run for real
            try:
                if has_quantized_kernels(gm):
                    raise NotImplementedError
                from torch._subclasses.fake_tensor import FakeTensorMode

                with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints the traceback it raises
                    ShapeProp(gm, fake_mode=FakeTensorMode(allow_non_fake_inputs=True)).propagate(*example_inputs)
            except Exception:
                with contextlib.redirect_stderr(io.StringIO()):
                    ShapeProp(gm).propagate(*example_inputs)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(f"running the model on the example inputs failed: {msg}") from None
    finally:
        for m, training in modes.items():
            m.training = training


class _Builder:
    def __init__(self, gm: torch.fx.GraphModule):
        self.gm = gm
        self.ops: list[Op] = []
        self.tensors: dict[str, tuple] = {}
        self.alias: dict[torch.fx.Node, Any] = {}   # fx node -> tensor name | tuple of names | Const | None
        self.unique = UniqueNames()
        self.unknown: list[str] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.params = {id(p) for p in gm.parameters()}

    # -- helpers ---------------------------------------------------------------------------
    def add(self, node, kind, *, name=None, inputs=(), consts=(), attrs=None, out_names=None, out_shapes=None,
            positions=None) -> Op:
        if out_shapes is None:
            meta = node.meta.get("tensor_meta")
            out_shapes = [_shape(meta)] if isinstance(meta, TensorMetadata) else [_shape(m) for m in meta]
        if out_names is None:
            out_names = [node.name] if len(out_shapes) == 1 else [f"{node.name}.{i}" for i in range(len(out_shapes))]
        op = Op(name=self.unique(name or node.name), kind=kind, ref=node.name, backend_op=_target_name(node),
                inputs=list(inputs), outputs=list(out_names), in_shapes=[self.tensors[t] for t in inputs],
                out_shapes=list(out_shapes), consts=list(consts), attrs=dict(attrs or {}),
                input_positions=list(positions if positions is not None else range(len(inputs))),
                order=len(self.ops))
        for t, s in zip(out_names, out_shapes):
            self.tensors[t] = s
        self.alias[node] = out_names[0] if len(out_names) == 1 else tuple(out_names)
        self.ops.append(op)
        return op

    def operands(self, node) -> tuple[list[str], list[Const], list[int]]:
        """Activation tensors, constants and the activation operand positions of a node."""
        flat = []
        for a in list(node.args) + list(node.kwargs.values()):
            if isinstance(a, (list, tuple)):
                flat.extend(a)
            else:
                flat.append(a)
        acts, consts, pos = [], [], []
        for i, a in enumerate(flat):
            if not isinstance(a, torch.fx.Node):
                continue
            v = self.alias.get(a)
            if isinstance(v, Const):
                consts.append(Const(v.name, v.shape, v.dtype, i, v.role))
            elif isinstance(v, str):
                acts.append(v)
                pos.append(i)
        return acts, consts, pos

    def const(self, target: str, position: int, role: str) -> Const:
        t = _fetch_attr(self.gm, target)
        return Const(target, tuple(t.shape), _DTYPES.get(t.dtype, "fp32"), position, role)

    # -- per node --------------------------------------------------------------------------
    def visit(self, node: torch.fx.Node) -> None:
        op = node.op
        if op == "placeholder":
            meta = node.meta.get("tensor_meta")
            if meta is None:
                self.alias[node] = None
                return
            self.tensors[node.name] = _shape(meta)
            self.alias[node] = node.name
            self.inputs.append(node.name)
        elif op == "get_attr":
            t = _fetch_attr(self.gm, node.target)
            if isinstance(t, torch.Tensor):
                role = "param" if id(t) in self.params else "other"
                self.alias[node] = Const(node.target, tuple(t.shape), _DTYPES.get(t.dtype, "fp32"), 0, role)
            else:
                self.alias[node] = None
        elif op == "output":
            acts, _, _ = self.operands(node)
            self.outputs.extend(acts)
        elif op == "call_module":
            self.visit_module(node, self.gm.get_submodule(node.target))
        else:
            self.visit_function(node)

    def visit_quantized(self, node, mod, acts) -> bool:
        """Modules left by torch's FX quantization (``convert_fx``): int8 conv/linear, fused or not."""
        qnn = torch.ao.nn.quantized
        prefix = node.target
        if isinstance(mod, qnn.modules.conv._ConvNd):
            w = mod.weight()
            b = mod.bias()
            attrs = dict(in_channels=mod.in_channels, out_channels=mod.out_channels, kernel=tuple(mod.kernel_size),
                         stride=tuple(mod.stride), padding=tuple(mod.padding), dilation=tuple(mod.dilation),
                         groups=mod.groups, bias=b is not None, fused=type(mod).__name__)
            cs = [Const(f"{prefix}.weight", tuple(w.shape), "int8", 1, "weight")]
            if b is not None:
                cs.append(Const(f"{prefix}.bias", tuple(b.shape), "fp32", 2, "bias"))
            self.add(node, "conv", name=prefix, inputs=acts[:1], consts=cs, attrs=attrs).precision = "int8"
            return True
        if isinstance(mod, (qnn.Linear, qnn.dynamic.Linear)):
            w, b = mod.weight(), mod.bias()
            cs = [Const(f"{prefix}.weight", tuple(w.shape), "int8", 1, "weight")]
            if b is not None:
                cs.append(Const(f"{prefix}.bias", tuple(b.shape), "fp32", 2, "bias"))
            self.add(node, "linear", name=prefix, inputs=acts[:1], consts=cs,
                     attrs=dict(in_features=mod.in_features, out_features=mod.out_features, bias=b is not None,
                                fused=type(mod).__name__)).precision = "int8"
            return True
        if isinstance(mod, (qnn.Quantize, qnn.DeQuantize)):
            self.add(node, "quantize" if isinstance(mod, qnn.Quantize) else "dequantize", inputs=acts)
            return True
        if type(mod).__module__.startswith("torch.ao.nn.quantized") and acts:
            # quantized activations, adds, pools, batch norms (standalone ones keep their params)
            kind = {"ReLU6": "act", "Hardswish": "act", "ELU": "act", "LeakyReLU": "act", "Sigmoid": "act",
                    "FloatFunctional": "identity"}.get(type(mod).__name__)
            if kind:
                self.add(node, kind, inputs=acts)
                return True
        return False

    def visit_module(self, node, mod) -> None:
        acts, consts, pos = self.operands(node)
        prefix = node.target
        nn = torch.nn
        if self.visit_quantized(node, mod, acts):
            return
        params = prefix  # where the weights live
        if isinstance(mod, torch.ao.nn.intrinsic._FusedModule) and isinstance(mod[0], (nn.Conv2d, nn.Linear)):
            mod, params = mod[0], f"{prefix}.0"  # conv+bn+relu fused by prepare_fx: the conv carries the layer
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            n = mod.weight.dim() - 2
            attrs = dict(in_channels=mod.in_channels, out_channels=mod.out_channels, kernel=tuple(mod.kernel_size),
                         stride=tuple(mod.stride), padding=_pair(mod.padding, n) if not isinstance(mod.padding, str)
                         else mod.padding, dilation=tuple(mod.dilation), groups=mod.groups, bias=mod.bias is not None)
            cs = [self.const(f"{params}.weight", 1, "weight")]
            if mod.bias is not None:
                cs.append(self.const(f"{params}.bias", 2, "bias"))
            o = self.add(node, "conv", name=prefix, inputs=acts[:1], consts=cs, attrs=attrs)
            o.precision = _DTYPES.get(mod.weight.dtype, "fp32")
        elif isinstance(mod, nn.Linear):
            cs = [self.const(f"{params}.weight", 1, "weight")]
            if mod.bias is not None:
                cs.append(self.const(f"{params}.bias", 2, "bias"))
            o = self.add(node, "linear", name=prefix, inputs=acts[:1], consts=cs,
                         attrs=dict(in_features=mod.in_features, out_features=mod.out_features,
                                    bias=mod.bias is not None))
            o.precision = _DTYPES.get(mod.weight.dtype, "fp32")
        elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            cs = [self.const(f"{prefix}.{p}", i + 1, "param" if p in ("weight", "bias") else "other")
                  for i, p in enumerate(("weight", "bias", "running_mean", "running_var")) if getattr(mod, p) is not None]
            self.add(node, "batchnorm", name=prefix, inputs=acts, consts=cs,
                     attrs=dict(channels=mod.num_features, axis=1, affine=mod.affine, eps=mod.eps))
        elif isinstance(mod, nn.LayerNorm):
            cs = [self.const(f"{prefix}.{p}", i + 1, "param") for i, p in enumerate(("weight", "bias"))
                  if getattr(mod, p, None) is not None]
            self.add(node, "layernorm", name=prefix, inputs=acts, consts=cs,
                     attrs=dict(channels=int(mod.normalized_shape[-1]), axes=len(mod.normalized_shape),
                                affine=bool(cs)))
        elif isinstance(mod, nn.GroupNorm):
            cs = [self.const(f"{prefix}.{p}", i + 1, "param") for i, p in enumerate(("weight", "bias")) if mod.affine]
            self.add(node, "groupnorm", name=prefix, inputs=acts, consts=cs,
                     attrs=dict(channels=mod.num_channels, groups=mod.num_groups, affine=mod.affine))
        elif isinstance(mod, _ACT_MODULES):
            self.add(node, "act", inputs=acts, attrs={"fn": type(mod).__name__.lower()})
        elif isinstance(mod, _IDENTITY_MODULES):
            self.add(node, "identity", inputs=acts)
        elif isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)):
            self.add(node, "pool", inputs=acts, attrs=dict(kernel=_pair(mod.kernel_size), stride=_pair(mod.stride),
                                                           mode="max" if "Max" in type(mod).__name__ else "avg"))
        elif isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            self.add(node, "pool", inputs=acts, attrs=dict(mode="max" if "Max" in type(mod).__name__ else "avg",
                                                           adaptive=True))
        elif isinstance(mod, nn.Flatten):
            self.add(node, "reshape", inputs=acts)
        elif isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
            self.add(node, "softmax", inputs=acts, attrs={"axis": mod.dim})
        elif isinstance(mod, nn.Upsample):
            self.add(node, "resize", inputs=acts)
        elif isinstance(mod, nn.MultiheadAttention):
            self.visit_attention(node, mod, acts)
        else:
            self.unknown.append(type(mod).__name__)
            self.add(node, "unknown", inputs=acts, consts=consts, positions=pos, attrs={"type": type(mod).__name__})

    def visit_attention(self, node, mod, acts) -> None:
        """Expand a MultiheadAttention leaf into the ops the ONNX exporters emit for it."""
        if not mod.batch_first or not mod._qkv_same_embed_dim or len(set(acts[:3])) != 1:
            self.unknown.append("MultiheadAttention")
            self.add(node, "unknown", inputs=acts, attrs={"type": "MultiheadAttention"})
            return
        x = acts[0]
        n, t, e = self.tensors[x]
        h, prefix = mod.num_heads, node.target
        meta = node.meta.get("tensor_meta")
        qkv = self.add(node, "linear", name=prefix, inputs=[x], out_names=[f"{node.name}.in_proj"],
                       out_shapes=[(n, t, 3 * e)], consts=[self.const(f"{prefix}.in_proj_weight", 1, "weight"),
                                                           self.const(f"{prefix}.in_proj_bias", 2, "bias")],
                       attrs=dict(in_features=e, out_features=3 * e, bias=True))
        scores = self.add(node, "matmul", name=f"{node.name}.qk", inputs=[qkv.outputs[0]] * 2,
                          out_names=[f"{node.name}.qk"], out_shapes=[(n, h, t, t)], attrs={"k": e // h})
        probs = self.add(node, "softmax", name=f"{node.name}.softmax", inputs=scores.outputs,
                         out_names=[f"{node.name}.softmax"], out_shapes=[(n, h, t, t)], attrs={"axis": -1})
        ctx = self.add(node, "matmul", name=f"{node.name}.av", inputs=[probs.outputs[0], qkv.outputs[0]],
                       out_names=[f"{node.name}.av"], out_shapes=[(n, h, t, e // h)], attrs={"k": t})
        outs = [f"{node.name}.0"]
        proj = self.add(node, "linear", name=f"{prefix}.out_proj", inputs=ctx.outputs, out_names=outs[:1],
                        out_shapes=[(n, t, e)], consts=[self.const(f"{prefix}.out_proj.weight", 1, "weight"),
                                                        self.const(f"{prefix}.out_proj.bias", 2, "bias")],
                        attrs=dict(in_features=e, out_features=e, bias=True))
        proj.in_shapes = [(n, t, e)]
        self.alias[node] = (outs[0], None)

    def visit_function(self, node) -> None:
        name = _target_name(node)
        if node.target is operator.getitem:
            self.visit_getitem(node)
            return
        if name in _NON_TENSOR or "tensor_meta" not in node.meta:
            self.alias[node] = None
            return
        acts, consts, pos = self.operands(node)
        kind = _FUNC_KINDS.get(name)
        args = node.args
        ndim = len(self.tensors[acts[0]]) if acts else 0
        out = node.meta["tensor_meta"]
        out_rank = len(out.shape) if isinstance(out, TensorMetadata) else 0
        if kind is None:
            self.unknown.append(name)
            self.add(node, "unknown", inputs=acts, consts=consts, positions=pos, attrs={"type": name})
            return
        if not acts:  # e.g. expand() of a parameter: a constant the consumers see as a tensor
            c = consts[0] if consts else None
            self.alias[node] = Const(c.name, _shape(out), c.dtype, 0, c.role) if c is not None else None
            return
        attrs: dict = {}
        if kind == "concat":
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else 0)
            attrs["axis"] = dim % out_rank
        elif kind == "split":
            dim = node.kwargs.get("dim", args[2] if len(args) > 2 else 0)
            attrs["axis"] = dim % ndim
        elif kind == "transpose":
            if name == "transpose":
                perm = list(range(ndim))
                d0, d1 = args[1] % ndim, args[2] % ndim
                perm[d0], perm[d1] = perm[d1], perm[d0]
            else:
                perm = [int(d) % ndim for d in (args[1] if isinstance(args[1], (tuple, list)) else args[1:])]
            attrs["perm"] = perm
        elif kind == "reduce":
            dims = node.kwargs.get("dim", args[1] if len(args) > 1 else None)
            dims = list(range(ndim)) if dims is None else ([dims] if isinstance(dims, int) else list(dims))
            attrs.update(axes=sorted(d % ndim for d in dims), keepdims=bool(node.kwargs.get(
                "keepdim", args[2] if len(args) > 2 else False)))
        elif kind == "softmax":
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else -1)
            attrs["axis"] = dim % ndim
        elif kind == "pool":
            attrs["mode"] = "max" if "max" in name else "avg"
        elif kind == "layernorm":
            shape = args[1] if len(args) > 1 else node.kwargs["normalized_shape"]
            wb = [c for c in consts]
            for i, c in enumerate(wb):
                wb[i] = Const(c.name, c.shape, c.dtype, i + 1, "param")
            consts = wb
            attrs.update(channels=int(shape[-1]), axes=len(shape), affine=bool(wb))
        elif kind == "act":
            attrs["fn"] = name
        elif kind in ("linear", "conv"):
            w = next((c for c in consts if c.position == 1), None)
            if w is None or len(acts) != 1:
                self.unknown.append(name)
                self.add(node, "unknown", inputs=acts, consts=consts, positions=pos, attrs={"type": name})
                return
            consts = [Const(c.name, c.shape, c.dtype, c.position, "weight" if c.position == 1 else "bias")
                      for c in consts]
            layer = w.name[:-len(".weight")] if w.name.endswith(".weight") else node.name
            if kind == "linear":
                attrs = dict(in_features=w.shape[1], out_features=w.shape[0], bias=len(consts) > 1)
            else:
                g = node.kwargs.get("groups", args[6] if len(args) > 6 else 1)
                attrs = dict(in_channels=w.shape[1] * g, out_channels=w.shape[0], kernel=tuple(w.shape[2:]),
                             stride=_pair(node.kwargs.get("stride", args[3] if len(args) > 3 else 1)),
                             padding=_pair(node.kwargs.get("padding", args[4] if len(args) > 4 else 0)),
                             dilation=_pair(node.kwargs.get("dilation", args[5] if len(args) > 5 else 1)),
                             groups=g, bias=len(consts) > 1)
            o = self.add(node, kind, name=layer, inputs=acts, consts=consts, attrs=attrs)
            o.precision = w.dtype
            return
        elif kind == "matmul":
            if len(acts) == 2:
                attrs["k"] = self.tensors[acts[0]][-1]
            else:  # activation @ parameter: a linear layer without bias
                w = consts[0]
                self.add(node, "linear", name=w.name, inputs=acts, consts=[Const(w.name, w.shape, w.dtype, 1, "weight")],
                         attrs=dict(in_features=w.shape[0], out_features=w.shape[-1], bias=False,
                                    weight_transposed=True))
                return
        self.add(node, kind, inputs=acts, consts=consts, positions=pos or None, attrs=attrs)

    def visit_getitem(self, node) -> None:
        src, idx = node.args
        v = self.alias.get(src)
        if isinstance(v, tuple):           # output of a multi-output op
            self.alias[node] = v[idx] if isinstance(idx, int) else None
            return
        if v is None or isinstance(v, Const) or "tensor_meta" not in node.meta:
            self.alias[node] = None
            return
        # tensor indexing: x[:, 0] (gather) or x[:, a:b] (slice) along one axis
        index = idx if isinstance(idx, tuple) else (idx,)
        axes = [(i, s) for i, s in enumerate(index) if s != slice(None)]
        if len(axes) == 1 and isinstance(axes[0][1], int):
            self.add(node, "gather", inputs=[v], attrs={"axis": axes[0][0], "index": axes[0][1]})
        elif len(axes) == 1 and isinstance(axes[0][1], slice):
            s = axes[0][1]
            self.add(node, "slice", inputs=[v], attrs={"axis": axes[0][0], "start": s.start or 0,
                                                       "end": s.stop, "step": s.step or 1})
        else:
            self.unknown.append("getitem")
            self.add(node, "unknown", inputs=[v], attrs={"type": "getitem"})


def analyze_fx(module: torch.nn.Module, example_inputs, *, model_name: str | None = None) -> Graph:
    gm = trace(module)
    propagate_shapes(gm, example_inputs)
    b = _Builder(gm)
    for node in gm.graph.nodes:
        b.visit(node)
    g = Graph.from_ops(b.ops, backend="fx", inputs=b.inputs, outputs=b.outputs, tensors=b.tensors,
                       unknown_ops=b.unknown, model_name=model_name or type(module).__name__)
    g.graph["total_params"] = sum(p.numel() for p in module.parameters())
    g.graph["gm"] = gm
    return g
