"""Given weights (``training.checkpoint``) read as data and fitted to the plain network of a space: a
state dict in safetensors or torch's format (timm's and torchvision's files, a training script's
``{"state_dict": ...}``), or a ``nas export`` folder's weights. ``fit_state`` says tensor by tensor where
each goes and refuses what it cannot place, naming the first tensor; what it adapted is told in notes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nas.core.artifacts import CARD_FILE, WEIGHTS_FILE
from nas.core.errors import UserError

NESTED = ("state_dict", "model_state_dict", "model", "module", "params")  # where training scripts put the weights
MAX_TENSORS = 100_000


class CheckpointFileError(UserError):
    """Given weights that cannot be read, or do not fit the space's network."""


def weights_file(path: Path) -> Path:
    """The file a ``checkpoint:`` names: the file itself, or a nas export folder's weights."""
    return path / WEIGHTS_FILE if path.is_dir() else path


def read_state_file(path: Path) -> dict[str, Any]:
    """The tensors of the weights file (or export folder) ``path`` as a flat state dict."""
    import torch

    path = Path(path)
    if path.is_dir():
        if not (path / CARD_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise CheckpointFileError(
                f"checkpoint: {path} is a folder but not a nas export with weights ({CARD_FILE} and "
                f"{WEIGHTS_FILE}); give a weights file or an export folder"
            )
    path = weights_file(path)
    if not path.is_file():
        raise CheckpointFileError(f"checkpoint: {path} is not there; give a weights file or a nas export folder")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not weights, a pickle naming objects weights_only refuses
        raise CheckpointFileError(
            f"checkpoint: {path} cannot be read as weights ({e.__class__.__name__}: {str(e).splitlines()[0][:200]}); "
            "expected a state dict saved with torch.save or safetensors"
        ) from None
    for _ in range(3):  # {"state_dict": {...}} and the like
        if isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
            inner = next((state[k] for k in NESTED if isinstance(state.get(k), Mapping)), None)
            if inner is None:
                break
            state = inner
    if not isinstance(state, Mapping) or not state:
        raise CheckpointFileError(f"checkpoint: {path} holds no state dict (a mapping of names to tensors)")
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if len(tensors) > MAX_TENSORS or not tensors:
        raise CheckpointFileError(f"checkpoint: {path} holds {len(tensors)} tensors; expected 1 to {MAX_TENSORS:,}")
    if all(k.startswith("module.") for k in tensors):  # saved from DataParallel / DDP
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def fit_state(
    own: Mapping[str, Any],
    given: Mapping[str, Any],
    what: str,
    fresh: Callable[[str], bool] = lambda key: False,
    first_conv: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """``given`` fitted to a network whose state dict is ``own``: each tensor goes to its own name. Kept as
    ``own`` has them (freshly initialised): the tensors ``fresh`` names (a classifier for other classes)
    where ``given`` lacks them or has another shape, and counters ``given`` lacks. Adapted: ``first_conv``
    for another number of input channels (timm's rule: summed or repeated), and a 1x1 convolution's weight
    given for a linear layer or back (same numbers, other shape). Anything else that differs is a
    CheckpointFileError naming the first tensor and the counts. Returns the state and what was done."""
    import torch

    out, notes, kept_fresh, adapted = {}, [], [], []
    problems: list[str] = []
    for key, mine in own.items():
        theirs = given.get(key)
        if theirs is None:
            if fresh(key) or key.endswith("num_batches_tracked"):
                out[key] = mine
                kept_fresh.append(key)
            else:
                problems.append(f"{key!r} {tuple(mine.shape)} is not in it")
            continue
        if tuple(theirs.shape) == tuple(mine.shape):
            out[key] = theirs.to(mine.dtype)
        elif fresh(key):
            out[key] = mine
            kept_fresh.append(key)
        elif (
            key == first_conv
            and theirs.dim() == 4
            and theirs.shape[0] == mine.shape[0]
            and theirs.shape[2:] == mine.shape[2:]
        ):
            from timm.models import adapt_input_conv

            out[key] = adapt_input_conv(mine.shape[1], theirs.float(), theirs.shape[1]).to(mine.dtype)
            adapted.append(f"{key} from {theirs.shape[1]} input channels to {mine.shape[1]}")
        elif theirs.numel() == mine.numel() and [d for d in theirs.shape if d != 1] == [
            d for d in mine.shape if d != 1
        ]:
            out[key] = theirs.reshape(mine.shape).to(mine.dtype)  # a 1x1 convolution's weight as a linear one
            adapted.append(f"{key} reshaped {tuple(theirs.shape)} -> {tuple(mine.shape)}")
        else:
            problems.append(f"{key!r} is {tuple(theirs.shape)} there, {tuple(mine.shape)} here")
    homeless = [k for k in given if k not in own]
    problems += [f"{k!r} {tuple(given[k].shape)} has no place here" for k in homeless]
    if problems:
        raise CheckpointFileError(
            f"checkpoint: the weights do not fit {what}: {len(problems)} tensors differ; first: {problems[0]}"
        )
    bad = next((k for k, v in out.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise CheckpointFileError(f"checkpoint: tensor {bad!r} holds NaN or infinite values")
    notes.append(f"{len(own) - len(kept_fresh)} of {len(own)} tensors from the checkpoint")
    if kept_fresh:
        shown = ", ".join(k for k in kept_fresh if not k.endswith("num_batches_tracked"))
        notes.append(f"{len(kept_fresh)} kept as initialised from the seed" + (f" ({shown[:300]})" if shown else ""))
    notes += adapted
    return out, notes
