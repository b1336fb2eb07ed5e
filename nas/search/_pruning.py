"""Multi-objective successive halving (in the spirit of Syne Tune's MOASHA), storage-backed.

At each rung (epochs min_epochs * eta^k below the budget) a trial continues only if its (accuracy at
that rung, latency) is among the best max(1, n // eta) of the n trials that reached the rung, ranked
by non-dominated sorting. Ties inside a front are broken by higher accuracy, then lower latency, then
lower trial number. The accuracies come from the per-epoch curves stored in the study (user attribute
``val_acc_curve``), so every worker and machine sharing the storage takes the same decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nas.core.pareto import nondominated_ranks, pareto_front
from nas.study.record import TrialInfo

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def rungs(max_epochs: int, min_epochs: int = 1, eta: int = 3) -> list[int]:
    """Epochs at which decisions are taken (strictly below the budget: the last epoch just completes)."""
    out, r = [], min_epochs
    while r < max_epochs:
        out.append(r)
        r *= eta
    return out


@dataclass(frozen=True)
class Decision:
    keep: bool
    rung: int
    position: int  # 0-based place of the trial among those at the rung
    competitors: int  # trials at the rung, itself included
    kept: int  # how many continue from this rung
    within_noise: str = ""  # kept although outside the quota: why it is a tie with the last one kept

    def __str__(self) -> str:
        verdict = "continues" if self.keep else "pruned"
        text = (
            f"{verdict} at epoch {self.rung}: place {self.position + 1} of {self.competitors} by "
            f"non-dominated sorting (accuracy, latency); the best {self.kept} continue"
        )
        return text + (f"; kept within noise of place {self.kept}: {self.within_noise}" if self.within_noise else "")


Entry = tuple  # (trial number, accuracy, latency[, latency low, latency high])


def within_noise(me: Entry, other: Entry, acc_sd: float) -> str:
    """Why ``me`` cannot be told from ``other`` at a rung ("" when it can): accuracies within one noise
    sd, and latencies whose intervals overlap (equal latencies where no interval is known)."""
    if acc_sd <= 0 or abs(me[1] - other[1]) > acc_sd:  # no noise measured: the quota decides, as before
        return ""
    lo_me, hi_me = (me[3], me[4]) if len(me) >= 5 else (me[2], me[2])
    lo_o, hi_o = (other[3], other[4]) if len(other) >= 5 else (other[2], other[2])
    if hi_me < lo_o or hi_o < lo_me:
        return ""
    return (
        f"accuracy {me[1]:.4f} vs {other[1]:.4f} (noise sd {acc_sd:.4f}), latency intervals "
        f"[{lo_me:.4g}, {hi_me:.4g}] and [{lo_o:.4g}, {hi_o:.4g}] overlap"
    )


@dataclass(frozen=True)
class MOASHA:
    eta: int = 3
    min_epochs: int = 1

    def rungs(self, max_epochs: int) -> list[int]:
        return rungs(max_epochs, self.min_epochs, self.eta)

    def decide(self, me: Entry, others: Sequence[Entry], rung: int, acc_sd: float = 0.0) -> Decision:
        """``me`` and ``others`` are (trial number, accuracy at the rung, latency), optionally followed
        by the latency's interval (low, high). ``acc_sd``: the seed-to-seed sd of accuracy at this rung;
        a trial outside the quota that is within noise of the last one kept continues (a rung must not
        decide by noise). A rung where every accuracy is the same (a detector's mAP is 0 until it finds
        its first boxes) keeps everyone: it would otherwise decide by latency alone."""
        entries = [e for e in others if e[0] != me[0]] + [me]
        if len(entries) > 1 and len({e[1] for e in entries}) == 1:  # nothing measured yet (a detector's mAP 0)
            return Decision(
                True,
                rung,
                0,
                len(entries),
                len(entries),
                f"every trial at this rung has accuracy {me[1]:.4f}: it says nothing about quality yet, so "
                "none is pruned on the other objective alone",
            )
        ranks = nondominated_ranks([(e[1], e[2]) for e in entries])
        order = sorted(range(len(entries)), key=lambda i: (ranks[i], -entries[i][1], entries[i][2], entries[i][0]))
        position = order.index(len(entries) - 1)
        kept = max(1, len(entries) // self.eta)
        if position < kept:
            return Decision(True, rung, position, len(entries), kept)
        why = within_noise(me, entries[order[kept - 1]], acc_sd)
        return Decision(bool(why), rung, position, len(entries), kept, why)


def rung_values(trials: Iterable[FrozenTrial], rung: int) -> list[Entry]:
    """(number, accuracy at ``rung``, latency[, latency low, high]) of every trial whose stored curve
    reached ``rung`` (copies of another trial's outcome are left out: they would count it twice)."""
    out = []
    for info in map(TrialInfo.of, trials):
        curve, lat, ci = info.curve, info.latency_ms, info.latency_ci_ms
        if len(curve) >= rung and lat is not None and not info.infeasible and not info.is_copy:
            out.append((info.number, curve[rung - 1], lat, *(ci or ())))
    return out


class TrialRecord:
    """The trial as the pruning callback sees it: a storage and ids. Unlike ``optuna.Trial`` it
    travels into DDP ranks (spawned processes), where the storage is opened again from its URL."""

    def __init__(self, storage_url: str, study_id: int, trial_id: int, number: int, storage: Any = None):
        self.storage_url, self.study_id, self.trial_id, self.number = storage_url, study_id, trial_id, number
        self._storage = storage

    @property
    def storage(self) -> Any:
        if self._storage is None:
            from nas.study.storage import open_storage

            self._storage = open_storage(self.storage_url)
        return self._storage

    def set(self, key: str, value: Any) -> None:
        self.storage.set_trial_user_attr(self.trial_id, key, value)

    def trials(self) -> list[FrozenTrial]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_storage": None}


# ----------------------------------------------------------------------------------------------------
# Replay of recorded learning curves (``nas bench pruning``)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    number: int
    arch: str
    curve: tuple[float, ...]  # the search's own run (the study's seed): what a live search would see
    latency: float
    baseline: bool = False
    latency_ci: tuple[float, float] | None = None
    seed_curves: tuple[tuple[float, ...], ...] = ()  # the same architecture from further seeds

    @property
    def mean_final(self) -> float:
        finals = [self.curve[-1], *(c[-1] for c in self.seed_curves)]
        return sum(finals) / len(finals)

    def entry(self, epoch: int) -> tuple:
        return (self.number, self.curve[epoch - 1], self.latency, *(self.latency_ci or ()))


def noise_from_records(records: Sequence[Recorded]) -> list[float]:
    """The seed-to-seed sd per epoch of the recorded baseline (empty without one or its seeds)."""
    from nas.core.stats import seed_sd

    base = next((r for r in records if r.baseline), None)
    if base is None or not base.seed_curves:
        return []
    return [0.0 if v != v else v for v in seed_sd([base.curve, *base.seed_curves])]


def confirmed_front(records: Sequence[Recorded]) -> set[str]:
    """Architectures on the front of mean final accuracy (over every recorded seed) against latency."""
    return {records[i].arch for i in pareto_front([(r.mean_final, r.latency) for r in records])}


@dataclass(frozen=True)
class ReplayResult:
    method: str
    epochs: int
    completed: list[Recorded]

    def points(self) -> list[tuple[float, float]]:
        return [(r.curve[-1], r.latency) for r in self.completed]


def replay_none(records: Sequence[Recorded]) -> ReplayResult:
    return ReplayResult("no pruning", sum(len(r.curve) for r in records), list(records))


def replay_moasha(records: Sequence[Recorded], eta: int = 3, noise_sd: Sequence[float] = ()) -> ReplayResult:
    """Trials arrive in number order (one worker); each decides at its rungs against the trials that
    reached the rung before it, exactly as the live callback does from the storage. ``noise_sd``: per
    epoch, as the live search measures it; a trial within noise of the last one kept continues."""
    pruner = MOASHA(eta=eta)
    at_rung: dict[int, list[tuple]] = {}
    epochs, completed = 0, []
    for r in records:
        survived = True
        for epoch in range(1, len(r.curve) + 1):
            epochs += 1
            if epoch in pruner.rungs(len(r.curve)):
                me = r.entry(epoch)
                sd = noise_sd[epoch - 1] if epoch <= len(noise_sd) else 0.0
                decision = pruner.decide(me, at_rung.get(epoch, []), epoch, sd)
                at_rung.setdefault(epoch, []).append(me)
                if not decision.keep and not r.baseline:
                    survived = False
                    break
        if survived:
            completed.append(r)
    name = f"multi-objective successive halving (eta={eta})" + (", within noise" if noise_sd else "")
    return ReplayResult(name, epochs, completed)


def replay_optuna_sh(records: Sequence[Recorded], eta: int = 3) -> ReplayResult:
    """Optuna's own single-objective SuccessiveHalvingPruner on accuracy alone, fed the same curves."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)
    )
    epochs, completed = 0, []
    for r in records:
        trial = study.ask()
        pruned = False
        for epoch, acc in enumerate(r.curve, start=1):
            epochs += 1
            trial.report(acc, epoch)
            if epoch < len(r.curve) and not r.baseline and trial.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, r.curve[-1])
            completed.append(r)
    return ReplayResult(f"Optuna SuccessiveHalvingPruner on accuracy (eta={eta})", epochs, completed)
