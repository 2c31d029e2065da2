"""PyTorch in -> PyTorch out int8 (the FX precision pass) on real architectures and the shapes
that broke it: channel shuffle, ``x.view(x.size(0), -1)`` flattening, timm-style layers that FX
traces through (functional ``F.linear`` named after their module), attention projections."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgepass
from edgepass.errors import InputError, UnsupportedModelError
from edgepass.passes.precision_fx import PrecisionPassFX


# --------------------------------------------------------------------------------------------
# tiny models with the patterns of real ones
# --------------------------------------------------------------------------------------------
class MnistNet(nn.Module):
    """The pytorch/examples MNIST net, narrower: flattens with ``x.view(x.size(0), -1)``."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.fc1 = nn.Linear(16 * 5 * 5, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = x.view(x.size(0), -1)
        x = F.relu(self.fc1(x))
        return F.log_softmax(self.fc2(x), dim=1)


def channel_shuffle(x, groups: int):
    n, c, h, w = x.size()  # torchvision's: shape arithmetic on size() entries
    x = x.view(n, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(n, -1, h, w)


class ShuffleNet(nn.Module):
    """A ShuffleNetV2 unit: split, branch, concat, channel shuffle."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        a, b = x.chunk(2, dim=1)
        x = channel_shuffle(torch.cat((a, self.branch(b)), 1), 2)
        return self.fc(x.mean([2, 3]))


class Linear(nn.Linear):
    """timm.layers.Linear: an nn.Linear subclass whose forward FX traces through to ``F.linear``."""

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)


class StdConv2d(nn.Conv2d):
    """A timm-style conv (nn.Conv2d subclass) that FX traces through to ``F.conv2d``."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class FunctionalConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = StdConv2d(3, 16, 5, padding=2)
        self.c2 = StdConv2d(16, 16, 5, padding=2, groups=16)
        self.c3 = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.c3(F.relu(self.c2(F.relu(self.c1(x))))).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, 4, 1)
        self.conv_expand = nn.Conv2d(4, c, 1)

    def forward(self, x):
        s = self.conv_expand(F.relu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * F.hardsigmoid(s)


class GhostModule(nn.Module):
    """timm's GhostModule: primary conv + cheap depthwise conv, concatenated and sliced to ``oup``."""

    def __init__(self, inp, oup, act=True):
        super().__init__()
        self.oup, init = oup, (oup + 1) // 2
        self.primary_conv = nn.Sequential(nn.Conv2d(inp, init, 1, bias=False), nn.BatchNorm2d(init),
                                          nn.ReLU() if act else nn.Identity())
        self.cheap_operation = nn.Sequential(nn.Conv2d(init, init, 3, 1, 1, groups=init, bias=False),
                                             nn.BatchNorm2d(init), nn.ReLU() if act else nn.Identity())

    def forward(self, x):
        x1 = self.primary_conv(x)
        out = torch.cat([x1, self.cheap_operation(x1)], dim=1)
        return out[:, :self.oup, :, :]


class GhostBottleneck(nn.Module):
    def __init__(self, c, mid, se=False):
        super().__init__()
        self.ghost1 = GhostModule(c, mid)
        self.se = SqueezeExcite(mid) if se else nn.Identity()
        self.ghost2 = GhostModule(mid, c, act=False)

    def forward(self, x):
        return self.ghost2(self.se(self.ghost1(x))) + x


class GhostNet(nn.Module):
    """timm's GhostNet in miniature: stem, ghost bottlenecks (one with SE), global pool, conv_head,
    and a ``classifier`` that is timm's ``Linear``."""

    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 16, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.blocks = nn.Sequential(GhostBottleneck(16, 24), GhostBottleneck(16, 32, se=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(16, 64, 1)
        self.flatten = nn.Flatten(1)
        self.classifier = Linear(64, 10)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn1(self.conv_stem(x))))
        x = F.relu(self.conv_head(self.global_pool(x)))
        return self.classifier(self.flatten(x))


class AttentionNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = self.embed(x)
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def _seeded(cls):
    torch.manual_seed(0)
    return cls().eval()


def _images(n, shape, seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def check_int8_design(model, design, x, space=None):
    """Apply ``design`` and assert the result is valid: runs, same output shape, finite, verified."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "int8 output is far from fp32" on random weights is the verifier's call
        out = edgepass.apply(model, design, calibration_data=x, example_inputs=(x[:1],), reconstruct=False)
        with torch.no_grad():
            y, ref = out(x), model(x)
        assert y.shape == ref.shape and torch.isfinite(y).all()
        v = edgepass.verify(model, out, design, example_inputs=(x[:1],), space=space)
    assert v.ok, v.problems
    return out, y, ref


# --------------------------------------------------------------------------------------------
# the three failures of issue 20, one test each
# --------------------------------------------------------------------------------------------
def test_int8_channel_shuffle_leaves_shape_arithmetic_alone():
    """``c // groups`` on a size() entry used to get a ``.float()`` fence: "'int' object has no attribute 'float'"."""
    model, x = _seeded(ShuffleNet), _images(4, (3, 16, 16))
    space = edgepass.design_space(model, (x[:1],))
    out, y, ref = check_int8_design(model, space.uniform(1.0, precision="int8"), x, space)
    assert "quantized" in type(out.get_submodule("branch.0")).__module__
    assert F.cosine_similarity(y.ravel(), ref.ravel(), dim=0) > 0.9


def test_int8_view_flatten_after_quantized_conv():
    """``x.view(x.size(0), -1)`` of an int8 conv's (channels-last) output: the module did not run."""
    model, x = _seeded(MnistNet), _images(8, (1, 14, 14))
    space = edgepass.design_space(model, (x[:1],))
    design = space.identity()
    design.precisions.update(conv1="int8", conv2="int8")
    out, y, ref = check_int8_design(model, design, x, space)
    assert (y.argmax(1) == ref.argmax(1)).float().mean() >= 0.75


def test_analysing_an_int8_module_prints_no_traceback(capfd):
    """Fused int8 conv+relu has no fake-tensor kernel: ShapeProp printed a traceback before its fallback."""
    model, x = _seeded(MnistNet), _images(4, (1, 14, 14))
    space = edgepass.design_space(model, (x[:1],))
    design = space.identity()
    design.precisions.update(conv1="int8")
    out = edgepass.apply(model, design, calibration_data=x, example_inputs=(x[:1],))
    assert "intrinsic.quantized" in type(out.get_submodule("conv1")).__module__  # conv+relu fused
    capfd.readouterr()
    assert edgepass.analyze(out, (x[:1],)).op("conv1").precision == "int8"
    assert "Traceback" not in capfd.readouterr().err


def test_timm_style_linear_is_a_layer_the_precision_pass_knows():
    """GhostNet's ``classifier`` (timm's Linear, traced to F.linear) is in the space: int8 must apply."""
    model, x = _seeded(GhostNet), _images(4, (3, 16, 16))
    space = edgepass.design_space(model, (x[:1],))
    assert "classifier" in space.precisions
    design = space.identity()
    design.precisions.update(classifier="int8", conv_head="fp16")
    out, _, _ = check_int8_design(model, design, x, space)
    assert "quantized" in type(out.get_submodule("classifier")).__module__
    assert type(model.get_submodule("classifier")) is Linear  # the user's model is untouched


def test_kernel_and_int8_designs_apply_to_functional_convs():
    """Kernel knobs of a traced-through conv raised NotImplementedError; int8 on it was "unknown layer"."""
    model, x = _seeded(FunctionalConvNet), _images(4, (3, 12, 12))
    space = edgepass.design_space(model, (x[:1],))
    assert set(space.kernels) == {"c1", "c2"}
    design = space.identity()
    design.kernels.update(c1=3, c2=3)
    design.widths = space.uniform(0.5).widths
    design.precisions.update(c1="int8", c2="fp16")
    out, _, _ = check_int8_design(model, design, x, space)
    assert "quantized" in type(out.get_submodule("c1")).__module__
    assert tuple(out.get_submodule("c1").weight().shape[2:]) == (3, 3)
    assert model.c1.kernel_size == (5, 5)  # the user's model is untouched


def test_layer_torch_cannot_quantize_is_refused_by_name():
    """An attention projection is a layer of the space; fp32 applies, int8 is a one-line refusal naming it."""
    model, x = _seeded(AttentionNet), _images(4, (5, 8))
    space = edgepass.design_space(model, (x[:1],))
    design = space.identity()
    assert "attn" in design.precisions
    edgepass.apply(model, design, calibration_data=x, example_inputs=(x[:1],))  # fp32: nothing to refuse
    design.precisions.update(attn="int8", head="int8")
    with pytest.raises(UnsupportedModelError, match=r"^layer attn: int8 is not possible") as err:
        edgepass.apply(model, design, calibration_data=x, example_inputs=(x[:1],))
    assert err.value.exit_code == 4 and "\n" not in str(err.value)


def test_pass_without_graph_still_rejects_unknown_layers():
    gm = torch.fx.symbolic_trace(_seeded(MnistNet))
    with pytest.raises(InputError, match="unknown layer"):
        PrecisionPassFX({"conv9": "int8"})(gm)


# --------------------------------------------------------------------------------------------
# acceptance: random designs with int8 layers on real architectures are valid modules
# --------------------------------------------------------------------------------------------
_TINY = {"mnist_view": (MnistNet, (1, 14, 14)), "ghostnet_like": (GhostNet, (3, 16, 16)),
         "shufflenet_like": (ShuffleNet, (3, 16, 16))}
_TORCHVISION = ["squeezenet1_1", "resnet18", "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x0_5",
                "mnasnet0_5", "efficientnet_b0", "regnet_y_400mf", "googlenet", "densenet121"]
_DEFAULT = {"mnist_view", "ghostnet_like", "shufflenet_like", "squeezenet1_1"}  # the cheapest


def _architecture(name):
    if name in _TINY:
        cls, shape = _TINY[name]
        return _seeded(cls), shape
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return tv.models.get_model(name, weights=None).eval(), (3, 64, 64)


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in _DEFAULT else pytest.mark.slow)
                                  for n in list(_TINY) + _TORCHVISION])
def test_random_int8_designs_are_valid(name):
    model, shape = _architecture(name)
    x = _images(2, shape)
    space = edgepass.design_space(model, (x[:1],))
    seeds = [s for s in range(20) if "int8" in space.sample(s).precisions.values()][:1 if name in _DEFAULT else 3]
    assert seeds
    for seed in seeds:
        out, _, _ = check_int8_design(model, space.sample(seed), x, space)
        assert any("quantized" in type(m).__module__ for m in out.modules())
