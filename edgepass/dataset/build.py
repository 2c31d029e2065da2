"""Build the shipped public training table from the collected public data (``shared/data``).

Called by ``scripts/build_training_set.py``; never at run time (``edgepass.dataset.load`` reads
only the shipped package data). Device ids come from the embedded device database: every
device lists, in ``provenance.sources[*].columns``, the data columns it was built from, so a
(source, column) pair maps to exactly one device id -- devices that two collections measured
(HW-NAS-Bench's pixel3/eyeriss/fpga/raspi4 in HELP and OneProxy; Eagle's i7 in OneProxy and
BRP-NAS) share one id and their duplicate rows are dropped (the first source in
:data:`SOURCE_ORDER` wins).

A row is kept when its value is a positive finite number and its architecture is one the zoo
can build (its spec parses with :func:`edgepass.zoo.parse`); the rest are counted per source in
the report (``unbuilt``), with the reason.
"""
from __future__ import annotations

import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import zoo
from ..devices import list_devices
from ..errors import InputError
from ..zoo import tv as zoo_tv
from .table import TrainingSet

#: Precedence when two sources measured the same (device, spec, precision, metric).
SOURCE_ORDER = ("help", "brp_nas", "oneproxy", "accel_nasbench", "mobile_ml_benchmark", "mlperf_tiny")

SOURCE_INFO = {
    "help": {"title": "HELP (NeurIPS 2021)", "repo": "https://github.com/HayeonLee/HELP",
             "commit": "45f70eb92d0d735970a33b608d1544ad3c52f285", "licence": "MIT",
             "note": "some columns measured by HW-NAS-Bench (MIT)"},
    "oneproxy": {"title": "OneProxy (SIGMETRICS 2022)", "repo": "https://github.com/Ren-Research/OneProxy",
                 "commit": "e3c9b2c65113e16f1208988287810b283674f4de", "licence": "MIT",
                 "note": "re-distributes nn-Meter (O-UDA-1.0 data), HW-NAS-Bench (MIT), Eagle/BRP-NAS (Apache-2.0)"},
    "brp_nas": {"title": "BRP-NAS / Eagle LatBench", "repo": "https://github.com/zheng-ningxin/brp-nas",
                "commit": "53313d8dc7f3ef53fe8551824fdf9f55bd353677", "licence": "Apache-2.0", "note": ""},
    "accel_nasbench": {"title": "Accel-NASBench", "repo": "https://github.com/afzalxo/Accel-NASBench",
                       "commit": "42603572d530310e6bac7191d00cf45625a6b197", "licence": "Apache-2.0", "note": ""},
    "mobile_ml_benchmark": {"title": "mobile-ml-benchmark (EdgeSys 2024)", "repo": "https://github.com/qed-usc/mobile-ml-benchmark",
                            "commit": "40ba833a9ca560a3035a76a5c3da504082dec001", "licence": "MIT",
                            "note": "values in microseconds in the source, converted to ms"},
    "mlperf_tiny": {"title": "MLPerf Tiny v0.7-v1.3", "repo": "https://github.com/mlcommons/tiny_results_v1.3",
                    "commit": "see shared/data/mlperf_tiny/PROVENANCE.md", "licence": "Apache-2.0", "note": ""},
}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _value(v: str | None) -> float | None:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and x > 0 else None


class _Collector:
    def __init__(self) -> None:
        self.keys: set[tuple] = set()
        self.rows: list[tuple[str, str, str, str, float, str]] = []
        self.stats: dict[str, dict[str, Any]] = defaultdict(lambda: {
            "rows": 0, "kept": 0, "duplicates": 0, "unbuilt": 0, "unbuilt_reasons": defaultdict(int)})
        self._parsed: dict[str, str | None] = {}

    def canonical(self, spec: str) -> str | None:
        if spec not in self._parsed:
            try:
                self._parsed[spec] = zoo.parse(spec)["canonical"]
            except InputError:
                self._parsed[spec] = None
        return self._parsed[spec]

    def unbuilt(self, source: str, n: int, reason: str) -> None:
        st = self.stats[source]
        st["rows"] += n
        st["unbuilt"] += n
        st["unbuilt_reasons"][reason] += n

    def add(self, source: str, device: str, spec: str | None, precision: str, metric: str, value: float,
            reason: str = "spec does not parse") -> None:
        st = self.stats[source]
        st["rows"] += 1
        canon = self.canonical(spec) if spec else None
        if canon is None:
            st["unbuilt"] += 1
            st["unbuilt_reasons"][reason] += 1
            return
        key = (device, canon, precision, metric)
        if key in self.keys:
            st["duplicates"] += 1
            return
        self.keys.add(key)
        st["kept"] += 1
        self.rows.append((device, canon, precision, metric, value, source))


def _column_map() -> dict[tuple[str, str], Any]:
    """(source, column as listed in the device database) -> Device."""
    out = {}
    for dev in list_devices():
        for s in dev.provenance.get("sources", []):
            for col in s.get("columns", []):
                out[(s["name"], col)] = dev
    return out


def _precision(dev) -> str:
    return dev.precisions[0] if len(dev.precisions) == 1 else "fp32"


def build_public(data: Path, *, limit: int | None = None, progress: bool = True) -> tuple[TrainingSet, dict]:
    """Read every public latency table under ``data`` and return (table, report).

    ``limit`` keeps only the first ``limit`` rows of each CSV (a small slice, for tests).
    """
    from tqdm import tqdm

    data = Path(data)
    if not (data / "help" / "csv").is_dir():
        raise InputError(f"{data} does not look like the shared data folder (no help/csv)")
    cmap = _column_map()
    c = _Collector()

    def cut(rows):
        return rows[:limit] if limit else rows

    steps = ["help", "brp_nas", "oneproxy", "accel_nasbench", "mobile_ml_benchmark", "mlperf_tiny"]
    bar = tqdm(steps, desc="training set", unit="source", file=sys.stderr, disable=not progress)
    for step in bar:
        bar.set_postfix_str(step)
        if step == "help":
            for fname, space in (("nasbench201_latency.csv", "nb201"), ("fbnet_latency.csv", "fbnet"),
                                 ("ofa_latency.csv", "ofa-mbv3")):
                rows = cut(_rows(data / "help" / "csv" / fname))
                cols = [(col, cmap[("help", f"{space}:{col}")]) for col in rows[0] if ("help", f"{space}:{col}") in cmap]
                for r in rows:
                    spec = zoo.spec_from_row(r)
                    for col, dev in cols:
                        v = _value(r[col])
                        if v is not None:
                            c.add("help", dev.id, spec, _precision(dev), "latency_ms", v)
        elif step == "brp_nas":
            rows = cut(_rows(data / "brp_nas_latbench" / "desktop-cpu-core-i7-7820x-fp32.csv"))
            dev = cmap[("brp_nas", "desktop-cpu-core-i7-7820x-fp32")]
            for r in rows:
                v = _value(r["latency_ms"])
                if v is not None:
                    c.add("brp_nas", dev.id, zoo.spec_from_row(r), _precision(dev), "latency_ms", v)
        elif step == "oneproxy":
            rows = cut(_rows(data / "oneproxy" / "csv" / "oneproxy_nb201_18devices.csv"))
            cols = [(col, cmap[("oneproxy", col)]) for col in rows[0] if ("oneproxy", col) in cmap]
            for r in rows:
                spec = zoo.spec_from_row({"arch_str": r["arch_str"]})
                for col, dev in cols:
                    v = _value(r[col])
                    if v is not None:
                        c.add("oneproxy", dev.id, spec, _precision(dev), "latency_ms", v)
        elif step == "accel_nasbench":
            rows = cut(_rows(data / "accel_nasbench" / "accel_nasbench.csv"))
            cols = [(col, cmap[("accel_nasbench", col)]) for col in rows[0] if ("accel_nasbench", col) in cmap]
            for r in rows:
                spec = zoo.spec_from_row(r)
                for col, dev in cols:
                    v = _value(r[col])
                    if v is not None:
                        metric = "latency_ms" if col.startswith("latency") else "throughput_ips"
                        c.add("accel_nasbench", dev.id, spec, _precision(dev), metric, v)
        elif step == "mobile_ml_benchmark":
            folder = data / "mobile_ml_benchmark"
            for fname in ("tflite_cnn_e2e.csv", "torch_cnn_e2e.csv", "tflite_nas_e2e.csv", "torch_nas_e2e.csv",
                          "tflite_transformer_e2e.csv", "torch_transformer_e2e.csv"):
                rows = cut(_rows(folder / fname))
                cols = [(col, cmap[("mobile_ml_benchmark", f"{fname}:{col}")]) for col in rows[0]
                        if ("mobile_ml_benchmark", f"{fname}:{col}") in cmap]
                for r in rows:
                    name = r["model"]
                    if "_nas_" in fname:
                        spec, reason = None, "synthetic NAS CNN (no architecture encoding in the data)"
                    elif "transformer" in fname:
                        spec, reason = None, "vision transformer (not in the zoo)"
                    elif name in zoo_tv.MMB_TO_TV:
                        spec, reason = f"tv:{name}", ""
                    elif name in zoo_tv.MMB_APPROX:
                        spec, reason = None, "torchvision model only approximates the pytorchcv one (MACs/params off > 2 %)"
                    else:
                        spec, reason = None, "no torchvision equivalent"
                    for col, dev in cols:
                        v = _value(r[col])
                        if v is not None:
                            c.add("mobile_ml_benchmark", dev.id, spec, _precision(dev), "latency_ms", v / 1000.0, reason)
        elif step == "mlperf_tiny":
            rows = cut(_rows(data / "mlperf_tiny" / "mlperf_tiny_results.csv"))
            n = sum(1 for r in rows for k in ("energy_uj_per_inf", "latency_ms") if _value(r.get(k)) is not None)
            c.unbuilt("mlperf_tiny", n, "MLPerf Tiny reference nets (ResNet-8, DS-CNN, MobileNetV1-0.25, FC-AE) are not in the zoo")
    bar.close()

    report = {"sources": {}, "total_rows": 0, "kept": len(c.rows)}
    for src in SOURCE_ORDER:
        st = c.stats.get(src)
        if st is None:
            continue
        measured = st["rows"] - st["duplicates"]
        report["sources"][src] = {
            "rows": st["rows"], "kept": st["kept"], "duplicates": st["duplicates"], "unbuilt": st["unbuilt"],
            "unbuilt_share": round(st["unbuilt"] / measured, 6) if measured else 0.0,
            "unbuilt_reasons": dict(st["unbuilt_reasons"]),
        }
        report["total_rows"] += st["rows"]
    return TrainingSet.from_rows(c.rows), report


def print_report(report: dict, file=None) -> None:
    """The per-source table of kept / duplicate / unbuilt rows."""
    file = file or sys.stdout
    print(f"{'source':<22}{'rows':>9}{'kept':>9}{'dup':>8}{'unbuilt':>9}{'unbuilt %':>11}", file=file)
    for src, st in report["sources"].items():
        print(f"{src:<22}{st['rows']:>9}{st['kept']:>9}{st['duplicates']:>8}{st['unbuilt']:>9}"
              f"{100 * st['unbuilt_share']:>10.1f}%", file=file)
        for reason, n in st["unbuilt_reasons"].items():
            print(f"    {n:>7} not built: {reason}", file=file)
    print(f"total kept {report['kept']} of {report['total_rows']} rows", file=file)
