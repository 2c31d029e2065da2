"""Public entry points that dispatch on the model's type."""
from __future__ import annotations

import os

from .errors import InputError
from .ir import Graph

DEFAULT_IMAGE_SHAPE = (1, 3, 224, 224)


def is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def example_inputs_for(model, example_inputs):
    """Normalise ``example_inputs`` to a tuple of tensors (default: one 1x3x224x224 image)."""
    import torch

    if example_inputs is None:
        return (torch.randn(*DEFAULT_IMAGE_SHAPE, generator=torch.Generator().manual_seed(0)),)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def analyze(model, example_inputs=None, *, input_shapes: dict | None = None) -> Graph:
    """Build the IR of ``model``.

    ``model``: an ``nn.Module`` (traced with torch.fx; ``example_inputs`` default to one
    1x3x224x224 image), or an ONNX ``ModelProto`` / path (``input_shapes`` fixes dynamic dims,
    e.g. ``{"input": (1, 3, 640, 640)}``).
    """
    if is_torch_module(model):
        from .frontends.fx import analyze_fx

        return analyze_fx(model, example_inputs_for(model, example_inputs))
    import onnx

    if isinstance(model, (str, os.PathLike, bytes, bytearray, onnx.ModelProto)):
        from .frontends.onnx import analyze_onnx

        return analyze_onnx(model, input_shapes=input_shapes)
    raise InputError(f"cannot analyze a {type(model).__name__}: give an nn.Module, an onnx.ModelProto or a path")
