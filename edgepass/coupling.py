"""Channel coupling: which channels of an IR graph must shrink together, and which must not shrink.

Channel coupling is found by propagating a *channel layout* through the graph: for every tensor,
which axis carries channels and, along it, a sequence of segments ``(atom, repeat)``. An atom is
a run of channels created by one producer (a conv's or linear's output); ``repeat`` > 1 appears
after a flatten (each channel becomes ``repeat`` consecutive features). Operators then constrain
atoms: an elementwise ``add``/``mul`` of two tensors unifies their atoms (union-find), a
depthwise conv or a norm passes them through, a ``concat`` along channels concatenates segment
lists (so a consumer sees offset slices of several producers), a ``split`` cuts them at atom
boundaries. A union-find class of atoms is a :class:`CoupledChannels` (the design space offers
each as a channel group).

Anything the analysis cannot follow *freezes* the atoms involved instead of guessing: channels
that reach a model input or output, an unknown operator, a split inside one producer's channels,
a reshape that splits the channel axis (channel shuffle), an activation-by-activation matmul
(attention).

What each operator kind does to layouts is one entry of :data:`OP_HANDLERS` (registered with
:func:`handles`); a kind without an entry is opaque (:func:`visit_unknown`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from .ir import Graph, Op

#: kinds whose outputs carry their first input's layout unchanged
PASS_THROUGH = frozenset({"act", "identity", "cast", "quantize", "dequantize", "pad", "resize", "softmax"})
#: broadcasting binary kinds: operands sharing the output's channels are tied
ELEMENTWISE = frozenset({"add", "sub", "mul", "div", "binary"})


# --------------------------------------------------------------------------------------------
# union-find over atoms
# --------------------------------------------------------------------------------------------
class Atoms:
    """Union-find over atoms (runs of channels of one producer): size, frozen reason, granularity
    and members (``(op name, role)``) are kept at each class's root."""

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

    def width(self, atoms: Atoms) -> int:
        return sum(atoms.size[a] * r for a, r in self.segs)


# --------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------
@dataclass
class CoupledChannels:
    """One class of channels that must shrink together (a channel group before widths are offered)."""

    id: str
    width: int
    members: list            # [(op name, role)], in graph order
    granularity: int = 1     # widths must be multiples of this (grouped convs keep whole groups)
    frozen: str | None = None  # why the channels cannot shrink; None when they can


@dataclass
class Coupling:
    """The analysis of one graph."""

    classes: list            # [CoupledChannels], in the graph order of their first member
    layouts: dict            # tensor -> (axis, [(class id, size, repeat)]) | None
    op_layouts: dict         # op name -> {"in": [layout|None], "out": [layout|None]}


# --------------------------------------------------------------------------------------------
# the analysis
# --------------------------------------------------------------------------------------------
class ChannelAnalysis:
    """Propagates layouts through a graph in op order; :meth:`visit` dispatches on :data:`OP_HANDLERS`."""

    def __init__(self, graph: Graph):
        self.g = graph
        self.atoms = Atoms()
        self.lay: dict[str, Layout | None] = {}
        self.op_in: dict[str, list] = {}
        self.op_out: dict[str, list] = {}

    # helpers for the handlers ----------------------------------------------------------------
    def fresh(self, shape, reason: str, axis: int | None = None) -> Layout | None:
        if not shape:
            return None
        axis = (1 if len(shape) == 4 else len(shape) - 1) if axis is None else axis
        return Layout(axis, ((self.atoms.new(shape[axis], reason), 1),))

    def produce(self, axis: int, width: int, op: Op) -> Layout:
        """A layout of ``width`` new channels written by ``op`` (its ``out`` member)."""
        out = Layout(axis, ((self.atoms.new(width), 1),))
        self.member(out, op, "out")
        return out

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
        anything later tied to it elementwise is frozen (see :func:`visit_elementwise`)."""
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

    # the walk --------------------------------------------------------------------------------
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
        """The output layouts of ``op`` given its input layouts (the handler of ``op.kind``)."""
        return OP_HANDLERS.get(op.kind, visit_unknown)(self, op, ins)

    # result ----------------------------------------------------------------------------------
    def classes(self) -> tuple[list[CoupledChannels], dict]:
        """The union-find classes that have members, named, in graph order; and root atom -> name."""
        at = self.atoms
        order = {op.name: i for i, op in enumerate(self.g.ops())}
        roots = sorted({at.find(i) for i in range(len(at.parent))})
        named: dict[int, str] = {}
        used: set[str] = set()
        infos = []
        for r in roots:
            members = sorted(set(at.members[r]), key=lambda m: (order.get(m[0], 1 << 30), m[0], m[1]))
            if members:
                producers = [m[0] for m in members if m[1] == "out"]
                infos.append((r, members, producers))
        # a group is named after its first producer; groups without one after their first member
        infos.sort(key=lambda x: (not x[2], x[0]))
        out = []
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
            out.append(CoupledChannels(gid, at.size[r], members, at.gran[r], reason))
        key = {op.name: i for i, op in enumerate(self.g.ops())}
        out.sort(key=lambda c: key.get(c.members[0][0], 0))
        return out, named

    def resolve(self, lo: Layout | None, named: dict) -> tuple | None:
        """A layout with atoms replaced by ``(class id, size, repeat)``."""
        if lo is None:
            return None
        return (lo.axis, [(named.get(self.atoms.find(a), None), self.atoms.size[a], r) for a, r in lo.segs])

    def result(self) -> Coupling:
        classes, named = self.classes()
        layouts = {t: self.resolve(lo, named) for t, lo in self.lay.items()}
        op_layouts = {n: {"in": [self.resolve(lo, named) for lo in self.op_in[n]],
                          "out": [self.resolve(lo, named) for lo in self.op_out[n]]} for n in self.op_in}
        return Coupling(classes, layouts, op_layouts)


def couple_channels(graph: Graph) -> Coupling:
    """Run the channel analysis over ``graph``."""
    an = ChannelAnalysis(graph)
    an.run()
    return an.result()


# --------------------------------------------------------------------------------------------
# per-kind handlers: (analysis, op, input layouts) -> output layouts
# --------------------------------------------------------------------------------------------
Handler = Callable[[ChannelAnalysis, Op, list], list]
#: op kind -> handler; adding an op kind is adding one entry (see :func:`handles`)
OP_HANDLERS: dict[str, Handler] = {}


def handles(*kinds: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``kinds``."""
    def register(fn: Handler) -> Handler:
        for kind in kinds:
            if kind in OP_HANDLERS:
                raise ValueError(f"op kind {kind!r} already has a handler ({OP_HANDLERS[kind].__name__})")
            OP_HANDLERS[kind] = fn
        return fn
    return register


def first(ins: list) -> Layout | None:
    """The layout of the first input (None when there is none)."""
    return ins[0] if ins else None


def out_shape(op: Op) -> tuple:
    """The shape of the first output (() when there is none)."""
    return op.out_shapes[0] if op.out_shapes else ()


def visit_unknown(an: ChannelAnalysis, op: Op, ins: list) -> list:
    """Any kind without a handler: its inputs freeze, its outputs are untracked."""
    return an.opaque(op, f"unknown operator {op.backend_op}")


@handles("conv")
def visit_conv(an: ChannelAnalysis, op: Op, ins: list) -> list:
    a, L = op.attrs, first(ins)
    cin, cout, groups = a["in_channels"], a["out_channels"], a["groups"]
    if L is None or L.axis != 1 or any(r != 1 for _, r in L.segs):
        # the input channels stay as they are; a normal conv's own outputs can still shrink
        an.freeze(L, "conv input without a channel layout")
        if groups != 1:
            return [None]
        return [an.produce(1, cout, op)]
    if groups == 1:
        an.member(L, op, "in")
        return [an.produce(1, cout, op)]
    if groups == cin == cout:
        an.member(L, op, "dw")
        return [L]
    if cin == cout and len(L.segs) == 1:
        root = an.atoms.find(L.segs[0][0])
        an.atoms.gran[root] = math.lcm(an.atoms.gran[root], cin // groups)
        an.member(L, op, "grouped")
        return [L]
    an.freeze(L, "grouped conv with different in/out widths")
    return [None]


@handles("linear")
def visit_linear(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L = first(ins)
    rank = len(op.in_shapes[0])
    if L is None or L.axis != rank - 1:
        an.freeze(L, "linear input whose channels are not on the last axis")
    else:
        an.member(L, op, "in")
    return [an.produce(len(out_shape(op)) - 1, op.attrs["out_features"], op)]


@handles("batchnorm")
def visit_batchnorm(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L = first(ins)
    if L is None or L.axis != 1:
        an.freeze(L, "batchnorm over a non-channel axis")
    else:
        an.member(L, op, "norm")
    return [L]


@handles("layernorm")
def visit_layernorm(an: ChannelAnalysis, op: Op, ins: list) -> list:
    a, L = op.attrs, first(ins)
    rank = len(op.in_shapes[0])
    if L is not None and a.get("axes") == 1 and L.axis == rank - 1:
        an.member(L, op, "norm")
    elif L is not None and L.axis >= rank - a.get("axes", 1):
        an.freeze(L, "layernorm over several axes including channels")
    return [L]


@handles("groupnorm")
def visit_groupnorm(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L = first(ins)
    an.freeze(L, "group/instance norm")
    return [L]


@handles(*PASS_THROUGH)
def visit_pass_through(an: ChannelAnalysis, op: Op, ins: list) -> list:
    return [first(ins)] * len(op.outputs)


@handles("pool")
def visit_pool(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L = first(ins)
    if L is not None and len(out_shape(op)) != len(op.in_shapes[0]):
        return an.opaque(op, "pool that changes rank")
    return [L] * len(op.outputs)


@handles(*ELEMENTWISE)
def visit_elementwise(an: ChannelAnalysis, op: Op, ins: list) -> list:
    """Operands that carry the output's channels are tied; broadcast (size-1) ones are not."""
    shape = op.out_shapes[0]
    R = len(shape)
    cands = []
    for lo, in_shape in zip(ins, op.in_shapes):
        if lo is not None:
            cands.append((lo, lo.axis + R - len(in_shape), in_shape[lo.axis]))
    full = [(lo, ax) for lo, ax, n in cands if n == shape[ax] and n > 1]
    if not full:
        full = [(lo, ax) for lo, ax, n in cands]
    if not full:
        return [None]
    base, ax = full[0]
    C = shape[ax]
    for lo, in_shape in zip(ins, op.in_shapes):
        idx = ax - (R - len(in_shape))
        if lo is None and idx >= 0 and in_shape[idx] == C and C > 1:
            an.freeze(base, f"{op.kind} with an untracked tensor")
    for lo, ax2, n in cands:
        if lo is base:
            continue
        if ax2 == ax and n == C:
            an.unify(base, lo, f"{op.kind} {op.name}")
        elif n == 1 and ax2 == ax:
            continue
        else:
            an.freeze(base, f"{op.kind} mixing channel axes")
            an.freeze(lo, f"{op.kind} mixing channel axes")
    for c in op.consts:
        idx = ax - (R - len(c.shape))
        if idx < 0 or c.shape[idx] == 1 or C == 1:
            continue
        if c.shape[idx] == C:
            an.member(base, op, "const")
        else:
            an.freeze(base, f"{op.kind} with a constant of another width")
    return [Layout(ax, base.segs)]


@handles("concat")
def visit_concat(an: ChannelAnalysis, op: Op, ins: list) -> list:
    """Along channels: the operands' segments in order; along another axis: the operands are tied."""
    axis = op.attrs["axis"]
    operands = sorted([(p, "act", i) for i, p in enumerate(op.input_positions)] +
                      [(c.position, "const", c) for c in op.consts], key=lambda x: x[0])
    lays = [lo for lo in ins if lo is not None]
    if not lays:
        return [None]
    if all(lo.axis == axis for lo in lays):
        segs: list = []
        for _, kind, item in operands:
            if kind == "act" and ins[item] is not None:
                segs.extend(ins[item].segs)
            else:
                shape = op.in_shapes[item] if kind == "act" else item.shape
                segs.append((an.atoms.new(shape[axis], "untracked or constant tensor concatenated along channels"), 1))
        out = Layout(axis, tuple(segs))
        an.member(out, op, "concat")
        return [out]
    base = lays[0]
    if base.axis == axis or len(lays) < len(ins):
        return an.opaque(op, "concat mixing channel and other axes")
    for lo in lays[1:]:
        if lo.axis != base.axis:
            an.freeze(lo, "concat mixing channel axes")
            an.freeze(base, "concat mixing channel axes")
        else:
            an.unify(base, lo, f"concat {op.name}")
    if op.consts:
        an.freeze(base, "constant concatenated along tokens")
    return [base]


@handles("split")
def visit_split(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L = first(ins)
    if L is None:
        return [None] * len(op.outputs)
    axis = op.attrs.get("axis")
    if axis != L.axis:
        return [L] * len(op.outputs)
    outs, pos = [], 0
    for shape in op.out_shapes:
        n = shape[axis]
        segs = an.cut(L, pos, pos + n)
        if not segs:
            return an.opaque(op, "split inside one producer's channels")
        outs.append(Layout(axis, segs))
        pos += n
    an.member(L, op, "split")
    return outs


@handles("slice")
def visit_slice(an: ChannelAnalysis, op: Op, ins: list) -> list:
    a, L = op.attrs, first(ins)
    if L is None:
        return [None]
    if a.get("axis") is None:
        return an.opaque(op, "slice with dynamic bounds")
    if a["axis"] != L.axis:
        return [L]
    size = L.width(an.atoms)
    start, end, step = a["start"], a["end"], a.get("step", 1)
    start = start + size if start < 0 else start
    end = size if end is None or end > size else (end + size if end < 0 else end)
    segs = an.cut(L, start, end) if step == 1 else None
    if not segs:
        return an.opaque(op, "slice inside one producer's channels")
    an.member(L, op, "slice")
    return [Layout(L.axis, segs)]


@handles("gather")
def visit_gather(an: ChannelAnalysis, op: Op, ins: list) -> list:
    a, L = op.attrs, first(ins)
    if L is None:
        return [None]
    if a.get("axis") == L.axis or a.get("index") is None:
        return an.opaque(op, "gather along channels")
    return [Layout(L.axis - (1 if a["axis"] < L.axis else 0), L.segs)]


@handles("reduce")
def visit_reduce(an: ChannelAnalysis, op: Op, ins: list) -> list:
    a, L = op.attrs, first(ins)
    if L is None:
        return [None]
    axes = a.get("axes", [])
    if L.axis in axes:
        return an.opaque(op, "reduction over channels")
    if a.get("keepdims", True):
        return [L]
    return [Layout(L.axis - sum(1 for x in axes if x < L.axis), L.segs)]


@handles("transpose")
def visit_transpose(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L = first(ins)
    if L is None:
        return [None]
    return [Layout(list(op.attrs["perm"]).index(L.axis), L.segs)]


@handles("expand")
def visit_expand(an: ChannelAnalysis, op: Op, ins: list) -> list:
    L, shape = first(ins), out_shape(op)
    if L is None:
        return [None]
    axis = L.axis + len(shape) - len(op.in_shapes[0])
    if shape[axis] != L.width(an.atoms):
        return an.opaque(op, "expand along channels")
    return [Layout(axis, L.segs)]


@handles("reshape")
def visit_reshape(an: ChannelAnalysis, op: Op, ins: list) -> list:
    """Follows the channel axis through reshapes that keep it whole (a flatten repeats each channel)."""
    L = first(ins)
    if L is None:
        return [None]
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
        return an.opaque(op, "reshape moving channels across other axes")
    if dst[j] == C:
        an.member(L, op, "reshape")
        return [Layout(j, L.segs)]
    inner = 1
    for d in src[L.axis + 1:]:
        inner *= d
        if dst[j] == C * inner:
            an.member(L, op, "reshape")
            return [Layout(j, tuple((x, r * inner) for x, r in L.segs))]
    return an.opaque(op, "reshape splitting the channel axis (channel shuffle)")


@handles("matmul")
def visit_matmul(an: ChannelAnalysis, op: Op, ins: list) -> list:
    return an.opaque(op, "matmul of two activations (attention)")
