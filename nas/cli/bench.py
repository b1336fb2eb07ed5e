"""``nas bench``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nas.cli.base import bench_app
from nas.cli.console import console, shown
from nas.core.errors import BadOption, check_range
from nas.core.names import check_out
from nas.search import MAX_TRIALS

if TYPE_CHECKING:
    import torch

Opt = typer.Option
SpaceFile = Annotated[Path, Opt("--space", help="Search-space YAML file")]
BenchOut = Annotated[Path, Opt(help="Folder for the results (JSON and CSV)")]
RUNS_BENCH = Path("runs/bench")


def _print(t: Any) -> None:
    """A ``nas.bench.Tabled`` as a rich table (cells escaped, but those the bench styled itself)."""
    table = Table(title=shown(t.title))
    for col in t.columns:
        table.add_column(col, justify="left" if col in t.left else "right", overflow="fold")
    for i, row in enumerate(t.rows):
        table.add_row(*(t.styled.get((i, j), shown(c)) for j, c in enumerate(row)))
    console.print(table)


def _written(*paths: Path) -> None:
    console.print(f"written: {'  '.join(shown(p) for p in paths)}")


def torch_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@bench_app.command("build")
def bench_build_cmd(
    space: SpaceFile,
    samples: Annotated[int, Opt(help="Random architectures to build")] = 20,
    batch: Annotated[int, Opt(help="Batch of the forward+backward pass")] = 2,
    seed: Annotated[int, Opt(help="Sampling seed")] = 0,
) -> None:
    """Time building random architectures of a space and one forward+backward at its input size."""
    import statistics

    from nas import check
    from nas.bench import Tabled
    from nas.tasks.spacefile import load_space

    rows = check.time_builds(load_space(space), samples, batch, seed)
    cells = [
        [label, *(f"{fn(r[k] for r in rows):.3f}" for k in ("build_s", "step_s", "total_s"))]
        for label, fn in (("median", statistics.median), ("max", max))
    ]
    title = f"build + one forward/backward at batch {batch}, {len(rows)} random architectures of {space}"
    _print(Tabled(title, ["", "build s", "fwd+bwd s", "total s"], cells))
    slowest = max(rows, key=lambda r: r["total_s"])
    console.print(f"slowest: {shown(slowest['arch'])} ({slowest['total_s']:.3f} s)")


@bench_app.command("pruning")
def bench_pruning_cmd(
    curves: Annotated[Path, Opt(help="Recorded curves (JSON)")] = Path("spaces/recorded/small-noprune.json"),
    study: Annotated[str | None, Opt(help="Read the curves from this study (run with --no-prune) instead")] = None,
    storage: Annotated[str | None, Opt(help="Storage of --study (default: sqlite:///runs/<study>/study.db)")] = None,
    export: Annotated[Path | None, Opt(help="With --study: write its curves to this JSON file")] = None,
    seeds: Annotated[
        int,
        Opt(help="With --study: first re-train every trial so each has this many paired seeds (stored in the study)"),
    ] = 1,
    eta: Annotated[int, Opt(help="Reduction factor of both pruners")] = 3,
) -> None:
    """Replay learning curves recorded without pruning through: no pruning, our multi-objective
    successive halving (with and, where the recording has the baseline's seeds, without regard to
    noise), and Optuna's single-objective successive halving on accuracy; print epochs spent against
    the hypervolume of the resulting front, and how many members of the confirmed front (mean
    accuracy over the recorded seeds) each method stopped."""
    from nas import bench

    with console.status("reading") as status:
        rows, source, said = bench.pruning_rows(
            curves, study, storage, export, seeds, eta, lambda t: status.update(shown(t))
        )
    for line in said:
        console.print(shown(line))
    results, ref = bench.bench_pruning(rows, eta)
    _print(bench.pruning_table(results, ref, len(rows), source))
    if all(r["confirmed_stopped"] is None for r in results):
        console.print(
            "the recording has one seed per architecture: no confirmed front to check against "
            "(record with --study ... --seeds 3)"
        )


@bench_app.command("decisions")
def bench_decisions_cmd(
    curves: Annotated[Path, Opt(help="Recorded curves (JSON) with paired seeds")] = Path(
        "spaces/recorded/small-noprune.json"
    ),
    replays: Annotated[int, Opt(help="Replays per world")] = 200,
    worlds: Annotated[str, Opt(help="Comma-separated: recording, null, planted")] = "recording,null,planted",
    confirm: Annotated[int, Opt(help="Seeds of the first batch (today's rule: all of them)")] = 3,
    prune: Annotated[bool, Opt("--prune/--no-prune", help="Replay the pruner (eta 3) before the front")] = True,
    equivalence: Annotated[float, Opt(help="Equivalence margin in points")] = 0.5,
    near: Annotated[float, Opt(help="Also race trials within this many paired noise sds of the front (0: off)")] = 0.0,
    out: BenchOut = RUNS_BENCH,
) -> None:
    """How often the search's answer is right: the whole decision pipeline (trial order, noise floor,
    pruning, front, confirmation, labels, the exported best) replayed on the recording and on studies
    simulated with its noise, with planted effects; today's rule (Bonferroni, K seeds) beside the race
    (pooled noise, Dunnett, looks spending alpha by halves). No training."""
    from nas import bench, decisions

    rows = bench.load_recorded(curves)
    kinds = [k.strip() for k in worlds.split(",") if k.strip()]
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    with console.status("replaying") as status:
        results, facts = decisions.bench_decisions(
            rows,
            replays,
            kinds=kinds,
            confirm=confirm,
            eta=3 if prune else 0,
            delta=equivalence / 100,
            near=near,
            status=lambda t: status.update(shown(t)),
        )
    for t in bench.decisions_tables(results, facts, str(curves), prune):
        _print(t)
    meta = {**facts, "curves": str(curves), "prune": prune, "confirm": confirm, "equivalence_pts": equivalence}
    stem = "decisions" + ("" if prune else "-noprune") + (f"-near{near:g}" if near else "")
    _written(*bench.write_results(results, meta, out, stem))


@bench_app.command("variance")
def bench_variance_cmd(
    curves: Annotated[
        list[Path] | None, Opt(help="Recorded curves (JSON) with paired seeds; repeat to compare recordings")
    ] = None,
    study: Annotated[str | None, Opt(help="Read the curves from this study (run with --no-prune) instead")] = None,
    storage: Annotated[str | None, Opt(help="Storage of --study (default: sqlite:///runs/<study>/study.db)")] = None,
    export: Annotated[Path | None, Opt(help="With --study: write its curves to this JSON file")] = None,
    seeds: Annotated[int, Opt(help="With --study: first re-train every trial so each has this many paired seeds")] = 3,
) -> None:
    """Is there anything to find? For recordings of every architecture at the same seeds: the seed sd,
    the sd of the paired difference to the baseline, the architecture effect (two-way F, seeds as blocks,
    and its p) and the spread of the architectures' means; for a recording that holds every combination
    of its searched positions' choices, also each position's main effect (F, p, best and worst choice)."""
    from nas import bench

    tables, effects = [], []
    with console.status("reading") as status:
        for path in curves or ([] if study else [Path("spaces/recorded/small-noprune.json")]):
            rows, source, _ = bench.recording(path, None, None, None, 1)
            tables.append((source, bench.variance_of(rows)))
            effects.append((source, bench.main_effects_of(rows)))
        if study:
            rows, source, said = bench.recording(
                Path("-"), study, storage, export, seeds, lambda t: status.update(shown(t))
            )
            for line in said:
                console.print(shown(line))
            tables.append((source, bench.variance_of(rows)))
            effects.append((source, bench.main_effects_of(rows)))
    _print(bench.variance_table_rows(tables))
    per_position = bench.main_effect_rows(effects)
    if per_position is not None:
        _print(per_position)


@bench_app.command("latency")
def bench_latency_cmd(
    space: Annotated[Path, Opt("--space", help="Search-space YAML file (its latency target is used)")],
    arch: Annotated[
        list[str] | None,
        Opt("--arch", help="Architecture string; repeat for several, fastest first (the baseline is measured first)"),
    ] = None,
    times: Annotated[int, Opt(help="Re-measurements of every architecture by each method")] = 10,
    load: Annotated[int, Opt(help="Also measure with this many busy processes (one-thread loops) beside")] = 0,
    out: BenchOut = RUNS_BENCH,
) -> None:
    """How far latency measurements agree: today's absolute method (each architecture timed alone,
    quiet blocks) beside the paired ratio the search uses (every architecture timed interleaved with
    the plain backbone), over repeated re-measurements, idle and with --load busy processes."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    import json

    from nas import bench

    s, archs = bench.latency_options(space, arch, times, load)
    with console.status("timing") as status:
        result = bench.bench_latency(s, archs, times, load, progress=lambda t: status.update(shown(t)))
    console.print(
        f"target {result['target']}; reference (plain backbone) quiet latency {result['reference_ms']:.3f} ms; "
        f"{times} re-measurements per method and phase; spread = IQR / median over them"
    )
    for t in bench.latency_tables(result, times):
        _print(t)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps({**result, **bench.environment(torch_device())}, indent=1))
    _written(out / "latency.json")


@bench_app.command("workers")
def bench_workers_cmd(
    space: SpaceFile,
    trials: Annotated[int, Opt(help="Finished trials per run")] = 12,
    workers: Annotated[str, Opt(help="Worker counts to compare, comma-separated; the first is the reference")] = "1,2",
    threads: Annotated[int | None, Opt(help="Threads per worker (default: CPU cores / workers)")] = None,
    out: BenchOut = RUNS_BENCH,
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
    say = lambda r: console.print(f"{r['workers']} worker(s): {r['wall_s']} s")  # noqa: E731
    rows = bench.bench_workers(space, trials, [int(c) for c in counts], threads, out, on_row=say)
    _print(bench.workers_table(rows, trials, space))
    meta = {"space": str(space), "trials": trials, **bench.environment(torch_device())}
    _written(*bench.write_results(rows, meta, out, "workers"))


@bench_app.command("contention")
def bench_contention_cmd(
    space: SpaceFile,
    trials: Annotated[int, Opt(help="Finished trials per run")] = 2,
    policies: Annotated[str, Opt(help="Thread policies, comma-separated: auto, all, one, passive")] = "auto,all",
    busy: Annotated[str, Opt(help="Busy processes beside the search, comma-separated; 0 is idle")] = "0,1,2",
    workers: Annotated[int, Opt(help="Worker processes of each search")] = 1,
    repeats: Annotated[int, Opt(help="Runs of every cell, in rounds")] = 2,
    limit: Annotated[int, Opt(help="Seconds before a run is stopped and shown as at least that long")] = 600,
    out: BenchOut = RUNS_BENCH,
) -> None:
    """A search beside other work: wall time of the same search idle and beside 1, 2, ... busy
    single-threaded processes, for each thread policy, with its ratio to the idle run."""
    check_out(out, force=True)
    from nas import bench
    from nas.tasks.spacefile import load_space

    check_range("--trials", trials, 1, MAX_TRIALS)
    names, counts = bench.contention_options(policies, busy, workers, repeats, limit)
    load_space(space)  # a bad space is reported here, not from inside a run
    say = lambda r: console.print(f"{r['policy']}, {r['busy']} busy: {r['wall_s']} s")  # noqa: E731
    rows = bench.bench_contention(space, trials, names, counts, workers, repeats, limit, out, say)
    summary = bench.contention_summary(rows)
    _print(bench.contention_table(summary, trials, space, workers))
    meta = {"space": str(space), "trials": trials, "workers": workers, "summary": summary}
    _written(*bench.write_results(rows, {**meta, **bench.environment(torch_device())}, out, "contention"))


@bench_app.command("modules")
def bench_modules_cmd(
    device: Annotated[str, Opt(help="cpu, cuda or cuda:N")] = "cpu",
    batch: Annotated[int, Opt(help="Batch size B")] = 8,
    channels: Annotated[int, Opt(help="Channels C")] = 256,
    size: Annotated[int, Opt(help="Spatial size H = W")] = 28,
    repeats: Annotated[int, Opt(help="Timed runs per measurement (round-robin with timm's version)")] = 20,
    warmup: Annotated[int, Opt(help="Untimed runs before timing")] = 3,
    threads: Annotated[int | None, Opt(help="torch CPU threads (default: torch's choice)")] = None,
    only: Annotated[str | None, Opt(help="Comma-separated mechanism names, e.g. se,eca,cbam")] = None,
    out: BenchOut = RUNS_BENCH,
) -> None:
    """Time forward and forward+backward of every mechanism; beside it timm's version where timm ships
    one (SE, ECA, CBAM, Coordinate Attention, Selective Kernel) and the ratio ours/timm."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    from nas import bench

    dev, names = bench.modules_options(device, batch, channels, size, repeats, warmup, threads, only)
    with console.status("timing") as status:
        rows = bench.bench_modules(
            device=dev, batch=batch, channels=channels, size=size, repeats=repeats, warmup=warmup, only=names,
            progress=lambda n: status.update(f"timing {n}"),
        )  # fmt: skip
    meta = {
        "command": "nas bench modules",
        "shape": [batch, channels, size, size],
        "repeats": repeats,
        "warmup": warmup,
        **bench.environment(dev),
    }
    _print(bench.modules_table(rows, meta))
    _written(*bench.write_results(rows, meta, out, "modules"))


@bench_app.command("step")
def bench_step_cmd(
    space: SpaceFile,
    rounds: Annotated[int, Opt(help="Rounds; every round times each kind of update, alternating the order")] = 7,
    steps: Annotated[int, Opt(help="Training steps per kind and round (their median is the round's figure)")] = 8,
    out: BenchOut = RUNS_BENCH,
) -> None:
    """Time one training step of the space's plain network (forward, backward, the optimiser's update)
    with the fused update that fits use and with torch's per-tensor loop, interleaved."""
    check_out(out, force=True)
    check_range("--rounds", rounds, 1, 1000)
    check_range("--steps", steps, 1, 1000)
    from nas import bench
    from nas.tasks.spacefile import load_space

    sp = load_space(space)
    if sp.task.name != "classify":
        raise BadOption("--space", str(space), "a classification space (detection fits use ultralytics' own optimiser)")
    with console.status("timing") as status:
        rows = bench.bench_step(sp, rounds, steps, progress=lambda t: status.update(shown(t)))
    meta = {"command": "nas bench step", "space": str(space), "rounds": rounds, "steps": steps}
    _print(bench.step_table(rows, sp, rounds, steps))
    _written(*bench.write_results(rows, {**meta, **bench.environment(torch_device())}, out, "step"))


@bench_app.command("startup")
def bench_startup_cmd(
    times: Annotated[int, Opt(help="Rounds; every round runs each command once, interleaved")] = 5,
    out: BenchOut = RUNS_BENCH,
) -> None:
    """How long commands take from start to exit (--help, a bad option, nas mechanisms) beside importing
    torch and timm, each a fresh process, medians over --times rounds."""
    check_out(out, force=True)  # a folder of bench results: never a file, added to as it is
    from nas import bench

    if times < 1:
        raise BadOption("--times", times, "a positive integer")
    with console.status("timing") as status:
        rows = bench.bench_startup(times, progress=lambda t: status.update(shown(t)))
    _print(bench.startup_table(rows, times))
    _written(*bench.write_results(rows, bench.startup_meta(times), out, "startup"))
