"""NAS-Bench-201 cell networks (Dong & Yang, ICLR 2020), as the benchmark's ``infer.tiny`` defines them.

Macro skeleton (C=16, N=5): stem conv3x3(3->C)+BN; N cells at C; a ResNet basic block
(stride 2, C->2C); N cells at 2C; a basic block (2C->4C); N cells at 4C; BN+ReLU; global
average pool; linear classifier.  A cell is a 4-node DAG; node j = sum over i<j of
op_{j<-i}(node i); the output is node 3.  Ops: ``none`` (zeros, kept as ``x * 0`` as the
benchmark does), ``skip_connect`` (identity), ``nor_conv_1x1`` / ``nor_conv_3x3``
(ReLU -> Conv(no bias) -> BN), ``avg_pool_3x3`` (3x3 stride 1 pad 1, count_include_pad=False).
The reduction block is ReLU-Conv3x3(s2)-BN -> ReLU-Conv3x3-BN, plus a shortcut
AvgPool2d(2,2) -> Conv1x1(no bias), added (no final activation).

Written from the paper's description and the benchmark's published structure; no code copied.
"""
from __future__ import annotations

import gzip
import struct
from functools import lru_cache
from pathlib import Path

from ._common import bad

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# edge order of the arch string: (to, from)
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
N_ARCHS = 15625

# dataset variant -> (input side, classes)
VARIANTS = {"cifar10": (32, 10), "cifar100": (32, 100), "ImageNet16-120": (16, 120)}
DEFAULT_VARIANT = "cifar10"

_DATA = Path(__file__).resolve().parent.parent / "data" / "zoo" / "nb201_index.u16.gz"


@lru_cache(maxsize=1)
def index_codes() -> tuple[int, ...]:
    raw = gzip.decompress(_DATA.read_bytes())
    return struct.unpack(f"<{N_ARCHS}H", raw)


@lru_cache(maxsize=1)
def _code_to_index() -> dict[int, int]:
    return {c: i for i, c in enumerate(index_codes())}


def code_of(ops: tuple[str, ...]) -> int:
    c = 0
    for o in ops:
        c = c * 5 + OPS.index(o)
    return c


def ops_of_code(code: int) -> tuple[str, ...]:
    out = []
    for _ in range(6):
        code, r = divmod(code, 5)
        out.append(OPS[r])
    return tuple(reversed(out))


def arch_str(ops: tuple[str, ...]) -> str:
    o = ops
    return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"


def index_to_arch(idx: int) -> str:
    return arch_str(ops_of_code(index_codes()[idx]))


def arch_to_index(arch: str) -> int:
    return _code_to_index()[code_of(parse_arch(arch, arch))]


def parse_arch(spec: str, text: str) -> tuple[str, ...]:
    text = text.strip()
    nodes = text.split("+")
    if len(nodes) != 3:
        raise bad(spec, "a NAS-Bench-201 arch string has 3 nodes separated by '+', "
                        "e.g. |nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    ops = []
    for j, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise bad(spec, f"node {j} must be written |op~i|...| (got {node!r})")
        toks = [t for t in node.strip("|").split("|")]
        if len(toks) != j:
            raise bad(spec, f"node {j} needs {j} input edges, got {len(toks)}")
        for i, tok in enumerate(toks):
            op, sep, src = tok.partition("~")
            if not sep or src != str(i):
                raise bad(spec, f"edge {tok!r} of node {j} must read op~{i}")
            if op not in OPS:
                raise bad(spec, f"unknown NAS-Bench-201 op {op!r} (ops: {', '.join(OPS)})")
            ops.append(op)
    return tuple(ops)


def parse(spec: str, body: str, variant: str | None) -> dict:
    variant = variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise bad(spec, f"unknown nb201 dataset {variant!r} (choose {', '.join(VARIANTS)})")
    body = body.strip()
    if body.startswith("#"):
        try:
            idx = int(body[1:])
        except ValueError:
            raise bad(spec, f"NAS-Bench-201 index must be an integer, got {body[1:]!r}") from None
        if not 0 <= idx < N_ARCHS:
            raise bad(spec, f"NAS-Bench-201 index {idx} out of range 0..{N_ARCHS - 1}")
        ops = ops_of_code(index_codes()[idx])
    else:
        ops = parse_arch(spec, body)
        idx = _code_to_index()[code_of(ops)]
    side, classes = VARIANTS[variant]
    prefix = "nb201" if variant == DEFAULT_VARIANT else f"nb201@{variant}"
    return {"space": "nb201", "variant": variant, "ops": ops, "index": idx, "C": 16, "N": 5,
            "input_size": side, "num_classes": classes, "canonical": f"{prefix}:{arch_str(ops)}",
            "input_shape": (1, 3, side, side)}


# ------------------------------------------------------------------------------------------ torch
def build(cfg: dict):
    import torch
    from torch import nn

    class ReLUConvBN(nn.Sequential):
        def __init__(self, cin, cout, k, stride, pad):
            super().__init__(nn.ReLU(inplace=False), nn.Conv2d(cin, cout, k, stride, pad, bias=False),
                             nn.BatchNorm2d(cout))

    class Zero(nn.Module):
        def forward(self, x):
            return x.mul(0.0)

    def make_op(name, c):
        if name == "none":
            return Zero()
        if name == "skip_connect":
            return nn.Identity()
        if name == "nor_conv_1x1":
            return ReLUConvBN(c, c, 1, 1, 0)
        if name == "nor_conv_3x3":
            return ReLUConvBN(c, c, 3, 1, 1)
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    class Cell(nn.Module):
        def __init__(self, ops, c):
            super().__init__()
            self.edges = nn.ModuleList(make_op(o, c) for o in ops)

        def forward(self, x):
            nodes = [x]
            k = 0
            for j in range(1, 4):
                acc = None
                for i in range(j):
                    y = self.edges[k](nodes[i])
                    k += 1
                    acc = y if acc is None else acc + y
                nodes.append(acc)
            return nodes[3]

    class ResBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv_a = ReLUConvBN(cin, cout, 3, 2, 1)
            self.conv_b = ReLUConvBN(cout, cout, 3, 1, 1)
            self.downsample = nn.Sequential(nn.AvgPool2d(2, 2, 0), nn.Conv2d(cin, cout, 1, 1, 0, bias=False))

        def forward(self, x):
            return self.downsample(x) + self.conv_b(self.conv_a(x))

    class NB201Net(nn.Module):
        def __init__(self, ops, C, N, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, C, 3, 1, 1, bias=False), nn.BatchNorm2d(C))
            cells = []
            c = C
            for stage in range(3):
                if stage > 0:
                    cells.append(ResBlock(c, 2 * c))
                    c *= 2
                cells.extend(Cell(ops, c) for _ in range(N))
            self.cells = nn.Sequential(*cells)
            self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(c, num_classes)

        def forward(self, x):
            x = self.lastact(self.cells(self.stem(x)))
            return self.classifier(torch.flatten(self.pool(x), 1))

    return NB201Net(cfg["ops"], cfg["C"], cfg["N"], cfg["num_classes"])
