"""``nas search`` as the command line runs it: the space loaded once and the study named (``prepare``),
then one worker in this process or the worker processes of ``--workers`` under this one (``run``), or,
in a process that ``--workers`` started, that worker alone (``run_worker``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna

from nas.search._loop import Search, SearchResult, failing
from nas.search._options import SearchOptions
from nas.search._trial import Reporter
from nas.search._workers import Plan, die_with_parent, plan, run_workers, workers_here


@dataclass(frozen=True)
class Job:
    """A search about to run: its options, its space (parsed once), its study's name and storage, and
    how many processes run it."""

    opts: SearchOptions
    space: Any
    name: str
    url: str
    plan: Plan


@dataclass(frozen=True)
class Searched:
    """How a search ended: the study, its counts, why it stopped, its wall time, and whether every
    trial failed (the command then exits 1)."""

    study: optuna.Study
    counts: dict[str, int]
    stopped: str
    wall_s: float

    @property
    def failing(self) -> bool:
        return failing(self.stopped)


def prepare(opts: SearchOptions) -> Job:
    from nas.study.studies import default_storage
    from nas.tasks.spacefile import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(opts.space)
    name = opts.study or space.name
    url = opts.storage or default_storage(name)
    return Job(opts, space, name, url, plan(opts.workers, opts.threads, space.training.devices))


def _search(job: Job, index: int, reporter: Reporter) -> SearchResult:
    from nas.measure.cpus import ThreadPolicy

    o = job.opts
    return Search(
        job.space,
        job.name,
        job.url,
        o.trials,
        o.timeout,
        o.seed,
        o.sampler,
        o.prune,
        o.eta,
        reporter=reporter,
        worker_index=index,
        heartbeat_s=o.heartbeat,
        artifacts=o.artifacts,
        threads=ThreadPolicy(workers_here(), o.threads),
    ).run()


def run_worker(job: Job, index: int, reporter: Reporter) -> SearchResult:
    """One of the processes of ``--workers`` (it dies with its parent)."""
    die_with_parent()
    return _search(job, index, reporter)


def run(job: Job, reporter: Any) -> Searched:
    """The search in this process, or its worker processes with ``reporter`` showing their lines and the
    study (``reporter``: the command's live display)."""
    if job.plan.workers == 1:
        result = _search(job, 0, reporter)
        return Searched(result.study, result.counts, result.stopped, result.wall_s)
    from nas.search._locks import StudyLock
    from nas.search._samplers import make_sampler
    from nas.search._study import create_or_resume
    from nas.study.stores import ARTIFACTS_DIR, study_store
    from nas.study.studies import count_states, storage_of

    o = job.opts
    start = time.monotonic()
    st = create_or_resume(job.space, job.name, job.url, make_sampler(o.sampler, o.seed), o.heartbeat, o.seed)
    with StudyLock(job.url, job.name, storage_of(st).engine).held():  # recorded once, before any worker starts
        study_store(st, o.artifacts, Path("runs") / job.name / ARTIFACTS_DIR)
    args = replace(o, study=job.name, storage=job.url).to_argv()
    reporter.search_start(st, o.trials)
    lock = StudyLock(job.url, job.name, storage_of(st).engine)
    stopped = run_workers(job.plan, args, st, lock, o.heartbeat, on_line=reporter.print, on_poll=reporter.poll)
    return Searched(st, count_states(st), stopped, time.monotonic() - start)
