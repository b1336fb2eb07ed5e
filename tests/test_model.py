"""Assembly: the mechanism lands where its paper puts it, found through timm's feature_info."""

import pytest
import torch
from torch import nn

import attention
from nas.core.architecture import Architecture, ArchitectureError
from nas.measure.cost import count_flops, count_params
from nas.tasks.classify import backbone as bb
from nas.tasks.classify.model import architecture_problems, build, model_cost


def arch(text):
    return Architecture.parse(text)


# resnet50 with one mechanism in every block of every stage, at the paper's default hyperparameters,
# against the official implementations' totals (conventions of ../shared/REFERENCE-attention.md):
# SE-ResNet-50 (Caffe prototxt, with FC biases), ECA-ResNet-50 as released (k = 3, 5, 5, 7 per stage;
# +80 = the abstract's "80 vs. 24.37M"), SA-ResNet-50 (G = 64), NAM (one BN per block), SimAM wrapped
# around conv2 (no parameters), CBAM-ResNet-50 (Linear with bias, conv + BN spatial gate).
OFFICIAL_RESNET50 = {
    "resnet50|se(r=16)|se(r=16)|se(r=16)|se(r=16)": 28_088_024,
    "resnet50|eca(k=3)|eca(k=5)|eca(k=5)|eca(k=7)": 25_557_112,
    "resnet50|sa(g=64)|sa(g=64)|sa(g=64)|sa(g=64)": 25_557_740,
    "resnet50|nam|nam|nam|nam": 25_587_240,
    "resnet50|simam|simam|simam|simam": 25_557_032,
    "resnet50|cbam(r=16,k=7)|cbam(r=16,k=7)|cbam(r=16,k=7)|cbam(r=16,k=7)": 28_089_624,
}


@pytest.mark.parametrize("text,total", OFFICIAL_RESNET50.items())
def test_resnet50_totals_equal_the_official_implementations(text, total):
    assert count_params(build(arch(text), 1000)) == total
    assert model_cost(arch(text), 1000, (224, 224), 3).params == total  # the meta-device path agrees


# a stage's choice per backbone family, placements and built-in attention removed ('!') among them
MIXED = [
    "resnet50|se|simam|sk|ca@post_conv3x3_act",
    "resnet18|none|none|cca@stage_output|soca",
    "resnet18|sk|gam|nam|none",
    "regnety_008|!eca@post_conv3x3_act|ca@residual|!none|sk(g=8)",
    "efficientnet_b0|none|eca|simam@post_conv3x3|!cbam|none",
    "convnext_atto|cbam@stage_output|none|none|soca",
]


@pytest.mark.parametrize("text", MIXED)
@pytest.mark.parametrize("gated", [False, True])
def test_cost_of_an_architecture_is_its_whole_model_counted(text, gated):
    # model_cost adds each stage's change to the plain network's cost (counted once per process); that
    # equals counting the whole model built as the trial trains it (gated: a replaced layer kept beside
    # its mechanism: a selective kernel costs the 3x3 convolution it runs beside)
    a = arch(text)
    direct = build(a, 7, 3, device="meta", gated=gated)
    flops = count_flops(direct.eval(), torch.empty(1, 3, 64, 64, device="meta"))
    cost = model_cost(a, 7, (64, 64), 3, gated=gated)
    assert (cost.params, cost.flops) == (count_params(direct), flops)
    assert cost.params == count_params(build(a, 7, 3, gated=gated))  # the real model, not only the meta one


def test_placements_in_a_resnet_bottleneck():
    m = build(arch("resnet50|se|simam|sk|ca@post_conv3x3_act"), 10)
    b1, b2, b3, b4 = m.layer1[0], m.layer2[1], m.layer3[0], m.layer4[2]
    assert isinstance(b1.se, attention.SE) and b1.se.channels == 256  # after bn3, before the add
    assert isinstance(b2.conv2, nn.Sequential) and isinstance(b2.conv2[1], attention.SimAM)  # after the 3x3, before bn2
    assert isinstance(b2.conv2[0], nn.Conv2d) and b2.se is None
    assert isinstance(b3.conv2, attention.SelectiveKernel) and b3.conv2.channels == 256  # replaces the 3x3 ...
    assert b3.conv2.paths[0][0].stride == (2, 2), "... keeping the stride of the first block of layer3"
    assert isinstance(b3.bn2, nn.Identity)
    assert isinstance(b4.act2, nn.Sequential) and isinstance(b4.act2[1], attention.CoordAtt)
    assert b4.act2[1].channels == 512
    count = lambda cls: sum(isinstance(x, cls) for x in m.modules())  # noqa: E731
    assert (
        count(attention.SE),
        count(attention.SimAM),
        count(attention.SelectiveKernel),
        count(attention.CoordAtt),
    ) == (3, 4, 6, 3)
    out = m(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert out.shape == (2, 10)


def test_simam_wraps_the_second_conv_of_a_basic_block():
    m = build(arch("resnet18|simam|none|none|none"), 10)
    assert isinstance(m.layer1[0].conv2[1], attention.SimAM) and not isinstance(m.layer1[0].conv1, nn.Sequential)


def test_stage_output_placement_adds_one_module_after_the_stage():
    m = build(arch("resnet18|none|none|cca@stage_output|soca"), 10)
    assert isinstance(m.layer3.attn, attention.CrissCrossAttention) and m.layer3.attn.channels == 256
    assert isinstance(m.layer4.attn, attention.SOCA)
    assert "layer3.0.conv1.weight" in m.state_dict(), "timm's own parameter names are kept"
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_stages_come_from_feature_info_in_other_families():
    # RegNet: stages s1..s4, the 'se' slot (after conv2) holds a built-in SEModule in regnety.
    m = build(arch("regnety_008|!eca@post_conv3x3_act|ca@residual|!none|sk(g=8)"), 10)
    assert isinstance(m.s1.b1.se, attention.ECA)
    assert isinstance(m.s2.b1.conv3, nn.Sequential) and isinstance(m.s2.b1.conv3[1], attention.CoordAtt)
    assert isinstance(m.s3.b1.se, nn.Identity), "'!none' removes the built-in SE"
    assert isinstance(m.s4.b1.conv2, attention.SelectiveKernel)
    # EfficientNet: residual = after the pw-linear BN; post_conv3x3 = after the depthwise conv.
    m = build(arch("efficientnet_b0|none|eca|simam@post_conv3x3|!cbam|none"), 10)
    blk = m.blocks[1][0]
    assert isinstance(blk.bn3, nn.Sequential) and isinstance(blk.bn3[1], attention.ECA) and blk.bn3[1].channels == 24
    assert isinstance(m.blocks[2][0].conv_dw[1], attention.SimAM)
    assert all(
        isinstance(b.bn3[1], attention.CBAM) and isinstance(b.se, nn.Identity) for b in (*m.blocks[3], *m.blocks[4])
    )
    # ConvNeXt has no slot: attention goes after the stage.
    m = build(arch("convnext_atto|cbam@stage_output|none|none|soca"), 10)
    assert isinstance(m.stages[0], nn.Sequential) and isinstance(m.stages[0][1], attention.CBAM)
    for model in (m,):
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_architectures_that_do_not_fit_are_refused_with_the_reason():
    cases = [
        ("resnet18|se|none|none", "resnet18 has 4 stages with blocks"),
        ("resnet18|sa|none|none|none", "sa: groups=64 is not allowed at 64 channels"),
        (
            "mobilenetv3_large_100|none|none|eca@post_conv3x3_act|none|none",
            "already has SqueezeExcite at post_conv3x3_act",
        ),
        ("convnext_atto|se|none|none|none", "cannot go at residual"),
        ("resnet99|none", "is not a timm model"),
    ]
    for text, words in cases:
        a = arch(text)
        problems = architecture_problems(a, (64, 64))
        assert problems and words in " ".join(problems), (text, problems)
        with pytest.raises((ArchitectureError, bb.BackboneError)) as info:
            build(a, 10)
        assert words.split(":")[0] in str(info.value)


def test_every_family_describes_channels_and_spatial_sizes():
    (s1, s2, s3, s4) = bb.describe("resnet50", (224, 224))
    assert [s.spatial for s in (s1, s2, s3, s4)] == [(56, 56), (28, 28), (14, 14), (7, 7)]
    assert s3.channels["residual"] == [1024] and s3.channels["post_conv3x3"] == [256]
    mb = bb.describe("mobilenetv3_large_100", (224, 224))
    assert [s.index for s in mb] == [0, 1, 2, 3, 4] and mb[2].builtin["post_conv3x3_act"] == ["SqueezeExcite"]


# -- the optimiser that fits build --------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_fits_update_every_parameter_in_one_fused_kernel_equal_to_the_loop(optimizer):
    """On CPU the fit's optimiser is fused (a quarter faster a step on the proxies: ``nas bench step``)
    and moves every parameter as torch's per-tensor loop does, to rounding, over several steps from the
    same gradients (the momentum and moment buffers carried between them)."""
    from types import SimpleNamespace

    from nas.tasks.classify.fit import fused_step, make_optimizer

    cfg = SimpleNamespace(optimizer=optimizer, lr=0.01, momentum=0.9, weight_decay=0.05)
    a = arch("resnet10t|se(r=4)|none|eca(k=3)|none")
    start = [p.detach().clone() for p in build(a, 10, 1, init_seed=0).parameters()]
    fused_net, loop_net = build(a, 10, 1, init_seed=0), build(a, 10, 1, init_seed=0)
    fused = make_optimizer([{"params": list(fused_net.parameters()), "lr": 0.01}], cfg)
    loop = make_optimizer([{"params": list(loop_net.parameters()), "lr": 0.01}], cfg, fused=False)
    assert fused.defaults["fused"] is True and not loop.defaults["fused"]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p, q in zip(fused_net.parameters(), loop_net.parameters(), strict=True):
            p.grad = torch.randn(p.shape, generator=gen)
            q.grad = p.grad.clone()
        fused.step()
        loop.step()
    for (name, p), q, p0 in zip(fused_net.named_parameters(), loop_net.parameters(), start, strict=True):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7), name
        assert not torch.equal(p, p0), name  # every parameter moved
    on_meta = nn.Parameter(torch.empty(3, device="meta"))
    assert fused_step([{"params": [on_meta]}]) is None  # elsewhere: torch's default update
