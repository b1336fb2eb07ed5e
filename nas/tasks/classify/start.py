"""``init: pretrained`` for a classifier: the plain backbone's weights from a file (timm's or torchvision's
state dict, a training script's checkpoint, a nas export folder) or timm's published weights
(``pretrained: true``, which downloads them), fitted to the space's backbone: the classifier kept as
drawn from the seed where the file's is for other classes, the first convolution adapted to the space's
input channels as timm adapts it, anything else that differs refused, named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from nas.core.checkpoints import CheckpointFileError, fit_state, read_state_file, weights_file
from nas.tasks.classify import backbone as bb


def _published(name: str) -> dict[str, Any]:
    """timm's published weights of ``name`` (downloaded; the classifier and input channels as published)."""
    import timm

    try:
        return timm.create_model(name, pretrained=True).state_dict()
    except Exception as e:  # no network, no published weights for this name
        raise CheckpointFileError(
            f"pretrained: true reads timm's published weights of {name}, which failed ({e.__class__.__name__}: "
            f"{str(e).splitlines()[0][:200] if str(e) else ''}); this needs the network and a name timm has "
            "weights for. Give checkpoint: <a weights file> instead"
        ) from None


def given_start(space: Any, num_classes: int, seed: int) -> tuple[dict[str, Any], str, list[str]]:
    from nas.core.artifacts import sha256_of

    training = space.training
    torch.manual_seed(seed)  # what the file does not hold is drawn as a trial's plain network draws it
    plain = bb.create(space.backbone, num_classes=num_classes, in_chans=space.in_chans)
    cfg = getattr(plain, "pretrained_cfg", {}) or {}
    head, first = cfg.get("classifier"), cfg.get("first_conv")
    heads = [head] if isinstance(head, str) else list(head or [])
    if training.pretrained:
        given, source = _published(space.backbone), f"timm's published weights of {space.backbone}"
    else:
        path = Path(training.checkpoint)
        given = read_state_file(path)
        source = f"{path} (SHA-256 {sha256_of(weights_file(path))})"
    state, notes = fit_state(
        plain.state_dict(),
        given,
        f"the plain {space.backbone} ({space.in_chans} input channels, {num_classes} classes)",
        fresh=lambda key: any(key.startswith(h + ".") for h in heads),
        first_conv=f"{first}.weight" if isinstance(first, str) else None,
    )
    return state, source, notes
