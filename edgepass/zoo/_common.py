"""Small shared helpers for the zoo generators (no torch import at module level)."""
from __future__ import annotations

import re

from ..errors import InputError

_SPLIT = re.compile(r"[\s,\-]+")


def bad(spec: str, why: str) -> InputError:
    return InputError(f"bad zoo spec {spec!r}: {why}")


def int_list(spec: str, text: str, what: str, n: int | None, allowed) -> list[int]:
    """Parse ``text`` (ints separated by ',', '-' or spaces) into a list checked against ``allowed``."""
    items = [t for t in _SPLIT.split(text.strip()) if t]
    try:
        vals = [int(t) for t in items]
    except ValueError:
        raise bad(spec, f"{what} must be integers, got {text.strip()!r}") from None
    if n is not None and len(vals) != n:
        raise bad(spec, f"{what} needs {n} values, got {len(vals)}")
    for v in vals:
        if allowed is not None and v not in allowed:
            raise bad(spec, f"{what} value {v} not in {sorted(allowed)}")
    return vals


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to a multiple of ``divisor`` without going more than 10 % below it
    (the MobileNet convention used by the OFA and MnasNet/EfficientNet spaces)."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v
