"""What a study's re-runs say: the noise floor (the baseline trained from ``training.noise_seeds`` seeds,
its seed-to-seed spread of the quality at every epoch, which pruning and the report use) and the
confirmation of the front (its members and the baseline re-trained from K fresh seeds, the same for all:
paired; each member's mean with its interval, its paired difference to the baseline with its interval,
and a verdict that calls it better only when that interval excludes 0).

Every re-run is one study user attribute ``rerun:<seed>:<architecture>`` holding its curve; a failed one
``rerun_failed:<seed>:<architecture>`` with its reason; a run being trained ``claim:<seed>:<architecture>``
(the search's re-runs write them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from nas.core.config import NOISE_SEEDS, SEED
from nas.core.pareto import nondominated_ranks
from nas.core.stats import Estimate, mean_interval, paired_difference, seed_sd, verdict
from nas.study.record import StudyDataError, TrialInfo, study_attr
from nas.study.studies import NOISE_SEEDS_ATTR, SEED_ATTR

RERUN, CLAIM, FAILED = "rerun:", "claim:", "rerun_failed:"
FRESH_OFFSET = 1  # confirmation seeds: seed + 1, seed + 2, ... (never the seed the search selected with)


def key(seed: int, arch: str, prefix: str = RERUN) -> str:
    return f"{prefix}{seed}:{arch}"


def study_seed(study: optuna.Study) -> int:
    return study_attr(study, SEED_ATTR, int, 0, SEED.bounds)


def fresh_seeds(study: optuna.Study, k: int) -> list[int]:
    """The K confirmation seeds: after the study's own seed, never it (the front was selected on it,
    so its accuracies there are biased upwards: the winner's curse)."""
    base = study_seed(study)
    return [base + FRESH_OFFSET + i for i in range(k)]


def noise_seed_list(study: optuna.Study, r: int | None = None) -> list[int]:
    """The baseline's seeds for the noise floor: the study's seed (the baseline trial itself) and the
    next r - 1. They coincide with the first confirmation seeds, so the baseline is trained once."""
    r = study_attr(study, NOISE_SEEDS_ATTR, int, 1, NOISE_SEEDS.bounds) if r is None else r
    base = study_seed(study)
    return [base + i for i in range(r)]


def reruns(study: optuna.Study) -> dict[str, dict[int, list[float]]]:
    """architecture -> seed -> validation curve, for every stored re-run; a StudyDataError names an
    attribute that is not one (edited by hand or by another tool)."""
    out: dict[str, dict[int, list[float]]] = {}
    for k, v in study.user_attrs.items():
        if k.startswith(RERUN):
            seed, arch = _seed_arch(study, k, RERUN)
            curve = v if isinstance(v, list) else None
            if not curve or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in curve):
                raise StudyDataError(
                    f"study {study.study_name!r}: attribute {k!r} is {str(v)[:80]!r}; expected a list of accuracies "
                    "(the storage was changed by hand or by another tool)"
                )
            out.setdefault(arch, {})[seed] = [float(x) for x in curve]
    return out


def failed_reruns(study: optuna.Study) -> dict[str, dict[int, str]]:
    """architecture -> seed -> why its re-run failed, for failures not trained since (they are tried
    again by the next process that asks for the run)."""
    out: dict[str, dict[int, str]] = {}
    for k, v in study.user_attrs.items():
        if k.startswith(FAILED) and v:
            seed, arch = _seed_arch(study, k, FAILED)
            out.setdefault(arch, {})[seed] = str(v.get("reason") if isinstance(v, dict) else v)
    return out


def _seed_arch(study: optuna.Study, k: str, prefix: str) -> tuple[int, str]:
    seed, _, arch = k[len(prefix) :].partition(":")
    if not seed.isdigit() or not arch:
        raise StudyDataError(
            f"study {study.study_name!r}: attribute {k!r} is not {prefix}<seed>:<architecture> "
            "(the storage was changed by hand or by another tool)"
        )
    return int(seed), arch


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    return next(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if TrialInfo.of(t).baseline),
        None,
    )


@dataclass(frozen=True)
class Noise:
    """The seed-to-seed spread of the baseline's accuracy, per epoch."""

    seeds: tuple[int, ...]
    sd: tuple[float, ...]

    def at(self, epoch: int) -> float:
        """The sd at ``epoch`` (1-based); 0 where unknown."""
        if 1 <= epoch <= len(self.sd) and not math.isnan(self.sd[epoch - 1]):
            return self.sd[epoch - 1]
        return 0.0

    @property
    def final(self) -> float:
        return self.at(len(self.sd))

    def __str__(self) -> str:
        return f"noise: sd {100 * self.final:.1f} points over {len(self.seeds)} seeds"


def noise_curves(study: optuna.Study) -> tuple[list[int], list[list[float]]]:
    trial = baseline_trial(study)
    base = None if trial is None else TrialInfo.of(trial)
    if base is None or not base.curve:
        return [], []
    stored = reruns(study).get(base.arch, {})
    seeds, curves = [study_seed(study)], [list(base.curve)]
    for s in noise_seed_list(study)[1:]:
        if s in stored:
            seeds.append(s)
            curves.append(stored[s])
    return seeds, curves


def noise_of(study: optuna.Study) -> Noise | None:
    """The noise floor measured so far (None until the baseline has two seeds)."""
    seeds, curves = noise_curves(study)
    if len(curves) < 2:
        return None
    return Noise(tuple(seeds), tuple(seed_sd(curves)))


# ----------------------------------------------------------------------------------------------------
# Confirmation of the front
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One architecture as the report shows it: the search's single run, and where confirmed, its
    accuracy over the fresh seeds and its paired difference to the baseline."""

    number: int
    arch: str
    search_accuracy: float
    latency: float
    latency_low: float
    latency_high: float
    params: int
    flops: int
    baseline: bool
    accuracies: tuple[float, ...] = ()
    accuracy: Estimate | None = None  # over the confirmation seeds
    difference: Estimate | None = None  # paired, member - baseline, over the same seeds
    verdict: str = ""
    on_front: bool = True  # after confirmation: non-dominated on (mean accuracy, second objective)
    second: float = math.nan  # the study's second objective (latency unless params or flops)
    seeds: tuple[int, ...] = ()  # the confirmation seeds behind ``accuracies``
    latency_diff: tuple[float, float, float] | None = None  # member - baseline in ms: (median, low, high)
    remeasured: bool = False  # latency measured again by the report, beside the baseline
    unconfirmed: Estimate | None = None  # single-run difference to the baseline with the noise floor's interval

    @property
    def shown_accuracy(self) -> float:
        return self.accuracy.mean if self.accuracy is not None else self.search_accuracy


NOT_PAIRED = "not confirmed: fewer than 2 seeds shared with the baseline"


def family_level(comparisons: int, level: float = 0.95) -> float:
    """Bonferroni: each of ``comparisons`` differences is judged at 1 - (1 - level) / comparisons, so the
    chance that any member tied with the baseline is called better or worse stays under 1 - level."""
    return 1 - (1 - level) / max(1, comparisons)


def judge(study: optuna.Study, members: Sequence[Member], k: int) -> list[Member]:
    """Fill in the confirmed accuracy, the paired difference to the baseline and the verdict of each
    member, from the stored re-runs at the first K fresh seeds (only seeds that both the member and
    the baseline have count, so every difference is paired); then mark which members stay on the
    front recomputed on mean accuracy."""
    from dataclasses import replace

    runs = reruns(study)
    base = baseline_trial(study)
    base_runs = runs.get(TrialInfo.of(base).arch, {}) if base else {}
    seeds = fresh_seeds(study, k)
    level = family_level(sum(1 for m in members if not m.baseline))
    out = []
    for m in members:
        mine = runs.get(m.arch, {})
        have = [s for s in seeds if s in mine]
        if not have:
            out.append(m)
            continue
        accs = tuple(mine[s][-1] for s in have)
        paired = [s for s in have if s in base_runs]
        diff = None
        if not m.baseline and len(paired) >= 2:
            diff = paired_difference(
                [mine[s][-1] for s in paired], [base_runs[s][-1] for s in paired], level, sd_floor=resolution(study)
            )
        out.append(
            replace(
                m,
                accuracies=accs,
                accuracy=mean_interval(accs, sd_floor=resolution(study)),
                difference=diff,
                seeds=tuple(have),
                verdict="" if m.baseline else (verdict(diff) if diff is not None else NOT_PAIRED),
            )
        )
    points = [(m.shown_accuracy, m.latency if math.isnan(m.second) else m.second) for m in out]
    ranks = nondominated_ranks(points)
    return [replace(m, on_front=ranks[i] == 0) for i, m in enumerate(out)]


def resolution(study: optuna.Study) -> float:
    """One validation image's share of accuracy (0 where the study does not record its split)."""
    n = study.user_attrs.get("val_size")
    return 1.0 / n if isinstance(n, int) and n > 0 else 0.0


def unconfirmed_difference(
    member_acc: float, base_acc: float, noise: Noise | None, floor: float = 0.0
) -> Estimate | None:
    """The difference of two single runs (same seed), with the interval a difference of two runs has
    when each carries the baseline's seed-to-seed sd: +-t * sqrt(2) * sd, t over the noise seeds."""
    if noise is None:
        return None
    from nas.core.stats import t_quantile

    d = member_acc - base_acc
    sd = math.sqrt(2) * max(noise.final, floor)
    half = t_quantile(0.975, len(noise.seeds) - 1) * sd
    return Estimate(d, d - half, d + half, len(noise.seeds), sd)
