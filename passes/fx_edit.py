"""Apply :class:`~edgepass.passes.plan.OpEdit` lists to a ``torch.fx.GraphModule`` (in place).

Parameters and buffers are replaced by sliced copies on the module that owns them, and module
attributes (``in_channels``, ``groups``, ``num_features``, ...) are updated to match, so the result
is an ordinary module whose ``state_dict`` saves and loads. Literal channel counts in functional
calls (``view(n, 64, -1)``, ``split([32, 32])``, ``x[:, 0:32]``) are rewritten too.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx

from edgepass.errors import UnsupportedModelError


def _owner(gm: torch.nn.Module, path: str):
    parent, _, leaf = path.rpartition(".")
    return (gm.get_submodule(parent) if parent else gm), leaf


def _set_tensor(gm: torch.nn.Module, path: str, value: torch.Tensor) -> None:
    mod, leaf = _owner(gm, path)
    old = getattr(mod, leaf)
    if isinstance(old, torch.nn.Parameter):
        setattr(mod, leaf, torch.nn.Parameter(value, requires_grad=old.requires_grad))
    elif leaf in mod._buffers:
        mod._buffers[leaf] = value
    else:
        setattr(mod, leaf, value)


def get_tensor(gm: torch.nn.Module, path: str) -> torch.Tensor:
    mod, leaf = _owner(gm, path)
    return getattr(mod, leaf)


def _update_module(mod: torch.nn.Module, attrs: dict) -> None:
    nn = torch.nn
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        for key in ("in_channels", "out_channels", "groups"):
            if key in attrs:
                setattr(mod, key, int(attrs[key]))
        if "kernel" in attrs:
            mod.kernel_size = tuple(int(k) for k in attrs["kernel"])
            n = len(mod.kernel_size)
            mod.padding = tuple(int(p) for p in attrs["pads"][:n])
    elif isinstance(mod, nn.Linear):
        for key in ("in_features", "out_features"):
            if key in attrs:
                setattr(mod, key, int(attrs[key]))
    elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        if "channels" in attrs:
            mod.num_features = int(attrs["channels"])
    elif isinstance(mod, nn.LayerNorm):
        if "channels" in attrs:
            mod.normalized_shape = tuple(mod.normalized_shape[:-1]) + (int(attrs["channels"]),)


_CONV_FUNCTIONS = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)


def _set_call_arg(node: torch.fx.Node, pos: int, name: str, value) -> None:
    if len(node.args) > pos:
        node.args = node.args[:pos] + (value,) + node.args[pos + 1:]
    else:
        node.kwargs = {**node.kwargs, name: value}


def _update_functional_conv(gm: torch.fx.GraphModule, node: torch.fx.Node, edit) -> None:
    """Padding and groups of ``F.convNd(x, w, b, stride, padding, dilation, groups)``: tracing through
    a conv module that calls it (timm's ``StdConv2d``, any nn.Conv2d subclass) bakes the module's
    attributes into the call, so they are rewritten there, and on the module when there is one."""
    if node.op != "call_function" or node.target not in _CONV_FUNCTIONS:
        raise UnsupportedModelError(f"{edit.op}: kernel or group change of a {node.target} call is not supported")
    if edit.attrs.get("groups") is not None:
        _set_call_arg(node, 6, "groups", int(edit.attrs["groups"]))
    padding = node.args[4] if len(node.args) > 4 else node.kwargs.get("padding", 0)
    if edit.attrs.get("kernel") is not None and not isinstance(padding, str):  # "same" stays "same"
        _set_call_arg(node, 4, "padding", tuple(int(p) for p in edit.attrs["pads"][:len(edit.attrs["kernel"])]))
    weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
    if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and weight.target.endswith(".weight"):
        owner = gm.get_submodule(weight.target[:-len(".weight")])
        if isinstance(owner, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            _update_module(owner, edit.attrs)
            if isinstance(padding, str):
                owner.padding = padding


def layer_weight(gm: torch.fx.GraphModule, node: torch.fx.Node) -> torch.Tensor:
    """The weight of a conv/linear layer node: its module's, or the ``weight`` operand of a functional call."""
    if node.op == "call_module":
        return gm.get_submodule(node.target).weight
    weight = node.args[1] if len(node.args) > 1 else node.kwargs["weight"]
    return get_tensor(gm, weight.target)


def _rewrite_int(args, axis_pos: int, old: int, new: int):
    """Replace the literal ``old`` at ``axis_pos`` of a shape argument list (ints or a tuple)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        inner = list(args[0])
        if axis_pos < len(inner) and inner[axis_pos] == old:
            inner[axis_pos] = new
        return (type(args[0])(inner),)
    args = list(args)
    if axis_pos < len(args) and args[axis_pos] == old:
        args[axis_pos] = new
    return tuple(args)


def apply_edits(gm: torch.fx.GraphModule, edits: list) -> list[str]:
    nodes = {n.name: n for n in gm.graph.nodes}
    changes = []
    for e in edits:
        node = nodes[e.ref]
        work: dict[str, torch.Tensor] = {}
        for s in e.slices:
            t = work.get(s.const)
            if t is None:
                t = get_tensor(gm, s.const).detach()
            work[s.const] = torch.index_select(t, s.axis, torch.as_tensor(np.asarray(s.indices), dtype=torch.long))
        for path, t in work.items():
            _set_tensor(gm, path, t.contiguous().clone())
        if node.op == "call_module":
            _update_module(gm.get_submodule(node.target), e.attrs)
        elif e.attrs.get("kernel") is not None or e.attrs.get("groups") is not None:
            _update_functional_conv(gm, node, e)
        if "channels" in e.attrs and node.op == "call_function" and node.target is torch.nn.functional.layer_norm:
            shape = tuple(node.args[1])  # a LayerNorm2d traced through bakes normalized_shape into the graph
            node.args = (node.args[0], shape[:-1] + (int(e.attrs["channels"]),)) + tuple(node.args[2:])
        if e.shape_axis is not None and node.op == "call_method" and node.target in ("view", "reshape", "expand"):
            axis, old, new = e.shape_axis
            node.args = (node.args[0],) + _rewrite_int(node.args[1:], axis, old, new)
        if e.split_sizes is not None and node.target in ("split", torch.split):
            sizes = node.args[1] if len(node.args) > 1 else node.kwargs.get("split_size_or_sections")
            if isinstance(sizes, (list, tuple)):
                node.args = (node.args[0], list(e.split_sizes)) + tuple(node.args[2:])
            elif len(set(e.split_sizes)) == 1:
                node.args = (node.args[0], e.split_sizes[0]) + tuple(node.args[2:])
            else:
                raise NotImplementedError(f"{e.op}: uneven split after narrowing")
        if e.split_sizes is not None and node.target == "chunk" and len(set(e.split_sizes)) != 1:
            raise NotImplementedError(f"{e.op}: uneven chunk after narrowing")
        if e.slice_bounds is not None and node.target is operator.getitem:
            src, idx = node.args
            idx = list(idx if isinstance(idx, tuple) else (idx,))
            for i, s in enumerate(idx):
                if isinstance(s, slice) and s != slice(None):
                    idx[i] = slice(e.slice_bounds[0], e.slice_bounds[1], s.step)
            node.args = (src, tuple(idx))
        changes.append(e.describe())
    if changes:
        gm.recompile()
    return changes
