"""``nas check``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from nas.cli.base import app
from nas.cli.console import console, err_console, shown
from nas.core.errors import BadOption


@app.command("check")
def check_cmd(
    space: Path | None = typer.Option(None, "--space", help="Validate a search-space YAML file"),
    arch: str | None = typer.Option(
        None, "--arch", help="An architecture string, e.g. 'resnet18|se(r=16)|none|none|eca(k=3)'"
    ),
    input_size: int = typer.Option(224, help="Input size for --arch (H = W)"),
    in_chans: int = typer.Option(3, help="Input channels for --arch"),
    num_classes: int = typer.Option(1000, help="Classes for --arch"),
) -> None:
    """Validate a space (every problem, with file, key path and line) and print its stages and size;
    or print the parameters and FLOPs of an architecture."""
    from nas import check

    if (space is None) == (arch is None):
        raise BadOption("nas check", "", "give exactly one of --space FILE or --arch STRING")
    if arch is not None:
        a, cost = check.arch_cost(arch, input_size, in_chans, num_classes)
        console.print(f"[bold]{shown(a)}[/bold]")
        console.print(
            f"params: {cost.params:,}   FLOPs: {cost.flops / 1e9:.3f} G at {in_chans}x{input_size}x{input_size} "
            f"(torch FlopCounterMode; {num_classes} classes)"
        )
        return
    checked = check.check_space(space)
    if checked.warning:
        err_console.print(f"[yellow]warning:[/yellow] {shown(checked.warning)}")
    s, t, base = checked.space, checked.table, checked.baseline_cost
    table = Table(title=f"{shown(space)}: {shown(t.title)}")
    for col in t.columns:
        table.add_column(col)
    for row in t.rows:
        table.add_row(*map(shown, row))
    console.print(table)
    console.print(
        f"{s.count():,} distinct architectures; baseline {shown(s.baseline())}: {base.params:,} params, "
        f"{base.flops / 1e9:.3f} GFLOPs{t.classes_note}"
    )
    console.print("[green]ok[/green]")
