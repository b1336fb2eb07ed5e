"""Where a study's files live and what they hold: the weights of the current front in the study's
artifact store (Optuna's, ``optuna.artifacts``: a folder, ``s3://`` or ``gs://``; its location is a
study attribute, so any directory and any machine that reaches the storage and the store finds them),
and an export folder's ``architecture.yaml`` (``ModelCard``), written by ``nas export`` and ``nas
train`` and read by ``nas train`` and ``nas viz``. Studies made before the store kept their weights
at ``runs/<study>/weights/trial_<n>.safetensors``; those are still read."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nas.core.architecture import Architecture
from nas.core.errors import UserError
from nas.core.names import write_text_atomic

WEIGHTS_DIR = "weights"
WEIGHTS_FILE = "weights.safetensors"  # in an export folder and in nas train's output folder
CARD_FILE = "architecture.yaml"


START_FILE = "start.safetensors"  # a warm start's weights (in the store, downloaded; in an export folder)
MAX_CURVE = 10_000  # entries of a recorded warm-up curve


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


class StartError(UserError):
    """A study's starting network is missing, damaged or does not belong to it."""


@dataclass(frozen=True)
class StartRecord:
    """What a study started its trials from: ``init`` (baseline or pretrained), the artifact holding the
    weights and their SHA-256, where they came from (``source``), and for a warm-up its epochs, curve
    (the baseline's validation figure per epoch) and seconds."""

    init: str
    artifact: str
    sha256: str
    source: str
    epochs: int = 0
    curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the conversion of given weights did
    file_sha256: str = ""  # in an export's card: the SHA-256 of its start.safetensors (the trial at step 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any, where: str) -> StartRecord:
        """The record as a study or a card stores it; a StartError naming ``where`` when it is not one."""
        ok = (
            isinstance(value, Mapping)
            and value.get("init") in ("baseline", "pretrained")
            and all(isinstance(value.get(k), str) and value.get(k) for k in ("artifact", "sha256", "source"))
            and len(str(value.get("sha256"))) == 64
            and isinstance(value.get("epochs", 0), int)
            and isinstance(value.get("curve", []), list)
            and len(value.get("curve", [])) <= MAX_CURVE
            and all(isinstance(v, (int, float)) for v in value.get("curve", []))
            and isinstance(value.get("seconds", 0.0), (int, float))
            and isinstance(value.get("notes", []), list)
        )
        if not ok:
            raise StartError(f"{where}: the start record is not one this tool wrote: {str(value)[:300]}")
        return cls(
            value["init"],
            value["artifact"],
            value["sha256"],
            value["source"],
            int(value.get("epochs", 0)),
            [float(v) for v in value.get("curve", [])],
            float(value.get("seconds", 0.0)),
            [str(n)[:500] for n in value.get("notes", [])][:20],
            str(value.get("file_sha256", ""))[:64],
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    start: Mapping[str, Any] | None = None  # a warm-started trial's starting network (nas.study.start.StartRecord)

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
        if self.start is not None:
            card["start"] = dict(self.start)
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
        start = data.get("start")
        if start is not None:
            try:
                start = StartRecord.from_value(start, file).to_dict()
            except StartError as e:
                raise ExportError(f"{file}: start: {e}") from None
        return cls(
            arch,
            numbers["num_classes"],
            numbers["in_chans"],
            (size[0], size[1]),
            dict(data.get("data") or {}),
            dict(data.get("training") or {}),
            name if isinstance(name, str) else None,
            task,
            start,
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


def state_mismatch(own: Mapping[str, Any], given: Mapping[str, Any]) -> str | None:
    """How the state dict ``given`` does not fit a model whose state dict is ``own`` (None when it fits
    exactly): the counts of missing, unexpected and reshaped tensors and the first of them, named."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [k for k in own if k in given and tuple(own[k].shape) != tuple(given[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    if shapes:
        first = f"{shapes[0]!r} is {tuple(given[shapes[0]].shape)} there, {tuple(own[shapes[0]].shape)} here"
    elif missing:
        first = f"{missing[0]!r} is missing"
    else:
        first = f"{unexpected[0]!r} has no place here"
    return f"{len(missing)} missing, {len(unexpected)} unexpected, {len(shapes)} of another shape; first: {first}"


def save_weights(model: Any, path: Path, metadata: dict[str, str]) -> Path:
    """``model``'s state dict as safetensors at ``path`` (written to a temporary file and renamed, so a
    reader never sees half a file), with string ``metadata``."""
    return save_state(model.state_dict(), path, metadata)


def save_state(state: Mapping[str, Any], path: Path, metadata: dict[str, str]) -> Path:
    """A state dict as safetensors at ``path`` (see ``save_weights``)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
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
