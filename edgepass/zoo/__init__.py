"""PyTorch generators for every architecture family in the measured public data (shared/data/).

``build(spec) -> ZooModel`` (unpacks as ``module, example_input = build(spec)``);
``parse(spec) -> dict`` validates without building (raises :class:`edgepass.errors.InputError`,
one line); ``spec_from_row(row)`` turns a row of a data CSV into a spec; ``coverage(rows)``
reports the share of rows that can be built.

Spec grammar: ``<space>[@<variant>]:<body>``

==============  =====================================================================  =========
space           body                                                                   variants
==============  =====================================================================  =========
``nb201``       NAS-Bench-201 arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` or   cifar10 (default), cifar100,
                ``#<index>`` (official index 0..15624)                                  ImageNet16-120
``fbnet``       22 ops among k3_e1 k3_e1_g2 k3_e3 k3_e6 k5_e1 k5_e1_g2 k5_e3 k5_e6     ImageNet (default, 224),
                skip, joined by '-', ',' or spaces (or 22 op indices 0..8)              cifar100
``ofa``         ``<20 ks>|<20 e>|<5 d>|<r>`` (lists joined by ',', '-' or spaces)       w1.0 (default), w1.2
``anb``         ``<7 e>|<7 k>|<7 l>|<7 se 0/1>`` (Accel-NASBench block columns)        --
``tv``          torchvision builder name or mobile-ml-benchmark model name              --
==============  =====================================================================  =========

Examples: ``nb201:#1234``, ``nb201@cifar100:|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|``,
``fbnet:k5_e6-skip-k3_e1_g2-...`` (22 ops), ``ofa:7,5,...|6,4,...|2,2,2,2,3|204``,
``anb:6,4,6,6,6,1,1|3,5,3,5,5,3,3|1,2,3,3,2,2,2|0,0,0,0,0,0,0``, ``tv:mobilenetv2_wd2``.
All models are in eval mode with random weights, traceable by ``torch.fx.symbolic_trace`` and
exportable by ``torch.onnx.export(..., dynamo=False)``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import InputError
from . import anb, fbnet, nb201, ofa, tv
from ._common import bad

SPACES = {"nb201": nb201, "fbnet": fbnet, "ofa": ofa, "anb": anb, "tv": tv}

__all__ = ["ZooModel", "build", "parse", "spec_from_row", "coverage", "SPACES", "space", "spec"]


@dataclass
class ZooModel:
    """A built zoo model: ``module`` (eval mode), ``example_inputs`` (a 1-tuple with one batch-1
    tensor of the input shape), ``spec`` (canonical spec string) and ``config`` (parsed spec).
    Iterating yields ``(module, example_input)`` so ``m, x = build(spec)`` works."""

    module: Any
    example_inputs: tuple
    spec: str
    config: dict = field(default_factory=dict)

    @property
    def example_input(self):
        return self.example_inputs[0]

    def __iter__(self):
        yield self.module
        yield self.example_inputs[0]


def parse(spec: str) -> dict:
    """Validate ``spec`` and return its configuration (includes ``canonical`` and ``input_shape``)."""
    if not isinstance(spec, str):
        raise InputError(f"zoo spec must be a string, got {type(spec).__name__}")
    head, sep, body = spec.partition(":")
    if not sep:
        raise bad(spec, f"expected <space>:<arch>, spaces: {', '.join(SPACES)}")
    space, _, variant = head.strip().partition("@")
    if space not in SPACES:
        raise bad(spec, f"unknown space {space!r} (spaces: {', '.join(SPACES)})")
    if not body.strip():
        raise bad(spec, "empty architecture")
    return SPACES[space].parse(spec, body, variant or None)


def build(spec: str, *, seed: int = 0) -> ZooModel:
    """Build the model named by ``spec`` (random weights from ``seed``; eval mode)."""
    import torch

    cfg = parse(spec)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        module = SPACES[cfg["space"]].build(cfg).eval()
        x = torch.randn(*cfg["input_shape"])
    finally:
        torch.random.set_rng_state(state)
    return ZooModel(module=module, example_inputs=(x,), spec=cfg["canonical"], config=cfg)


def spec_from_row(row: dict) -> str:
    """Spec of one row of a shared/data CSV (csv.DictReader dict).

    nb201: help/nasbench201_latency, oneproxy, mini_nasbench201, nas_landscapes (``arch_str``);
    fbnet: help/fbnet_latency (``op_names``); ofa: help/ofa_latency (``ks``, ``e``, ``d``, ``r``);
    anb: accel_nasbench (``block<i>_<e|k|l|se>``); tv: mobile-ml-benchmark (``model``).
    """
    if "arch_str" in row:
        return f"nb201:{row['arch_str']}"
    if "op_names" in row:
        return "fbnet:" + "-".join(row["op_names"].split())
    if all(k in row for k in ("ks", "e", "d", "r")):
        return "ofa:" + "|".join(",".join(str(row[k]).split()) for k in ("ks", "e", "d", "r"))
    if "block0_e" in row:
        return "anb:" + "|".join(",".join(str(row[f"block{i}_{f}"]) for i in range(7)) for f in ("e", "k", "l", "se"))
    if "model" in row:
        return f"tv:{row['model']}"
    raise InputError(f"cannot tell the search space of a row with columns {sorted(row)[:6]}...")


def coverage(rows: Iterable[dict], *, build_models: bool = False) -> dict:
    """Share of ``rows`` (CSV dicts) that the zoo can generate.

    A row counts when its spec parses (``build_models=True`` also builds each module — slow).
    Returns ``{"n", "ok", "share", "by_space", "failures"}`` where ``failures`` lists
    ``(row_label, message)`` for the first 20 rows that fail.
    """
    n = ok = 0
    by_space: dict[str, list[int]] = {}
    failures = []
    for row in rows:
        n += 1
        space = "?"
        label = row.get("model") or row.get("arch_idx") or row.get("result_id") or row.get("row") or str(n - 1)
        try:
            spec = spec_from_row(row)
            space = spec.split(":", 1)[0]
            if build_models:
                build(spec)
            else:
                parse(spec)
        except InputError as e:
            by_space.setdefault(space, [0, 0])[1] += 1
            if len(failures) < 20:
                failures.append((label, str(e)))
            continue
        ok += 1
        by_space.setdefault(space, [0, 0])[0] += 1
        by_space[space][1] += 1
    return {"n": n, "ok": ok, "share": ok / n if n else 0.0,
            "by_space": {k: {"ok": v[0], "n": v[1]} for k, v in by_space.items()}, "failures": failures}


def __getattr__(name):
    # space()/spec() moved up to edgepass.optimizers.zoo_space (they price designs from the dataset);
    # the old names keep working, loaded by name so that the zoo never imports a layer above it
    if name in ("space", "spec"):
        return getattr(importlib.import_module("edgepass.optimizers.zoo_space"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
