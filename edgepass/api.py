"""``analyze``: the IR of a model, whichever front end reads it (torch.fx or ONNX)."""
from __future__ import annotations

import os

from .errors import InputError
from .ir import Graph
from .util import DEFAULT_IMAGE_SHAPE, example_inputs_for, is_torch_module  # (their old home)


def analyze(model, example_inputs=None, *, input_shapes: dict | None = None) -> Graph:
    """Build the IR of ``model``.

    ``model``: an ``nn.Module`` (traced with torch.fx; ``example_inputs`` default to one
    1x3x224x224 image), or an ONNX ``ModelProto`` / path (``input_shapes`` fixes dynamic dims,
    e.g. ``{"input": (1, 3, 640, 640)}``).
    """
    if is_torch_module(model):
        # each front end loads its own framework (torch.fx, onnx) only when a model needs it
        from .frontends.fx import analyze_fx

        return analyze_fx(model, example_inputs_for(model, example_inputs))
    import onnx

    if isinstance(model, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
        # (as above: onnx-only users never import torch through here)
        from .frontends.onnx import analyze_onnx

        return analyze_onnx(model, input_shapes=input_shapes)
    raise InputError(f"cannot analyze a {type(model).__name__}: give an nn.Module, an onnx.ModelProto or a path")


__all__ = ["analyze", "DEFAULT_IMAGE_SHAPE", "example_inputs_for", "is_torch_module"]
