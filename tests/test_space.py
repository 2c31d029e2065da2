"""Design space: channel groups on known structure, frozen channels, choices, Design JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import edgepass
from conftest import ARCHS
from edgepass.coupling import ELEMENTWISE, OP_HANDLERS, PASS_THROUGH, handles
from edgepass.space import Design, width_choices


@pytest.fixture(scope="module")
def spaces(tvzoo):
    cache = {}

    def get(name, exporter=None):
        key = (name, exporter)
        if key not in cache:
            src = tvzoo.model(name) if exporter is None else tvzoo.onnx(name, exporter)
            cache[key] = edgepass.design_space(src, tvzoo.example(name))
        return cache[key]
    return get


def members(group, role=None):
    return {m for m, r in group.members if role is None or r == role}


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", ARCHS)
def test_fx_and_onnx_spaces_are_the_same(name, exporter, spaces):
    fx, ox = spaces(name), spaces(name, exporter)
    assert [(g.id, g.width, g.choices, sorted(members(g, "out"))) for g in fx.groups] == \
           [(g.id, g.width, g.choices, sorted(members(g, "out"))) for g in ox.groups]
    assert fx.kernels == ox.kernels and fx.precisions == ox.precisions
    assert fx.hash() == ox.hash()


def test_resnet50_stage_is_one_group(spaces):
    sp = spaces("resnet50")
    g = sp.group_of("layer1.0.conv3")
    assert members(g, "out") == {"layer1.0.conv3", "layer1.0.downsample.0", "layer1.1.conv3", "layer1.2.conv3"}
    assert {"layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1", "layer2.0.downsample.0"} <= members(g, "in")
    assert g.width == 256 and g.frozen is None
    # inner bottleneck channels are their own group
    inner = sp.group_of("layer1.0.conv1")
    assert members(inner, "out") == {"layer1.0.conv1"} and members(inner, "in") == {"layer1.0.conv2"}
    assert "layer1.0.bn1" in members(inner, "norm")


def test_mobilenet_v2_depthwise_shares_expansion_group(spaces):
    sp = spaces("mobilenet_v2")
    g = sp.group_of("features.2.conv.0.0")
    assert "features.2.conv.1.0" in members(g, "dw")
    assert "features.2.conv.2" in members(g, "in")
    # the projection output is tied to the next block's residual add
    proj = sp.group_of("features.2.conv.2")
    assert members(proj, "out") == {"features.2.conv.2", "features.3.conv.2"}


def test_densenet_concat_slices_map_to_producers(spaces):
    sp = spaces("densenet121")
    stem, l1, l2 = (sp.group_of(n).id for n in ("features.conv0", "features.denseblock1.denselayer1.conv2",
                                                 "features.denseblock1.denselayer2.conv2"))
    axis, segs = sp.op_layouts["features.denseblock1.denselayer3.conv1"]["in"][0]
    assert axis == 1
    assert segs == [(stem, 64, 1), (l1, 32, 1), (l2, 32, 1)]
    # the first transition sees every layer of block 1: 64 + 6 * 32 channels
    axis, segs = sp.op_layouts["features.transition1.conv"]["in"][0]
    assert sum(n for _, n, _ in segs) == 256 and len(segs) == 7


def test_efficientnet_squeeze_excitation_coupling(spaces):
    sp = spaces("efficientnet_b0")
    g = sp.group_of("features.2.0.block.0.0")            # expansion conv of an MBConv
    assert "features.2.0.block.1.0" in members(g, "dw")    # depthwise
    assert "features.2.0.block.2.fc2" in members(g, "out")  # SE expand writes the same channels (mul)
    assert "features.2.0.block.2.fc1" in members(g, "in")
    se = sp.group_of("features.2.0.block.2.fc1")
    assert members(se, "in") == {"features.2.0.block.2.fc2"}


def test_shufflenet_shuffle_is_frozen_branch_is_not(spaces):
    sp = spaces("shufflenet_v2_x1_0")
    mid = sp.group_of("stage2.1.branch2.0")
    assert mid.frozen is None and "stage2.1.branch2.3" in members(mid, "dw")
    out = sp.group_of("stage2.1.branch2.5")
    assert out.frozen and "channel shuffle" in out.frozen


def test_regnet_grouped_conv_keeps_whole_groups(spaces):
    sp = spaces("regnet_y_400mf")
    g = sp.group_of("trunk_output.block1.block1-0.f.a.0")
    assert "trunk_output.block1.block1-0.f.b.0" in members(g, "grouped")
    assert g.granularity == 8 and all(w % 8 == 0 for w in g.choices)


def test_vit_mlp_offered_attention_frozen(spaces):
    sp = spaces("vit_b_16")
    mlp = sp.group_of("encoder.layers.encoder_layer_0.mlp.0")
    assert mlp.frozen is None and members(mlp, "in") == {"encoder.layers.encoder_layer_0.mlp.3"}
    qkv = sp.group_of("encoder.layers.encoder_layer_0.self_attention")
    assert qkv.frozen and "attention" in qkv.frozen
    assert len(sp.groups) == 12


def test_convnext_channels_last_block(spaces):
    sp = spaces("convnext_tiny")
    g = sp.group_of("features.1.0.block.3")     # pointwise expansion (a Linear on channels-last)
    assert members(g, "in") == {"features.1.0.block.5"}
    stage = sp.group_of("features.1.0.block.5")
    assert "features.1.0.block.0" in members(stage, "dw")   # 7x7 depthwise on the residual stream
    assert any(r == "const" for _, r in stage.members)       # layer scale
    assert sp.kernels["features.1.0.block.0"] == [7, 5, 3]


def test_inputs_and_outputs_are_frozen(spaces):
    sp = spaces("resnet18")
    assert sp.group_of("conv1", "in").frozen == "reaches the model input"
    assert sp.group_of("fc", "out").frozen == "reaches the model output"
    assert all(g.frozen is None for g in sp.groups)


def test_unknown_module_freezes_its_channels():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 32, 3, padding=1)
            self.odd = torch.nn.PixelShuffle(2)     # not understood by the analysis
            self.b = torch.nn.Conv2d(8, 32, 3, padding=1)
            self.c = torch.nn.Conv2d(32, 16, 1)

        def forward(self, x):
            return self.c(self.b(self.odd(self.a(x))))

    sp = edgepass.design_space(Net(), (torch.randn(1, 3, 8, 8),))
    assert sp.graph.graph["unknown_ops"] == ["PixelShuffle"]
    assert sp.group_of("a").frozen.startswith("unknown operator")
    assert sp.group_of("b").frozen is None      # b's own outputs can still shrink


def test_width_choices():
    assert width_choices(64, 1) == [64, 56, 48, 40, 32, 24, 16]
    assert width_choices(24, 1) == [24, 16, 8]
    assert width_choices(8, 1) == [8]
    assert width_choices(96, 24) == [96, 72, 48, 24]
    assert all(w >= 8 for w in width_choices(1000, 1))


def test_op_kinds_are_one_handler_each():
    assert PASS_THROUGH | ELEMENTWISE <= set(OP_HANDLERS)
    assert {"conv", "linear", "concat", "split", "reshape", "matmul"} <= set(OP_HANDLERS)
    with pytest.raises(ValueError, match="already has a handler"):
        handles("conv")(lambda an, op, ins: [None])
    assert OP_HANDLERS["conv"].__name__ == "visit_conv"


def test_kernel_choices_respect_padding(spaces):
    sp = spaces("resnet18")
    assert sp.kernels == {"conv1": [7, 5, 3]}
    sp1 = edgepass.design_space(sp.graph, min_kernel=1)
    assert sp1.kernels["layer1.0.conv1"] == [3, 1]
    # a 3x3 without padding can't shrink without changing the output shape
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 5, padding=1))
    sp2 = edgepass.design_space(net, (torch.randn(1, 3, 16, 16),), min_kernel=1)
    assert sp2.kernels == {"2": [5, 3]}


def test_design_identity_sample_size_json(spaces):
    sp = spaces("mobilenet_v2")
    ident = sp.identity()
    assert ident.widths == {g.id: g.width for g in sp.groups}
    assert set(ident.precisions.values()) == {"fp32"}
    d = sp.sample(np.random.default_rng(0))
    assert d == sp.sample(0) and d != sp.sample(1)
    assert d == Design.from_json(d.to_json())
    assert list(json.loads(d.to_json())["widths"]) == sorted(d.widths)
    assert sp.validate(d) == d
    expected = sum(np.log10(len(g.choices)) for g in sp.groups) + len(sp.precisions) * np.log10(3)
    assert sp.size() == pytest.approx(expected)
    assert ident.diff(d)["widths"]


def test_design_validation_errors(spaces):
    sp = spaces("resnet18")
    with pytest.raises(edgepass.InputError, match="not in this model's design space"):
        sp.validate(Design(widths={"nope": 8}))
    with pytest.raises(edgepass.InputError, match="not offered"):
        sp.validate(Design(widths={"layer1.0.conv1": 63}))
    with pytest.raises(edgepass.InputError):
        Design.from_json("{not json")
    partial = sp.validate(Design(precisions={"fc": "int8"}))
    assert partial.precisions["fc"] == "int8" and partial.widths == sp.identity().widths


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121", "regnet_y_400mf"])
def test_design_graph_predicts_the_rewritten_ir(name, spaces, tvzoo):
    sp = spaces(name)
    for seed in range(2):
        d = sp.sample(seed)
        d.precisions = {k: "fp32" for k in d.precisions}
        assert sp.decode(sp.encode(d)) == sp.validate(d)
        predicted = sp.design_graph(d)
        real = edgepass.analyze(edgepass.apply(tvzoo.model(name), d, example_inputs=tvzoo.example(name)),
                                tvzoo.example(name))
        assert {o.name: o.macs for o in predicted.layers()} == {o.name: o.macs for o in real.layers()}
        assert predicted.params == real.params
