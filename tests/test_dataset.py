"""The training set (edgepass.dataset): shipped tables, their documented counts, the builder on a slice."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edgepass import dataset, zoo
from edgepass.dataset import CPU_SOURCE, METRICS, TrainingSet
from edgepass.devices import get_device

#: Rows per source of the shipped public table, as documented in docs/training-set.md.
DOCUMENTED_ROWS = {"help": 616875, "brp_nas": 15284, "oneproxy": 25728, "accel_nasbench": 40908,
                   "mobile_ml_benchmark": 3482}
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")


@pytest.fixture(scope="module")
def public():
    return dataset.load_public()


def test_public_counts_match_the_documentation(public):
    assert public.counts("source") == DOCUMENTED_ROWS
    rep = dataset.report()
    assert rep["kept"] == len(public) == sum(DOCUMENTED_ROWS.values())
    for src in ("help", "brp_nas", "oneproxy", "accel_nasbench"):  # NB201 / FBNet / OFA / ANB: all built
        assert rep["sources"][src]["unbuilt"] == 0 and rep["sources"][src]["unbuilt_share"] == 0.0
    assert public.spaces() == {"nb201": 15625, "fbnet": 5000, "ofa": 5000, "anb": 5125, "tv": 21}
    assert set(public.meta["sources"]) >= set(DOCUMENTED_ROWS)  # attribution travels with the data


def test_every_device_exists_and_every_spec_parses(public):
    full = dataset.load()
    for dev in full.devices:
        assert get_device(dev).id == dev
    for spec in full.specs:
        assert zoo.parse(spec)["canonical"] == spec
    assert np.all(np.isfinite(full.value)) and np.all(full.value > 0)
    assert set(full.counts("metric")) <= set(METRICS)


def test_merged_devices_have_no_duplicate_rows(public):
    key = np.stack([public.device_code, public.spec_code, public.design_code, public.precision_code,
                    public.metric_code], axis=1)
    assert len(np.unique(key, axis=0)) == len(public)
    # HW-NAS-Bench's pixel3 is in HELP (all 15,625 cells) and OneProxy (1,999): one row per cell
    px3 = public.select(device="hwnasbench/pixel3", space="nb201")
    assert len(px3) == 15625 and px3.counts("source") == {"help": 15625}


def test_cpu_measurements(public):
    cpu = dataset.load_cpu()
    stats = dataset.load_cpu(with_stats=True)
    assert len(cpu) == len(stats) and set(cpu.devices) == {"local/cpu-ort-1t", "local/cpu-ort-2t"}
    models = {(r["spec"], r["design"], r["precision"]) for r in stats}
    assert len(models) >= 1000
    assert {p for _, _, p in models} == {"fp32", "int8"}
    assert {s.split(":")[0] for s, _, _ in models} >= {"nb201", "fbnet", "ofa", "anb", "tv"}
    assert all(int(r["runs"]) >= 20 for r in stats)
    per_node = dataset.cpu_per_node()
    assert len(per_node) >= 50 and all(p["nodes"] and p["threads"] == 1 for p in per_node)
    full = dataset.load()
    assert len(full) == len(public) + len(cpu) and full.counts("source")[CPU_SOURCE] == len(cpu)
    # our nb201 architectures join with the public devices
    ours = set(np.asarray(full.specs)[full.spec_code[full.mask(source=CPU_SOURCE, space="nb201")]])
    theirs = set(np.asarray(full.specs)[full.spec_code[full.mask(device="help/pixel2")]])
    assert ours and ours <= theirs


def test_table_roundtrip_and_filters(tmp_path):
    rows = [("help/pixel2", "nb201:#0", "fp32", "latency_ms", 9.0, "help"),
            ("help/pixel2", "nb201:#1", "fp32", "latency_ms", 7.5, "help"),
            ("anb/a100", "anb:1,1,1,1,1,1,1|3,3,3,3,3,3,3|1,1,1,1,1,1,1|0,0,0,0,0,0,0", "fp32", "throughput_ips", 900.0,
             "accel_nasbench")]
    t = TrainingSet.from_rows(rows, meta={"x": 1})
    t.save(tmp_path / "t.npz")
    r = TrainingSet.read(tmp_path / "t.npz")
    assert sorted(map(tuple, (d.values() for d in r.rows()))) == sorted(map(tuple, (d.values() for d in t.rows())))
    assert r.meta == {"x": 1} and len(r.select(space="nb201")) == 2 and len(r.select(metric="throughput_ips")) == 1
    both = TrainingSet.concat([r, TrainingSet.from_rows(rows[:1])])
    assert len(both) == 4 and both.counts("device") == {"help/pixel2": 3, "anb/a100": 1}


@pytest.mark.skipif(not (SHARED / "help" / "csv").is_dir(), reason="shared public data not present")
def test_builder_on_a_slice():
    from edgepass.dataset.build import build_public

    table, report = build_public(SHARED, limit=20, progress=False)
    src = report["sources"]
    # HELP: 20 rows x (27 NB201 + 27 FBNet + 12 OFA) device columns, all present and buildable
    assert src["help"]["kept"] == 20 * (27 + 27 + 12) and src["help"]["unbuilt"] == 0
    assert src["mobile_ml_benchmark"]["unbuilt"] > 0 and src["mlperf_tiny"]["kept"] == 0
    for spec in table.specs:
        zoo.parse(spec)


def test_features_are_computed_lazily_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPASS_CACHE", str(tmp_path))
    spec = "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    f = dataset.features(spec)
    assert f["spec"] == spec and f["macs"] > 0 and f["n_layers"] > 0 and len(f["ops"]) == f["n_ops"]
    assert {"kind", "macs", "bytes_read", "in_shapes"} <= set(f["ops"][0])
    files = list((tmp_path / "features").rglob("*.json"))
    assert len(files) == 1
    os.utime(files[0], (0, 0))
    assert dataset.features(spec) == f  # served from the cache
