"""The compile's last choices: candidate designs measured on the calibration data (``evaluate_top``)
and, on this machine's devices, measured latencies (``calibrate_latency``, before/after)."""
from __future__ import annotations

import numpy as np

from .build_cache import confirm_records, decisive_candidates
from .devices.measure import MIN_SECONDS, measure
from .errors import InputError
from .optimizers.candidates import uniform_designs
from .predictors.latency import calibrate_on_designs
from .rewrite import apply_design

#: ids of this machine's devices: the ones a compile can measure on
LOCAL_PREFIX = "local/cpu-ort-"


#: designs measured by ``calibrate_latency``: (width ratio, precision)
CALIBRATION_DESIGNS = ((1.0, None), (1.0, "int8"), (0.5, None), (0.5, "int8"))


def check_local(dev) -> None:
    if not dev.id.startswith(LOCAL_PREFIX):
        raise InputError(f"calibrate_latency measures on this machine: only for the {LOCAL_PREFIX}* devices, "
                         f"not {dev.id}")


def calibrate_latency(prep, space, dev, latency_of):
    """Measure :data:`CALIBRATION_DESIGNS` of the model here and return the device with the latency
    predictor calibrated on them (:func:`edgepass.predictors.latency.calibrate_on_designs`)."""
    check_local(dev)
    if prep.torch_input:
        raise InputError("calibrate_latency measures ONNX models: give the model as ONNX")
    designs = []
    for ratio, precision in CALIBRATION_DESIGNS:
        if precision is not None and not any(precision in ps for ps in space.precisions.values()):
            continue
        d = space.uniform(ratio, precision=precision)
        if all(d != x for x in designs):
            designs.append(d)
    graphs = [space.design_graph(d) for d in designs]
    ms = [latency_of(d) for d in designs]
    cal_dev, info = calibrate_on_designs(dev, graphs, ms)
    note = (f"latency calibrated on {info['designs']} designs of this model measured here: fp32 x{info['fp']:.2f}, "
            f"int8 x{info['int8']:.2f}, +{info['extra_ms']:.3f} ms (largest error on them "
            f"{100 * info['max_rel_error']:.0f} %)")
    return cal_dev, note


#: with calibrate_latency, candidates predicted up to this factor over the latency budget are measured
LOOSE = 1.25


def uniform_candidates(space, table, acc, max_ms: float) -> list:
    """Every uniform design (each width ratio, fp32 and int8 where offered) predicted within ``max_ms``,
    as ``(design, predicted ms, predicted accuracy)``: on this machine they are measured, not trusted."""
    designs = uniform_designs(space)
    codes = np.stack([space.encode(d) for d in designs])
    lat, a = table.predict(codes), acc.predict_codes(codes)
    return [(d, float(ms), float(x)) for d, ms, x in zip(designs, lat, a) if ms <= max_ms]


def local_latency(prep, dev, opts):
    """design -> median latency (ms) of the rewritten model measured here (the device's threads),
    each design measured once."""
    seen: dict = {}

    def latency_of(design) -> float:
        key = design.to_json(indent=None)
        if key not in seen:
            model = apply_design(prep.source, design, calibration_data=opts.calibration_data,
                                 input_shapes=opts.input_shapes, recalibrate=False, graph=prep.graph).model
            seen[key] = float(measure(model, threads=int(dev.threads or 1), runs=20,
                                      min_seconds=MIN_SECONDS).median_ms)
        return seen[key]
    return latency_of


def select(tgt, result, notes: list, *, latency_of=None, budget_ms=None) -> list:
    """Measure ``result.candidates`` on the calibration data (with the compile's recovery) and make
    the best measured one ``result``'s design; ties keep the optimizer's order (its pick first).
    With ``latency_of`` (this machine), only candidates whose measured latency is within
    ``budget_ms`` are eligible (none: the optimizer's pick stays)."""
    rows = []
    for i, (design, lat, acc) in enumerate(result.candidates):
        rows.append({"design": design.to_dict(), "predicted_latency_ms": lat, "predicted_accuracy": acc,
                     "measured_on_calibration": tgt.evaluate(design), "chosen": False})
        if latency_of is not None:
            rows[-1]["measured_ms"] = latency_of(design)
    eligible = [i for i, r in enumerate(rows) if latency_of is None or r["measured_ms"] <= budget_ms]
    if not eligible:
        notes.append(f"none of {len(rows)} candidates measured within the budget here: kept the optimizer's pick")
        eligible = [0]
    best = max(eligible, key=lambda i: (rows[i]["measured_on_calibration"], -i))
    # cached metrics may not decide unchecked
    decisive = decisive_candidates([r["measured_on_calibration"] for r in rows], eligible, best)
    if not confirm_records(tgt.evaluated, [result.candidates[i][0] for i in decisive], tgt.accuracy.evaluate,
                           tgt.cache):
        return select(tgt, result, notes, latency_of=latency_of, budget_ms=budget_ms)
    rows[best]["chosen"] = True
    metric = tgt.accuracy.info.get("metric", "accuracy")
    if best != 0:
        notes.append(f"chose candidate {best + 1} of {len(rows)}: {metric} on the calibration data "
                     f"{rows[best]['measured_on_calibration']:.3f} vs {rows[0]['measured_on_calibration']:.3f} "
                     f"for the optimizer's pick" + (" (measured here within the budget)" if latency_of else ""))
        design, lat, acc = result.candidates[best]
        result.design, result.latency_ms, result.accuracy = design, lat, acc
        result.code = tgt.space.encode(design)   # energy: the report re-predicts the chosen design
    return rows


def measure_here(original, compiled, dev, predicted_ms) -> dict:
    threads = int(dev.threads or 1)
    before = measure(original, threads=threads, runs=20, min_seconds=MIN_SECONDS).median_ms
    after = measure(compiled, threads=threads, runs=20, min_seconds=MIN_SECONDS).median_ms
    err = predicted_ms / after - 1.0
    return {"before_ms": before, "after_ms": after, "error": err, "miss": abs(err) > 0.10, "threads": threads}


__all__ = ["LOCAL_PREFIX", "CALIBRATION_DESIGNS", "LOOSE", "MIN_SECONDS", "check_local", "calibrate_latency",
           "uniform_candidates", "local_latency", "select", "measure_here"]
