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
) -> TrainResult:
    """Train the architecture of ``source`` (an export folder or an architecture.yaml) for ``epochs``,
    with the export's data and training sections unless overridden; ``report`` is told each epoch's
    figure. By default (``epochs`` and ``seed`` None) it trains as the search's trial did."""
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
    request = TrainRequest(source, card, raw_training, data, out, resume, force, report, announce, progress)
    return task_named(card.task).train(request)
