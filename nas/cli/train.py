"""``nas train``."""

from __future__ import annotations

from pathlib import Path

import typer

from nas.cli.base import app
from nas.cli.console import console, shown


@app.command("train")
def train_cmd(
    source: Path = typer.Argument(..., help="An export folder (nas export) or an architecture.yaml"),
    epochs: int | None = typer.Option(
        None,
        help="Epochs to train (default: the trial's: with the default seed this reproduces the trial's curve exactly)",
    ),
    data: str | None = typer.Option(
        None, help="digits, cifar10, cifar100 or a folder of images (default: the data the search used)"
    ),
    batch_size: int | None = typer.Option(None, help="Batch size (default: the search's)"),
    lr: float | None = typer.Option(None, help="Peak learning rate (default: the search's)"),
    out: Path | None = typer.Option(None, help="Output folder (default: <export>/train)"),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from out/checkpoints/last.ckpt if there"),
    seed: int | None = typer.Option(None, help="Seed of weights, data order and training (default: the trial's)"),
    force: bool = typer.Option(False, "--force", help="Write into a --out folder that holds other files"),
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
