"""``edgepass demo``: compile the bundled digits model for this machine and print the report."""
from __future__ import annotations

import sys

import numpy as np

from ..api import analyze
from ..compile import compile_with_report
from ..devices.measure import MIN_SECONDS, measure
from ..optimizers.methods import METHODS
from ..predict import predict


def run(args) -> int:
    """Compile the bundled digits CNN for this machine's CPU at 70 % of its measured latency (with
    ``calibrate_latency``: the tiny model's int8 speed-up is not what the shared predictor expects;
    another device: 70 % of its predicted latency) and print the report with the accuracy measured
    before and after on held-out digits."""
    # the demo network (torch) and the model runner (onnxruntime) load only when the verb runs
    from ..demo import DEMO_DATA, demo_path
    from ..frontends.run import run_model

    path, data_path = str(demo_path()), str(demo_path(DEMO_DATA))
    data = np.load(data_path)
    device = args.device
    print(f"bundled model: digits_cnn.onnx (DigitsNet trained on sklearn digits); device {device}", file=sys.stderr)
    print(analyze(path).table())
    here = device.startswith("local/cpu-ort-")
    if here:   # this machine: the budget is a share of the *measured* latency, and compile measures too
        threads = 2 if device.endswith("-2t") else 1
        budget = args.ratio * measure(path, threads=threads, runs=20, min_seconds=MIN_SECONDS).median_ms
    else:
        budget = args.ratio * predict(path, device).latency_ms
    out, report, feasible = compile_with_report(path, device, latency_ms=budget, calibration_data=data_path,
                                                method=args.method, calibrate_latency=here)
    print()
    print(report.table())

    def accuracy(model):
        return 100.0 * float((run_model(model, [data["x_test"]])[0].argmax(1) == data["y_test"]).mean())

    print(f"\nheld-out accuracy (measured, {len(data['y_test'])} digits): {accuracy(path):.1f} % -> {accuracy(out):.1f} %")
    return 0 if feasible else 3


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="compile the bundled demo model for this machine and print the report")
    p.add_argument("--device", default="local/cpu-ort-1t")
    p.add_argument("--ratio", type=float, default=0.7,
                   help="latency budget as a share of the original's (measured here for local/cpu-ort-*, else predicted)")
    p.add_argument("--method", default="search", choices=METHODS)
    p.set_defaults(func=run)
