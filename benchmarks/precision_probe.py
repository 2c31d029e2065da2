"""Precision pass probe: latency of fp32 / int8 / fp16 at 1 thread, what onnxruntime really runs,
and accuracy kept on the bundled digits model (ONNX and FX back ends).

    python benchmarks/precision_probe.py [--models resnet18,mobilenet_v2] [--rounds 30] [--no-fx]
                                         [--json benchmarks/out/precision_probe.json]
    python benchmarks/precision_probe.py --pools     # fp32 vs onnxruntime's int8 pooling kernels

Latency: onnxruntime CPU provider, ``intra_op_num_threads=1``, ``ORT_ENABLE_ALL``, batch 1, random
weights (``weights=None``; latency does not depend on the values). All variants of a model live
in one process and are timed *interleaved* (one run of each per round, after 5 warm-up runs
each), so drift on a shared machine hits them alike; the table gives the median of ``--rounds``
rounds. "kernels" counts op types of the optimised graph onnxruntime saves
(``SessionOptions.optimized_model_filepath``): an int8 layer that really runs int8 shows up as
``QLinearConv`` / ``QGemm``, not as ``Conv``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import export_onnx, print_table, write_json  # noqa: E402

import edgepass  # noqa: E402
from edgepass.passes.precision_fx import PrecisionPassFX  # noqa: E402
from edgepass.passes.precision_onnx import PrecisionPassONNX  # noqa: E402


def session(proto: onnx.ModelProto, tmp: Path, tag: str):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp / f"{tag}.opt.onnx")
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return sess, ops


def kernels(ops: Counter) -> str:
    keep = ("QLinearConv", "Conv", "FusedConv", "QGemm", "Gemm", "FusedGemm", "QuantizeLinear", "DequantizeLinear",
            "Cast")
    return " ".join(f"{k}:{ops[k]}" for k in keep if ops.get(k))


def interleaved(sessions: dict, feed: dict, rounds: int) -> dict:
    for s in sessions.values():
        for _ in range(5):
            s.run(None, feed)
    times: dict = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


POOLS = {"AveragePool 3x3/1": ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)),
         "AveragePool 2x2/2": ("AveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
         "MaxPool 3x3/2": ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2])),
         "GlobalAveragePool": ("GlobalAveragePool", {})}


def _pool_model(op: str, attrs: dict, shape: list, qdq: bool, pool: bool = True) -> onnx.ModelProto:
    """x -> [Q -> DQ] -> pool -> [Q -> DQ] -> y: with ``qdq`` onnxruntime fuses the pool into its int8
    kernel (QLinearAveragePool, uint8 MaxPool), as it does for a pool the precision pass puts in an
    int8 region; ``pool=False`` keeps only the conversions, whose cost is subtracted."""
    from onnx import TensorProto, helper

    nodes, inits, cur = [], [], "x"

    def qdq_pair(src, tag):
        nodes.extend([helper.make_node("QuantizeLinear", [src, "s", "z"], [f"{tag}q"]),
                      helper.make_node("DequantizeLinear", [f"{tag}q", "s", "z"], [f"{tag}d"])])
        return f"{tag}d"
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.02]), helper.make_tensor("z", TensorProto.UINT8, [], [128])]
        cur = qdq_pair(cur, "in")
    if pool:
        nodes.append(helper.make_node(op, [cur], ["p"], **attrs))
        cur = "p"
    if qdq:
        cur = qdq_pair(cur, "out")
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    g = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def pool_latency(rounds: int, tmp: Path) -> list[dict]:
    """Why AveragePool is not int8 glue (passes/precision_onnx.py): each pool at fp32 and in onnxruntime's
    int8 kernel with the Q/DQ around it, and those conversions alone (same rounds). In a model the
    conversions are shared by the int8 region, so the pool's own cost is roughly the difference (for
    GlobalAveragePool the int8 graph converts a 1x1 output only, so the difference is meaningless)."""
    rows = []
    for shape in ([1, 16, 32, 32], [1, 64, 56, 56], [1, 256, 14, 14]):
        feed = {"x": np.random.default_rng(0).random(shape, dtype=np.float32)}
        for label, (op, attrs) in POOLS.items():
            sessions = {k: session(_pool_model(op, attrs, shape, q, pool), tmp, f"{op}{k}")[0]
                        for k, q, pool in (("fp32", False, True), ("int8", True, True), ("conv", True, False))}
            ms = interleaved(sessions, feed, rounds)
            rows.append({"pool": label, "shape": "x".join(map(str, shape[1:])), "fp32_us": round(ms["fp32"] * 1e3, 1),
                         "int8_with_qdq_us": round(ms["int8"] * 1e3, 1), "qdq_alone_us": round(ms["conv"] * 1e3, 1),
                         "int8_net_over_fp32": round(max(ms["int8"] - ms["conv"], 0.0) / ms["fp32"], 2)})
    return rows


def onnx_latency(name: str, rounds: int, tmp: Path) -> list[dict]:
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    proto = onnx.load(str(export_onnx(model, (x,), tmp / f"{name}.onnx")))
    layers = [op.name for op in edgepass.analyze(proto).layers()]
    calib = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1)).numpy()
    feeds = [calib[i:i + 1] for i in range(len(calib))]
    variants = {
        "fp32": None,
        "int8": dict(design={k: "int8" for k in layers}),
        "int8 (no glue)": dict(design={k: "int8" for k in layers}, quantize_glue=False),
        "int8 (s8 act)": dict(design={k: "int8" for k in layers}, activation_type="int8"),
        "int8 half": dict(design={k: "int8" for k in layers[::2]}),
        "fp16": dict(design={k: "fp16" for k in layers}),
    }
    sessions, ops, sizes, protos = {}, {}, {}, {}
    for tag, v in variants.items():
        p = proto
        if v is not None:
            opts = {k: val for k, val in v.items() if k != "design"}
            p = ir.to_proto(PrecisionPassONNX(v["design"], feeds, **opts)(ir.from_proto(proto)).model)
        protos[tag] = p
        sessions[tag], ops[tag] = session(p, tmp, f"{name}-{tag.replace(' ', '_')}")
        sizes[tag] = len(p.SerializeToString()) / 2**20
    feed = {sessions["fp32"].get_inputs()[0].name: x.numpy()}
    ref = sessions["fp32"].run(None, feed)[0].ravel()
    med = interleaved(sessions, feed, rounds)
    rows = []
    for tag in variants:
        out = sessions[tag].run(None, feed)[0].ravel()
        cos = float(out @ ref / (np.linalg.norm(out) * np.linalg.norm(ref)))
        rows.append({"model": name, "variant": tag, "ms": med[tag], "speedup": med["fp32"] / med[tag],
                     "MB": sizes[tag], "cos_vs_fp32": cos, "kernels": kernels(ops[tag])})
    return rows


def fx_latency(name: str, rounds: int) -> list[dict]:
    """torch FX int8 (convert_fx, x86 backend) and fp16 vs fp32 at 1 thread."""
    import torchvision

    torch.manual_seed(0)
    gm = torch.fx.symbolic_trace(torchvision.models.get_model(name, weights=None).eval())
    layers = [n.target for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(gm.get_submodule(n.target), (torch.nn.Conv2d, torch.nn.Linear))]
    calib = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    mods = {"fp32": gm,
            "int8": PrecisionPassFX({k: "int8" for k in layers}, calib, batch_size=4)(copy.deepcopy(gm)).model,
            "fp16 (simulate)": PrecisionPassFX({k: "fp16" for k in layers}, fp16="simulate")(copy.deepcopy(gm)).model,
            "fp16 (native)": PrecisionPassFX({k: "fp16" for k in layers})(copy.deepcopy(gm)).model}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            ref = gm(x).ravel()
            for m in mods.values():
                for _ in range(2):
                    m(x)
            times: dict = {k: [] for k in mods}
            for _ in range(max(rounds // 3, 5)):
                for k, m in mods.items():
                    t = time.perf_counter()
                    m(x)
                    times[k].append((time.perf_counter() - t) * 1e3)
            rows = []
            for k, m in mods.items():
                out = m(x).ravel().float()
                med = statistics.median(times[k])
                rows.append({"model": f"{name} (fx)", "variant": k, "ms": med,
                             "speedup": statistics.median(times["fp32"]) / med,
                             "cos_vs_fp32": float(torch.nn.functional.cosine_similarity(out, ref, dim=0))})
    finally:
        torch.set_num_threads(threads)
    return rows


def digits_accuracy() -> list[dict]:
    from edgepass.demo import DigitsNet, demo_path

    d = np.load(str(demo_path("digits_data.npz")))
    x, y = d["x_test"], d["y_test"]
    proto = onnx.load(str(demo_path()))
    layers = [op.name for op in edgepass.analyze(proto).layers()]
    rows = []

    def onnx_run(p):
        s = ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]

    ref = onnx_run(proto)
    configs = [("fp32", None, {})] + [(f"int8 {m}", "int8", {"calibrate_method": m})
                                      for m in ("minmax", "entropy", "percentile")] + [
        ("int8 minmax s8 act", "int8", {"activation_type": "int8"}),
        ("int8 minmax no glue", "int8", {"quantize_glue": False}), ("fp16", "fp16", {})]
    for tag, prec, opts in configs:
        out = ref if prec is None else onnx_run(ir.to_proto(PrecisionPassONNX(
            {k: prec for k in layers}, d["calibration"], **opts)(ir.from_proto(proto)).model))
        rows.append({"backend": "onnx", "variant": tag, "accuracy": (out.argmax(1) == y).mean() * 100,
                     "agree_fp32": (out.argmax(1) == ref.argmax(1)).mean() * 100,
                     "logit_rel_err": float(np.linalg.norm(out - ref) / np.linalg.norm(ref))})
    net = DigitsNet()
    net.load_state_dict(torch.load(str(demo_path("digits_cnn.pt")), weights_only=True))
    gm = torch.fx.symbolic_trace(net.eval())
    xt = torch.from_numpy(x)
    with torch.no_grad():
        ref = gm(xt).numpy()
        for tag, prec, opts in [("fp32", None, {}), ("int8 convert", "int8", {}), ("int8 fake", "int8", {"mode": "fake"}),
                                ("int8 convert reduce_range", "int8", {"reduce_range": True}),
                                ("fp16 native", "fp16", {}), ("fp16 simulate", "fp16", {"fp16": "simulate"})]:
            out = ref if prec is None else PrecisionPassFX({k: prec for k in layers}, d["calibration"],
                                                           **opts)(copy.deepcopy(gm)).model(xt).float().numpy()
            rows.append({"backend": "fx", "variant": tag, "accuracy": (out.argmax(1) == y).mean() * 100,
                         "agree_fp32": (out.argmax(1) == ref.argmax(1)).mean() * 100,
                         "logit_rel_err": float(np.linalg.norm(out - ref) / np.linalg.norm(ref))})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--no-fx", action="store_true", help="skip the torch FX latency rows")
    ap.add_argument("--json", default=None)
    ap.add_argument("--pools", action="store_true", help="only the pooling table (fp32 vs onnxruntime's int8 pools)")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    ort.set_default_logger_severity(3)
    lat: list = []
    if args.pools:
        with tempfile.TemporaryDirectory() as tmp:
            pools = pool_latency(max(args.rounds, 100), Path(tmp))
        print(f"pooling alone, 1 thread, median of {max(args.rounds, 100)} interleaved rounds; int8 = onnxruntime's "
              f"int8 pool between Q/DQ, net = (int8 with Q/DQ - Q/DQ alone) / fp32 (onnxruntime {ort.__version__})")
        print_table(pools, ["pool", "shape", "fp32_us", "int8_with_qdq_us", "qdq_alone_us", "int8_net_over_fp32"])
        if args.json:
            write_json(Path(args.json).name, {"pools": pools})
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            lat += onnx_latency(name, args.rounds, Path(tmp))
            if not args.no_fx:
                with contextlib.redirect_stderr(io.StringIO()):
                    lat += fx_latency(name, args.rounds)
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    print(f"latency, batch 1, 1 thread, median of {args.rounds} interleaved rounds "
          f"(onnxruntime {ort.__version__}, torch {torch.__version__}, VNNI: {vnni})")
    print_table(lat, ["model", "variant", "ms", "speedup", "MB", "cos_vs_fp32", "kernels"])
    acc = digits_accuracy()
    print("\ndigits (540 test images), all 8 layers at the given precision")
    print_table(acc, ["backend", "variant", "accuracy", "agree_fp32", "logit_rel_err"])
    if args.json:
        write_json(Path(args.json).name, {"latency": lat, "digits": acc})
    return 0


if __name__ == "__main__":
    sys.exit(main())
