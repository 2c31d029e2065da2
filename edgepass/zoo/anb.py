"""Accel-NASBench space (Ahmad et al., 2024): the EfficientNet-B0 / MnasNet skeleton searched per
stage on ImageNet.

Spec ``anb:<e x7>|<k x7>|<l x7>|<se x7>``, one value per block (stage), in the order of the CSV
columns ``block<i>_e / _k / _l / _se``: expansion e in {1, 4, 6}, kernel k in {3, 5}, layers l in
{1, 2, 3, 4}, squeeze-excite se in {0, 1}.
Skeleton (EfficientNet-B0 base, fixed in the space): stem conv3x3 s2 3->32 +BN+SiLU; 7 stages with
input widths [32, 16, 24, 40, 80, 112, 192], output widths [16, 24, 40, 80, 112, 192, 320],
first-layer strides [1, 2, 2, 2, 1, 2, 1]; head conv1x1 320->1280 +BN+SiLU; global pool; FC->1000.
MBConv: conv1x1 in->in*e +BN+SiLU (omitted when e == 1), depthwise kxk (pad k//2) +BN+SiLU,
SE (mean pool, conv1x1 ->max(1, in//4) with bias, SiLU, conv1x1 back with bias, sigmoid, multiply;
``in`` = the block's input width, the EfficientNet convention), conv1x1 ->out +BN; identity
residual when stride 1 and in == out.  Input 224x224.  Written from the space definition (stage
widths/strides from the Accel-NASBench repository's search-space description); no code copied.
"""
from __future__ import annotations

from ._common import bad, int_list

STRIDES = (1, 2, 2, 2, 1, 2, 1)
IN_CH = (32, 16, 24, 40, 80, 112, 192)
OUT_CH = (16, 24, 40, 80, 112, 192, 320)
STEM, HEAD = 32, 1280
ES, KSET, LS, SES = (1, 4, 6), (3, 5), (1, 2, 3, 4), (0, 1)
RESOLUTION = 224


def block_plan(cfg: dict):
    """[(c_in, c_out, stride, k, e, se)] for every MBConv layer."""
    plan = []
    for b in range(7):
        for i in range(cfg["l"][b]):
            cin = IN_CH[b] if i == 0 else OUT_CH[b]
            plan.append((cin, OUT_CH[b], STRIDES[b] if i == 0 else 1, cfg["k"][b], cfg["e"][b], bool(cfg["se"][b])))
    return plan


def parse(spec: str, body: str, variant: str | None) -> dict:
    if variant:
        raise bad(spec, "the anb space has no variants")
    parts = body.split("|")
    if len(parts) != 4:
        raise bad(spec, "Accel-NASBench spec is anb:<7 e>|<7 k>|<7 l>|<7 se (0/1)>")
    e = int_list(spec, parts[0], "e", 7, ES)
    k = int_list(spec, parts[1], "k", 7, KSET)
    l = int_list(spec, parts[2], "l", 7, LS)
    se = int_list(spec, parts[3], "se", 7, SES)
    canon = "anb:" + "|".join(",".join(map(str, v)) for v in (e, k, l, se))
    return {"space": "anb", "variant": None, "e": tuple(e), "k": tuple(k), "l": tuple(l), "se": tuple(se),
            "canonical": canon, "input_shape": (1, 3, RESOLUTION, RESOLUTION)}


def build(cfg: dict):
    import torch
    from torch import nn

    class SqueezeExcite(nn.Module):
        def __init__(self, c, c_in):
            super().__init__()
            mid = max(1, c_in // 4)
            self.reduce = nn.Conv2d(c, mid, 1, bias=True)
            self.act = nn.SiLU(inplace=True)
            self.expand = nn.Conv2d(mid, c, 1, bias=True)
            self.gate = nn.Sigmoid()

        def forward(self, x):
            y = x.mean((2, 3), keepdim=True)
            return x * self.gate(self.expand(self.act(self.reduce(y))))

    class MBConv(nn.Module):
        def __init__(self, cin, cout, stride, k, e, se):
            super().__init__()
            mid = cin * e
            layers = []
            if e != 1:
                layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.SiLU(inplace=True)]
            layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid),
                       nn.SiLU(inplace=True)]
            if se:
                layers.append(SqueezeExcite(mid, cin))
            layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return y + x if self.residual else y

    class ANBNet(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, STEM, 3, 2, 1, bias=False), nn.BatchNorm2d(STEM), nn.SiLU(inplace=True))
            self.blocks = nn.Sequential(*[MBConv(*p) for p in block_plan(cfg)])
            self.head = nn.Sequential(nn.Conv2d(OUT_CH[-1], HEAD, 1, bias=False), nn.BatchNorm2d(HEAD), nn.SiLU(inplace=True))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(HEAD, 1000)

        def forward(self, x):
            x = self.head(self.blocks(self.stem(x)))
            return self.classifier(torch.flatten(self.pool(x), 1))

    return ANBNet(cfg)
