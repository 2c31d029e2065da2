"""Measurement campaigns: plan validation, per-model failures, resume (torn rows included), the
CLI and ``device fit`` on its output, and >= 50 measurements on a 2-node Ray cluster with two
simulated device hosts -- undisturbed, then with a worker killed mid-run."""
from __future__ import annotations

import csv
import json
import os
import signal
import sys
from pathlib import Path

import pytest

import edgepass
from edgepass.campaign import COLUMNS, ERROR_COLUMNS, errors_path, expand, load_plan, measure_task, run_campaign
from edgepass.cli import main
from edgepass.errors import InputError

DIGITS = str(Path(edgepass.__file__).parent / "data" / "models" / "digits_cnn.onnx")
DEVICES = ["sim/host-a", "sim/host-b"]


def _plan(n_designs: int, *extra, seed: int = 0) -> dict:
    return {"devices": DEVICES, "models": [{"model": DIGITS, "random_designs": n_designs, "seed": seed}, *extra],
            "runs": 3, "warmup": 1}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _keys(rows) -> list[tuple]:
    return [(r["device"], r["model"], r["design"], r["threads"]) for r in rows]


# ---------------------------------------------------------------- plans
@pytest.mark.parametrize("plan, message", [
    ({"models": ["tv:resnet18"]}, "'devices' must be a non-empty list"),
    ({"devices": ["a"], "models": []}, "'models' must be a non-empty list"),
    ({"devices": ["a"], "models": ["x.onnx"], "runz": 3}, "unknown key"),
    ({"devices": ["a"], "models": [{"model": "x.onnx", "random_designs": 0}]}, "random_designs must be"),
    ({"devices": ["a"], "models": [{"path": "x.onnx"}]}, "must be a string or"),
    ({"devices": ["a"], "models": ["x.onnx"], "threads": 0}, "threads must be"),
])
def test_bad_plans_are_one_line_input_errors(plan, message):
    with pytest.raises(InputError, match=message):
        load_plan(plan)


def test_plan_expands_deterministically_devices_innermost_without_duplicates():
    plan = _plan(3)
    plan["models"].append({"model": DIGITS, "random_designs": 2, "seed": 0})  # the same 2 designs again
    before = json.dumps(plan)
    tasks, failures = expand(*load_plan(plan))
    assert json.dumps(plan) == before  # the caller's plan is not modified
    assert not failures and len(tasks) == 6 and [t["device"] for t in tasks[:4]] == DEVICES * 2
    assert expand(*load_plan(plan))[0] == tasks
    assert len({t["design"] for t in tasks}) == 3 and all(json.loads(t["design"])["widths"] for t in tasks)


def test_missing_plan_file_is_exit_code_2(tmp_path, capsys):
    assert main(["campaign", str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ---------------------------------------------------------------- in process
def test_bad_models_fail_their_own_rows_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "ds.csv"
    plan = _plan(3, str(tmp_path / "missing.onnx"), "nb201:not-a-cell")
    s = run_campaign(plan, out)
    assert (s["tasks"], s["measured"], s["skipped"], s["failed"]) == (8, 6, 0, 4)
    rows = _rows(out)
    assert list(rows[0]) == COLUMNS and len(rows) == 6 and len(set(_keys(rows))) == 6
    assert all(float(r["latency_ms"]) > 0 and r["runs"] == "3" and r["spec"] == "" for r in rows)
    for r in rows:  # the row precision is the design's widest-reaching one
        precs = set(json.loads(r["design"])["precisions"].values())
        assert r["precision"] == ("int8" if "int8" in precs else "fp16" if "fp16" in precs else "fp32")
    errors = _rows(errors_path(out))
    assert list(errors[0]) == ERROR_COLUMNS and len(errors) == 4
    assert {e["device"] for e in errors} == set(DEVICES)
    assert any("cannot read model" in e["error"] for e in errors) and any("bad zoo spec" in e["error"] for e in errors)
    assert all(e["attempts"] == "0" for e in errors)  # found out before any task ran

    first = out.read_bytes()
    s = run_campaign(plan, out)  # everything measured is skipped; the failed rows are tried again
    assert (s["measured"], s["skipped"], s["failed"]) == (0, 6, 4) and out.read_bytes() == first

    # a crash in the middle of appending a row leaves a torn line: it is dropped and re-measured
    lines = first.decode().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:25])
    s = run_campaign(plan, out)
    assert (s["measured"], s["skipped"]) == (1, 5)
    again = _rows(out)
    assert _keys(again) == _keys(rows)  # plan order, nothing duplicated
    assert [r["latency_ms"] for r in again[:-1]] == [r["latency_ms"] for r in rows[:-1]]


def test_a_device_host_measures_from_the_shipped_bytes_without_the_file():
    import numpy as np

    item = {"device": "sim/host-a", "model": "/nowhere/on/this/host.onnx", "spec": "", "design": "",
            "threads": 1, "runs": 2, "warmup": 0}
    shared = {"onnx": {item["model"]: np.frombuffer(Path(DIGITS).read_bytes(), dtype=np.uint8)}}
    row = measure_task(item, shared)
    assert list(row) == COLUMNS and row["precision"] == "fp32" and float(row["latency_ms"]) > 0
    with pytest.raises(InputError, match="cannot read model"):
        measure_task(item)


def test_cli_summary_on_stdout_and_device_fit_reads_the_campaign(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_plan(4)))
    assert main(["campaign", str(plan), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)  # stdout is the JSON summary and nothing else
    assert summary["measured"] == 8 and summary["out"] == str(tmp_path / "campaign.csv")
    dev = tmp_path / "fitted.json"
    assert main(["device", "fit", summary["out"], "--name", "sim b", "--from-device", "sim/host-b",
                 "-o", str(dev)]) == 0
    fitted = json.loads(dev.read_text())
    assert fitted["id"] == "user/sim-b" and fitted["provenance"]["latency_fit"]["k"] == 4
    assert main(["device", "fit", summary["out"], "--name", "x", "-o", str(dev)]) == 2  # which device?
    assert "--from-device" in capsys.readouterr().err


# ---------------------------------------------------------------- Ray: 2 nodes, one device each
try:
    import ray
except ImportError:  # the optional extra: the local executors are still tested
    ray = None
else:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this module
needs_ray = pytest.mark.skipif(ray is None, reason="needs ray (pip install 'edgepass[ray]')")
KILL: dict = {}  # set before a run; pickled by value with the task below


def measure_or_die(item, shared):
    """measure_task, except that the worker running KILL's item dies on that item's first attempt."""
    if KILL and (item["device"], item["design"]) == KILL["item"] and not os.path.exists(KILL["marker"]):
        Path(KILL["marker"]).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return measure_task(item, shared)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine (1 CPU each), each advertising one simulated device."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {DEVICES[0]: 1},
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, resources={DEVICES[1]: 1})
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


@needs_ray
def test_ray_campaign_of_50_measurements_resumes_after_a_partial_run(cluster, tmp_path):
    out = tmp_path / "ds.csv"
    s = run_campaign(_plan(10), out, executor="ray")  # an earlier, smaller campaign
    assert (s["measured"], s["failed"]) == (20, 0)
    s = run_campaign(_plan(25), out, executor="ray")  # the same designs first, then 15 more
    assert (s["tasks"], s["skipped"], s["measured"], s["failed"]) == (50, 20, 30, 0)
    rows = _rows(out)
    tasks, _ = expand(*load_plan(_plan(25)))
    assert _keys(rows) == [(t["device"], t["model"], t["design"], str(t["threads"])) for t in tasks]
    assert all(float(r["latency_ms"]) > 0 for r in rows)


@needs_ray
def test_ray_campaign_with_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster, tmp_path):
    out = tmp_path / "ds.csv"
    tasks, _ = expand(*load_plan(_plan(25, seed=1)))
    KILL.update(item=(tasks[23]["device"], tasks[23]["design"]), marker=str(tmp_path / "killed"))
    try:
        s = run_campaign(_plan(25, seed=1), out, executor="ray", task=measure_or_die)
    finally:
        KILL.clear()
    assert (tmp_path / "killed").exists()
    assert (s["measured"], s["failed"], s["retried"]) == (50, 0, 1)
    rows = _rows(out)
    assert len(rows) == 50 and len(set(_keys(rows))) == 50
    assert _keys(rows) == [(t["device"], t["model"], t["design"], str(t["threads"])) for t in tasks]
    first = out.read_bytes()
    s = run_campaign(_plan(25, seed=1), out, executor="ray")
    assert (s["measured"], s["skipped"]) == (0, 50) and out.read_bytes() == first


def test_zoo_rows_of_a_campaign_feed_the_training_set(tmp_path):
    from edgepass.campaign import training_set

    spec = "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    out = tmp_path / "farm.csv"
    out.write_text(",".join(COLUMNS) + "\n"
                   + f"farm/a,{spec},,fp32,1,1.5,0.1,1.4,1.5,1.3,20,{spec},h1\n"
                   + f"farm/a,,,fp32,1,2.5,0.1,2.4,2.5,2.3,20,{DIGITS},h1\n")
    ts = training_set(out)
    assert len(ts) == 1 and ts.counts("source") == {"campaign": 1}
    assert ts.specs[ts.spec_code[0]] == spec and float(ts.value[0]) == 1.5
    (tmp_path / "other.csv").write_text("model,latency_ms\nx,1\n")
    with pytest.raises(InputError, match="not a campaign CSV"):
        training_set(tmp_path / "other.csv")
