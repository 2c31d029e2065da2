"""Measurement campaigns: measure models x devices on a device farm, into a training-set CSV.

    edgepass campaign PLAN.json [--executor inprocess|process|ray] [--ray-address A] [--out DATASET.csv]

Python twin: :func:`run_campaign`. The plan (JSON; full description in docs/ray.md)::

    {"devices": ["farm/pixel7", "farm/rpi4"],
     "models": ["nb201:|nor_conv_3x3~0|+|...|", "models/a.onnx",
                {"model": "models/b.onnx", "random_designs": 25, "seed": 0}],
     "threads": 1, "runs": 20, "warmup": 5}

Each (model, design, device) is one task. On Ray it requires one unit of the custom resource named
after the device id, so it runs on the host that has that device attached (device hosts run
``ray start --resources='{"farm/pixel7": 1}'``) and one device measures one model at a time. The
local executors measure every device on this machine (a simulation, for trying a plan out). The plan's ONNX files are read once by the driver
and shipped through the executor's ``shared`` object (Ray's object store); zoo specs are built on
the device host.

Output (``--out``, default ``campaign.csv`` next to the plan): the training-set columns of
docs/training-set.md (``device, spec, design, precision, threads, latency_ms, iqr_ms, p25_ms, p75_ms,
min_ms, runs``; ``spec`` empty for a model that is not a zoo spec) plus ``model`` (the zoo spec or
the ONNX file's absolute path) and ``host`` (the machine that measured). ``edgepass device fit``
reads it (``--from-device`` picks one device's rows). Guarantees:

* a row is appended (one ``write`` on an ``O_APPEND`` file, then ``fsync``) as soon as its
  measurement arrives, so a crash loses at most the measurements in flight and never leaves a
  half row (a torn last line is dropped when the file is opened again);
* resumable, no duplicates: rows are keyed by (device, model, design, threads) -- precision follows
  from the model and design -- and a re-run skips every key already in the file;
* when the run ends the file is rewritten (atomically) in plan order, so the same plan gives the
  same row order whatever order the measurements finished in;
* a model that fails (unreadable, cannot be rewritten or run) fails its own rows: they go to the
  errors CSV (``<out>.errors.csv``: ``device, model, design, threads, attempts, error``; the failures
  of the latest run) and are retried by the next run, and the rest of the campaign goes on. A
  worker that dies mid-task is retried by the executor (``attempts`` counts the runs).
"""
from __future__ import annotations

import csv
import io
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import zoo
from .dataset.table import TrainingSet
from .devices.measure import measure
from .errors import MAX_SEED, MAX_THREADS, EdgepassError, InputError
from .executors import get_executor
from .export import export_onnx
from .fileio import check_files, read_text, write_atomic
from .frontends.onnx import analyze_onnx
from .rewrite import apply
from .space import Design, build_space

#: Columns of the training-set CSV (docs/training-set.md, ``cpu_ort.csv.gz``) ...
TRAINING_COLUMNS = ["device", "spec", "design", "precision", "threads", "latency_ms", "iqr_ms", "p25_ms",
                    "p75_ms", "min_ms", "runs"]
#: ... plus what a campaign adds: the model as given (for ``device fit``) and the measuring host.
COLUMNS = TRAINING_COLUMNS + ["model", "host"]
ERROR_COLUMNS = ["device", "model", "design", "threads", "attempts", "error"]
PLAN_KEYS = {"devices", "models", "threads", "runs", "warmup"}
ENTRY_KEYS = {"model", "random_designs", "seed"}


def _key(row: dict) -> tuple[str, str, str, str]:
    return (row["device"], row["model"], row["design"], str(row["threads"]))


# ------------------------------------------------------------------ the plan
def _positive_int(value, name: str, low: int = 1, high: int = 10**9) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"plan: {name} must be an integer from {low} to {high}, got {value!r}"[:300])
    return value


def load_plan(plan) -> tuple[dict, Path]:
    """(validated plan dict, folder relative model paths are resolved against)."""
    if isinstance(plan, (str, os.PathLike)):
        path = Path(plan)
        try:
            data = json.loads(read_text(path, "plan"))
        except (ValueError, RecursionError) as exc:  # ValueError: also a 5000-digit integer
            raise InputError(f"plan {path} is not valid JSON: {type(exc).__name__}: {exc}"[:300]) from None
        base = path.resolve().parent
    elif isinstance(plan, dict):
        data, base = json.loads(json.dumps(plan)), Path.cwd()  # a copy: the caller's dict is never modified
    else:
        raise InputError(f"a plan is a JSON file or a dict, not {type(plan).__name__}")
    if not isinstance(data, dict):
        raise InputError("plan: expected a JSON object with 'devices' and 'models'")
    unknown = set(data) - PLAN_KEYS
    if unknown:
        raise InputError(f"plan: unknown key(s) {sorted(unknown)} (known: {sorted(PLAN_KEYS)})")
    devices = data.get("devices")
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) and d.strip() for d in devices):
        raise InputError("plan: 'devices' must be a non-empty list of device ids")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise InputError("plan: 'models' must be a non-empty list")
    for i, m in enumerate(models):
        if isinstance(m, dict):
            extra = set(m) - ENTRY_KEYS
            if extra or not isinstance(m.get("model"), str):
                raise InputError(f"plan: models[{i}] must be a string or {{'model': ..., 'random_designs': N, "
                                 f"'seed': S}} (got keys {sorted(m)})")
            _positive_int(m.get("random_designs", 1), f"models[{i}].random_designs")
            _positive_int(m.get("seed", 0), f"models[{i}].seed", 0, MAX_SEED)
        elif not isinstance(m, str) or not m.strip():
            raise InputError(f"plan: models[{i}] must be a zoo spec, an ONNX path or an object")
    data["devices"] = list(dict.fromkeys(d.strip() for d in devices))
    data["threads"] = _positive_int(data.get("threads", 1), "threads", high=MAX_THREADS)
    data["runs"] = _positive_int(data.get("runs", 20), "runs")
    data["warmup"] = _positive_int(data.get("warmup", 5), "warmup", 0)
    return data, base


def _is_onnx_ref(ref: str, base: Path) -> bool:
    return ref.endswith(".onnx") or (base / ref).is_file() or ":" not in ref


def resolve_model(ref: str, base: Path) -> tuple[str, str]:
    """(model, spec): an ONNX path made absolute (spec ``""``) or a canonical zoo spec (both the same)."""
    if _is_onnx_ref(ref, base):
        return str((base / ref).resolve()), ""

    canon = zoo.parse(ref)["canonical"]  # InputError for a spec the zoo cannot parse
    return canon, canon


_BASE_CACHE: dict[str, bytes] = {}


def base_model(model: str) -> bytes:
    """ONNX bytes of a campaign model (an ONNX path, or a zoo spec exported with opset 17); the
    last few are cached per process because every design and device of a model starts from it."""
    if model not in _BASE_CACHE:
        if model.startswith("/") or model.endswith(".onnx") or os.path.isfile(model):
            try:
                data = Path(model).read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read model {model}: {exc.strerror or exc}") from None
        else:
            import tempfile


            zm = zoo.build(model)
            with tempfile.TemporaryDirectory(prefix="edgepass-campaign-") as tmp:
                data = export_onnx(zm.module, zm.example_inputs, Path(tmp) / "m.onnx").read_bytes()
        if len(_BASE_CACHE) >= 8:
            _BASE_CACHE.pop(next(iter(_BASE_CACHE)))
        _BASE_CACHE[model] = data
    return _BASE_CACHE[model]


def _space(model: str):
    return build_space(analyze_onnx(base_model(model)))


def design_precision(precisions) -> str:
    """Row precision: ``int8`` if any layer is int8, else ``fp16`` if any is, else ``fp32``."""
    precs = set(precisions)
    return "int8" if "int8" in precs else "fp16" if "fp16" in precs else "fp32"


def sample_designs(model: str, n: int, seed: int) -> list[str]:
    """``n`` random designs (widths, kernels, per-layer precisions) of ``model``, as compact JSON;
    design ``i`` is drawn with ``numpy.random.default_rng([seed, i])`` so a plan always expands to
    the same tasks (that is what makes a re-run resume)."""
    import numpy as np

    space = _space(model)
    return [space.sample(np.random.default_rng([seed, i])).to_json(indent=None) for i in range(n)]


def expand(plan: dict, base: Path) -> tuple[list[dict], list[dict]]:
    """(tasks, failures): one task per (model, design, device) in plan order (devices innermost, so
    consecutive tasks go to different hosts), duplicates dropped; a model that cannot be resolved
    or sampled fails one row per device, with the error."""
    tasks: dict[tuple, dict] = {}
    failures: list[dict] = []
    common = {"threads": plan["threads"], "runs": plan["runs"], "warmup": plan["warmup"]}
    for entry in plan["models"]:
        ref, n, seed = (entry, 0, 0) if isinstance(entry, str) else (
            entry["model"], entry.get("random_designs", 1), entry.get("seed", 0))
        try:
            model, spec = resolve_model(ref.strip(), base)
            designs = sample_designs(model, n, seed) if n else [""]
        except EdgepassError as exc:
            failures += [{"device": d, "model": ref, "design": "", "threads": plan["threads"], "attempts": 0,
                          "error": f"{type(exc).__name__}: {exc}"} for d in plan["devices"]]
            continue
        except Exception as exc:  # noqa: BLE001 -- a bad model fails its rows, not the campaign
            failures += [{"device": d, "model": ref, "design": "", "threads": plan["threads"], "attempts": 0,
                          "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
                         for d in plan["devices"]]
            continue
        for design in designs:
            for device in plan["devices"]:
                task = {"device": device, "model": model, "spec": spec, "design": design, **common}
                tasks.setdefault(_key(task), task)
    return list(tasks.values()), failures


# ------------------------------------------------------------------ the task (runs on the device host)
def measure_task(item: dict, shared: dict | None = None) -> dict:
    """Build the item's model (design applied), measure it here with
    :func:`edgepass.devices.measure.measure`, and return its CSV row. ``shared["onnx"]`` maps the
    plan's ONNX paths to their bytes (uint8 arrays: Ray hands them over without a copy), read once
    by the driver -- device hosts need no access to the driver's files; zoo specs are built here."""
    import warnings

    blob = (shared or {}).get("onnx", {}).get(item["model"])
    data = blob.tobytes() if blob is not None else base_model(item["model"])
    if item["design"]:

        design = Design.from_json(item["design"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = apply(data, design).SerializeToString()
        precision = design_precision(design.precisions.values())
    else:
        precision = design_precision(op.precision for op in analyze_onnx(data).ops())
    m = measure(data, threads=item["threads"], runs=item["runs"], warmup=item["warmup"])
    return {"device": item["device"], "spec": item["spec"], "design": item["design"], "precision": precision,
            "threads": item["threads"], "latency_ms": f"{m.median_ms:.6g}", "iqr_ms": f"{m.iqr_ms:.6g}",
            "p25_ms": f"{m.p25_ms:.6g}", "p75_ms": f"{m.p75_ms:.6g}", "min_ms": f"{m.min_ms:.6g}",
            "runs": m.runs, "model": item["model"], "host": socket.gethostname()}


# ------------------------------------------------------------------ the output files
def _csv_line(columns: list[str], row: dict) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([row.get(c, "") for c in columns])
    return buf.getvalue()


class AppendLog:
    """A CSV file rows are appended to one at a time: one ``write`` of a whole line on an
    ``O_APPEND`` descriptor, then ``fsync``. Opening an existing file keeps its rows and drops a
    torn last line (a crash in the middle of a write)."""

    def __init__(self, path: Path, columns: list[str], *, fresh: bool = False):
        self.path, self.columns = Path(path), columns
        self.rows: list[dict] = []
        header = _csv_line(columns, dict(zip(columns, columns)))
        if self.path.exists() and not fresh:
            try:
                raw = self.path.read_bytes()
            except OSError as exc:
                raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None
            if raw and not raw.endswith(b"\n"):  # torn last line: keep only whole rows
                raw = raw[: raw.rfind(b"\n") + 1]
                write_atomic(self.path, raw)
            text = raw.decode("utf-8", errors="replace")
            if text:
                if not text.startswith(header):
                    raise InputError(f"{self.path} exists and is not a campaign file with columns "
                                     f"{','.join(columns)}; choose another --out")
                self.rows = list(csv.DictReader(io.StringIO(text)))
            else:
                write_atomic(self.path, header.encode())
        else:
            write_atomic(self.path, header.encode())
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def append(self, row: dict) -> None:
        os.write(self._fd, _csv_line(self.columns, row).encode())
        os.fsync(self._fd)
        self.rows.append({c: str(row.get(c, "")) for c in self.columns})

    def rewrite(self, rows: list[dict]) -> None:
        """Replace the file's rows (atomically), e.g. to put them in plan order."""
        self.close()
        text = _csv_line(self.columns, dict(zip(self.columns, self.columns)))
        text += "".join(_csv_line(self.columns, r) for r in rows)
        write_atomic(self.path, text.encode())
        self.rows = [dict(r) for r in rows]

    def close(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None


def errors_path(out: Path) -> Path:
    return out.with_name(out.stem + ".errors.csv")


# ------------------------------------------------------------------ the campaign
def _read_onnx(paths) -> tuple[dict, dict]:
    """({path: uint8 array}, {path: error}) of the plan's ONNX files, read once here."""
    import numpy as np

    blobs, errors = {}, {}
    for path in sorted(paths):
        try:
            blobs[path] = np.frombuffer(Path(path).read_bytes(), dtype=np.uint8)
        except OSError as exc:
            errors[path] = f"InputError: cannot read model {path}: {exc.strerror or exc}"
    return blobs, errors


def run_campaign(plan, out=None, *, executor="inprocess", workers: int | None = None,
                 ray_address: str | None = None, task: Callable[[dict], dict] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Run a measurement plan (a JSON path or a dict) and return a summary dict: ``out``, ``errors``
    (paths), ``tasks`` (in the plan), ``skipped`` (already in ``out``), ``measured``, ``failed``,
    ``retried`` (measured after a worker died), ``wall_s``, ``failures`` (device, model, error).
    The plan's ONNX files are read here, once, and shipped to the tasks as the executor's
    ``shared`` object (Ray: the object store), so device hosts need no shared file system.

    ``executor``: a name (``inprocess``, ``process``, ``ray``) or an executor object (not closed
    here). A local Ray started here advertises every plan device as a custom resource (all on this
    machine); with ``ray_address`` the cluster's device hosts must advertise them. ``task`` replaces
    :func:`measure_task` (a module-level function; used by the fault tests).
    """
    t0 = time.perf_counter()
    from_file = isinstance(plan, (str, os.PathLike))
    plan_path = plan if from_file else None
    plan, base = load_plan(plan)
    out = Path(out) if out is not None else (base / "campaign.csv" if from_file else Path("campaign.csv"))
    onnx_files = [str(base / (m if isinstance(m, str) else m["model"]).strip()) for m in plan["models"]]
    check_files(inputs={"plan": plan_path, "plan's model": [f for f in onnx_files if os.path.isfile(f)]},
                outputs={"--out": out, "errors file": errors_path(out)})
    tasks, failures = expand(plan, base)
    data = AppendLog(out, COLUMNS)
    errs = AppendLog(errors_path(out), ERROR_COLUMNS, fresh=True)  # the failures of this run only
    done = {_key(r) for r in data.rows}
    todo = [t for t in tasks if _key(t) not in done]
    skipped = len(tasks) - len(todo)
    onnx, unreadable = _read_onnx({t["model"] for t in todo if not t["spec"]})
    for t in todo:
        if t["model"] in unreadable:
            failures.append({"device": t["device"], "model": t["model"], "design": t["design"],
                             "threads": t["threads"], "attempts": 0, "error": unreadable[t["model"]]})
    todo = [t for t in todo if t["model"] not in unreadable]
    for f in failures:
        errs.append(f)
    owned = isinstance(executor, str)
    ex = get_executor(executor, workers=workers, address=ray_address,
                      resources={d: 1 for d in plan["devices"]}) if owned else executor
    measured = retried = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="campaign", unit="meas", file=sys.stderr)
    try:
        for i, outcome in ex.map(task or measure_task, todo, shared={"onnx": onnx},
                                 resources=lambda t: {t["device"]: 1, "CPU": t["threads"]}):
            t = todo[i]
            if outcome.ok:
                row = dict(outcome.value)
                if _key(row) in done:  # a result delivered twice is written once
                    continue
                done.add(_key(row))
                data.append(row)
                measured += 1
                retried += outcome.attempts > 1
            else:
                err = {"device": t["device"], "model": t["model"], "design": t["design"], "threads": t["threads"],
                       "attempts": outcome.attempts, "error": outcome.error}
                failures.append(err)
                errs.append(err)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if owned:
            ex.close()
        # plan order (rows of other plans first, as they were): same plan -> same row order
        order = {_key(t): n for n, t in enumerate(tasks)}
        rows = sorted(data.rows, key=lambda r: order.get(_key(r), -1))
        data.rewrite(rows)
        errs.rewrite(sorted(errs.rows, key=lambda r: order.get(_key(r), -1)))
    return {"out": str(out), "errors": str(errors_path(out)), "tasks": len(tasks), "skipped": skipped,
            "measured": measured, "failed": len(failures), "retried": retried,
            "wall_s": round(time.perf_counter() - t0, 3),
            "failures": [{k: f[k] for k in ("device", "model", "error")} for f in failures]}


def training_set(path, *, source: str = "campaign"):
    """The zoo-spec rows of a campaign CSV as a :class:`~edgepass.dataset.table.TrainingSet` (same
    row model as ``dataset.load_cpu()``, designs kept), ready for ``TrainingSet.concat([dataset.load(),
    ...])`` and predictor re-training. Rows of ONNX files are left out: the training set keys
    architectures by zoo spec (their features are built from the spec)."""
    p = Path(path)
    if not is_campaign_csv(p):
        raise InputError(f"{p} is not a campaign CSV (columns {','.join(COLUMNS)})")
    with p.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["spec"]]
    return TrainingSet.from_rows([(r["device"], r["spec"], r["precision"], "latency_ms", float(r["latency_ms"]),
                                   source, r["design"]) for r in rows])


def is_campaign_csv(path) -> bool:
    """Whether ``path`` starts with a campaign CSV header (what ``device fit`` checks)."""
    try:
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return header[: len(TRAINING_COLUMNS)] == TRAINING_COLUMNS and "model" in header


def fit_pairs(path, device: str | None = None) -> tuple[list[tuple[Any, float]], str | None]:
    """``(model, latency_ms)`` pairs of one device's rows of a campaign CSV, for
    :func:`edgepass.predictors.latency.fit_device`, and their precision (when all rows share one).
    A row with a design becomes the IR graph of that design (no rewrite needed to predict it)."""
    p = Path(path)
    try:
        with p.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    devices = sorted({r["device"] for r in rows})
    if device is None:
        if len(devices) != 1:
            more = ", ..." if len(devices) > 5 else ""
            raise InputError(f"{p} holds {len(devices)} devices ({', '.join(devices[:5])}{more}): pick one with "
                             f"--from-device")
        device = devices[0]
    rows = [r for r in rows if r["device"] == device]
    if not rows:
        raise InputError(f"{p} has no rows of device {device!r} (it has: {', '.join(devices[:10])})")
    pairs: list[tuple[Any, float]] = []
    for r in rows:
        ref: Any = r["spec"] or r["model"]
        if r["design"]:
            ref = _space(r["model"]).design_graph(Design.from_json(r["design"]))
        pairs.append((ref, float(r["latency_ms"])))
    precs = {r["precision"] for r in rows}
    return pairs, (precs.pop() if len(precs) == 1 else None)


# ------------------------------------------------------------------ CLI
__all__ = ["run_campaign", "load_plan", "expand", "measure_task", "fit_pairs", "is_campaign_csv", "training_set", "COLUMNS",
           "TRAINING_COLUMNS", "ERROR_COLUMNS"]
