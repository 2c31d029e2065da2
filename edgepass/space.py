"""The design space read off an IR graph: channel groups, kernel choices, precision choices.

Channel coupling is found by propagating a *channel layout* through the graph: for every tensor,
which axis carries channels and, along it, a sequence of segments ``(atom, repeat)``. An atom is
a run of channels created by one producer (a conv's or linear's output); ``repeat`` > 1 appears
after a flatten (each channel becomes ``repeat`` consecutive features). Operators then constrain
atoms: an elementwise ``add``/``mul`` of two tensors unifies their atoms (union-find), a
depthwise conv or a norm passes them through, a ``concat`` along channels concatenates segment
lists (so a consumer sees offset slices of several producers), a ``split`` cuts them at atom
boundaries. A union-find class of atoms is a :class:`ChannelGroup`.

Anything the analysis cannot follow *freezes* the atoms involved instead of guessing: channels
that reach a model input or output, an unknown operator, a split inside one producer's channels,
a reshape that splits the channel axis (channel shuffle), an activation-by-activation matmul
(attention). Frozen groups are listed with their reason but never offered, so no design can
produce an invalid model.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .ir import Graph, Op

WIDTH_RATIOS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)
PRECISIONS = ("fp32", "fp16", "int8")
_PASS_THROUGH = {"act", "identity", "cast", "quantize", "dequantize", "pad", "resize", "softmax", "pool"}
_ELEMENTWISE = {"add", "sub", "mul", "div", "binary"}


# --------------------------------------------------------------------------------------------
# union-find over atoms
# --------------------------------------------------------------------------------------------
class _Atoms:
    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen: list[str | None] = []
        self.gran: list[int] = []
        self.members: list[list[tuple[str, str]]] = []

    def new(self, size: int, frozen: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(int(size))
        self.frozen.append(frozen)
        self.gran.append(1)
        self.members.append([])
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def freeze(self, a: int, reason: str) -> None:
        r = self.find(a)
        if self.frozen[r] is None:
            self.frozen[r] = reason

    def union(self, a: int, b: int, why: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] != self.size[rb]:
            self.freeze(ra, f"{why}: {self.size[ra]} vs {self.size[rb]} channels")
            self.freeze(rb, f"{why}: {self.size[ra]} vs {self.size[rb]} channels")
            return
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.frozen[ra] = self.frozen[ra] or self.frozen[rb]
        self.gran[ra] = math.lcm(self.gran[ra], self.gran[rb])
        self.members[ra].extend(self.members[rb])

    def add_member(self, a: int, op: str, role: str) -> None:
        self.members[self.find(a)].append((op, role))


@dataclass(frozen=True)
class Layout:
    """Channel layout of a tensor: the channel axis and its segments ``(atom, repeat)``."""

    axis: int
    segs: tuple

    def width(self, atoms: _Atoms) -> int:
        return sum(atoms.size[a] * r for a, r in self.segs)


# --------------------------------------------------------------------------------------------
# public types
# --------------------------------------------------------------------------------------------
@dataclass
class ChannelGroup:
    """Channels that must shrink together."""

    id: str
    width: int
    members: list            # [(op name, role)]: role in out | in | dw | grouped | norm | const | concat | split | slice | reshape | ...
    choices: list = field(default_factory=list)  # offered widths, descending, first == width
    granularity: int = 1     # widths are multiples of this (grouped convs keep whole groups)
    frozen: str | None = None  # reason, when not offered

    def to_dict(self) -> dict:
        return {"id": self.id, "width": self.width, "choices": list(self.choices), "granularity": self.granularity,
                "frozen": self.frozen, "members": [list(m) for m in self.members]}


MAX_DESIGN_INT = 1 << 24   # channels / kernel sizes beyond any real layer (keeps int() of JSON sane)


def _design_int(knob: str, key, value) -> int:
    # bool is an int in Python, and JSON's 3.0 is a float: accept whole finite numbers only
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or \
            value in (float("inf"), float("-inf")) or int(value) != value or not 1 <= value <= MAX_DESIGN_INT:
        raise InputError(f"design: {knob}[{key!r}] must be a whole number from 1 to {MAX_DESIGN_INT}, got "
                         f"{str(value)[:40]}")
    return int(value)


def _design_precision(knob: str, key, value) -> str:
    if value not in PRECISIONS:
        raise InputError(f"design: {knob}[{key!r}] must be one of {', '.join(PRECISIONS)}, got {str(value)[:40]}")
    return value


def _design_key(knob: str, key) -> str:
    if not isinstance(key, str) or not key:
        raise InputError(f"design: {knob} keys must be layer names")
    return key


DESIGN_KNOBS = {"widths": _design_int, "kernels": _design_int, "precisions": _design_precision}


@dataclass
class Design:
    """One point of a design space: a width per group, a kernel per conv, a precision per layer.

    Keys are layer / group names, so a design serialises to stable JSON that can be stored,
    diffed and re-applied (to the FX or the ONNX form of the same model).
    """

    widths: dict = field(default_factory=dict)
    kernels: dict = field(default_factory=dict)
    precisions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"widths": dict(sorted(self.widths.items())), "kernels": dict(sorted(self.kernels.items())),
                "precisions": dict(sorted(self.precisions.items()))}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "Design":
        """A design from its JSON object; anything else is an :class:`InputError` naming what is wrong."""
        if not isinstance(d, dict) or not set(d) <= set(DESIGN_KNOBS):
            raise InputError("a design is a JSON object with keys widths, kernels, precisions")
        parts = {}
        for knob, check in DESIGN_KNOBS.items():
            entries = d.get(knob, {})
            if not isinstance(entries, dict):
                raise InputError(f"design: {knob} must be an object of layer name -> value, not "
                                 f"{type(entries).__name__}")
            parts[knob] = {_design_key(knob, k): check(knob, k, v) for k, v in entries.items()}
        return cls(**parts)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Design":
        try:
            if isinstance(text, (bytes, bytearray)):
                text = bytes(text).decode("utf-8")
            data = json.loads(text)
        except UnicodeDecodeError:
            raise InputError("design is not UTF-8 text (binary content)") from None
        except RecursionError:
            raise InputError("design is not valid JSON: nested too deeply") from None
        except (TypeError, ValueError) as exc:  # ValueError: bad JSON, or an integer of thousands of digits
            raise InputError(f"design is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def diff(self, other: "Design") -> dict:
        """``{knob: {key: (mine, theirs)}}`` for every key that differs."""
        out = {}
        for knob in ("widths", "kernels", "precisions"):
            a, b = getattr(self, knob), getattr(other, knob)
            d = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
            if d:
                out[knob] = d
        return out


class DesignSpace:
    """The knobs of one model: channel groups, kernel choices, precision choices."""

    def __init__(self, graph: Graph, groups: list[ChannelGroup], frozen: list[ChannelGroup], kernels: dict,
                 precisions: dict, layouts: dict, op_layouts: dict):
        self.graph = graph
        self.groups = groups                      # offered groups
        self.frozen = frozen                      # not offered, with reasons
        self.kernels = kernels                    # conv name -> [k, ...] (first == current)
        self.precisions = precisions              # layer name -> ["fp32", "fp16", "int8"]
        self.layouts = layouts                    # tensor -> (axis, [(group id, size, repeat)])
        self.op_layouts = op_layouts              # op name -> {"in": [layout|None], "out": [layout|None]}
        self._by_id = {g.id: g for g in groups + frozen}

    # -- access -----------------------------------------------------------------------------
    def group(self, gid: str) -> ChannelGroup:
        return self._by_id[gid]

    def group_of(self, op_name: str, role: str = "out") -> ChannelGroup | None:
        for g in self.groups + self.frozen:
            if (op_name, role) in g.members:
                return g
        return None

    # -- designs ----------------------------------------------------------------------------
    def identity(self) -> Design:
        """The design that reproduces the input model exactly."""
        return Design(widths={g.id: g.width for g in self.groups},
                      kernels={c: ks[0] for c, ks in self.kernels.items()},
                      precisions={layer: self.graph.op(layer).precision if self.graph.op(layer).precision in ps
                                  else ps[0] for layer, ps in self.precisions.items()})

    def sample(self, rng=None) -> Design:
        """A uniformly random design (``rng``: a numpy Generator or a seed)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return Design(widths={g.id: int(g.choices[rng.integers(len(g.choices))]) for g in self.groups},
                      kernels={c: int(ks[rng.integers(len(ks))]) for c, ks in self.kernels.items()},
                      precisions={layer: str(ps[rng.integers(len(ps))]) for layer, ps in self.precisions.items()})

    def uniform(self, ratio: float = 1.0, *, precision: str | None = None, min_kernels: bool = False) -> Design:
        """The uniform baseline: every group at the offered width nearest ``ratio`` x its width,
        optionally every layer at one precision and every kernel at its smallest choice."""
        d = self.identity()
        for g in self.groups:
            d.widths[g.id] = min(g.choices, key=lambda w: (abs(w - ratio * g.width), -w))
        if min_kernels:
            d.kernels = {c: ks[-1] for c, ks in self.kernels.items()}
        if precision is not None:
            d.precisions = {layer: precision for layer, ps in self.precisions.items() if precision in ps}
        return d

    def size(self) -> float:
        """log10 of the number of designs."""
        n = sum(math.log10(len(g.choices)) for g in self.groups)
        n += sum(math.log10(len(k)) for k in self.kernels.values())
        n += sum(math.log10(len(p)) for p in self.precisions.values())
        return n

    def validate(self, design: Design) -> Design:
        """Fill missing keys with the identity and reject unknown keys or values not offered."""
        full = self.identity()
        for knob, offered in (("widths", {g.id: g.choices for g in self.groups}), ("kernels", self.kernels),
                              ("precisions", self.precisions)):
            mine = getattr(design, knob)
            for k, v in mine.items():
                if k not in offered:
                    raise InputError(f"design {knob[:-1]} key {k!r} is not in this model's design space")
                if v not in offered[k]:
                    raise InputError(f"design {knob[:-1]} {k!r}={v!r} is not offered (choices: {list(offered[k])})")
            getattr(full, knob).update(mine)
        return full

    def restrict(self, *, ignore=(), precisions=None) -> "DesignSpace":
        """A copy without the knobs of ``ignore``d layers (their groups are frozen, like NNCF's ignored
        scope) and with precision choices limited to ``precisions`` (e.g. what a device supports)."""
        ignore = set(ignore or ())
        known = {op.name for op in self.graph.ops()}
        unknown = sorted(ignore - known)
        if unknown:
            raise InputError(f"ignored layer(s) not in the model: {', '.join(unknown[:5])}")
        groups, frozen = [], list(self.frozen)
        for g in self.groups:
            if ignore & {m for m, _ in g.members}:
                frozen.append(ChannelGroup(g.id, g.width, g.members, [g.width], g.granularity, "ignored by the user"))
            else:
                groups.append(g)
        kernels = {k: v for k, v in self.kernels.items() if k not in ignore}
        allowed = list(precisions) if precisions is not None else None
        precs = {}
        for layer, ps in self.precisions.items():
            if layer in ignore:
                continue
            keep = [p for p in ps if allowed is None or p in allowed or p == self.graph.op(layer).precision]
            if len(keep) > 1:
                precs[layer] = keep
        return DesignSpace(self.graph, groups, frozen, kernels, precs, self.layouts, self.op_layouts)

    # -- designs as integer vectors (for optimizers and batched predictors) ----------------
    def knobs(self) -> list[tuple[str, str, list]]:
        """Every knob in a fixed order: ``(knob, key, choices)``, knob in widths | kernels | precisions."""
        out = [("widths", g.id, list(g.choices)) for g in self.groups]
        out += [("kernels", c, list(ks)) for c, ks in self.kernels.items()]
        out += [("precisions", layer, list(ps)) for layer, ps in self.precisions.items()]
        return out

    def encode(self, design: Design) -> np.ndarray:
        """Choice index per knob (order of :meth:`knobs`)."""
        d = self.validate(design)
        return np.array([choices.index(getattr(d, knob)[key]) for knob, key, choices in self.knobs()], dtype=np.int64)

    def decode(self, vec) -> Design:
        d = Design()
        for (knob, key, choices), i in zip(self.knobs(), np.asarray(vec).tolist()):
            getattr(d, knob)[key] = choices[int(i)]
        return d

    def design_op(self, op: Op, widths: dict, kernel: int | None = None, precision: str | None = None) -> Op:
        """``op`` as the model would have it with group ``widths`` (group id -> width; missing groups
        keep theirs), ``kernel`` and ``precision``: shapes, channel counts and costs recomputed."""
        import copy

        from .ir import compute_costs

        def new_shape(t):
            shape = self.graph.graph["tensors"].get(t)
            lay = self.layouts.get(t)
            if shape is None or lay is None:
                return shape
            axis, segs = lay
            shape = list(shape)
            shape[axis] = sum(widths.get(gid, size) * rep for gid, size, rep in segs)
            return tuple(shape)

        o = copy.copy(op)
        o.attrs = dict(op.attrs)
        o.in_shapes = [new_shape(t) or s for t, s in zip(op.inputs, op.in_shapes)]
        o.out_shapes = [new_shape(t) or s for t, s in zip(op.outputs, op.out_shapes)]
        a = o.attrs
        if o.kind == "conv":
            cin_old, g_old = op.attrs["in_channels"], op.attrs["groups"]
            a["in_channels"], a["out_channels"] = o.in_shapes[0][1], o.out_shapes[0][1]
            if g_old > 1:
                a["groups"] = a["in_channels"] if g_old == cin_old else a["in_channels"] // (cin_old // g_old)
            if kernel is not None and kernel != op.attrs["kernel"][0]:
                a["kernel"] = (kernel, kernel)
        elif o.kind == "linear":
            a["in_features"] = int(np.prod(o.in_shapes[0][-1:]))
            a["out_features"] = o.out_shapes[0][-1]
        elif o.kind in ("batchnorm", "layernorm") and self.layouts.get(op.outputs[0]):
            a["channels"] = o.out_shapes[0][self.layouts[op.outputs[0]][0]]
        if precision is not None:
            o.precision = precision
        compute_costs(o)
        return o

    def design_graph(self, design: Design) -> Graph:
        """The IR of the model the design would produce, computed without rewriting anything:
        tensor shapes, channel counts, kernels, precisions and costs (MACs, params, bytes)."""
        from .ir import Graph

        d = self.validate(design)
        widths = {g.id: d.widths[g.id] for g in self.groups}
        ops = [self.design_op(op, widths, d.kernels.get(op.name), d.precisions.get(op.name))
               for op in self.graph.ops()]
        tensors = {}
        for t, s in self.graph.graph["tensors"].items():
            lay = self.layouts.get(t)
            if lay is not None and s is not None:
                s = list(s)
                s[lay[0]] = sum(widths.get(gid, size) * rep for gid, size, rep in lay[1])
            tensors[t] = tuple(s) if s is not None else s
        g = Graph.from_ops(ops, backend=self.graph.graph["backend"], inputs=self.graph.graph["inputs"],
                           outputs=self.graph.graph["outputs"], tensors=tensors,
                           unknown_ops=self.graph.graph["unknown_ops"], model_name=self.graph.graph.get("model_name"))
        g.graph["total_params"] = None
        return g

    def hash(self) -> str:
        """Identifies the space (not the weights): optimizers trained for it are cached under this key."""
        d = {"groups": [(g.id, g.width, g.choices) for g in self.groups], "kernels": sorted(self.kernels.items()),
             "precisions": sorted(self.precisions.items()),
             "layers": [(op.name, op.kind, op.macs) for op in self.graph.layers()]}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    # -- reports ----------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"model": self.graph.graph.get("model_name"), "size_log10": round(self.size(), 3),
                "hash": self.hash(), "groups": [g.to_dict() for g in self.groups],
                "frozen": [g.to_dict() for g in self.frozen],
                "kernels": dict(self.kernels), "precisions": dict(self.precisions),
                "unknown_ops": list(self.graph.graph["unknown_ops"])}

    def table(self) -> str:
        rows = [("group", "width", "choices", "members")]
        for g in self.groups:
            rows.append((g.id, str(g.width), ",".join(map(str, g.choices)), str(len(g.members))))
        w = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append("")
        lines.append(f"{len(self.groups)} channel groups offered, {len(self.frozen)} frozen; "
                     f"{len(self.kernels)} convs with kernel choices; {len(self.precisions)} layers with precision "
                     f"choices; 10^{self.size():.1f} designs")
        reasons: dict[str, int] = {}
        for g in self.frozen:
            key = g.frozen.split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
        if reasons:
            lines.append("frozen: " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items())))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# the analysis
# --------------------------------------------------------------------------------------------
def _width_choices(width: int, granularity: int, ratios=WIDTH_RATIOS, multiple: int = 8) -> list[int]:
    m = math.lcm(multiple, granularity)
    out = {width}
    for r in ratios:
        w = int(round(r * width / m)) * m
        if m <= w <= width:
            out.add(w)
    return sorted(out, reverse=True)


def _kernel_choices(op: Op, min_kernel: int) -> list[int]:
    k = op.attrs["kernel"]
    if len(k) != 2 or k[0] != k[1] or k[0] % 2 == 0 or k[0] < 3:
        return []
    pads = op.attrs.get("pads") or tuple(op.attrs.get("padding", (0, 0))) * 2
    if isinstance(pads, str) or len(set(pads)) > 2 or tuple(pads[:2]) != tuple(pads[2:]):
        return []
    dil = op.attrs.get("dilation", (1, 1))
    out = []
    for kk in range(k[0], min_kernel - 1, -2):
        shrink = (k[0] - kk) // 2
        if all(p - shrink * d >= 0 for p, d in zip(pads[:2], dil)):
            out.append(kk)
    return out if len(out) > 1 else []


class _Analysis:
    def __init__(self, graph: Graph):
        self.g = graph
        self.atoms = _Atoms()
        self.lay: dict[str, Layout | None] = {}
        self.op_in: dict[str, list] = {}
        self.op_out: dict[str, list] = {}

    # helpers -------------------------------------------------------------------------------
    def fresh(self, shape, reason: str, axis: int | None = None) -> Layout | None:
        if not shape:
            return None
        axis = (1 if len(shape) == 4 else len(shape) - 1) if axis is None else axis
        return Layout(axis, ((self.atoms.new(shape[axis], reason), 1),))

    def freeze(self, layout: Layout | None, reason: str) -> None:
        if layout is not None:
            for a, _ in layout.segs:
                self.atoms.freeze(a, reason)

    def member(self, layout: Layout | None, op: Op, role: str) -> None:
        if layout is not None:
            for a, _ in layout.segs:
                self.atoms.add_member(a, op.name, role)

    def opaque(self, op: Op, reason: str) -> list:
        """Freeze what flows in; what flows out is untracked (None): it is never shrunk, and
        anything later tied to it elementwise is frozen (see :meth:`elementwise`)."""
        for t in op.inputs:
            self.freeze(self.lay.get(t), reason)
        return [None] * len(op.outputs)

    def unify(self, a: Layout, b: Layout, why: str) -> bool:
        """Tie two layouts channel by channel; freeze both if their structure differs."""
        if a.segs == b.segs:
            return True
        if [(self.atoms.size[x], r) for x, r in a.segs] == [(self.atoms.size[x], r) for x, r in b.segs]:
            for (x, _), (y, _) in zip(a.segs, b.segs):
                self.atoms.union(x, y, why)
            return True
        self.freeze(a, f"{why} of differently concatenated tensors")
        self.freeze(b, f"{why} of differently concatenated tensors")
        return False

    def cut(self, layout: Layout, start: int, end: int) -> tuple | None:
        """Segments covering channel range [start, end), or None if it cuts inside a segment."""
        pos, out = 0, []
        for a, r in layout.segs:
            n = self.atoms.size[a] * r
            if pos >= start and pos + n <= end:
                out.append((a, r))
            elif pos < end and pos + n > start:
                return None
            pos += n
        return tuple(out)

    # per op --------------------------------------------------------------------------------
    def run(self) -> None:
        g = self.g
        for t in g.graph["inputs"]:
            self.lay[t] = self.fresh(g.graph["tensors"].get(t, ()), "reaches the model input")
        for op in g.ops():
            ins = [self.lay.get(t) for t in op.inputs]
            self.op_in[op.name] = ins
            outs = self.visit(op, ins)
            for t, lo in zip(op.outputs, outs):
                self.lay[t] = lo
            self.op_out[op.name] = list(outs)
        for t in g.graph["outputs"]:
            self.freeze(self.lay.get(t), "reaches the model output")

    def visit(self, op: Op, ins: list) -> list:
        k, a = op.kind, op.attrs
        L = ins[0] if ins else None
        out_shape = op.out_shapes[0] if op.out_shapes else ()
        if k == "conv":
            cin, cout, groups = a["in_channels"], a["out_channels"], a["groups"]
            if L is None or L.axis != 1 or any(r != 1 for _, r in L.segs):
                # the input channels stay as they are; a normal conv's own outputs can still shrink
                self.freeze(L, "conv input without a channel layout")
                if groups != 1:
                    return [None]
                out = Layout(1, ((self.atoms.new(cout), 1),))
                self.member(out, op, "out")
                return [out]
            if groups == 1:
                self.member(L, op, "in")
                out = Layout(1, ((self.atoms.new(cout), 1),))
                self.member(out, op, "out")
                return [out]
            if groups == cin == cout:
                self.member(L, op, "dw")
                return [L]
            if cin == cout and len(L.segs) == 1:
                root = self.atoms.find(L.segs[0][0])
                self.atoms.gran[root] = math.lcm(self.atoms.gran[root], cin // groups)
                self.member(L, op, "grouped")
                return [L]
            self.freeze(L, "grouped conv with different in/out widths")
            return [None]
        if k == "linear":
            rank = len(op.in_shapes[0])
            if L is None or L.axis != rank - 1:
                self.freeze(L, "linear input whose channels are not on the last axis")
            else:
                self.member(L, op, "in")
            out = Layout(len(out_shape) - 1, ((self.atoms.new(a["out_features"]), 1),))
            self.member(out, op, "out")
            return [out]
        if k == "batchnorm":
            if L is None or L.axis != 1:
                self.freeze(L, "batchnorm over a non-channel axis")
            else:
                self.member(L, op, "norm")
            return [L]
        if k == "layernorm":
            rank = len(op.in_shapes[0])
            if L is not None and a.get("axes") == 1 and L.axis == rank - 1:
                self.member(L, op, "norm")
            elif L is not None and L.axis >= rank - a.get("axes", 1):
                self.freeze(L, "layernorm over several axes including channels")
            return [L]
        if k == "groupnorm":
            self.freeze(L, "group/instance norm")
            return [L]
        if k in _PASS_THROUGH:
            if L is not None and k == "pool" and len(out_shape) != len(op.in_shapes[0]):
                return self.opaque(op, "pool that changes rank")
            return [L] * len(op.outputs)
        if k in _ELEMENTWISE:
            return [self.elementwise(op, ins)]
        if k == "concat":
            out = self.concat(op, ins)
            return out if isinstance(out, list) else [out]
        if k == "split":
            return self.split(op, L)
        if k == "slice":
            if L is None:
                return [None]
            if a.get("axis") is None:
                return self.opaque(op, "slice with dynamic bounds")
            if a["axis"] != L.axis:
                return [L]
            size = L.width(self.atoms)
            start, end, step = a["start"], a["end"], a.get("step", 1)
            start = start + size if start < 0 else start
            end = size if end is None or end > size else (end + size if end < 0 else end)
            segs = self.cut(L, start, end) if step == 1 else None
            if not segs:
                return self.opaque(op, "slice inside one producer's channels")
            self.member(L, op, "slice")
            return [Layout(L.axis, segs)]
        if k == "gather":
            if L is None:
                return [None]
            if a.get("axis") == L.axis or a.get("index") is None:
                return self.opaque(op, "gather along channels")
            return [Layout(L.axis - (1 if a["axis"] < L.axis else 0), L.segs)]
        if k == "reduce":
            if L is None:
                return [None]
            axes = a.get("axes", [])
            if L.axis in axes:
                return self.opaque(op, "reduction over channels")
            if a.get("keepdims", True):
                return [L]
            return [Layout(L.axis - sum(1 for x in axes if x < L.axis), L.segs)]
        if k == "transpose":
            if L is None:
                return [None]
            return [Layout(list(a["perm"]).index(L.axis), L.segs)]
        if k == "expand":
            if L is None:
                return [None]
            axis = L.axis + len(out_shape) - len(op.in_shapes[0])
            if out_shape[axis] != L.width(self.atoms):
                return self.opaque(op, "expand along channels")
            return [Layout(axis, L.segs)]
        if k == "reshape":
            out = self.reshape(op, L)
            return out if isinstance(out, list) else [out]
        if k == "matmul":
            return self.opaque(op, "matmul of two activations (attention)")
        return self.opaque(op, f"unknown operator {op.backend_op}")

    def elementwise(self, op: Op, ins: list) -> Layout | None:
        out_shape = op.out_shapes[0]
        R = len(out_shape)
        cands = []
        for lo, shape in zip(ins, op.in_shapes):
            if lo is not None:
                cands.append((lo, lo.axis + R - len(shape), shape[lo.axis]))
        full = [(lo, ax) for lo, ax, n in cands if n == out_shape[ax] and n > 1]
        if not full:
            full = [(lo, ax) for lo, ax, n in cands]
        if not full:
            return None
        base, ax = full[0]
        C = out_shape[ax]
        for lo, shape in zip(ins, op.in_shapes):
            idx = ax - (R - len(shape))
            if lo is None and idx >= 0 and shape[idx] == C and C > 1:
                self.freeze(base, f"{op.kind} with an untracked tensor")
        for lo, ax2, n in cands:
            if lo is base:
                continue
            if ax2 == ax and n == C:
                self.unify(base, lo, f"{op.kind} {op.name}")
            elif n == 1 and ax2 == ax:
                continue
            else:
                self.freeze(base, f"{op.kind} mixing channel axes")
                self.freeze(lo, f"{op.kind} mixing channel axes")
        for c in op.consts:
            idx = ax - (R - len(c.shape))
            if idx < 0 or c.shape[idx] == 1 or C == 1:
                continue
            if c.shape[idx] == C:
                self.member(base, op, "const")
            else:
                self.freeze(base, f"{op.kind} with a constant of another width")
        return Layout(ax, base.segs)

    def concat(self, op: Op, ins: list) -> Layout | None:
        axis = op.attrs["axis"]
        operands = sorted([(p, "act", i) for i, p in enumerate(op.input_positions)] +
                          [(c.position, "const", c) for c in op.consts], key=lambda x: x[0])
        lays = [lo for lo in ins if lo is not None]
        if not lays:
            return None
        if all(lo.axis == axis for lo in lays):
            segs: list = []
            for _, kind, item in operands:
                if kind == "act" and ins[item] is not None:
                    segs.extend(ins[item].segs)
                else:
                    shape = op.in_shapes[item] if kind == "act" else item.shape
                    segs.append((self.atoms.new(shape[axis], "untracked or constant tensor concatenated along channels"), 1))
            out = Layout(axis, tuple(segs))
            self.member(out, op, "concat")
            return out
        base = lays[0]
        if base.axis == axis or len(lays) < len(ins):
            return self.opaque(op, "concat mixing channel and other axes")
        for lo in lays[1:]:
            if lo.axis != base.axis:
                self.freeze(lo, "concat mixing channel axes")
                self.freeze(base, "concat mixing channel axes")
            else:
                self.unify(base, lo, f"concat {op.name}")
        if op.consts:
            self.freeze(base, "constant concatenated along tokens")
        return base

    def split(self, op: Op, L: Layout | None) -> list:
        if L is None:
            return [None] * len(op.outputs)
        axis = op.attrs.get("axis")
        if axis != L.axis:
            return [L] * len(op.outputs)
        outs, pos = [], 0
        for shape in op.out_shapes:
            n = shape[axis]
            segs = self.cut(L, pos, pos + n)
            if not segs:
                return self.opaque(op, "split inside one producer's channels")
            outs.append(Layout(axis, segs))
            pos += n
        self.member(L, op, "split")
        return outs

    def reshape(self, op: Op, L: Layout | None) -> Layout | None:
        if L is None:
            return None
        src, dst = op.in_shapes[0], op.out_shapes[0]
        C = src[L.axis]
        prefix = math.prod(src[:L.axis])
        j, acc = 0, 1
        while j < len(dst) and acc < prefix:
            acc *= dst[j]
            j += 1
        # skip leading unit dims so [N, C] -> [N, 1, C] style reshapes still find the channel axis
        while j < len(dst) and acc == prefix and dst[j] == 1 and C != 1:
            j += 1
        if acc != prefix or j >= len(dst):
            return self.opaque(op, "reshape moving channels across other axes")
        if dst[j] == C:
            self.member(L, op, "reshape")
            return Layout(j, L.segs)
        inner = 1
        for d in src[L.axis + 1:]:
            inner *= d
            if dst[j] == C * inner:
                self.member(L, op, "reshape")
                return Layout(j, tuple((x, r * inner) for x, r in L.segs))
        return self.opaque(op, "reshape splitting the channel axis (channel shuffle)")

    # result --------------------------------------------------------------------------------
    def groups(self) -> tuple[list[ChannelGroup], list[ChannelGroup], dict]:
        at = self.atoms
        order = {op.name: i for i, op in enumerate(self.g.ops())}
        roots = sorted({at.find(i) for i in range(len(at.parent))})
        named: dict[int, str] = {}
        used: set[str] = set()
        offered, frozen = [], []
        infos = []
        for r in roots:
            members = sorted(set(at.members[r]), key=lambda m: (order.get(m[0], 1 << 30), m[0], m[1]))
            if members:
                producers = [m[0] for m in members if m[1] == "out"]
                infos.append((r, members, producers))
        # a group is named after its first producer; groups without one after their first member
        infos.sort(key=lambda x: (not x[2], x[0]))
        for r, members, producers in infos:
            gid = producers[0] if producers else f"{members[0][0]}:{members[0][1]}"
            base, k = gid, 1
            while gid in used:
                k += 1
                gid = f"{base}#{k}"
            used.add(gid)
            named[r] = gid
            reason = at.frozen[r]
            if reason is None and not producers:
                reason = "no producer to shrink"
            choices = _width_choices(at.size[r], at.gran[r]) if reason is None else [at.size[r]]
            if reason is None and len(choices) < 2:
                reason = f"too narrow to shrink ({at.size[r]} channels)"
            grp = ChannelGroup(gid, at.size[r], members, choices, at.gran[r], reason)
            (frozen if reason else offered).append(grp)
        key = {op.name: i for i, op in enumerate(self.g.ops())}
        offered.sort(key=lambda g: key.get(g.members[0][0], 0))
        frozen.sort(key=lambda g: key.get(g.members[0][0], 0))
        return offered, frozen, named


def _resolve(lo: Layout | None, atoms: _Atoms, named: dict) -> tuple | None:
    if lo is None:
        return None
    return (lo.axis, [(named.get(atoms.find(a), None), atoms.size[a], r) for a, r in lo.segs])


def build_space(graph: Graph, *, min_kernel: int = 3, precisions=PRECISIONS) -> DesignSpace:
    """The design space of an analysed graph."""
    an = _Analysis(graph)
    an.run()
    offered, frozen, named = an.groups()
    kernels = {}
    for op in graph.layers():
        if op.kind == "conv":
            ks = _kernel_choices(op, min_kernel)
            if ks:
                kernels[op.name] = ks
    precs = {op.name: list(precisions) for op in graph.layers()}
    layouts = {t: _resolve(lo, an.atoms, named) for t, lo in an.lay.items()}
    op_layouts = {n: {"in": [_resolve(lo, an.atoms, named) for lo in an.op_in[n]],
                      "out": [_resolve(lo, an.atoms, named) for lo in an.op_out[n]]} for n in an.op_in}
    return DesignSpace(graph, offered, frozen, kernels, precs, layouts, op_layouts)


def design_space(model, example_inputs=None, *, input_shapes: dict | None = None, min_kernel: int = 3) -> DesignSpace:
    """Analyse ``model`` (nn.Module, ONNX model or path, or an already built Graph) and return its knobs."""
    from .api import analyze

    graph = model if isinstance(model, Graph) else analyze(model, example_inputs, input_shapes=input_shapes)
    return build_space(graph, min_kernel=min_kernel)


def space_summary(space: DesignSpace) -> dict[str, Any]:
    return {"groups": len(space.groups), "frozen_groups": len(space.frozen), "kernels": len(space.kernels),
            "precision_layers": len(space.precisions), "size_log10": round(space.size(), 2)}
