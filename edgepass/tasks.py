"""One task's outcome, shared by every executor (:mod:`edgepass.executors`, :mod:`edgepass.ray_executor`)."""
from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any


@dataclass
class TaskOutcome:
    value: Any = None
    error: str | None = None          # one line: "ExceptionType: message"
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def task_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def run_task(fn, item, shared):
    try:
        return TaskOutcome(fn(item) if shared is None else fn(item, shared))
    except Exception as exc:  # a task's failure is its own row
        return TaskOutcome(error=task_error(exc) or traceback.format_exc(limit=1))


__all__ = ["TaskOutcome", "run_task", "task_error"]
