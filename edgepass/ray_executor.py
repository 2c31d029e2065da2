"""The Ray executor: the same ``map`` as the local executors, on a Ray cluster (``edgepass[ray]``).

Only :func:`edgepass.executors.get_executor` imports this module, so ``import edgepass`` never
imports ray. What Ray adds over the local executors:

* **a cluster**: ``address`` connects to a running cluster (``ray start --head`` on the head node,
  ``ray start --address=HEAD:6379`` on the others); without it a local Ray is started with
  ``workers`` CPUs (default: all of this machine's), no dashboard, and Ray's logs at WARNING on
  stderr (worker stdout is not forwarded, so results on stdout stay clean). An already
  initialised Ray (``ray.init`` by the caller) is used as is and left running by :meth:`close`.
* **shared objects once**: ``shared`` is put in the object store once (``ray.put``) and every task
  receives it by reference -- a node fetches it once, not once per task.
* **placement**: ``resources(item)`` names custom resources a task needs, e.g. ``{"help/pixel2": 1}``
  so a measurement runs only on the host that advertises that device
  (``ray start --resources='{"help/pixel2": 1}'``; one unit per device also means one measurement
  at a time per device). A resource no node offers fails its items at once instead of waiting
  forever.
* **faults**: a task whose worker process (or node) died is resubmitted, up to ``max_retries``
  times, and the scheduler places it on any worker that satisfies its resources; when retries
  are exhausted the item's outcome carries the error and the number of attempts. Ray's own task
  retries are off (``max_retries=0``) so that attempts are counted here, exactly once each.
  Exceptions raised *by the task* are not retried: they are the item's result (a bad model).
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Iterable, Iterator

import ray
import ray.exceptions as rex

from .errors import InputError
from .tasks import TaskOutcome, run_task, task_error

#: Errors meaning the process or node running a task went away, not that the task failed.
LOST_WORKER_ERRORS = (rex.WorkerCrashedError, rex.NodeDiedError, rex.LocalRayletDiedError, rex.ObjectLostError,
                      rex.OwnerDiedError, rex.OutOfMemoryError)

#: At most this many tasks are submitted and not yet collected (bounds the driver's memory).
MAX_IN_FLIGHT = 2000


def _short(exc: BaseException, limit: int = 300) -> str:
    text = task_error(exc)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a ``HOST:PORT`` nobody listens on (``ray.init`` would retry for minutes)."""
    import socket

    host, sep, port = address.rpartition(":")
    if address.startswith(("ray://", "auto", "local")) or not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} "
                         f"(is `ray start --head` running there?)") from None


class RayExecutor:
    """Runs tasks on Ray; see the module docstring."""

    name = "ray"

    def __init__(self, workers: int | None = None, address: str | None = None, *, max_retries: int = 2,
                 resources: dict[str, float] | None = None):
        """``resources``: custom resources the *local* Ray started here advertises (ignored with
        ``address``; on a real cluster each host advertises its own with ``ray start --resources``)."""
        self.max_retries = int(max_retries)
        self._owns_ray = False
        if not ray.is_initialized():
            opts = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
            if address:
                _check_reachable(address)
            try:
                if address:
                    ray.init(address=address, **opts)
                else:
                    ray.init(num_cpus=int(workers or os.cpu_count() or 1), resources=dict(resources or {}), **opts)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError... for a bad address
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise InputError(f"cannot start or reach {where}: {_short(exc)}") from None
            self._owns_ray = True
        # one remote wrapper around the same `run_task` the local executors use; Ray's own retries off
        self._remote = ray.remote(max_retries=0)(run_task)

    # ------------------------------------------------------------------ helpers
    def _options(self, need: dict | None):
        if not need:
            return self._remote
        need = dict(need)
        return self._remote.options(num_cpus=need.pop("CPU", 1), resources=need or None)

    @staticmethod
    def _unavailable(need: dict | None, total: dict) -> str | None:
        for key, amount in (need or {}).items():
            if total.get(key, 0) < amount:
                return (f"no Ray node offers resource {key!r} x{amount} (start the host with "
                        f"ray start --resources='{{\"{key}\": 1}}')")
        return None

    # ------------------------------------------------------------------ the interface
    def map(self, fn: Callable, items: Iterable, *, shared=None,
            resources: Callable[[object], dict] | None = None) -> Iterator[tuple[int, TaskOutcome]]:
        """Yield ``(index, TaskOutcome)`` as tasks finish; ``resources(item)`` -> e.g. ``{"dev": 1}``."""
        items = list(items)
        fn_ref = ray.put(fn)
        shared_ref = ray.put(shared) if shared is not None else None
        total = ray.cluster_resources()
        pending: dict = {}            # ObjectRef -> (index, attempt)
        queue = list(range(len(items)))[::-1]  # popped from the end: submission in item order
        needs = [resources(it) if resources else None for it in items]

        def submit(i: int, attempt: int) -> None:
            ref = self._options(needs[i]).remote(fn_ref, items[i], shared_ref)
            pending[ref] = (i, attempt)

        try:
            while queue or pending:
                while queue and len(pending) < MAX_IN_FLIGHT:
                    i = queue.pop()
                    why = self._unavailable(needs[i], total)
                    if why:
                        yield i, TaskOutcome(error=f"ResourceUnavailable: {why}", attempts=0)
                    else:
                        submit(i, 1)
                if not pending:
                    continue
                refs = list(pending)
                ready, rest = ray.wait(refs, num_returns=1)
                if rest:  # collect everything else already finished in the same round
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    ready += more
                for ref in ready:
                    i, attempt = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except LOST_WORKER_ERRORS as exc:
                        if attempt <= self.max_retries:
                            submit(i, attempt + 1)  # the scheduler picks any worker with the resources
                            continue
                        out = TaskOutcome(error=f"worker lost {attempt} times: {_short(exc)}")
                    except rex.RayError as exc:  # e.g. cancelled, runtime-env or unpicklable result
                        out = TaskOutcome(error=_short(exc))
                    out.attempts = attempt
                    yield i, out
        finally:  # the consumer stopped early (or failed): do not leave work running
            for ref in pending:
                ray.cancel(ref, force=False)

    def close(self) -> None:
        """Shut down the local Ray this executor started (a Ray started by the caller stays up)."""
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["RayExecutor", "LOST_WORKER_ERRORS"]
