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
        except ValueError:
            raise InputError(f"--input-shape {item!r}: expected NAME:D0,D1,... (e.g. input:1,3,224,224)") from None
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
    from ..api import analyze
    from ..demo import demo_path
    from ..space import design_space

    path = demo_path()
    print(f"bundled model: {path.name} (DigitsNet trained on sklearn digits)", file=sys.stderr)
    g = analyze(str(path))
    print(g.table())
    print()
    print(design_space(g).table())
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="print the layer table of an ONNX model")
    _add_model_args(p)
    p.set_defaults(func=cmd_analyze)
    p = sub.add_parser("space", help="print the design space (channel groups, kernel and precision choices)")
    _add_model_args(p)
    p.add_argument("--min-kernel", type=int, default=3, choices=(1, 3),
                   help="smallest kernel offered when shrinking (1 lets 3x3 convs become 1x1)")
    p.set_defaults(func=cmd_space)
    p = sub.add_parser("demo", help="run the main job on the bundled demo model")
    p.set_defaults(func=cmd_demo)
