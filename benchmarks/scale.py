"""Fleet compile throughput (devices/minute) on the three executors, and the per-task overhead Ray adds.

    python benchmarks/scale.py [--model digits|PATH.onnx|ZOO_SPEC] [--devices 40] [--workers 2]
                               [--empty-tasks 2000] [--repeats 3]

1. Fleet compile: ``edgepass.compile_fleet(model, devices, outdir, latency_fraction=0.7,
   executor=...)`` for ``--devices`` fp32 devices of the embedded database, once per executor:
   ``inprocess``; ``process`` (a pool of ``--workers`` spawned processes); ``ray (cold)`` -- the
   executor starts a local Ray with ``--workers`` CPUs and shuts it down, as one ``edgepass compile
   --executor ray`` does; ``ray (warm)`` -- a Ray already running (workers started by an earlier
   fleet), as on a cluster that stays up. Throughput counts the per-device stage (``seconds.devices``
   of the summary: start the executor, fan out, write every model and report); the model analysis,
   accuracy predictor and trained optimizer are computed once per fleet and come from the cache
   (filled by a warm-up compile that is not timed). Every run must produce the same summary.json.
2. Empty tasks: ``executor.map(noop, range(N))`` -- what the executor itself costs per task (in-process
   is the floor; Ray's overhead = its time per task minus that); the same with an 8 MB ``shared``
   object, which the process pool pickles once per worker and Ray puts in the object store once.

Prints both tables and writes ``benchmarks/out/scale.json``. The machine is a shared 2-core VM:
medians of ``--repeats`` runs, and the ratios are what to read.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 1 thread per process, for every executor alike
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

import edgepass  # noqa: E402
from edgepass.executors import get_executor  # noqa: E402

DIGITS = Path(edgepass.__file__).parent / "data" / "models" / "digits_cnn.onnx"
METHOD = "amortized"  # --method


def noop(x):
    return x


def noop_shared(x, shared):
    return x + len(shared)


def model_path(model: str, tmp: Path) -> str:
    if model == "digits":
        return str(DIGITS)
    if model.endswith(".onnx"):
        return model
    import contextlib
    import io
    import warnings

    import torch

    from edgepass import zoo

    zm = zoo.build(model)
    path = tmp / "model.onnx"
    # dynamic batch: the compile's accuracy predictor runs the model on batches of inputs
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(zm.module.eval(), tuple(zm.example_inputs), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return str(path)


def fleet_devices(n: int) -> list[str]:
    from edgepass.devices import list_devices

    ids = [d.id for d in list_devices() if tuple(d.precisions) == ("fp32",)]
    return ids[:n]


def fleet_run(model: str, devices: list[str], executor: str, workers: int, tmp: Path, tag: str) -> dict:
    out = tmp / f"fleet-{tag}"
    t0 = time.perf_counter()
    s = edgepass.compile_fleet(model, devices, out, latency_fraction=0.7, executor=executor, workers=workers,
                               method=METHOD, progress=False)
    wall = time.perf_counter() - t0
    summary = (out / "summary.json").read_bytes()
    assert s["counts"]["failed"] == 0, s["devices"]
    return {"devices_s": s["seconds"]["devices"], "wall_s": wall, "summary": summary}


def bench_fleet(model: str, n_devices: int, workers: int, repeats: int, tmp: Path) -> list[dict]:
    import ray

    devices = fleet_devices(n_devices)
    fleet_run(model, devices, "inprocess", workers, tmp, "warmup")  # fills the optimizer / predictor cache
    results: dict[str, list[dict]] = {}
    order = ["inprocess", "process", "ray (cold)", "ray (warm)"]
    for r in range(repeats):  # interleaved, so that load from other processes hits every executor alike
        for name in order[:3]:
            executor = name.split()[0]
            results.setdefault(name, []).append(fleet_run(model, devices, executor, workers, tmp, f"{r}-{executor}"))
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        fleet_run(model, devices, "ray", workers, tmp, "ray-prewarm")  # start the workers, import edgepass there
        results["ray (warm)"] = [fleet_run(model, devices, "ray", workers, tmp, f"{r}-warm") for r in range(repeats)]
    finally:
        ray.shutdown()
    summaries = {x["summary"] for runs in results.values() for x in runs}
    rows = []
    base = statistics.median(x["devices_s"] for x in results["inprocess"])
    for name in order:
        dev_s = statistics.median(x["devices_s"] for x in results[name])
        wall = statistics.median(x["wall_s"] for x in results[name])
        rows.append({"executor": name, "workers": 1 if name == "inprocess" else workers, "devices": len(devices),
                     "devices_s": round(dev_s, 3), "devices_per_min": round(60 * len(devices) / dev_s, 1),
                     "ms_per_device": round(1000 * dev_s / len(devices), 1), "wall_s": round(wall, 3),
                     "vs_inprocess": round(base / dev_s, 2), "identical_summary": len(summaries) == 1})
    return rows


def _timed_map(ex, fn, items, shared) -> float:
    t0 = time.perf_counter()
    got = dict(ex.map(fn, items, shared=shared))
    elapsed = time.perf_counter() - t0
    assert len(got) == len(items) and all(o.ok for o in got.values())
    return elapsed


def bench_empty(n: int, workers: int, repeats: int) -> list[dict]:
    """Per executor: the cost of one ``map`` call of ``workers`` tasks (start-up: the process pool
    spawns its workers per call; Ray's workers are already up) and the marginal cost per task
    (``(T(n) - T(workers)) / (n - workers)``), with and without an 8 MB ``shared`` object."""
    import numpy as np
    import ray

    shared = np.zeros(8 * 2**20, dtype=np.uint8)  # 8 MB
    rows = []
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for name in ("inprocess", "process", "ray"):
            ex = get_executor(name, workers=workers)
            if name == "ray":
                list(ex.map(noop, range(4 * workers)))  # workers started before timing
            for label, fn, sh in (("empty", noop, None), ("empty + 8 MB shared", noop_shared, shared)):
                small = statistics.median(_timed_map(ex, fn, list(range(workers)), sh) for _ in range(repeats))
                big = statistics.median(_timed_map(ex, fn, list(range(n)), sh) for _ in range(repeats))
                per_task = 1e6 * max(big - small, 0) / (n - workers)
                rows.append({"executor": name, "tasks": label, "n": n, "map_of_few_s": round(small, 3),
                             "total_s": round(big, 3), "us_per_task": round(per_task, 1)})
            ex.close()
    finally:
        ray.shutdown()
    floor = {r["tasks"]: r["us_per_task"] for r in rows if r["executor"] == "inprocess"}
    for r in rows:
        r["overhead_us"] = round(r["us_per_task"] - floor[r["tasks"]], 1)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits", help="digits (the bundled CNN), an ONNX path or a zoo spec")
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--empty-tasks", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="amortized", choices=["amortized", "search"],
                    help="amortized: milliseconds of decision per device; search: a per-device search (heavier tasks)")
    ap.add_argument("--no-empty", action="store_true", help="skip the empty-task table")
    args = ap.parse_args(argv)
    global METHOD
    METHOD = args.method
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgepass-scale-") as tmp:
        model = model_path(args.model, Path(tmp))
        fleet = bench_fleet(model, args.devices, args.workers, args.repeats, Path(tmp))
    print(f"fleet compile of {args.model} ({args.method}) for {args.devices} devices (median of {args.repeats}; "
          f"devices_s = the per-device stage, executor start included)")
    print_table(fleet, ["executor", "workers", "devices", "devices_s", "devices_per_min", "ms_per_device",
                        "wall_s", "vs_inprocess", "identical_summary"])
    empty = [] if args.no_empty else bench_empty(args.empty_tasks, args.workers, args.repeats)
    if empty:
        print(f"\ncost of the executors: map_of_few_s = one map of {args.workers} tasks (start-up), us_per_task = "
              f"marginal cost per task of a map of {args.empty_tasks} (median of {args.repeats}; overhead = minus "
              f"in-process)")
        print_table(empty, ["executor", "tasks", "n", "map_of_few_s", "total_s", "us_per_task", "overhead_us"])
    payload = {"args": vars(args), "cpu_count": os.cpu_count(), "fleet": fleet, "empty_tasks": empty,
               "wall_s": round(time.perf_counter() - t0, 1)}
    name = "scale.json" if args.method == "amortized" and args.model == "digits" else f"scale-{args.method}.json"
    print(f"\nwrote {write_json(name, json.loads(json.dumps(payload)))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
