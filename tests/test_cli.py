"""CLI: analyze / space / demo, one-line errors with documented exit codes, never a traceback."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgepass.cli import main


def test_analyze_table_and_json(digits_onnx, capsys):
    assert main(["analyze", str(digits_onnx)]) == 0
    out = capsys.readouterr().out
    assert "stem.0" in out and "GMACs" in out
    assert main(["analyze", str(digits_onnx), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["n_layers"] == 8 and s["layers"][-1]["name"] == "fc"


def test_space_json(digits_onnx, capsys):
    assert main(["space", str(digits_onnx), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [g["id"] for g in d["groups"]] == ["stem.0", "block1.0", "down.0", "block2.0"]
    assert d["kernels"] == {"block2.3": [5, 3]}
    assert main(["space", str(digits_onnx), "--min-kernel", "1", "--json"]) == 0
    assert "block1.0" in json.loads(capsys.readouterr().out)["kernels"]


def test_input_shape_flag(digits_onnx, capsys):
    assert main(["analyze", str(digits_onnx), "--input-shape", "image:2,1,8,8", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["inputs"] == {"image": [2, 1, 8, 8]}
    assert main(["analyze", str(digits_onnx), "--input-shape", "image=2"]) == 2
    assert "expected NAME:D0,D1" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"not onnx at all", None])
def test_bad_model_exit_2_one_line(tmp_path, content, capsys):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgepass: error: ") and err.count("\n") == 1
    if content is not None:
        assert path.read_bytes() == content  # input untouched


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_python_m_and_demo():
    r = subprocess.run([sys.executable, "-m", "edgepass", "demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "DigitsNet" in r.stderr and "latency (predicted)" in r.stdout and "held-out accuracy" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgepass", "analyze", "/nonexistent.onnx"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "no such file" in r.stderr
