#!/usr/bin/env python
"""Build edgepass's embedded device database from the public benchmark data.

    python scripts/build_device_db.py [--data /work/shared/data] [--out edgepass/data/devices/devices.json]

Reads the converted CSVs of /work/shared/data (HELP, OneProxy, BRP-NAS, Accel-NASBench,
mobile-ml-benchmark, MLPerf Tiny; see each folder's PROVENANCE.md) and writes one JSON file with
one record per device configuration: what it is, its provenance and licence, and how many
architectures of which design space were measured on it. The latency values themselves are not
copied (the training-set builder reads them); only counts and the source column names, so the
training set can be joined back to these ids through ``aliases`` / ``provenance.sources``.

Devices measured by two collections are merged into one record (both sources listed):
HELP's pixel3/eyeriss/fpga/raspi4 columns == OneProxy's rice_* columns (HW-NAS-Bench data,
verified equal in help/PROVENANCE.md and oneproxy/PROVENANCE.md), and OneProxy's eagle_i7 ==
BRP-NAS's Core i7-7820X pickle x 1000. Measurement counts of merged devices are the union of
the architecture indices. Only facts present in the data (or its PROVENANCE files) are used;
anything a source does not state is left unset (threads/batch 0, datasheet key absent) or
flagged in ``notes``.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
try:  # validate every record with the real schema (installed, or this checkout)
    from edgepass.devices.schema import SCHEMA, Device
except ImportError:  # pragma: no cover - `python scripts/build_device_db.py` from a checkout
    sys.path.insert(0, str(ROOT))
    from edgepass.devices.schema import SCHEMA, Device  # noqa: E402

DB_SCHEMA = "edgepass.device-db/1"
csv.field_size_limit(1 << 24)

# ---------------------------------------------------------------------------- sources
SOURCES: dict[str, dict[str, str]] = {
    "help": {
        "title": "HELP: Hardware-adaptive Efficient Latency Prediction for NAS via Meta-Learning (NeurIPS 2021)",
        "repo": "https://github.com/HayeonLee/HELP", "commit": "45f70eb92d0d735970a33b608d1544ad3c52f285",
        "licence": "MIT", "folder": "help",
    },
    "oneproxy": {
        "title": "One Proxy Device Is Enough for Hardware-Aware NAS (SIGMETRICS 2022)",
        "repo": "https://github.com/Ren-Research/OneProxy", "commit": "e3c9b2c65113e16f1208988287810b283674f4de",
        "licence": "MIT",
        "folder": "oneproxy",
    },
    "brp_nas": {
        "title": "BRP-NAS / Eagle LatBench (desktop CPU file)",
        "repo": "https://github.com/zheng-ningxin/brp-nas", "commit": "53313d8dc7f3ef53fe8551824fdf9f55bd353677",
        "licence": "Apache-2.0", "folder": "brp_nas_latbench",
    },
    "accel_nasbench": {
        "title": "Accel-NASBench",
        "repo": "https://github.com/afzalxo/Accel-NASBench", "commit": "42603572d530310e6bac7191d00cf45625a6b197",
        "licence": "Apache-2.0", "folder": "accel_nasbench",
    },
    "mobile_ml_benchmark": {
        "title": "A Benchmark for ML Inference Latency on Mobile Devices (EdgeSys 2024)",
        "repo": "https://github.com/qed-usc/mobile-ml-benchmark", "commit": "40ba833a9ca560a3035a76a5c3da504082dec001",
        "licence": "MIT", "folder": "mobile_ml_benchmark",
    },
    "mlperf_tiny": {
        "title": "MLPerf Tiny results v0.7-v1.3 (MLCommons)",
        "repo": "https://github.com/mlcommons/tiny_results_v0.7 ... tiny_results_v1.3", "commit": "see mlperf_tiny/PROVENANCE.md",
        "licence": "Apache-2.0", "folder": "mlperf_tiny",
    },
}
# original measurement campaigns that the redistributing sources credit
CAMPAIGN_LICENCE = {"hwnasbench": "MIT", "nnmeter": "O-UDA-1.0", "eagle": "Apache-2.0"}


class Builder:
    """Accumulates device records; a second source for an existing id is merged into it."""

    def __init__(self) -> None:
        self.devices: dict[str, dict[str, Any]] = {}
        self.archs: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def device(self, dev_id: str, **meta: Any) -> dict[str, Any]:
        """Create the record on first sight; later calls only append new notes."""
        notes = meta.pop("notes", "") or ""
        if dev_id not in self.devices:
            self.devices[dev_id] = {
                "schema": SCHEMA, "id": dev_id, "signature": {}, "datasheet": {}, "aliases": [],
                "metrics": [], "notes": "", "threads": 0, "batch_size": 1,
                "provenance": {"kind": "public-benchmark", "sources": []}, **meta}
        rec = self.devices[dev_id]
        if notes and notes not in rec["notes"]:
            rec["notes"] = (rec["notes"] + " " + notes).strip()
        return rec

    def source(self, dev_id: str, source: str, columns: Iterable[str], campaign: str | None = None,
               alias: str | None = None) -> None:
        """Record that ``source`` (key of SOURCES) provided ``columns`` for this device.

        ``alias`` (e.g. ``help/pixel3``) is another id the device can be looked up by; it is
        the source's own column name, so the training-set builder can join on it.
        """
        rec = self.devices[dev_id]
        for s in rec["provenance"]["sources"]:
            if s["name"] == source:
                s["columns"] = sorted(set(s["columns"]) | set(columns))
                break
        else:
            info = SOURCES[source]
            entry = {"name": source, "repo": info["repo"], "commit": info["commit"],
                     "licence": info["licence"], "columns": sorted(set(columns))}
            if campaign:
                entry["measured_by"] = f"{campaign} ({CAMPAIGN_LICENCE[campaign]})"
            rec["provenance"]["sources"].append(entry)
        if alias and alias != dev_id and alias not in rec["aliases"]:
            rec["aliases"].append(alias)
            rec["aliases"].sort()

    def add_metric(self, dev_id: str, metric: str) -> None:
        if metric not in self.devices[dev_id]["metrics"]:
            self.devices[dev_id]["metrics"].append(metric)

    def finish(self) -> list[dict[str, Any]]:
        out = []
        for dev_id, rec in sorted(self.devices.items()):
            meas = {space: len(ids) for space, ids in self.archs[dev_id].items() if ids}
            meas.update({space: n for space, n in self.counts[dev_id].items() if n})
            rec["measurements"] = dict(sorted(meas.items()))
            rec["n_measurements"] = sum(meas.values())
            prov = rec["provenance"]
            prov["source"] = " + ".join(s["name"] for s in prov["sources"])
            prov["licence"] = " + ".join(dict.fromkeys(s["licence"] for s in prov["sources"]))
            rec["metrics"] = sorted(rec["metrics"])
            Device.from_dict(rec, origin=f"built device {dev_id}")  # fail the build, not the user
            out.append(rec)
        return out


def _float(v: str | None) -> float | None:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if x == x and x > 0 else None  # NaN, missing (-1) and empty -> None


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- HELP
HELP_GPUS = {"1080ti": "NVIDIA GeForce GTX 1080 Ti", "2080ti": "NVIDIA GeForce RTX 2080 Ti",
             "titan_rtx": "NVIDIA Titan RTX", "titanx": "NVIDIA Titan X", "titanxp": "NVIDIA Titan Xp",
             "titan_xp": "NVIDIA Titan Xp", "v100": "NVIDIA Tesla V100"}
HELP_OTHER = {
    # column: (id, name, kind, runtime, precisions, notes)
    "gold_6226": ("help/xeon-gold-6226", "Intel Xeon Gold 6226", "cpu"),
    "gold_6240": ("help/xeon-gold-6240", "Intel Xeon Gold 6240", "cpu"),
    "silver_4114": ("help/xeon-silver-4114", "Intel Xeon Silver 4114", "cpu"),
    "silver_4210r": ("help/xeon-silver-4210r", "Intel Xeon Silver 4210R", "cpu"),
    "pixel2": ("help/pixel2", "Google Pixel 2", "mobile-cpu"),
    "essential_ph_1": ("help/essential-ph1", "Essential Phone PH-1", "mobile-cpu"),
    "samsung_a50": ("help/galaxy-a50", "Samsung Galaxy A50", "mobile-cpu"),
    "samsung_s7": ("help/galaxy-s7", "Samsung Galaxy S7", "mobile-cpu"),
    # HW-NAS-Bench's devices (identical in OneProxy as rice_*): merged under hwnasbench/
    "pixel3": ("hwnasbench/pixel3", "Google Pixel 3", "mobile-cpu"),
    "raspi4": ("hwnasbench/raspi4", "Raspberry Pi 4 (ARM Cortex-A72 board)", "mobile-cpu"),
    "eyeriss": ("hwnasbench/eyeriss", "Eyeriss ASIC (simulated)", "asic"),
    "fpga": ("hwnasbench/fpga", "FPGA accelerator (HW-NAS-Bench)", "fpga"),
}
HWNAS_COLUMNS = {"pixel3", "raspi4", "eyeriss", "fpga"}
HELP_NOTES = {
    **{c: "HELP's values are integer ms (1 ms resolution)." for c in ("pixel2", "essential_ph_1", "samsung_a50", "samsung_s7")},
    "pixel3": "A few degenerate NB201 cells have near-zero latency; filter them.",
    "raspi4": "A few degenerate NB201 cells have near-zero latency; filter them.",
}
UNSTATED = "Runtime and precision are not stated in the data; fp32 assumed."


def help_gpu_id(col: str) -> tuple[str, str, int]:
    gpu, batch = col.rsplit("_", 1)
    key = "titanxp" if gpu == "titan_xp" else gpu
    return f"help/{key.replace('_', '-')}-b{batch}", gpu, int(batch)


def build_help(b: Builder, data: Path) -> None:
    spaces = {"nasbench201_latency.csv": ("nb201", "arch_idx"), "fbnet_latency.csv": ("fbnet", "arch_idx"),
              "ofa_latency.csv": ("ofa-mbv3", "arch_idx")}
    for fname, (space, key) in spaces.items():
        rows = _rows(data / "help" / "csv" / fname)
        meta_cols = {"arch_idx", "arch_str", "op_idx_list", "op_names", "ks", "e", "d", "r"}
        for col in [c for c in rows[0] if c not in meta_cols]:
            if col in HELP_OTHER:
                dev_id, name, kind = HELP_OTHER[col]
                campaign = "hwnasbench" if col in HWNAS_COLUMNS else None
                b.device(dev_id, name=name, kind=kind, runtime="simulator" if col == "eyeriss" else "unknown",
                         precisions=["fp32"], batch_size=1, notes=UNSTATED)
                b.device(dev_id, notes=HELP_NOTES.get(col, ""))
            else:
                dev_id, gpu, batch = help_gpu_id(col)
                campaign = None
                b.device(dev_id, name=f"{HELP_GPUS[gpu]}, batch {batch}", kind="gpu", runtime="unknown",
                         precisions=["fp32"], batch_size=batch, notes=UNSTATED)
            b.source(dev_id, "help", [f"{space}:{col}"], campaign, alias=f"help/{col}")
            b.add_metric(dev_id, "latency_ms")
            ids = b.archs[dev_id][space]
            for r in rows:
                if _float(r[col]) is not None:
                    ids.add(int(r[key]))


# ---------------------------------------------------------------------------- OneProxy + BRP-NAS
ONEPROXY = {
    # column: (id, name, kind, runtime, precisions, campaign, notes)
    "true_a76": ("nnmeter/pixel4-a76-cpu", "Google Pixel 4, Cortex-A76 CPU (TFLite 2.1)", "mobile-cpu", "tflite", ["fp32"], "nnmeter", ""),
    "true_630": ("nnmeter/adreno630-gpu", "Adreno 630 GPU (Pixel 3 XL)", "mobile-gpu", "unknown", ["fp32"], "nnmeter", UNSTATED),
    "true_640": ("nnmeter/adreno640-gpu", "Adreno 640 GPU (Xiaomi Mi 9)", "mobile-gpu", "unknown", ["fp32"], "nnmeter", UNSTATED),
    "true_vpu": ("nnmeter/myriad-vpu", "Intel Movidius Myriad VPU (NCS2, OpenVINO)", "npu", "openvino", ["fp16"], "nnmeter",
                 "Precision not stated in the data; the Myriad VPU executes fp16."),
    "rice_pixel3": ("hwnasbench/pixel3", None, None, None, None, "hwnasbench", ""),
    "rice_eyeriss": ("hwnasbench/eyeriss", None, None, None, None, "hwnasbench", ""),
    "rice_fpga": ("hwnasbench/fpga", None, None, None, None, "hwnasbench", ""),
    "rice_raspi4": ("hwnasbench/raspi4", None, None, None, None, "hwnasbench", ""),
    "rice_edgegpu": ("hwnasbench/jetson-tx2", "NVIDIA Jetson TX2 (edge GPU)", "mobile-gpu", "unknown", ["fp32"], "hwnasbench", UNSTATED),
    "rice_edgetpu": ("hwnasbench/edgetpu", "Google Edge TPU", "npu", "unknown", ["int8"], "hwnasbench",
                     "Edge TPU executes int8 only. 259 of OneProxy's 1,999 cells are missing (-1)."),
    "eagle_gtx": ("eagle/gtx1080ti", "NVIDIA GeForce GTX 1080 Ti (Eagle LatBench; SUSPECT)", "gpu", "unknown", ["fp32"], "eagle",
                  "SUSPECT: per oneproxy/PROVENANCE.md this column is essentially identical to eagle/core-i7-7820x "
                  "(Spearman 1.00, ratio 0.95-1.05), probably mislabelled upstream; do not use it as an independent device."),
    "eagle_i7": ("eagle/core-i7-7820x", "Intel Core i7-7820X (desktop CPU, fp32)", "cpu", "unknown", ["fp32"], "eagle",
                 "Runtime not stated in the data."),
    "eagle_jetson": ("eagle/jetson-nano-fp32", "NVIDIA Jetson Nano, fp32", "mobile-gpu", "unknown", ["fp32"], "eagle", "Runtime not stated in the data."),
    "eagle_jetson_16": ("eagle/jetson-nano-fp16", "NVIDIA Jetson Nano, fp16", "mobile-gpu", "unknown", ["fp16"], "eagle", "Runtime not stated in the data."),
    "eagle_tpu": ("eagle/edgetpu-int8", "Google Edge TPU, int8 (Eagle LatBench)", "npu", "unknown", ["int8"], "eagle", "Runtime not stated in the data."),
    "eagle_cpu_855": ("eagle/sd855-cpu-int8", "Snapdragon 855 Kryo 485 CPU, int8", "mobile-cpu", "unknown", ["int8"], "eagle", "Runtime not stated in the data."),
    "eagle_dsp_855": ("eagle/sd855-dsp-int8", "Snapdragon 855 Hexagon 690 DSP, int8", "npu", "unknown", ["int8"], "eagle", "Runtime not stated in the data."),
    "eagle_gpu_855": ("eagle/sd855-gpu-int8", "Snapdragon 855 Adreno 640 GPU, int8", "mobile-gpu", "unknown", ["int8"], "eagle", "Runtime not stated in the data."),
}


def build_oneproxy(b: Builder, data: Path) -> None:
    rows = _rows(data / "oneproxy" / "csv" / "oneproxy_nb201_18devices.csv")
    for col, (dev_id, name, kind, runtime, precs, campaign, notes) in ONEPROXY.items():
        if name is not None:
            b.device(dev_id, name=name, kind=kind, runtime=runtime, precisions=precs, batch_size=1, notes=notes)
        elif dev_id not in b.devices:
            raise SystemExit(f"{dev_id}: expected HELP to define it first")
        b.source(dev_id, "oneproxy", [col], campaign, alias=f"oneproxy/{col}")
        b.add_metric(dev_id, "latency_ms")
        ids = b.archs[dev_id]["nb201"]
        for r in rows:
            if _float(r[col]) is not None:
                ids.add(int(r["nb201_idx"]))


def build_brp(b: Builder, data: Path) -> None:
    rows = _rows(data / "brp_nas_latbench" / "desktop-cpu-core-i7-7820x-fp32.csv")
    dev_id = "eagle/core-i7-7820x"
    b.source(dev_id, "brp_nas", ["desktop-cpu-core-i7-7820x-fp32"], "eagle")
    ids = b.archs[dev_id]["nb201"]
    for r in rows:
        if _float(r["latency_ms"]) is not None and r["nb201_idx"]:
            ids.add(int(r["nb201_idx"]))


# ---------------------------------------------------------------------------- Accel-NASBench
ANB = {
    "a100": ("anb/a100", "NVIDIA A100 (throughput)", "gpu", "unknown"),
    "3090": ("anb/rtx3090", "NVIDIA GeForce RTX 3090 (throughput)", "gpu", "unknown"),
    "tpuv2": ("anb/tpuv2", "Google Cloud TPU v2 (throughput)", "asic", "unknown"),
    "tpuv3": ("anb/tpuv3", "Google Cloud TPU v3 (throughput)", "asic", "unknown"),
    "zcu102": ("anb/zcu102", "Xilinx Zynq UltraScale+ ZCU102 FPGA", "fpga", "vitis-ai"),
    "vck190": ("anb/vck190", "Xilinx Versal VCK190 FPGA", "fpga", "vitis-ai"),
}


def build_anb(b: Builder, data: Path) -> None:
    rows = _rows(data / "accel_nasbench" / "accel_nasbench.csv")
    for key, (dev_id, name, kind, runtime) in ANB.items():
        fpga = kind == "fpga"
        notes = ("Throughput (images/s) only; batch size and runtime not stated in the data. fp32 assumed."
                 if not fpga else "Latency (ms) and throughput; FPGA DPU flow (Vitis AI) per Accel-NASBench; "
                 "int8 assumed (the DPU computes in int8).")
        b.device(dev_id, name=name, kind=kind, runtime=runtime, precisions=["int8"] if fpga else ["fp32"],
                 batch_size=1 if fpga else 0, notes=notes)
        cols = [c for c in (f"latency_{key}_mean", f"throughput_{key}_mean") if c in rows[0]]
        b.source(dev_id, "accel_nasbench", cols, alias=f"accel_nasbench/{key}")
        for c in cols:
            b.add_metric(dev_id, "latency_ms" if c.startswith("latency") else "throughput_ips")
        ids = b.archs[dev_id]["anb-mnasnet"]
        for r in rows:
            if any(_float(r[c]) is not None for c in cols):
                ids.add(int(r["result_id"]))


# ---------------------------------------------------------------------------- mobile-ml-benchmark
MMB_FILES = {  # file: (runtime, space)
    "tflite_cnn_e2e.csv": ("tflite", "mmb-cnn"), "tflite_nas_e2e.csv": ("tflite", "mmb-nas"),
    "tflite_transformer_e2e.csv": ("tflite", "mmb-vit"), "torch_cnn_e2e.csv": ("pytorch-mobile", "mmb-cnn"),
    "torch_nas_e2e.csv": ("pytorch-mobile", "mmb-nas"), "torch_transformer_e2e.csv": ("pytorch-mobile", "mmb-vit"),
}
MMB_OPS = {"tflite_cnn_ops_gpu.csv": "tflite", "torch_cnn_ops_gpu.csv": "pytorch-mobile"}
_CORE_RE = re.compile(r"(\d+)(large|med|small)")


def _soc_specs(data: Path) -> dict[str, dict[str, str]]:
    return {r["device_key"]: r for r in _rows(data / "mobile_ml_benchmark" / "soc_specs.csv")}


def _mmb_datasheet(spec: dict[str, str], cores: str) -> dict[str, float]:
    """Cores/frequency of the cores a configuration uses (soc_specs.csv, attributed)."""
    if cores == "gpu":
        return {}
    used = {"large": 0, "med": 0, "small": 0}
    for n, cls in _CORE_RE.findall(cores):
        used[cls] += int(n)
    freq_col = {"large": "large_freq_ghz", "med": "medium_freq_ghz", "small": "small_freq_ghz"}
    freqs = [float(spec[freq_col[c]]) for c, n in used.items() if n and spec.get(freq_col[c])]
    sheet = {"cores": float(sum(used.values())), "big_cores": float(used["large"]),
             "mid_cores": float(used["med"]), "little_cores": float(used["small"])}
    if freqs:
        sheet["freq_ghz"] = max(freqs)
    return sheet


def build_mmb(b: Builder, data: Path) -> None:
    specs = _soc_specs(data)
    folder = data / "mobile_ml_benchmark"

    def ensure(phone: str, cores: str, prec: str, runtime: str) -> str:
        spec = specs[phone]
        p = {"float": "fp32", "quant": "int8"}[prec]
        rt = {"tflite": "tflite", "pytorch-mobile": "ptm"}[runtime]
        dev_id = f"mmb/{phone}-{cores}-{rt}-{p}"
        gpu = cores == "gpu"
        what = f"{spec['gpu']} GPU" if gpu else f"CPU cores {cores}"
        b.device(dev_id, name=f"{spec['device_name']} ({spec['soc']}), {what}, "
                 f"{'TFLite' if runtime == 'tflite' else 'PyTorch Mobile'}, {p}",
                 kind="mobile-gpu" if gpu else "mobile-cpu", runtime=runtime, precisions=[p],
                 threads=0 if gpu else sum(int(n) for n, _ in _CORE_RE.findall(cores)), batch_size=1)
        b.devices[dev_id]["datasheet"] = _mmb_datasheet(spec, cores)
        b.add_metric(dev_id, "latency_ms")
        return dev_id

    for fname, (runtime, space) in MMB_FILES.items():
        rows = _rows(folder / fname)
        for col in rows[0]:
            parts = col.split("|")
            if len(parts) != 4 or parts[3] != "mean":
                continue
            phone, cores, prec, _ = parts
            dev_id = ensure(phone, cores, prec, runtime)
            if phone == "onefusion" and runtime == "tflite":
                b.device(dev_id, notes="Only in the older ViT file tflite_transformer_e2e.csv (the paper's TFLite "
                         "phone list has mi8se, not onefusion; both are Snapdragon 710 per soc_specs.csv); "
                         "not one of the paper's 174 environments.")
            b.source(dev_id, "mobile_ml_benchmark", [f"{fname}:{col}"])
            b.counts[dev_id][space] += sum(1 for r in rows if _float(r[col]) is not None)
    for fname, runtime in MMB_OPS.items():
        rows = _rows(folder / fname)
        for col in rows[0]:
            parts = col.split("|")
            if len(parts) != 3 or parts[2] != "float":
                continue
            dev_id = ensure(parts[0], parts[1], "float", runtime)
            b.source(dev_id, "mobile_ml_benchmark", [f"{fname}:{col}"])
            b.counts[dev_id]["mmb-cnn-ops"] += sum(1 for r in rows if _float(r[col]) is not None)


# ---------------------------------------------------------------------------- MLPerf Tiny
_FPGA_BOARDS = ("vcu128", "zcu106", "cora-z7")


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9.]+", "-", text.lower())).strip("-.")


def _freq_ghz(text: str) -> float | None:
    m = re.match(r"\s*([\d.]+)\s*(ghz|mhz|m)\b", text.lower().replace("ghz", " ghz").replace("mhz", " mhz"))
    if not m:
        return None
    v = float(m.group(1))
    return v if m.group(2) == "ghz" else v / 1000.0


def _mlperf_runtime(framework: str) -> str:
    f = framework.lower()
    if "tflite-micro" in f or "tflite micro" in f:
        return "tflite-micro"
    if "tvm" in f:
        return "tvm"
    return "vendor" if f.strip() else "unknown"


def _mlperf_kind(system: str, processor: str, accelerator: str, ghz: float | None) -> str:
    s = system.lower()
    if any(board in s for board in _FPGA_BOARDS) or accelerator.lower().startswith("xc"):  # Xilinx parts
        return "fpga"
    if accelerator or "syntiant" in s:
        return "npu"
    if ghz is not None and ghz >= 0.6 and "cortex-m" not in processor.lower():
        return "mobile-cpu"
    return "mcu"


def _mlperf_precision(system: str, quant: str) -> tuple[list[str], str]:
    s, q = system.lower(), quant.lower()
    if "float" in s:
        return ["fp32"], ""
    if "fp16" in q:
        return ["fp16"], ""
    if "int8" in s or "int8" in q or "ptq" in q or "quantization" in q:
        return ["int8"], ""
    return ["int8"], "Precision not stated; int8 assumed (MLPerf Tiny reference models are int8-quantized)."


def build_mlperf(b: Builder, data: Path) -> None:
    rows = _rows(data / "mlperf_tiny" / "mlperf_tiny_results.csv")
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        groups[(r["submitter"], r["system"], r["framework"])].append(r)
    # systems submitted with several frameworks get the framework in their id
    n_fw: dict[tuple[str, str], int] = defaultdict(int)
    for sub, system, _fw in groups:
        n_fw[(sub, system)] += 1
    for (sub, system, fw), rs in sorted(groups.items()):
        info = next((r for r in rs if r["processor"]), rs[0])
        ghz = _freq_ghz(info["processor_freq"])
        dev_id = f"mlperf-tiny/{_slug(sub)}-{_slug(system)}"
        if n_fw[(sub, system)] > 1:
            dev_id += "-" + (_slug(fw.split(",")[0])[:40] or "unspecified")
        precs, pnote = _mlperf_precision(system, info["quantization"])
        hw = ", ".join(x for x in (info["board"], info["processor"], info["accelerator"]) if x)
        versions = sorted({r["version"] for r in rs})
        notes = (f"MLPerf Tiny {'/'.join(versions)}, {sub}; {hw or 'hardware not described'}; "
                 f"framework: {fw or 'not stated'}. 4 fixed reference networks, not a NAS space. {pnote}").strip()
        b.device(dev_id, name=f"{system} ({sub})", kind=_mlperf_kind(system, info["processor"], info["accelerator"], ghz),
                 runtime=_mlperf_runtime(fw), precisions=precs, batch_size=1, notes=notes)
        if ghz is not None:
            b.devices[dev_id]["datasheet"]["freq_ghz"] = round(ghz, 4)
        b.source(dev_id, "mlperf_tiny", [f"{r['version']}:{r['system']}:{r['task']}" for r in rs])
        for r in rs:
            if _float(r["throughput_inf_per_s"]) is not None:
                b.counts[dev_id]["mlperf-tiny"] += 1
                b.add_metric(dev_id, "latency_ms")
            if _float(r["energy_uj_per_inf"]) is not None and r["task"] != "sww":
                b.counts[dev_id]["mlperf-tiny-energy"] += 1
                b.add_metric(dev_id, "energy_uj")
            elif _float(r["energy_uj_per_inf"]) is not None:  # sww: energy of a whole stream
                b.counts[dev_id]["mlperf-tiny-sww-energy"] += 1
                b.add_metric(dev_id, "stream_energy_uj")


# ---------------------------------------------------------------------------- main
def build(data: Path) -> dict[str, Any]:
    b = Builder()
    build_help(b, data)
    build_oneproxy(b, data)
    build_brp(b, data)
    build_anb(b, data)
    build_mmb(b, data)
    build_mlperf(b, data)
    devices = b.finish()
    per_source: dict[str, int] = defaultdict(int)
    for d in devices:
        for s in d["provenance"]["sources"]:
            per_source[s["name"]] += 1
    return {
        "schema": DB_SCHEMA,
        "generator": "scripts/build_device_db.py",
        "sources": {k: {x: v[x] for x in ("title", "repo", "commit", "licence")} for k, v in SOURCES.items()},
        "devices_per_source": dict(sorted(per_source.items())),
        "n_devices": len(devices),
        "devices": devices,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--out", type=Path, default=ROOT / "edgepass" / "data" / "devices" / "devices.json")
    args = ap.parse_args(argv)
    db = build(args.data)
    # one device per line: compact, deterministic, and reviewable in a diff
    lines = [json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for d in db.pop("devices")]
    head = json.dumps(db, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    text = head[:-1] + ',"devices":[\n' + ",\n".join(lines) + "\n]}\n"
    json.loads(text)  # sanity
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(lines)} devices, {len(text.encode()) / 1024:.0f} KiB)", file=sys.stderr)
    for k, v in db["devices_per_source"].items():
        print(f"  {k}: {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
