"""``edgepass measure MODEL.onnx``: median/IQR latency of an ONNX model on this CPU (onnxruntime)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..devices.measure import OPTIMIZATION_LEVELS, measure  # numpy only; onnxruntime is imported when measuring
from . import argtypes
from .devices import text_table


def add_parser(subparsers: Any) -> None:
    m = subparsers.add_parser("measure", help="time an ONNX model on this CPU with onnxruntime",
                              description="Median/IQR latency of an ONNX model (onnxruntime, CPU, sequential).")
    m.add_argument("model", metavar="MODEL.onnx")
    m.add_argument("--threads", type=argtypes.threads, default=1, help="intra-op threads (default 1)")
    m.add_argument("--runs", type=argtypes.count, default=20, help="timed runs (default 20)")
    m.add_argument("--warmup", type=argtypes.count, default=5, help="untimed warm-up runs (default 5)")
    m.add_argument("--min-seconds", type=float, default=0.0,
                   help="keep timing until the timed runs add up to this long (small models: 0.1-0.5)")
    m.add_argument("--seed", type=argtypes.seed, default=0, help="seed of the random inputs")
    m.add_argument("--per-node", action="store_true", help="also profile per-node times")
    m.add_argument("--optimization", choices=OPTIMIZATION_LEVELS, default="all",
                   help="onnxruntime graph optimization level (default all; 'basic' keeps node names)")
    m.add_argument("--json", action="store_true", help="print the measurement as JSON")
    m.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    res = measure(args.model, threads=args.threads, runs=args.runs, warmup=args.warmup,
                  profile=args.per_node, seed=args.seed, optimization=args.optimization,
                  min_seconds=args.min_seconds)
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
        return 0
    print(f"{res.model}: median {res.median_ms:.3f} ms, IQR {res.iqr_ms:.3f} ms "
          f"(p25 {res.p25_ms:.3f}, p75 {res.p75_ms:.3f}; {res.runs} runs, {res.threads} thread(s), "
          f"onnxruntime {res.onnxruntime} CPU, optimization {res.optimization})")
    if res.per_node:
        body = [[t.name, t.op_type, f"{t.ms:.4f}", f"{t.calls_per_run:g}"] for t in res.per_node]
        print(text_table(body, ["node", "op", "ms/run", "calls/run"]))
    return 0
