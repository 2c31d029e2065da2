"""``edgepass predict MODEL --device ID|FILE``: predicted latency (and energy), per layer."""
from __future__ import annotations

import json
import sys

from ..devices import get_device
from ..fileio import read_text
from ..predict import predict


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict latency (and energy) of a model on a device")
    p.add_argument("model", help="ONNX file or zoo spec (e.g. tv:resnet18, nb201:|...|)")
    p.add_argument("--device", required=True, help="device id or device .json file")
    p.add_argument("--design", help="design JSON file to predict instead of the model as is")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--top", type=int, default=0, help="only the N slowest layers (table)")
    p.set_defaults(func=run)


def run(args) -> int:
    design = read_text(args.design, "design file") if args.design else None

    get_device(args.device)  # unknown device -> DeviceError before any model work
    est = predict(args.model, args.device, design=design)
    if args.json:
        print(json.dumps(est.to_dict(), indent=2))
        return 0
    rows = [r for r in est.layers if r.latency_ms > 0]
    if args.top:
        rows = sorted(rows, key=lambda r: -r.latency_ms)[: args.top]
    w = max([len(r.name) for r in rows] + [5])
    energy = est.energy_mj is not None
    print(f"{'layer'.ljust(w)}  {'op':<10} {'ms':>9} {'share':>6} {'MMACs':>9} prec" + ("  mJ" if energy else ""))
    print("-" * (w + 46))
    for r in rows:
        line = (f"{r.name.ljust(w)}  {r.kind:<10} {r.latency_ms:9.4f} {100 * r.latency_ms / est.latency_ms:5.1f}% "
                f"{r.macs / 1e6:9.2f} {r.precision}")
        if energy and r.energy_mj is not None:
            line += f"  {r.energy_mj:.4f}"
        print(line)
    print("-" * (w + 46))
    print(f"{est.device}: {est.latency_ms:.3f} ms" + (f", {est.energy_mj:.3f} mJ "
          f"({'calibrated' if est.energy_calibrated else 'modelled'})" if energy else ""))
    for n in est.notes:
        print(f"note: {n}", file=sys.stderr)
    return 0
