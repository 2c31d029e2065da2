"""``edgepass analyze MODEL.onnx``: the layer table of a model (its IR), and the arguments every verb
that reads one ONNX model shares."""
from __future__ import annotations

import argparse
import json
import sys

from ..api import analyze
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


def add_model_args(p: argparse.ArgumentParser) -> None:
    """MODEL.onnx, --input-shape, --json: the arguments of the verbs that read one ONNX model."""
    p.add_argument("model", metavar="MODEL.onnx", help="ONNX model to read")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...",
                   help="fix a dynamic input shape (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def print_json(obj) -> None:
    """``obj`` as sorted, indented JSON on stdout."""
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def run(args) -> int:
    g = analyze(args.model, input_shapes=parse_input_shapes(args.input_shape))
    if args.json:
        print_json(g.summary())
    else:
        print(g.table())
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("analyze", help="print the layer table of an ONNX model")
    add_model_args(p)
    p.set_defaults(func=run)
