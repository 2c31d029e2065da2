"""On-device profiler: ``edgepass profile -o mydevice.json [--threads N] [--name NAME]``.

Runs a fixed reference suite with onnxruntime (CPU execution provider, the protocol of
:func:`edgepass.devices.measure.measure`) on the machine it runs on and writes a device file
whose ``signature`` maps each suite entry's *stable name* to its median latency in ms. This is
how a user adds a device nobody has measured: profile once on the device, compile anywhere.

The suite (``SUITE_VERSION`` = ``edgepass-ref/1``; names never change within a version):

* **Operator micro-benchmarks**, each a one-node ONNX graph (``onnx.helper``, opset 17, random
  weights, batch 1, NCHW) named ``<op>_<params>_<precision>``:

  - ``conv_k{k}_s{s}_c{cin}x{cout}_h{h}``: dense conv, k in 1/3/5/7, ``h`` = input side;
  - ``dwconv_k{k}_s{s}_c{c}_h{h}``: depthwise conv (groups = channels);
  - ``gconv_g{g}_k{k}_c{cin}x{cout}_h{h}``: grouped conv;
  - ``linear_{in}x{out}`` (Gemm, batch 1), ``matmul_{m}x{k}x{n}``;
  - ``maxpool_k3_s2_c{c}_h{h}``, ``avgpool_k3_s1_c{c}_h{h}``, ``gap_c{c}_h{h}`` (global average);
  - elementwise / misc: ``add_``, ``mul_``, ``relu_``, ``hardswish_``, ``sigmoid_``,
    ``batchnorm_c{c}_h{h}``, ``concat2_c{c}_h{h}``, ``softmax_{n}``.

  ``_fp32`` entries run as built; ``_int8`` entries are the same graphs quantized to QDQ by
  ``onnxruntime.quantization.quantize_static`` (QUInt8 activations, QInt8 weights, per-tensor,
  random calibration), which onnxruntime fuses into its integer kernels.
* **Reference networks** (``net_<name>_<precision>``) built by :mod:`edgepass.zoo` and exported
  to ONNX: three NAS-Bench-201 cells (``nb201a``: all 3x3 convs, ``nb201b``: mixed,
  ``nb201c``: 1x1 convs and pooling; CIFAR 32x32), ``ofamin`` (the smallest OFA-MBv3 subnet at
  128x128), ``mbv2wd4`` (MobileNetV2 x0.25, 224x224) and ``squeezenet11`` (SqueezeNet 1.1).

Every entry is timed with warm-up runs and the median of ``runs`` timed runs (30 for operators,
20 for networks; ``quick=True`` runs a reduced suite with fewer runs, for tests). The IQR of
each entry is kept in ``provenance.profile.iqr_ms`` so two profiles can be compared against the
measured noise (:func:`compare_signatures`). The full suite takes ~20-40 s on a 2-core x86 CPU.
"""
from __future__ import annotations

import os
import platform
import re
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import zoo
from ..errors import InputError
from .measure import measure
from .schema import Device

SUITE_VERSION = "edgepass-ref/1"
OPSET = 17


@dataclass(frozen=True)
class Entry:
    """One suite entry: a stable ``name`` and a builder returning ONNX bytes."""

    name: str
    build: Callable[[], bytes]
    precision: str = "fp32"
    network: bool = False
    quick: bool = False


# ---------------------------------------------------------------------- ONNX micro graphs
def _model(nodes, inputs, outputs, inits) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "edgepass_ref", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgepass-profile")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _vi(name: str, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None if shape is None else list(shape))


def _init(name: str, arr: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(arr.astype(np.float32), name)


def _conv(cin: int, cout: int, k: int, s: int, h: int, groups: int = 1) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        rng = np.random.default_rng(cin * 1000 + cout * 10 + k)
        w = rng.standard_normal((cout, cin // groups, k, k)) * (2.0 / (cin // groups * k * k)) ** 0.5
        b = rng.standard_normal(cout) * 0.01
        ho = (h + 2 * (k // 2) - k) // s + 1
        node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s],
                                pads=[k // 2] * 4, group=groups)
        return _model([node], [_vi("x", (1, cin, h, h))], [_vi("y", (1, cout, ho, ho))], [_init("w", w), _init("b", b)])
    return build


def _gemm(n_in: int, n_out: int) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        rng = np.random.default_rng(n_in + n_out)
        w = rng.standard_normal((n_out, n_in)) / n_in ** 0.5
        node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
        return _model([node], [_vi("x", (1, n_in))], [_vi("y", (1, n_out))],
                      [_init("w", w), _init("b", np.zeros(n_out))])
    return build


def _matmul(m: int, k: int, n: int) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        w = np.random.default_rng(m + k + n).standard_normal((k, n)) / k ** 0.5
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        return _model([node], [_vi("x", (1, m, k))], [_vi("y", (1, m, n))], [_init("w", w)])
    return build


def _unary(op: str, c: int, h: int, ho: int | None = None, **attrs) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        node = helper.make_node(op, ["x"], ["y"], **attrs)
        side = h if ho is None else ho
        return _model([node], [_vi("x", (1, c, h, h))], [_vi("y", (1, c, side, side))], [])
    return build


def _pool(op: str, c: int, h: int, k: int, s: int) -> Callable[[], bytes]:
    return _unary(op, c, h, (h + 2 * (k // 2) - k) // s + 1, kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)


def _binary(op: str, c: int, h: int) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        node = helper.make_node(op, ["x", "z"], ["y"])
        return _model([node], [_vi("x", (1, c, h, h)), _vi("z", (1, c, h, h))], [_vi("y", (1, c, h, h))], [])
    return build


def _add_const(c: int, h: int) -> Callable[[], bytes]:
    """Add of an activation and a same-shape constant (quantizable: both inputs get QDQ)."""
    def build() -> bytes:
        from onnx import helper

        z = np.random.default_rng(c + h).standard_normal((1, c, h, h))
        node = helper.make_node("Add", ["x", "z"], ["y"])
        return _model([node], [_vi("x", (1, c, h, h))], [_vi("y", (1, c, h, h))], [_init("z", z)])
    return build


def _concat(c: int, h: int) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        node = helper.make_node("Concat", ["x", "z"], ["y"], axis=1)
        return _model([node], [_vi("x", (1, c, h, h)), _vi("z", (1, c, h, h))], [_vi("y", (1, 2 * c, h, h))], [])
    return build


def _batchnorm(c: int, h: int) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        rng = np.random.default_rng(c)
        inits = [_init("g", rng.random(c) + 0.5), _init("b", rng.standard_normal(c)),
                 _init("m", rng.standard_normal(c)), _init("v", rng.random(c) + 0.5)]
        node = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"])
        return _model([node], [_vi("x", (1, c, h, h))], [_vi("y", (1, c, h, h))], inits)
    return build


def _softmax(n: int) -> Callable[[], bytes]:
    def build() -> bytes:
        from onnx import helper

        node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
        return _model([node], [_vi("x", (1, n))], [_vi("y", (1, n))], [])
    return build


# ---------------------------------------------------------------------- reference networks
NB201_A = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NB201_B = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"
NB201_C = "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|skip_connect~0|avg_pool_3x3~1|nor_conv_1x1~2|"
OFA_MIN = "ofa:" + ",".join(["3"] * 20) + "|" + ",".join(["3"] * 20) + "|2,2,2,2,2|128"
NETWORKS = {  # signature name stem -> zoo spec
    "nb201a": f"nb201:{NB201_A}", "nb201b": f"nb201:{NB201_B}", "nb201c": f"nb201:{NB201_C}",
    "ofamin": OFA_MIN, "mbv2wd4": "tv:mobilenetv2_wd4", "squeezenet11": "tv:squeezenet1_1",
}


def _network(spec: str) -> Callable[[], bytes]:
    def build() -> bytes:
        import io
        import warnings

        import torch


        zm = zoo.build(spec)
        buf = io.BytesIO()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(zm.module, zm.example_inputs, buf, dynamo=False, opset_version=OPSET,
                                  input_names=["x"], output_names=["y"])
        finally:
            torch.set_num_threads(threads)
        return buf.getvalue()
    return build


def suite() -> list[Entry]:
    """The reference suite, in run order (stable names; see the module docstring)."""
    fp: list[tuple[str, Callable[[], bytes], bool]] = []  # (name without precision, builder, in quick)
    for cin, cout, k, s, h, q in [
        (64, 64, 1, 1, 28, True), (128, 128, 1, 1, 14, False), (32, 192, 1, 1, 28, False),
        (32, 32, 3, 1, 56, False), (64, 64, 3, 1, 28, True), (128, 128, 3, 1, 14, False), (32, 64, 3, 2, 56, False),
        (3, 16, 3, 2, 224, False), (32, 32, 5, 1, 28, True), (64, 64, 5, 1, 14, False),
        (32, 32, 7, 1, 28, False), (3, 32, 7, 2, 112, False),
    ]:
        fp.append((f"conv_k{k}_s{s}_c{cin}x{cout}_h{h}", _conv(cin, cout, k, s, h), q))
    for c, k, s, h, q in [(96, 3, 1, 56, False), (144, 3, 2, 56, False), (192, 3, 1, 28, True),
                          (192, 5, 1, 28, False), (384, 7, 1, 14, False)]:
        fp.append((f"dwconv_k{k}_s{s}_c{c}_h{h}", _conv(c, c, k, s, h, groups=c), q))
    for g, k, cin, cout, h in [(2, 1, 64, 64, 28), (4, 3, 64, 64, 28), (32, 3, 128, 128, 14)]:
        fp.append((f"gconv_g{g}_k{k}_c{cin}x{cout}_h{h}", _conv(cin, cout, k, 1, h, groups=g), False))
    fp += [("linear_1280x1000", _gemm(1280, 1000), True), ("linear_512x512", _gemm(512, 512), False),
           ("matmul_64x256x256", _matmul(64, 256, 256), False)]
    fp += [("maxpool_k3_s2_c64_h56", _pool("MaxPool", 64, 56, 3, 2), False),
           ("avgpool_k3_s1_c32_h32", _pool("AveragePool", 32, 32, 3, 1), True),
           ("gap_c1280_h7", _unary("GlobalAveragePool", 1280, 7, 1), False)]
    fp += [("add_c64_h56", _binary("Add", 64, 56), True), ("mul_c64_h56", _binary("Mul", 64, 56), False),
           ("relu_c64_h56", _unary("Relu", 64, 56), False), ("hardswish_c96_h28", _unary("HardSwish", 96, 28), False),
           ("sigmoid_c96_h28", _unary("Sigmoid", 96, 28), False), ("batchnorm_c64_h28", _batchnorm(64, 28), False),
           ("concat2_c64_h28", _concat(64, 28), False), ("softmax_1000", _softmax(1000), False)]
    entries = [Entry(f"{n}_fp32", b, "fp32", False, q) for n, b, q in fp]
    int8 = {"conv_k1_s1_c64x64_h28": True, "conv_k3_s1_c64x64_h28": True, "conv_k3_s1_c32x32_h56": False,
            "conv_k5_s1_c32x32_h28": False, "dwconv_k3_s1_c192_h28": False, "gconv_g2_k1_c64x64_h28": False,
            "linear_1280x1000": False, "matmul_64x256x256": False}
    builders = {n: b for n, b, _ in fp}
    entries += [Entry(f"{n}_int8", builders[n], "int8", False, q) for n, q in int8.items()]
    entries.append(Entry("addc_c64_h56_int8", _add_const(64, 56), "int8", False, False))
    nets = [("nb201a", "fp32", True), ("nb201b", "fp32", False), ("nb201c", "fp32", False), ("ofamin", "fp32", False),
            ("mbv2wd4", "fp32", False), ("squeezenet11", "fp32", False), ("nb201a", "int8", False),
            ("mbv2wd4", "int8", False)]
    net_builders = {n: _network(spec) for n, spec in NETWORKS.items()}  # int8 reuses the fp32 export
    entries += [Entry(f"net_{n}_{p}", net_builders[n], p, True, q) for n, p, q in nets]
    return entries


def suite_names(quick: bool = False) -> list[str]:
    """Stable signature names of the (quick) suite."""
    return [e.name for e in suite() if e.quick or not quick]


# ---------------------------------------------------------------------- quantization
def _quantize(fp32: bytes, tmp: Path) -> bytes:
    import logging
    import warnings

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    sess = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    shapes = {i.name: [d if isinstance(d, int) else 1 for d in i.shape] for i in sess.get_inputs()}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{n: np.random.default_rng(i).standard_normal(s).astype(np.float32)
                                  for n, s in shapes.items()} for i in range(3)])

        def get_next(self):
            return next(self.batches, None)

    src, dst = tmp / "fp32.onnx", tmp / "int8.onnx"
    src.write_bytes(fp32)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static warns on the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=False)
    finally:
        root.setLevel(level)
    return dst.read_bytes()


# ---------------------------------------------------------------------- machine facts
def _cpuinfo() -> dict[str, Any]:
    """Model name, usable cores, max clock (GHz) and RAM (GB) from /proc (Linux), best effort."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine()}
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 0
    sheet: dict[str, float] = {"cores": float(cores)} if cores else {}
    try:
        mhz = []
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            key = key.strip()
            if key == "model name":
                info["model"] = val.strip()
            elif key == "cpu MHz":
                mhz.append(float(val))
        if mhz:
            sheet["freq_ghz"] = round(max(mhz) / 1000, 3)
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                sheet["mem_gb"] = round(int(line.split()[1]) / 1024 ** 2, 1)
    except (OSError, ValueError, IndexError):
        pass
    info["datasheet"] = sheet
    return info


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._") or "device"


# ---------------------------------------------------------------------- the profiler
def run_suite(threads: int = 1, *, quick: bool = False, runs: int | None = None, progress: bool = True,
              names: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Time the suite; returns ``{name: {"median_ms", "iqr_ms"}}`` in suite order."""
    from tqdm import tqdm

    entries = [e for e in suite() if (e.quick or not quick) and (names is None or e.name in names)]
    out: dict[str, dict[str, float]] = {}
    fp32_cache: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="edgepass-profile-") as tmp:
        bar = tqdm(entries, desc=f"profiling ({threads} thread{'s' if threads > 1 else ''})", unit="kernel",
                   file=sys.stderr, disable=not progress, dynamic_ncols=True)
        for e in bar:
            bar.set_postfix_str(e.name)
            key = id(e.build)
            if key not in fp32_cache:
                fp32_cache[key] = e.build()
            model = fp32_cache[key] if e.precision == "fp32" else _quantize(fp32_cache[key], Path(tmp))
            n = runs or ((5 if quick else 20) if e.network else (10 if quick else 30))
            m = measure(model, threads=threads, runs=n, warmup=2 if quick else 5)
            out[e.name] = {"median_ms": m.median_ms, "iqr_ms": m.iqr_ms}
        bar.close()
    return out


def profile_device(threads: int = 1, *, name: str | None = None, device_id: str | None = None,
                   quick: bool = False, runs: int | None = None, kind: str = "cpu",
                   progress: bool = True) -> Device:
    """Profile this machine with onnxruntime at ``threads`` intra-op threads; return a Device.

    ``name`` is the display name (default: the CPU model); ``device_id`` defaults to
    ``local/<slug(name or hostname)>-ort-<threads>t``. ``quick=True`` runs the reduced suite
    (for tests; its signature has fewer entries and is noisier).
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise InputError(f"threads must be an integer >= 1, got {threads!r}")
    import onnxruntime

    cpu = _cpuinfo()
    t0 = time.time()
    res = run_suite(threads, quick=quick, runs=runs, progress=progress)
    wall = time.time() - t0
    display = name or f"{cpu['model']} (onnxruntime, {threads} thread{'s' if threads > 1 else ''})"
    dev_id = device_id or f"local/{_slug(name or socket.gethostname())}-ort-{threads}t"
    data = {
        "schema": "edgepass.device/1", "id": dev_id, "name": display, "kind": kind, "runtime": "onnxruntime",
        "threads": threads, "batch_size": 1, "precisions": ["fp32", "int8"], "datasheet": cpu["datasheet"],
        "signature": {k: round(v["median_ms"], 5) for k, v in res.items()},
        "provenance": {
            "kind": "measured", "source": f"edgepass profile ({SUITE_VERSION}{', quick' if quick else ''})",
            "licence": "MIT",
            "profile": {"suite": SUITE_VERSION, "quick": quick, "onnxruntime": onnxruntime.__version__,
                        "cpu": cpu["model"], "date": time.strftime("%Y-%m-%d"), "wall_s": round(wall, 1),
                        "iqr_ms": {k: round(v["iqr_ms"], 5) for k, v in res.items()}},
        },
        "notes": f"Signature: median ms of the {SUITE_VERSION} reference suite (onnxruntime CPU, "
                 f"{threads} intra-op thread(s), sequential); datasheet from /proc/cpuinfo and /proc/meminfo.",
        "metrics": ["latency_ms"],
    }
    return Device.from_dict(data, origin=f"profiled device {dev_id}")


def compare_signatures(a: Device, b: Device) -> dict[str, Any]:
    """How far two profiles of the same suite differ, relative to their measured noise.

    Returns ``{"n", "median_rel_diff", "within_noise"}``: ``within_noise`` is the share of common
    entries whose difference is at most the larger of the two IQRs plus 10 % of the median (the
    run-to-run spread of a shared machine) -- the check behind "two runs give the same signature".
    """
    common = sorted(set(a.signature) & set(b.signature))
    iqr_a = a.provenance.get("profile", {}).get("iqr_ms", {})
    iqr_b = b.provenance.get("profile", {}).get("iqr_ms", {})
    rel, ok = [], 0
    for k in common:
        x, y = a.signature[k], b.signature[k]
        rel.append(abs(x - y) / max(min(x, y), 1e-9))
        tol = max(iqr_a.get(k, 0.0), iqr_b.get(k, 0.0)) + 0.1 * max(x, y)
        ok += abs(x - y) <= tol
    return {"n": len(common), "median_rel_diff": statistics.median(rel) if rel else float("nan"),
            "within_noise": ok / len(common) if common else float("nan")}
