"""``edgepass space MODEL.onnx``: the design space of a model (channel groups, kernel and precision choices)."""
from __future__ import annotations

from ..space import design_space
from .analyze import add_model_args, parse_input_shapes, print_json


def run(args) -> int:
    sp = design_space(args.model, input_shapes=parse_input_shapes(args.input_shape),
                      min_kernel=args.min_kernel)
    if args.json:
        print_json(sp.to_dict())
    else:
        print(sp.table())
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("space", help="print the design space (channel groups, kernel and precision choices)")
    add_model_args(p)
    p.add_argument("--min-kernel", type=int, default=3, choices=(1, 3),
                   help="smallest kernel offered when shrinking (1 lets 3x3 convs become 1x1)")
    p.set_defaults(func=run)
