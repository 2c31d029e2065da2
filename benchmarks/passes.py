"""What the rewrite passes buy on this CPU: fp32 vs int8 vs fp16, uniform widths 1.0/0.75/0.5, kernel
shrink, width 0.5 + int8 — MACs, params, file size and onnxruntime latency (1 thread, median of >= 20 runs
after warm-up, all variants of a model measured in one process), plus the time to apply a design to
ResNet-50 and the accuracy of each variant of the bundled digits CNN.

    python benchmarks/passes.py [--models resnet18,mobilenet_v2,efficientnet_b0] [--runs 30]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export_onnx, natural_images, print_table, write_json  # noqa: E402

import edgepass  # noqa: E402
from edgepass.devices.measure import measure  # noqa: E402
from edgepass.rewrite import apply_design, run_model  # noqa: E402

VARIANTS = {  # name -> (width ratio, precision, shrink kernels)
    "fp32": (1.0, None, False),
    "int8": (1.0, "int8", False),
    "fp16": (1.0, "fp16", False),
    "width0.75": (0.75, None, False),
    "width0.5": (0.5, None, False),
    "kernel-min": (1.0, None, True),
    "width0.5+int8": (0.5, "int8", False),
}


def bench_model(name, runs, tmp, calib) -> list[dict]:
    import torchvision

    model = torchvision.models.get_model(name, weights=None).eval()
    path = export_onnx(model, (torch.randn(1, 3, 224, 224),), Path(tmp) / f"{name}.onnx")
    space = edgepass.design_space(path)
    rows, base = [], None
    for variant, (ratio, prec, kmin) in VARIANTS.items():
        design = space.uniform(ratio, precision=prec, min_kernels=kmin)
        if kmin and design.kernels == space.identity().kernels:
            continue  # nothing to shrink (all 3x3)
        out = apply_design(path, design, calibration_data=calib if prec == "int8" else None).model
        g = edgepass.analyze(out)
        m = measure(out, threads=1, runs=runs, warmup=5)
        row = {"model": name, "variant": variant, "MMACs": g.macs / 1e6, "params_M": g.params / 1e6,
               "size_MB": len(out.SerializeToString()) / 1e6, "median_ms": m.median_ms, "iqr_ms": m.iqr_ms}
        base = base or m.median_ms
        row["speedup"] = base / m.median_ms
        rows.append(row)
        print(f"[passes] {name} {variant}: {m.median_ms:.2f} ms", file=sys.stderr)
    return rows


def pass_time_resnet50(tmp) -> dict:
    import torchvision

    model = torchvision.models.resnet50(weights=None).eval()
    x = (torch.randn(1, 3, 224, 224),)
    path = export_onnx(model, x, Path(tmp) / "resnet50.onnx")
    out = {}
    for label, src in (("onnx", path), ("fx", model)):
        space = edgepass.design_space(src, x)
        design = space.uniform(0.5, min_kernels=True)
        times, passes = [], []
        for _ in range(3):
            t = time.perf_counter()
            apply_design(src, design, example_inputs=x)
            times.append(time.perf_counter() - t)
            # passes alone (analysis excluded): the space is already known
            from edgepass.rewrite import build_pipeline

            if label == "onnx":
                import onnx_ir as ir

                irm = ir.from_proto(edgepass.frontends.onnx.load_model(path))
                t = time.perf_counter()
                build_pipeline(space, design, framework="onnx", calibration_data=None, importance="l1")(irm)
            else:
                import copy

                gm = copy.deepcopy(space.graph.graph["gm"])
                t = time.perf_counter()
                build_pipeline(space, design, framework="torch", calibration_data=None, importance="l1")(gm)
            passes.append(time.perf_counter() - t)
        out[label] = {"apply_s": statistics.median(times), "passes_only_s": statistics.median(passes)}
    return out


def digits_accuracy() -> list[dict]:
    from edgepass.demo import DEMO_DATA, demo_path

    data = np.load(str(demo_path(DEMO_DATA)))
    path = str(demo_path())
    space = edgepass.design_space(path)
    rows = []
    for variant, (ratio, prec, kmin) in VARIANTS.items():
        design = space.uniform(ratio, precision=prec, min_kernels=kmin)
        out = edgepass.apply(path, design, calibration_data=data["calibration"] if prec == "int8" else None)
        logits = run_model(out, [data["x_test"]])[0]
        rows.append({"variant": variant, "accuracy_%": 100 * float((logits.argmax(1) == data["y_test"]).mean()),
                     "MMACs": edgepass.analyze(out).macs / 1e6})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2,efficientnet_b0")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", default="passes.json")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    calib = natural_images(16, 224, seed=0, random_scale=False, flips=False)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for name in args.models.split(",") for r in bench_model(name, args.runs, tmp, calib)]
        print_table(rows, ["model", "variant", "MMACs", "params_M", "size_MB", "median_ms", "iqr_ms", "speedup"])
        timing = pass_time_resnet50(tmp)
    print("\napplying a design (uniform width 0.5 + smallest kernels) to resnet50, median of 3:")
    for k, v in timing.items():
        print(f"  {k:4s}: apply (analysis + passes) {v['apply_s']:.2f} s, passes only {v['passes_only_s']:.2f} s")
    acc = digits_accuracy()
    print("\nbundled digits CNN (held-out accuracy; width/kernel without any recovery):")
    print_table(acc, ["variant", "accuracy_%", "MMACs"])
    path = write_json(args.json, {"latency": rows, "pass_time_resnet50": timing, "digits": acc,
                                  "runs": args.runs, "threads": 1})
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
