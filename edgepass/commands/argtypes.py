"""``type=`` functions for argparse: numbers checked where they are parsed, so a bad one is a
one-line usage error (exit 2) before any work."""
from __future__ import annotations

import argparse

from ..errors import MAX_SEED, MAX_THREADS


def _int_in(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, not {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{what} must be between {low} and {high}, not {value}")
    return value


def seed(text: str) -> int:
    return _int_in(text, 0, MAX_SEED, "a seed")


def threads(text: str) -> int:
    return _int_in(text, 1, MAX_THREADS, "a thread count")


def workers(text: str) -> int:
    return _int_in(text, 1, MAX_THREADS, "a worker count")


def count(text: str) -> int:
    """A non-negative count (runs, warm-up runs, top-K)."""
    return _int_in(text, 0, 10**9, "a count")


__all__ = ["seed", "threads", "workers", "count", "MAX_THREADS", "MAX_SEED"]
