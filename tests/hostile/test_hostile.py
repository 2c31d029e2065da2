"""Hostile and odd inputs, every verb: a clean one-line error with its exit code, never a traceback,
never a lost or modified input, no stray file, bounded time and memory (see ``harness``).

The default run takes the cases that finish in well under a second each; ``-m slow`` the rest
(full compiles, the default method's training, signals, a 2 GiB calibration file).
``benchmarks/hostile.py`` runs them all in subprocesses and prints the totals.
"""
from __future__ import annotations

import pytest

from .cases import all_cases
from .harness import run_case

CASES = all_cases()


def test_enough_cases():
    assert len(CASES) >= 150
    assert sum(not c.slow for c in CASES) >= 100


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_hostile(case, tmp_path):
    verdict = run_case(case, tmp_path)
    assert not verdict.problems, f"{case.name}: " + "; ".join(verdict.problems) + \
        f"\n--- stderr ---\n{verdict.outcome.stderr[-2000:]}"
