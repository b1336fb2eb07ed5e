"""Architecture -> nn.Module: a timm backbone with each stage's mechanism where it belongs."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping

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


def _remove_builtin(stage: bb.Stage, keep: str | None = None) -> None:
    """Built-in attention out of the stage (an identity in its place), but at placement ``keep``, where the
    new mechanism takes it over (an identity-started insertion keeps its function)."""
    for slots in stage.slots():
        for place, slot in slots.items():
            if slot.builtin is not None and place != keep:
                slot.install(nn.Identity())


def build(
    arch: Architecture,
    num_classes: int,
    in_chans: int = 3,
    device: str | torch.device | None = None,
    init_seed: int | None = None,
    start: Mapping[str, torch.Tensor] | None = None,
    gated: bool = False,
) -> nn.Module:
    """Build ``arch``: timm creates the backbone (random init, never downloads); then for every stage
    the chosen mechanism goes into every block at its placement, or once after the stage for
    ``stage_output``. Stages come from timm's ``feature_info``. Raises ArchitectureError when a choice
    does not fit the backbone (wrong stage count, placement unavailable, invalid at a channel count).

    ``init_seed``: the backbone's weights are drawn from this seed, so they are identical for every
    architecture of a backbone, and each attention module from a generator of its own (seeded by
    ``init_seed`` and its place), so a module starts the same whatever the other stages hold and two
    architectures differ only where their choices differ (common random numbers).

    ``start``: the plain backbone's trained weights (its state dict), loaded before any attention goes
    in; ``gated``: each mechanism put in as ``attention.Gated`` around what it replaces (nothing, or the
    layer it takes the place of), so the network computes exactly ``start``'s function at first."""
    if device is not None and torch.device(device).type == "meta":  # shapes, params and FLOPs only
        with torch.device("meta"):
            return build(arch, num_classes, in_chans, gated=gated)
    if init_seed is not None:
        torch.manual_seed(init_seed)
    if start is None:
        model = bb.create(arch.backbone, num_classes=num_classes, in_chans=in_chans)
    else:
        model = started_backbone(arch.backbone, num_classes, in_chans, start, str(arch))
    found = bb.stages(model)
    if len(found) != len(arch.stages):
        raise ArchitectureError(
            f"{arch}: {arch.backbone} has {len(found)} stages with blocks (feature_info indices "
            f"{', '.join(str(s.index) for s in found)}) but the architecture lists {len(arch.stages)}"
        )
    for stage, choice in zip(found, arch.stages, strict=True):
        try:
            _install(model, stage, choice, init_seed, gated)
        except (attention.HyperparameterError, ArchitectureError) as e:
            raise ArchitectureError(f"{arch}: stage {stage.index}: {e}") from None
    if device is not None:
        model = model.to(device)
    return model


def _install(model: nn.Module, stage: bb.Stage, choice: StageChoice, init_seed: int | None, gated: bool) -> None:
    """The stage's mechanism into every block at its placement (or once after the stage)."""
    if choice.replace_builtin:
        _remove_builtin(stage, keep=choice.placement if gated and choice.mechanism != NONE else None)
    if choice.mechanism == NONE:
        return
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
        raise ArchitectureError(problem)
    if choice.placement == "stage_output":
        with _seeded(init_seed, stage.index, -1):
            new = _make(choice, stage.channels)
        stage.install_after(model, attention.Gated(new) if gated else new)
        return
    for k, slots in enumerate(stage.slots()):  # every block has the slot (placement_problem)
        slot = slots[choice.placement]
        with _seeded(init_seed, stage.index, k):
            new = _make(choice, slot.channels, slot.stride)
        slot.install(attention.Gated(new, slot.replaced()) if gated else new)


_started: tuple[tuple, Mapping[str, torch.Tensor], nn.Module] | None = None  # the last one built, with its start


def started_backbone(
    name: str, num_classes: int, in_chans: int, start: Mapping[str, torch.Tensor], what: str
) -> nn.Module:
    """A copy of the plain backbone ``name`` with ``start`` loaded. Built (random init, then ``start``)
    once per process and start, then copied: every tensor of its state comes from ``start``, so the
    copy equals a fresh build with ``start`` loaded, and the random initialisation it skips is most of a
    build's time (35 of 47 ms for resnet10t). The same ``start`` changed in place since (a tensor's
    version counter) is built again."""
    global _started
    key = (name, num_classes, in_chans, tuple((k, v.data_ptr(), v._version) for k, v in start.items()))
    if _started is None or _started[1] is not start or _started[0] != key:
        model = bb.create(name, num_classes=num_classes, in_chans=in_chans)
        load_start(model, start, what)
        _started = (key, start, model)
    return copy.deepcopy(_started[2])


def load_start(model: nn.Module, start: Mapping[str, torch.Tensor], what: str) -> None:
    """``start`` (a plain backbone's state dict) into ``model``; an ArchitectureError naming the first key
    or shape that does not fit."""
    from nas.core.artifacts import state_mismatch

    problem = state_mismatch(model.state_dict(), start)
    if problem:
        raise ArchitectureError(f"{what}: the starting weights do not fit the plain backbone ({problem})")
    model.load_state_dict(start)


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


def model_cost(
    arch: Architecture, num_classes: int, input_size: tuple[int, int], in_chans: int, gated: bool = False
) -> ModelCost:
    """Params and FLOPs of the assembled model (``gated``: as a warm start's identity insertion builds it,
    a replaced layer kept beside its mechanism). A stage's choice changes its own blocks only, at the
    shapes the backbone gives them, so the cost is the plain network's plus each stage's change, each
    counted once per process on the meta device (``_counted``; a search's trials share most of them)."""
    problems = architecture_problems(arch, input_size, in_chans)
    if problems:
        raise ArchitectureError(f"{arch}: " + "; ".join(problems))
    plain = Architecture(arch.backbone, tuple(StageChoice() for _ in arch.stages))
    base = _counted(plain, num_classes, tuple(input_size), in_chans, gated)
    params, flops = base.params, base.flops
    for i, choice in enumerate(arch.stages):
        if choice != plain.stages[i]:
            alone = Architecture(arch.backbone, plain.stages[:i] + (choice,) + plain.stages[i + 1 :])
            part = _counted(alone, num_classes, tuple(input_size), in_chans, gated)
            params, flops = params + part.params - base.params, flops + part.flops - base.flops
    return ModelCost(params, flops)


@functools.lru_cache(maxsize=4096)
def _counted(arch: Architecture, classes: int, input_size: tuple[int, int], in_chans: int, gated: bool) -> ModelCost:
    """Params and FLOPs of ``arch`` built on the meta device (no memory, no compute)."""
    model = build(arch, classes, in_chans, device="meta", gated=gated).eval()
    return ModelCost(count_params(model), count_flops(model, torch.empty(1, in_chans, *input_size, device="meta")))
