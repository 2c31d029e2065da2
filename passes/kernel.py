"""Kernel pass: shrink convs to a smaller odd kernel by cropping the kernel's centre.

Requires: every conv the design shrinks offers that kernel (square, odd, padding large enough).
Guarantees: padding shrinks by ``(k - k') / 2 * dilation`` per side, so every output shape is
unchanged (stride, dilation, depthwise and grouped convs included).
"""
from __future__ import annotations

import onnx_ir as ir

from edgepass.space import Design, DesignSpace

from . import fx_edit, onnx_edit
from .base import PostconditionError, RewritePass
from .plan import kernel_plan


class KernelPassONNX(RewritePass):
    name = "kernel"

    def __init__(self, space: DesignSpace, design: Design):
        self.space, self.design = space, space.validate(design)
        self.edits = kernel_plan(self.space, self.design)

    def call(self, model: ir.Model):
        orders = {op.name: op.order for op in self.space.graph.ops()}
        return self.result(model, onnx_edit.apply_edits(model, self.edits, orders=orders))

    def ensures(self, model: ir.Model) -> None:
        nodes = onnx_edit.node_index(model)
        for e in self.edits:
            ks = list(nodes[e.ref].attributes["kernel_shape"].value)
            if ks != list(e.attrs["kernel"]):
                raise PostconditionError(f"{e.op}: kernel {ks}, design says {e.attrs['kernel']}")


class KernelPassFX(RewritePass):
    name = "kernel"

    def __init__(self, space: DesignSpace, design: Design):
        self.space, self.design = space, space.validate(design)
        self.edits = kernel_plan(self.space, self.design)

    def call(self, gm):
        return self.result(gm, fx_edit.apply_edits(gm, self.edits))

    def ensures(self, gm) -> None:
        nodes = {n.name: n for n in gm.graph.nodes}
        for e in self.edits:
            weight = fx_edit.layer_weight(gm, nodes[e.ref])
            if tuple(weight.shape[2:]) != tuple(e.attrs["kernel"]):
                raise PostconditionError(f"{e.op}: kernel {tuple(weight.shape[2:])}, design says {e.attrs['kernel']}")
