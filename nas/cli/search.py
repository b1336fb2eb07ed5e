"""``nas search``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nas.cli.base import app
from nas.cli.console import console, err_console, shown
from nas.search import SAMPLERS, SearchOptions

Opt = typer.Option
SpaceFile = Annotated[Path, Opt("--space", help="Search-space YAML file")]
Trials = Annotated[int, Opt(help="Finished trials to reach (those of an earlier run count)")]
Timeout = Annotated[float | None, Opt(help="Stop starting trials after this many seconds")]
Study = Annotated[str | None, Opt(help="Study name (default: the space's name)")]
Storage = Annotated[
    str | None,
    Opt(
        help="Optuna storage URL (default: sqlite:///runs/<study>/study.db; several machines: postgresql+psycopg2://user@host/db)"
    ),
]
Seed = Annotated[int, Opt(help="Sampler and training seed")]
Sampler = Annotated[str, Opt(help=" | ".join(SAMPLERS))]
Prune = Annotated[bool, Opt("--prune/--no-prune", help="Multi-objective successive halving")]
Eta = Annotated[int, Opt(help="Pruning: keep the best 1/eta at each rung (epochs 1, eta, eta^2, ...)")]
Workers = Annotated[str, Opt(help="Worker processes on this machine: N, or auto (one per GPU, one on a CPU-only one)")]
Threads = Annotated[
    int | None, Opt(help="CPU threads per worker (default: up to cores / workers, fewer while other work uses cores)")
]
Heartbeat = Annotated[
    int, Opt(help="Seconds between a running trial's heartbeats; a trial silent for 3 is failed and retried once")
]
Artifacts = Annotated[
    str | None,
    Opt(
        help="Where the front's weights go (Optuna artifact store): a folder (default runs/<study>/artifacts), "
        "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX; recorded on the study, so export finds it from anywhere"
    ),
]
WorkerIndex = Annotated[int | None, Opt(hidden=True, help="Set by --workers for its worker processes")]


@app.command("search")
def search_cmd(
    space: SpaceFile,
    trials: Trials = 50,
    timeout: Timeout = None,
    study: Study = None,
    storage: Storage = None,
    seed: Seed = 0,
    sampler: Sampler = "tpe",
    prune: Prune = True,
    eta: Eta = 3,
    workers: Workers = "1",
    threads: Threads = None,
    heartbeat: Heartbeat = 10,
    artifacts: Artifacts = None,
    worker_index: WorkerIndex = None,
) -> None:
    """Search a space: each trial trains an architecture; the front of accuracy against latency is kept."""
    opts = SearchOptions(
        space, trials, timeout, study, storage, seed, sampler, prune, eta, workers, threads, heartbeat, artifacts
    )
    from nas import search
    from nas.cli.display import LineReporter, LiveReporter

    job = search.prepare(opts)
    if worker_index is not None:  # one of the processes of --workers: plain lines for the parent to show
        print(f"done: {search.run_worker(job, worker_index, LineReporter()).stopped}", flush=True)
        return
    url = shown(job.url)
    console.print(f"study [bold]{shown(job.name)}[/bold] in {url}\ninspect it with:  optuna-dashboard {url}")
    if job.plan.workers > 1:
        console.print(job.plan.describe())
    with LiveReporter() as reporter:
        done = search.run(job, reporter)
    _summary(job, done, storage)
    if done.failing:  # every trial failed: a script calling nas search must see it
        err_console.print(f"[bold red]error:[/bold red] the search stopped: {shown(done.stopped)}", highlight=False)
        raise typer.Exit(1)


def _summary(job: Any, done: Any, storage: str | None) -> None:
    """The counts, the front of the search's runs, the verdict so far and where to look next."""
    from nas.cli.display import front_table
    from nas.study import analysis
    from nas.study.stores import STORE_ATTR, dashboard_hint
    from nas.study.studies import stored_study_attrs

    c, st = done.counts, done.study
    copies = (
        f"; {c['copies']} proposal(s) of architectures already evaluated, recorded as copies" if c["copies"] else ""
    )
    console.print(
        f"{done.stopped}: complete {c['complete']}, pruned {c['pruned']}, infeasible {c['infeasible']}, "
        f"failed {c['failed']} in {done.wall_s:.0f} s{copies}"
    )
    console.print(front_table(st, title="Pareto front of the search's runs (one run each)"))
    # the verdict from what the search stored (the baseline's noise seeds, the confirmation runs)
    console.print(f"[bold]{shown(analysis.analyse(st, measure_again=False).headline())}[/bold]", highlight=False)
    again = f"nas report --study {shown(job.name)}" + (f" --storage {shown(job.url)}" if storage else "")
    console.print(f"{again}  (the front and the baseline re-measured, with intervals)", highlight=False)
    location = stored_study_attrs(st).get(STORE_ATTR)
    hint = shown(dashboard_hint(job.url, location)) if location else f"optuna-dashboard {shown(job.url)}"
    console.print(hint, highlight=False)
