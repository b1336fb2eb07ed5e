"""``nas train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nas.cli.base import app
from nas.cli.console import console, shown
from nas.cli.options import Force

FromStart = Annotated[
    bool,
    typer.Option(
        "--from-start",
        help="A warm-started trial: from its network at the first step (repeats the trial), not on from its weights",
    ),
]
Epochs = Annotated[
    int | None,
    typer.Option(help="Epochs to train (default: the trial's: with the default seed this repeats the trial's curve)"),
]
Data = Annotated[
    str | None, typer.Option(help="digits, cifar10, cifar100 or a folder of images (default: the data the search used)")
]
Resume = Annotated[bool, typer.Option("--resume/--restart", help="Continue from out/checkpoints/last.ckpt if there")]
Seed = Annotated[int | None, typer.Option(help="Seed of weights, data order and training (default: the trial's)")]


@app.command("train")
def train_cmd(
    source: Annotated[Path, typer.Argument(help="An export folder (nas export) or an architecture.yaml")],
    epochs: Epochs = None,
    data: Data = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default: the search's)")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: the search's)")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <export>/train)")] = None,
    resume: Resume = True,
    seed: Seed = None,
    force: Force = False,
    from_start: FromStart = False,
) -> None:
    """Train an architecture with a longer schedule than the search's proxy; checkpoints, resume, and
    weights that the export's model.py loads."""
    from nas import train

    per_epoch = metric_of(source)
    result = train.train(
        source,
        epochs=epochs,
        data=data,
        batch_size=batch_size,
        lr=lr,
        out=out,
        resume=resume,
        seed=seed,
        force=force,
        from_start=from_start,
        report=lambda e, n, value: console.print(f"epoch {e}/{n}: {per_epoch} {value:.4f}"),
        announce=lambda text: console.print(shown(text), highlight=False),
        progress=console.is_terminal,
    )
    if result.curve:
        console.print(f"final {per_epoch} {result.curve[-1]:.4f} (best {max(result.curve):.4f})")
    console.print(shown(f"written: {result.weights}; {result.loads_with}"))


def metric_of(source: Path) -> str:
    """What ``nas train`` reports per epoch for the export at ``source``."""
    from nas.core.artifacts import ModelCard
    from nas.tasks import task_named

    try:
        return task_named(ModelCard.read(source).task).per_epoch
    except Exception:
        return "val accuracy"
