"""Enumerable design spaces of the zoo, with their accuracy tables: ``space("nb201")`` (also reachable
as ``edgepass.zoo.space``).

A zoo space is what the optimizers see for a benchmark search space: knobs (6 edges x 5 ops for
NAS-Bench-201), an accuracy per design, and per-device latency from the training set, as a
:class:`~edgepass.optimizers.problem.LookupProblem`.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from .. import dataset
from ..errors import InputError
from ..zoo import nb201
from .problem import LookupProblem

_ACC = Path(__file__).resolve().parent.parent / "data" / "zoo" / "nb201_cifar10_valid.u16.gz"


@lru_cache(maxsize=1)
def nb201_accuracy() -> np.ndarray:
    """CIFAR-10 validation accuracy (%) of every NB201 cell, in code order."""
    return np.frombuffer(gzip.decompress(_ACC.read_bytes()), dtype="<u2").astype(np.float64) / 100.0


class ZooSpace:
    """NAS-Bench-201 as a design space: a design is 6 op indices (one per cell edge)."""

    name = "nb201"

    def __init__(self):
        self.ops = nb201.OPS
        self.n_choices = [len(nb201.OPS)] * len(nb201.EDGES)
        self.accuracy = nb201_accuracy()

    def knobs(self) -> list:
        return [("ops", f"edge{i}", list(self.ops)) for i in range(len(self.n_choices))]

    def code_index(self, code) -> int:
        return int(np.asarray(code, dtype=np.int64) @ (5 ** np.arange(5, -1, -1)))

    def spec(self, code) -> str:
        return "nb201:" + nb201.arch_str(tuple(self.ops[int(c)] for c in code))

    def code(self, spec: str) -> np.ndarray:
        body = spec.split(":", 1)[1] if ":" in spec else spec
        ops = nb201.parse_arch(spec, body) if not body.startswith("#") else \
            nb201.ops_of_code(nb201.index_codes()[int(body[1:])])
        return np.array([self.ops.index(o) for o in ops], dtype=np.int64)

    def latency_table(self, device_id: str, *, metric: str = "latency_ms") -> np.ndarray:
        """Measured latency of every cell on ``device_id`` from the training set (NaN where absent)."""
        sel = dataset.load().select(device=device_id, space="nb201", metric=metric)
        out = np.full(len(self.accuracy), np.nan)
        for spec_code, value in zip(sel.spec_code, sel.value):
            out[self.code_index(self.code(sel.specs[spec_code]))] = value
        return out

    def problem(self, latency_ms: np.ndarray):
        return LookupProblem(self.n_choices, self.accuracy, np.asarray(latency_ms, dtype=np.float64))


def space(name: str = "nb201") -> ZooSpace:
    if name != "nb201":
        raise InputError(f"zoo space {name!r} has no accuracy table here (only 'nb201')")
    return ZooSpace()


def spec(code, name: str = "nb201") -> str:
    return space(name).spec(code)
