"""Quiet ONNX export of a torch module (legacy TorchScript exporter or dynamo), weights inline."""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path


def export_onnx(model, example_inputs, path, *, dynamo: bool = False, opset: int | None = None) -> Path:
    import torch

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, tuple(example_inputs), str(path), dynamo=True, external_data=False,
                              optimize=True, **({"opset_version": opset} if opset else {}))
        else:
            torch.onnx.export(model, tuple(example_inputs), str(path), dynamo=False, opset_version=opset or 17)
    return Path(path)
