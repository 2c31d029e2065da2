"""Where many independent tasks run: in this process, in a local process pool, or on Ray.

One small interface shared by fleet compiles and measurement campaigns:
``executor.map(fn, items)`` yields ``(index, TaskOutcome)`` as tasks finish (any order); a task
that raises is an outcome with ``error`` set, never an exception out of ``map``, so one bad item
fails its own row and not the whole job. ``fn`` must be a module-level function (picklable) for
the process pool and Ray.

``shared`` holds objects every task needs (a trained optimizer, calibration statistics) so they
are built once and shipped once: ``fn(item, shared)`` is called when ``shared`` is not None.
"""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .errors import InputError

EXECUTORS = ("inprocess", "process", "ray")


@dataclass
class TaskOutcome:
    value: Any = None
    error: str | None = None          # one line: "ExceptionType: message"
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _call(fn, item, shared):
    try:
        return TaskOutcome(fn(item) if shared is None else fn(item, shared))
    except Exception as exc:  # a task's failure is its own row
        return TaskOutcome(error=_one_line(exc) or traceback.format_exc(limit=1))


class InProcessExecutor:
    """Runs tasks one after another in this process (the default; no start-up cost)."""

    name = "inprocess"

    def map(self, fn: Callable, items: Iterable, *, shared=None) -> Iterator[tuple[int, TaskOutcome]]:
        for i, item in enumerate(items):
            yield i, _call(fn, item, shared)

    def close(self) -> None:
        pass


class ProcessPoolExecutor:
    """A local pool of worker processes (``--workers N``)."""

    name = "process"

    def __init__(self, workers: int | None = None):
        import os

        self.workers = int(workers or os.cpu_count() or 1)

    def map(self, fn: Callable, items: Iterable, *, shared=None) -> Iterator[tuple[int, TaskOutcome]]:
        import concurrent.futures as cf
        import multiprocessing as mp

        # spawn, not fork: torch / onnxruntime thread pools do not survive a fork
        with cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_call, fn, item, shared): i for i, item in enumerate(items)}
            for fut in cf.as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except Exception as exc:  # the worker process died
                    yield futures[fut], TaskOutcome(error=_one_line(exc))

    def close(self) -> None:
        pass


def get_executor(name: str = "inprocess", *, workers: int | None = None, address: str | None = None):
    """The executor called ``name`` (``inprocess``, ``process`` or ``ray``)."""
    if name == "inprocess":
        return InProcessExecutor()
    if name == "process":
        return ProcessPoolExecutor(workers)
    if name == "ray":
        try:
            from .ray_executor import RayExecutor
        except ImportError as exc:
            raise InputError(f"the ray executor needs ray: pip install 'edgepass[ray]' ({exc})") from None
        return RayExecutor(workers=workers, address=address)
    raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, not {name!r}")


__all__ = ["EXECUTORS", "TaskOutcome", "InProcessExecutor", "ProcessPoolExecutor", "get_executor"]
