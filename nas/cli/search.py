"""``nas search``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from nas.cli.base import app
from nas.cli.console import console, err_console, shown
from nas.search import SAMPLERS, SearchOptions


@app.command("search")
def search_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file"),
    trials: int = typer.Option(50, help="Finished trials to reach (those of an earlier run count)"),
    timeout: float | None = typer.Option(None, help="Stop starting trials after this many seconds"),
    study: str | None = typer.Option(None, help="Study name (default: the space's name)"),
    storage: str | None = typer.Option(
        None,
        help="Optuna storage URL (default: sqlite:///runs/<study>/study.db; "
        "several machines: postgresql+psycopg2://user@host/db)",
    ),
    seed: int = typer.Option(0, help="Sampler and training seed"),
    sampler: str = typer.Option("tpe", help=" | ".join(SAMPLERS)),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Multi-objective successive halving"),
    eta: int = typer.Option(3, help="Pruning: keep the best 1/eta at each rung (epochs 1, eta, eta^2, ...)"),
    workers: str = typer.Option(
        "1", help="Worker processes on this machine: N, or auto (one per visible GPU, one on a CPU-only machine)"
    ),
    threads: int | None = typer.Option(None, help="CPU threads per worker (default: CPU cores / workers)"),
    heartbeat: int = typer.Option(
        10,
        help="Seconds between a running trial's heartbeats; a trial silent for 3 "
        "is failed and its architecture retried once",
    ),
    artifacts: str | None = typer.Option(
        None,
        help="Where the front's weights go (Optuna artifact store): a folder (default runs/<study>/artifacts), "
        "s3://BUCKET/PREFIX or gs://BUCKET/PREFIX; recorded on the study, so export finds it from anywhere",
    ),
    worker_index: int | None = typer.Option(None, hidden=True, help="Set by --workers for its worker processes"),
) -> None:
    """Search a space: each trial trains an architecture; the front of accuracy against latency is kept."""
    opts = SearchOptions(
        space, trials, timeout, study, storage, seed, sampler, prune, eta, workers, threads, heartbeat, artifacts
    )
    import time

    import optuna
    import torch

    from nas.cli.display import LineReporter, LiveReporter, front_table
    from nas.search import Reporter, Search, SearchResult, create_or_resume, failing, make_sampler
    from nas.study import analysis
    from nas.study.stores import ARTIFACTS_DIR, STORE_ATTR, dashboard_hint, study_store
    from nas.study.studies import count_states, default_storage, storage_of, stored_study_attrs
    from nas.tasks.spacefile import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = load_space(space)
    name = study or s.name
    url = storage or default_storage(name)

    def search(index: int, reporter: Reporter) -> SearchResult:
        return Search(
            s,
            name,
            url,
            trials,
            timeout,
            seed,
            sampler,
            prune,
            eta,
            reporter=reporter,
            worker_index=index,
            heartbeat_s=heartbeat,
            artifacts=artifacts,
        ).run()

    if worker_index is not None:  # one of the processes of --workers: plain lines for the parent to show
        from nas.search import die_with_parent

        die_with_parent()
        if threads:
            torch.set_num_threads(threads)
        result = search(worker_index, LineReporter())
        print(f"done: {result.stopped}", flush=True)
        return

    from nas.search import plan, run_workers

    p = plan(workers, threads, s.training.devices)
    console.print(f"study [bold]{shown(name)}[/bold] in {shown(url)}\ninspect it with:  optuna-dashboard {shown(url)}")
    if p.workers == 1:
        if threads:
            torch.set_num_threads(threads)
        with LiveReporter() as reporter:
            result = search(0, reporter)
        st, c, stopped, wall = result.study, result.counts, result.stopped, result.wall_s
    else:
        from nas.search import StudyLock

        console.print(p.describe())
        start = time.monotonic()
        st = create_or_resume(s, name, url, make_sampler(sampler, seed), heartbeat, seed)
        with StudyLock(url, name, storage_of(st).engine).held():  # recorded once, before any worker starts
            study_store(st, artifacts, Path("runs") / name / ARTIFACTS_DIR)
        args = replace(opts, study=name, storage=url).to_argv()
        with LiveReporter() as reporter:
            reporter.search_start(st, trials)
            stopped = run_workers(
                p,
                args,
                st,
                StudyLock(url, name, storage_of(st).engine),
                heartbeat,
                on_line=reporter.print,
                on_poll=reporter.poll,
            )
        c, wall = count_states(st), time.monotonic() - start
    console.print(
        f"{stopped}: complete {c['complete']}, pruned {c['pruned']}, infeasible {c['infeasible']}, "
        f"failed {c['failed']} in {wall:.0f} s"
        + (
            f"; {c['copies']} proposal(s) of architectures already evaluated, recorded as copies" if c["copies"] else ""
        ),
    )
    console.print(front_table(st, title="Pareto front of the search's runs (one run each)"))
    # the verdict from what the search stored (the baseline's noise seeds, the confirmation runs)
    console.print(f"[bold]{shown(analysis.analyse(st, measure_again=False).headline())}[/bold]", highlight=False)
    console.print(
        f"nas report --study {shown(name)}"
        + (f" --storage {shown(url)}" if storage else "")
        + "  (the front and the baseline re-measured, with intervals)",
        highlight=False,
    )
    location = stored_study_attrs(st).get(STORE_ATTR)
    console.print(
        shown(dashboard_hint(url, location)) if location else f"optuna-dashboard {shown(url)}", highlight=False
    )
    if failing(stopped):  # every trial failed: a script calling nas search must see it
        err_console.print(f"[bold red]error:[/bold red] the search stopped: {shown(stopped)}", highlight=False)
        raise typer.Exit(1)
