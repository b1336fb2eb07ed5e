"""One trial of a search, from a sampled architecture to its recorded end:

params, FLOPs and paired latency -> limits -> training with the pruning callback -> ``Outcome`` ->
told to the study. A proposal of an architecture already evaluated never gets here: the loop records it
as a copy of its twin (``twin_of``, ``record_copy``) and asks again.

Every trial carries plain user attributes (readable in optuna-dashboard), named in
``nas.study.record``: the architecture, params, FLOPs, the paired latency with its interval, ratio,
spread and target, the seed, the validation curve, the stop reason (and whether it was infeasible, a
copy, the baseline, and where its weights are, where those apply).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import torch
from optuna.trial import TrialState

from nas.core.architecture import Architecture
from nas.core.artifacts import WEIGHTS_DIR, save_weights, weights_path
from nas.core.errors import reason_text, trial_failure
from nas.core.names import write_text_atomic
from nas.core.task import TaskData
from nas.measure.cost import LatencyTarget, PairedLatency, PairedMeter, Ratio
from nas.search._hooks import Display, TrialHooks
from nas.search._locks import LatencyGate
from nas.search._pruning import TrialRecord
from nas.search._study import set_system_attr, tell
from nas.study import confirmation as cf
from nas.study import record as r
from nas.study.latency import reference_latency_ms
from nas.study.record import TrialInfo, holds_architecture
from nas.study.stores import staged, upload
from nas.study.studies import dominated_by, front, storage_of, stored_trial, study_id, trial_id, uid_of

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from nas.core.space import SearchSpace
    from nas.search._pruning import MOASHA


class Reporter:
    """What the search tells its display. The CLI's rich display overrides these."""

    def search_start(self, study: optuna.Study, target: int) -> None: ...
    def trial_start(self, number: int, arch: Architecture) -> None: ...
    def epoch(self, number: int, epoch: int, epochs: int, acc: float) -> None: ...
    def step(self, number: int, epoch: int, epochs: int, step: int, steps: int, samples_per_s: float) -> None:
        """Training of trial ``number`` is at ``step`` of ``steps`` in epoch ``epoch`` of ``epochs``."""

    def trial_end(self, trial: optuna.trial.FrozenTrial) -> None: ...
    def status(self, text: str) -> None:
        """What the current trial or re-run is doing now (latency, training, re-runs)."""


@dataclass(frozen=True)
class Outcome:
    """How a trial ended: the state to tell, the stop reason, and the objective values (complete only)."""

    state: TrialState
    stop_reason: str
    values: tuple[float, ...] | None = None


# -- copies: an architecture is evaluated once ----------------------------------------------------------


def twin_of(trials: list[optuna.trial.FrozenTrial], arch: str, number: int) -> optuna.trial.FrozenTrial | None:
    """The trial that evaluated (or is evaluating) ``arch`` before trial ``number``, if any: the first
    finished or running one that is not itself a copy. A failed trial is no twin (its retry trains)."""
    return next(
        (t for t in trials if t.number != number and holds_architecture(t) and TrialInfo.of(t).arch == arch), None
    )


def record_copy(study: optuna.Study, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> None:
    """Record a proposal of an architecture already evaluated as a copy of its ``twin``: PRUNED, with
    the twin's figures, constraints and learning curve as far as they are recorded (a running twin: what
    it has so far), so TPE learns what it proposed (other samplers skip pruned trials), never
    complete (so neither our front nor optuna-dashboard's best trials count it twice) and not counted
    toward ``--trials``."""
    for key in r.COPIED:
        if key in twin.user_attrs:
            trial.set_user_attr(key, twin.user_attrs[key])
    for key, value in twin.system_attrs.items():  # both constraint formats, as stored
        if key == "constraints" or key.startswith("constraints:"):
            set_system_attr(study, trial, key, value)
    storage = storage_of(study)
    for step, value in sorted(twin.intermediate_values.items()):
        storage.set_trial_intermediate_value(trial_id(trial), step, value)
    trial.set_user_attr(r.DUPLICATE_OF, twin.number)
    running = " (still running)" if twin.state == TrialState.RUNNING else ""
    trial.set_user_attr(r.STOP_REASON, f"copy of trial {twin.number}{running}: evaluated once, not counted")
    tell(study, trial, state=TrialState.PRUNED)


@dataclass
class Trials:
    """What the trials of one worker share, and how one of them is run (``run``)."""

    space: SearchSpace
    study: optuna.Study
    storage_url: str
    study_name: str
    run_dir: Path
    data: TaskData  # the space's data, made ready once per worker
    num_classes: int
    train_seed: int
    epochs: int
    pruner: MOASHA | None
    gate: LatencyGate
    lock: Any  # the study's lock (nas.search._locks.StudyLock)
    reporter: Reporter = field(default_factory=Reporter)
    store: Any = None  # the study's Optuna artifact store (nas.study.stores.open_store), where weights go
    store_location: str = ""  # where that is, for messages
    start: Mapping[str, Any] | None = None  # the study's starting network (a warm start), else None

    def __post_init__(self) -> None:
        self.target = LatencyTarget.from_space(self.space.latency)
        self._latency_cache_path = self.run_dir / "latency.json"
        self._meter: PairedMeter | None = None

    # -- one trial --------------------------------------------------------------------------------

    def run(self, trial: optuna.Trial, arch: Architecture) -> None:
        """Run ``trial`` (its architecture ``arch``) to its end and tell the study. A failure that belongs
        to the trial alone (out of memory, NaN) is recorded as FAIL; anything else is raised."""
        self.reporter.trial_start(trial.number, arch)
        outcome = self._outcome(trial, arch)
        trial.set_user_attr(r.STOP_REASON, reason_text(outcome.stop_reason))
        if outcome.state == TrialState.COMPLETE:
            tell(self.study, trial, list(outcome.values or ()))
            self._drop_stale_weights()
        else:
            tell(self.study, trial, state=outcome.state)

    def _outcome(self, trial: optuna.Trial, arch: Architecture) -> Outcome:
        measured = time.perf_counter()
        cost = self.space.task.cost(self.space, arch, self.num_classes)
        lat, built = self._latency(arch)
        latency, (lat_lo, lat_hi) = lat.ms, lat.interval_ms
        latency_s = time.perf_counter() - measured
        trial.set_user_attr(r.PARAMS, cost.params)
        trial.set_user_attr(r.FLOPS, cost.flops)
        trial.set_user_attr(r.LATENCY, round(latency, 4))
        trial.set_user_attr(r.LATENCY_CI, [round(lat_lo, 4), round(lat_hi, 4)])
        trial.set_user_attr(r.LATENCY_RATIO, round(lat.ratio.median, 5))
        trial.set_user_attr(r.LATENCY_SPREAD, round(lat.spread, 2))
        trial.set_user_attr(r.LATENCY_TARGET, self.target.key())
        violations = self._constraints(trial, latency, cost.params, cost.flops)
        if violations:
            trial.set_user_attr(r.INFEASIBLE, True)
            return Outcome(TrialState.PRUNED, "infeasible: " + "; ".join(violations))

        started = time.perf_counter()
        trial.set_user_attr(r.SEED, self.train_seed)
        self.reporter.status(("latency cached; " if built is None else "") + "training")
        try:
            result = self.space.task.fit(
                self.space,
                arch,
                self.train_seed,
                self.data,
                self.epochs,
                self.run_dir / "trials" / str(trial.number),
                self._hooks(trial, (latency, lat_lo, lat_hi)),
                self.num_classes,
                start=self.start,
                model=built,
            )
        except Exception as e:
            reason = trial_failure(e)
            if reason is None:
                raise
            return Outcome(TrialState.FAIL, f"failed: {reason}")
        trial.set_user_attr(r.SECONDS_TRIAL, round(time.perf_counter() - started + latency_s, 3))
        return self._ending(trial, arch, result.model, cost, latency)

    def _hooks(self, trial: optuna.Trial, latency: tuple[float, float, float]) -> TrialHooks:
        """The fit's hooks: pruning, the gate and (outside DDP, whose spawned ranks cannot take the
        display with them) the live display."""
        noise = cf.noise_of(self.study)
        ddp = self.space.training.devices > 1
        return TrialHooks(
            TrialRecord(self.storage_url, study_id(self.study), trial_id(trial), trial.number, storage_of(self.study)),
            latency,
            self.epochs,
            self.pruner,
            self.gate,
            exempt=bool(trial.user_attrs.get(r.BASELINE)),
            display=None if ddp else Display(self.reporter, trial.number, self.epochs),
            noise_sd=noise.sd if noise else (),
        )

    def _ending(self, trial: optuna.Trial, arch: Architecture, model: Any, cost: Any, latency: float) -> Outcome:
        """How a trial whose training returned ended, read from what its hooks stored (in DDP rank 0
        wrote it, elsewhere): pruned at a rung, stopped short, or complete. A complete trial's weights
        are kept where it joins the front (or is the baseline): one a front member dominates already
        would only have them removed again (``_drop_stale_weights``), so they are never stored."""
        stored = TrialInfo.of(stored_trial(self.study, trial))
        curve = stored.curve
        if stored.pruned_at is not None:
            return Outcome(TrialState.PRUNED, stored.pruned_at)
        if not curve or len(curve) < self.epochs or model is None:
            return Outcome(TrialState.FAIL, f"failed: training stopped after {len(curve)} of {self.epochs} epochs")
        named = {"accuracy": curve[-1], "latency": latency, "params": cost.params, "flops": cost.flops}
        values = tuple(named[o] for o in self.space.objectives)
        ahead = None if trial.user_attrs.get(r.BASELINE) else dominated_by(self.study, values)
        if ahead is None:
            trial.set_user_attr(r.WEIGHTS_ARTIFACT, self._save_weights(trial, arch, model))
        else:
            trial.set_user_attr(
                r.WEIGHTS_NOT_KEPT, f"off the front when it completed: trial {ahead.number} dominates it"
            )
        return Outcome(TrialState.COMPLETE, f"completed {len(curve)} epochs", values)

    # -- latency ----------------------------------------------------------------------------------

    def _paired_meter(self) -> PairedMeter:
        """The meter of this worker: the space's plain backbone as the reference, timed beside every
        candidate; its quiet latency is the study's (``reference_latency_ms``)."""
        if self._meter is None:
            reference = self.space.task.build(self.space, self.space.baseline(), self.num_classes, init_seed=0)
            meter = PairedMeter(self.target, reference, self.space.in_chans)
            with self.gate.measuring():  # no worker of this machine trains meanwhile
                ms = reference_latency_ms(
                    self.study, self.target, str(self.space.baseline()), lambda: meter.reference_ms, self.lock
                )
            self._meter = PairedMeter(self.target, reference, self.space.in_chans, ms)
        return self._meter

    def _latency(self, arch: Architecture) -> tuple[PairedLatency, Any]:
        """The architecture's paired latency (ratio to the plain backbone, timed interleaved with it, x
        the study's reference latency), from the cache (runs/<study>/latency.json, by architecture and
        target) or measured while no other worker on this machine trains. Measured on the model the
        trial will train (built as its fit would, from the trial's seed and start; inference leaves its
        weights and buffers as they were), which it returns for the fit; None where it came from the
        cache."""
        meter = self._paired_meter()
        key = f"{arch}@{self.target.key()}"
        path = self._latency_cache_path
        built = None
        with self.gate.measuring():
            cache = json.loads(path.read_text()) if path.exists() else {}
            if not isinstance(cache.get(key), dict):
                self.reporter.status(f"measuring latency against {self.space.baseline().backbone} (interleaved)")
                built = self.space.task.build(
                    self.space, arch, self.num_classes, init_seed=self.train_seed, start=self.start
                )
                modes = [m.training for m in built.modules()]
                ratio = meter.ratios([built])[0]  # in eval mode, maybe on another device
                built.to("cpu")  # back as built: the fit moves it where it trains, in the modes it had
                for m, training in zip(built.modules(), modes, strict=True):
                    m.train(training)
                cache[key] = {"ratios": [round(r, 6) for r in ratio.samples]}
                write_text_atomic(path, json.dumps(cache))
        return PairedLatency(Ratio(tuple(cache[key]["ratios"])), meter.reference_ms), built

    # -- limits -----------------------------------------------------------------------------------

    def _constraints(self, trial: optuna.Trial, latency: float, params: int, flops: int) -> list[str]:
        limits = self.space.limits
        checks = [
            ("latency_ms", latency, limits.max_latency_ms, "ms"),
            ("params", params, limits.max_params, ""),
            ("flops", flops, limits.max_flops, ""),
        ]
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
            set_system_attr(self.study, trial, "constraints", legacy)
        return violations

    # -- weights of the front ---------------------------------------------------------------------

    def _save_weights(self, trial: optuna.Trial, arch: Architecture, model: torch.nn.Module) -> str:
        """Upload the final weights of a complete trial (those its accuracy was measured with) to the
        study's artifact store, before the trial is marked complete so a complete trial never lacks
        them; returns the artifact id. The metadata names the study, its uid, the trial and the
        architecture, checked before the weights are ever used."""
        meta = {"arch": str(arch), "trial": str(trial.number), "study": self.study_name}
        with staged(self.run_dir) as tmp:  # the file's name is the artifact's
            path = save_weights(
                model, tmp / f"trial_{trial.number}.safetensors", {**meta, "study_uid": uid_of(self.study) or ""}
            )
            # a store that cannot be written: the worker stops, the trial recorded
            return upload(self.store, self.store_location, trial, path, f"the weights of trial {trial.number}")

    def _drop_stale_weights(self) -> None:
        """Keep the weights of the current front (and the baseline) only, so the store's size stays
        bounded: those of a trial that left the front are removed (once; noted on the study, since a
        finished trial's attributes cannot change). Decided on one reading of the trials, under the study's
        lock, so a trial another worker finishes meanwhile is never taken for one that left the front. A
        removal that fails (a store briefly unreachable) is tried again after the next trial."""
        with self.lock.held():
            snapshot = self.study.get_trials(deepcopy=False)
            keep = {t.number for t in front(self.study, snapshot)} | {
                t.number
                for t in snapshot
                if TrialInfo.of(t).baseline  # the reference of every comparison
            }
            storage = storage_of(self.study)
            removed = storage.get_study_system_attrs(study_id(self.study))
            for t in snapshot:
                artifact = TrialInfo.of(t).weights_artifact
                key = r.weights_removed_key(t.number)
                if t.state != TrialState.COMPLETE or t.number in keep or artifact is None or key in removed:
                    continue
                try:
                    self.store.remove(artifact)
                except Exception as e:
                    if e.__class__.__name__ != "ArtifactNotFound":  # not: already removed by another worker
                        log.warning("could not remove the weights of trial %d (%s): %s", t.number, artifact, e)
                        continue
                storage.set_study_system_attr(study_id(self.study), key, artifact)
        legacy = {weights_path(self.run_dir, n).name for n in keep}
        for path in (self.run_dir / WEIGHTS_DIR).glob("trial_*.safetensors"):  # kept before the store
            if path.name not in legacy:
                path.unlink(missing_ok=True)
