"""Executors: in-process, process pool and Ray -- outcomes, shared objects, placement, dead workers,
and the fleet compile of a small model for 20 devices on a 2-node Ray cluster with a worker killed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import edgepass
import edgepass.fleet
from edgepass.errors import InputError
from edgepass.executors import InProcessExecutor, ProcessPoolExecutor, TaskOutcome, get_executor

DIGITS = Path(edgepass.__file__).parent / "data" / "models" / "digits_cnn.onnx"


# ---------------------------------------------------------------- tasks (module level: picklable)
def square(x):
    return x * x


def plus_shared(x, shared):
    return x + shared["offset"] + int(shared["table"].sum())


def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd\n{x}")
    return x


def die_once(item, shared=None):
    """Kill the worker running this task on its first attempt (the marker file says it ran once)."""
    value, marker = item
    if marker and not os.path.exists(marker):
        Path(marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return value if shared is None else plus_shared(value, shared)


def die_always(item):
    if item == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def node_of(_):
    import ray

    return ray.get_runtime_context().get_node_id()


# ---------------------------------------------------------------- local executors
def test_importing_edgepass_never_imports_ray():
    code = ("import sys, edgepass, edgepass.executors, edgepass.campaign, edgepass.fleet, edgepass.cli; "
            "edgepass.cli.build_parser(); assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_inprocess_outcomes_in_order_with_errors_per_item():
    out = dict(InProcessExecutor().map(fail_on_odd, range(5)))
    assert [out[i].value for i in (0, 2, 4)] == [0, 2, 4]
    assert out[1].error == "ValueError: odd 1" and out[3].value is None and not out[3].ok
    assert all(o.attempts == 1 for o in out.values())


def test_get_executor_rejects_unknown_name():
    with pytest.raises(InputError, match="executor must be one of"):
        get_executor("threads")


def test_process_pool_shares_once_and_retries_a_killed_worker(tmp_path):
    import numpy as np

    shared = {"offset": 10, "table": np.ones(1000)}
    items = [(i, str(tmp_path / "died") if i == 2 else None) for i in range(6)]
    with ProcessPoolExecutor(2) as ex:
        got = dict(ex.map(die_once, items, shared=shared))
    assert sorted(got) == list(range(6)) and [got[i].value for i in range(6)] == [1010 + i for i in range(6)]
    assert got[2].attempts >= 2 and (tmp_path / "died").exists()  # killed once, then run in a fresh pool


# ---------------------------------------------------------------- Ray: one 2-node cluster for the module
try:
    import ray
except ImportError:  # the optional extra: the local executors are still tested
    ray = None
else:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this module
needs_ray = pytest.mark.skipif(ray is None, reason="needs ray (pip install 'edgepass[ray]')")
HOSTS = {"sim/host-a": 1, "sim/host-b": 1}


@needs_ray
def test_unreachable_ray_address_is_a_quick_one_line_error():
    assert not ray.is_initialized()
    with pytest.raises(InputError, match="cannot reach the Ray cluster at 127.0.0.1:1"):
        get_executor("ray", address="127.0.0.1:1")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, one CPU each, each advertising one simulated device."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"sim/host-a": 1},
                                                      "include_dashboard": False})
    c.add_node(num_cpus=1, resources={"sim/host-b": 1})
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield c
    ray.shutdown()
    c.shutdown()


@needs_ray
def test_ray_outcomes_shared_and_errors(cluster):
    import numpy as np

    ex = get_executor("ray")
    got = dict(ex.map(plus_shared, range(6), shared={"offset": 1, "table": np.ones(10_000)}))
    assert [got[i].value for i in range(6)] == [10_001 + i for i in range(6)]
    got = dict(ex.map(fail_on_odd, range(4)))
    assert got[1].error == "ValueError: odd 1" and got[2].value == 2 and got[3].attempts == 1
    ex.close()
    assert ray.is_initialized()  # a Ray the caller started stays up


@needs_ray
def test_ray_places_tasks_on_the_host_with_the_device(cluster):
    owner = {k: n["NodeID"] for n in ray.nodes() if n["Alive"] for k in n["Resources"] if k in HOSTS}
    assert len(set(owner.values())) == 2
    devices = ["sim/host-a", "sim/host-b"] * 4
    got = dict(get_executor("ray").map(node_of, devices, resources=lambda d: {d: 1}))
    assert all(got[i].value == owner[d] for i, d in enumerate(devices))
    # a device no node advertises fails its items at once instead of waiting forever
    got = dict(get_executor("ray").map(square, [3], resources=lambda _: {"sim/nowhere": 1}))
    assert "no Ray node offers resource 'sim/nowhere'" in got[0].error and got[0].attempts == 0


@needs_ray
def test_ray_retries_a_killed_worker_then_records_the_failure(cluster, tmp_path):
    from edgepass.ray_executor import RayExecutor

    items = [(i, str(tmp_path / "died") if i == 3 else None) for i in range(8)]
    place = lambda it: {"sim/host-a" if it[0] % 2 else "sim/host-b": 1}  # noqa: E731
    got = dict(RayExecutor().map(die_once, items, resources=place))
    assert sorted(got) == list(range(8)) and [got[i].value for i in range(8)] == list(range(8))
    assert got[3].attempts == 2 and all(got[i].attempts == 1 for i in range(8) if i != 3)
    # retries exhausted: the item is a recorded failure, the others are untouched
    got = dict(RayExecutor(max_retries=1).map(die_always, ["a", "die", "b"]))
    assert got[0].value == "a" and got[2].value == "b"
    assert got[1].error.startswith("worker lost 2 times: WorkerCrashedError") and got[1].attempts == 2


# ---------------------------------------------------------------- fleet compile on Ray, with a kill
FLEET_KILL: dict = {}  # set before a run; pickled by value together with the task below
_real_fleet_task = edgepass.fleet.fleet_task


def fleet_task_dying_once(item, shared):
    name = item[0]
    if FLEET_KILL and name == FLEET_KILL["device"] and not os.path.exists(FLEET_KILL["marker"]):
        Path(FLEET_KILL["marker"]).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_fleet_task(item, shared)


def _fleet_devices(n=20):
    from edgepass.devices import list_devices

    return [d.id for d in list_devices() if tuple(d.precisions) == ("fp32",)][:n]


def _fleet_files(outdir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(outdir.iterdir())}


@needs_ray
def test_fleet_compile_on_ray_for_20_devices_survives_a_killed_worker(cluster, tmp_path, monkeypatch):
    import edgepass.fleet as fleet

    devices = _fleet_devices()
    assert len(devices) == 20
    # the per-device search and a coarse accuracy sweep, cached in tmp_path: the test's cost does not
    # depend on what the user's cache holds (the amortized optimizer is test_compile_fleet's business)
    opts = dict(latency_fraction=0.7, method="search", accuracy_options={"max_levels": 2, "n_fit": 0},
                cache_dir=str(tmp_path / "cache"), executor="ray", progress=False)
    first = fleet.compile_fleet(str(DIGITS), devices, tmp_path / "a", **opts)
    # whether 70 % is reachable on a tiny model depends on each device's fixed per-run overhead: the
    # test is about losing nothing, so it asks every device for a verified output, feasible or closest
    counts = first["counts"]
    assert (counts["devices"], counts["verified"], counts["failed"]) == (20, 20, 0) and counts["feasible"] >= 1
    files = _fleet_files(tmp_path / "a")
    assert len(files) == 41 and not [n for n in files if ".tmp" in n]  # 20 models + 20 reports + summary

    victim = fleet.device_filename(devices[7])
    FLEET_KILL.update(device=victim, marker=str(tmp_path / "killed"))
    monkeypatch.setattr(fleet, "fleet_task", fleet_task_dying_once)
    try:
        second = fleet.compile_fleet(str(DIGITS), devices, tmp_path / "b", **opts)
    finally:
        FLEET_KILL.clear()
    assert (tmp_path / "killed").exists()  # the worker did die mid-run
    assert second["counts"] == first["counts"]
    # nothing lost, nothing duplicated, and the outputs equal the undisturbed run's: models and
    # summary byte for byte, reports but for their timings
    again = _fleet_files(tmp_path / "b")
    assert sorted(again) == sorted(files)
    for name, data in files.items():
        if name.endswith(".report.json"):
            a, b = json.loads(data), json.loads(again[name])
            a.pop("seconds"), b.pop("seconds")
            assert a == b, name
        else:
            assert again[name] == data, name
    assert json.loads(files["summary.json"])["exit_code"] == (0 if counts["feasible"] == 20 else 3)
