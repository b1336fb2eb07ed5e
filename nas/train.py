"""``nas train``: an exported (or hand-written) architecture trained with a longer schedule than the
search's proxy, by the task its card names (``nas.tasks.*.train``), with checkpoints and resume.

Kept apart from export.py: exporting reads a study, training reads only an architecture file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from nas.core.artifacts import ModelCard
from nas.core.errors import BadOption
from nas.core.task import TrainRequest, TrainResult
from nas.tasks import task_named


def train(
    source: Path,
    *,
    epochs: int | None = None,
    data: str | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    out: Path | None = None,
    resume: bool = True,
    seed: int | None = None,
    force: bool = False,
    report: Callable[[int, int, float], None] = lambda e, n, acc: None,
    announce: Callable[[str], None] = lambda text: None,
    progress: bool = False,
    from_start: bool = False,
) -> TrainResult:
    """Train the architecture of ``source`` (an export folder or an architecture.yaml) for ``epochs``,
    with the export's data and training sections unless overridden; ``report`` is told each epoch's
    figure. By default (``epochs`` and ``seed`` None) it trains as the search's trial did: from scratch, or,
    for a trial that started from a trained network, on from the trial's weights (``from_start``: from the
    trial's network at its first step, so it repeats the trial)."""
    if epochs is not None and epochs < 1:
        raise BadOption("--epochs", epochs, "an integer >= 1")
    card = ModelCard.read(source)
    raw_training = dict(card.training)
    if epochs is not None:
        raw_training["epochs"] = epochs
    if seed is not None:
        raw_training["seed"] = seed
    for key, value, option in (("batch_size", batch_size, "--batch-size"), ("lr", lr, "--lr")):
        if value is not None:
            if not value > 0:
                raise BadOption(option, value, "a positive number")
            raw_training[key] = value
    initial = _initial(source, card, from_start)
    request = TrainRequest(source, card, raw_training, data, out, resume, force, report, announce, progress, initial)
    return task_named(card.task).train(request)


def _initial(source: Path, card: ModelCard, from_start: bool) -> Path | None:
    """The weights a warm-started trial's export trains from: the trial's (weights.safetensors) or, with
    ``from_start``, its network at the first step (start.safetensors, checked against the card's digest);
    None for a trial that trained from scratch."""
    from nas.core.artifacts import START_FILE, WEIGHTS_FILE, sha256_of
    from nas.core.errors import UserError

    if card.start is None:
        if from_start:
            raise BadOption(
                "--from-start",
                "given",
                f"only for an export whose trial started from a trained network; {source}'s trained from scratch",
            )
        return None
    folder = source if source.is_dir() else source.parent
    path = folder / (START_FILE if from_start else WEIGHTS_FILE)
    if not path.is_file():
        raise UserError(
            f"{source}: its trial started from a trained network ({card.start['source']}), and {path.name} is not "
            "in the folder; export the trial with its weights (nas export without --no-weights)"
        )
    want = card.start.get("file_sha256")
    if from_start and want and sha256_of(path) != want:
        raise UserError(f"{path} is not the file its export wrote (its SHA-256 differs from the card's); export again")
    return path
