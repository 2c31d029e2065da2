"""The raw material of hostile cases: a real model, data and device file, and ways to spoil them.

Everything is made here, offline and deterministic: the bundled digits CNN (a real trained model),
its calibration data, a device file of the embedded database, and small ONNX graphs built with
``onnx.helper`` that a user could plausibly hand over (no weights, control flow, odd dtypes...).
"""
from __future__ import annotations

import functools
import gzip
import io
import json
import pickle
import random
import zipfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgepass

DATA = Path(edgepass.__file__).parent / "data" / "models"
PLANTED = "PWNED"   # the file a planted pickle creates when something unpickles it


class Planted:
    """Unpickling this creates the file PLANTED in the current folder: any unpickling is caught as a stray file."""

    def __reduce__(self):
        return (open, (PLANTED, "w"))


@functools.lru_cache(maxsize=None)
def model_bytes() -> bytes:
    return (DATA / "digits_cnn.onnx").read_bytes()


@functools.lru_cache(maxsize=None)
def calibration_bytes(n: int = 32) -> bytes:
    x = np.load(DATA / "digits_data.npz")["calibration"][:n]
    return npz_bytes(calibration=x)


def npz_bytes(compressed: bool = False, **arrays) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def device_dict(device_id: str = "hwnasbench/raspi4") -> dict:
    from edgepass.devices import get_device

    d = json.loads(get_device(device_id).to_json())
    d["id"], d["name"], d["aliases"] = "user/hostile-board", "hostile board", []
    return d


def device_bytes(device_id: str = "hwnasbench/raspi4") -> bytes:
    return json.dumps(device_dict(device_id), indent=2).encode()


FIT_SPECS = ["nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
             "nb201:|skip_connect~0|+|none~0|skip_connect~1|+|none~0|none~1|skip_connect~2|",
             "nb201:|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|",
             "nb201:|avg_pool_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|"]


def fit_csv(latencies=(9.0, 1.0, 3.0, 4.0), specs=FIT_SPECS) -> bytes:
    return ("model,latency_ms\n" + "".join(f"{s},{v}\n" for s, v in zip(specs, latencies))).encode()


def plan_bytes(model: str = "m.onnx", **extra) -> bytes:
    plan = {"devices": ["sim/host-a"], "models": [{"model": model, "random_designs": 1, "seed": 0}], "runs": 2,
            "warmup": 1}
    plan.update(extra)
    return json.dumps(plan).encode()


# ------------------------------------------------------------------------------------------------
# spoiled bytes
# ------------------------------------------------------------------------------------------------
def truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def bit_flips(data: bytes, seed: int, n: int = 8) -> bytes:
    rng = random.Random(seed)
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def random_bytes(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def planted_pickle() -> bytes:
    return pickle.dumps(Planted())


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zip_bomb_npz(samples: int = 40_000) -> bytes:
    """A few MB on disk, ``samples`` x 1x8x8 float32 zeros once expanded... times 256 for the big one."""
    return npz_bytes(compressed=True, calibration=np.zeros((samples, 1, 8, 8), np.float32))


def huge_expansion_npz() -> bytes:
    """About 2 MB compressed, 2 GiB expanded (the digits input shape, 8.4 M samples)."""
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (8_388_608, 1, 8, 8)}
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("calibration.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(1 << 24)
            for _ in range((8_388_608 * 64 * 4) // len(chunk)):
                f.write(chunk)
    return buf.getvalue()


def object_array_npz() -> bytes:
    """An .npz whose array holds a planted pickle (object dtype)."""
    return npz_bytes(calibration=np.array([Planted(), 1], dtype=object))


# ------------------------------------------------------------------------------------------------
# ONNX graphs
# ------------------------------------------------------------------------------------------------
def _init(name, shape, seed, scale=0.2):
    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, scale, shape).astype(np.float32), name)


def conv_net(*, batch=1, size=8, in_type=TensorProto.FLOAT, opset=17, channels=3) -> onnx.ModelProto:
    """conv-relu-conv-relu-gap-flatten-gemm, random weights: a small net with something to tune."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1)]
    inits = [_init("w1", (16, channels, 3, 3), 1), _init("b1", (16,), 2), _init("w2", (16, 16, 3, 3), 3),
             _init("b2", (16,), 4), _init("w3", (10, 16), 5), _init("b3", (10,), 6)]
    x = helper.make_tensor_value_info("x", in_type, [batch, channels, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])
    graph = helper.make_graph(nodes, "conv_net", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hostile")


def no_weights_net() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "no_weights", [x], [y]),
                             opset_imports=[helper.make_opsetid("", 17)])


def if_net() -> onnx.ModelProto:
    """A conv net whose output goes through an If on a constant condition."""
    m = conv_net()
    g = m.graph
    then_g = helper.make_graph([helper.make_node("Identity", ["y0"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 10])])
    else_g = helper.make_graph([helper.make_node("Neg", ["y0"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1, 10])])
    g.node[-1].output[0] = "y0"
    g.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    g.node.append(helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g))
    return m


def loop_net() -> onnx.ModelProto:
    """A conv net followed by a Loop that adds its output to itself twice."""
    m = conv_net()
    g = m.graph
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["v_in", "v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1, 10])])
    g.node[-1].output[0] = "y0"
    g.initializer.extend([numpy_helper.from_array(np.array(2, np.int64), "trip"),
                          numpy_helper.from_array(np.array(True), "cond")])
    g.node.append(helper.make_node("Loop", ["trip", "cond", "y0"], ["y"], body=body))
    return m


def two_input_net() -> onnx.ModelProto:
    m = conv_net()
    g = m.graph
    g.input.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, 10]))
    g.node[-1].output[0] = "y0"
    g.node.append(helper.make_node("Add", ["y0", "bias"], ["y"]))
    return m


def int64_input_net() -> onnx.ModelProto:
    """Token ids in (int64), a Gather from an embedding table, then the conv net's head."""
    x = helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Gemm", ["m", "w", "b"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    inits = [_init("emb", (100, 32), 7), _init("w", (64, 32), 8), _init("b", (64,), 9), _init("w2", (10, 64), 10),
             _init("b2", (10,), 11)]
    return helper.make_model(helper.make_graph(nodes, "ids", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])


def custom_op_net(domain: str = "com.hostile", op: str = "Mystery") -> onnx.ModelProto:
    m = conv_net()
    g = m.graph
    relu = [i for i, n in enumerate(g.node) if n.op_type == "Relu"][0]
    g.node[relu].op_type, g.node[relu].domain = op, domain
    if domain:
        m.opset_import.append(helper.make_opsetid(domain, 1))
    return m


def with_weights(m: onnx.ModelProto, value: float) -> onnx.ModelProto:
    m = _copy(m)
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype == np.float32 and a.size:
            a = a.copy()
            a.flat[0] = value
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    return m


def with_input_dims(m: onnx.ModelProto, dims) -> onnx.ModelProto:
    m = _copy(m)
    shape = m.graph.input[0].type.tensor_type.shape
    for d, v in zip(shape.dim, dims):
        d.Clear()
        if isinstance(v, str):
            d.dim_param = v
        else:
            d.dim_value = v
    return m


def with_opset(m: onnx.ModelProto, version: int) -> onnx.ModelProto:
    m = _copy(m)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = version
    return m


def without_initializer(m: onnx.ModelProto, index: int = 0) -> onnx.ModelProto:
    m = _copy(m)
    del m.graph.initializer[index]
    return m


def with_cycle(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    first, last = m.graph.node[0], m.graph.node[len(m.graph.node) // 2]
    first.input[0] = last.output[0]
    return m


def with_dangling_output(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    m.graph.output[0].name = "never_produced"
    return m


def with_external_data(m: onnx.ModelProto, location: str) -> onnx.ModelProto:
    """The largest initializer moved to external data at ``location`` (which may point anywhere)."""
    m = _copy(m)
    t = max(m.graph.initializer, key=lambda t: len(t.raw_data) or len(t.float_data))
    t.ClearField("float_data")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "4096")):
        t.external_data.add(key=k, value=v)
    return m


def with_string_input(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    return m


def empty_graph() -> onnx.ModelProto:
    return helper.make_model(helper.make_graph([], "empty", [], []), opset_imports=[helper.make_opsetid("", 17)])


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(m)
    return out


def digits() -> onnx.ModelProto:
    return onnx.load_from_string(model_bytes())


def serialized(m: onnx.ModelProto) -> bytes:
    return m.SerializeToString(deterministic=True)
