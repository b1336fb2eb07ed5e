"""The search: an Optuna multi-objective study whose trials are architectures of a space, trained
with Lightning, pruned by multi-objective successive halving, with measured latency.

Every trial carries plain user attributes (readable in optuna-dashboard): ``arch``, ``params``,
``flops``, ``latency_ms``, ``latency_spread_pct``, ``latency_target``, ``val_acc_curve``,
``stop_reason`` (and ``infeasible``, ``duplicate_of``, ``baseline`` where they
apply).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import TrialState

from . import data as data_mod
from . import signals
from . import confirm as cf
from .check import model_cost
from .confirm import NOISE_SEEDS_ATTR, SEED_ATTR
from .cost import LatencyTarget, PairedLatency, PairedMeter, Ratio, release_memory
from .errors import BadOption, UserError
from .locks import GateCallback, LatencyGate, StudyLock
from .model import build, save_weights
from .pruning import CURVE, LATENCY, LATENCY_CI, MOASHA, PRUNED_AT, ParetoPruningCallback, TrialRecord
from .space import Architecture, ArchitectureError, SearchSpace
from .storage import Heartbeat, RetryingStorage, grace_s, open_storage, retry_once
from .train import NonFiniteLoss, fit_curve, fit_detached, make_trainer, seeded_classifier

log = logging.getLogger(__name__)
SAMPLERS = ("tpe", "nsga2", "random", "gp", "bruteforce")
HEARTBEAT_S = 10  # a running trial records a heartbeat this often; silent for 3 of them, it is failed
POLL_S = 1.0
MAX_FAILURES = 10  # a run stops once this many trials (or --trials, if more) have failed  # how often a worker with nothing to start looks again
METRIC_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "params": "params", "flops": "flops"}
DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "flops": "minimize"}


def default_storage(study: str, root: Path = Path("runs")) -> str:
    return f"sqlite:///{root / study / 'study.db'}"


class _AccuracyView:
    """The study as Optuna's TPE should see it. TPE ranks pruned trials by their last intermediate
    value in ``study.direction``, which a multi-objective study refuses to give (RuntimeError), so the
    first pruned trial with a learning curve in the storage would end the search. The intermediate
    values written here are always validation accuracy: higher is better."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return optuna.study.StudyDirection.MAXIMIZE


class CurveAwareTPE(optuna.samplers.TPESampler):
    """Optuna's TPE, with pruned trials ranked by their last validation accuracy (``_AccuracyView``)."""

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return super().sample_relative(_AccuracyView(study), trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return super().sample_independent(_AccuracyView(study), trial, param_name, param_distribution)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return CurveAwareTPE(seed=seed, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "bruteforce":  # every architecture once, in random order: for recordings of small spaces
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise BadOption("--sampler", name, f"one of {', '.join(SAMPLERS)}")


def open_study(space: SearchSpace, study_name: str, storage: str, sampler: optuna.samplers.BaseSampler,
               heartbeat_s: int | None = None, seed: int = 0) -> optuna.Study:
    """Create or resume the study. A study made from a different space is refused. A new study
    records ``seed``: every one of its trials trains from it (common random numbers)."""
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    directions = [DIRECTIONS[o] for o in space.objectives]
    try:
        study = optuna.create_study(study_name=study_name, storage=open_storage(storage, heartbeat_s),
                                    sampler=sampler, directions=directions, load_if_exists=True)
    except ValueError as e:  # directions differ from an existing study of that name
        raise UserError(f"study {study_name!r} in {storage}: {e}") from None
    except Exception as e:  # bad URL, unreachable database
        raise UserError(f"cannot open storage {storage!r}: {e.__class__.__name__}: {e}") from None
    fingerprint = space_fingerprint(space)
    stored = study.user_attrs.get("space_fingerprint")
    if stored is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAMES[o] for o in space.objectives])
        study.set_user_attr("space_fingerprint", fingerprint)
        study.set_user_attr("space_path", space.path)
        study.set_user_attr("space", Path(space.path).read_text() if Path(space.path).exists() else "")
        study.set_user_attr("objectives", list(space.objectives))
        study.set_user_attr(SEED_ATTR, seed)
        study.set_user_attr(NOISE_SEEDS_ATTR, space.training["noise_seeds"])
    elif stored != fingerprint:
        raise UserError(f"study {study_name!r} in {storage} was created from a different search space "
                        f"({study.user_attrs.get('space_path')}); resume it with that space or choose another --study")
    return study


NOT_FINGERPRINTED = ("noise_seeds", "confirm")  # how results are checked, not what the trials are: changeable on resume


def space_fingerprint(space: SearchSpace) -> str:
    parts = [space.backbone, space.input_size, space.in_chans, space.num_classes, sorted(space.data.items()),
             [(s.index, s.replace_builtin, [(o.mechanism, o.hparams, o.placements) for o in s.options]) for s in space.stages],
             sorted((k, v) for k, v in space.training.items() if k not in NOT_FINGERPRINTED), space.objectives, sorted(space.latency.items()), sorted(space.limits.items())]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class Reporter:
    """What the search tells its display. The CLI's rich display overrides these."""

    def search_start(self, study: optuna.Study, target: int) -> None: ...
    def trial_start(self, number: int, arch: Architecture) -> None: ...
    def epoch(self, number: int, epoch: int, epochs: int, acc: float) -> None: ...
    def trial_end(self, trial: optuna.trial.FrozenTrial) -> None: ...
    def status(self, text: str) -> None:
        """What the current trial or re-run is doing now (latency, training, re-runs)."""


REFERENCE_FILE = "latency-reference.json"  # the reference's quiet latency per machine and target


def machine_cache() -> Path:
    """Where this machine's facts are remembered across projects and clones: ``$NAS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/attention-nas``, else ``~/.cache/attention-nas``."""
    if os.environ.get("NAS_CACHE_DIR"):
        return Path(os.environ["NAS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attention-nas"


def reference_latency_ms(study: optuna.Study, target: LatencyTarget, reference: str,
                         measure: Callable[[], float], lock: Any = None) -> float:
    """The reference's (plain backbone's) latency on a quiet machine, fixed for the whole study so that
    every trial's latency = ratio x the same figure. A new study takes the figure this machine
    remembers for the target and reference (``machine_cache() / REFERENCE_FILE``, keyed by host name
    too, for a home folder shared by several machines), so every study and every clone on one machine
    agree; only where none is remembered is it measured and remembered. ``lock`` (the study lock):
    the figure is set only if no other process set it meanwhile, and whichever was set first is
    returned, so all of a study's trials share one figure."""
    import torch

    key = f"{target.key()}|{reference}|torch {torch.__version__}"  # the study's: the same on every machine
    stored = study.user_attrs.get("latency_reference")
    if isinstance(stored, dict) and stored.get("key") == key:
        return float(stored["ms"])
    path, mine = machine_cache() / REFERENCE_FILE, f"{socket.gethostname()}|{key}"
    try:
        remembered = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        remembered = {}
    ms = remembered.get(mine) if isinstance(remembered, dict) else None
    if not isinstance(ms, (int, float)) or ms <= 0:
        ms = float(measure())
        remembered = {**(remembered if isinstance(remembered, dict) else {}), mine: ms}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(remembered, indent=1))
            tmp.replace(path)
        except OSError as e:  # a read-only home: measured again by the next study, nothing lost
            log.warning("could not remember the reference latency in %s: %s", path, e)
    import contextlib

    with lock.held() if lock is not None else contextlib.nullcontext():
        stored = study._storage.get_study_user_attrs(study._study_id).get("latency_reference")
        if isinstance(stored, dict) and stored.get("key") == key:
            return float(stored["ms"])
        study.set_user_attr("latency_reference", {"key": key, "ms": round(float(ms), 5), "architecture": reference})
    return round(float(ms), 5)


@dataclass
class SearchResult:
    study: optuna.Study
    counts: dict[str, int]
    wall_s: float
    stopped: str


WORKER = f"{socket.gethostname()}:{os.getpid()}"  # who runs a trial: user attribute ``worker``


@dataclass
class Search:
    """One worker of a search. Several of them (processes, machines) may share the study: a worker
    asks for a trial only while holding the study's lock and only while the finished and running
    trials are fewer than ``trials``, so N workers end with exactly ``trials`` finished ones."""

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

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise BadOption("--trials", self.trials, "a positive integer")
        if self.timeout is not None and self.timeout <= 0:
            raise BadOption("--timeout", self.timeout, "a positive number of seconds")
        if self.heartbeat_s < 1:
            raise BadOption("--heartbeat", self.heartbeat_s, "a positive whole number of seconds")
        self.target = LatencyTarget.from_space(self.space.latency)
        self.epochs = self.max_epochs or self.space.training["epochs"]
        self.pruner = MOASHA(eta=self.eta) if self.prune else None
        self.run_dir = self.root / self.study_name
        self._latency_cache_path = self.run_dir / "latency.json"
        self._meter: PairedMeter | None = None
        self.gate = LatencyGate(self.run_dir)

    # -- helpers ---------------------------------------------------------------------------------

    def _datamodule(self) -> Any:
        dm = data_mod.datamodule(self.space.data, self.space.input_size, self.space.training["batch_size"],
                                 self.train_seed)
        dm.setup("fit")
        if dm.in_chans != self.space.in_chans:
            raise UserError(f"{self.space.path}: in_chans is {self.space.in_chans} but the {self.space.data['source']} "
                            f"data has {dm.in_chans} channel(s); set in_chans: {dm.in_chans}")
        return dm

    def _paired_meter(self, study: optuna.Study, num_classes: int) -> PairedMeter:
        """The meter of this worker: the space's plain backbone as the reference, timed beside every
        candidate; its quiet latency is the study's (``reference_latency_ms``)."""
        if self._meter is None:
            reference = build(self.space.baseline(), num_classes, self.space.in_chans, init_seed=0)
            meter = PairedMeter(self.target, reference, self.space.in_chans)
            with self.gate.measuring():  # no worker of this machine trains meanwhile
                ms = reference_latency_ms(study, self.target, str(self.space.baseline()),
                                          lambda: meter.reference_ms, self._lock)
            self._meter = PairedMeter(self.target, reference, self.space.in_chans, ms)
        return self._meter

    def _latency(self, study: optuna.Study, arch: Architecture, num_classes: int) -> tuple[PairedLatency, bool]:
        """The architecture's paired latency (ratio to the plain backbone, timed interleaved with it, x
        the study's reference latency) and whether it came from the cache (runs/<study>/latency.json,
        by architecture and target). Measured while no other worker on this machine trains."""
        meter = self._paired_meter(study, num_classes)
        key = f"{arch}@{self.target.key()}"
        with self.gate.measuring():
            cache = json.loads(self._latency_cache_path.read_text()) if self._latency_cache_path.exists() else {}
            hit = isinstance(cache.get(key), dict)
            if not hit:
                self.reporter.status(f"measuring latency against {self.space.baseline().backbone} (interleaved)")
                ratio = meter.ratios([build(arch, num_classes, self.space.in_chans, init_seed=0)])[0]
                cache[key] = {"ratios": [round(r, 6) for r in ratio.samples]}
                self._latency_cache_path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._latency_cache_path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(cache))
                tmp.replace(self._latency_cache_path)
        return PairedLatency(Ratio(tuple(cache[key]["ratios"])), meter.reference_ms), hit

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> SearchResult:
        start = time.monotonic()
        self._started_at = datetime.datetime.now()
        study = open_study(self.space, self.study_name, self.storage,
                           make_sampler(self.sampler, self.seed + self.worker_index), self.heartbeat_s, self.seed)
        self.train_seed = cf.study_seed(study)  # every trial of the study trains from the study's seed
        if self.train_seed != self.seed:
            log.warning("study %s trains every trial from its seed %d (--seed %d seeds the sampler only)",
                        self.study_name, self.train_seed, self.seed)
        storage: RetryingStorage = study._storage
        lock = StudyLock(self.storage, self.study_name, storage.engine)
        dm = self._datamodule()
        num_classes = self.space.num_classes or dm.num_classes
        self.num_classes = num_classes
        if "num_classes" not in study.user_attrs:
            study.set_user_attr("num_classes", num_classes)
        if "epochs" not in study.user_attrs:
            study.set_user_attr("epochs", self.epochs)  # what every trial and re-run trains
        if "val_size" not in study.user_attrs and getattr(dm, "val_set", None) is not None:
            study.set_user_attr("val_size", len(dm.val_set))
        self.reporter.search_start(study, self.trials)
        self._lock = lock
        while True:
            signals.defer()  # from asking for a trial until it is inside the try below that records it
            try:
                with lock.held():
                    nxt = self._next_trial(study, start)
            except BaseException:
                signals.resume(raise_pending=False)
                raise
            if not isinstance(nxt, tuple):
                signals.resume()
                if isinstance(nxt, str):
                    stopped = nxt
                    break
                time.sleep(POLL_S)  # the trials still needed are running elsewhere: wait for their outcome
                continue
            trial, arch = nxt
            heartbeat = Heartbeat(storage, trial._trial_id)
            try:
                signals.resume()  # a signal that came meanwhile is raised here, and the trial recorded
                heartbeat.start()
                self._run_trial(study, trial, arch, dm, num_classes)
            except (KeyboardInterrupt, SystemExit, signals.Interrupted) as e:  # Lightning: Ctrl-C -> SystemExit
                heartbeat.stop()
                _record_end(study, trial, f"interrupted ({signals.cause()})" if not isinstance(e, SystemExit)
                            or e.code in (1, 130) else f"interrupted (exit {e.code})")
                raise e if isinstance(e, signals.Interrupted) else KeyboardInterrupt() from None
            except Exception as e:
                heartbeat.stop()
                if _finished(study, trial):  # failed meanwhile by another process (no heartbeat seen)
                    log.warning("trial %d was failed by another process (%s); its retry goes on", trial.number,
                                study._storage.get_trial(trial._trial_id).user_attrs.get("stop_reason"))
                else:
                    reason = trial_failure(e)  # this trial's own failure (out of memory, NaN): go on
                    _record_end(study, trial, f"failed: {reason}" if reason else
                                f"failed: {e.__class__.__name__}: {e}"[:1000])
                    if reason is None:  # anything else stops the worker, with the trial recorded
                        raise
            finally:
                heartbeat.stop()
            release_memory()  # the trial's Trainer, model and optimiser sit in reference cycles
            self.reporter.trial_end(study.get_trials(deepcopy=False)[trial.number])
            if trial.user_attrs.get("baseline") or self.worker_index == 0:
                self._noise_floor(study, dm, num_classes)
        if stopped in ("trials", "space exhausted"):
            self._noise_floor(study, dm, num_classes)
            self._confirm(study, dm, num_classes)
        counts = count_states(study)
        return SearchResult(study, counts, time.monotonic() - start, stopped)

    def _next_trial(self, study: optuna.Study, start: float) -> Any:
        """Called with the study's lock held. A stop reason (str); None when the trials still needed
        are running elsewhere; or (trial, architecture, heartbeat) of a new trial, its architecture
        sampled and recorded before the lock is released so no other worker starts the same one."""
        fail_stale(study, self.heartbeat_s)
        trials = study.get_trials(deepcopy=False)
        for t in trials:  # under the lock, a running trial without a worker lost it before starting
            if t.state == TrialState.RUNNING and "worker" not in t.user_attrs:
                fail_dead(study, t, "its worker stopped before the trial started")
        if not trials:
            try:
                params = self.space.params_of(self.space.baseline())
            except ArchitectureError:
                log.warning("the space has a stage without 'none': no baseline trial, fronts read without one")
            else:
                study.enqueue_trial(params, user_attrs={"baseline": True})
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if len(done) >= self.trials:
            return "trials"
        if self.timeout is not None and time.monotonic() - start > self.timeout:
            return "timeout"
        failed = [t for t in trials if t.state == TrialState.FAIL and t.datetime_start is not None
                  and t.datetime_start >= self._started_at
                  and not str(t.user_attrs.get("stop_reason", "")).startswith("interrupted")]
        if len(failed) >= max(MAX_FAILURES, self.trials):  # something fails every trial: stop, don't spin
            return f"{len(failed)} trials failed since this run started (last: {failed[-1].user_attrs.get('stop_reason')})"
        distinct = {t.user_attrs.get("arch") for t in done}
        if len(distinct) >= self.space.count():
            return "space exhausted"
        if len(done) + len(running) >= self.trials or len(distinct | {t.user_attrs.get("arch") for t in running}) \
                >= self.space.count():
            return None
        trial = study.ask()
        try:
            arch = self.space.sample(trial)
            trial.set_user_attr("arch", str(arch))
            trial.set_user_attr("worker", WORKER)
        except Exception as e:
            _record_end(study, trial, f"failed: {e.__class__.__name__}: {e}"[:1000])
            raise
        return trial, arch

    def _twin(self, study: optuna.Study, trial: optuna.Trial, arch: Architecture) -> optuna.trial.FrozenTrial | None:
        """A finished trial of the same architecture, waiting first for one that is running (started
        earlier, by another worker): an architecture is never trained twice at the same time. While
        waiting it fails silent trials, so a twin whose worker died does not hold it forever."""
        while True:
            with self._lock.held():
                fail_stale(study, self.heartbeat_s)
            same = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("arch") == str(arch)
                    and t.number != trial.number]
            done = [t for t in same if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            if done:
                return done[0]
            if not any(t.state == TrialState.RUNNING and t.number < trial.number for t in same):
                return None
            time.sleep(POLL_S)

    def _run_trial(self, study: optuna.Study, trial: optuna.Trial, arch: Architecture, dm: Any,
                   num_classes: int) -> None:
        self.reporter.trial_start(trial.number, arch)
        previous = self._twin(study, trial, arch)
        if previous is not None:  # never train an architecture twice: copy its outcome
            for key in ("params", "flops", LATENCY, "latency_spread_pct", "latency_target", LATENCY_CI, "latency_ratio", "seed", CURVE,
                        "infeasible"):
                if key in previous.user_attrs:
                    trial.set_user_attr(key, previous.user_attrs[key])
            for key, value in previous.system_attrs.items():  # both constraint formats, as stored
                if key == "constraints" or key.startswith("constraints:"):
                    trial.storage.set_trial_system_attr(trial._trial_id, key, value)
            trial.set_user_attr("duplicate_of", previous.number)
            trial.set_user_attr("stop_reason", f"duplicate of trial {previous.number}")
            if previous.state == TrialState.COMPLETE:
                _tell(study, trial, previous.values)
            else:
                _tell(study, trial, state=TrialState.PRUNED)
            return

        measured = time.perf_counter()
        cost = model_cost(arch, num_classes, self.space.input_size, self.space.in_chans)
        lat, cached = self._latency(study, arch, num_classes)
        latency, (lat_lo, lat_hi) = lat.ms, lat.interval_ms
        latency_s = time.perf_counter() - measured
        trial.set_user_attr("params", cost.params)
        trial.set_user_attr("flops", cost.flops)
        trial.set_user_attr(LATENCY, round(latency, 4))
        trial.set_user_attr(LATENCY_CI, [round(lat_lo, 4), round(lat_hi, 4)])
        trial.set_user_attr("latency_ratio", round(lat.ratio.median, 5))
        trial.set_user_attr("latency_spread_pct", round(lat.spread, 2))
        trial.set_user_attr("latency_target", self.target.key())
        violations = self._constraints(trial, latency, cost.params, cost.flops)
        if violations:
            trial.set_user_attr("infeasible", True)
            trial.set_user_attr("stop_reason", "infeasible: " + "; ".join(violations))
            _tell(study, trial, state=TrialState.PRUNED)
            return

        started = time.perf_counter()
        trial.set_user_attr("seed", self.train_seed)
        module = seeded_classifier(arch, self.train_seed, dm, self.space.training, num_classes, self.space.in_chans)
        model = module.model
        noise = cf.noise_of(study)
        self.reporter.status(("latency cached; " if cached else "") + "training")
        ddp = self.space.training["devices"] > 1  # spawned ranks: nothing unpicklable in the callbacks
        record = TrialRecord(self.storage, study._study_id, trial._trial_id, trial.number, study._storage)
        callback = ParetoPruningCallback(
            record, (latency, lat_lo, lat_hi), self.epochs, self.pruner, exempt=bool(trial.user_attrs.get("baseline")),
            on_epoch=None if ddp else (lambda e, acc: self.reporter.epoch(trial.number, e, self.epochs, acc)),
            noise_sd=noise.sd if noise else ())
        trainer = make_trainer(self.space.training, epochs=self.epochs, callbacks=[callback, GateCallback(self.gate)],
                               log_dir=self.run_dir / "trials" / str(trial.number))
        if not ddp and trainer.accelerator.__class__.__name__ == "CUDAAccelerator" and hasattr(dm, "to_device"):
            dm.to_device(trainer.strategy.root_device)
        try:
            fit_detached(trainer, module, dm)
        except Exception as e:
            reason = trial_failure(e)
            if reason is None:
                raise
            trial.set_user_attr("stop_reason", f"failed: {reason}")
            _tell(study, trial, state=TrialState.FAIL)
            return
        stored = study._storage.get_trial(trial._trial_id).user_attrs  # rank 0 wrote them (DDP: elsewhere)
        curve = stored.get(CURVE, [])
        trial.set_user_attr("seconds_trial", round(time.perf_counter() - started + latency_s, 3))
        if PRUNED_AT in stored:
            trial.set_user_attr("stop_reason", stored[PRUNED_AT])
            _tell(study, trial, state=TrialState.PRUNED)
            return
        if not curve or len(curve) < self.epochs:
            trial.set_user_attr("stop_reason", f"failed: training stopped after {len(curve)} of {self.epochs} epochs")
            _tell(study, trial, state=TrialState.FAIL)
            return
        trial.set_user_attr("stop_reason", f"completed {len(curve)} epochs")
        values = {"accuracy": curve[-1], "latency": latency, "params": cost.params, "flops": cost.flops}
        trial.set_user_attr("weights", str(self._save_weights(trial.number, arch, model)))
        _tell(study, trial, [values[o] for o in self.space.objectives])
        self._drop_stale_weights(study)

    # -- re-runs: the noise floor and the confirmation of the front ---------------------------------

    def _fit(self, dm: Any, num_classes: int) -> cf.Fit:
        return cf.make_fit(self.space, dm, num_classes, self.epochs, self.run_dir, self.reporter.status,
                           callbacks=[GateCallback(self.gate)])

    def _noise_floor(self, study: optuna.Study, dm: Any, num_classes: int) -> None:
        """Train the baseline from the further noise seeds once it is complete (once per study)."""
        jobs = cf.pending_noise_runs(study)
        if jobs:
            cf.run_reruns(study, jobs, self._fit(dm, num_classes), "noise floor", claim=self._lock.held)
            release_memory()

    def _confirm(self, study: optuna.Study, dm: Any, num_classes: int) -> None:
        k = self.space.training["confirm"]
        if k < 1 or self.worker_index != 0:
            return
        archs = [t.user_attrs["arch"] for t in front(study)]
        cf.run_reruns(study, cf.confirm_jobs(study, archs, k), self._fit(dm, num_classes), "confirming the front",
                      claim=self._lock.held)
        release_memory()

    # -- weights of the front ---------------------------------------------------------------------

    def _save_weights(self, number: int, arch: Architecture, model: torch.nn.Module) -> Path:
        """The final weights of a complete trial (those its accuracy was measured with), written before
        the trial is marked complete so a complete trial never lacks them."""
        return save_weights(model, weights_path(self.run_dir, number),
                            {"arch": str(arch), "trial": str(number), "study": self.study_name})

    def _drop_stale_weights(self, study: optuna.Study) -> None:
        """Keep the weights of the current front only, so disk use stays bounded by the front's size."""
        keep = {weights_path(self.run_dir, t.number).name for t in front(study)}
        for path in (self.run_dir / WEIGHTS_DIR).glob("trial_*.safetensors"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def _constraints(self, trial: optuna.Trial, latency: float, params: int, flops: int) -> list[str]:
        limits = self.space.limits
        checks = [("latency_ms", latency, limits["max_latency_ms"], "ms"), ("params", params, limits["max_params"], ""),
                  ("flops", flops, limits["max_flops"], "")]
        violations, legacy = [], []
        for name, value, limit, unit in checks:
            if limit is None:
                continue
            excess = float(value) - float(limit)
            trial.set_constraint(name, excess)
            legacy.append(excess)
            if excess > 0:
                violations.append(f"{name} {value:,.4g}{unit} > limit {limit:,.4g}{unit}")
        if legacy:  # optuna-dashboard 0.21 reads only the legacy list form
            trial.storage.set_trial_system_attr(trial._trial_id, "constraints", legacy)
        return violations


def trial_failure(e: BaseException) -> str | None:
    """The reason to record when training a trial raised ``e``, for failures that belong to that
    trial alone (the worker goes on); None for anything else. In a spawned DDP fit the rank's
    exception arrives as text."""
    if isinstance(e, NonFiniteLoss):
        return str(e)
    if isinstance(e, torch.OutOfMemoryError):
        return f"out of memory ({str(e).splitlines()[0]})"
    if e.__class__.__name__ == "ProcessExitedException":  # a DDP rank killed (the host's OOM killer)
        return f"a DDP rank died: {e}"
    if e.__class__.__name__ == "ProcessRaisedException":  # torch.multiprocessing, from a DDP rank
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        for name, what in (("NonFiniteLoss", ""), ("OutOfMemoryError", "out of memory ")):
            hits = [ln for ln in lines if name in ln]
            if hits:
                return f"{what}{hits[-1].split(':', 1)[-1].strip()} (in a DDP rank)"
    return None


def fail_stale(study: optuna.Study, heartbeat_s: int) -> None:
    """Fail (and retry once) the running trials silent for 3 heartbeats: their worker died or hung,
    on this machine or another. Call with the study's lock held."""
    storage = study._storage
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        fail_dead(study, storage.get_trial(trial_id), f"no heartbeat for {grace_s(heartbeat_s)} s: its worker died or hung")


def fail_dead(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """A running trial whose worker is gone: failed with ``why``, and its architecture queued again
    once (``storage.retry_once``). Call with the study's lock held."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "stop_reason", f"failed: {why}")
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # it finished, or someone else failed it, meanwhile
    retry_once(study, storage.get_trial(trial._trial_id))


def _finished(study: optuna.Study, trial: optuna.Trial) -> bool:
    return study._storage.get_trial(trial._trial_id).state.is_finished()


def _record_end(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Record a trial that did not finish (FAIL, with the reason), unless another process already
    failed it (no heartbeat seen): that must not mask what is being handled."""
    try:
        trial.set_user_attr("stop_reason", reason)
        _tell(study, trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %d was already failed by another process", trial.number)


def _tell(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, except that BruteForceSampler's request to stop once every combination was told
    (``study.stop()`` from its after_trial hook, which outside ``optimize`` raises) is not an error:
    the trial is recorded by then, and the loop sees the space exhausted."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as e:
        finished = study.get_trials(deepcopy=False)[trial.number].state != TrialState.RUNNING
        if not (finished and "Study.stop" in str(e)):
            raise


WEIGHTS_DIR = "weights"


def weights_path(run_dir: Path, number: int) -> Path:
    return run_dir / WEIGHTS_DIR / f"trial_{number}.safetensors"


def count_states(study: optuna.Study) -> dict[str, int]:
    counts = {"complete": 0, "pruned": 0, "infeasible": 0, "failed": 0, "running": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["infeasible" if t.user_attrs.get("infeasible") else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    return counts


def front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated feasible complete trials (duplicates collapsed to their first trial)."""
    from .pruning import pareto_front

    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "duplicate_of" not in t.user_attrs and all(v <= 0 for v in t.constraints.values())]
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    points = [(signs[0] * t.values[0], -signs[1] * t.values[1]) for t in trials]
    return sorted((trials[i] for i in pareto_front(points)), key=lambda t: t.values[1])

