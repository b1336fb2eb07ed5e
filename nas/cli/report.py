"""``nas report``."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from nas.cli.base import app
from nas.cli.console import console, shown
from nas.core.errors import BadOption
from nas.core.names import check_out, folder_of


@app.command("report")
def report_cmd(
    study: str | None = typer.Option(None, help="Study name (default: the only study in the storage)"),
    storage: str | None = typer.Option(None, help="Optuna storage URL (default: sqlite:///runs/<study>/study.db)"),
    out: Path | None = typer.Option(None, help="Folder for front.png and front.html (default: runs/<study>/report)"),
    remeasure: bool = typer.Option(
        True, "--remeasure/--no-remeasure", help="Time the front and the baseline again now, interleaved in one run"
    ),
    confirm: int = typer.Option(
        0,
        help="Re-train the front and the baseline from this many fresh seeds (paired) "
        "before judging them; runs already stored are reused (default: the "
        "space's training.confirm)",
    ),
    include: str | None = typer.Option(None, help="Also show and judge these complete trials, e.g. 12,15"),
    force: bool = typer.Option(False, "--force", help="Write into a --out folder that holds other files"),
) -> None:
    """The Pareto front: every figure with its uncertainty, each member judged against the baseline
    (better only when its paired interval excludes 0), hypervolume, and a plot (PNG + HTML)."""
    from nas import report
    from nas.study import studies as study_mod
    from nas.study.record import study_attr

    if confirm < 0 or confirm == 1:
        raise BadOption(
            "--confirm",
            confirm,
            "0 or an integer >= 2 (one seed gives no interval; 3 or more give intervals worth reading)",
        )
    extra = [p.strip() for p in (include or "").split(",") if p.strip()]
    if not all(p.isdigit() for p in extra):
        raise BadOption("--include", include, "trial numbers separated by commas, e.g. 12,15")
    st = study_mod.open_existing(study, storage)
    folder = out or folder_of(Path("runs"), st.study_name) / "report"  # checked before any work
    check_out(folder, force=force, ours=lambda f: {p.name for p in f.iterdir()} <= {"front.png", "front.html"})
    names = st.metric_names or ["accuracy", "latency_ms"]
    with console.status("reading the study") as status:
        say = lambda text: status.update(shown(text))  # noqa: E731
        root = study_mod.runs_root(st, storage)
        fit = report.fitter(st, say, root) if confirm else None
        analysis = report.analyse(
            st, confirm=confirm, measure_again=remeasure, fit=fit, status=say, include=[int(p) for p in extra]
        )
    info = report.summary(st)
    console.print(f"[bold]{shown(analysis.headline())}[/bold]", highlight=False)
    console.print(shown(str(analysis.noise) if analysis.noise else "noise: not measured (no baseline re-runs)"))
    cols, rows = report.table_rows(analysis, names, short=True)
    table = Table(
        title=f"Pareto front of {shown(st.study_name)} and the baseline ({len(rows)} architectures)",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
    )
    for j, col in enumerate(cols):  # no column narrower than its longest word: 80 columns break lines, not words
        table.add_column(
            shown(col), overflow="fold", min_width=max(len(w) for c in [col, *(r[j] for r in rows)] for w in c.split())
        )
    for r in rows:
        table.add_row(*map(shown, r))
    console.print(table)
    for m in analysis.members:  # never truncated, whatever the terminal's width
        say = "baseline" if m.baseline else report.verdict_text(m)
        console.print(
            f"trial {m.number}, {shown(say)}, {report.count(m.params)} params, {m.flops / 1e6:.1f} MFLOPs: "
            f"{shown(m.arch)}",
            soft_wrap=True,
            highlight=False,
        )
    ref_ms = study_attr(st, "latency_reference", dict, {}).get("ms")
    if ref_ms:
        console.print(
            f"latency = ratio to the plain backbone timed interleaved with it x its quiet latency "
            f"{ref_ms:.3f} ms on this target; intervals: 95% of the median ratio"
        )
    console.print(
        f"hypervolume {info['hypervolume']:.5f} against the reference point "
        f"({names[0]} {info['reference'][0]}, {names[1]} {info['reference'][1]:.4g}) "
        f"= (0, 1.1 x the largest {names[1]} of a complete trial)"
    )
    counts = study_mod.count_states(st)
    copies = counts["copies"]
    evaluated = counts["complete"] + counts["pruned"] + counts["infeasible"]
    if info["overhead_pct"] is not None:
        console.print(
            f"{evaluated} architectures evaluated"
            + (f" (and {copies} proposal(s) of evaluated ones, recorded as copies)" if copies else "")
            + f" in {info['wall_s']:.0f} s, {info['epochs']} epochs trained; "
            f"overhead (time outside training and validation batches): {info['overhead_pct']:.1f}%"
        )
    png = report.plot(st, analysis, folder / "front.png")
    page = report.write_html(st, analysis, names, info["hypervolume"], info["reference"], folder / "front.html")
    console.print(f"written: {shown(png)}  {shown(page)}")
