"""Properties every mechanism must have: shape, gradients, edge sizes, dtypes, devices, memory layout,
refused hyperparameters, parameter counts from the papers' formulas, timm and YOLO integration."""

import math

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import attention

from _helpers import NAMES, SMALL_C, SMALL_HP, randomize, small


def test_registry_lists_the_twelve_with_papers_and_placements():
    assert sorted(NAMES) == sorted(["se", "eca", "soca", "cbam", "gam", "ca", "simam", "nam", "sa", "cca", "s2", "sk"])
    for spec in attention.MECHANISMS.values():
        assert spec.arxiv or spec.reference, spec.name
        assert spec.placement in attention.PLACEMENTS
        assert spec.is_valid(256), f"{spec.name} defaults must be valid at 256 channels"
        for h in spec.hparams:
            assert spec.find(h.short) is h


@pytest.mark.parametrize("name", NAMES)
def test_shape_and_gradients_reach_every_parameter(name):
    m = randomize(small(name)).train()
    x = torch.randn(2, SMALL_C, 7, 5, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x), "the mechanism must change its input"
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}.{pname} got no gradient"
        assert bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().sum()) > 0, f"{name}.{pname}"


@pytest.mark.parametrize("hw", [(1, 1), (1, 6), (5, 1), (3, 3), (7, 9)])
@pytest.mark.parametrize("name", NAMES)
def test_finite_on_edge_sizes_in_train_and_eval(name, hw):
    m = randomize(small(name))
    x = torch.randn(2, SMALL_C, *hw) * 3
    for mode in (True, False):
        y = m.train(mode)(x)
        assert y.shape == x.shape and torch.isfinite(y).all(), f"{name} at {hw}, train={mode}"


@pytest.mark.parametrize("name", NAMES)
def test_no_tensor_is_created_off_the_input_device(name):
    """Built on the meta device and run on a meta input: any tensor created on the CPU by default
    (a mask, an identity matrix) would fail to mix with meta tensors."""
    m = small(name, device="meta")
    assert all(p.device.type == "meta" for p in m.parameters())
    y = m(torch.empty(2, SMALL_C, 6, 5, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, SMALL_C, 6, 5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", NAMES)
def test_autocast_matches_float32(name, dtype):
    m = randomize(small(name), scale=0.1).eval()  # weights of a realistic scale: no saturated softmax
    x = torch.randn(2, SMALL_C, 8, 6)
    ref = m(x)
    with torch.autocast("cpu", dtype=dtype):
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    tol = 0.05 * ref.abs().max().item() + 0.05
    assert (y.float() - ref).abs().max().item() < tol, f"{name} under {dtype} autocast"


@pytest.mark.parametrize("name", NAMES)
def test_module_in_half_and_double_precision_keeps_the_dtype(name):
    x = torch.randn(2, SMALL_C, 6, 6)
    ref = randomize(small(name), scale=0.1).eval()(x)
    for dtype in (torch.bfloat16, torch.float64):
        m = randomize(small(name), scale=0.1).eval().to(dtype)
        y = m(x.to(dtype))
        assert y.dtype == dtype and torch.isfinite(y).all()
        assert (y.float() - ref).abs().max().item() < 0.05 * ref.abs().max().item() + 0.05
    m = small(name, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in m.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_input_gives_the_same_result(name):
    m = randomize(small(name), scale=0.1).eval()
    x = torch.randn(2, SMALL_C, 7, 6)
    torch.testing.assert_close(m(x.to(memory_format=torch.channels_last)), m(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_forward_builds_no_modules_and_no_state(name):
    m = small(name).train()
    before = [n for n, _ in m.named_modules()], list(m.state_dict())
    for hw in ((5, 7), (9, 3)):
        m(torch.randn(2, SMALL_C, *hw))
    assert ([n for n, _ in m.named_modules()], list(m.state_dict())) == before


@pytest.mark.parametrize("name", NAMES)
def test_timm_attn_layer_slot_accepts_every_mechanism(name):
    layer = attention.attn_layer(name, **SMALL_HP.get(name, {}))
    model = timm.create_model("resnet18", num_classes=3, block_args=dict(attn_layer=layer))
    blocks = [b for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for b in stage]
    assert all(isinstance(b.se, attention.MECHANISMS[name].cls) for b in blocks)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


# Reference totals of timm resnet50 with the mechanism in every bottleneck (../shared reference,
# computed with the official code): SE-ResNet-50 = CBAM table 28.09M class, SA-ResNet-50 (G=64),
# NAM-ResNet-50 (one BN per block), SimAM adds nothing.
RESNET50_TOTALS = {"se": 28_088_024, "cbam": 28_089_624, "sa": 25_557_740, "nam": 25_587_240, "simam": 25_557_032}


@pytest.mark.parametrize("name", sorted(RESNET50_TOTALS))
def test_resnet50_parameter_totals_match_the_official_models(name):
    model = timm.create_model("resnet50", block_args=dict(attn_layer=attention.attn_layer(name)))
    assert sum(p.numel() for p in model.parameters()) == RESNET50_TOTALS[name]


def _sk_params(c, r=16, L=32, g=32, m=2):
    d = max(c // r, L)
    return m * (c * (c // g) * 9 + 2 * c) + c * d + 2 * d + d * m * c


def _gam_params(c, r=4, g=1):
    h = c // r
    return 2 * c * h + h + c + (c // g) * h * 49 + h + 2 * h + (h // g) * c * 49 + c + 2 * c


def _ca_params(c, r=32):
    mip = max(8, c // r)
    return c * mip + mip + 2 * mip + 2 * (mip * c + c)


PAPER_PARAMS = {
    # name: (formula(C), hyperparameters)
    "se": (lambda c: 2 * c * (c // 16) + c // 16 + c, {}),
    "soca": (lambda c: 2 * c * (c // 16) + c // 16 + c, {}),
    "cbam": (lambda c: 2 * c * (c // 16) + c // 16 + c + 2 * 49 + 2, {}),
    "eca": (lambda c: attention.eca_kernel_size(c), {}),
    "ca": (_ca_params, {}),
    "simam": (lambda c: 0, {}),
    "nam": (lambda c: 2 * c, {}),
    "sa": (lambda c: 3 * c // 64, {}),
    "cca": (lambda c: 2 * (c * (c // 8) + c // 8) + c * c + c + 1, {}),
    "s2": (lambda c: 8 * c * c + 4 * c, {}),
    "sk": (_sk_params, {}),
    "gam": (_gam_params, {}),
}


@pytest.mark.parametrize("channels", [128, 256, 1024])
@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_follows_the_paper_formula(name, channels):
    formula, hp = PAPER_PARAMS[name]
    m = attention.create(name, channels, **hp)
    assert sum(p.numel() for p in m.parameters()) == formula(channels)


def test_parameter_counts_of_non_default_hyperparameters():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(attention.create("sk", 96, reduction=4, min_hidden=8, groups=3, branches=3)) == _sk_params(
        96, 4, 8, 3, 3
    )
    assert count(attention.create("gam", 64, reduction=2, groups=4)) == _gam_params(64, 2, 4)
    assert count(attention.create("eca", 256, k_size=3)) == 3
    assert count(attention.create("sa", 96, groups=8)) == 3 * 96 // 8
    # Official SKNet-50 prototxt: fuse width 32, 32, 32, 64 at 128, 256, 512, 1024 channels.
    assert [attention.create("sk", c).fc.out_features for c in (128, 256, 512, 1024)] == [32, 32, 32, 64]
    # Official Coordinate Attention: mip = max(8, C // 32).
    assert [attention.create("ca", c).conv1.out_channels for c in (64, 256, 512, 1024)] == [8, 8, 16, 32]


def test_official_initialisations():
    cbam = attention.create("cbam", 64)
    assert torch.equal(cbam.bn.weight, torch.zeros(1)) and cbam.bn.momentum == 0.01
    sa = attention.create("sa", 128, groups=8)
    assert (sa.cweight == 0).all() and (sa.cbias == 1).all() and (sa.sweight == 0).all() and (sa.sbias == 1).all()
    assert attention.create("cca", 64).gamma.item() == 0.0
    x = torch.randn(2, 64, 5, 5)
    assert torch.equal(attention.create("cca", 64)(x), x), "gamma = 0: CCA starts as the identity"


REFUSED = [
    # (name, channels, hyperparameters, words the message must contain)
    ("se", 8, {"reduction": 16}, ["se", "reduction=16", "8 channels", "<= 8"]),
    ("soca", 8, {"reduction": 16}, ["soca", "reduction=16"]),
    ("sa", 96, {"groups": 64}, ["sa", "groups=64", "96 channels", "2 * groups", "[1, 2, 3, 4, 6, 8, 12, 16, 24, 48]"]),
    ("sa", 24, {"groups": 8}, ["sa", "groups=8", "2 * groups"]),  # C/G odd: the silent mis-split of common copies
    ("sa", 64, {}, ["sa", "groups=64", "64 channels"]),  # the official default does not fit 64 channels
    ("sk", 48, {}, ["sk", "groups=32", "divide"]),
    ("gam", 24, {"groups": 4}, ["gam", "groups=4", "channels // reduction (6)"]),
    ("eca", 64, {"k_size": 4}, ["eca", "k_size=4", "odd"]),
    ("eca", 64, {"k_size": "big"}, ["eca", "k_size='big'", "'auto'"]),
    ("cbam", 64, {"kernel_size": 8}, ["cbam", "kernel_size=8", "odd"]),
    ("cbam", 64, {"reduction": "16"}, ["cbam", "reduction='16'", "integer"]),
    ("cbam", 64, {"reduction": True}, ["cbam", "reduction=True"]),
    ("cbam", 64, {"reduction": 0}, ["cbam", "reduction=0", ">= 1"]),
    ("se", 64, {"groups": 4}, ["se", "groups=4", "unknown hyperparameter", "reduction"]),
    ("simam", 64, {"e_lambda": -1.0}, ["simam", "e_lambda=-1.0"]),
    ("simam", 64, {"e_lambda": float("nan")}, ["simam", "e_lambda=nan"]),
    ("cca", 4, {}, ["cca", "reduction=8", "query/key width"]),
    ("sk", 64, {"branches": 5}, ["sk", "branches=5", "[2, 4]"]),
    ("s2", 2, {}, ["s2", "channels=2", ">= 4"]),
    ("ca", 0, {}, ["ca", "channels=0"]),
    ("ca", 64.0, {}, ["ca", "channels=64.0"]),
]


@pytest.mark.parametrize("name,channels,hp,words", REFUSED)
def test_unusable_hyperparameters_are_refused_at_construction(name, channels, hp, words):
    with pytest.raises(attention.HyperparameterError) as info:
        attention.create(name, channels, **hp)
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"
    assert not attention.MECHANISMS[name].is_valid(channels, **hp)


def test_direct_class_construction_validates_too():
    with pytest.raises(attention.HyperparameterError, match="groups=8"):
        attention.ShuffleAttention(24, groups=8)


def test_unknown_mechanism_names_the_known_ones():
    with pytest.raises(attention.UnknownMechanismError, match="'sea'.*known: ca, cbam"):
        attention.create("sea", 64)


def test_valid_values_answer_per_channel_count():
    sa = attention.MECHANISMS["sa"]
    assert sa.valid_values("groups", 64) == [1, 2, 4, 8, 16, 32]
    assert sa.is_valid(256, groups=64) and not sa.is_valid(96, groups=64)
    assert attention.MECHANISMS["se"].valid_values("reduction", 8) == list(range(1, 9))
    assert attention.MECHANISMS["eca"].valid_values("k_size", 64, candidates=["auto", 1, 2, 3, 9]) == ["auto", 1, 3, 9]
    assert attention.MECHANISMS["gam"].valid_values("groups", 32, reduction=4) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="continuous"):
        attention.MECHANISMS["simam"].valid_values("e_lambda", 64)


def test_short_keys_and_aliases():
    m = attention.create("CoordAtt", 64, r=16)
    assert isinstance(m, attention.CoordAtt) and m.hparams == {"reduction": 16}
    assert attention.create("cbam", 64, r=8, k=3).hparams == {"reduction": 8, "kernel_size": 3}


def test_soca_memory_is_quadratic_in_channels_not_in_pixels():
    """At 64x64 pixels a per-sample M x M centring matrix (as in the SAN code) would cost
    2*C*M*M FLOPs; the batched covariance costs 2*C*C*M."""
    c, hw = 8, 64
    m = attention.create("soca", c, reduction=4)
    counter = FlopCounterMode(display=False)
    with counter:
        m(torch.randn(2, c, hw, hw))
    assert counter.get_total_flops() < c * (hw * hw) ** 2 / 100


def test_simam_is_finite_on_1x1_maps_in_half_precision():
    y = attention.create("simam", 8).half()(torch.randn(2, 8, 1, 1).half() * 100)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(
        attention.create("simam", 8)(torch.ones(1, 8, 1, 1)), torch.full((1, 8, 1, 1), 1 / (1 + math.exp(-0.5)))
    )


def test_yolo_aliases_take_c1_c2_and_positional_hyperparameters():
    from attention import yolo

    m = yolo.CBAM(64, 64, 8, 3)
    assert isinstance(m, attention.CBAM) and m.hparams == {"reduction": 8, "kernel_size": 3}
    assert yolo.SimAM(32).channels == 32 and yolo.ShuffleAttention(128, None, 16).hparams == {"groups": 16}
    with pytest.raises(attention.HyperparameterError, match="c2=128.*must equal c1 \\(64\\)"):
        yolo.SE(64, 128)
    with pytest.raises(attention.HyperparameterError, match="at most 1 positional"):
        yolo.SE(64, 64, 16, 3)
    with pytest.raises(attention.HyperparameterError, match="groups=64.*96 channels"):
        yolo.ShuffleAttention(96, 96)
    aliases = {s.cls.__name__ for s in attention.MECHANISMS.values()}
    model_yaml_rule = {"ACTIVATIONS", "ModelYamlError", "activation_code", "keypath", "model_yaml_problems"}
    assert set(yolo.__all__) == aliases | {"register"} | model_yaml_rule and set(yolo.ALIASES) == aliases


def test_a_third_party_mechanism_registers_through_the_public_api_and_never_shadows_one():
    @attention.mechanism(
        name="halve",
        title="test only: halves its input",
        arxiv=None,
        reference="test",
        placement="residual",
        placement_note="test",
        hparams=(),
    )
    class Halve(attention.Attention):
        def __init__(self, channels, *, device=None, dtype=None):
            super().__init__(channels)

        def forward(self, x):
            return x / 2

    try:
        assert "halve" in attention.MECHANISMS and attention.create("halve", 8)(torch.ones(1, 8, 2, 2)).max() == 0.5
        with pytest.raises(ValueError, match="'se' is already registered"):
            attention.register(attention.MechanismSpec(**{**vars(attention.MECHANISMS["halve"]), "name": "se"}))
    finally:
        attention.unregister("halve")
    assert "halve" not in attention.MECHANISMS
    with pytest.raises(attention.UnknownMechanismError):
        attention.create("halve", 8)
