"""Apply :class:`~edgepass.passes.plan.OpEdit` lists to an ``onnx_ir.Model`` (in place).

Constants are rewritten copy-on-write: exporters share initializers between nodes (the legacy
exporter routes repeated values through ``Identity``), so a constant used by anything else than
the edited operand gets a new initializer instead of being changed under its other users.
Intermediate shapes are cleared afterwards (they are stale) and dead initializers removed.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from edgepass.ir import UniqueNames

_ATTR = {"groups": "group", "kernel": "kernel_shape", "pads": "pads"}


def node_index(model: ir.Model) -> dict:
    return {n.name: n for n in model.graph if n.name}


def find_node(model: ir.Model, nodes: dict, ref: str, order: int | None = None):
    node = nodes.get(ref)
    if node is None and order is not None:
        node = list(model.graph)[order]
    if node is None:
        raise KeyError(f"ONNX node {ref!r} not found")
    return node


def const_array(value: ir.Value) -> np.ndarray | None:
    """Numeric value of an initializer, a Constant, or an Identity/Cast of one."""
    seen = 0
    while value is not None and seen < 8:
        if value.const_value is not None:
            return value.const_value.numpy()
        prod = value.producer()
        if prod is None:
            return None
        if prod.op_type == "Constant":
            attr = prod.attributes.get("value")
            return attr.value.numpy() if attr is not None else None
        if prod.op_type not in ("Identity",):
            return None
        value = prod.inputs[0]
        seen += 1
    return None


class InitializerWriter:
    """Writes new or replaced initializers into an onnx_ir model under unique names (shared by the
    width, recalibration and reconstruction passes)."""

    def __init__(self, model: ir.Model):
        self.model = model
        taken = {v.name for v in model.graph.initializers.values()}
        taken.update(v.name for n in model.graph for v in n.outputs)
        self.unique = UniqueNames(taken, sep=".")

    def set_input(self, node: ir.Node, position: int, arr: np.ndarray) -> None:
        """Give ``node`` a constant operand ``arr`` at ``position`` without touching other users."""
        old = node.inputs[position]
        arr = np.ascontiguousarray(arr)
        if old is not None and old.is_initializer() and len(old.uses()) == 1 and not old.is_graph_input():
            old.const_value = ir.tensor(arr, name=old.name)
            old.shape = ir.Shape(arr.shape)
            return
        base = (old.name if old is not None and old.name else f"{node.name}.in{position}")
        name = self.unique(base)
        value = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
                         const_value=ir.tensor(arr, name=name))
        self.model.graph.register_initializer(value)
        node.replace_input_with(position, value)


def apply_edits(model: ir.Model, edits: list, *, orders: dict | None = None) -> list[str]:
    """Apply ``edits`` in place; returns one change line per edited node."""
    nodes = node_index(model)
    w = InitializerWriter(model)
    changes = []
    for e in edits:
        node = find_node(model, nodes, e.ref, (orders or {}).get(e.op))
        work: dict[int, np.ndarray] = {}
        for s in e.slices:
            if s.position not in work:
                arr = const_array(node.inputs[s.position])
                if arr is None:
                    raise ValueError(f"{e.op}: operand {s.position} is not a constant")
                work[s.position] = arr
            work[s.position] = np.take(work[s.position], s.indices, axis=s.axis)
        for pos, arr in sorted(work.items()):
            w.set_input(node, pos, arr)
        for key, val in e.attrs.items():
            name = _ATTR.get(key)
            if name is None:
                continue  # channel counts are implied by the (sliced) weights in ONNX
            node.attributes[name] = ir.AttrInt64(name, int(val)) if isinstance(val, int) else \
                ir.AttrInt64s(name, [int(v) for v in val])
        if e.shape_axis is not None and e.gather_shape is None and node.op_type in ("Reshape", "Expand"):
            target = const_array(node.inputs[1])
            axis, old, new = e.shape_axis
            if target is not None and axis < len(target) and int(target[axis]) == old:
                target = target.copy()
                target[axis] = new
                w.set_input(node, 1, target)
        if e.gather_shape is not None and node.op_type == "Gather":
            idx = const_array(node.inputs[1])
            axis, old, new = e.shape_axis
            shape = [new if d == old else d for d in idx.shape]
            w.set_input(node, 1, np.arange(new, dtype=idx.dtype).reshape(shape))
        if e.split_sizes is not None and node.op_type == "Split":
            sizes = np.asarray(e.split_sizes, dtype=np.int64)
            if len(node.inputs) > 1 and node.inputs[1] is not None:
                w.set_input(node, 1, sizes)
            elif "split" in node.attributes:
                node.attributes["split"] = ir.AttrInt64s("split", sizes.tolist())
        if e.slice_bounds is not None and node.op_type == "Slice":
            w.set_input(node, 1, np.asarray([e.slice_bounds[0]], dtype=np.int64))
            w.set_input(node, 2, np.asarray([e.slice_bounds[1]], dtype=np.int64))
        changes.append(e.describe())
    if changes:
        _clear_intermediate_shapes(model)
        RemoveUnusedNodesPass()(model)
    return changes


def _clear_intermediate_shapes(model: ir.Model) -> None:
    """Shapes recorded by the exporter are stale after a width change; onnxruntime re-infers them."""
    outputs = {id(v) for v in model.graph.outputs}
    for node in model.graph:
        for v in node.outputs:
            if id(v) not in outputs:
                v.shape = None
