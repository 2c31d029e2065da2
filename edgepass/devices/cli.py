"""CLI verbs ``edgepass devices [show ID]``, ``edgepass measure MODEL.onnx`` and ``edgepass profile``.

Results go to stdout (a table for people, ``--json`` for scripts); errors are raised as
:class:`~edgepass.errors.DeviceError` / :class:`~edgepass.errors.InputError` and printed by the
dispatcher on one line.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..commands import argtypes
from .database import devices_table, get_device, list_devices
from .measure import OPTIMIZATION_LEVELS  # numpy only; onnxruntime is imported when measuring
from .schema import KINDS


def add_parser(subparsers: Any) -> None:
    """Register ``devices``, ``measure`` and ``profile`` (called by :mod:`edgepass.cli`)."""
    p = subparsers.add_parser("devices", help="list the embedded device database, or show one device",
                              description="List known devices (id, kind, runtime, #measurements, precisions).")
    p.add_argument("--json", action="store_true", help="print a JSON list of dicts")
    p.add_argument("--kind", choices=KINDS, help="only devices of this kind")
    p.add_argument("--grep", metavar="TEXT", help="only devices whose id or name contains TEXT")
    p.set_defaults(func=_cmd_list)
    sub = p.add_subparsers(dest="devices_command", metavar="show")
    s = sub.add_parser("show", help="show one device (id, alias or path to a device .json file)")
    s.add_argument("device", metavar="ID")
    s.add_argument("--json", action="store_true", help="print the device file (JSON)")
    s.set_defaults(func=_cmd_show)

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
    m.set_defaults(func=_cmd_measure)

    pr = subparsers.add_parser("profile", help="profile this machine with a reference suite and write a device file",
                               description="Run the edgepass-ref/1 reference suite (operator micro-benchmarks and "
                                           "small networks, fp32 and int8) with onnxruntime on this machine and "
                                           "write a device JSON file whose signature the predictors use.")
    pr.add_argument("-o", "--output", required=True, metavar="DEVICE.json", help="device file to write")
    pr.add_argument("--threads", type=argtypes.threads, default=1, help="intra-op threads (default 1)")
    pr.add_argument("--name", help="display name (default: the CPU model)")
    pr.add_argument("--id", help="device id (default local/<name or hostname>-ort-<threads>t)")
    pr.add_argument("--kind", choices=KINDS, default="cpu", help="device kind (default cpu)")
    pr.add_argument("--quick", action="store_true", help="reduced suite, fewer runs (seconds; noisier)")
    pr.set_defaults(func=_cmd_profile)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def _cmd_list(args: argparse.Namespace) -> int:
    devices = list_devices()
    if args.kind:
        devices = [d for d in devices if d.kind == args.kind]
    if args.grep:
        text = args.grep.lower()
        devices = [d for d in devices if text in d.id or text in d.name.lower()]
    rows = devices_table(devices)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    body = [[r["id"], r["kind"], r["runtime"], str(r["n_measurements"]), ",".join(r["precisions"])] for r in rows]
    print(_table(body, ["id", "kind", "runtime", "#measurements", "precisions"]))
    print(f"{len(rows)} devices", file=sys.stderr)
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    dev = get_device(args.device)
    if args.json:
        print(dev.to_json())
        return 0
    prov = dev.provenance
    lines = [
        ("id", dev.id), ("name", dev.name), ("kind", dev.kind), ("runtime", dev.runtime),
        ("threads", str(dev.threads or "not stated")), ("batch_size", str(dev.batch_size or "not stated")),
        ("precisions", ", ".join(dev.precisions)),
        ("datasheet", ", ".join(f"{k}={v:g}" for k, v in dev.datasheet.items()) or "-"),
        ("signature", f"{len(dev.signature)} reference timings" if dev.signature else "-"),
        ("measurements", ", ".join(f"{k}: {v}" for k, v in dev.measurements.items()) or "-"),
        ("n_measurements", str(dev.n_measurements)), ("metrics", ", ".join(dev.metrics) or "-"),
        ("aliases", ", ".join(dev.aliases) or "-"),
        ("provenance", f"{prov.get('kind')}; {prov.get('source')}; licence {prov.get('licence')}"),
        ("notes", dev.notes or "-"),
    ]
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in lines))
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    from .measure import measure  # onnxruntime only when measuring

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
        print(_table(body, ["node", "op", "ms/run", "calls/run"]))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from .profile import cmd_profile  # onnx/onnxruntime/torch only when profiling

    return cmd_profile(args)
