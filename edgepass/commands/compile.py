"""``edgepass compile IN.onnx OUT.onnx --device ID|FILE [...]``, fleets (``--device`` repeated or
``--devices FLEET.txt``, into OUTDIR) and ``--check``."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from ..compile import CompileOptions, compile_with_report, report_of
from ..errors import EXIT_INFEASIBLE, EdgepassError, InputError
from ..executors import EXECUTORS
from ..fileio import check_files, check_input, is_device_file, write_atomic
from ..optimizers.methods import METHODS
from ..space import Design
from . import argtypes
from .analyze import parse_input_shapes


def add_parser(sub) -> None:
    p = sub.add_parser("compile", help="choose widths/kernels/precisions for a device budget and rewrite the model",
                       description="Compile IN for one device into OUT.onnx, or for a fleet (--device given more "
                                   "than once, or --devices FLEET.txt) into the directory OUT.")
    p.add_argument("model", metavar="IN.onnx")
    p.add_argument("output", metavar="OUT.onnx|OUTDIR")
    p.add_argument("--device", action="append", default=[], metavar="ID|FILE",
                   help="device id (edgepass devices) or a device JSON file; repeat for a fleet")
    p.add_argument("--devices", metavar="FLEET.txt", help="a fleet: one device id or device file per line, # comments")
    p.add_argument("--latency-ms", type=float)
    p.add_argument("--latency-fraction", type=float, metavar="F",
                   help="latency budget as a fraction of each device's predicted original latency")
    p.add_argument("--energy-mj", type=float)
    p.add_argument("--max-accuracy-drop", type=float)
    p.add_argument("--calibration", metavar="DATA.npz|DIR", help="calibration inputs keyed by input name")
    p.add_argument("--input-shape", action="append", metavar="NAME:D0,D1,...")
    p.add_argument("--method", choices=METHODS, default="amortized")
    p.add_argument("--precisions", help="comma-separated subset of fp32,fp16,int8")
    p.add_argument("--ignore", action="append", default=[], metavar="LAYER", help="keep a layer untouched")
    p.add_argument("--seed", type=argtypes.seed, default=0)
    p.add_argument("--evaluate-top", type=argtypes.count, metavar="K",
                   help="measure K good designs under the budget on the calibration data and keep the best "
                        "(default 4 with --calibration for models up to 2 GMACs, else 0)")
    p.add_argument("--calibrate-latency", action="store_true",
                   help="local/cpu-ort-* devices: measure 4 designs of the model here first and calibrate the "
                        "latency predictor's fp32/int8 scales on them (the result then depends on timings)")
    p.add_argument("--reconstruct", action=argparse.BooleanOptionalAction, default=None,
                   help="with --calibration, refit rewritten layers to the original's outputs by least squares "
                        "(default: for small models only)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="trained optimizers and accuracy predictors (default $EDGEPASS_CACHE or ~/.cache/edgepass)")
    p.add_argument("--report", metavar="R.json", help="write the report as JSON")
    p.add_argument("--plot", metavar="R.png", help="plot the candidate designs' predicted latency vs accuracy")
    p.add_argument("--json", action="store_true", help="print the report (fleet: the summary) as JSON")
    p.add_argument("--executor", choices=EXECUTORS, default="inprocess", help="where a fleet's devices are compiled")
    p.add_argument("--workers", type=argtypes.workers, metavar="N", help="worker processes / Ray CPUs for a fleet")
    p.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--check", action="store_true", help="only verify an existing OUT against its report")
    p.set_defaults(func=run)


def options_from_args(args):
    """The :class:`~edgepass.compile_options.CompileOptions` of a command line (the Python API's options type)."""
    if args.calibration and not Path(args.calibration).exists():
        raise InputError(f"{args.calibration}: no such calibration file or directory")
    return CompileOptions(latency_ms=args.latency_ms, latency_fraction=args.latency_fraction,
                          energy_mj=args.energy_mj, max_accuracy_drop=args.max_accuracy_drop,
                          calibration_data=args.calibration, method=args.method, ignore=tuple(args.ignore),
                          seed=args.seed, precisions=tuple(args.precisions.split(",")) if args.precisions else None,
                          input_shapes=parse_input_shapes(args.input_shape), cache_dir=args.cache_dir,
                          plot=args.plot, evaluate_top=args.evaluate_top,
                          calibrate_latency=args.calibrate_latency, reconstruct=args.reconstruct)


def input_files(args) -> dict:
    """What a compile reads, by label (for :func:`~edgepass.fileio.check_files`)."""
    return {"model": args.model, "--calibration": args.calibration,
            "--device file": [d for d in args.device if is_device_file(d)], "--devices list": args.devices}


def run(args) -> int:
    src, dst = Path(args.model), Path(args.output)
    if args.check:
        if len(args.device) > 1 or args.devices:
            raise InputError("--check verifies one output file, not a fleet")
        return _check(src, dst, args)
    if not args.device and not args.devices:
        raise InputError("compile: give --device ID|FILE (or --devices FLEET.txt)")
    if args.devices or len(args.device) > 1:
        return _fleet(src, dst, args)
    check_files(inputs=input_files(args), outputs={"output": dst, "--report": args.report, "--plot": args.plot})
    opts = options_from_args(args)
    out, report, feasible = compile_with_report(str(src), args.device[0], opts)
    write_atomic(dst, out.SerializeToString())
    if args.report:
        write_atomic(Path(args.report), report.to_json().encode())
    if args.json:
        sys.stdout.write(report.to_json() + "\n")
    else:
        print(report.table())
    if not feasible:
        print(f"edgepass: error: no design meets the budget on {report.device}; wrote the closest one",
              file=sys.stderr)
        return EXIT_INFEASIBLE
    return 0


def _fleet(src: Path, outdir: Path, args) -> int:
    """``OUTDIR`` gets one model + report per device and summary.json; the exit code is the fleet's."""
    # a fleet loads the executors and every stage up front: only when one is compiled
    from ..fleet import compile_fleet, fleet_table, read_fleet_file

    if args.report or args.plot:
        raise InputError("--report and --plot apply to one device; a fleet writes a report per device and "
                         "summary.json into OUTDIR")
    devices = list(args.device) + (read_fleet_file(args.devices) if args.devices else [])
    # stdout carries only results: what libraries print meanwhile (Ray's worker notices) goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        summary = compile_fleet(str(src), devices, outdir, options_from_args(args), executor=args.executor,
                                workers=args.workers, ray_address=args.ray_address,
                                protect={"--devices list": args.devices})
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True, default=float) + "\n")
    else:
        print(fleet_table(summary))
    failed = [r for r in summary["devices"] if r["error"]]
    if failed:
        print(f"edgepass: error: {len(failed)} of {len(summary['devices'])} devices failed "
              f"(first: {failed[0]['device']}: {failed[0]['error']})", file=sys.stderr)
    elif summary["exit_code"]:
        print("edgepass: error: some devices' budgets cannot be met; wrote their closest designs", file=sys.stderr)
    return summary["exit_code"]


def _stored_design(out, dst: Path):
    """The design of the report a compile embedded in ``out``; a missing or edited report -> InputError."""
    try:
        report = report_of(out)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{dst}: its embedded report was edited or is damaged ({type(exc).__name__})") from None
    if report is None:
        raise InputError(f"{dst}: no edgepass report in the model's metadata (not compiled by edgepass?)")
    try:
        return Design.from_dict(report["design"])
    except InputError as exc:
        raise InputError(f"{dst}: its embedded report was edited or is damaged ({exc})") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise InputError(f"{dst}: its embedded report was edited or is damaged ({type(exc).__name__})") from None


def _check(src: Path, dst: Path, args) -> int:
    """Verify an existing output against the report stored in it."""
    # verification runs both models (onnx, onnxruntime, the passes' IR): loaded only for --check
    from ..frontends.onnx import load_model
    from ..rewrite import verify

    check_input(src, "model")
    check_input(dst, "output to check")
    out = load_model(dst)
    design = _stored_design(out, dst)
    try:
        v = verify(str(src), out, design)
    except EdgepassError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # a report naming other layers
        raise InputError(f"{dst}: its embedded report does not describe this model ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    print(json.dumps({"ok": v.ok, "problems": v.problems}, indent=2) if args.json else
          ("ok: the output matches its report" if v.ok else "FAILED: " + "; ".join(v.problems)))
    return 0 if v.ok else 4
