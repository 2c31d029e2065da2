"""Where many independent tasks run: in this process, in a local process pool, or on Ray.

One small interface shared by fleet compiles and measurement campaigns:
``executor.map(fn, items)`` yields ``(index, TaskOutcome)`` as tasks finish (any order); a task
that raises is an outcome with ``error`` set, never an exception out of ``map``, so one bad item
fails its own row and not the whole job. ``fn`` must be a module-level function (picklable) for
the process pool and Ray.

``shared`` holds objects every task needs (a trained optimizer, calibration statistics) so they
are built once and shipped once: ``fn(item, shared)`` is called when ``shared`` is not None
(the process pool hands it to each worker process once, Ray puts it in the object store once).

``resources(item)`` (optional) names what a task needs to run, e.g. ``{"help/pixel2": 1}`` for a
measurement on that device: Ray places the task on a host advertising that custom resource
(``edgepass.ray_executor``); the local executors run everything on this machine and ignore it.

A task whose worker process dies (killed, out of memory) is retried up to ``max_retries`` times
(process pool and Ray); ``TaskOutcome.attempts`` says how many runs it took, and an item whose
retries are exhausted is an outcome with ``error`` set -- never a lost or a duplicated item.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

from .errors import InputError
from .tasks import TaskOutcome, run_task, task_error

EXECUTORS = ("inprocess", "process", "ray")


class _Executor:
    name = ""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(_Executor):
    """Runs tasks one after another in this process (the default; no start-up cost)."""

    name = "inprocess"

    def map(self, fn: Callable, items: Iterable, *, shared=None, resources=None) -> Iterator[tuple[int, TaskOutcome]]:
        for i, item in enumerate(items):
            yield i, run_task(fn, item, shared)


_WORKER_SHARED = None  # ``shared`` of the map a pool worker serves (set once by the initializer)


def _set_shared(shared) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _call_with_worker_shared(fn, item, has_shared: bool):
    return run_task(fn, item, _WORKER_SHARED if has_shared else None)


class ProcessPoolExecutor(_Executor):
    """A local pool of worker processes (``--workers N``)."""

    name = "process"

    def __init__(self, workers: int | None = None, *, max_retries: int = 2):
        import os

        self.workers = int(workers or os.cpu_count() or 1)
        self.max_retries = int(max_retries)

    def map(self, fn: Callable, items: Iterable, *, shared=None, resources=None) -> Iterator[tuple[int, TaskOutcome]]:
        import concurrent.futures as cf
        import multiprocessing as mp
        from concurrent.futures.process import BrokenProcessPool

        items = list(items)
        attempts = [0] * len(items)
        todo = list(range(len(items)))
        while todo:
            # spawn, not fork: torch / onnxruntime thread pools do not survive a fork. `shared` is
            # pickled once per worker process (initializer), not once per task.
            broken: list[int] = []
            with cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                        initializer=_set_shared, initargs=(shared,)) as pool:
                futures = {}
                for i in todo:
                    attempts[i] += 1
                    futures[pool.submit(_call_with_worker_shared, fn, items[i], shared is not None)] = i
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    try:
                        out = fut.result()
                    except BrokenProcessPool as exc:  # a worker died: every unfinished task of the pool fails
                        if attempts[i] <= self.max_retries:
                            broken.append(i)
                            continue
                        out = TaskOutcome(error=f"worker lost {attempts[i]} times: {task_error(exc)}")
                    except Exception as exc:  # e.g. an unpicklable result
                        out = TaskOutcome(error=task_error(exc))
                    out.attempts = attempts[i]
                    yield i, out
            todo = sorted(broken)  # a fresh pool for the tasks the dead worker took down with it


def get_executor(name: str = "inprocess", *, workers: int | None = None, address: str | None = None,
                 resources: dict[str, float] | None = None):
    """The executor called ``name`` (``inprocess``, ``process`` or ``ray``). ``resources``: custom
    resources a *local* Ray started here advertises (simulated device hosts); ignored otherwise."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "process":
        return ProcessPoolExecutor(workers)
    if name == "ray":
        try:
            # ray is optional and slow to import: only when asked for
            from .ray_executor import RayExecutor
        except ImportError as exc:
            raise InputError(f"the ray executor needs ray: pip install 'edgepass[ray]' ({exc})") from None
        return RayExecutor(workers=workers, address=address, resources=resources)
    raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, not {name!r}")


__all__ = ["EXECUTORS", "TaskOutcome", "InProcessExecutor", "ProcessPoolExecutor", "get_executor"]
