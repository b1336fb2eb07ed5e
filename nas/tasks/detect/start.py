"""``init: pretrained`` for a detector: the plain detector's weights from an ultralytics checkpoint (such
as ``yolov8n.pt``, read weights-only: a crafted pickle runs nothing), a state dict file or a nas export
folder, fitted to the space's detector tensor by tensor: the Detect layer's tensors for another number of
classes kept as drawn from the seed, anything else that differs refused, named. Every architecture then
gets them by ``model.build``'s copy, which follows each layer to its index after the inserted attention
rows (ultralytics' own ``load`` matches by index and would give later layers another layer's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.core.checkpoints import CheckpointFileError, fit_state, read_state_file, weights_file


def read_weights(path: Path) -> tuple[dict[str, Any], str]:
    """The tensors of an ultralytics checkpoint (its EMA where it has one) or of a state dict file, and
    which of the two it was."""
    from nas.tasks.detect import ultra

    if path.is_file() and path.suffix != ".safetensors":
        try:
            ckpt = ultra.read_checkpoint(path, "give an ultralytics .pt, a state dict file or a nas export folder")
        except ultra.CheckpointError:
            ckpt = None  # perhaps a plain state dict: read as one below (a crafted pickle is refused there too)
        model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
        if model is not None and hasattr(model, "state_dict"):
            return {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}, "ultralytics"
    return read_state_file(path), "state dict"


def given_start(space: Any, num_classes: int, seed: int) -> tuple[dict[str, Any], str, list[str]]:
    from nas.core.artifacts import sha256_of
    from nas.tasks.detect.model import build

    training = space.training
    if training.pretrained:
        raise CheckpointFileError(
            "pretrained: true is for classification backbones (timm's published weights); for a detector give "
            "checkpoint: <an ultralytics .pt such as yolov8n.pt, downloaded beforehand>"
        )
    path = Path(training.checkpoint)
    if not path.exists():
        raise CheckpointFileError(f"checkpoint: {path} is not there; give an ultralytics .pt or a nas export folder")
    given, kind = read_weights(path)
    plain = build(space.detector, space.positions, space.baseline(), num_classes, init_seed=seed)
    head = f"model.{len(plain.model) - 1}."  # the Detect layer: its class outputs depend on the classes
    state, notes = fit_state(
        plain.state_dict(),
        given,
        f"the plain detector {space.detector.name} ({num_classes} classes)",
        fresh=lambda key: key.startswith(head),
    )
    return state, f"{path} ({kind}, SHA-256 {sha256_of(weights_file(path))})", notes
