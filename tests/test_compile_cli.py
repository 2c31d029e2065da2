"""`edgepass compile` as a build step: every user error is one line with its documented exit code and
never touches the input; a model with an unknown operator compiles around it; the README's Makefile
rule works and a second `make` does nothing."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgepass
from edgepass.cli import main
from edgepass.demo import DEMO_DATA, demo_path
from edgepass.export import export_onnx
from edgepass.errors import EXIT_DEVICE, EXIT_UNSUPPORTED, EXIT_USAGE, UnsupportedModelError

DEVICE = "local/cpu-ort-1t"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def model(tmp_path, digits_onnx):
    src = tmp_path / "in.onnx"
    src.write_bytes(digits_onnx.read_bytes())
    return src


def _bad_inputs(tmp_path: Path, good: bytes) -> dict:
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "truncated.onnx").write_bytes(good[: len(good) // 2])
    (tmp_path / "corrupt.onnx").write_bytes(bytes(b ^ 0x5A for b in good[:4096]))
    dev = json.loads(edgepass.devices.get_device("help/pixel2").to_json())
    dev["precison"] = dev.pop("precisions")                       # a typo: an unknown field
    (tmp_path / "typo.json").write_text(json.dumps(dev))
    (tmp_path / "notjson.json").write_text("{ this is not json")
    return {"empty": tmp_path / "empty.onnx", "truncated": tmp_path / "truncated.onnx",
            "corrupt": tmp_path / "corrupt.onnx", "typo": tmp_path / "typo.json",
            "notjson": tmp_path / "notjson.json"}


CASES = [  # (name, argv template, exit code, text expected in the one-line error)
    ("empty onnx", ["{empty}", "{out}", "--device", DEVICE, "--latency-ms", "1"], EXIT_USAGE, "empty"),
    ("truncated onnx", ["{truncated}", "{out}", "--device", DEVICE, "--latency-ms", "1"], EXIT_USAGE, "ONNX"),
    ("corrupt onnx", ["{corrupt}", "{out}", "--device", DEVICE, "--latency-ms", "1"], EXIT_USAGE, "ONNX"),
    ("missing input", ["{tmp}/nope.onnx", "{out}", "--device", DEVICE, "--latency-ms", "1"], EXIT_USAGE, "no such"),
    ("unknown device", ["{src}", "{out}", "--device", "no/such-device", "--latency-ms", "1"], EXIT_DEVICE,
     "unknown device"),
    ("device file typo", ["{src}", "{out}", "--device", "{typo}", "--latency-ms", "1"], EXIT_DEVICE, "precisions"),
    ("device file not json", ["{src}", "{out}", "--device", "{notjson}", "--latency-ms", "1"], EXIT_DEVICE, "json"),
    ("missing out dir", ["{src}", "{tmp}/no/such/dir/o.onnx", "--device", DEVICE, "--latency-ms", "1"], EXIT_USAGE,
     "does not exist"),
    ("out == in", ["{src}", "{src}", "--device", DEVICE, "--latency-ms", "1"], EXIT_USAGE, "refusing"),
    ("no budget", ["{src}", "{out}", "--device", DEVICE], EXIT_USAGE, "budget"),
    ("two budgets", ["{src}", "{out}", "--device", DEVICE, "--latency-ms", "1", "--latency-fraction", "0.5"],
     EXIT_USAGE, "not both"),
    ("no device", ["{src}", "{out}", "--latency-ms", "1"], EXIT_USAGE, "--device"),
    ("fleet into a file", ["{src}", "{src}", "--device", DEVICE, "--device", "help/pixel2", "--latency-ms", "1"],
     EXIT_USAGE, "refusing"),
    ("missing fleet file", ["{src}", "{tmp}/fleet", "--devices", "{tmp}/none.txt", "--latency-ms", "1"], EXIT_USAGE,
     "fleet file"),
    ("plot in missing dir", ["{src}", "{out}", "--device", DEVICE, "--latency-ms", "1", "--plot", "{tmp}/x/p.png"],
     EXIT_USAGE, "does not exist"),
]


@pytest.mark.parametrize("name,argv,code,text", CASES, ids=[c[0] for c in CASES])
def test_user_errors_one_line_exit_code_input_untouched(tmp_path, model, capsys, name, argv, code, text):
    paths = _bad_inputs(tmp_path, model.read_bytes())
    before = {p: p.read_bytes() for p in [model, *paths.values()]}
    out = tmp_path / "out.onnx"
    args = [a.format(src=model, out=out, tmp=tmp_path, **paths) for a in argv]
    assert main(["compile", *args]) == code
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgepass: error:"), captured.err
    assert text.lower() in err[0].lower()
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists() and not (tmp_path / "fleet").exists()
    assert all(p.read_bytes() == b for p, b in before.items())


class _DataDependent(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.mean() > 0:        # depends on the values: torch.fx cannot trace it
            y = y * 2
        return y


def test_data_dependent_control_flow_is_exit_4_suggesting_onnx():
    with pytest.raises(UnsupportedModelError) as info:
        edgepass.compile(_DataDependent().eval(), DEVICE, latency_ms=1.0, example_inputs=(torch.randn(1, 3, 16, 16),))
    msg = str(info.value)
    assert info.value.exit_code == EXIT_UNSUPPORTED and "\n" not in msg and "ONNX" in msg


class _ThreeConvs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.b = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.c = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x))))))
        return self.fc(x.mean((2, 3)))


def _with_softsign(path: Path) -> Path:
    """The exported model with an ONNX Softsign (which edgepass does not model) after conv ``a``, and a
    dynamic batch (the accuracy predictor runs batches)."""
    m = onnx.load(str(path))
    for v in list(m.graph.input) + list(m.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del m.graph.value_info[:]
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    old, new = conv.output[0], conv.output[0] + "_softsign_in"
    conv.output[0] = new
    pos = list(m.graph.node).index(conv) + 1
    m.graph.node.insert(pos, onnx.helper.make_node("Softsign", [new], [old], name="/softsign"))
    onnx.checker.check_model(m)
    out = path.with_name("softsign.onnx")
    onnx.save(m, str(out))
    return out


def test_unknown_operator_compiles_around_it_and_says_so(tmp_path):
    torch.manual_seed(0)
    path = _with_softsign(export_onnx(_ThreeConvs().eval(), (torch.randn(1, 1, 8, 8),), tmp_path / "m.onnx"))
    assert "Softsign" in edgepass.analyze(str(path)).graph["unknown_ops"]
    base = edgepass.predict(str(path), DEVICE).latency_ms
    calib = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    before = path.read_bytes()
    out, report, feasible = edgepass.compile_with_report(str(path), DEVICE, latency_ms=0.9 * base, method="search",
                                                         calibration_data=calib, measure=False,
                                                         accuracy_options={"max_levels": 2, "n_fit": 0})
    assert report.verified and path.read_bytes() == before
    assert any("does not know" in n and "Softsign" in n for n in report.notes), report.notes
    rows = {r.name: r for r in report.layers}
    assert rows["a"].before["out"] == rows["a"].after["out"] == 32   # the unknown op's channels stay
    assert "Softsign" in {n.op_type for n in out.graph.node}


def _readme_make_rule() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```make\n(.*?)```", text, re.S)
    assert block, "README.md has no ```make block"
    return block.group(1)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_readme_makefile_rule_builds_once(tmp_path, digits_onnx, compile_cache):
    shutil.copy(digits_onnx, tmp_path / "model.onnx")
    shutil.copy(str(demo_path(DEMO_DATA)), tmp_path / "calib.npz")
    (tmp_path / "Makefile").write_text(_readme_make_rule())
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "EDGEPASS_CACHE": str(compile_cache)}
    first = subprocess.run(["make"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    outputs = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.suffix in (".onnx", ".json")
                     and p.parent != tmp_path)
    model_out = next(tmp_path / p for p in outputs if p.suffix == ".onnx")
    report = next(tmp_path / p for p in outputs if p.suffix == ".json")
    assert edgepass.report_of(onnx.load(str(model_out)))["verified"]
    assert json.loads(report.read_text())["verified"]
    stamp = model_out.stat().st_mtime_ns
    second = subprocess.run(["make"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0 and "up to date" in second.stdout + second.stderr
    assert model_out.stat().st_mtime_ns == stamp


def test_static_batch_onnx_compiles_with_batched_calibration(tmp_path):
    """Exporters often fix the batch at 1; calibration data of many samples must still work."""
    torch.manual_seed(0)
    path = export_onnx(_ThreeConvs().eval(), (torch.randn(1, 1, 8, 8),), tmp_path / "static.onnx")
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    calib = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    base = edgepass.predict(str(path), DEVICE).latency_ms
    _, report, feasible = edgepass.compile_with_report(str(path), DEVICE, latency_ms=0.9 * base, method="search",
                                                       calibration_data=calib, measure=False,
                                                       accuracy_options={"max_levels": 2, "n_fit": 0})
    assert feasible and report.verified
