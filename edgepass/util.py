"""Shared helpers of the bottom layer (no edgepass imports above :mod:`edgepass.errors`): is a value
a torch module, default example inputs, where caches live."""
from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_IMAGE_SHAPE = (1, 3, 224, 224)


def is_torch_module(model) -> bool:
    """``model`` is a ``torch.nn.Module`` (answered without importing torch: an nn.Module exists only
    once torch is loaded)."""
    torch = sys.modules.get("torch")
    nn = getattr(torch, "nn", None) if torch is not None else None
    return nn is not None and isinstance(model, nn.Module)


def example_inputs_for(model, example_inputs):
    """Normalise ``example_inputs`` to a tuple of tensors (default: one 1x3x224x224 image)."""
    import torch

    if example_inputs is None:
        return (torch.randn(*DEFAULT_IMAGE_SHAPE, generator=torch.Generator().manual_seed(0)),)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    return tuple(example_inputs)


def cache_dir(path=None) -> Path:
    """Where trained optimizers and fitted predictors are kept: ``path``, ``$EDGEPASS_CACHE`` or the
    user's cache directory (created)."""
    base = Path(path or os.environ.get("EDGEPASS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() /
                                                                                 ".cache")) / "edgepass")
    base.mkdir(parents=True, exist_ok=True)
    return base
