"""``nas bench``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from nas.cli.base import bench_app
from nas.cli.console import console, shown
from nas.core.errors import MAX_THREADS, BadOption, check_range
from nas.core.names import check_out
from nas.search import MAX_TRIALS

if TYPE_CHECKING:
    import torch


@bench_app.command("build")
def bench_build_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file"),
    samples: int = typer.Option(20, help="Random architectures to build"),
    batch: int = typer.Option(2, help="Batch of the forward+backward pass"),
    seed: int = typer.Option(0, help="Sampling seed"),
) -> None:
    """Time building random architectures of a space and one forward+backward at its input size."""
    import statistics

    from nas import check
    from nas.tasks.spacefile import load_space

    rows = check.time_builds(load_space(space), samples, batch, seed)
    table = Table(title=f"build + one forward/backward at batch {batch}, {len(rows)} random architectures of {space}")
    for col in ("", "build s", "fwd+bwd s", "total s"):
        table.add_column(col, justify="right")
    for label, fn in (("median", statistics.median), ("max", max)):
        table.add_row(label, *(f"{fn(r[k] for r in rows):.3f}" for k in ("build_s", "step_s", "total_s")))
    console.print(table)
    slowest = max(rows, key=lambda r: r["total_s"])
    console.print(f"slowest: {shown(slowest['arch'])} ({slowest['total_s']:.3f} s)")


@bench_app.command("pruning")
def bench_pruning_cmd(
    curves: Path = typer.Option(Path("spaces/recorded/small-noprune.json"), help="Recorded curves (JSON)"),
    study: str | None = typer.Option(None, help="Read the curves from this study (run with --no-prune) instead"),
    storage: str | None = typer.Option(None, help="Storage of --study (default: sqlite:///runs/<study>/study.db)"),
    export: Path | None = typer.Option(None, help="With --study: write its curves to this JSON file"),
    seeds: int = typer.Option(
        1,
        help="With --study: first re-train every trial so each has this many paired seeds "
        "(stored in the study; an interrupted recording resumes)",
    ),
    eta: int = typer.Option(3, help="Reduction factor of both pruners"),
) -> None:
    """Replay learning curves recorded without pruning through: no pruning, our multi-objective
    successive halving (with and, where the recording has the baseline's seeds, without regard to
    noise), and Optuna's single-objective successive halving on accuracy; print epochs spent against
    the hypervolume of the resulting front, and how many members of the confirmed front (mean
    accuracy over the recorded seeds) each method stopped."""
    from nas import bench
    from nas.study.studies import default_storage

    if eta < 2:
        raise BadOption("--eta", eta, "an integer >= 2")
    if not 1 <= seeds <= 20:
        raise BadOption("--seeds", seeds, "an integer from 1 to 20")
    if study is not None:
        from nas.study import studies as study_mod
        from nas.study.studies import load_from

        st = load_from(study, storage or default_storage(study))
        if seeds > 1:
            with console.status("recording") as status:
                bench.record_seeds(st, seeds, study_mod.runs_root(st, storage), lambda t: status.update(shown(t)))
        rows, meta = bench.recorded_from_study(st)
        if export is not None:
            bench.export_recorded(rows, meta, export)
            console.print(f"written: {shown(export)} ({len(rows)} trials)")
        source = f"study {study}"
    else:
        rows, source = bench.load_recorded(curves), str(curves)
    if len(rows) < 2:
        raise BadOption("--study" if study else "--curves", study or str(curves), "at least 2 complete trials")
    results, ref = bench.bench_pruning(rows, eta)
    table = Table(
        title=f"Pruning replayed on {len(rows)} recorded trials ({source}); hypervolume reference "
        f"(accuracy 0, latency {ref[1]:.4g} ms)"
    )
    for col in (
        "method",
        "completed",
        "epochs",
        "epochs saved",
        "hypervolume",
        "of unpruned",
        "front size",
        "confirmed front stopped",
    ):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        stopped = "-" if r["confirmed_stopped"] is None else f"{r['confirmed_stopped']} of {r['confirmed_front']}"
        table.add_row(
            r["method"],
            str(r["completed"]),
            str(r["epochs"]),
            f"{r['epochs_saved_pct']:.1f}%",
            f"{r['hypervolume']:.5f}",
            f"{r['hypervolume_pct']:.1f}%",
            str(r["front"]),
            stopped,
        )
    console.print(table)
    if all(r["confirmed_stopped"] is None for r in results):
        console.print(
            "the recording has one seed per architecture: no confirmed front to check against "
            "(record with --study ... --seeds 3)"
        )


@bench_app.command("latency")
def bench_latency_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file (its latency target is used)"),
    arch: list[str] | None = typer.Option(
        None,
        "--arch",
        help="Architecture string; repeat for several, "
        "fastest first (the space's baseline is always "
        "measured, first): the expected order",
    ),
    times: int = typer.Option(10, help="Re-measurements of every architecture by each method"),
    load: int = typer.Option(0, help="Also measure with this many busy processes (one-thread training loops) beside"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for latency.json"),
) -> None:
    """How far latency measurements agree: today's absolute method (each architecture timed alone,
    quiet blocks) beside the paired ratio the search uses (every architecture timed interleaved with
    the plain backbone), over repeated re-measurements, idle and with --load busy processes."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    import json

    from nas import bench
    from nas.core.architecture import Architecture
    from nas.tasks.spacefile import load_space

    if times < 2:
        raise BadOption("--times", times, "an integer >= 2")
    if not 0 <= load <= 64:
        raise BadOption("--load", load, "an integer from 0 to 64 (busy processes)")
    s = load_space(space)
    archs = [s.baseline()] + [Architecture.parse(a) for a in arch or [] if Architecture.parse(a) != s.baseline()]
    with console.status("timing") as status:
        result = bench.bench_latency(s, archs, times, load, progress=lambda t: status.update(shown(t)))
    console.print(
        f"target {result['target']}; reference (plain backbone) quiet latency {result['reference_ms']:.3f} ms; "
        f"{times} re-measurements per method and phase; spread = IQR / median over them"
    )
    for p in result["phases"]:
        table = Table(
            title=f"{p['phase']}: order right in {p['order_right_absolute']}/{times} (absolute) and "
            f"{p['order_right_ratio']}/{times} (paired ratio) re-measurements"
        )
        for col in ("architecture", "absolute ms", "spread", "ratio", "spread", "paired ms"):
            table.add_column(col, overflow="fold")
        for r in p["rows"]:
            table.add_row(
                shown(r["architecture"]),
                f"{r['absolute_ms']:.3f}",
                f"{r['absolute_iqr_pct']:.1f}%",
                f"{r['ratio']:.4f}",
                f"{r['ratio_iqr_pct']:.2f}%",
                f"{r['paired_ms']:.3f}",
            )
        console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps({**result, **bench.environment(torch_device())}, indent=1))
    console.print(f"written: {shown(out / 'latency.json')}")


@bench_app.command("workers")
def bench_workers_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file"),
    trials: int = typer.Option(12, help="Finished trials per run"),
    workers: str = typer.Option("1,2", help="Worker counts to compare, comma-separated; the first is the reference"),
    threads: int | None = typer.Option(None, help="Threads per worker (default: CPU cores / workers)"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for the studies and workers.json / workers.csv"),
) -> None:
    """Search throughput with 1, 2, ... worker processes: the same space and trial count in a fresh study
    each (random sampler, no pruning), the real command, wall time from start to finish."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    from nas import bench
    from nas.tasks.spacefile import load_space

    check_range("--trials", trials, 1, MAX_TRIALS)
    counts = [c.strip() for c in workers.split(",") if c.strip()]
    if not counts or not all(c.isdigit() and int(c) >= 1 for c in counts):
        raise BadOption("--workers", workers, "positive integers separated by commas, e.g. 1,2,4")
    load_space(space)  # a bad space is reported here, not from inside a worker
    table = Table(title=f"nas search throughput, {trials} trials, {space}")
    for col in ("workers", "threads each", "wall s", "trials/min", "trained/min", "epochs/min", "epochs/min ratio"):
        table.add_column(col)
    rows = bench.bench_workers(
        space,
        trials,
        [int(c) for c in counts],
        threads,
        out,
        on_row=lambda r: console.print(f"{r['workers']} worker(s): {r['wall_s']} s"),
    )
    for r in rows:
        table.add_row(
            str(r["workers"]),
            str(r["threads_per_worker"]),
            f"{r['wall_s']:.1f}",
            f"{r['trials_per_min']:.2f}",
            f"{r['trained_per_min']:.2f}",
            f"{r['epochs_per_min']:.2f}",
            f"{r['epochs_per_min_ratio']:.2f}",
        )
    console.print(table)
    json_path, csv_path = bench.write_results(
        rows, {"space": str(space), "trials": trials, **bench.environment(torch_device())}, out, "workers"
    )
    console.print(f"written: {shown(json_path)}  {shown(csv_path)}")


def torch_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@bench_app.command("modules")
def bench_modules_cmd(
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    batch: int = typer.Option(8, help="Batch size B"),
    channels: int = typer.Option(256, help="Channels C"),
    size: int = typer.Option(28, help="Spatial size H = W"),
    repeats: int = typer.Option(20, help="Timed runs per measurement (round-robin with timm's version)"),
    warmup: int = typer.Option(3, help="Untimed runs before timing"),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: torch's choice)"),
    only: str | None = typer.Option(None, help="Comma-separated mechanism names, e.g. se,eca,cbam"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for modules.json and modules.csv"),
) -> None:
    """Time forward and forward+backward of every mechanism; beside it timm's version where timm ships
    one (SE, ECA, CBAM, Coordinate Attention, Selective Kernel) and the ratio ours/timm."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    import torch

    import attention
    from nas import bench
    from nas.measure.cost import resolve_device

    bench.check_module_input(batch, channels, size, repeats)
    if warmup < 0:
        raise BadOption("--warmup", warmup, "an integer >= 0")
    if threads is not None:
        torch.set_num_threads(check_range("--threads", threads, 1, MAX_THREADS))
    dev = resolve_device(device)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    for n in names or []:
        if n.lower() not in {a.lower() for a in attention.known_names()}:
            raise BadOption("--only", n, f"comma-separated mechanism names: {', '.join(attention.MECHANISMS)}")
    with console.status("timing") as status:
        rows = bench.bench_modules(
            device=dev,
            batch=batch,
            channels=channels,
            size=size,
            repeats=repeats,
            warmup=warmup,
            only=names,
            progress=lambda n: status.update(f"timing {n}"),
        )
    meta = {
        "command": "nas bench modules",
        "shape": [batch, channels, size, size],
        "repeats": repeats,
        "warmup": warmup,
        **bench.environment(dev),
    }
    table = Table(
        title=f"Attention modules at ({batch}, {channels}, {size}, {size}) on {dev}, {meta['threads']} "
        f"threads: median ms of {repeats} (± IQR/median); ratio = ours / timm"
    )
    for col in (
        "mechanism",
        "params",
        "GFLOPs",
        "fwd",
        "fwd+bwd",
        "timm fwd",
        "timm fwd+bwd",
        "ratio fwd",
        "ratio f+b",
    ):
        table.add_column(col, justify="left" if col == "mechanism" else "right")
    cell = lambda ms, spread: f"{ms:.2f} ±{spread:.0f}%"  # noqa: E731
    for r in rows:
        if "error" in r:
            table.add_row(r["mechanism"], f"[red]{shown(r['error'])}[/red]", *[""] * 7)
            continue
        timm_cols = ["-"] * 4
        if "timm_fwd_ms" in r:
            timm_cols = [
                cell(r["timm_fwd_ms"], r["timm_fwd_spread"]),
                cell(r["timm_fb_ms"], r["timm_fb_spread"]),
                f"{r['fwd_ratio']:.2f}",
                _ratio(r["fb_ratio"]),
            ]
        table.add_row(
            r["mechanism"],
            f"{r['params']:,}",
            f"{r['flops'] / 1e9:.3f}",
            cell(r["fwd_ms"], r["fwd_spread"]),
            cell(r["fb_ms"], r["fb_spread"]),
            *timm_cols,
        )
    console.print(table)
    json_path, csv_path = bench.write_results(rows, meta, out, "modules")
    console.print(f"written: {shown(json_path)}  {shown(csv_path)}")


def _ratio(value: float) -> str:
    colour = "green" if value <= 1.05 else "red"
    return f"[{colour}]{value:.2f}[/{colour}]"


@bench_app.command("startup")
def bench_startup_cmd(
    times: int = typer.Option(5, help="Rounds; every round runs each command once, interleaved"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for startup.json and startup.csv"),
) -> None:
    """How long commands take from start to exit (--help, a bad option, nas mechanisms) beside importing
    torch and timm, each a fresh process, medians over --times rounds."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    from nas import bench

    if times < 1:
        raise BadOption("--times", times, "a positive integer")
    with console.status("timing") as status:
        rows = bench.bench_startup(times, progress=lambda t: status.update(shown(t)))
    table = Table(title=f"Start-up to exit, median of {times} rounds (± IQR/median); reference: {rows[0]['command']}")
    for col in ("command", "median s", "spread", "minus reference s"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for r in rows:
        cells = (f"{r['median_s']:.2f}", f"{r['spread_pct']:.0f}%", f"{r['minus_reference_s']:+.2f}")
        table.add_row(shown(r["command"]), *cells)
    console.print(table)
    import platform
    import sys

    json_path, csv_path = bench.write_results(
        rows,
        {
            "command": "nas bench startup",
            "times": times,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        out,
        "startup",
    )
    console.print(f"written: {shown(json_path)}  {shown(csv_path)}")
