"""What the search records on each trial, named once.

Optuna keeps a trial's results as free-form user attributes (string keys, JSON values). The keys are
defined here and nowhere else; code that writes them uses these names, and code that reads them goes
through ``TrialInfo``, a typed read-only view, instead of indexing ``user_attrs`` with strings. A
study written by an older version reads the same: every field missing there reads as ``None``, empty
or ``False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.core.errors import UserError

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial, TrialState

    from nas.core.architecture import Architecture

# -- the user attributes of a trial -------------------------------------------------------------------
ARCH = "arch"  # the architecture string (Architecture.parse reads it back)
WORKER = "worker"  # host:pid of the process that ran the trial
BASELINE = "baseline"  # True on the plain backbone's trial (enqueued first)
STOP_REASON = "stop_reason"  # why the trial ended, in words
CURVE = "val_acc_curve"  # validation accuracy (a detector: mAP50-95) after each epoch trained
MAP50_CURVE = "map50_curve"  # a detector: mAP50 after each epoch trained
LATENCY = "latency_ms"
LATENCY_CI = "latency_ci_ms"  # [low, high]: 95% interval of the paired latency
LATENCY_RATIO = "latency_ratio"  # median ratio to the plain backbone timed beside it
LATENCY_SPREAD = "latency_spread_pct"
LATENCY_TARGET = "latency_target"  # device, batch, input size and threads the latency is for
PARAMS = "params"
FLOPS = "flops"
INFEASIBLE = "infeasible"  # True when a limit (max_latency_ms, max_params, max_flops) was exceeded
SEED = "seed"  # the seed the trial trained from
DUPLICATE_OF = "duplicate_of"  # the trial whose outcome this one copied (same architecture)
DRAWN = "drawn"  # why the architecture was not the sampler's proposal (drawn at random instead)
PRUNED_AT = "pruned_at"  # the decision that stopped the trial
WEIGHTS = "weights"  # where the trial's weights were kept (studies made before the artifact store)
WEIGHTS_ARTIFACT = "weights_artifact"  # the artifact id of the trial's weights in the study's store
WEIGHTS_NOT_KEPT = "weights_not_kept"  # why a complete trial's weights were never stored (off the front)
SECONDS_TRIAL = "seconds_trial"  # latency measurement and training, wall clock
SECONDS_TRAIN_VAL = "seconds_train_val"  # inside the training and validation loops only
EPOCHS_PER_RANK = "epochs_per_rank"  # DDP: epochs each rank trained
THREADS = "threads"  # the CPU threads the trial trained with (nas.measure.cpus)


def weights_removed_key(number: int) -> str:
    """Study system attribute: trial ``number``'s weights left the store (the trial left the front);
    its value is the artifact id. (A finished trial's own attributes cannot change.)"""
    return f"weights_removed:{number}"


def rung_key(epoch: int) -> str:
    """The decision at a rung that kept a trial within noise of the quota (``rung_1``, ``rung_3``, ...)."""
    return f"rung_{epoch}"


COPIED = (
    PARAMS,
    FLOPS,
    LATENCY,
    LATENCY_SPREAD,
    LATENCY_TARGET,
    LATENCY_CI,
    LATENCY_RATIO,
    SEED,
    CURVE,
    INFEASIBLE,
)  # what a duplicate takes over from its twin


class StudyDataError(UserError):
    """A value in the study's storage is not what this tool wrote there (edited by hand or another tool)."""


def _bad(where: str, key: str, value: Any, expected: str) -> StudyDataError:
    shown = repr(value)
    return StudyDataError(
        f"{where}: attribute {key!r} is {shown[:80] + ('...' if len(shown) > 80 else '')}; expected {expected} "
        "(the storage was changed by hand or by another tool)"
    )


def _number(where: str, key: str, value: Any, kind: type = float) -> Any:
    """``value`` as ``kind`` (int or float), None as None; anything else a StudyDataError."""
    if value is None:
        return None
    ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise _bad(where, key, value, "an integer" if kind is int else "a number")
    return kind(value)


KINDS: dict[type, str] = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}


def study_attr(study: Any, key: str, kind: type, default: Any = None, bounds: tuple[float, float] | None = None) -> Any:
    """The study's user attribute ``key`` as ``kind`` (int, float, str, list or dict), ``default`` when
    absent or None; a value of another type, or a number outside ``bounds``, is a StudyDataError naming
    the study, the key and what is allowed (checked before anything is sized by it)."""
    value = study.user_attrs.get(key)
    if value is None:
        return default
    if kind in (int, float):
        number = _number(f"study {study.study_name!r}", key, value, kind)
        if bounds is not None and not bounds[0] <= number <= bounds[1]:
            raise _bad(f"study {study.study_name!r}", key, value, f"a number from {bounds[0]:,} to {bounds[1]:,}")
        return number
    if not isinstance(value, kind):
        raise _bad(f"study {study.study_name!r}", key, value, KINDS[kind])
    return value


@dataclass(frozen=True)
class TrialInfo:
    """A finished or running trial as the search recorded it: ``TrialInfo.of(trial)``."""

    number: int
    state: TrialState
    values: tuple[float, ...] | None
    attrs: Mapping[str, Any]

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialInfo:
        values = None if trial.values is None else tuple(trial.values)
        return cls(trial.number, trial.state, values, trial.user_attrs)

    # -- what was trained -----------------------------------------------------------------------------
    @property
    def arch(self) -> str:
        """The architecture string, or '' for a trial that never got one (it failed before)."""
        return str(self.attrs.get(ARCH) or "")

    @property
    def architecture(self) -> Architecture:
        from nas.core.architecture import Architecture

        return Architecture.parse(self.arch)

    @property
    def baseline(self) -> bool:
        return bool(self.attrs.get(BASELINE))

    @property
    def worker(self) -> str | None:
        return self.attrs.get(WORKER)

    @property
    def seed(self) -> int | None:
        seed = self.attrs.get(SEED)  # absent in studies made before every trial recorded it
        return seed if isinstance(seed, int) and not isinstance(seed, bool) else None

    def _num(self, key: str, kind: type = float) -> Any:
        return _number(f"trial {self.number}", key, self.attrs.get(key), kind)

    @property
    def duplicate_of(self) -> int | None:
        """The trial this one's outcome was copied from, or None when it trained itself."""
        return self._num(DUPLICATE_OF, int)

    @property
    def is_copy(self) -> bool:
        return DUPLICATE_OF in self.attrs

    # -- how it ended -----------------------------------------------------------------------------------
    @property
    def stop_reason(self) -> str:
        return str(self.attrs.get(STOP_REASON) or "")

    @property
    def infeasible(self) -> bool:
        return bool(self.attrs.get(INFEASIBLE))

    @property
    def pruned_at(self) -> str | None:
        return self.attrs.get(PRUNED_AT)

    def rung_decision(self, epoch: int) -> str:
        """What the pruner said at rung ``epoch`` when it kept the trial within noise, else ''."""
        return str(self.attrs.get(rung_key(epoch)) or "")

    @property
    def curve(self) -> tuple[float, ...]:
        """Validation accuracy after each epoch trained (empty before the first)."""
        values = self.attrs.get(CURVE) or ()
        if not isinstance(values, (list, tuple)):
            raise _bad(f"trial {self.number}", CURVE, values, "a list of accuracies")
        return tuple(_number(f"trial {self.number}", CURVE, a) for a in values)

    @property
    def weights(self) -> str | None:
        """The local path of the kept weights (studies made before the artifact store)."""
        return self.attrs.get(WEIGHTS)

    @property
    def weights_artifact(self) -> str | None:
        """The artifact id of the kept weights in the study's store."""
        value = self.attrs.get(WEIGHTS_ARTIFACT)
        return value if isinstance(value, str) and value else None

    @property
    def weights_not_kept(self) -> str | None:
        """Why the trial's weights were never stored: it completed off the front."""
        value = self.attrs.get(WEIGHTS_NOT_KEPT)
        return value if isinstance(value, str) and value else None

    @property
    def seconds_train_val(self) -> float | None:
        return self._num(SECONDS_TRAIN_VAL)

    @property
    def threads(self) -> int | None:
        return self._num(THREADS, int)

    @property
    def latency_ratio(self) -> float | None:
        return self._num(LATENCY_RATIO)

    @property
    def seconds_per_epoch_at_cost(self) -> float | None:
        """Seconds inside training and validation per epoch, divided by the latency ratio to the plain
        network (an architecture's training costs roughly what its inference does): comparable across
        the trials of a study on one machine. None where not recorded."""
        seconds, ratio, epochs = self.seconds_train_val, self.latency_ratio, len(self.curve)
        if seconds is None or not ratio or ratio <= 0 or epochs == 0:
            return None
        return seconds / epochs / ratio

    # -- cost -------------------------------------------------------------------------------------------
    @property
    def latency_ms(self) -> float | None:
        return self._num(LATENCY)

    @property
    def latency_ci_ms(self) -> tuple[float, float] | None:
        ci = self.attrs.get(LATENCY_CI)
        if not ci:
            return None
        if not isinstance(ci, (list, tuple)) or len(ci) != 2:
            raise _bad(f"trial {self.number}", LATENCY_CI, ci, "[low, high]")
        return (_number(f"trial {self.number}", LATENCY_CI, ci[0]), _number(f"trial {self.number}", LATENCY_CI, ci[1]))

    @property
    def latency_spread_pct(self) -> float | None:
        return self._num(LATENCY_SPREAD)

    @property
    def latency_target(self) -> str | None:
        return self.attrs.get(LATENCY_TARGET)

    @property
    def params(self) -> int | None:
        return self._num(PARAMS, int)

    @property
    def flops(self) -> int | None:
        return self._num(FLOPS, int)


def holds_architecture(trial: FrozenTrial) -> bool:
    """The trial evaluated its architecture or is evaluating it: complete, pruned (infeasible included)
    or running, and not a copy. A failed trial holds nothing (its retry trains the architecture)."""
    from optuna.trial import TrialState

    return (
        trial.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING) and not TrialInfo.of(trial).is_copy
    )


def counts_as_evaluation(trial: FrozenTrial) -> bool:
    """A finished evaluation of an architecture (``holds_architecture``, not running). ``--trials N``
    asks for N of these."""
    from optuna.trial import TrialState

    return trial.state != TrialState.RUNNING and holds_architecture(trial)


def infos(trials: Iterable[FrozenTrial]) -> list[TrialInfo]:
    return [TrialInfo.of(t) for t in trials]
