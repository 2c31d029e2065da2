"""Per-op cost tables over the knob combinations of a design space (design-space layer).

An op's cost depends only on the widths of the channel groups its tensors carry, its own kernel and
its own precision. :func:`op_combos` enumerates, per op, the op as designed under every combination
of those knobs; a cost model gives one value per designed op (latency: the latency predictor's MLP,
energy: the per-op energy model), :func:`summed_tables` sums ops with the same knob set into one
table, and :func:`table_sums` scores a batch of encoded designs (``DesignSpace.encode``) with array
lookups and sums. Used by :class:`edgepass.predictors.latency.LatencyTable` and
:class:`edgepass.predictors.energy.EnergyTable`.
"""
from __future__ import annotations

import itertools

import numpy as np

MAX_COMBOS = 20_000


def _design_op(space, op, widths: dict, kernel: int | None, precision: str | None):
    """The op as :meth:`DesignSpace.design_graph` would produce it (same code path, one op)."""
    return space.design_op(op, widths, kernel, precision)


def op_combos(space) -> list:
    """Per op of ``space``: ``(knob indices it depends on, their sizes, [the op as designed under each
    combination of those knobs, row-major])`` -- an op depends only on the widths of the channel
    groups its tensors carry, its own kernel and its own precision."""
    knobs = space.knobs()
    kidx = {(k, key): i for i, (k, key, _) in enumerate(knobs)}
    offered = {g.id for g in space.groups}
    ident = space.identity()
    out = []
    for op in space.graph.ops():
        gids = []
        for t in list(op.inputs) + list(op.outputs):
            lay = space.layouts.get(t)
            if lay is None or space.graph.graph["tensors"].get(t) is None:
                continue
            for gid, _size, _rep in lay[1]:
                if gid in offered and gid not in gids:
                    gids.append(gid)
        ks = [kidx[("widths", g)] for g in gids]
        if op.name in space.kernels:
            ks.append(kidx[("kernels", op.name)])
        if op.name in space.precisions:
            ks.append(kidx[("precisions", op.name)])
        ks = sorted(ks)
        sizes = [len(knobs[k][2]) for k in ks]
        n = int(np.prod(sizes)) if sizes else 1
        if n > MAX_COMBOS:
            raise ValueError(f"op {op.name} has {n} knob combinations (> {MAX_COMBOS})")
        ops = []
        for combo in itertools.product(*[range(s) for s in sizes]):
            widths = dict(ident.widths)
            kernel = ident.kernels.get(op.name)
            prec = ident.precisions.get(op.name)
            for k, c in zip(ks, combo):
                knob, key, choices = knobs[k]
                if knob == "widths":
                    widths[key] = choices[c]
                elif knob == "kernels":
                    kernel = choices[c]
                else:
                    prec = choices[c]
            ops.append(_design_op(space, op, widths, kernel, prec))
        out.append((tuple(ks), tuple(sizes), ops))
    return out


def designed_ops(combos: list) -> list:
    """Every designed op of :func:`op_combos`, flat, in the order :func:`summed_tables` reads its
    values (op by op, each op's knob combinations row-major)."""
    return [o for _, _, ops in combos for o in ops]


def summed_tables(combos: list, values: np.ndarray) -> tuple[float, list]:
    """``(constant, tables)`` from one value per designed op of :func:`op_combos` (in its order):
    ops with the same knob set share one summed table; ops without knobs add to the constant."""
    per_set: dict[tuple, list] = {}
    pos = 0
    for ks, sizes, ops in combos:
        t = np.asarray(values[pos:pos + len(ops)], dtype=np.float64)
        pos += len(ops)
        if ks in per_set:
            per_set[ks][1] += t
        else:
            per_set[ks] = [sizes, t.copy()]
    constant = float(sum(t.sum() for ks, (_, t) in per_set.items() if not ks))
    tables = []  # (knob indices, strides, flat table)
    for ks, (sizes, t) in per_set.items():
        if ks:
            strides = np.cumprod([1] + list(sizes[::-1]))[:-1][::-1].astype(np.int64)
            tables.append((np.asarray(ks, dtype=np.int64), strides, t))
    return constant, tables


def table_sums(codes: np.ndarray, constant: float, tables: list) -> np.ndarray:
    """Per row of ``codes``: ``constant`` + one lookup per table of :func:`summed_tables`."""
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim == 1:
        codes = codes[None]
    out = np.full(len(codes), constant, dtype=np.float64)
    for ks, strides, t in tables:
        out += t[codes[:, ks] @ strides]
    return out


__all__ = ["MAX_COMBOS", "op_combos", "designed_ops", "summed_tables", "table_sums"]
