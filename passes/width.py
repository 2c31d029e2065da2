"""Width pass: narrow every channel group to the design's width, keeping its most important channels.

Requires: the model is the one the design space was built from (every layer of the space is there).
Guarantees: every producer of a narrowed group has the design's number of output channels, and
every coupled tensor (consumers' inputs, norms, depthwise/grouped convs, constants, concat offsets,
split sizes, reshape targets) is sliced consistently, so the model still runs.
"""
from __future__ import annotations

import onnx_ir as ir

from edgepass.space import Design, DesignSpace

from . import fx_edit, onnx_edit
from .base import PostconditionError, PreconditionError, RewritePass
from .plan import channel_importance, width_plan


def _check_layers(space: DesignSpace, refs: set, backend: str) -> None:
    missing = [op.name for op in space.graph.layers() if op.ref not in refs]
    if missing:
        raise PreconditionError(f"{backend} model does not match the design space: no node for {missing[:3]}")


class WidthPassONNX(RewritePass):
    name = "width"

    def __init__(self, space: DesignSpace, design: Design, *, importance: str = "l1"):
        self.space, self.design, self.importance = space, space.validate(design), importance
        self.edits: list = []

    def requires(self, model: ir.Model) -> None:
        _check_layers(self.space, {n.name for n in model.graph}, "ONNX")

    def call(self, model: ir.Model):
        inits = model.graph.initializers
        scores = channel_importance(self.space, lambda name: inits[name].const_value.numpy(),
                                    importance=self.importance)
        self.edits = width_plan(self.space, self.design, scores)
        orders = {op.name: op.order for op in self.space.graph.ops()}
        return self.result(model, onnx_edit.apply_edits(model, self.edits, orders=orders))

    def ensures(self, model: ir.Model) -> None:
        nodes = onnx_edit.node_index(model)
        for e in self.edits:
            n = e.attrs.get("out_channels")
            if n is not None and e.kind == "conv":
                w = onnx_edit.const_array(nodes[e.ref].inputs[1])
                if w.shape[0] != n:
                    raise PostconditionError(f"{e.op}: {w.shape[0]} output channels, design says {n}")


class WidthPassFX(RewritePass):
    name = "width"

    def __init__(self, space: DesignSpace, design: Design, *, importance: str = "l1"):
        self.space, self.design, self.importance = space, space.validate(design), importance
        self.edits: list = []

    def requires(self, gm) -> None:
        _check_layers(self.space, {n.name for n in gm.graph.nodes}, "FX")

    def call(self, gm):
        scores = channel_importance(self.space, lambda name: fx_edit.get_tensor(gm, name).detach().numpy(),
                                    importance=self.importance)
        self.edits = width_plan(self.space, self.design, scores)
        return self.result(gm, fx_edit.apply_edits(gm, self.edits))

    def ensures(self, gm) -> None:
        nodes = {n.name: n for n in gm.graph.nodes}
        for e in self.edits:
            n = e.attrs.get("out_channels")
            node = nodes[e.ref]
            if n is not None and node.op == "call_module" and gm.get_submodule(node.target).weight.shape[0] != n:
                raise PostconditionError(f"{e.op}: output channels differ from the design")
