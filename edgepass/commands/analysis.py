"""``edgepass analyze``, ``edgepass space`` and ``edgepass demo``."""
from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError


def parse_input_shapes(items) -> dict:
    """``["x:1,3,224,224", ...]`` -> ``{"x": (1, 3, 224, 224)}``."""
    shapes = {}
    for item in items or ():
        name, sep, dims = item.rpartition(":")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.split(","))
            if not all(d > 0 for d in shapes[name]):
                raise ValueError
        except ValueError:
            raise InputError(f"--input-shape {item!r}: expected NAME:D0,D1,... with positive dimensions "
                             f"(e.g. input:1,3,224,224)") from None
    return shapes


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX model to read")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="fix a dynamic input shape (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def cmd_analyze(args) -> int:
    from ..api import analyze

    g = analyze(args.model, input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        _print_json(g.summary())
    else:
        print(g.table())
    return 0


def cmd_space(args) -> int:
    from ..space import design_space

    sp = design_space(args.model, input_shapes=parse_input_shapes(args.input_shape),
                      min_kernel=args.min_kernel)
    if args.json:
        _print_json(sp.to_dict())
    else:
        print(sp.table())
    return 0


def cmd_demo(args) -> int:
    """Compile the bundled digits CNN for this machine's CPU at 70 % of its measured latency (with
    ``calibrate_latency``: the tiny model's int8 speed-up is not what the shared predictor expects;
    another device: 70 % of its predicted latency) and print the report with the accuracy measured
    before and after on held-out digits."""
    import numpy as np

    from ..api import analyze
    from ..compile import compile_with_report
    from ..demo import DEMO_DATA, demo_path
    from ..predict import predict
    from ..rewrite import run_model

    path, data_path = str(demo_path()), str(demo_path(DEMO_DATA))
    data = np.load(data_path)
    device = args.device
    print(f"bundled model: digits_cnn.onnx (DigitsNet trained on sklearn digits); device {device}", file=sys.stderr)
    print(analyze(path).table())
    here = device.startswith("local/cpu-ort-")
    if here:   # this machine: the budget is a share of the *measured* latency, and compile measures too
        from ..compile import MIN_SECONDS
        from ..devices.measure import measure

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
    p = sub.add_parser("analyze", help="print the layer table of an ONNX model")
    _add_model_args(p)
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("space", help="print the design space (channel groups, kernel and precision choices)")
    _add_model_args(p)
    p.add_argument("--min-kernel", type=int, default=3, choices=(1, 3),
                   help="smallest kernel offered when shrinking (1 lets 3x3 convs become 1x1)")
    p.set_defaults(func=cmd_space)
    p = sub.add_parser("demo", help="compile the bundled demo model for this machine and print the report")
    p.add_argument("--device", default="local/cpu-ort-1t")
    p.add_argument("--ratio", type=float, default=0.7,
                   help="latency budget as a share of the original's (measured here for local/cpu-ort-*, else predicted)")
    p.add_argument("--method", default="search", choices=("amortized", "search", "exhaustive"))
    p.set_defaults(func=cmd_demo)
