"""Device format, embedded database and the ``edgepass devices`` verb."""
from __future__ import annotations

import json
import time

import pytest

import edgepass.cli as cli
from edgepass.devices import (
    FEATURE_NAMES, KINDS, SCHEMA, Device, database_info, devices_table, get_device, list_devices, load_device,
)
from edgepass.errors import EXIT_DEVICE, DeviceError


def _main(monkeypatch, argv):
    # only this package's verbs: other verbs may be mid-development in the same checkout
    monkeypatch.setattr(cli, "COMMANDS", ["edgepass.commands.devices", "edgepass.commands.measure", "edgepass.commands.profile"])
    return cli.main(argv)


def _valid() -> dict:
    return {
        "schema": SCHEMA, "id": "user/my-board", "name": "My board", "kind": "mobile-cpu",
        "runtime": "tflite", "threads": 4, "batch_size": 1, "precisions": ["fp32", "int8"],
        "datasheet": {"cores": 4, "freq_ghz": 1.8}, "signature": {},
        "provenance": {"source": "my lab", "licence": "CC-BY-4.0", "kind": "measured"},
        "notes": "", "n_measurements": 0,
    }


# ----------------------------------------------------------------------------- database
def test_database_loads_fast_and_is_large():
    from edgepass.devices.database import load_database

    load_database.cache_clear()
    t0 = time.perf_counter()
    devices = list_devices()
    assert time.perf_counter() - t0 < 2.0  # target < 0.5 s; loose bound for slow CI
    assert len(devices) >= 200
    ids = [d.id for d in devices]
    assert len(ids) == len(set(ids))
    assert ids == sorted(ids)


def test_every_device_has_provenance_and_consistent_counts():
    for d in list_devices():
        assert d.provenance["source"] and d.provenance["licence"] and d.provenance["kind"]
        assert d.provenance["sources"], d.id
        assert d.n_measurements == sum(d.measurements.values()), d.id
        assert d.n_measurements > 0, d.id
        assert d.kind in KINDS


def test_sources_and_dedup():
    ids = {d.id for d in list_devices()}
    by_prefix: dict[str, int] = {}
    for i in ids:
        by_prefix[i.split("/")[0]] = by_prefix.get(i.split("/")[0], 0) + 1
    assert by_prefix["mmb"] >= 174 and by_prefix["anb"] == 6 and by_prefix["nnmeter"] == 4
    # HELP's pixel3 == OneProxy's rice_pixel3 (HW-NAS-Bench data): one device, two sources
    px3 = get_device("hwnasbench/pixel3")
    assert {s["name"] for s in px3.provenance["sources"]} == {"help", "oneproxy"}
    assert get_device("help/pixel3") is px3 and get_device("oneproxy/rice_pixel3") is px3
    i7 = get_device("eagle/core-i7-7820x")
    assert {s["name"] for s in i7.provenance["sources"]} == {"oneproxy", "brp_nas"}
    assert i7.measurements["nb201"] >= 15284
    assert "help/pixel3" not in ids and "oneproxy/rice_pixel3" not in ids
    info = database_info()
    assert set(info["sources"]) >= {"help", "oneproxy", "brp_nas", "accel_nasbench", "mobile_ml_benchmark"}


def test_features_fixed_length_and_missing_flags():
    lengths = {len(d.features()) for d in list_devices()}
    assert lengths == {len(FEATURE_NAMES)}
    d = get_device("mmb/pixel4-1large-tflite-int8")
    f = dict(zip(FEATURE_NAMES, d.features()))
    assert f["missing_freq_ghz"] == 0.0 and f["log1p_freq_ghz"] > 0
    assert f["missing_peak_gflops"] == 1.0 and f["log1p_peak_gflops"] == 0.0
    assert f["kind_mobile-cpu"] == 1.0 and f["runtime_tflite"] == 1.0 and f["precision_int8"] == 1.0


def test_devices_table():
    rows = devices_table()
    assert len(rows) == len(list_devices())
    assert {"id", "kind", "runtime", "n_measurements", "precisions"} <= set(rows[0])


# ----------------------------------------------------------------------------- device files
def test_roundtrip_and_deterministic_json(tmp_path):
    dev = Device.from_dict(_valid())
    text = dev.to_json()
    assert text == Device.from_json(text).to_json()
    assert list(json.loads(text)) == sorted(json.loads(text))
    path = tmp_path / "board.json"
    dev.save(path)
    assert load_device(path) == dev
    assert get_device(str(path)) == dev and get_device(path) == dev


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("kind"), "kind"),
    (lambda d: d.pop("precisions"), "precisions"),
    (lambda d: d.update(threads="4"), "threads"),
    (lambda d: d.update(threads=-1), "threads"),
    (lambda d: d.update(kind="tpu"), "kind"),
    (lambda d: d.update(precisions=["fp32", "int4"]), "precisions"),
    (lambda d: d.update(precisions="fp32"), "precisions"),
    (lambda d: d.update(datasheet={"cores": "four"}), "datasheet"),
    (lambda d: d.update(provenance={"source": "x", "licence": "MIT", "kind": "guess"}), "provenance.kind"),
    (lambda d: d.update(schema="edgepass.device/0"), "schema"),
    (lambda d: d.update(precison=["fp32"]), "precison"),
    (lambda d: d.update(id="Bad Id"), "id"),
])
def test_bad_device_files_name_the_field(tmp_path, mutate, field):
    data = _valid()
    mutate(data)
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DeviceError) as exc:
        load_device(path)
    msg = str(exc.value)
    assert f"field '{field}'" in msg and "x.json" in msg and "\n" not in msg
    assert exc.value.exit_code == EXIT_DEVICE


def test_not_json_and_not_object(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\x80\x04garbage")  # e.g. a pickle: never unpickled
    with pytest.raises(DeviceError, match="not valid JSON"):
        load_device(path)
    path.write_text("[1, 2]")
    with pytest.raises(DeviceError, match="JSON object"):
        load_device(path)
    with pytest.raises(DeviceError, match="cannot read"):
        get_device(str(tmp_path / "missing.json"))


def test_unknown_id_suggests_closest():
    with pytest.raises(DeviceError) as exc:
        get_device("mmb/pixel4-1large-tflite-int")
    assert "closest" in str(exc.value) and "mmb/pixel4-1large-tflite-int8" in str(exc.value)


# ----------------------------------------------------------------------------- CLI
def test_cli_devices_table(monkeypatch, capsys):
    assert _main(monkeypatch, ["devices"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "kind", "runtime", "#measurements", "precisions"]
    assert len(out) == len(list_devices()) + 1


def test_cli_devices_json_and_filter(monkeypatch, capsys):
    assert _main(monkeypatch, ["devices", "--json", "--kind", "fpga"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["kind"] == "fpga" for r in rows)


def test_cli_devices_show(monkeypatch, capsys, tmp_path):
    assert _main(monkeypatch, ["devices", "show", "anb/zcu102"]) == 0
    assert "anb/zcu102" in capsys.readouterr().out
    assert _main(monkeypatch, ["devices", "show", "anb/zcu102", "--json"]) == 0
    assert Device.from_json(capsys.readouterr().out).id == "anb/zcu102"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(_valid()))
    assert _main(monkeypatch, ["devices", "show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == "user/my-board"


def test_cli_unknown_device_exit_5(monkeypatch, capsys):
    assert _main(monkeypatch, ["devices", "show", "help/pixel22"]) == EXIT_DEVICE
    err = capsys.readouterr().err
    assert "unknown device" in err and "help/pixel2" in err and len(err.strip().splitlines()) == 1


def test_cli_bad_device_file_exit_5(monkeypatch, capsys, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert _main(monkeypatch, ["devices", "show", str(path)]) == EXIT_DEVICE
    assert "Traceback" not in capsys.readouterr().err
