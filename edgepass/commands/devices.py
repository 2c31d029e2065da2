"""``edgepass devices [--kind K] [--grep TEXT]`` and ``edgepass devices show ID``: the device database."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..devices.database import devices_table, get_device, list_devices
from ..devices.schema import KINDS


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("devices", help="list the embedded device database, or show one device",
                              description="List known devices (id, kind, runtime, #measurements, precisions).")
    p.add_argument("--json", action="store_true", help="print a JSON list of dicts")
    p.add_argument("--kind", choices=KINDS, help="only devices of this kind")
    p.add_argument("--grep", metavar="TEXT", help="only devices whose id or name contains TEXT")
    p.set_defaults(func=run_list)
    sub = p.add_subparsers(dest="devices_command", metavar="show")
    s = sub.add_parser("show", help="show one device (id, alias or path to a device .json file)")
    s.add_argument("device", metavar="ID")
    s.add_argument("--json", action="store_true", help="print the device file (JSON)")
    s.set_defaults(func=run_show)


def text_table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns under a header (the devices and measure verbs' tables)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(fmt.format(*r).rstrip() for r in [header, *rows])


def run_list(args: argparse.Namespace) -> int:
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
    print(text_table(body, ["id", "kind", "runtime", "#measurements", "precisions"]))
    print(f"{len(rows)} devices", file=sys.stderr)
    return 0


def run_show(args: argparse.Namespace) -> int:
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
