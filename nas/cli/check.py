"""``nas check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    from nas.measure.cost import latency_device_problem, model_cost
    from nas.spacefile import load_space

    if (space is None) == (arch is None):
        raise BadOption("nas check", "", "give exactly one of --space FILE or --arch STRING")
    if arch is not None:
        for opt, value in (("--input-size", input_size), ("--in-chans", in_chans), ("--num-classes", num_classes)):
            if value < 1:
                raise BadOption(opt, value, "a positive integer")
        a = check.parse_arch(arch)
        cost = model_cost(a, num_classes, (input_size, input_size), in_chans)
        console.print(f"[bold]{shown(a)}[/bold]")
        console.print(
            f"params: {cost.params:,}   FLOPs: {cost.flops / 1e9:.3f} G at {in_chans}x{input_size}x{input_size} "
            f"(torch FlopCounterMode; {num_classes} classes)"
        )
        return
    s = load_space(space)
    # a machine's limit, not the file's: a space for a GPU machine may be checked on a laptop
    problem = latency_device_problem(str(space), s.latency["device"])
    if problem is not None:
        err_console.print(f"[yellow]warning:[/yellow] {shown(problem)}; nas search on this machine refuses this space")
    if s.is_detection:
        _detection_table(s, space)
        return
    table = Table(
        title=f"{shown(space)}: {s.backbone} at {s.input_size[0]}x{s.input_size[1]}, {s.in_chans} input channel(s)"
    )
    for col in ("stage", "module", "blocks", "channels by placement", "output", "built-in", "searched"):
        table.add_column(col)
    for r in check.stage_table(s):
        chans = ", ".join(f"{p} {'/'.join(map(str, c))}" for p, c in r["channels"].items())
        table.add_row(
            str(r["stage"]),
            r["module"],
            str(r["blocks"]),
            chans,
            f"{r['out_channels']} x {r['spatial'][0]}x{r['spatial'][1]}",
            ", ".join(r["builtin"]) or "-",
            shown(f"{r['choices']}: {', '.join(r['mechanisms'])}"),
        )
    console.print(table)
    base = model_cost(s.baseline(), s.num_classes or 10, s.input_size, s.in_chans)
    console.print(
        f"{s.count():,} distinct architectures; baseline {shown(s.baseline())}: {base.params:,} params, "
        f"{base.flops / 1e9:.3f} GFLOPs"
    )
    console.print("[green]ok[/green]")


def _detection_table(s: Any, space: Path) -> None:
    from nas import check
    from nas.measure.cost import space_cost

    table = Table(title=f"{shown(space)}: {s.backbone} ({shown(s.detector.source)}) at imgsz {s.input_size[0]}")
    for col in ("position", "at", "after layer", "module", "channels", "stride", "output", "searched"):
        table.add_column(col)
    for r in check.position_table(s):
        table.add_row(
            str(r["position"]),
            shown(r["at"]),
            str(r["after"]),
            r["module"],
            str(r["channels"]),
            str(r["stride"]),
            f"{r['spatial'][0]}x{r['spatial'][1]}",
            shown(f"{r['choices']}: {', '.join(r['mechanisms'])}"),
        )
    console.print(table)
    base = space_cost(s, s.baseline(), 10)
    console.print(
        f"{s.count():,} distinct architectures; baseline {shown(s.baseline())}: {base.params:,} params, "
        f"{base.flops / 1e9:.3f} GFLOPs (10 classes)"
    )
    console.print("[green]ok[/green]")
