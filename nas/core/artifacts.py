"""Where a study's files live and what they hold: the weights of the current front in the study's
artifact store (Optuna's, ``optuna.artifacts``: a folder, ``s3://`` or ``gs://``; its location is a
study attribute, so any directory and any machine that reaches the storage and the store finds them),
and an export folder's ``architecture.yaml`` (``ModelCard``), written by ``nas export`` and ``nas
train`` and read by ``nas train`` and ``nas viz``. Studies made before the store kept their weights
at ``runs/<study>/weights/trial_<n>.safetensors``; those are still read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.core.architecture import Architecture
from nas.core.errors import UserError
from nas.core.names import write_text_atomic

WEIGHTS_DIR = "weights"
WEIGHTS_FILE = "weights.safetensors"  # in an export folder and in nas train's output folder
CARD_FILE = "architecture.yaml"


def weights_path(run_dir: Path, number: int) -> Path:
    """Where studies made before the artifact store kept a trial's weights."""
    return run_dir / WEIGHTS_DIR / f"trial_{number}.safetensors"


class ExportError(UserError):
    pass


def verify_weights(path: Path, expected: Mapping[str, str | None]) -> Path:
    """``path`` if it is a safetensors file whose metadata names what ``expected`` says (the study, its
    uid, the trial and its architecture, as the search wrote them); an ExportError otherwise, before
    anything is copied or loaded. A value expected as None is not checked; a study uid is checked only
    where the file has one (weights kept before studies had uids)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # not safetensors, truncated, unreadable
        raise ExportError(
            f"{path} is not a safetensors weights file ({e.__class__.__name__}: {str(e)[:200]}); "
            "it cannot be the trial's weights"
        ) from None
    wrong = [
        f"{key} {meta.get(key)!r} (this trial: {want!r})"
        for key, want in expected.items()
        if want is not None and (key in meta or key != "study_uid") and meta.get(key) != want
    ]
    if wrong:
        raise ExportError(
            f"{path} holds the weights of another study or trial: {', '.join(wrong)}. Two studies of the same "
            "name under one runs/ folder write to the same place; export from the runs/ folder of this study's "
            "search, or add --no-weights for the definition alone"
        )
    return path


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is: its architecture, classes, input, and the data and training it came
    from (``training.seed`` and ``training.epochs``: those of the trial, so ``nas train`` repeats it)."""

    architecture: Architecture
    num_classes: int = 10
    in_chans: int = 3
    input_size: tuple[int, int] = (224, 224)
    data: Mapping[str, Any] = field(default_factory=dict)
    training: Mapping[str, Any] = field(default_factory=dict)
    timm_name: str | None = None
    task: str = "classify"  # or "detect": model.yaml beside it is an ultralytics detector

    def to_yaml(self) -> str:
        card: dict[str, Any] = {
            "architecture": str(self.architecture),
            "backbone": self.architecture.backbone,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_size": list(self.input_size),
        }
        if self.timm_name is not None:
            card["timm_name"] = self.timm_name
        if self.task != "classify":
            card["task"] = self.task
        card.update({"data": dict(self.data), "training": dict(self.training)})
        return yaml.safe_dump(card, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, file: str = CARD_FILE) -> ModelCard:
        """Parse and check an ``architecture.yaml``; a problem names the file and the key."""
        from nas.core.yamlio import loads

        return cls._checked(loads(text, file)[0], file)

    @classmethod
    def _checked(cls, data: Any, file: str) -> ModelCard:
        if not isinstance(data, dict) or "architecture" not in data:
            raise ExportError(
                f"{file}: expected a mapping with an 'architecture' key, e.g. "
                "architecture: resnet18|se(r=16)|none|none|eca(k=3)"
            )
        arch = Architecture.parse(data["architecture"])
        numbers = {}
        for key, default in (("num_classes", 10), ("in_chans", 3)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ExportError(f"{file}: {key} is {value!r}; expected a positive integer")
            numbers[key] = value
        size = data.get("input_size", [224, 224])
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise ExportError(f"{file}: input_size is {size!r}; expected [height, width]")
        for key in ("data", "training"):
            if not isinstance(data.get(key) or {}, dict):
                raise ExportError(f"{file}: {key} is {data[key]!r}; expected a mapping")
        name = data.get("timm_name")
        task = data.get("task", "classify")
        if task not in ("classify", "detect"):
            raise ExportError(f"{file}: task is {task!r}; expected classify or detect")
        return cls(
            arch,
            numbers["num_classes"],
            numbers["in_chans"],
            (size[0], size[1]),
            dict(data.get("data") or {}),
            dict(data.get("training") or {}),
            name if isinstance(name, str) else None,
            task,
        )

    def write(self, folder: Path) -> Path:
        path = folder / CARD_FILE
        write_text_atomic(path, self.to_yaml())
        return path

    @classmethod
    def read(cls, path: Path) -> ModelCard:
        """The card of an export folder, or the file itself."""
        path = Path(path)
        file = path / CARD_FILE if path.is_dir() else path
        if not file.is_file():
            raise ExportError(
                f"{path}: no {CARD_FILE} here; give an export folder written by nas export or an {CARD_FILE} file"
            )
        from nas.core.yamlio import load

        return cls._checked(load(file)[0], str(file))


def load_weights(model: Any, path: Path) -> Any:
    """``model`` with the safetensors weights at ``path`` loaded; an ExportError naming the file otherwise."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # not safetensors, truncated (safetensors raises its own error types)
        raise ExportError(f"{path} cannot be read as safetensors weights ({e.__class__.__name__}: {e})") from None
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise ExportError(
            f"{path}: tensor {bad!r} holds NaN or infinite values; these are not a trained model's weights "
            "(a training run that diverged, or a damaged file)"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, OSError) as e:  # missing or unexpected keys, other shapes: each is named
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        shown = " ".join(lines[:6]) + (f" ... ({len(lines) - 6} more lines)" if len(lines) > 6 else "")
        raise ExportError(f"{path}: cannot load into {type(model).__name__}: {shown[:1500]}") from None
    return model


def save_weights(model: Any, path: Path, metadata: dict[str, str]) -> Path:
    """``model``'s state dict as safetensors at ``path`` (written to a temporary file and renamed, so a
    reader never sees half a file), with string ``metadata``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def install_weights(src: Path | None, out: Path, reference: Any, exported: Any) -> list[Path]:
    """An export's weights: ``src`` (the trial's checked weights, or None for the definition alone)
    copied into the folder ``out`` and loaded into both the search's model (``reference``) and the one
    built from the exported files, so the two can be compared; without weights the exported model
    takes the reference's. Returns the files written."""
    if src is None:
        exported.load_state_dict(reference.state_dict())
        return []
    import shutil

    load_weights(reference, src)  # checked before anything is copied
    shutil.copyfile(src, out / WEIGHTS_FILE)
    load_weights(exported, out / WEIGHTS_FILE)
    return [out / WEIGHTS_FILE]
