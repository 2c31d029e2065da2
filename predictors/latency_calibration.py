"""Calibration of the latency predictor on a few measured designs of *one* model
(:func:`calibrate_on_designs`): per-precision gains and an offset, stored in the device's
``provenance["latency_calibration"]`` and applied by every prediction path."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgepass.devices import get_device

from .features import OP_FEATURE_INDEX, graph_matrix
from .latency_model import CALIBRATION_KEY, LatencyModel, device_precision, load_model


def calibrate_on_designs(device, graphs: list, measured_ms, *, model: LatencyModel | None = None):
    """The device with the predictor calibrated on a few designs of *one* model measured on it:
    latency = fp32 gain x (non-int8 ops + per-graph overhead) + int8 gain x (int8 ops) + extra ms,
    gains and extra >= 0 fitted on relative error (non-negative least squares). Approach 1 on the
    user's own model: the predictor's ranking of designs is kept, its scale per precision is set by
    measurement (on this CPU the shared predictor gets int8 of small models wrong by up to 4x:
    quantize/dequantize boundaries are not ops it sees). Returns ``(Device, info)``."""
    from scipy.optimize import nnls

    m = model or load_model()
    dev = get_device(device)
    prov = dict(dev.provenance or {})
    prov.pop(CALIBRATION_KEY, None)
    base = replace(dev, provenance=dict(prov))
    st = m.device_state(base)
    dprec = device_precision(base)
    q = OP_FEATURE_INDEX["prec_int8"]
    rows = []
    for g in graphs:
        X = graph_matrix(g, dprec)[0]
        per = m.op_latency(X, st)
        int8 = X[:, q] > 0 if len(X) else np.zeros(0, bool)
        rows.append([per[~int8].sum() + m.overhead_ms(st), per[int8].sum(), 1.0])
    A = np.asarray(rows, dtype=np.float64)
    y = np.asarray(measured_ms, dtype=np.float64)
    has_int8 = A[:, 1].sum() > 0
    cols = [0, 1, 2] if has_int8 else [0, 2]
    w, _ = nnls(A[:, cols] / y[:, None], np.ones(len(y)))
    coef = np.zeros(3)
    coef[cols] = w
    if not has_int8:
        coef[1] = coef[0]
    if coef[0] <= 0:   # degenerate fit (e.g. one design): a plain scale
        coef = np.array([1.0, 1.0, 0.0]) * float(np.median(y / (A[:, 0] + A[:, 1])))
    pred = A @ coef
    info = {"model": m.version, "fp": float(coef[0]), "int8": float(coef[1]), "extra_ms": float(coef[2]),
            "designs": int(len(y)), "max_rel_error": float(np.max(np.abs(pred / y - 1)))}
    prov[CALIBRATION_KEY] = info
    return replace(dev, provenance=prov), info


__all__ = ["calibrate_on_designs"]
