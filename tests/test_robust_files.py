"""Never a traceback, never a lost file (issue 20): outputs never overwrite inputs in any spelling,
unwritable outputs and non-regular inputs are refused before any work, atomic writes leave nothing
behind, bad numbers and binary text inputs are one-line usage errors, an unexpected exception is
one line with its own exit code, and the Python API checks its arguments before working."""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgepass
from edgepass import fileio
from edgepass.cli import main
from edgepass.errors import EXIT_INTERNAL, EXIT_USAGE, EdgepassError, InputError, OptionError

STAGES = importlib.import_module("edgepass.stages")   # where a compile does its work
DEVICE = "help/pixel2"
BUDGET = ["--latency-fraction", "0.8"]


def tiny_onnx(path: Path) -> Path:
    """A 2-layer conv net (conv -> relu -> conv) built with onnx.helper."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture()
def work(tmp_path, monkeypatch):
    """A folder (the cwd) with a model, calibration data (a file and a folder), a device file and a
    fleet list; ``sums()`` is the sha256 of every file in it."""
    monkeypatch.chdir(tmp_path)
    tiny_onnx(tmp_path / "model.onnx")
    np.savez(tmp_path / "calib.npz", x=np.zeros((2, 3, 8, 8), np.float32))
    (tmp_path / "calib").mkdir()
    np.save(tmp_path / "calib" / "a.npy", np.zeros((2, 3, 8, 8), np.float32))
    (tmp_path / "board.json").write_text(edgepass.devices.get_device(DEVICE).to_json())
    (tmp_path / "fleet.txt").write_text("help/pixel2\nboard.json\n")
    return tmp_path


def sums(folder: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgepass: error: "), err
    return lines[0]


# ------------------------------------------------------------------ 1. no output overwrites an input
def _links(work: Path) -> None:
    os.symlink(work / "model.onnx", work / "link.onnx")
    os.link(work / "model.onnx", work / "hard.onnx")
    os.link(work / "fleet.txt", work / "fleet-hard.txt")
    (work / "sub").mkdir()


OVERWRITES = {  # name: argv (model.onnx, calib*, board.json, fleet.txt in the cwd)
    "out is in, relative": ["compile", "model.onnx", "./model.onnx", "--device", DEVICE, *BUDGET],
    "out is in, via ..": ["compile", "model.onnx", "sub/../model.onnx", "--device", DEVICE, *BUDGET],
    "out is in, via symlink": ["compile", "model.onnx", "link.onnx", "--device", DEVICE, *BUDGET],
    "out is in, via hard link": ["compile", "model.onnx", "hard.onnx", "--device", DEVICE, *BUDGET],
    "out is the calibration file": ["compile", "model.onnx", "calib.npz", "--device", DEVICE, *BUDGET,
                                    "--calibration", "calib.npz"],
    "out is in the calibration folder": ["compile", "model.onnx", "calib/a.npy", "--device", DEVICE, *BUDGET,
                                         "--calibration", "calib"],
    "out is the device file": ["compile", "model.onnx", "board.json", "--device", "board.json", *BUDGET],
    "report is the model": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, *BUDGET, "--report", "link.onnx"],
    "report is the output": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, *BUDGET, "--report",
                             "sub/../o.onnx"],
    "report is the plot": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, *BUDGET, "--report", "r.png",
                           "--plot", "./r.png"],
    "fleet: the model is OUT/<device>.onnx": ["compile", "help__pixel2.onnx", ".", "--devices", "fleet.txt",
                                              *BUDGET],
    "fleet: the device file is OUT/summary.json": ["compile", "model.onnx", ".", "--device", "summary.json",
                                                   "--device", DEVICE, *BUDGET],
    "fleet: the fleet list is OUT/summary.json": ["compile", "model.onnx", ".", "--devices", "summary.json",
                                                  *BUDGET],
    "fleet: OUT is the model": ["compile", "model.onnx", "hard.onnx", "--device", DEVICE, "--device", "board.json",
                                *BUDGET],
    "device fit: -o is the CSV (hard link)": ["device", "fit", "fleet.txt", "--name", "b", "-o", "fleet-hard.txt"],
    "campaign: --out is the plan": ["campaign", "plan.json", "--out", "./plan.json"],
}


@pytest.mark.parametrize("argv", OVERWRITES.values(), ids=OVERWRITES.keys())
def test_no_output_overwrites_an_input(work, capsys, argv):
    _links(work)
    (work / "help__pixel2.onnx").write_bytes((work / "model.onnx").read_bytes())
    (work / "summary.json").write_text((work / "board.json").read_text() if "--device" in argv else "help/pixel2\n")
    (work / "plan.json").write_text(json.dumps({"devices": ["sim/a"], "models": ["model.onnx"]}))
    before = sums(work)
    t0 = time.perf_counter()
    rc, err = run(capsys, *argv)
    line = one_line_error(err)
    assert rc == EXIT_USAGE and ("refusing to overwrite the input" in line or "different names" in line), line
    assert sums(work) == before                           # nothing changed, nothing written
    assert time.perf_counter() - t0 < 10                   # refused before any work


def test_fleet_refuses_before_any_work(work, capsys, monkeypatch):
    (work / "out").mkdir()
    (work / "out" / "summary.json").write_bytes((work / "fleet.txt").read_bytes())
    monkeypatch.setattr("edgepass.fleet.prepare", lambda *a, **k: pytest.fail("worked before checking"))
    rc, err = run(capsys, "compile", "model.onnx", "out", "--devices", "out/summary.json", *BUDGET)
    assert rc == 2 and "summary.json" in one_line_error(err)


# ------------------------------------------------------------------ 2. unwritable outputs, before the compile
@pytest.mark.parametrize("out, text", [("sub", "is a directory"), ("missing/o.onnx", "does not exist"),
                                       ("x" * 256 + ".onnx", "too long"), ("model.onnx/o.onnx", "not a directory")])
def test_unwritable_output_refused_before_the_compile(work, capsys, monkeypatch, out, text):
    (work / "sub").mkdir()
    monkeypatch.setattr(STAGES, "prepare", lambda *a, **k: pytest.fail("compiled before checking"))
    before = sums(work)
    rc, err = run(capsys, "compile", "model.onnx", out, "--device", DEVICE, *BUDGET)
    assert rc == 2 and text in one_line_error(err)
    assert sums(work) == before


@pytest.mark.parametrize("as_root", [False, True])
def test_read_only_folder_refused(work, capsys, monkeypatch, as_root):
    (work / "ro").mkdir()
    monkeypatch.setattr(fileio.os, "geteuid", lambda: 0 if as_root else 1000)
    if as_root:   # root passes os.access: the folder is tried
        def no_temp(*a, **k):
            raise PermissionError(13, "Read-only file system")
        monkeypatch.setattr(fileio.tempfile, "TemporaryFile", no_temp)
    else:
        real = os.access
        monkeypatch.setattr(fileio.os, "access", lambda p, m: False if str(p).endswith("ro") else real(p, m))
    monkeypatch.setattr(STAGES, "prepare", lambda *a, **k: pytest.fail("compiled before checking"))
    rc, err = run(capsys, "compile", "model.onnx", "ro/o.onnx", "--device", DEVICE, *BUDGET)
    assert rc == 2 and "cannot write in" in one_line_error(err)


def test_profile_output_checked_before_profiling(work, capsys, monkeypatch):
    monkeypatch.setattr("edgepass.devices.profile.profile_device", lambda *a, **k: pytest.fail("profiled"))
    rc, err = run(capsys, "profile", "-o", "board.json/x.json", "--quick")
    assert rc == 2 and "not a directory" in one_line_error(err)


# ------------------------------------------------------------------ 3. write_atomic
def test_write_atomic_long_name_fsync_and_stale_temps(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(fileio.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    stale = tmp_path / fileio.temp_name("old.onnx")
    fresh = tmp_path / fileio.temp_name("new.onnx")
    other = tmp_path / ".notes.deadbeef.tmp"            # not our pattern: never touched
    for p in (stale, fresh, other):
        p.write_bytes(b"partial")
    old = time.time() - fileio.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))

    long_name = tmp_path / ("m" * 250 + ".onnx")        # 255 bytes: the temp name must stay short
    importlib.import_module("edgepass.compile").write_atomic(long_name, b"data")   # the old import path works
    assert long_name.read_bytes() == b"data"
    assert len(synced) >= 2                              # the file, then the folder
    assert not stale.exists() and fresh.exists() and other.exists()
    assert {p.name for p in tmp_path.iterdir()} == {long_name.name, fresh.name, other.name}


def test_write_atomic_failure_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def full(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(fileio.os, "replace", full)
    with pytest.raises(InputError, match="No space left"):
        fileio.write_atomic(tmp_path / "o.onnx", b"x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 4. FIFOs and device nodes are refused
@contextmanager
def unblock(fifo: Path, seconds: float = 5.0):
    """Without the fix a reader blocks on the FIFO forever: open its write end after a while."""
    def release():
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    timer = threading.Timer(seconds, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


FIFO_CASES = {
    "model": ["compile", "{fifo}", "o.onnx", "--device", DEVICE, *BUDGET],
    "analyze": ["analyze", "{fifo}"],
    "calibration": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, *BUDGET, "--calibration", "{fifo}"],
    "device file": ["compile", "model.onnx", "o.onnx", "--device", "{fifo}", *BUDGET],
    "fleet list": ["compile", "model.onnx", "out", "--devices", "{fifo}", *BUDGET],
    "device show": ["devices", "show", "{fifo}"],
    "plan": ["campaign", "{fifo}"],
    "device fit CSV": ["device", "fit", "{fifo}", "--name", "b", "-o", "b.json"],
    "predict": ["predict", "{fifo}", "--device", DEVICE],
}


@pytest.mark.parametrize("argv", FIFO_CASES.values(), ids=FIFO_CASES.keys())
def test_fifo_input_refused_without_hanging(work, capsys, argv):
    fifo = work / "pipe.json"
    os.mkfifo(fifo)
    with unblock(fifo):
        rc, err = run(capsys, *[a.format(fifo=fifo) for a in argv])
    assert rc == 2 and "not a regular file" in one_line_error(err)


def test_device_node_and_folder_as_model(work, capsys):
    rc, err = run(capsys, "analyze", "/dev/null")
    assert rc == 2 and "not a regular file" in one_line_error(err)
    rc, err = run(capsys, "compile", "model.onnx", "o.onnx", "--device", "calib", *BUDGET)
    assert rc in (2, 5) and not (work / "o.onnx").exists()


# ------------------------------------------------------------------ 5. numbers
BAD_NUMBERS = {
    "negative seed": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, *BUDGET, "--seed", "-1"],
    "zero workers": ["compile", "model.onnx", "out", "--devices", "fleet.txt", *BUDGET, "--workers", "0"],
    "negative workers": ["campaign", "plan.json", "--workers", "-2"],
    "threads 2**31 (measure)": ["measure", "model.onnx", "--threads", str(2**31)],
    "threads 2**31 (profile)": ["profile", "-o", "p.json", "--threads", str(2**31)],
    "negative runs": ["measure", "model.onnx", "--runs", "-1"],
    "zero input dim": ["analyze", "model.onnx", "--input-shape", "x:0,3,8,8"],
    "nan budget": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, "--latency-ms", "nan"],
    "negative budget": ["compile", "model.onnx", "o.onnx", "--device", DEVICE, "--energy-mj", "-1"],
}


@pytest.mark.parametrize("argv", BAD_NUMBERS.values(), ids=BAD_NUMBERS.keys())
def test_bad_numbers_are_usage_errors(work, capsys, argv):
    before = sums(work)
    rc, err = run(capsys, *argv)
    one_line_error(err)
    assert rc == 2 and sums(work) == before


def test_campaign_plan_threads_bounded(work):
    from edgepass.campaign import load_plan

    with pytest.raises(InputError, match="threads"):
        load_plan({"devices": ["a"], "models": ["x.onnx"], "threads": 2**31})


# ------------------------------------------------------------------ 6. an unusable cache costs time, not the compile
def test_unusable_cache_warns_once_and_runs_without(tmp_path, capsys):
    from edgepass.compile import CompileOptions
    from edgepass.stages import with_usable_cache

    blocker = tmp_path / "cache-file"
    blocker.write_text("not a folder")
    opts = CompileOptions(latency_fraction=0.5, cache_dir=str(blocker))
    first, second = with_usable_cache(opts), with_usable_cache(opts)
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "running without a cache" in err
    assert first.cache_dir == second.cache_dir and Path(first.cache_dir).is_dir()
    assert blocker.read_text() == "not a folder"
    fine = CompileOptions(latency_fraction=0.5, cache_dir=str(tmp_path / "cache"))
    assert with_usable_cache(fine) is fine


def test_compile_with_a_file_as_cache_dir_finishes(digits_onnx, tmp_path, capsys):
    from edgepass.compile import compile_with_report

    blocker = tmp_path / "cache-file"
    blocker.write_text("x")
    out, report, _ = compile_with_report(str(digits_onnx), DEVICE, latency_fraction=0.8, method="search",
                                         measure=False, cache_dir=str(blocker),
                                         accuracy_options={"max_levels": 2, "n_fit": 0})
    assert report.verified and edgepass.report_of(out) is not None
    assert "running without a cache" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. binary and malformed text inputs
@pytest.mark.parametrize("name, argv", [
    ("m.csv", ["device", "fit", "m.csv", "--name", "b", "-o", "b.json"]),
    ("plan.json", ["campaign", "plan.json"]),
    ("fleet.bin", ["compile", "model.onnx", "out", "--devices", "fleet.bin", *BUDGET]),
])
def test_binary_text_inputs(work, capsys, name, argv):
    (work / name).write_bytes(bytes(range(256)) * 4)
    rc, err = run(capsys, *argv)
    assert rc == 2 and "binary" in one_line_error(err)
    assert not (work / "b.json").exists() and not (work / "out").exists()


def test_fleet_list_with_a_nul_is_binary(work, capsys):
    (work / "fleet.bin").write_text("help/pixel2\nbad\x00.json\n")
    rc, err = run(capsys, "compile", "model.onnx", "out", "--devices", "fleet.bin", *BUDGET)
    assert rc == 2 and "binary" in one_line_error(err)


def test_deeply_nested_plan(work, capsys):
    (work / "plan.json").write_text("[" * 100000 + "]" * 100000)
    rc, err = run(capsys, "campaign", "plan.json")
    assert rc == 2 and "plan" in one_line_error(err)


# ------------------------------------------------------------------ 8. the last-resort handler
def _crash(exc):
    def verb(args):
        raise exc
    return verb


@pytest.mark.parametrize("debug", ["", "flag", "env"])
def test_internal_error_is_one_line_with_its_own_exit_code(work, capsys, monkeypatch, debug):
    monkeypatch.setattr("edgepass.commands.analyze.run", _crash(RuntimeError("boom\nsecond line")))
    if debug == "env":
        monkeypatch.setenv("EDGEPASS_DEBUG", "1")
    else:
        monkeypatch.delenv("EDGEPASS_DEBUG", raising=False)
    rc = main((["--debug"] if debug == "flag" else []) + ["analyze", "model.onnx"])
    err = capsys.readouterr().err
    assert rc == EXIT_INTERNAL == 70
    assert err.strip().splitlines()[-1].startswith("edgepass: internal error: RuntimeError: boom second line")
    assert ("Traceback" in err) == bool(debug)


def test_memory_error_is_one_line(work, capsys, monkeypatch):
    monkeypatch.setattr("edgepass.commands.analyze.run", _crash(MemoryError()))
    rc = main(["analyze", "model.onnx"])
    err = capsys.readouterr().err
    assert rc == EXIT_INTERNAL and err.count("\n") == 1 and "out of memory" in err


def test_sigterm_stops_like_ctrl_c_and_restores_the_handler(work, capsys, monkeypatch):
    import signal

    def terminate(args):
        os.kill(os.getpid(), signal.SIGTERM)
        return 0

    monkeypatch.setattr("edgepass.commands.analyze.run", terminate)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["analyze", "model.onnx"]) == 143
    assert capsys.readouterr().err.strip() == "edgepass: terminated"
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------ 9. the Python API checks its arguments first
@pytest.mark.parametrize("model, kwargs, error", [
    ("model.onnx", {"latency_ms": "5"}, OptionError),
    ("model.onnx", {"latency_ms": True}, OptionError),
    ("model.onnx", {"latency_ms": -1.0}, OptionError),
    ("model.onnx", {"latency_ms": float("nan")}, OptionError),
    ("model.onnx", {"energy_mj": float("inf")}, OptionError),
    ("model.onnx", {"latency_ms": 1.0, "seed": -1}, OptionError),
    ("model.onnx", {"latency_ms": 1.0, "precisions": ["int9"]}, OptionError),
    ("model.onnx", {"latency_ms": 1.0, "latency_msec": 3}, OptionError),
    (None, {"latency_ms": 1.0}, OptionError),
    (123, {"latency_ms": 1.0}, OptionError),
    ("nope.onnx", {"latency_ms": 1.0}, InputError),
])
def test_api_wrong_arguments_raise_before_work(work, monkeypatch, model, kwargs, error):
    monkeypatch.setattr(STAGES, "prepare", lambda *a, **k: pytest.fail("worked before checking"))
    with pytest.raises(error) as info:
        edgepass.compile(model, DEVICE, **kwargs)
    assert isinstance(info.value, EdgepassError)
    if error is OptionError:
        assert isinstance(info.value, TypeError)      # what Python users expect of a wrong call


def test_compile_fleet_takes_one_device_string_as_one_device(work):
    summary = edgepass.compile_fleet("model.onnx", "no/such-device", work / "out", latency_fraction=0.5,
                                     progress=False)
    assert [r["device"] for r in summary["devices"]] == ["no/such-device"]
    assert summary["exit_code"] == 5


# ------------------------------------------------------------------ 10. --check on a tampered report
@pytest.mark.parametrize("value", ["{not json", json.dumps({"design": 5}), json.dumps([1, 2]),
                                   json.dumps({"design": {"widths": {"stem.0": "x"}}}),
                                   json.dumps({"design": {"widths": {"no-such-layer": 3}}})])
def test_check_on_a_tampered_report(digits_onnx, tmp_path, capsys, value):
    model = onnx.load(str(digits_onnx))
    model.metadata_props.add(key="edgepass.report", value=value)
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, tampered)
    before = sums(tmp_path)
    rc, err = run(capsys, "compile", digits_onnx, tampered, "--device", DEVICE, "--check")
    line = one_line_error(err)
    assert rc == 2 and (str(tampered) in line or "design" in line)
    assert sums(tmp_path) == before
