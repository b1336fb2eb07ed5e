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

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial, TrialState

    from nas.architecture import Architecture

# -- the user attributes of a trial -------------------------------------------------------------------
ARCH = "arch"  # the architecture string (Architecture.parse reads it back)
WORKER = "worker"  # host:pid of the process that ran the trial
BASELINE = "baseline"  # True on the plain backbone's trial (enqueued first)
STOP_REASON = "stop_reason"  # why the trial ended, in words
CURVE = "val_acc_curve"  # validation accuracy after each epoch trained
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
WEIGHTS = "weights"  # where the trial's weights were kept
SECONDS_TRIAL = "seconds_trial"  # latency measurement and training, wall clock
SECONDS_TRAIN_VAL = "seconds_train_val"  # inside the training and validation loops only
EPOCHS_PER_RANK = "epochs_per_rank"  # DDP: epochs each rank trained


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


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


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
        from nas.architecture import Architecture

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

    @property
    def duplicate_of(self) -> int | None:
        """The trial this one's outcome was copied from, or None when it trained itself."""
        source = self.attrs.get(DUPLICATE_OF)
        return None if source is None else int(source)

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
        return tuple(float(a) for a in self.attrs.get(CURVE) or ())

    @property
    def weights(self) -> str | None:
        return self.attrs.get(WEIGHTS)

    @property
    def seconds_train_val(self) -> float | None:
        return _float(self.attrs.get(SECONDS_TRAIN_VAL))

    # -- cost -------------------------------------------------------------------------------------------
    @property
    def latency_ms(self) -> float | None:
        return _float(self.attrs.get(LATENCY))

    @property
    def latency_ci_ms(self) -> tuple[float, float] | None:
        ci = self.attrs.get(LATENCY_CI)
        return None if not ci else (float(ci[0]), float(ci[1]))

    @property
    def latency_spread_pct(self) -> float | None:
        return _float(self.attrs.get(LATENCY_SPREAD))

    @property
    def latency_target(self) -> str | None:
        return self.attrs.get(LATENCY_TARGET)

    @property
    def params(self) -> int | None:
        p = self.attrs.get(PARAMS)
        return None if p is None else int(p)

    @property
    def flops(self) -> int | None:
        f = self.attrs.get(FLOPS)
        return None if f is None else int(f)


def counts_as_evaluation(trial: FrozenTrial) -> bool:
    """A finished evaluation of an architecture: complete or pruned (infeasible included), not a copy
    of an earlier trial. ``--trials N`` asks for N of these."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) and DUPLICATE_OF not in trial.user_attrs


def infos(trials: Iterable[FrozenTrial]) -> list[TrialInfo]:
    return [TrialInfo.of(t) for t in trials]
