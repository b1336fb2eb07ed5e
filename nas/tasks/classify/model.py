"""Architecture -> nn.Module: a timm backbone with each stage's mechanism where it belongs."""

from __future__ import annotations

import torch
from torch import nn

import attention
from nas.core.architecture import NONE, Architecture, ArchitectureError, StageChoice
from nas.core.seeding import seeded as _seeded
from nas.measure.cost import ModelCost, count_flops, count_params
from nas.tasks.classify import backbone as bb


def _make(choice: StageChoice, channels: int, stride: int = 1) -> nn.Module:
    spec = attention.MECHANISMS[choice.mechanism]
    hp = spec.resolve(channels, **dict(choice.hparams))
    if stride != 1:
        return spec.cls(channels, **hp, stride=stride)
    return spec.cls(channels, **hp)


def _remove_builtin(stage: bb.Stage) -> None:
    for slots in stage.slots():
        for slot in slots.values():
            if slot.builtin is not None:
                slot.install(nn.Identity())


def build(
    arch: Architecture,
    num_classes: int,
    in_chans: int = 3,
    device: str | torch.device | None = None,
    init_seed: int | None = None,
) -> nn.Module:
    """Build ``arch``: timm creates the backbone (random init, never downloads); then for every stage
    the chosen mechanism goes into every block at its placement, or once after the stage for
    ``stage_output``. Stages come from timm's ``feature_info``. Raises ArchitectureError when a choice
    does not fit the backbone (wrong stage count, placement unavailable, invalid at a channel count).

    ``init_seed``: the backbone's weights are drawn from this seed, so they are identical for every
    architecture of a backbone, and each attention module from a generator of its own (seeded by
    ``init_seed`` and its place), so a module starts the same whatever the other stages hold and two
    architectures differ only where their choices differ (common random numbers)."""
    if device is not None and torch.device(device).type == "meta":  # shapes, params and FLOPs only
        with torch.device("meta"):
            return build(arch, num_classes, in_chans)
    if init_seed is not None:
        torch.manual_seed(init_seed)
    model = bb.create(arch.backbone, num_classes=num_classes, in_chans=in_chans)
    found = bb.stages(model)
    if len(found) != len(arch.stages):
        raise ArchitectureError(
            f"{arch}: {arch.backbone} has {len(found)} stages with blocks (feature_info indices "
            f"{', '.join(str(s.index) for s in found)}) but the architecture lists {len(arch.stages)}"
        )
    for stage, choice in zip(found, arch.stages, strict=True):
        if choice.replace_builtin:
            _remove_builtin(stage)
        if choice.mechanism == NONE:
            continue
        placements = stage.placements
        problem = bb.placement_problem(
            choice.mechanism,
            choice.placement,
            stage.index,
            placements,
            {p: stage.builtin(p) for p in placements},
            choice.replace_builtin,
        )
        if problem:
            raise ArchitectureError(f"{arch}: {problem}")
        try:
            if choice.placement == "stage_output":
                with _seeded(init_seed, stage.index, -1):
                    stage.install_after(model, _make(choice, stage.channels))
                continue
            for k, slots in enumerate(stage.slots()):  # every block has the slot (placement_problem)
                slot = slots[choice.placement]
                with _seeded(init_seed, stage.index, k):
                    slot.install(_make(choice, slot.channels, slot.stride))
        except attention.HyperparameterError as e:
            raise ArchitectureError(f"{arch}: stage {stage.index}: {e}") from None
        except ArchitectureError as e:
            raise ArchitectureError(f"{arch}: stage {stage.index}: {e}") from None
    if device is not None:
        model = model.to(device)
    return model


def architecture_problems(arch: Architecture, input_size: tuple[int, int] = (224, 224), in_chans: int = 3) -> list[str]:
    """Why ``arch`` cannot be built (empty when it can): stage count, placements, channel rules."""
    reason = bb.check_model_name(arch.backbone)
    if reason:
        return [reason]
    infos = bb.describe(arch.backbone, input_size, in_chans)
    if len(infos) != len(arch.stages):
        return [
            f"{arch.backbone} has {len(infos)} stages with blocks (feature_info indices "
            f"{', '.join(str(i.index) for i in infos)}); the architecture lists {len(arch.stages)}"
        ]
    problems = []
    for info, choice in zip(infos, arch.stages, strict=True):
        if choice.mechanism == NONE:
            continue
        problem = bb.placement_problem(
            choice.mechanism, choice.placement, info.index, info.placements, info.builtin, choice.replace_builtin
        )
        if problem:
            problems.append(problem)
            continue
        spec = attention.MECHANISMS[choice.mechanism]
        for ch in info.channels[choice.placement]:
            problems += [f"stage {info.index}: {e}" for e in spec.problems(ch, **dict(choice.hparams))]
    return problems


def model_cost(arch: Architecture, num_classes: int, input_size: tuple[int, int], in_chans: int) -> ModelCost:
    """Params and FLOPs of the assembled model, computed on the meta device (no memory, no compute)."""
    problems = architecture_problems(arch, input_size, in_chans)
    if problems:
        raise ArchitectureError(f"{arch}: " + "; ".join(problems))
    model = build(arch, num_classes, in_chans, device="meta").eval()
    return ModelCost(count_params(model), count_flops(model, torch.empty(1, in_chans, *input_size, device="meta")))
