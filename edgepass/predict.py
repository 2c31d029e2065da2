"""``edgepass.predict(model, device)`` and the ``predict`` / ``device fit`` CLI verbs.

``model``: an ``nn.Module``, an ONNX ``ModelProto`` or path, a zoo spec (``nb201:...``,
``tv:resnet18``) or an IR :class:`~edgepass.ir.Graph`; ``design`` (a Design or its JSON) predicts
the design's graph without rewriting. ``device``: an id, a device-file path or a Device (a file
written by ``edgepass device fit`` carries its few-shot fit).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .errors import EdgepassError, InputError


def _graph(model, example_inputs=None):
    from .ir import Graph

    if isinstance(model, Graph):
        return model
    if isinstance(model, str) and ":" in model and not Path(model).exists() and not model.endswith(".onnx"):
        from . import zoo
        from .api import analyze

        try:
            zm = zoo.build(model)
        except EdgepassError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot build zoo model {model!r}: {exc}") from None
        return analyze(zm.module, zm.example_inputs)
    if isinstance(model, (str, Path)) and not Path(model).is_file():
        raise InputError(f"model {str(model)!r} is neither a file nor a zoo spec (<space>:<arch>)")
    from .api import analyze

    try:
        return analyze(str(model) if isinstance(model, Path) else model, example_inputs)
    except EdgepassError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read model: {type(exc).__name__}: {str(exc)[:200]}") from None


def predict(model, device, *, example_inputs=None, design=None):
    """Predicted latency (ms), per-layer rows and, when the energy predictor is installed, energy."""
    from .devices import get_device
    from .predictors.latency import predict as predict_latency_estimate

    dev = get_device(device)
    graph = _graph(model, example_inputs)
    if design is not None:
        from .space import Design, build_space

        if isinstance(design, str):
            design = Design.from_json(design)
        elif isinstance(design, dict):
            design = Design.from_dict(design)
        graph = build_space(graph).design_graph(design)
    est = predict_latency_estimate(graph, dev)
    from .predictors import energy

    try:
        e = energy.estimate(graph, dev, latency_ms=est.latency_ms)
    except Exception as exc:  # noqa: BLE001 -- a device the energy model cannot price must not break latency
        est.notes.append(f"energy not estimated: {type(exc).__name__}: {str(exc)[:120]}")
        return est
    est.energy_mj, est.energy_calibrated = e.energy_mj, e.energy_calibrated
    per = {r.name: r.energy_mj for r in e.layers}
    for r in est.layers:
        r.energy_mj = per.get(r.name, r.energy_mj)
    est.notes += list(e.notes)
    return est


# ---------------------------------------------------------------------- CLI
def add_parser(subparsers) -> None:
    p = subparsers.add_parser("predict", help="predict latency (and energy) of a model on a device")
    p.add_argument("model", help="ONNX file or zoo spec (e.g. tv:resnet18, nb201:|...|)")
    p.add_argument("--device", required=True, help="device id or device .json file")
    p.add_argument("--design", help="design JSON file to predict instead of the model as is")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--top", type=int, default=0, help="only the N slowest layers (table)")
    p.set_defaults(func=_cmd_predict)
    d = subparsers.add_parser("device", help="device utilities: fit a device from a few measurements")
    dsub = d.add_subparsers(dest="device_command", metavar="SUBCOMMAND")
    dsub.required = True
    f = dsub.add_parser("fit", help="few-shot fit of the latency predictor from measured models")
    f.add_argument("measurements", help="CSV with columns model,latency_ms (model: zoo spec or ONNX path), "
                                        "or a campaign CSV (edgepass campaign)")
    f.add_argument("--from-device", help="the device whose rows of a campaign CSV to fit (when it has several)")
    f.add_argument("--name", required=True, help="device name")
    f.add_argument("--id", dest="device_id", help="device id (default user/<name>)")
    f.add_argument("--base", help="known device (id or file) whose datasheet/kind/runtime describe this one")
    f.add_argument("-o", "--output", required=True, help="device file to write")
    f.set_defaults(func=_cmd_fit)


def _cmd_predict(args) -> int:
    from .devices import get_device
    from .fileio import read_text

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


def _cmd_fit(args) -> int:
    from .predictors.latency import fit_device

    from .campaign import fit_pairs, is_campaign_csv
    from .fileio import check_files, read_text

    read_text(args.measurements, "measurements CSV")   # binary: one line, before the fit
    check_files(inputs={"measurements CSV": args.measurements, "--base": args.base}, outputs={"-o": args.output})
    measurements, precision = args.measurements, None
    if is_campaign_csv(args.measurements):  # rows of many devices, designs as graphs
        measurements, precision = fit_pairs(args.measurements, args.from_device)
    elif args.from_device:
        raise InputError("--from-device selects rows of a campaign CSV (columns device,spec,design,...)")
    dev = fit_device(measurements, name=args.name, base=args.base, device_id=args.device_id, precision=precision)
    dev.save(args.output)
    fit = dev.provenance["latency_fit"]
    from .predictors.latency import fit_quality, fit_source

    print(f"wrote {args.output}: {dev.id}, fitted on {fit['k']} models; predictor: {fit_source(fit)}; "
          f"{fit_quality(fit)}")
    return 0
