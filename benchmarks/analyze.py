"""Analysis figures for the torchvision zoo: params, MACs (vs torchvision's published figure), channel
groups, design-space size and the time to analyse through FX and through ONNX (both exporters).

    python benchmarks/analyze.py [--models resnet18,mobilenet_v2] [--json benchmarks/out/analyze.json]

Times are medians of 3 runs of `edgepass.design_space` (IR + space), in one process.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export_onnx, print_table, write_json  # noqa: E402

import edgepass  # noqa: E402

ARCHS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x1_0",
         "regnet_y_400mf", "densenet121", "squeezenet1_0", "convnext_tiny", "vit_b_16"]


def timed(fn, repeats=3):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main(argv=None) -> int:
    import torchvision

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(ARCHS))
    ap.add_argument("--json", default="analyze.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(f"[analyze] {name}", file=sys.stderr)
            model = torchvision.models.get_model(name, weights=None).eval()
            x = (torch.randn(1, 3, 224, 224),)
            published = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]
            sp, t_fx = timed(lambda: edgepass.design_space(model, x))
            row = {"model": name, "params_M": sp.graph.params / 1e6, "GMACs": sp.graph.macs / 1e9,
                   "published_GMACs": published, "macs_err_%": 100 * (sp.graph.macs / 1e9 / published - 1),
                   "layers": len(sp.graph.layers()), "groups": len(sp.groups), "frozen": len(sp.frozen),
                   "kernel_knobs": len(sp.kernels), "log10_designs": sp.size(), "fx_s": t_fx}
            for exporter in ("legacy", "dynamo"):
                path = export_onnx(model, x, Path(tmp) / f"{name}-{exporter}.onnx", dynamo=exporter == "dynamo")
                osp, t = timed(lambda: edgepass.design_space(path))
                row[f"onnx_{exporter}_s"] = t
                row[f"onnx_{exporter}_same"] = osp.hash() == sp.hash() and osp.graph.macs == sp.graph.macs
            rows.append(row)
    cols = ["model", "params_M", "GMACs", "published_GMACs", "macs_err_%", "layers", "groups", "frozen",
            "kernel_knobs", "log10_designs", "fx_s", "onnx_legacy_s", "onnx_dynamo_s", "onnx_legacy_same",
            "onnx_dynamo_same"]
    print_table(rows, cols)
    path = write_json(args.json, {"rows": rows, "torch": torch.__version__})
    print(f"\nwritten {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
