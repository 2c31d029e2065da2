"""``edgepass.predict(model, device)``: predicted latency (ms), per-layer rows and, where the device
can be priced, energy. The work is :func:`edgepass.predictors.predict.predict`; this is its public
name (``edgepass.predict``), light to import."""
from __future__ import annotations


def predict(model, device, *, example_inputs=None, design=None):
    """Predicted latency (ms), per-layer rows and, when the energy predictor is installed, energy.

    ``model``: an ``nn.Module``, an ONNX ``ModelProto`` or path, a zoo spec (``nb201:...``,
    ``tv:resnet18``) or an IR :class:`~edgepass.ir.Graph`; ``design`` (a Design or its JSON) predicts
    the design's graph without rewriting. ``device``: an id, a device-file path or a Device."""
    # the predictors load on the first prediction (`import edgepass` stays light)
    from .predictors.predict import predict as predict_on_device

    return predict_on_device(model, device, example_inputs=example_inputs, design=design)


__all__ = ["predict"]
