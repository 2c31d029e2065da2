"""End-to-end compile benchmark: stage times, fleet throughput, measured latency on this CPU.

Section 1, resnet50 stage times (ONNX input, legacy exporter, random weights): a cold compile (empty
cache: the accuracy predictor is fitted, the amortized optimizer trained) and a warm one (same cache:
both loaded) for one database device; seconds per stage (analyze, accuracy_predictor, optimize,
evaluate (the evaluate_top candidates measured on the calibration data), rewrite, verify, measure),
and a warm one with ``evaluate_top=0``. Goal: warm total <= 5 s. With ``--resnet50-cache DIR`` the
cache outlives the run: a second invocation's first compile is a warm compile in a new process.

Section 2, fleet throughput: one model compiled for N database devices (``compile_fleet``, in-process,
``--latency-fraction``); devices per minute once the shared work (analysis, accuracy predictor,
optimizer) is done, and that shared time.

Section 3, end to end: resnet18, mobilenet_v2, efficientnet_b0, regnet_y_400mf (random weights) as
FX (nn.Module) and ONNX input, for 5 database devices (this CPU ``local/cpu-ort-1t`` among them) at 3
budgets (fractions of each device's predicted original latency). Every output must verify and meet
its budget under the predictor; for this CPU (ONNX input) the compiled model is measured
(onnxruntime, 1 thread, median of at least 20 runs and 0.1 s: compile's own measurement) and must be within 10 % of the budget. Measured
before/after latency on this CPU is reported per model and budget. FX outputs are nn.Modules
(int8 via torch's FX quantization), which onnxruntime cannot time: their latency is predicted only.

Calibration data for every model: 8 crops/flips of scikit-learn's two sample photographs (natural
images, ImageNet-normalised); the accuracy predictor measures fidelity to the original model (the
weights are random), with a coarse sweep (``--accuracy-levels``) so the benchmark fits in minutes.

    python benchmarks/compile.py [--quick] [--skip-resnet50] [--fleet 100] [--models resnet18,...]
           [--frontends fx,onnx] [--fractions 0.8,0.6,0.4] [--method search|amortized]
           [--resnet50-cache DIR] [--calibrate-latency]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table, write_json  # noqa: E402

import edgepass  # noqa: E402
import edgepass.demo  # noqa: E402
from edgepass.compile import compile_with_report  # noqa: E402

LOCAL = "local/cpu-ort-1t"
DEVICES = [LOCAL, "help/pixel2", "mmb/pixel4-1large-tflite-int8", "hwnasbench/raspi4", "mmb/s10-2large-tflite-fp32"]
MODELS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "regnet_y_400mf"]


def natural_images(n: int = 8, size: int = 224, seed: int = 0) -> np.ndarray:
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(im, dtype=np.float32) / 255.0 for im in load_sample_images().images]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
        crop = im[y:y + size, x:x + size]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out.append(((crop - mean) / std).transpose(2, 0, 1))
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def tv_model(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def onnx_of(name: str, tmp: Path) -> str:
    """The legacy exporter's ONNX with a dynamic batch (the accuracy predictor runs batches)."""
    import contextlib
    import io
    import warnings

    path = tmp / f"{name}.onnx"
    if not path.exists():
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(tv_model(name), (torch.randn(1, 3, 224, 224),), str(path), dynamo=False,
                              opset_version=17, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return str(path)


def section_resnet50(args, calib, tmp: Path) -> list[dict]:
    path = onnx_of("resnet50", tmp)
    # --resnet50-cache: a cache kept between runs, so a second invocation measures warm compiles in a
    # fresh process (nothing memoised in memory), as a user's next build would
    cache = Path(args.resnet50_cache) if args.resnet50_cache else tmp / "cache-resnet50"
    first = "cold" if not (cache.exists() and any(cache.iterdir())) else "warm (new process)"
    rows = []
    for run in (first, "warm", "warm, evaluate_top=0"):
        t0 = time.perf_counter()
        _, rep, feasible = compile_with_report(path, args.resnet50_device, latency_fraction=0.6, method=args.method,
                                               calibration_data=calib, cache_dir=str(cache), measure=False,
                                               accuracy_options=args.accuracy_options,
                                               evaluate_top=0 if "evaluate_top=0" in run else None)
        wall = time.perf_counter() - t0
        row = {"run": run, **{k: round(v, 2) for k, v in rep.seconds.items() if k != "total"},
               "total": round(rep.seconds["total"], 2), "wall": round(wall, 2), "feasible": feasible,
               "verified": rep.verified}
        rows.append(row)
        print(f"[bench] resnet50 {run}: {row}", file=sys.stderr)
    return rows


def section_fleet(args, calib, tmp: Path) -> dict:
    from edgepass.devices import list_devices

    # fp32 / int8 devices (the fp16-only three would need a third accuracy predictor for this model)
    ids = [d.id for d in list_devices() if not d.id.startswith("local/") and set(d.precisions) <= {"fp32", "int8"}]
    ids = [ids[i] for i in np.linspace(0, len(ids) - 1, args.fleet).astype(int)]
    model = onnx_of(args.fleet_model, tmp) if args.fleet_model != "digits" else str(edgepass.demo.demo_path())
    cal = calib if args.fleet_model != "digits" else str(edgepass.demo.demo_path(edgepass.demo.DEMO_DATA))
    s = edgepass.compile_fleet(model, ids, tmp / "fleet", latency_fraction=0.6, method=args.method,
                               calibration_data=cal, cache_dir=str(tmp / "cache"), progress=False,
                               accuracy_options=args.accuracy_options)
    sec = s["seconds"]
    shared = sum(v for k, v in sec.items() if k not in ("devices", "total"))
    return {"model": args.fleet_model, "devices": len(ids), "feasible": s["counts"]["feasible"],
            "verified": s["counts"]["verified"], "failed": s["counts"]["failed"],
            "shared_s": round(shared, 1), "per_device_s": round(sec["devices"] / len(ids), 3),
            "devices_per_min": round(60 * len(ids) / sec["devices"], 1), "total_s": round(sec["total"], 1)}


def section_end_to_end(args, calib, tmp: Path) -> list[dict]:
    rows = []
    for name in args.models:
        net = tv_model(name)
        x = (torch.from_numpy(calib[:1]),)
        for fe in args.frontends:
            model = net if fe == "fx" else onnx_of(name, tmp)
            for frac in args.fractions:
                for dev in args.devices:
                    t0 = time.perf_counter()
                    try:
                        _, rep, feasible = compile_with_report(
                            model, dev, latency_fraction=frac, method=args.method, calibration_data=calib,
                            example_inputs=x if fe == "fx" else None, cache_dir=str(tmp / "cache"),
                            accuracy_options=args.accuracy_options,
                            calibrate_latency=args.calibrate_latency and fe == "onnx" and dev.startswith("local/"))
                    except edgepass.EdgepassError as exc:
                        rows.append({"model": name, "input": fe, "device": dev, "fraction": frac, "error": str(exc)})
                        print(f"[bench] {name} {fe} {dev} {frac}: {exc}", file=sys.stderr)
                        continue
                    pb, pa = rep.predicted["latency_ms"]
                    budget = rep.budget["latency_ms"]
                    row = {"model": name, "input": fe, "device": dev, "fraction": frac, "budget_ms": budget,
                           "pred_before_ms": pb, "pred_after_ms": pa, "met_pred": bool(pa <= budget * (1 + 1e-9)),
                           "feasible": feasible, "verified": rep.verified,
                           "fidelity_pred": round(rep.predicted["accuracy"][1], 3),
                           "seconds": round(time.perf_counter() - t0, 1)}
                    if rep.measured:
                        m = rep.measured
                        row.update(meas_before_ms=m["before_ms"], meas_after_ms=m["after_ms"],
                                   meas_vs_budget=round(m["after_ms"] / budget - 1, 3),
                                   met_meas_10pct=bool(m["after_ms"] <= 1.10 * budget))
                    rows.append(row)
                    print(f"[bench] {row}", file=sys.stderr)
                    if args.partial is not None:
                        args.partial["end_to_end"] = rows
                        write_json(args.out, args.partial)
    return rows


def print_end_to_end(out: dict) -> None:
    rows = out.get("end_to_end") or []
    if not rows:
        return
    print(f"\n== end to end (budget = fraction x predicted original latency; method {out['method']}) ==")
    print_table(rows, ["model", "input", "device", "fraction", "budget_ms", "pred_before_ms", "pred_after_ms",
                       "met_pred", "verified", "fidelity_pred", "meas_before_ms", "meas_after_ms", "met_meas_10pct",
                       "seconds"])
    ok = [r for r in rows if "error" not in r]
    local = [r for r in ok if "meas_after_ms" in r]
    summ = {"compiles": len(rows), "errors": len(rows) - len(ok), "verified": sum(r["verified"] for r in ok),
            "met_pred": sum(r["met_pred"] for r in ok), "local_measured": len(local),
            "local_met_10pct": sum(r["met_meas_10pct"] for r in local),
            "local_speedup_median": round(statistics.median(r["meas_before_ms"] / r["meas_after_ms"]
                                                            for r in local), 2) if local else None}
    out["end_to_end_summary"] = summ
    print(summ)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="resnet18 only, ONNX+FX, 2 budgets, fleet of 20 on digits")
    ap.add_argument("--skip-resnet50", action="store_true")
    ap.add_argument("--resnet50-device", default="help/pixel2")
    ap.add_argument("--calibrate-latency", action="store_true",
                    help="end to end: ONNX compiles for this CPU's devices measure their candidates here "
                         "(compile's calibrate_latency)")
    ap.add_argument("--resnet50-cache", metavar="DIR",
                    help="keep resnet50's trained optimizer and accuracy predictor here (default: a temporary "
                         "directory); run twice to time warm compiles in a new process")
    ap.add_argument("--fleet", type=int, default=100)
    ap.add_argument("--fleet-model", default="mobilenet_v2", help="a torchvision name, or digits")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--frontends", default="fx,onnx")
    ap.add_argument("--devices", default=",".join(DEVICES))
    ap.add_argument("--fractions", default="0.8,0.6,0.4")
    ap.add_argument("--method", default="search", choices=("search", "amortized"))
    ap.add_argument("--accuracy-levels", type=int, default=2, help="accuracy predictor: width levels swept per group")
    ap.add_argument("--accuracy-knobs", type=int, default=24, help="accuracy predictor: knobs swept")
    ap.add_argument("--calib-samples", type=int, default=8, help="calibration images")
    ap.add_argument("--out", help="JSON file name under benchmarks/out/ (default compile.json)")
    ap.add_argument("--print-json", action="store_true", help="print the tables of a saved run (--out) and exit")
    args = ap.parse_args(argv)
    args.out = args.out or ("compile.json" if not args.quick else "compile_quick.json")
    if args.print_json:
        import json

        from _common import OUT

        saved = json.loads((OUT / args.out).read_text())
        print_end_to_end(saved)
        for key in ("fleet", "resnet50"):
            if saved.get(key):
                print(f"\n== {key} ==")
                print_table(saved[key] if isinstance(saved[key], list) else [saved[key]],
                            list((saved[key][0] if isinstance(saved[key], list) else saved[key])))
        return 0
    if args.quick:
        args.models, args.fractions, args.fleet, args.fleet_model = "resnet18", "0.7,0.5", 20, "digits"
    args.models = [m for m in args.models.split(",") if m]
    args.frontends = args.frontends.split(",")
    args.devices = args.devices.split(",")
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.accuracy_options = {"max_levels": args.accuracy_levels, "max_knobs": args.accuracy_knobs, "n_fit": 0}
    torch.set_num_threads(1)
    calib = natural_images(args.calib_samples)
    out = {"method": args.method, "accuracy_options": args.accuracy_options, "devices": args.devices,
           "calibration_samples": args.calib_samples}
    args.partial = out
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        t0 = time.perf_counter()
        rows = section_end_to_end(args, calib, tmp)
        out["end_to_end"] = rows
        out["end_to_end_s"] = round(time.perf_counter() - t0, 1)
        print_end_to_end(out)
        if args.fleet:
            out["fleet"] = section_fleet(args, calib, tmp)
            print("\n== fleet (in-process, latency fraction 0.6) ==")
            print_table([out["fleet"]], list(out["fleet"]))
        if not args.skip_resnet50:
            out["resnet50"] = section_resnet50(args, calib, tmp)
            print(f"\n== resnet50 stage seconds ({args.resnet50_device}, ONNX, method {args.method}) ==")
            print_table(out["resnet50"], list(out["resnet50"][0]))
    path = write_json(args.out, out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
