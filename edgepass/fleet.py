"""Fleets: one model compiled for many devices into a directory.

    edgepass.compile_fleet("model.onnx", ["help/pixel2", "my_board.json"], "out/", latency_fraction=0.6)

writes ``out/<device>.onnx`` + ``out/<device>.report.json`` per device and ``out/summary.json``.
What does not depend on the device is done once, in this process, and shipped to the tasks as the
executor's ``shared`` object: loading and analysing the model, and the accuracy predictor (one per
set of allowed precisions: a device without int8 gets a space without int8 knobs). The trained
amortized optimizer is cached under ``cache_dir`` by the first compile of a space and loaded by
the others. Tasks run on the chosen executor (``edgepass.executors``: in-process, a local process
pool or Ray) and hand back bytes; only this process writes files (atomically), so the tasks may run
on other machines. A device that fails (unknown id, bad device file, unsupported precision...)
fails its own row, never the fleet.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from .compile_options import CompileOptions
from .devices import get_device
from .errors import EXIT_INFEASIBLE, EdgepassError, InputError, UnsupportedModelError
from .executors import get_executor
from .export import export_onnx
from .fileio import check_files, check_input, is_device_file, is_regular_file, read_text, write_atomic
from .frontends.onnx import load_model
from .optimizers.api import model_optimizer
from .report import Report
from .stages import (allowed_precisions, check_data_arg, check_model_arg, compile_prepared, prepare, target,
                     with_usable_cache)
from .util import cache_dir as cache_root, example_inputs_for, is_torch_module

EXIT_TASK_FAILED = 1   # a task crashed with something that is not an edgepass error (a bug, a dead worker)


def device_filename(device_id: str) -> str:
    """A file-name-safe form of a device id: ``help/pixel2`` -> ``help__pixel2``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", device_id.replace("/", "__")).strip("._") or "device"


MAX_ENTRY_CHARS = 4096   # PATH_MAX: a longer line cannot name a device file


def read_fleet_file(path) -> list[str]:
    """Device ids / device-file paths, one per line; ``#`` starts a comment. Relative paths are
    taken relative to the fleet file's directory when a file of that name is there."""
    path = Path(path)
    text = read_text(path, "fleet file")
    entries = []
    for line in text.splitlines():
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        if len(entry) > MAX_ENTRY_CHARS:
            raise InputError(f"{path}: an entry of {len(entry)} characters is neither a device id nor a path")
        beside = path.parent / entry
        entries.append(str(beside) if not Path(entry).is_absolute() and is_regular_file(beside) else entry)
    if not entries:
        raise InputError(f"{path}: the fleet file lists no devices")
    return entries


def fleet_task(item, shared):
    """One device (module level, so that process pools and Ray can ship it)."""
    name, dev, precisions = item
    opts = shared["options"]
    _seed_cache(opts.cache_dir, shared.get("optimizer_files") or {})
    try:
        out, report, feasible = compile_prepared(shared["prepared"], shared["targets"][precisions], dev, opts)
    except EdgepassError as exc:
        return {"error": str(exc), "exit_code": exc.exit_code}
    return {"model": out.SerializeToString(), "report": report.to_dict(), "feasible": feasible}


def _seed_cache(cache_dir, files: dict) -> None:
    """Put the fleet's trained optimizers into this worker's cache (a no-op on the driver's machine;
    on another Ray node it saves training them again)."""
    if not files:
        return

    base = cache_root(cache_dir)
    for name, data in files.items():
        path = base / name
        if not path.exists():
            try:
                write_atomic(path, data)
            except EdgepassError:
                pass   # an unwritable cache costs this worker a retraining, not the device


def _device_list(devices) -> list:
    """``devices`` as a list: one id, path or Device is a fleet of one (a string is never split)."""
    if isinstance(devices, (str, bytes, os.PathLike)) or not isinstance(devices, Iterable):
        devices = [devices]
    devices = list(devices)
    if not devices:
        raise InputError("no devices given")
    return devices


def _check_fleet_files(model, opts: CompileOptions, devices: list, outdir: Path, names: list, protect) -> None:
    """Before any work: OUT can be created or written, and none of the files a fleet writes there is
    one of its inputs (the model, calibration data, device files, ``protect``)."""
    outputs = {"summary": outdir / "summary.json"}
    for name in names:
        outputs[f"output {name}.onnx"] = outdir / f"{name}.onnx"
        outputs[f"report {name}.report.json"] = outdir / f"{name}.report.json"
    inputs = {"model": model if isinstance(model, (str, os.PathLike)) else None,
              "calibration data": opts.calibration_data if isinstance(opts.calibration_data, (str, os.PathLike))
              else None,
              "device file": [d for d in devices if is_device_file(d)], **(protect or {})}
    check_files(inputs=inputs, outputs=outputs, into=outdir)


def _row(entry, dev_id=None) -> dict:
    return {"device": dev_id or str(entry), "entry": str(entry), "model": None, "report": None,
            "predicted_ms": None, "budget_ms": None, "feasible": None, "verified": None, "error": None, "exit_code": 0}


def _as_onnx(model, opts: CompileOptions):
    """Fleet outputs are ONNX: a PyTorch model is exported once (legacy exporter) before the analysis."""
    if not is_torch_module(model):
        return model, []
    import tempfile


    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = export_onnx(model.eval(), example_inputs_for(model, opts.example_inputs), Path(tmp) / "m.onnx")
        except Exception as exc:  # the exporter's many failure types
            raise UnsupportedModelError(f"cannot export {type(model).__name__} to ONNX for a fleet compile "
                                        f"({type(exc).__name__}); export it yourself and pass the .onnx file") from None
        return load_model(path), ["the PyTorch model was exported to ONNX once (torch.onnx legacy exporter)"]


def compile_fleet(model, devices, outdir, options: CompileOptions | None = None, /, *, executor: str = "inprocess",
                  workers: int | None = None, ray_address: str | None = None, progress: bool = True,
                  protect: dict | None = None, **kwargs) -> dict:
    """Compile ``model`` for every device of ``devices`` (ids, device-file paths or ``Device``s) into
    ``outdir``; returns the summary (also written to ``outdir/summary.json``).

    Options as for :func:`edgepass.compile` (a :class:`CompileOptions` and/or keywords);
    ``latency_fraction`` sets each device's budget relative to its own predicted original latency.
    ``executor``: ``inprocess``, ``process`` (``workers`` processes) or ``ray`` (``ray_address``).
    The summary's ``exit_code`` is 0 when every device met its budget, 3 when some did not (their
    closest designs are written), or the code of the first failed device. ``protect``: more inputs
    (label -> path) no output may overwrite, e.g. the fleet file the devices came from.
    """
    opts = CompileOptions.of(options, **kwargs)
    if opts.plot:
        raise InputError("--plot draws one device's candidates: compile that device on its own to plot it")
    check_model_arg(model)
    check_data_arg(opts)
    if not isinstance(outdir, (str, os.PathLike)):
        raise InputError(f"outdir must be a path, not {type(outdir).__name__}")
    outdir = Path(outdir)
    devices = _device_list(devices)
    t_start = time.perf_counter()

    rows, items, names = [], [], set()
    for entry in devices:
        try:
            if is_device_file(entry):
                check_input(entry, "device file")
            dev = get_device(entry)
            precisions = allowed_precisions(dev, opts)
        except EdgepassError as exc:
            row = _row(getattr(entry, "id", entry))
            row.update(error=str(exc), exit_code=exc.exit_code)
            rows.append(row)
            continue
        name = device_filename(dev.id)
        while name in names:  # the same device listed twice, or two ids with the same safe name
            name += "_"
        names.add(name)
        row = _row(getattr(entry, "id", entry), dev.id)
        row.update(model=f"{name}.onnx", report=f"{name}.report.json")
        rows.append(row)
        items.append((len(rows) - 1, (name, dev, precisions)))

    _check_fleet_files(model, opts, devices, outdir, [it[1][0] for it in items], protect)
    opts = with_usable_cache(opts)
    model, notes = _as_onnx(model, opts)
    seconds = {}
    prepared = prepare(model, opts) if items else None
    targets, optimizer_files = {}, {}
    for _, (_, _, precisions) in items:
        if precisions not in targets:
            targets[precisions] = target(prepared, precisions, opts)
    if items and opts.method == "amortized" and (opts.latency_ms or opts.latency_fraction):
        # train (or load) each space's optimizer here, once, so that the tasks only load it from the cache
        t0 = time.perf_counter()
        for t in targets.values():
            model_optimizer(t.space, t.accuracy.predict_codes, cache=opts.cache_dir, seed=opts.seed,
                            options=opts.optimizer_options)
            optimizer_files.update({f.name: f.read_bytes() for f in
                                    sorted(cache_root(opts.cache_dir).glob(f"amortized-{t.space.hash()}-*.npz"))})
        seconds["optimizer"] = time.perf_counter() - t0
    if items:
        seconds["analyze"] = prepared.seconds["analyze"]
        seconds["accuracy_predictor"] = sum(t.seconds["accuracy_predictor"] for t in targets.values())
        prepared.seconds = {}   # per-device reports time only their own stages
        for t in targets.values():
            t.seconds = {}
    outdir.mkdir(exist_ok=True)

    t0 = time.perf_counter()
    ex = get_executor(executor, workers=workers, address=ray_address)
    shared = {"prepared": prepared, "targets": targets, "options": opts, "optimizer_files": optimizer_files}
    done = 0
    try:
        for k, outcome in ex.map(fleet_task, [it for _, it in items], shared=shared):
            i = items[k][0]
            row = rows[i]
            value = outcome.value if outcome.ok else {"error": outcome.error, "exit_code": EXIT_TASK_FAILED}
            if "error" in value:
                row.update(error=value["error"], exit_code=value["exit_code"], model=None, report=None)
            else:
                report = Report.from_dict(value["report"])
                write_atomic(outdir / row["model"], value["model"])
                write_atomic(outdir / row["report"], report.to_json().encode())
                row.update(predicted_ms=[round(v, 6) for v in report.predicted["latency_ms"]],
                           budget_ms=report.budget.get("latency_ms"), feasible=bool(value["feasible"]),
                           verified=bool(report.verified),
                           exit_code=0 if value["feasible"] else EXIT_INFEASIBLE)
            done += 1
            if progress:
                state = row["error"] or ("ok" if row["feasible"] else "budget not met (closest written)")
                print(f"[edgepass] {done}/{len(items)} {row['device']}: {state}", file=sys.stderr)
    finally:
        ex.close()
    seconds["devices"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    failed = [r for r in rows if r["error"]]
    code = failed[0]["exit_code"] if failed else (EXIT_INFEASIBLE if any(r["exit_code"] for r in rows) else 0)
    summary = {"model": str(model) if isinstance(model, (str, Path)) else None, "options": _options_dict(opts),
               "devices": rows, "notes": notes, "exit_code": code,
               "counts": {"devices": len(rows), "feasible": sum(bool(r["feasible"]) for r in rows),
                          "verified": sum(bool(r["verified"]) for r in rows), "failed": len(failed)}}
    # summary.json holds only what the inputs and options determine (byte-identical reruns)
    write_atomic(outdir / "summary.json", (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    return {**summary, "executor": executor, "seconds": seconds}


def _options_dict(opts: CompileOptions) -> dict:
    keep = ("latency_ms", "latency_fraction", "energy_mj", "max_accuracy_drop", "method", "precisions", "ignore",
            "seed", "input_shapes")
    d = {k: getattr(opts, k) for k in keep}
    d["precisions"] = list(d["precisions"]) if d["precisions"] else None
    d["ignore"] = list(d["ignore"])
    d["calibration_data"] = opts.calibration_data if isinstance(opts.calibration_data, str) else \
        (None if opts.calibration_data is None else "(array)")
    return d


def fleet_table(summary: dict) -> str:
    """The human summary: one row per device."""
    head = ("device", "before ms", "after ms", "budget ms", "feasible", "verified", "status")
    rows = [head]
    for r in summary["devices"]:
        pm = r["predicted_ms"] or [None, None]
        f = (lambda v: "-" if v is None else f"{v:.3f}")
        yn = (lambda v: "-" if v is None else ("yes" if v else "NO"))
        rows.append((r["device"], f(pm[0]), f(pm[1]), f(r["budget_ms"]), yn(r["feasible"]), yn(r["verified"]),
                     r["error"] or "ok"))
    w = [max(len(x[i]) for x in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) if i in (0, 6) else c.rjust(w[i]) for i, c in enumerate(r)).rstrip()
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    c = summary["counts"]
    lines.append(f"{c['devices']} devices: {c['feasible']} met the budget, {c['verified']} verified, "
                 f"{c['failed']} failed")
    return "\n".join(lines)


__all__ = ["compile_fleet", "read_fleet_file", "device_filename", "fleet_table"]
