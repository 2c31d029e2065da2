"""``edgepass compile IN.onnx OUT.onnx --device ID|FILE [...]`` and ``--check``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import InputError
from .analysis import parse_input_shapes


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="choose widths/kernels/precisions for a device budget and rewrite the model")
    p.add_argument("model", metavar="IN.onnx")
    p.add_argument("output", metavar="OUT.onnx")
    p.add_argument("--device", required=True, help="device id (edgepass devices) or a device JSON file")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--energy-mj", type=float)
    p.add_argument("--max-accuracy-drop", type=float)
    p.add_argument("--calibration", metavar="DATA.npz|DIR", help="calibration inputs keyed by input name")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...")
    p.add_argument("--method", choices=("amortized", "search", "exhaustive"), default="amortized")
    p.add_argument("--precisions", help="comma-separated subset of fp32,fp16,int8")
    p.add_argument("--ignore", action="append", default=[], metavar="LAYER", help="keep a layer untouched")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", metavar="R.json", help="write the report as JSON")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--check", action="store_true", help="only verify an existing OUT against its report")
    p.set_defaults(func=cmd_compile)


def cmd_compile(args) -> int:
    from ..compile import compile_with_report, write_atomic

    src, dst = Path(args.model), Path(args.output)
    if args.check:
        return _check(src, dst, args)
    if src.exists() and dst.exists() and os.path.samefile(src, dst):
        raise InputError("output path is the input path: refusing to overwrite the input")
    if not dst.parent.exists():
        raise InputError(f"{dst}: directory {dst.parent} does not exist")
    if args.calibration and not Path(args.calibration).exists():
        raise InputError(f"{args.calibration}: no such calibration file or directory")
    kwargs = dict(latency_ms=args.latency_ms, energy_mj=args.energy_mj, max_accuracy_drop=args.max_accuracy_drop,
                  calibration_data=args.calibration, method=args.method, ignore=args.ignore, seed=args.seed,
                  precisions=args.precisions.split(",") if args.precisions else None,
                  input_shapes=parse_input_shapes(args.input_shape))
    out, report, feasible = compile_with_report(str(src), args.device, **kwargs)
    write_atomic(dst, out.SerializeToString())
    if args.report:
        write_atomic(Path(args.report), report.to_json().encode())
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        print(report.table())
    if not feasible:
        from ..errors import EXIT_INFEASIBLE

        print(f"edgepass: error: no design meets the budget on {report.device}; wrote the closest one",
              file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def _check(src: Path, dst: Path, args) -> int:
    """Verify an existing output against the report stored in it."""
    from ..compile import report_of
    from ..frontends.onnx import load_model
    from ..rewrite import verify
    from ..space import Design

    out = load_model(dst)
    report = report_of(out)
    if report is None:
        raise InputError(f"{dst}: no edgepass report in the model's metadata (not compiled by edgepass?)")
    v = verify(str(src), out, Design.from_dict(report["design"]))
    print(json.dumps({"ok": v.ok, "problems": v.problems}, indent=2) if args.json else
          ("ok: the output matches its report" if v.ok else "FAILED: " + "; ".join(v.problems)))
    return 0 if v.ok else 4
