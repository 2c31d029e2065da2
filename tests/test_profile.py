"""The on-device profiler (``edgepass profile``) and this machine's measured devices."""
from __future__ import annotations

import json

import pytest

import edgepass.cli as cli
from edgepass.devices import get_device, load_device
from edgepass.devices.profile import SUITE_VERSION, compare_signatures, profile_device, suite, suite_names
from edgepass.errors import InputError


def _main(monkeypatch, argv):
    monkeypatch.setattr(cli, "COMMANDS", ["edgepass.commands.devices", "edgepass.commands.measure", "edgepass.commands.profile"])  # only this package's verbs
    return cli.main(argv)


def test_suite_names_are_stable_unique_and_cover_the_operators():
    names = suite_names()
    assert len(names) == len(set(names)) >= 40
    quick = suite_names(quick=True)
    assert set(quick) < set(names) and 5 <= len(quick) <= 12
    for prefix in ("conv_k1_", "conv_k3_", "conv_k5_", "conv_k7_", "dwconv_", "gconv_", "linear_", "matmul_",
                   "maxpool_", "avgpool_", "gap_", "add_", "mul_", "relu_", "hardswish_", "sigmoid_", "net_nb201"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert sum(n.endswith("_int8") for n in names) >= 8
    assert sum(n.startswith("net_") for n in names) >= 6
    # names encode precision as the last token, and are lowercase identifiers
    assert all(n.rsplit("_", 1)[1] in ("fp32", "int8") and n == n.lower() for n in names)
    assert [e.name for e in suite()] == names  # run order is the documented order


def test_quick_profile_cli_writes_a_valid_device(monkeypatch, tmp_path, capsys):
    out = tmp_path / "mydevice.json"
    assert _main(monkeypatch, ["profile", "-o", str(out), "--quick", "--name", "Test box"]) == 0
    dev = load_device(out)
    assert dev.id == "local/test-box-ort-1t" and dev.name == "Test box"
    assert dev.kind == "cpu" and dev.runtime == "onnxruntime" and dev.threads == 1
    assert set(dev.precisions) == {"fp32", "int8"}
    assert sorted(dev.signature) == sorted(suite_names(quick=True))
    assert all(v > 0 for v in dev.signature.values())
    prof = dev.provenance["profile"]
    assert dev.provenance["kind"] == "measured" and prof["suite"] == SUITE_VERSION and prof["quick"] is True
    assert set(prof["iqr_ms"]) == set(dev.signature)
    assert get_device(str(out)).id == dev.id  # a user's file is accepted anywhere an id is
    assert "reference timings" in capsys.readouterr().out
    # int8 conv is a different kernel than fp32 conv: both present, both timed
    assert dev.signature["conv_k3_s1_c64x64_h28_int8"] != dev.signature["conv_k3_s1_c64x64_h28_fp32"]
    same = compare_signatures(dev, dev)
    assert same["within_noise"] == 1.0 and same["median_rel_diff"] == 0.0


def test_profile_rejects_bad_threads():
    with pytest.raises(InputError, match="threads"):
        profile_device(0, quick=True, progress=False)


def test_profile_cli_unwritable_output(monkeypatch, tmp_path, capsys):
    rc = _main(monkeypatch, ["profile", "-o", str(tmp_path / "missing" / "x.json"), "--quick"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("threads", [1, 2])
def test_local_cpu_devices_are_in_the_database(threads):
    dev = get_device(f"local/cpu-ort-{threads}t")
    assert dev.kind == "cpu" and dev.runtime == "onnxruntime" and dev.threads == threads
    assert dev.provenance["kind"] == "measured"
    assert set(suite_names()) == set(dev.signature)  # full suite
    assert dev.n_measurements >= 1000 and dev.datasheet.get("cores", 0) >= 1
    json.dumps(dev.to_dict())
