"""Architecture -> nn.Module: a timm backbone with each stage's mechanism where it belongs."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import attention

from . import backbone as bb
from .space import NONE, Architecture, ArchitectureError, StageChoice


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


def build(arch: Architecture, num_classes: int, in_chans: int = 3, device: str | torch.device | None = None) -> nn.Module:
    """Build ``arch``: timm creates the backbone (random init, never downloads); then for every stage
    the chosen mechanism goes into every block at its placement, or once after the stage for
    ``stage_output``. Stages come from timm's ``feature_info``. Raises ArchitectureError when a choice
    does not fit the backbone (wrong stage count, placement unavailable, invalid at a channel count)."""
    if device is not None and torch.device(device).type == "meta":  # shapes, params and FLOPs only
        with torch.device("meta"):
            return build(arch, num_classes, in_chans)
    model = bb.create(arch.backbone, num_classes=num_classes, in_chans=in_chans)
    found = bb.stages(model)
    if len(found) != len(arch.stages):
        raise ArchitectureError(
            f"{arch}: {arch.backbone} has {len(found)} stages with blocks (feature_info indices "
            f"{', '.join(str(s.index) for s in found)}) but the architecture lists {len(arch.stages)}")
    for stage, choice in zip(found, arch.stages):
        if choice.replace_builtin:
            _remove_builtin(stage)
        if choice.mechanism == NONE:
            continue
        if choice.placement not in stage.placements:
            raise ArchitectureError(f"{arch}: stage {stage.index}: {choice.mechanism} cannot go at {choice.placement}; "
                                    f"the blocks of {stage.module_name} offer {', '.join(stage.placements)}")
        try:
            if choice.placement == "stage_output":
                stage.install_after(model, _make(choice, stage.channels))
                continue
            for block, slots in zip(stage.block_names, stage.slots()):
                slot = slots.get(choice.placement)
                if slot is None:
                    raise ArchitectureError(f"{block} ({type(model.get_submodule(block)).__name__}) has no "
                                            f"{choice.placement} slot; it offers {', '.join(slots) or 'none'}")
                if slot.builtin is not None:
                    raise ArchitectureError(f"{block} already holds {type(slot.builtin).__name__} at "
                                            f"{choice.placement}; mark the stage '!' to replace built-in attention")
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
