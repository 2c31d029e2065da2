"""The design space of an IR graph: channel groups, kernel choices, precision choices, and designs.

Which channels are tied together (and which cannot shrink at all) is found by
:mod:`edgepass.coupling`; each of its classes becomes a :class:`ChannelGroup`, offered with the
widths of :func:`width_choices` unless it is frozen. Frozen groups are listed with their reason
but never offered, so no design can produce an invalid model.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .api import analyze
from .coupling import CoupledChannels, Layout, couple_channels
from .errors import InputError
from .ir import PRECISIONS, Graph, Op, compute_costs

__all__ = ["WIDTH_RATIOS", "PRECISIONS", "MAX_DESIGN_INT", "DESIGN_KNOBS", "Layout", "ChannelGroup", "Design",
           "DesignSpace", "width_choices", "kernel_choices", "channel_groups", "build_space", "design_space",
           "space_summary"]

WIDTH_RATIOS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)


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
# choices
# --------------------------------------------------------------------------------------------
def width_choices(width: int, granularity: int, ratios=WIDTH_RATIOS, multiple: int = 8) -> list[int]:
    """Widths offered for a group of ``width`` channels: ``ratios`` of it rounded to multiples of
    ``multiple`` and ``granularity``, descending, ``width`` first."""
    m = math.lcm(multiple, granularity)
    out = {width}
    for r in ratios:
        w = int(round(r * width / m)) * m
        if m <= w <= width:
            out.add(w)
    return sorted(out, reverse=True)


def kernel_choices(op: Op, min_kernel: int) -> list[int]:
    """Odd square kernels from the conv's own down to ``min_kernel`` that its padding allows
    without changing the output shape; [] when there is nothing to choose."""
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


def channel_groups(classes: list[CoupledChannels]) -> tuple[list[ChannelGroup], list[ChannelGroup]]:
    """The offered and the frozen channel groups of the coupling classes (kept in their order)."""
    offered, frozen = [], []
    for c in classes:
        reason = c.frozen
        choices = width_choices(c.width, c.granularity) if reason is None else [c.width]
        if reason is None and len(choices) < 2:
            reason = f"too narrow to shrink ({c.width} channels)"
        grp = ChannelGroup(c.id, c.width, c.members, choices, c.granularity, reason)
        (frozen if reason else offered).append(grp)
    return offered, frozen


def build_space(graph: Graph, *, min_kernel: int = 3, precisions=PRECISIONS) -> DesignSpace:
    """The design space of an analysed graph."""
    coupling = couple_channels(graph)
    offered, frozen = channel_groups(coupling.classes)
    kernels = {}
    for op in graph.layers():
        if op.kind == "conv":
            ks = kernel_choices(op, min_kernel)
            if ks:
                kernels[op.name] = ks
    precs = {op.name: list(precisions) for op in graph.layers()}
    return DesignSpace(graph, offered, frozen, kernels, precs, coupling.layouts, coupling.op_layouts)


def design_space(model, example_inputs=None, *, input_shapes: dict | None = None, min_kernel: int = 3) -> DesignSpace:
    """Analyse ``model`` (nn.Module, ONNX model or path, or an already built Graph) and return its knobs."""
    graph = model if isinstance(model, Graph) else analyze(model, example_inputs, input_shapes=input_shapes)
    return build_space(graph, min_kernel=min_kernel)


def space_summary(space: DesignSpace) -> dict[str, Any]:
    return {"groups": len(space.groups), "frozen_groups": len(space.frozen), "kernels": len(space.kernels),
            "precision_layers": len(space.precisions), "size_log10": round(space.size(), 2)}
