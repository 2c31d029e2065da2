"""``edgepass.predict(model, device)``: predicted latency (ms) with per-layer rows and, where the
device can be priced, energy: the latency and energy predictors together on one IR graph.

``model``: an ``nn.Module``, an ONNX ``ModelProto`` or path, a zoo spec (``nb201:...``,
``tv:resnet18``) or an IR :class:`~edgepass.ir.Graph`; ``design`` (a Design or its JSON) predicts
the design's graph without rewriting. ``device``: an id, a device-file path or a Device (a file
written by ``edgepass device fit`` carries its few-shot fit).
"""
from __future__ import annotations

from pathlib import Path

from .. import zoo
from ..api import analyze
from ..devices import get_device
from ..errors import EdgepassError, InputError
from ..ir import Graph
from ..space import Design, build_space
from . import energy
from .latency import predict as predict_latency_estimate


def model_graph(model, example_inputs=None):
    """The IR of a model, a zoo spec (``tv:resnet18``) or an already built Graph."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, str) and ":" in model and not Path(model).exists() and not model.endswith(".onnx"):
        try:
            zm = zoo.build(model)
        except EdgepassError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot build zoo model {model!r}: {exc}") from None
        return analyze(zm.module, zm.example_inputs)
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise InputError(f"model {str(model)!r} is neither a file nor a zoo spec (<space>:<arch>)")
    try:
        return analyze(str(model) if isinstance(model, Path) else model, example_inputs)
    except EdgepassError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read model: {type(exc).__name__}: {str(exc)[:200]}") from None


def predict(model, device, *, example_inputs=None, design=None):
    """Predicted latency (ms), per-layer rows and, when the energy predictor is installed, energy."""
    dev = get_device(device)
    graph = model_graph(model, example_inputs)
    if design is not None:
        if isinstance(design, str):
            design = Design.from_json(design)
        elif isinstance(design, dict):
            design = Design.from_dict(design)
        graph = build_space(graph).design_graph(design)
    est = predict_latency_estimate(graph, dev)
    try:
        e = energy.estimate(graph, dev, latency_ms=est.latency_ms)
    except Exception as exc:  # noqa: BLE001 -- a device the energy model cannot price must not break latency
        est.notes.append(f"energy not estimated: {type(exc).__name__}: {str(exc)[:120]}")
        return est
    est.energy_mj, est.energy_calibrated = e.energy_mj, e.energy_calibrated
    per = {r.name: r.energy_mj for r in e.layers}
    for r in est.layers:
        r.energy_mj = per.get(r.name, r.energy_mj)
    est.notes += list(e.notes)
    return est


__all__ = ["predict", "model_graph"]
