"""edgepass.zoo: spec grammar, published MACs/params, coverage of the shared data, traceability.

Reference figures and their conventions (edgepass.analyze counts MACs of conv/linear/matmul only
and params of all weights incl. BN affine):
- Accel-NASBench: per-arch ``macs_M`` / ``params_M`` in the data.  Params agree exactly.  Its MAC
  counter also counts 4 ops per BatchNorm output element and (input + output) elements of every
  average pooling (global pool and SE squeeze); with that added, MACs agree exactly; raw conv/FC
  MACs are 8-11 % below the published figure for that reason alone.
- mobile-ml-benchmark: ``FLOPS`` (= 2 x MACs + elementwise ops, so MACs ~ FLOPS/2 slightly high)
  and ``size`` (TFLite fp32 file bytes, ~ 4 x params + a small header).
- NAS-Bench-201: the data holds no FLOPs/params; the NAS-Bench-201 API's cost info for CIFAR-10
  (widely quoted: the all-nor_conv_3x3 cell 220.11 MFLOPs / 1.531546 M params, the all-none cell
  7.78 MFLOPs / 0.073306 M params; its "FLOPs" are multiply-accumulates) anchors the two ends.
- FBNet (HW-NAS-Bench) and OFA: the data holds no per-arch MACs/params; the modules are checked
  against an independent closed form of the space definition written here (exact agreement).
"""
from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path

import pytest
import torch

import edgepass
from edgepass import zoo
from edgepass.errors import InputError
from edgepass.zoo import fbnet, nb201, ofa

DATA = Path("/work/shared/data")
N_SAMPLE = 20


def _rows(rel):
    p = DATA / rel
    if not p.exists():
        pytest.skip(f"{p} not available")
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def _analyze(spec):
    m = zoo.build(spec)
    return m, edgepass.analyze(m.module, m.example_inputs)


def _rel(got, ref):
    return abs(got - ref) / ref


# --------------------------------------------------------------------------- grammar / errors
@pytest.mark.parametrize("spec, needle", [
    ("nb201", "expected <space>:<arch>"),
    ("foo:bar", "unknown space 'foo'"),
    ("nb201:", "empty architecture"),
    ("nb201:#99999", "out of range"),
    ("nb201:|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NAS-Bench-201 op 'conv'"),
    ("nb201:|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 input edges"),
    ("nb201@cifar7:#1", "unknown nb201 dataset"),
    ("fbnet:" + "-".join(["k3_e1"] * 21), "needs 22 layer ops, got 21"),
    ("fbnet:" + "-".join(["k7_e1"] * 22), "unknown FBNet op 'k7_e1'"),
    ("ofa:3|3|2|224", "ks needs 20 values"),
    ("ofa:" + ",".join(["9"] * 20) + "|" + ",".join(["3"] * 20) + "|2,2,2,2,2|224", "ks value 9"),
    ("anb:1,1,1,1,1,1,1|3,3,3,3,3,3,3|1,1,1,1,1,1,1", "anb:<7 e>"),
    ("tv:not_a_model", "neither a torchvision"),
])
def test_parse_errors_are_one_line_input_errors(spec, needle):
    with pytest.raises(InputError) as ei:
        zoo.parse(spec)
    msg = str(ei.value)
    assert needle in msg and "\n" not in msg


def test_nb201_index_and_string_agree_with_help():
    rows = _rows("help/csv/nasbench201_latency.csv")
    for r in random.Random(0).sample(rows, 200):
        by_idx = zoo.parse(f"nb201:#{r['arch_idx']}")
        by_str = zoo.parse(f"nb201:{r['arch_str']}")
        assert by_idx["canonical"] == by_str["canonical"] == f"nb201:{r['arch_str']}"
        assert by_str["index"] == int(r["arch_idx"])


def test_zoomodel_unpacks_and_is_eval():
    m, x = zoo.build("nb201:#0")
    assert not m.training and tuple(x.shape) == (1, 3, 32, 32)
    zm = zoo.build("nb201@ImageNet16-120:#0")
    assert tuple(zm.example_input.shape) == (1, 3, 16, 16) and zm.module(zm.example_input).shape == (1, 120)


# --------------------------------------------------------------------------- published figures
def test_anb_matches_published_macs_params():
    rows = _rows("accel_nasbench/accel_nasbench.csv")
    worst_p = worst_m = worst_raw = 0.0
    for r in random.Random(0).sample(rows, N_SAMPLE):
        _, g = _analyze(zoo.spec_from_row(r))
        s = g.summary()
        bn = sum(math.prod(op.out_shapes[0]) for op in g.ops() if op.kind in ("batchnorm", "bn"))
        pools = sum(math.prod(op.in_shapes[0]) + math.prod(op.out_shapes[0])
                    for op in g.ops() if op.kind in ("pool", "global_pool", "reduce"))
        ref_m, ref_p = float(r["macs_M"]) * 1e6, float(r["params_M"]) * 1e6
        worst_p = max(worst_p, _rel(s["params"], ref_p))
        worst_m = max(worst_m, _rel(s["macs"] + 4 * bn + pools, ref_m))
        worst_raw = max(worst_raw, _rel(s["macs"], ref_m))
    print(f"\nanb: params max rel err {worst_p:.2e}; MACs (ANB convention) {worst_m:.2e}; raw conv/FC MACs {worst_raw:.3f}")
    assert worst_p < 1e-6
    assert worst_m < 1e-4


def test_tv_matches_mobile_ml_benchmark():
    rows = {r["model"]: r for r in _rows("mobile_ml_benchmark/tflite_cnn_e2e.csv")}
    worst_m = worst_p = 0.0
    for name in zoo.tv.MMB_TO_TV:
        _, g = _analyze(f"tv:{name}")
        s = g.summary()
        em, ep = _rel(s["macs"], int(rows[name]["FLOPS"]) / 2), _rel(s["params"], int(rows[name]["size"]) / 4)
        print(f"\n{name:18s} MACs {s['macs'] / 1e6:9.2f}M vs FLOPS/2 {int(rows[name]['FLOPS']) / 2e6:9.2f}M ({em:.2%}); "
              f"params {s['params'] / 1e6:7.3f}M vs size/4 ({ep:.2%})", end="")
        worst_m, worst_p = max(worst_m, em), max(worst_p, ep)
    print(f"\ntv: worst MACs {worst_m:.2%}, worst params {worst_p:.2%}")
    assert worst_m < 0.02 and worst_p < 0.02


def test_nb201_published_extremes():
    _, g = _analyze("nb201:" + nb201.arch_str(("nor_conv_3x3",) * 6))
    assert g.summary()["params"] == 1_531_546
    assert _rel(g.summary()["macs"], 220.11e6) < 1e-3
    _, g = _analyze("nb201:" + nb201.arch_str(("none",) * 6))
    assert g.summary()["params"] == 73_306
    assert _rel(g.summary()["macs"], 7.78e6) < 1e-3


# --------------------------------------------------------------------------- closed forms
def _nb201_closed(ops):
    macs, params = 7_783_040, 73_306  # stem, 2 reduction blocks, final BN, classifier (10)
    for c, hw in ((16, 1024), (32, 256), (64, 64)):
        for o in ops:
            k = {"nor_conv_3x3": 9, "nor_conv_1x1": 1}.get(o)
            if k:
                macs += 5 * k * c * c * hw
                params += 5 * (k * c * c + 2 * c)
    return macs, params


def _fbnet_closed(ops):
    h = 112
    macs, params = h * h * 27 * 16, 27 * 16 + 32
    for op, (cin, cout, s) in zip(ops, fbnet.layer_plan("ImageNet")):
        ho = (h - 1) // s + 1
        if op == "skip":
            if s != 1 or cin != cout:
                macs += ho * ho * cin * cout
                params += cin * cout + 2 * cout
        else:
            k, e, g = fbnet.BLOCKS[op]
            mid = cin * e
            macs += h * h * cin * mid // g + ho * ho * mid * k * k + ho * ho * mid * cout // g
            params += cin * mid // g + mid * k * k + mid * cout // g + 4 * mid + 2 * cout
        h = ho
    macs += h * h * 352 * 1984 + 1984 * 1000
    params += 352 * 1984 + 2 * 1984 + 1984 * 1000 + 1000
    return macs, params


def _ofa_closed(cfg):
    from edgepass.zoo._common import make_divisible as md
    r = cfg["r"]
    h = (r - 1) // 2 + 1
    macs, params = h * h * 27 * 16, 27 * 16 + 32
    macs += h * h * 16 * 9 + h * h * 16 * 16  # first block: dw3x3 + pw 16->16
    params += 16 * 9 + 32 + 16 * 16 + 32
    for cin, cout, s, k, e, _, se in ofa.block_plan(cfg):
        mid = md(round(cin * e), 8)
        ho = (h - 1) // s + 1
        macs += h * h * cin * mid + ho * ho * mid * k * k + ho * ho * mid * cout
        params += cin * mid + 2 * mid + mid * k * k + 2 * mid + mid * cout + 2 * cout
        if se:
            sm = md(mid // 4, 8)
            macs += 2 * mid * sm
            params += 2 * mid * sm + sm + mid
        h = ho
    macs += h * h * 160 * 960 + 960 * 1280 + 1280 * 1000
    params += 160 * 960 + 2 * 960 + 960 * 1280 + 1280 * 1000 + 1000
    return macs, params


def test_nb201_closed_form_sample():
    rows = _rows("help/csv/nasbench201_latency.csv")
    for r in random.Random(1).sample(rows, N_SAMPLE):
        spec = zoo.spec_from_row(r)
        s = _analyze(spec)[1].summary()
        assert (s["macs"], s["params"]) == _nb201_closed(zoo.parse(spec)["ops"]), spec


def test_fbnet_closed_form_sample():
    rows = _rows("help/csv/fbnet_latency.csv")
    for r in random.Random(2).sample(rows, N_SAMPLE):
        spec = zoo.spec_from_row(r)
        s = _analyze(spec)[1].summary()
        assert (s["macs"], s["params"]) == _fbnet_closed(zoo.parse(spec)["ops"]), spec


def test_ofa_closed_form_sample():
    rows = _rows("help/csv/ofa_latency.csv")
    for r in random.Random(3).sample(rows, N_SAMPLE):
        spec = zoo.spec_from_row(r)
        s = _analyze(spec)[1].summary()
        assert (s["macs"], s["params"]) == _ofa_closed(zoo.parse(spec)), spec


# --------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("rel, want", [
    ("help/csv/nasbench201_latency.csv", 1.0),
    ("help/csv/fbnet_latency.csv", 1.0),
    ("help/csv/ofa_latency.csv", 1.0),
    ("oneproxy/csv/oneproxy_nb201_18devices.csv", 1.0),
    ("mini_nasbench201/nb201_acc_12ep.csv", 1.0),
    ("nas_landscapes/cifar10_avg.csv", 1.0),
    ("accel_nasbench/accel_nasbench.csv", 1.0),
    ("mobile_ml_benchmark/tflite_cnn_e2e.csv", 0.25),
    ("mobile_ml_benchmark/torch_cnn_e2e.csv", 0.25),
])
def test_coverage(rel, want):
    cov = zoo.coverage(_rows(rel))
    print(f"\n{rel}: {cov['ok']}/{cov['n']} = {cov['share']:.1%}")
    assert cov["share"] >= want, cov["failures"][:3]


# --------------------------------------------------------------------------- traceability
@pytest.mark.parametrize("spec", [
    "nb201:#1234",
    "fbnet:k3_e1_g2-k5_e1_g2-skip-k3_e6-k5_e3-skip-skip-k3_e1-k5_e6-k5_e1-k3_e3-skip-k5_e1_g2-k3_e1_g2"
    "-k5_e6-k3_e6-skip-k5_e3-k3_e1-k5_e1-k3_e3-k5_e6",
    "ofa:7,5,5,5,7,7,5,7,5,7,3,7,5,3,7,3,5,3,5,3|6,4,4,6,6,3,4,3,3,6,3,3,3,6,3,4,6,4,3,6|2,2,2,2,3|204",
    "anb:6,4,6,6,6,1,1|3,5,3,5,5,3,3|1,2,3,3,2,2,2|1,0,1,0,1,0,1",
    "tv:resnet10",
])
def test_fx_trace_and_onnx_export(spec):
    m, x = zoo.build(spec)
    with torch.no_grad():
        y = m(x)
        gm = torch.fx.symbolic_trace(m)
        torch.testing.assert_close(gm(x), y)
        buf = io.BytesIO()
        torch.onnx.export(m, (x,), buf, dynamo=False)
    assert buf.tell() > 0
