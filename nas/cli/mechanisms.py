"""``nas mechanisms``."""

from __future__ import annotations

import typer
from rich.table import Table

from nas.cli.base import app
from nas.cli.console import console, shown
from nas.core.errors import MAX_CHANNELS, check_range


@app.command("mechanisms")
def mechanisms_cmd(
    channels: int | None = typer.Option(
        None, help="Also show, per integer hyperparameter, the values valid at this channel count."
    ),
) -> None:
    """List the attention mechanisms: hyperparameters with defaults, paper and placement."""
    if channels is not None:
        check_range("--channels", channels, 1, MAX_CHANNELS)
    import attention

    table = Table(title="Attention mechanisms", show_lines=True, expand=True)
    for col, ratio in (("name", 1), ("mechanism", 2), ("hyperparameters (default)", 5), ("paper", 2), ("placement", 3)):
        table.add_column(col, overflow="fold", ratio=ratio)
    for spec in attention.MECHANISMS.values():
        hps = []
        for h in spec.hparams:
            text = f"{h.name} [{h.short}] = {h.default!r}: {h.describe()}"
            if channels is not None and h.kind is int and h.choices is None:
                text += f"\n  valid at {channels}: {_compact(spec.valid_values(h.name, channels))}"
            hps.append(text)
        if channels is not None and spec.problems(channels):
            hps.append(f"defaults invalid at {channels} channels: {spec.problems(channels)[0]}")
        paper = f"arXiv:{spec.arxiv}" if spec.arxiv else spec.reference.split(";")[0]
        table.add_row(
            spec.name, spec.title, shown("\n".join(hps)) or "-", paper, f"{spec.placement}\n{spec.placement_note}"
        )
    console.print(table)


def _compact(values: list) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else ", ".join(map(str, values[:12])) + ", ..."
