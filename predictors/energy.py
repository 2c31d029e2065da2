"""Energy per inference: a per-operator physical model, calibrated where public measurements exist.

    from edgepass.predictors.energy import predict_energy
    total_mj, per_op_mj, calibrated, note = predict_energy(graph, "mlperf-tiny/bosch-nucleo-l4r5zi",
                                                           latency_ms=200.0)

Model (per IR op, then summed)::

    E_op = k_dyn * [ MACs * e_mac(precision) * overhead(kind)  +  bytes * e_byte(on-chip | DRAM) ]
    E    = sum_ops E_op  +  P_static * latency

* ``e_mac`` and ``e_byte`` are published 45 nm figures (Horowitz, "Computing's energy problem (and
  what we can do about it)", ISSCC 2014, Fig. 1.1.9): fp32 mult 3.7 pJ + add 0.9 pJ; fp16 mult
  1.1 pJ + add 0.4 pJ; int8 mult 0.2 pJ + add 0.03 pJ (int32 accumulate add 0.1 pJ); SRAM read of
  64 bit: 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ; DRAM 64-bit access 1.3-2.6 nJ.
* ``overhead(kind)`` (instruction fetch/decode, register files, control per useful MAC) and the
  on-chip memory size per device class are *modelling assumptions*, not measurements: Horowitz puts
  an instruction's overhead at ~70 pJ against < 5 pJ of arithmetic, which SIMD/SIMT lanes amortise
  (CPU 8-16 lanes, GPU more) and dataflow accelerators (NPU/ASIC) mostly remove.
* An op's bytes (activations read/written + weights) cost SRAM energy when its working set fits the
  class's on-chip memory (datasheet ``onchip_mb`` overrides), DRAM energy otherwise.
* ``P_static * latency``: active-idle/leakage power while the inference runs (W x ms = mJ). Class
  defaults are assumptions; with a datasheet ``tdp_w`` it is ``static_share(kind) * tdp_w``.
  ``latency_ms`` defaults to the latency predictor's estimate (``edgepass.predictors.latency``).

Calibration: ``edgepass/data/predictors/energy_calibration.json`` holds, per device class, a fitted
``k_dyn`` and power law ``P = exp(log_p_w) * f_GHz^p_exponent`` from MLPerf Tiny's measured energy (EEMBC
EnergyRunner; 24 systems x 4 reference networks, whose IRs :func:`mlperf_tiny_graph` builds),
produced by :func:`calibrate` (``python -m edgepass.predictors.energy --calibrate``). Only the
classes that have measured systems are calibrated (mcu, npu in the public data); every other
estimate returns ``calibrated=False`` and says it is modelled.
"""
from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path

import numpy as np

from edgepass.api import analyze
from edgepass.devices import get_device, list_devices
from edgepass.errors import InputError
from edgepass.ir import DTYPE_BYTES
from edgepass.knob_tables import designed_ops, op_combos, summed_tables, table_sums

from .base import Estimate, LayerEstimate
from .latency_predict import predict_latency

CALIBRATION = ("data", "predictors", "energy_calibration.json")
MLPERF_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mlperf_tiny" / "mlperf_tiny_results.csv"

# --- published per-operation energies, 45 nm (Horowitz, ISSCC 2014), picojoules -------------------
E_MAC_PJ = {
    "fp32": 3.7 + 0.9,   # 32-bit float multiply + add
    "fp16": 1.1 + 0.4,   # 16-bit float multiply + add
    "bf16": 1.1 + 0.4,
    "int8": 0.2 + 0.1,   # 8-bit int multiply + 32-bit int accumulate add
}
E_SRAM_PJ_PER_BYTE = 20.0 / 8      # 32 KB SRAM, 20 pJ per 64-bit read
E_DRAM_PJ_PER_BYTE = 1950.0 / 8    # DRAM, 1.3-2.6 nJ per 64-bit access (midpoint)

# --- modelling assumptions per device class (not measurements; see the module docstring) ---------
OVERHEAD = {"cpu": 12.0, "gpu": 4.0, "mobile-cpu": 8.0, "mobile-gpu": 3.0, "npu": 1.5, "asic": 1.3,
            "fpga": 3.0, "mcu": 20.0}
#: non-MAC ops (elementwise, pooling, ...) cost this many "MAC equivalents" per output element
ELEMENTWISE_MAC_EQUIV = 1.0
ONCHIP_MB = {"cpu": 16.0, "gpu": 6.0, "mobile-cpu": 2.0, "mobile-gpu": 1.0, "npu": 2.0, "asic": 0.1,
             "fpga": 4.0, "mcu": 2.0}
#: mobile DRAM (LPDDR) is cheaper per byte than desktop DDR/GDDR; MCUs read flash/SRAM only
DRAM_SCALE = {"cpu": 1.0, "gpu": 1.0, "mobile-cpu": 0.6, "mobile-gpu": 0.6, "npu": 0.6, "asic": 1.0,
              "fpga": 1.0, "mcu": 0.0}
STATIC_W = {"cpu": 15.0, "gpu": 40.0, "mobile-cpu": 0.8, "mobile-gpu": 1.0, "npu": 0.3, "asic": 0.1,
            "fpga": 2.0, "mcu": 0.03}
STATIC_SHARE_OF_TDP = {"cpu": 0.35, "gpu": 0.25, "mobile-cpu": 0.2, "mobile-gpu": 0.2, "npu": 0.2, "asic": 0.2,
                       "fpga": 0.3, "mcu": 0.5}


def _load_calibration() -> dict:
    try:
        res = resources.files("edgepass").joinpath(*CALIBRATION)
        return json.loads(res.read_text()) if res.is_file() else {}
    except (OSError, json.JSONDecodeError, ModuleNotFoundError):
        return {}


_CAL: dict | None = None


def calibration() -> dict:
    """The shipped calibration (``{"classes": {kind: {...}}, ...}``; empty when not shipped)."""
    global _CAL
    if _CAL is None:
        _CAL = _load_calibration()
    return _CAL


def _freq(dev) -> float | None:
    f = dev.datasheet.get("freq_ghz")
    return float(f) if f else None


def dynamic_energy(graph, kind: str, *, precision: str | None = None, onchip_mb: float | None = None) -> dict:
    """Modelled dynamic energy (mJ) per op, before any calibration factor."""
    return {op.name: op_dynamic_energy(op, kind, precision=precision, onchip_mb=onchip_mb) for op in graph.ops()}


def op_dynamic_energy(op, kind: str, *, precision: str | None = None, onchip_mb: float | None = None) -> float:
    """Modelled dynamic energy (mJ) of one IR op on a device class, before any calibration factor."""
    onchip = (onchip_mb if onchip_mb is not None else ONCHIP_MB.get(kind, 2.0)) * 1e6
    e_dram = E_DRAM_PJ_PER_BYTE * DRAM_SCALE.get(kind, 1.0)
    prec = precision or op.precision
    e_mac = E_MAC_PJ.get(prec, E_MAC_PJ["fp32"])
    if op.macs:
        ops = op.macs
    else:
        ops = ELEMENTWISE_MAC_EQUIV * sum(int(np.prod(s)) for s in op.out_shapes if s) \
            if op.kind not in ("reshape", "identity", "transpose", "cast") else 0
    nbytes = op.bytes_read + op.bytes_written
    if precision is not None and precision != op.precision:  # re-price bytes at the asked precision
        nbytes = nbytes * DTYPE_BYTES.get(precision, 4) / DTYPE_BYTES.get(op.precision, 4)
    e_byte = E_SRAM_PJ_PER_BYTE if (nbytes <= onchip or e_dram == 0) else e_dram
    return (ops * e_mac * OVERHEAD.get(kind, 5.0) + nbytes * e_byte) * 1e-9      # pJ -> mJ


class EnergyTable:
    """Energy (mJ) of a batch of encoded designs of a design space, for the optimizers' energy
    budgets: the modelled dynamic energy of every op under every relevant knob combination, summed
    through the same tables as :class:`~edgepass.predictors.latency.LatencyTable`, plus static power
    x the latency table's prediction -- the figure :func:`predict_energy` gives for the design's
    graph at that latency."""

    def __init__(self, latency_table):
        dev = latency_table.device
        cal = calibration().get("classes", {}).get(dev.kind)
        self.latency_table = latency_table
        self.k_dyn = cal["k_dyn"] if cal else 1.0
        self.static_w = _static_w(dev, cal)
        self.calibrated = bool(cal)
        combos = op_combos(latency_table.space)
        onchip = dev.datasheet.get("onchip_mb")
        ops = designed_ops(combos)
        dyn = np.array([op_dynamic_energy(o, dev.kind, onchip_mb=onchip) for o in ops])
        check_energies(dyn, [o.name for o in ops], dev)
        self.constant, self.tables = summed_tables(combos, dyn)

    def predict(self, codes: np.ndarray) -> np.ndarray:
        lat = self.latency_table.predict(codes)
        static = np.where(np.isfinite(lat) & (lat > 0) & (lat < 1e7), lat, 0.0)   # as predict_energy
        return self.k_dyn * table_sums(codes, self.constant, self.tables) + self.static_w * static


def check_energies(per_op_mj, names, dev) -> None:
    """Refuse a non-finite or negative op energy, naming the op (the sums would hide which)."""
    values = np.asarray(per_op_mj, dtype=np.float64)
    bad = np.flatnonzero(~(np.isfinite(values) & (values >= 0)))
    if bad.size:
        i = int(bad[0])
        raise InputError(f"the energy predictor gave {values[i]} mJ for op {names[i]} on device {dev.id}; "
                         "refusing to use it")


def _static_w(dev, cal: dict | None) -> float:
    if cal:
        return class_power_w(cal, _freq(dev))
    tdp = dev.datasheet.get("tdp_w")
    if tdp:
        return STATIC_SHARE_OF_TDP.get(dev.kind, 0.3) * float(tdp)
    return STATIC_W.get(dev.kind, 1.0)


def predict_energy(graph, device, *, latency_ms: float | None = None, precision: str | None = None):
    """``(total_mj, per_op_mj, calibrated, note)`` for an IR graph on a device.

    ``per_op_mj``: ``{op name: mJ}`` (dynamic energy; the static part is spread over ops in
    proportion to their dynamic energy so that the rows sum to the total). ``calibrated`` is True
    only when the device's class was fitted on measured energy (MLPerf Tiny). ``precision``
    re-prices every op at one precision (default: each op's own).
    """
    dev = get_device(device)
    if latency_ms is not None and not (isinstance(latency_ms, (int, float, np.number)) and not isinstance(
            latency_ms, bool) and np.isfinite(latency_ms) and latency_ms >= 0):
        raise InputError(f"latency_ms must be a finite number >= 0, got {latency_ms!r}")
    cal = calibration().get("classes", {}).get(dev.kind)
    dyn = dynamic_energy(graph, dev.kind, precision=precision, onchip_mb=dev.datasheet.get("onchip_mb"))
    check_energies(list(dyn.values()), list(dyn), dev)
    k_dyn = cal["k_dyn"] if cal else 1.0
    notes = []
    if latency_ms is None:
        try:
            latency_ms = float(predict_latency(graph, dev))
            if not (np.isfinite(latency_ms) and 0 < latency_ms < 1e7):
                notes.append(f"static energy omitted: the latency predictor returned {latency_ms:.3g} ms for "
                             f"{dev.id} (outside its range); pass latency_ms")
                latency_ms = 0.0
            else:
                notes.append(f"latency {latency_ms:.3g} ms from the latency predictor")
        except Exception as exc:  # noqa: BLE001
            latency_ms = 0.0
            notes.append(f"static energy omitted: no latency given and the latency predictor failed ({exc})")
    p_static = _static_w(dev, cal)
    static_mj = p_static * float(latency_ms)
    dyn_total = k_dyn * sum(dyn.values())
    total = dyn_total + static_mj
    check_energies([total], ["(whole graph)"], dev)
    per_op = {k: (k_dyn * v) * (total / dyn_total if dyn_total > 0 else 1.0) for k, v in dyn.items()}
    if cal:
        notes.insert(0, f"energy calibrated on {cal['n_rows']} MLPerf Tiny measurements of {cal['n_systems']} "
                        f"{dev.kind} systems (leave-one-system-out MAPE {cal.get('loso_mape', float('nan')):.0f} %)")
    else:
        src = "datasheet TDP" if dev.datasheet.get("tdp_w") else f"{dev.kind} class default"
        notes.insert(0, f"energy modelled, not measured: 45 nm per-op energies (Horowitz 2014) x {dev.kind} "
                        f"overhead; static power {p_static:.3g} W from {src}")
    return float(total), per_op, bool(cal), "; ".join(notes)


def estimate(graph, device, *, latency_ms: float | None = None):
    """The same as an :class:`~edgepass.predictors.base.Estimate` (energy fields and per-op rows)."""
    total, per_op, calibrated, note = predict_energy(graph, device, latency_ms=latency_ms)
    layers = [LayerEstimate(name=op.name, kind=op.kind, latency_ms=0.0, energy_mj=per_op.get(op.name, 0.0),
                            macs=int(op.macs), precision=op.precision) for op in graph.ops()]
    return Estimate(device=get_device(device).id, latency_ms=float(latency_ms or 0.0), energy_mj=total,
                    energy_calibrated=calibrated, layers=layers, notes=[note])


# ---------------------------------------------------------------------- MLPerf Tiny reference nets
def mlperf_tiny_module(task: str):
    """The MLPerf Tiny v1.x reference network of ``task`` (ad | ic | kws | vww) as a torch module and
    its example input (architectures as in mlcommons/tiny ``benchmark/training``)."""
    import torch
    from torch import nn

    def cbr(cin, cout, k, s=1, groups=1, pad=None):
        pad = (k - 1) // 2 if pad is None else pad
        return [nn.Conv2d(cin, cout, k, s, pad, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    if task == "ic":   # ResNet-8 (CIFAR-10, 32x32x3): 3 stacks of one residual block, 16/32/64 filters
        class Block(nn.Module):
            def __init__(self, cin, cout, s):
                super().__init__()
                self.body = nn.Sequential(*cbr(cin, cout, 3, s), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                          nn.BatchNorm2d(cout))
                self.short = nn.Conv2d(cin, cout, 1, s, bias=True) if (s != 1 or cin != cout) else nn.Identity()
                self.relu = nn.ReLU()

            def forward(self, x):
                return self.relu(self.body(x) + self.short(x))

        net = nn.Sequential(*cbr(3, 16, 3), Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        x = torch.zeros(1, 3, 32, 32)
    elif task == "kws":  # DS-CNN small (49x10 MFCC): conv 10x4/2 64 ch + 4 depthwise-separable blocks
        layers = [nn.Conv2d(1, 64, (10, 4), (2, 2), (5, 1), bias=False), nn.BatchNorm2d(64), nn.ReLU()]
        for _ in range(4):
            layers += cbr(64, 64, 3, groups=64) + cbr(64, 64, 1)
        net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 12))
        x = torch.zeros(1, 1, 49, 10)
    elif task == "vww":  # MobileNetV1 alpha=0.25 at 96x96x3, 2 classes
        cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
        c = 8
        layers = cbr(3, c, 3, 2)
        for out, s in cfg:
            o = out // 4
            layers += cbr(c, c, 3, s, groups=c) + cbr(c, o, 1)
            c = o
        net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 2))
        x = torch.zeros(1, 3, 96, 96)
    elif task == "ad":  # FC autoencoder (ToyADMOS, 640 inputs): 4x128, bottleneck 8, 4x128, 640 out
        dims = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128]
        layers = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU()]
        net = nn.Sequential(*layers, nn.Linear(128, 640))
        x = torch.zeros(1, 640)
    else:
        raise ValueError(f"MLPerf Tiny task must be ad, ic, kws or vww, not {task!r}")
    return net.eval(), (x,)


_GRAPHS: dict = {}


def mlperf_tiny_graph(task: str):
    """IR graph of an MLPerf Tiny reference network (cached)."""
    if task not in _GRAPHS:
        net, x = mlperf_tiny_module(task)
        _GRAPHS[task] = analyze(net, x)
    return _GRAPHS[task]


# ---------------------------------------------------------------------- calibration on MLPerf Tiny
def mlperf_energy_rows(csv_path: str | Path | None = None) -> list[dict]:
    """Per-inference energy rows of MLPerf Tiny (sww excluded) joined to device ids of the database."""
    path = Path(csv_path) if csv_path is not None else MLPERF_CSV
    col2dev = {}
    for d in list_devices():
        for src in d.provenance.get("sources", []) or []:
            for col in src.get("columns", []):
                col2dev[col] = d
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            if not r["energy_uj_per_inf"] or r["task"] not in ("ad", "ic", "kws", "vww") or r["division"] != "closed":
                continue
            dev = col2dev.get(f"{r['version']}:{r['system']}:{r['task']}")
            if dev is None:
                continue
            lat = float(r["latency_ms"])
            if r.get("throughput_in_energy_mode"):
                lat = 1000.0 / float(r["throughput_in_energy_mode"])
            q = (r.get("quantization") or "").lower()
            prec = "fp32" if ("float" in q or "fp32" in q) and "int8" not in q else "int8"
            rows.append({"device": dev.id, "kind": dev.kind, "task": r["task"], "version": r["version"],
                         "system": r["system"], "energy_mj": float(r["energy_uj_per_inf"]) / 1000.0,
                         "latency_ms": lat, "precision": prec, "freq_ghz": _freq(dev)})
    return rows


K_DYN_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def _fit_class(rows: list[dict]) -> dict:
    """Average power while inferring as a power law of the clock, ``P = exp(a) * f_GHz^b``, plus a
    dynamic-energy factor ``k_dyn`` (grid): least squares in log space of ``(E - k_dyn E_dyn) / t``."""
    f_med = float(np.median([r["freq_ghz"] for r in rows if r["freq_ghz"]] or [0.1]))
    dyn = np.array([sum(dynamic_energy(mlperf_tiny_graph(r["task"]), r["kind"], precision=r["precision"]).values())
                    for r in rows])
    E = np.array([r["energy_mj"] for r in rows])
    t = np.array([r["latency_ms"] for r in rows])
    lf = np.log(np.array([r["freq_ghz"] or f_med for r in rows]))
    best = None
    for k in K_DYN_GRID:
        rest = E - k * dyn
        if (rest <= 0.05 * E).any():
            continue
        lp = np.log(rest / t)
        if np.ptp(lf) > 0:
            b, a = np.polyfit(lf, lp, 1)
        else:
            a, b = float(lp.mean()), 0.0
        pred = k * dyn + np.exp(a + b * lf) * t
        err = float(np.mean(np.log(pred / E) ** 2))
        if best is None or err < best[0]:
            best = (err, k, float(a), float(b))
    _, k, a, b = best
    return {"k_dyn": k, "log_p_w": a, "p_exponent": b, "median_freq_ghz": f_med, "n_rows": len(rows),
            "n_systems": len({r["device"] for r in rows})}


def class_power_w(cal: dict, freq_ghz: float | None) -> float:
    f = freq_ghz or cal["median_freq_ghz"]
    return float(np.exp(cal["log_p_w"] + cal["p_exponent"] * np.log(f)))


def calibrate(csv_path: str | Path | None = None) -> tuple[dict, list[dict]]:
    """Fit per-class constants on MLPerf Tiny; returns ``(calibration, leave-one-system-out rows)``.

    LOSO: for every system, its class is refitted without any of its rows and its energies are
    predicted from the measured latency (the energy model's input); the class's ``loso_mape`` is the
    mean absolute percentage error over those predictions.
    """
    rows = mlperf_energy_rows(csv_path)
    classes: dict = {}
    loso: list[dict] = []
    for kind in sorted({r["kind"] for r in rows}):
        krows = [r for r in rows if r["kind"] == kind]
        systems = sorted({r["device"] for r in krows})
        if len(systems) < 2:
            continue
        errs = []
        for s in systems:
            train = [r for r in krows if r["device"] != s]
            if len({r["device"] for r in train}) < 1:
                continue
            fit = _fit_class(train)
            for r in (r for r in krows if r["device"] == s):
                dyn = sum(dynamic_energy(mlperf_tiny_graph(r["task"]), kind, precision=r["precision"]).values())
                pred = fit["k_dyn"] * dyn + class_power_w(fit, r["freq_ghz"]) * r["latency_ms"]
                errs.append(abs(pred / r["energy_mj"] - 1))
                loso.append({**r, "predicted_mj": pred, "abs_err_%": 100 * abs(pred / r["energy_mj"] - 1)})
        fit = _fit_class(krows)
        fit["loso_mape"] = float(100 * np.mean(errs)) if errs else float("nan")
        fit["systems"] = systems
        classes[kind] = fit
    cal = {"format": "edgepass.energy-calibration/1",
           "source": "MLPerf Tiny v0.7-v1.3 closed division, energy mode (EEMBC EnergyRunner), Apache-2.0; "
                     "see shared/data/mlperf_tiny/PROVENANCE.md",
           "model": "E = k_dyn * E_dyn(Horowitz 45nm x class overhead) + exp(log_p_w) * f_GHz^p_exponent * latency",
           "command": "python -m edgepass.predictors.energy --calibrate",
           "classes": classes}
    return cal, loso


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="calibrate the energy model on MLPerf Tiny")
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--csv", default=None)
    ap.add_argument("-o", "--out", default=str(Path(__file__).resolve().parents[1] / "edgepass" / Path(*CALIBRATION)))
    args = ap.parse_args(argv)
    if not args.calibrate:
        ap.print_help()
        return 0
    cal, loso = calibrate(args.csv)
    Path(args.out).write_text(json.dumps(cal, indent=2, sort_keys=True) + "\n")
    for k, v in cal["classes"].items():
        print(f"{k}: {v['n_systems']} systems, {v['n_rows']} rows, k_dyn {v['k_dyn']:.3g}, P = {np.exp(v['log_p_w']):.3g} "
              f"* f^{v['p_exponent']:.2f} W, LOSO MAPE {v['loso_mape']:.1f} %")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
