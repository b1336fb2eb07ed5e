"""Architecture -> nn.Module: a timm backbone with each stage's mechanism where it belongs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

import attention
from nas.core.architecture import NONE, Architecture, ArchitectureError, StageChoice
from nas.core.seeding import seeded as _seeded
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


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """``model``'s state dict as safetensors at ``path`` (written to a temporary file and renamed, so a
    reader never sees half a file), with string ``metadata``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def build_in(space: Any, arch: Architecture, num_classes: int, init_seed: int | None = None) -> nn.Module:
    """``arch`` as ``space`` builds it: a timm classifier (``build``) or, for a detection space, the
    ultralytics detector with its attention rows (``nas.tasks.detect.model.build``). The one dispatch every
    part that needs a space's model calls."""
    if space.is_detection:
        from nas.tasks.detect.model import build as build_detector

        return build_detector(space.detector, space.positions, arch, num_classes, init_seed=init_seed)
    return build(arch, num_classes, space.in_chans, init_seed=init_seed)
