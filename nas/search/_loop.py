"""The search loop: one worker of an Optuna multi-objective study whose trials are architectures of a
space, trained with Lightning, pruned by multi-objective successive halving, with measured latency.

``decide`` is the scheduling rule (stop, wait, or start a trial) as a pure function of the study's
progress; ``Search.next`` reads that progress under the study's lock and asks Optuna for the trial;
``nas.search._trial.Trials`` runs it.
"""

from __future__ import annotations

import datetime
import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.core import signals as signals
from nas.core.architecture import Architecture, ArchitectureError
from nas.core.errors import trial_failure
from nas.core.names import folder_of
from nas.core.space import SearchSpace
from nas.measure.cost import latency_device_problem, long_lived_left_out, release_memory
from nas.measure.cpus import ThreadPolicy
from nas.search import _reruns as rr
from nas.search._locks import LatencyGate, StudyLock
from nas.search._options import HEARTBEAT_S, check_numbers
from nas.search._pruning import MOASHA
from nas.search._samplers import make_sampler
from nas.search._study import WORKER, create_or_resume, fail_dead, fail_stale, finished, record_end
from nas.search._trial import Reporter, Trials, record_copy, twin_of
from nas.search._warmup import starting_weights
from nas.study import confirmation as cf
from nas.study import record as r
from nas.study.analysis import slow_line, slow_trials
from nas.study.record import TrialInfo, counts_as_evaluation, holds_architecture
from nas.study.storage import Heartbeat
from nas.study.stores import ARTIFACTS_DIR, folder_elsewhere, leftovers, open_store, study_store
from nas.study.studies import count_states, storage_of, stored_trial, trial_id

log = logging.getLogger(__name__)
MAX_FAILURES = 10  # a run stops once this many trials (or --trials, if more) have failed
POLL_S = 1.0  # how often a worker waiting for other workers' trials looks again
MAX_COPIES = 20  # proposals of evaluated architectures in a row before one not yet tried is drawn at random
RANDOM_DRAWS = 200  # random draws for an unseen architecture before the space is walked in order

__all__ = ["Progress", "Reporter", "Search", "SearchResult", "Start", "Stop", "Wait", "decide"]


# -- the scheduling rule --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stop:
    """The worker stops: ``reason`` is what the run ends with ("trials", "timeout", "space exhausted",
    or why too many trials failed)."""

    reason: str


@dataclass(frozen=True)
class Wait:
    """The trials still needed are running elsewhere: look again after their outcome."""


@dataclass(frozen=True)
class Start:
    """Start a trial (``Search.next`` fills in the trial and its architecture)."""

    trial: Any = None
    arch: Architecture | None = None


@dataclass(frozen=True)
class Progress:
    """What the scheduling rule reads from the study."""

    target: int  # --trials: architectures to evaluate (finished trials that are not copies)
    done: int  # complete or pruned trials, copies not counted
    running: int
    distinct_done: int  # distinct architectures among the done trials
    distinct_started: int  # distinct architectures among the done and the running trials
    space_size: int  # distinct architectures of the space
    failed: int = 0  # trials failed since this run started (interrupted ones not counted)
    last_failure: str | None = None
    elapsed_s: float = 0.0
    timeout_s: float | None = None


EXHAUSTED = "space exhausted"
FAILING = "trials failed since this run started"  # in the stop reason of a search that failed every trial


def failing(stopped: str) -> bool:
    """Whether a search stopped because its trials kept failing (the command then exits 1)."""
    return FAILING in stopped


def decide(p: Progress) -> Stop | Wait | Start:
    """Stop when the target is reached, the time is up, trials keep failing or every architecture is
    done; wait while the trials still needed (or the last architectures) run elsewhere; else start one.
    With several workers, done + running never exceeds the target, so N workers end with exactly
    ``target`` architectures evaluated."""
    if p.done >= p.target:
        return Stop("trials")
    if p.timeout_s is not None and p.elapsed_s > p.timeout_s:
        return Stop("timeout")
    if p.failed >= max(MAX_FAILURES, p.target):  # something fails every trial: stop, don't spin
        return Stop(f"{p.failed} {FAILING} (last: {p.last_failure})")
    if p.distinct_done >= p.space_size:
        return Stop(f"{EXHAUSTED}: all {p.space_size} architectures evaluated, fewer than the {p.target} asked")
    if p.done + p.running >= p.target or p.distinct_started >= p.space_size:
        return Wait()
    return Start()


def started(trials: list[optuna.trial.FrozenTrial]) -> set[str]:
    """The architectures evaluated or being evaluated (copies and failed trials aside)."""
    return {TrialInfo.of(t).arch for t in trials if holds_architecture(t)}


class _RandomChoice:
    """Stands in for an Optuna trial in ``SearchSpace.sample``: every choice uniform at random."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.rng.choice(choices)


# -- the loop -------------------------------------------------------------------------------------


@dataclass
class SearchResult:
    study: optuna.Study
    counts: dict[str, int]
    wall_s: float
    stopped: str


@dataclass
class Search:
    """One worker of a search. Several of them (processes, machines) may share the study: a worker
    asks for a trial only while holding the study's lock and only while the finished and running
    trials are fewer than ``trials`` (``decide``)."""

    space: SearchSpace
    study_name: str
    storage: str
    trials: int
    timeout: float | None = None
    seed: int = 0
    sampler: str = "tpe"
    prune: bool = True
    eta: int = 3
    root: Path = Path("runs")
    reporter: Reporter = field(default_factory=Reporter)
    max_epochs: int | None = None
    worker_index: int = 0  # sampler seed = seed + worker_index: workers must not propose in lockstep
    heartbeat_s: int = HEARTBEAT_S
    artifacts: str | None = None  # --artifacts: the store for a new study (default runs/<study>/artifacts)
    threads: ThreadPolicy | None = None  # torch's threads, set before every trial and re-run (None: left)

    def __post_init__(self) -> None:
        check_numbers(
            trials=self.trials, timeout=self.timeout, sampler=self.sampler, eta=self.eta, heartbeat=self.heartbeat_s
        )
        self.epochs = self.max_epochs or self.space.training.epochs
        self.run_dir = folder_of(self.root, self.study_name, "--study")
        self.gate = LatencyGate(self.run_dir)
        self._started_at = datetime.datetime.now()
        self._start = time.monotonic()

    def run(self) -> SearchResult:
        problem = latency_device_problem(self.space.path, self.space.latency.device)
        if problem is not None:  # before the study is made: nothing to clean up
            raise problem
        self._start = time.monotonic()
        self._started_at = datetime.datetime.now()
        study = create_or_resume(
            self.space,
            self.study_name,
            self.storage,
            make_sampler(self.sampler, self.seed + self.worker_index),
            self.heartbeat_s,
            self.seed,
        )
        lock = StudyLock(self.storage, self.study_name, storage_of(study).engine)
        with lock.held():  # several commands may start on one new study: one store is recorded
            self.store_location = study_store(study, self.artifacts, self.run_dir / ARTIFACTS_DIR)
        elsewhere = folder_elsewhere(study, self.store_location)
        if elsewhere:
            log.warning(elsewhere)
        store = open_store(self.store_location)  # written to and recorded by study_store
        self._clean_leftovers()
        train_seed = cf.study_seed(study)  # every trial of the study trains from the study's seed
        if train_seed != self.seed:
            log.warning(
                "study %s trains every trial from its seed %d (--seed %d seeds the sampler only)",
                self.study_name,
                train_seed,
                self.seed,
            )
        data = self.space.task.data(self.space, self.root, train_seed)
        num_classes = self.space.num_classes or data.num_classes
        if "num_classes" not in study.user_attrs:
            study.set_user_attr("num_classes", num_classes)
        if "epochs" not in study.user_attrs:
            study.set_user_attr("epochs", self.epochs)  # what every trial and re-run trains
        if "val_size" not in study.user_attrs and data.val_size:
            study.set_user_attr("val_size", data.val_size)
        self.study, self.lock = study, lock
        self._take_threads()  # the first look at the machine, before the warm-up and the first trial
        start = starting_weights(
            self.space,
            study,
            data,
            num_classes,
            train_seed,
            store,
            self.store_location,
            lock,
            self.run_dir,
            self.gate,
            self.reporter.status,
        )
        self.work = Trials(
            self.space,
            study,
            self.storage,
            self.study_name,
            self.run_dir,
            data,
            num_classes,
            train_seed,
            self.epochs,
            MOASHA(eta=self.eta) if self.prune else None,
            self.gate,
            lock,
            self.reporter,
            store,
            self.store_location,
            start,
        )
        self.reporter.search_start(study, self.trials)
        with long_lived_left_out():
            stopped = self._trials()
        return SearchResult(study, count_states(study), time.monotonic() - self._start, stopped)

    def _clean_leftovers(self) -> None:
        """What an upload killed on this machine left (a partial file in a folder store, a scratch folder
        under runs/<study>): removed, each named in the log."""
        import shutil

        folders = [self.run_dir] + ([Path(self.store_location)] if "://" not in self.store_location else [])
        for p in leftovers(folders):
            log.warning("removing %s, left by an upload that was killed", p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def _trials(self) -> str:
        """Trials until the search stops, then the noise floor and the confirmation; the stop reason."""
        while True:
            signals.raise_if_received()  # a signal whose exception was lost while the last trial ended
            signals.defer()  # from asking for a trial until it is inside the try below that records it
            try:
                with self.lock.held():
                    nxt = self.next()
            except BaseException:
                signals.resume(raise_pending=False)
                raise
            if isinstance(nxt, Stop):
                signals.resume()
                stopped = nxt.reason
                break
            if isinstance(nxt, Wait):
                signals.resume()
                time.sleep(POLL_S)  # the trials still needed are running elsewhere: wait for their outcome
                continue
            self._run(nxt.trial, nxt.arch)
        if stopped == "trials" or stopped.startswith(EXHAUSTED):
            self._noise_floor()
            self._confirm()
        return stopped

    def next(self) -> Stop | Wait | Start:
        """Called with the study's lock held: fail the trials whose worker died, queue the baseline
        first, then ``decide``. A Start carries the new trial, its architecture sampled and recorded
        before the lock is released so no other worker starts the same one."""
        study = self.study
        fail_stale(study, self.heartbeat_s)
        trials = study.get_trials(deepcopy=False)
        for t in trials:  # under the lock, a running trial without a worker lost it before starting
            if t.state == TrialState.RUNNING and TrialInfo.of(t).worker is None:
                fail_dead(study, t, "its worker stopped before the trial started")
        if not trials:
            try:
                params = self.space.params_of(self.space.baseline())
            except ArchitectureError:
                log.warning("the space has a stage without 'none': no baseline trial, fronts read without one")
            else:
                study.enqueue_trial(params, user_attrs={r.BASELINE: True})
        trials = study.get_trials(deepcopy=False)
        step = decide(self.progress(trials))
        if not isinstance(step, Start):
            return step
        for _ in range(MAX_COPIES):
            trial, arch = self._ask()
            twin = twin_of(study.get_trials(deepcopy=False), str(arch), trial.number)
            if twin is None:
                return Start(trial, arch)
            record_copy(study, trial, twin)  # recorded for the sampler to learn from; not counted
            self.reporter.trial_end(stored_trial(study, trial))
        # the sampler keeps proposing what was evaluated: an architecture not yet started, at random
        unseen = self._unseen(study.get_trials(deepcopy=False))
        log.info("the sampler proposed %d evaluated architectures in a row; trying %s", MAX_COPIES, unseen)
        study.enqueue_trial(self.space.params_of(unseen), user_attrs={r.DRAWN: "at random: the sampler kept repeating"})
        trial, arch = self._ask()
        return Start(trial, arch)

    def _ask(self) -> tuple[optuna.Trial, Architecture]:
        """A new trial and its architecture, recorded on it (a sampling error fails the trial)."""
        trial = self.study.ask()
        try:
            arch = self.space.sample(trial)
            trial.set_user_attr(r.ARCH, str(arch))
            trial.set_user_attr(r.WORKER, WORKER)
        except Exception as e:
            record_end(self.study, trial, f"failed: {e.__class__.__name__}: {e}"[:1000])
            raise
        return trial, arch

    def _unseen(self, trials: list[optuna.trial.FrozenTrial]) -> Architecture:
        """An architecture no trial has evaluated or is evaluating (``decide`` started a trial, so one
        exists): drawn at random per stage, else the first in the space's order."""
        seen = started(trials)
        rng = random.Random(f"{self.seed}:{self.worker_index}:{len(trials)}")
        draws = (self.space.sample(_RandomChoice(rng)) for _ in range(RANDOM_DRAWS))
        for arch in itertools.chain(draws, self.space.architectures()):
            if str(arch) not in seen:
                return arch
        raise AssertionError("decide() started a trial in a space whose architectures were all started")

    def progress(self, trials: list[optuna.trial.FrozenTrial]) -> Progress:
        """The study's progress as ``decide`` reads it."""
        done = [TrialInfo.of(t) for t in trials if counts_as_evaluation(t)]
        running = [TrialInfo.of(t) for t in trials if t.state == TrialState.RUNNING]
        failed_here = [
            t
            for t in trials
            if t.state == TrialState.FAIL and t.datetime_start is not None and t.datetime_start >= self._started_at
        ]
        failed = [i for i in map(TrialInfo.of, failed_here) if not i.stop_reason.startswith("interrupted")]
        distinct = {t.arch for t in done}  # the architectures evaluated; with the running ones: started()
        return Progress(
            target=self.trials,
            done=len(done),
            running=len(running),
            distinct_done=len(distinct),
            distinct_started=len(started(trials)),
            space_size=self.space.count(),
            failed=len(failed),
            last_failure=failed[-1].stop_reason if failed else None,
            elapsed_s=time.monotonic() - self._start,
            timeout_s=self.timeout,
        )

    def _run(self, trial: optuna.Trial, arch: Architecture) -> None:
        """Run one trial with its heartbeat; whatever stops it, it is recorded (an interruption
        re-raised, a failure of its own recorded and the search goes on, anything else raised)."""
        study = self.study
        heartbeat = Heartbeat(storage_of(study), trial_id(trial))
        try:
            signals.resume()  # a signal that came meanwhile is raised here, and the trial recorded
            heartbeat.start()
            self._take_threads(trial)
            self.work.run(trial, arch)
        except (KeyboardInterrupt, SystemExit, signals.Interrupted) as e:  # Lightning: Ctrl-C -> SystemExit
            heartbeat.stop()
            record_end(
                study,
                trial,
                f"interrupted ({signals.cause()})"
                if not isinstance(e, SystemExit) or e.code in (1, 130)
                else f"interrupted (exit {e.code})",
            )
            raise e if isinstance(e, signals.Interrupted) else KeyboardInterrupt() from None
        except Exception as e:
            heartbeat.stop()
            if finished(study, trial):  # failed meanwhile by another process (no heartbeat seen)
                log.warning(
                    "trial %d was failed by another process (%s); its retry goes on",
                    trial.number,
                    TrialInfo.of(stored_trial(study, trial)).stop_reason,
                )
            else:
                reason = trial_failure(e)  # this trial's own failure (out of memory, NaN): go on
                record_end(
                    study, trial, f"failed: {reason}" if reason else f"failed: {e.__class__.__name__}: {e}"[:1000]
                )
                if reason is None:  # anything else stops the worker, with the trial recorded
                    raise
        finally:
            heartbeat.stop()
        release_memory()  # the trial's Trainer, model and optimiser sit in reference cycles
        trials = study.get_trials(deepcopy=False)
        self.reporter.trial_end(trials[trial.number])
        self._say_if_slow(trials, trial.number)
        if trial.user_attrs.get(r.BASELINE) or self.worker_index == 0:
            self._noise_floor()

    def _take_threads(self, trial: optuna.Trial | None = None) -> None:
        """torch's threads for what trains next (``nas.measure.cpus``): said when they change, recorded
        on ``trial``."""
        if self.threads is None:
            return
        before = self.threads.current()
        now = self.threads.before_trial()
        if now != before:
            log.warning("training with %d thread(s), was %d: %s", now, before, self.threads.cores.describe())
        if trial is not None:
            trial.set_user_attr(r.THREADS, now)

    def _say_if_slow(self, trials: list[optuna.trial.FrozenTrial], number: int) -> None:
        """A warning when trial ``number`` trained slower than the study's others (``slow_trials``)."""
        finished_ = [TrialInfo.of(t) for t in trials if t.state.is_finished()]
        slow = [s for s in slow_trials(finished_) if s.number == number]
        if slow:
            log.warning("%s", slow_line(slow))

    # -- re-runs: the noise floor and the confirmation of the front ---------------------------------

    def _fit(self) -> rr.Fit:
        return rr.make_fit(
            self.space,
            self.work.data,
            self.work.num_classes,
            self.epochs,
            self.run_dir,
            self.reporter.status,
            self.gate,
            self.work.start,
        )

    def _noise_floor(self) -> None:
        """Train the baseline from the further noise seeds once it is complete (once per study)."""
        jobs = rr.pending_noise_runs(self.study)
        if jobs:
            self._take_threads()
            rr.run_reruns(self.study, jobs, self._fit(), "noise floor", claim=self.lock.held)
            release_memory()

    def _confirm(self) -> None:
        race = cf.race_of(self.study, self.space.training)
        if race is None or self.worker_index != 0:
            return
        archs = [TrialInfo.of(t).arch for t in cf.race_trials(self.study)]
        self._take_threads()
        rr.run_race(self.study, archs, race, self._fit(), claim=self.lock.held)
        release_memory()
