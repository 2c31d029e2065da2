"""Once-for-All MobileNetV3 space (Cai et al., ICLR 2020), ``ofa_mbv3_d234_e346_k357_w1.0`` by
default, ``ofa@w1.2:`` for the width-1.2 supernet.

A subnet is (ks[20], e[20], d[5], r) exactly as HELP's ``ofa_latency.csv`` stores it: 5 stages of
up to 4 blocks; block j of stage s uses ks[4s+j] / e[4s+j] and exists only if j < d[s].
Skeleton (w1.0): conv3x3 s2 3->16 +BN+h-swish; MBConv(16->16, k3, e1, ReLU) with identity
residual; stages of widths [24, 40, 80, 112, 160], strides [2, 2, 2, 1, 2], activations
[ReLU, ReLU, h-swish, h-swish, h-swish], squeeze-excite [no, yes, no, yes, yes]; conv1x1 160->960
+BN+h-swish; global average pool; conv1x1 960->1280 (no BN, no bias)+h-swish; linear 1280->1000.
MBConv: conv1x1 in->mid +BN+act (omitted when e == 1), depthwise kxk (stride, pad k//2) +BN+act,
SE (mean pool, conv1x1 mid->make_divisible(mid//4, 8) with bias, ReLU, conv1x1 back with bias,
h-sigmoid, multiply), conv1x1 mid->out +BN; mid = make_divisible(round(in*e), 8); identity
residual when stride 1 and in == out.  Widths for w1.2 are make_divisible(base*1.2, 8).
Written from the paper/space definition; no code copied.
"""
from __future__ import annotations

from ._common import bad, int_list, make_divisible

BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
STRIDES = (2, 2, 2, 1, 2)
ACTS = ("relu", "relu", "hswish", "hswish", "hswish")
SE = (False, True, False, True, True)
VARIANTS = {"w1.0": 1.0, "w1.2": 1.2}
DEFAULT_VARIANT = "w1.0"
KS, ES, DS = (3, 5, 7), (3, 4, 6), (2, 3, 4)


def widths(w: float) -> list[int]:
    return [make_divisible(b * w, 8) for b in BASE_WIDTHS]


def block_plan(cfg: dict):
    """[(c_in, c_out, stride, k, e, act, se)] for every active MBConv block after the first."""
    wl = widths(VARIANTS[cfg["variant"]])
    plan, c_prev = [], wl[1]
    for s in range(5):
        for j in range(cfg["d"][s]):
            i = 4 * s + j
            plan.append((c_prev, wl[s + 2], STRIDES[s] if j == 0 else 1, cfg["ks"][i], cfg["e"][i], ACTS[s], SE[s]))
            c_prev = wl[s + 2]
    return plan


def parse(spec: str, body: str, variant: str | None) -> dict:
    variant = variant or DEFAULT_VARIANT
    if variant not in VARIANTS:
        raise bad(spec, f"unknown ofa width {variant!r} (choose {', '.join(VARIANTS)})")
    parts = body.split("|")
    if len(parts) != 4:
        raise bad(spec, "OFA spec is ofa:<20 kernel sizes>|<20 expand ratios>|<5 depths>|<resolution>")
    ks = int_list(spec, parts[0], "ks", 20, KS)
    e = int_list(spec, parts[1], "e", 20, ES)
    d = int_list(spec, parts[2], "d", 5, DS)
    (r,) = int_list(spec, parts[3], "r", 1, None)
    if not 32 <= r <= 1024:
        raise bad(spec, f"resolution {r} outside 32..1024")
    prefix = "ofa" if variant == DEFAULT_VARIANT else f"ofa@{variant}"
    canon = f"{prefix}:{','.join(map(str, ks))}|{','.join(map(str, e))}|{','.join(map(str, d))}|{r}"
    return {"space": "ofa", "variant": variant, "ks": tuple(ks), "e": tuple(e), "d": tuple(d), "r": r,
            "canonical": canon, "input_shape": (1, 3, r, r)}


def build(cfg: dict):
    import torch
    from torch import nn

    def act(name):
        return nn.ReLU(inplace=True) if name == "relu" else nn.Hardswish(inplace=True)

    class SqueezeExcite(nn.Module):
        def __init__(self, c):
            super().__init__()
            mid = make_divisible(c // 4, 8)
            self.reduce = nn.Conv2d(c, mid, 1, bias=True)
            self.relu = nn.ReLU(inplace=True)
            self.expand = nn.Conv2d(mid, c, 1, bias=True)
            self.gate = nn.Hardsigmoid(inplace=True)

        def forward(self, x):
            y = x.mean((2, 3), keepdim=True)
            return x * self.gate(self.expand(self.relu(self.reduce(y))))

    class MBConv(nn.Module):
        def __init__(self, cin, cout, stride, k, e, a, se):
            super().__init__()
            mid = make_divisible(round(cin * e), 8)
            layers = []
            if e != 1:
                layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(a)]
            else:
                mid = cin
            layers += [nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False), nn.BatchNorm2d(mid), act(a)]
            if se:
                layers.append(SqueezeExcite(mid))
            layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return y + x if self.residual else y

    class OFAMobileNetV3(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            wl = widths(VARIANTS[cfg["variant"]])
            self.first_conv = nn.Sequential(nn.Conv2d(3, wl[0], 3, 2, 1, bias=False), nn.BatchNorm2d(wl[0]),
                                            nn.Hardswish(inplace=True))
            blocks = [MBConv(wl[0], wl[1], 1, 3, 1, "relu", False)]
            blocks += [MBConv(*p) for p in block_plan(cfg)]
            self.blocks = nn.Sequential(*blocks)
            self.final_expand = nn.Sequential(nn.Conv2d(wl[6], wl[7], 1, bias=False), nn.BatchNorm2d(wl[7]),
                                              nn.Hardswish(inplace=True))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.feature_mix = nn.Sequential(nn.Conv2d(wl[7], wl[8], 1, bias=False), nn.Hardswish(inplace=True))
            self.classifier = nn.Linear(wl[8], 1000)

        def forward(self, x):
            x = self.final_expand(self.blocks(self.first_conv(x)))
            x = self.feature_mix(self.pool(x))
            return self.classifier(torch.flatten(x, 1))

    return OFAMobileNetV3(cfg)
