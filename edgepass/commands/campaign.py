"""``edgepass campaign PLAN.json``: measure a plan of models x devices into a training-set CSV
(:func:`edgepass.campaign.run_campaign`)."""
from __future__ import annotations

import contextlib
import json
import sys

from ..errors import InputError
from ..executors import EXECUTORS
from . import argtypes


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("campaign", help="measure a plan of models x devices into a training-set CSV")
    p.add_argument("plan", help="plan JSON: devices, models (zoo specs, ONNX files, random designs)")
    p.add_argument("--executor", default="inprocess", choices=EXECUTORS,
                   help="where measurements run (ray: each on the host advertising its device)")
    p.add_argument("--workers", type=argtypes.workers, help="worker processes (process pool / local Ray)")
    p.add_argument("--ray-address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--out", help="dataset CSV to append to (default: campaign.csv next to the plan)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    # measuring loads onnxruntime, torch and the zoo: only when the verb runs (`edgepass --help` stays fast)
    from ..campaign import run_campaign

    if args.ray_address and args.executor != "ray":
        raise InputError("--ray-address needs --executor ray")
    # stdout carries only the summary: anything a library prints while the campaign runs (Ray's
    # raylet notices about dead workers, onnxruntime) goes to stderr with the progress bar
    with contextlib.redirect_stdout(sys.stderr):
        summary = run_campaign(args.plan, args.out, executor=args.executor, workers=args.workers,
                               ray_address=args.ray_address, progress=True)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['out']}: {summary['measured']} measured, {summary['skipped']} already there, "
          f"{summary['failed']} failed ({summary['retried']} after a lost worker), {summary['wall_s']:.1f} s")
    for f in summary["failures"][:10]:
        print(f"failed: {f['device']} {f['model']}: {f['error']}", file=sys.stderr)
    if summary["failed"]:
        print(f"failures: {summary['errors']}", file=sys.stderr)
    return 0
