"""``edgepass profile -o DEVICE.json``: profile this machine with the reference suite into a device file."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..devices.schema import KINDS
from ..fileio import check_files
from . import argtypes


def add_parser(subparsers: Any) -> None:
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
    pr.set_defaults(func=run)


def run(args) -> int:
    # the suite builds zoo models (torch) and runs onnxruntime: loaded only when profiling
    from ..devices.profile import profile_device

    out = Path(args.output)
    check_files(outputs={"-o": out})   # before the minutes of profiling
    t0 = time.time()
    dev = profile_device(args.threads, name=args.name, device_id=args.id, quick=args.quick, kind=args.kind)
    dev.save(out)   # atomic
    print(f"{out}: device {dev.id} ({dev.kind}, onnxruntime, {dev.threads} thread(s)), "
          f"{len(dev.signature)} reference timings in {time.time() - t0:.1f} s")
    return 0
