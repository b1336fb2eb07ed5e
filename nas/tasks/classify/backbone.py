"""What a timm backbone offers for attention: its stages (from timm's ``feature_info``), the blocks of
each stage, and per block the slots where a mechanism can go (with their channel counts), including
attention the backbone already ships.

Slots per block family (see attention.PLACEMENTS for the vocabulary):

=================  =========================  ==========================  ===========================
placement          ResNet Basic/Bottleneck    EfficientNet/MobileNet      RegNet Bottleneck
=================  =========================  ==========================  ===========================
residual           ``se`` (after last BN)     after the pw-linear BN      after conv3 (+BN)
post_conv3x3       after conv2 (the 3x3)      after the depthwise conv    after conv2's conv
post_conv3x3_act   after the 3x3 + BN + act   ``se`` (after dw+BN+act)    ``se`` (after conv2+BN+act)
replace_conv3x3    conv2 (Bottleneck 3x3)     -                           conv2
stage_output       after the stage, for every family
=================  =========================  ==========================  ===========================
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import timm
import torch
from timm.models import _efficientnet_blocks as effnet_blocks
from timm.models import regnet, resnet
from torch import nn

from nas.core.errors import UserError
from nas.core.space import StageInfo

BLOCK_PLACEMENTS = ("residual", "post_conv3x3", "post_conv3x3_act", "replace_conv3x3")


class BackboneError(UserError):
    pass


@dataclass
class Slot:
    """One place in one block: channel count there, how to put a module in, and what that module takes
    the place of (``replaced()``: the layers whose function it replaces, None where it is added after a
    layer; an identity-started insertion keeps their function)."""

    channels: int
    install: Callable[[nn.Module], None]
    stride: int = 1
    builtin: nn.Module | None = None  # attention the backbone already has in this slot
    replaced: Callable[[], nn.Module | None] = lambda: None


def _wrap(owner: nn.Module, attr: str) -> Callable[[nn.Module], None]:
    """Put the module right after ``owner.<attr>`` by turning it into Sequential(old, new)."""

    def install(m: nn.Module) -> None:
        setattr(owner, attr, nn.Sequential(getattr(owner, attr), m))

    return install


def _set(owner: nn.Module, attr: str) -> Callable[[nn.Module], None]:
    return lambda m: setattr(owner, attr, m)


def _current(owner: nn.Module, attr: str) -> Callable[[], nn.Module | None]:
    """What ``_set(owner, attr)`` replaces: the module there, unless it is an identity or absent."""
    return lambda: _present(getattr(owner, attr, None))


def _present(m: nn.Module | None) -> nn.Module | None:
    return None if m is None or isinstance(m, nn.Identity) else m


def _resnet_slots(b: nn.Module) -> dict[str, Slot]:
    bottleneck = isinstance(b, resnet.Bottleneck)
    last = b.conv3 if bottleneck else b.conv2
    slots = {
        "residual": Slot(last.out_channels, _set(b, "se"), builtin=_present(b.se), replaced=_current(b, "se")),
        "post_conv3x3": Slot(b.conv2.out_channels, _wrap(b, "conv2")),
        "post_conv3x3_act": Slot(
            b.conv2.out_channels if bottleneck else b.conv1.out_channels, _wrap(b, "act2" if bottleneck else "act1")
        ),
    }
    conv = b.conv2
    if conv.in_channels == conv.out_channels and conv.kernel_size == (3, 3) and conv.dilation == (1, 1):

        def replace(m: nn.Module) -> None:
            b.conv2 = m
            if bottleneck:  # the selective kernel brings its own BN + ReLU per branch
                b.bn2, b.act2 = nn.Identity(), nn.Identity()

        def replaced() -> nn.Module:
            return nn.Sequential(b.conv2, b.bn2, b.act2) if bottleneck else b.conv2

        slots["replace_conv3x3"] = Slot(conv.out_channels, replace, stride=conv.stride[0], replaced=replaced)
    return slots


def _effnet_slots(b: nn.Module) -> dict[str, Slot]:
    inverted = isinstance(b, effnet_blocks.InvertedResidual)
    last_conv, last_bn = (b.conv_pwl, "bn3") if inverted else (b.conv_pw, "bn2")
    return {
        "residual": Slot(last_conv.out_channels, _wrap(b, last_bn)),
        "post_conv3x3": Slot(b.conv_dw.out_channels, _wrap(b, "conv_dw")),
        "post_conv3x3_act": Slot(
            b.conv_dw.out_channels, _set(b, "se"), builtin=_present(b.se), replaced=_current(b, "se")
        ),
    }


def _regnet_slots(b: nn.Module) -> dict[str, Slot]:
    conv = b.conv2.conv
    slots = {
        "residual": Slot(b.conv3.conv.out_channels, _wrap(b, "conv3")),
        "post_conv3x3": Slot(conv.out_channels, _wrap(b.conv2, "conv")),
        "post_conv3x3_act": Slot(conv.out_channels, _set(b, "se"), builtin=_present(b.se), replaced=_current(b, "se")),
    }
    if conv.in_channels == conv.out_channels and conv.kernel_size == (3, 3) and conv.dilation == (1, 1):
        slots["replace_conv3x3"] = Slot(
            conv.out_channels, _set(b, "conv2"), stride=conv.stride[0], replaced=_current(b, "conv2")
        )
    return slots


# Block classes with slots, and the function that finds them.
_FAMILIES: tuple[tuple[tuple[type, ...], Callable[[nn.Module], dict[str, Slot]]], ...] = (
    ((resnet.BasicBlock, resnet.Bottleneck), _resnet_slots),
    ((effnet_blocks.InvertedResidual, effnet_blocks.DepthwiseSeparableConv), _effnet_slots),
    ((regnet.Bottleneck,), _regnet_slots),
)


def block_slots(block: nn.Module) -> dict[str, Slot]:
    for classes, fn in _FAMILIES:
        if isinstance(block, classes):
            return fn(block)
    return {}


@dataclass
class Stage:
    """One stage of a backbone: feature_info entry ``index``, its module, its blocks."""

    index: int
    module_name: str  # feature_info module: the stage output
    channels: int  # output channels
    reduction: int
    blocks: list[nn.Module]
    block_names: list[str]

    def slots(self) -> list[dict[str, Slot]]:
        return [block_slots(b) for b in self.blocks]

    @property
    def placements(self) -> tuple[str, ...]:
        """Placements every block of the stage offers, plus stage_output."""
        per_block = [set(s) for s in self.slots()]
        common = set.intersection(*per_block) if per_block else set()
        return tuple(p for p in BLOCK_PLACEMENTS if p in common) + ("stage_output",)

    def channels_at(self, placement: str) -> list[int]:
        """Distinct channel counts a mechanism meets at ``placement`` in this stage."""
        if placement == "stage_output":
            return [self.channels]
        return sorted({s[placement].channels for s in self.slots() if placement in s})

    def builtin(self, placement: str) -> list[str]:
        """Class names of attention the backbone already has at ``placement`` in this stage."""
        if placement == "stage_output":
            return []
        return sorted(
            {
                type(s[placement].builtin).__name__
                for s in self.slots()
                if placement in s and s[placement].builtin is not None
            }
        )

    def install_after(self, model: nn.Module, module: nn.Module) -> None:
        """Put ``module`` after the stage's output module."""
        target = model.get_submodule(self.module_name)
        if isinstance(target, nn.Sequential):
            target.add_module("attn", module)
        else:
            parent_name, _, attr = self.module_name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, nn.Sequential(target, module))


def _is_block(m: nn.Module) -> bool:
    return bool(block_slots(m))


def stages(model: nn.Module) -> list[Stage]:
    """The stages of a timm model, in order, from its ``feature_info``. A feature_info entry whose module
    is ``blocks.4`` after an entry ``blocks.2`` covers the sibling groups ``blocks.3`` and ``blocks.4``.
    Where the family has blocks with slots, the stages are the entries that contain such blocks (the
    stem is not a stage); for other families (e.g. ConvNeXt) every entry but a stem is a stage, and
    only ``stage_output`` is offered."""
    found: list[Stage] = []
    prev_name = None
    for index, info in enumerate(model.feature_info):
        name = info["module"]
        groups = [name]
        parent, _, last = name.rpartition(".")
        if prev_name and last.isdigit():
            p_parent, _, p_last = prev_name.rpartition(".")
            if p_parent == parent and p_last.isdigit():
                groups = [f"{parent}.{i}" for i in range(int(p_last) + 1, int(last) + 1)]
        prev_name = name
        blocks, names = [], []
        for g in groups:
            for sub_name, sub in model.get_submodule(g).named_modules():
                if _is_block(sub):
                    blocks.append(sub)
                    names.append(f"{g}.{sub_name}" if sub_name else g)
        found.append(Stage(index, name, info["num_chs"], info["reduction"], blocks, names))
    if any(s.blocks for s in found):
        return [s for s in found if s.blocks]
    return [s for s in found if not _is_stem(model, s)]


def _is_stem(model: nn.Module, stage: Stage) -> bool:
    module = model.get_submodule(stage.module_name)
    leafish = all(not any(True for _ in child.children()) for child in module.children())
    return stage.reduction <= 2 and (leafish or "stem" in stage.module_name)


def check_model_name(name: object) -> str | None:
    """None if ``name`` is a timm model; otherwise the reason, with close names."""
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a model name; give a timm model name such as resnet18"
    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=4)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    return f"{name!r} is not a timm model{hint}"


def create(
    name: str, *, num_classes: int = 10, in_chans: int = 3, device: str | torch.device | None = None
) -> nn.Module:
    """A randomly initialised timm model (never downloads weights)."""
    reason = check_model_name(name)
    if reason:
        raise BackboneError(reason)
    if device is not None and torch.device(device).type == "meta":
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


REPLACE_BY_STRING = "mark the stage '!' to replace built-in attention"  # the remedy in an architecture string
REPLACE_BY_YAML = "set 'replace_builtin: true' on the stage to replace it, or choose another placement"  # in a space


def placement_problem(
    mechanism: str,
    placement: str,
    stage: int,
    placements: Sequence[str],
    builtin: Mapping[str, Sequence[str]],
    replace_builtin: bool,
    remedy: str = REPLACE_BY_STRING,
) -> str | None:
    """Why ``mechanism`` cannot go at ``placement`` in stage ``stage`` whose blocks offer ``placements``
    and already hold the attention named in ``builtin`` (placement -> class names); None when it can.
    The one placement rule: the space loader, ``architecture_problems`` and ``model.build`` all ask it."""
    import attention

    if placement not in attention.PLACEMENTS:
        return f"{placement!r} is not a placement; allowed: {', '.join(attention.PLACEMENTS)}"
    if placement not in placements:
        return f"{mechanism} cannot go at {placement} in stage {stage}; its blocks offer {', '.join(placements)}"
    if placement == "replace_conv3x3" and mechanism != "sk":
        return f"only a selective kernel can replace the 3x3 convolution, not {mechanism}"
    if builtin.get(placement) and not replace_builtin:
        return f"stage {stage} already has {', '.join(builtin[placement])} at {placement}; {remedy}"
    return None


@functools.lru_cache(maxsize=64)
def describe(name: str, input_size: tuple[int, int] = (224, 224), in_chans: int = 3) -> tuple[StageInfo, ...]:
    """Stages of backbone ``name`` with channel counts per placement and spatial size at ``input_size``
    (built and run on the meta device: no memory, no compute)."""
    model = create(name, in_chans=in_chans, device="meta").eval()
    found = stages(model)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        model.get_submodule(s.module_name).register_forward_hook(
            lambda mod, inp, out, n=s.module_name: sizes.__setitem__(n, tuple(out.shape[-2:]))
        )
        for s in found
    ]
    with torch.no_grad():
        model(torch.empty(1, in_chans, *input_size, device="meta"))
    for h in hooks:
        h.remove()
    return tuple(
        StageInfo(
            s.index,
            s.module_name,
            len(s.blocks),
            s.channels,
            sizes[s.module_name],
            s.placements,
            {p: s.channels_at(p) for p in s.placements},
            {p: s.builtin(p) for p in s.placements},
        )
        for s in found
    )
