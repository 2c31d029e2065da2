"""Backend-independent rewrite plans computed on the IR.

:func:`width_plan` turns a design's group widths into, for every operator, which constants to
slice along which axis with which indices and which attributes change; :func:`kernel_plan` does
the same for kernel shrinking. The ONNX and FX back ends only *apply* a plan, so both rewrite a
model identically.

Channel indices come from the channel layouts of the design space: a tensor's channel axis is a
sequence of segments ``(group, size, repeat)``; the kept indices of a tensor are, segment by
segment, the kept channels of its group (each expanded by ``repeat`` after a flatten), shifted by
the segment's offset. A consumer of a ``concat`` therefore slices every producer's part at its
offset, and a linear after a flatten keeps ``repeat`` features per kept channel.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgepass.space import Design, DesignSpace

IMPORTANCE = ("l1", "bn")


@dataclass
class Slice:
    """Keep ``indices`` along ``axis`` of a constant operand."""

    const: str          # backend name of the constant (initializer / parameter path)
    position: int       # operand position in the op
    axis: int
    indices: np.ndarray


@dataclass
class OpEdit:
    """Everything that changes for one operator."""

    op: str                       # IR op name
    ref: str                      # backend node name
    kind: str
    backend_op: str
    slices: list = field(default_factory=list)      # list[Slice]
    attrs: dict = field(default_factory=dict)       # new attribute values (normalised names)
    shape_axis: tuple | None = None                 # (axis, old, new) for shape constants (reshape/expand)
    split_sizes: list | None = None                 # new sizes of a split
    slice_bounds: tuple | None = None               # new (start, end) of a channel slice
    gather_shape: tuple | None = None               # new index shape of an identity gather

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.attrs.items())]
        if self.shape_axis:
            parts.append(f"shape[{self.shape_axis[0]}] {self.shape_axis[1]}->{self.shape_axis[2]}")
        if self.split_sizes:
            parts.append(f"split={self.split_sizes}")
        if self.slice_bounds:
            parts.append(f"slice={self.slice_bounds}")
        if not parts:
            parts = [f"{s.const}[axis {s.axis}] -> {len(s.indices)}" for s in self.slices]
        return f"{self.op}: " + ", ".join(parts)


# --------------------------------------------------------------------------------------------
# which channels to keep
# --------------------------------------------------------------------------------------------
def channel_importance(space: DesignSpace, weights, *, importance: str = "l1") -> dict:
    """Per offered group, one score per channel (higher = keep).

    ``weights(const_name) -> np.ndarray`` reads a constant from the backend. ``l1``: the L1 norm
    of each producer's filters, each producer normalised to mean 1 and summed over the group, so
    a wide residual group is not dominated by its largest layer. ``bn``: the same with the
    absolute batch-norm scales of the group (falls back to ``l1`` where the group has none).
    """
    if importance not in IMPORTANCE:
        raise ValueError(f"importance must be one of {IMPORTANCE}, not {importance!r}")
    g = space.graph
    scores = {}
    for grp in space.groups:
        total = np.zeros(grp.width)
        roles = ("norm",) if importance == "bn" else ("out",)
        for role in roles + (("out",) if importance == "bn" else ()):
            for name, r in grp.members:
                if r != role:
                    continue
                op = g.op(name)
                if role == "norm":
                    if op.kind != "batchnorm":
                        continue
                    c = next((c for c in op.consts if c.position == 1), None)
                    vec = np.abs(np.asarray(weights(c.name), dtype=np.float64).reshape(-1)) if c else None
                else:
                    w = op.const("weight")
                    arr = np.abs(np.asarray(weights(w.name), dtype=np.float64))
                    if op.kind == "linear" and op.attrs.get("weight_transposed"):
                        arr = arr.T
                    vec = arr.reshape(arr.shape[0], -1).sum(axis=1)
                if vec is None or vec.shape[0] != grp.width:
                    continue
                total += vec / (vec.mean() + 1e-12)
            if total.any():
                break
        scores[grp.id] = total
    return scores


def kept_channels(space: DesignSpace, design: Design, scores: dict) -> dict:
    """Group id -> sorted kept channel indices, for the groups the design narrows."""
    keep = {}
    for grp in space.groups:
        w = design.widths.get(grp.id, grp.width)
        if w == grp.width:
            continue
        s = scores[grp.id]
        if grp.granularity > 1:   # grouped convs: keep whole blocks
            blocks = s.reshape(-1, grp.granularity).sum(axis=1)
            order = np.argsort(-blocks, kind="stable")[: w // grp.granularity]
            idx = (np.sort(order)[:, None] * grp.granularity + np.arange(grp.granularity)).reshape(-1)
        else:
            idx = np.sort(np.argsort(-s, kind="stable")[:w])
        keep[grp.id] = idx.astype(np.int64)
    return keep


def layout_indices(layout, keep: dict):
    """(axis, kept indices or None if unchanged, old size, new size) of a tensor's channel axis."""
    if layout is None:
        return None
    axis, segs = layout
    out, offset, changed = [], 0, False
    for gid, size, rep in segs:
        k = keep.get(gid)
        if k is None:
            k = np.arange(size)
        else:
            changed = True
        out.append(offset + (k[:, None] * rep + np.arange(rep)).reshape(-1))
        offset += size * rep
    idx = np.concatenate(out) if out else np.arange(0)
    return axis, (idx if changed else None), offset, len(idx)


# --------------------------------------------------------------------------------------------
# plans
# --------------------------------------------------------------------------------------------
def width_plan(space: DesignSpace, design: Design, scores: dict) -> list[OpEdit]:
    keep = kept_channels(space, design, scores)
    if not keep:
        return []
    edits = []
    for op in space.graph.ops():
        lay = space.op_layouts[op.name]
        ins = [layout_indices(lo, keep) for lo in lay["in"]]
        outs = [layout_indices(lo, keep) for lo in lay["out"]]
        if not any(x is not None and x[1] is not None for x in ins + outs):
            continue
        e = OpEdit(op.name, op.ref, op.kind, op.backend_op)
        a = op.attrs
        o = outs[0] if outs else None
        i = ins[0] if ins else None
        if op.kind == "conv":
            w, b = op.const("weight"), op.const("bias")
            groups = a["groups"]
            if o and o[1] is not None:
                e.slices.append(Slice(w.name, w.position, 0, o[1]))
                if b is not None:
                    e.slices.append(Slice(b.name, b.position, 0, o[1]))
                e.attrs["out_channels"] = o[3]
            if groups == 1 and i and i[1] is not None:
                e.slices.append(Slice(w.name, w.position, 1, i[1]))
            if groups > 1 and o and o[1] is not None:
                per_group_in = a["in_channels"] // groups
                e.attrs["groups"] = o[3] // per_group_in if groups != a["in_channels"] else o[3]
            if i and i[1] is not None:
                e.attrs["in_channels"] = i[3]
        elif op.kind == "linear":
            w, b = op.const("weight"), op.const("bias")
            out_axis, in_axis = (1, 0) if a.get("weight_transposed") else (0, 1)
            if o and o[1] is not None:
                e.slices.append(Slice(w.name, w.position, out_axis, o[1]))
                if b is not None:
                    e.slices.append(Slice(b.name, b.position, 0, o[1]))
                e.attrs["out_features"] = o[3]
            if i and i[1] is not None:
                e.slices.append(Slice(w.name, w.position, in_axis, i[1]))
                e.attrs["in_features"] = i[3]
        elif op.kind in ("batchnorm", "layernorm"):
            if o and o[1] is not None:
                for c in op.consts:
                    e.slices.append(Slice(c.name, c.position, len(c.shape) - 1 if op.kind == "layernorm" else 0, o[1]))
                e.attrs["channels"] = o[3]
        elif op.kind in ("add", "sub", "mul", "div", "binary"):
            if o and o[1] is not None:
                R = len(op.out_shapes[0])
                for c in op.consts:
                    idx = o[0] - (R - len(c.shape))
                    if idx >= 0 and c.shape[idx] == o[2] and o[2] > 1:
                        e.slices.append(Slice(c.name, c.position, idx, o[1]))
        elif op.kind == "split":
            e.split_sizes = [x[3] for x in outs]
        elif op.kind == "slice":
            if i and o:
                # where the kept output channels start in the narrowed input
                start = int(np.searchsorted(i[1] if i[1] is not None else np.arange(i[2]), a["start"]))
                e.slice_bounds = (start, start + o[3])
        elif op.kind in ("reshape", "expand"):
            if o and o[1] is not None:
                e.shape_axis = (o[0], o[2], o[3])
                if a.get("gather_indices"):
                    shape = list(op.out_shapes[0])
                    shape[o[0]] = o[3]
                    e.gather_shape = tuple(shape)
        if e.slices or e.attrs or e.shape_axis or e.split_sizes or e.slice_bounds:
            edits.append(e)
    return edits


def kernel_plan(space: DesignSpace, design: Design) -> list[OpEdit]:
    """Crop the centre of each conv whose kernel the design shrinks; padding shrinks with it."""
    edits = []
    for name, choices in space.kernels.items():
        k_new = design.kernels.get(name, choices[0])
        op = space.graph.op(name)
        k = op.attrs["kernel"][0]
        if k_new == k:
            continue
        if k_new not in choices:
            raise ValueError(f"kernel {k_new} not offered for {name} (choices {choices})")
        s = (k - k_new) // 2
        dil = op.attrs.get("dilation", (1, 1))
        pads = op.attrs.get("pads") or tuple(op.attrs["padding"]) * 2
        new_pads = tuple(p - s * dil[i % 2] for i, p in enumerate(pads))
        w = op.const("weight")
        e = OpEdit(name, op.ref, op.kind, op.backend_op,
                   slices=[Slice(w.name, w.position, 2, np.arange(s, s + k_new)),
                           Slice(w.name, w.position, 3, np.arange(s, s + k_new))],
                   attrs={"kernel": (k_new, k_new), "pads": new_pads})
        edits.append(e)
    return edits
