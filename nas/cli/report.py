"""``nas report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from nas.cli.base import app
from nas.cli.console import console, shown
from nas.cli.options import Force, Storage, Study

Out = Annotated[Path | None, typer.Option(help="Folder for front.png and front.html (default: runs/<study>/report)")]
Remeasure = Annotated[
    bool,
    typer.Option(
        "--remeasure/--no-remeasure", help="Time the front and the baseline again now, interleaved in one run"
    ),
]
Confirm = Annotated[
    int,
    typer.Option(
        help="Re-train the front and the baseline from this many fresh seeds (paired) before judging them; runs "
        "already stored are reused (default: the space's training.confirm)"
    ),
]
Include = Annotated[str | None, typer.Option(help="Also show and judge these complete trials, e.g. 12,15")]


@app.command("report")
def report_cmd(
    study: Study = None,
    storage: Storage = None,
    out: Out = None,
    remeasure: Remeasure = True,
    confirm: Confirm = 0,
    include: Include = None,
    force: Force = False,
) -> None:
    """The Pareto front: every figure with its uncertainty, each member judged against the baseline
    (better only when its paired interval excludes 0), hypervolume, and a plot (PNG + HTML)."""
    from nas import report

    with console.status("reading the study") as status:
        rep = report.make(
            study,
            storage,
            out,
            remeasure=remeasure,
            confirm=confirm,
            include=include,
            force=force,
            status=lambda text: status.update(shown(text)),
        )
    a = rep.analysis
    console.print(f"[bold]{shown(a.headline())}[/bold]", highlight=False)
    console.print(shown(str(a.noise) if a.noise else "noise: not measured (no baseline re-runs)"))
    console.print(_table(rep))
    for line in report.member_lines(a):  # never truncated, whatever the terminal's width
        console.print(shown(line), soft_wrap=True, highlight=False)
    for line in report.closing_lines(rep):
        console.print(shown(line))
    console.print(f"written: {shown(rep.png)}  {shown(rep.html)}")


def _table(rep: Any) -> Table:
    from nas import report

    cols, rows = report.table_rows(rep.analysis, rep.names, short=True)
    table = Table(
        title=f"Pareto front of {shown(rep.study.study_name)} and the baseline ({len(rows)} architectures)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    for j, col in enumerate(cols):  # no column narrower than its longest word: 80 columns break lines, not words
        width = max(len(w) for c in [col, *(r[j] for r in rows)] for w in c.split())
        table.add_column(shown(col), overflow="fold", min_width=width)
    for r in rows:
        table.add_row(*map(shown, r))
    return table
