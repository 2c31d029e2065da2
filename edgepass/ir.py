"""The graph IR every other part reads.

A :class:`Graph` is a ``networkx.DiGraph`` whose nodes are operator names and whose node attribute
``op`` holds an :class:`Op`. Edges run producer -> consumer and carry the tensor name. Both front
ends (torch.fx and ONNX) normalise to the same op kinds and compute costs with the same functions
(:func:`compute_costs`), so the same model gives the same MACs per layer whichever way it arrives.

Weighted layers (``conv``, ``linear``) are named after the module that owns the weight
(``layer1.0.conv1``): that name is what both front ends can recover, and it is the key a
:class:`~edgepass.space.Design` uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

# normalised op kinds
WEIGHTED_KINDS = ("conv", "linear")
ELEMENTWISE_UNARY = "act"
KINDS = (
    "conv", "linear", "matmul", "batchnorm", "layernorm", "groupnorm", "act", "identity",
    "add", "sub", "mul", "div", "binary", "concat", "split", "slice", "gather", "pool",
    "global_pool", "reduce", "reshape", "transpose", "expand", "pad", "resize", "softmax",
    "quantize", "dequantize", "cast", "unknown",
)

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1, "uint8": 1, "int32": 4, "int64": 8, "bool": 1}

#: the precisions a layer can run in (the design space offers a subset per device)
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class Const:
    """A constant operand of an op (weight, bias, initializer, parameter)."""

    name: str          # backend name: initializer name / parameter path
    shape: tuple
    dtype: str = "fp32"
    position: int = 0  # operand position in the op
    role: str = "other"  # weight | bias | param (a trained parameter, e.g. layer scale) | other


@dataclass
class Op:
    """One operator of the IR."""

    name: str                      # stable name (module path for weighted layers)
    kind: str                      # normalised kind, one of KINDS
    ref: str                       # backend object: fx node name / onnx node name
    backend_op: str                # fx target / onnx op_type, for messages
    inputs: list = field(default_factory=list)       # activation tensor names, in operand order
    outputs: list = field(default_factory=list)      # tensor names
    in_shapes: list = field(default_factory=list)
    out_shapes: list = field(default_factory=list)
    consts: list = field(default_factory=list)       # list[Const]
    attrs: dict = field(default_factory=dict)
    input_positions: list = field(default_factory=list)  # operand position of each activation input
    precision: str = "fp32"
    params: int = 0
    macs: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    order: int = 0                 # position in the backend graph, for a deterministic topological order

    @property
    def weighted(self) -> bool:
        return self.kind in WEIGHTED_KINDS

    def const(self, role: str) -> Const | None:
        return next((c for c in self.consts if c.role == role), None)


class UniqueNames:
    """Hands out names not used before: ``name``, then ``name<sep>2``, ``name<sep>3``..."""

    def __init__(self, taken=(), sep: str = "#"):
        self.taken = set(taken)
        self.sep = sep

    def __call__(self, name: str) -> str:
        base, k = name, 1
        while name in self.taken:
            k += 1
            name = f"{base}{self.sep}{k}"
        self.taken.add(name)
        return name


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs)) if xs is not None else 0


def compute_costs(op: Op) -> None:
    """Fill ``params``, ``macs`` and bytes moved; identical for both front ends."""
    a = op.attrs
    out = op.out_shapes[0] if op.out_shapes else ()
    if op.kind == "conv":
        cin = a["in_channels"]
        op.macs = _prod(out) * (cin // a["groups"]) * _prod(a["kernel"])
        op.params = a["out_channels"] * (cin // a["groups"]) * _prod(a["kernel"]) + (a["out_channels"] if a.get("bias") else 0)
    elif op.kind == "linear":
        op.macs = _prod(out) * a["in_features"]
        op.params = a["in_features"] * a["out_features"] + (a["out_features"] if a.get("bias") else 0)
    elif op.kind == "matmul":
        op.macs = _prod(out) * a.get("k", 0)
        op.params = 0
    elif op.kind in ("batchnorm", "layernorm", "groupnorm"):
        op.params = 2 * a.get("channels", 0) if a.get("affine", True) else 0
    else:
        # elementwise ops with parameter operands (layer scale, class token...) own those values
        op.params = sum(_prod(c.shape) for c in op.consts if c.role == "param")
    act_bytes = DTYPE_BYTES.get(op.precision, 4)
    op.bytes_read = sum(_prod(s) for s in op.in_shapes) * act_bytes + sum(
        _prod(c.shape) * DTYPE_BYTES.get(c.dtype, 4) for c in op.consts)
    op.bytes_written = sum(_prod(s) for s in op.out_shapes) * act_bytes


class Graph(nx.DiGraph):
    """A DiGraph of :class:`Op` nodes plus the tensors between them.

    Graph-level attributes (``self.graph``): ``backend`` ("fx" or "onnx"), ``inputs`` and
    ``outputs`` (tensor names), ``tensors`` (name -> shape), ``unknown_ops`` (backend op names
    the IR could not normalise), ``model_name``.
    """

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_ops(cls, ops: list[Op], *, backend: str, inputs, outputs, tensors, unknown_ops=(), model_name="model") -> "Graph":
        g = cls()
        g.graph.update(backend=backend, inputs=list(inputs), outputs=list(outputs), tensors=dict(tensors),
                       unknown_ops=sorted(set(unknown_ops)), model_name=model_name)
        producer = {}
        for op in ops:
            if op.name in g:
                raise ValueError(f"duplicate op name {op.name!r}")
            compute_costs(op)
            g.add_node(op.name, op=op)
            for t in op.outputs:
                producer[t] = op.name
        for op in ops:
            for i, t in enumerate(op.inputs):
                if t in producer:
                    g.add_edge(producer[t], op.name, tensor=t, index=i)
        g.graph["producer"] = producer
        return g

    # -- access -----------------------------------------------------------------------------
    def op(self, name: str) -> Op:
        return self.nodes[name]["op"]

    def ops(self):
        """Ops in a deterministic topological order."""
        for n in nx.lexicographical_topological_sort(self, key=lambda n: self.nodes[n]["op"].order):
            yield self.nodes[n]["op"]

    def layers(self) -> list[Op]:
        """Weighted layers (conv, linear) in topological order."""
        return [op for op in self.ops() if op.weighted]

    def producer(self, tensor: str) -> Op | None:
        name = self.graph["producer"].get(tensor)
        return self.op(name) if name is not None else None

    def consumers(self, tensor: str) -> list[Op]:
        p = self.graph["producer"].get(tensor)
        if p is None:
            return [op for op in self.ops() if tensor in op.inputs]
        return [self.op(v) for v in self.successors(p) if tensor in self.op(v).inputs]

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops())

    @property
    def params(self) -> int:
        return self.graph.get("total_params") or sum(op.params for op in self.ops())

    # -- reports ----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        layers = []
        for op in self.layers():
            a = op.attrs
            layers.append({
                "name": op.name,
                "op": op.kind,
                "macs": int(op.macs),
                "params": int(op.params),
                "in_channels": int(a.get("in_channels", a.get("in_features", 0))),
                "out_channels": int(a.get("out_channels", a.get("out_features", 0))),
                "kernel": list(a["kernel"]) if "kernel" in a else None,
                "stride": list(a["stride"]) if "stride" in a else None,
                "groups": int(a.get("groups", 1)),
                "precision": op.precision,
            })
        return {
            "model": self.graph.get("model_name", "model"),
            "backend": self.graph["backend"],
            "macs": int(self.macs),
            "params": int(self.params),
            "n_ops": self.number_of_nodes(),
            "n_layers": len(layers),
            "bytes_read": int(sum(op.bytes_read for op in self.ops())),
            "bytes_written": int(sum(op.bytes_written for op in self.ops())),
            "inputs": {t: list(self.graph["tensors"].get(t, ())) for t in self.graph["inputs"]},
            "outputs": {t: list(self.graph["tensors"].get(t, ())) for t in self.graph["outputs"]},
            "unknown_ops": list(self.graph["unknown_ops"]),
            "layers": layers,
        }

    def table(self) -> str:
        """The layer table as text (what ``edgepass analyze`` prints)."""
        s = self.summary()
        rows = [("layer", "op", "in", "out", "kernel", "stride", "groups", "MMACs", "params", "prec")]
        for r in s["layers"]:
            k = "x".join(map(str, r["kernel"])) if r["kernel"] else "-"
            st = "x".join(map(str, r["stride"])) if r["stride"] else "-"
            rows.append((r["name"], r["op"], str(r["in_channels"]), str(r["out_channels"]), k, st,
                         str(r["groups"]), f"{r['macs'] / 1e6:.2f}", f"{r['params']:,}", r["precision"]))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("-" * len(lines[0]))
        lines.append(f"{s['model']} ({s['backend']}): {s['n_layers']} weighted layers, {s['n_ops']} ops, "
                     f"{s['macs'] / 1e9:.3f} GMACs, {s['params'] / 1e6:.3f} M params")
        if s["unknown_ops"]:
            lines.append(f"operators not understood (their channels are frozen): {', '.join(s['unknown_ops'])}")
        return "\n".join(lines)
