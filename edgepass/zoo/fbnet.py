"""FBNet space (Wu et al., CVPR 2019) as HW-NAS-Bench (Li et al., ICLR 2021) instantiates it.

22 searchable layers in 7 stages of [1, 4, 4, 4, 4, 4, 1] layers with widths
[16, 24, 32, 64, 112, 184, 352]; the first layer of a stage carries the stage stride.
- ImageNet (default, ``fbnet:``): 224x224 input, stem conv3x3 s2 (3->16)+BN+ReLU, stage strides
  [1, 2, 2, 2, 1, 2, 1], head conv1x1 352->1984 +BN+ReLU, global pool, FC 1984->1000.
- CIFAR-100 (``fbnet@cifar100:``): 32x32 input, stem stride 1, strides [1, 1, 2, 2, 1, 2, 1],
  head 1504 channels, 100 classes.
Block ``kK_eE[_gG]``: conv1x1 (groups G) C_in->E*C_in +BN+ReLU, channel shuffle if G>1,
depthwise KxK (stride s, pad K//2) +BN+ReLU, conv1x1 (groups G) ->C_out +BN; residual add when
s == 1 and C_in == C_out.  ``skip``: identity when s == 1 and C_in == C_out, otherwise
conv1x1 (stride s)+BN+ReLU.  These are the facts of HW-NAS-Bench's FBNet space description
(HELP's FBNet latencies were measured on the same definition); no code copied.
"""
from __future__ import annotations

from ._common import bad

PRIMITIVES = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
BLOCKS = {  # name -> (kernel, expansion, groups)
    "k3_e1": (3, 1, 1), "k3_e1_g2": (3, 1, 2), "k3_e3": (3, 3, 1), "k3_e6": (3, 6, 1),
    "k5_e1": (5, 1, 1), "k5_e1_g2": (5, 1, 2), "k5_e3": (5, 3, 1), "k5_e6": (5, 6, 1),
}
N_LAYERS = 22
STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_WIDTHS = (16, 24, 32, 64, 112, 184, 352)
STEM = 16
VARIANTS = {  # name -> (input side, stem stride, stage strides, head channels, classes)
    "ImageNet": (224, 2, (1, 2, 2, 2, 1, 2, 1), 1984, 1000),
    "cifar100": (32, 1, (1, 1, 2, 2, 1, 2, 1), 1504, 100),
}
DEFAULT_VARIANT = "ImageNet"


def layer_plan(variant: str):
    """[(c_in, c_out, stride)] for the 22 searchable layers."""
    _, _, strides, _, _ = VARIANTS[variant]
    plan, c_prev = [], STEM
    for n, w, s in zip(STAGE_LAYERS, STAGE_WIDTHS, strides):
        for i in range(n):
            plan.append((c_prev, w, s if i == 0 else 1))
            c_prev = w
    return plan


def parse(spec: str, body: str, variant: str | None) -> dict:
    variant = variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise bad(spec, f"unknown fbnet dataset {variant!r} (choose {', '.join(VARIANTS)})")
    toks = [t for t in body.replace(",", " ").replace("-", " ").split() if t]
    if toks and all(t.isdigit() for t in toks):  # HW-NAS-Bench / HELP op_idx_list
        if any(int(t) >= len(PRIMITIVES) for t in toks):
            raise bad(spec, f"FBNet op index must be 0..{len(PRIMITIVES) - 1}")
        toks = [PRIMITIVES[int(t)] for t in toks]
    if len(toks) != N_LAYERS:
        raise bad(spec, f"FBNet needs {N_LAYERS} layer ops, got {len(toks)}")
    for t in toks:
        if t not in PRIMITIVES:
            raise bad(spec, f"unknown FBNet op {t!r} (ops: {', '.join(PRIMITIVES)})")
    side = VARIANTS[variant][0]
    prefix = "fbnet" if variant == DEFAULT_VARIANT else f"fbnet@{variant}"
    return {"space": "fbnet", "variant": variant, "ops": tuple(toks),
            "op_idx": tuple(PRIMITIVES.index(t) for t in toks),
            "canonical": f"{prefix}:{'-'.join(toks)}", "input_shape": (1, 3, side, side)}


def build(cfg: dict):
    import torch
    from torch import nn

    class Shuffle(nn.Module):
        def __init__(self, groups, channels):
            super().__init__()
            self.g, self.c = groups, channels

        def forward(self, x):
            return x.unflatten(1, (self.g, self.c // self.g)).transpose(1, 2).flatten(1, 2)

    def conv_bn(cin, cout, k, s, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        return nn.Sequential(*layers)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, k, e, g):
            super().__init__()
            mid = cin * e
            self.pw = conv_bn(cin, mid, 1, 1, g)
            self.shuffle = Shuffle(g, mid) if g > 1 else nn.Identity()
            self.dw = conv_bn(mid, mid, k, stride, mid)
            self.pwl = conv_bn(mid, cout, 1, 1, g, relu=False)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.pwl(self.dw(self.shuffle(self.pw(x))))
            return y + x if self.residual else y

    def skip(cin, cout, stride):
        if stride == 1 and cin == cout:
            return nn.Identity()
        return conv_bn(cin, cout, 1, stride)

    class FBNet(nn.Module):
        def __init__(self, ops, variant):
            super().__init__()
            _, stem_stride, _, head, classes = VARIANTS[variant]
            self.stem = conv_bn(3, STEM, 3, stem_stride)
            layers = []
            for op, (cin, cout, s) in zip(ops, layer_plan(variant)):
                layers.append(skip(cin, cout, s) if op == "skip" else Block(cin, cout, s, *BLOCKS[op]))
            self.layers = nn.Sequential(*layers)
            self.head = conv_bn(STAGE_WIDTHS[-1], head, 1, 1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(head, classes)

        def forward(self, x):
            x = self.head(self.layers(self.stem(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    return FBNet(cfg["ops"], cfg["variant"])
