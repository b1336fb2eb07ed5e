"""What a study's re-runs say: the noise floor (the baseline trained from ``training.noise_seeds`` seeds,
its seed-to-seed spread of the quality at every epoch, which pruning and the report use) and the
confirmation of the front (its members and the baseline re-trained from K fresh seeds, the same for all:
paired; each member's mean with its interval, its paired difference to the baseline with its interval,
and a verdict that calls it better only when that interval excludes 0).

Every re-run is one study user attribute ``rerun:<seed>:<architecture>`` holding its curve (a
confirmation's: its validation after the last epoch alone, the one figure it is judged on where the data
has no held-out split); a failed one
``rerun_failed:<seed>:<architecture>`` with its reason; a run being trained ``claim:<seed>:<architecture>``
(the search's re-runs write them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.core.config import NOISE_SEEDS, SEED
from nas.core.pareto import pareto_front
from nas.core.racing import Race, RaceState, near_quota
from nas.core.stats import EQUIVALENCE, Estimate, mean_interval, seed_sd
from nas.study.record import StudyDataError, TrialInfo, study_attr
from nas.study.studies import NOISE_SEEDS_ATTR, SEED_ATTR

RERUN, CLAIM, FAILED, HELDOUT = "rerun:", "claim:", "rerun_failed:", "heldout:"
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


def epochs_of(study: optuna.Study) -> int | None:
    """The epochs every trial and re-run of the study trains: recorded when its search started, else
    (a study made before the record) its recorded space's, as ``nas report --confirm`` trains them."""
    recorded = study_attr(study, "epochs", int, None, (1, 1_000_000))
    if recorded is not None:
        return recorded
    from nas.study.studies import space_of

    space = space_of(study)
    return space.training.epochs if space is not None else None


def every_epoch(curve: Sequence[float], epochs: int | None) -> bool:
    """Whether a re-run's stored curve was validated after every epoch (the noise floor's, a
    recording's), not after the last one only (a confirmation's, judged on its final figure)."""
    return epochs is None or len(curve) >= epochs


def per_epoch_reruns(study: optuna.Study) -> dict[str, dict[int, list[float]]]:
    """``reruns`` validated after every epoch: what the noise floor and recordings read per epoch."""
    epochs = epochs_of(study)
    return {a: {s: c for s, c in row.items() if every_epoch(c, epochs)} for a, row in reruns(study).items()}


def noise_curves(study: optuna.Study) -> tuple[list[int], list[list[float]]]:
    trial = baseline_trial(study)
    base = None if trial is None else TrialInfo.of(trial)
    if base is None or not base.curve:
        return [], []
    stored = per_epoch_reruns(study).get(base.arch, {})
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
    p_positive: float = math.nan  # P(difference > 0) at the look that judged it
    trainings: int = 0  # confirmation runs this member has spent

    @property
    def shown_accuracy(self) -> float:
        return self.accuracy.mean if self.accuracy is not None else self.search_accuracy


NOT_PAIRED = "not confirmed: fewer than 2 seeds shared with the baseline"
# {"batch": seeds per look, and "horizon": the ceiling futility looks ahead to, both fixed by the first
# confirmation; "ceiling": the most seeds asked since}
RACE_ATTR = "confirm_race"


def race_of(study: optuna.Study, training: Any, ceiling: int = 0) -> Race | None:
    """The study's race: batches of its first confirmation's size (stored), else of the space's
    ``confirm``, else of ``ceiling``; up to ``ceiling`` (``nas report --confirm N``), else the most any
    confirmation asked, else the space's ``confirm_max``. None when nothing asks for a confirmation. A
    ceiling that is not a multiple of the batch is a ``BadOption`` (the looks are fixed by the batch, so
    that looking again stays valid)."""
    from nas.core.errors import BadOption

    stored = _stored_race(study)
    confirm = training.confirm if training is not None else 0
    batch = stored.get("batch") or confirm or ceiling
    if not batch or batch < 2:
        return None
    own = training.race_ceiling if training is not None and confirm == batch else batch
    top = ceiling or max(own, stored.get("ceiling", 0))
    if top < batch or top % batch:
        raise BadOption(
            "--confirm",
            top,
            f"a multiple of {batch}: study {study.study_name!r} races its confirmation in batches of {batch} seeds",
        )
    equivalence = training.equivalence if training is not None else 100 * EQUIVALENCE
    return Race(batch, top, delta=equivalence / 100, horizon=min(stored.get("horizon", top), top))


def _stored_race(study: optuna.Study) -> dict[str, int]:
    """The study's record of its race (``RACE_ATTR``), only its whole-number entries."""
    stored = study.user_attrs.get(RACE_ATTR)
    stored = stored if isinstance(stored, dict) else {}
    return {k: v for k, v in stored.items() if isinstance(v, int) and not isinstance(v, bool)}


def record_race(study: optuna.Study, race: Race) -> None:
    """Record the race's batch (later looks keep its schedule) and the most seeds asked so far, before
    its runs are trained."""
    stored = _stored_race(study)
    new = {
        "batch": stored.get("batch", race.batch),
        "ceiling": max(race.ceiling, stored.get("ceiling", 0)),
        "horizon": stored.get("horizon", race.horizon or race.ceiling),
    }
    if study.user_attrs.get(RACE_ATTR) != new:
        study.set_user_attr(RACE_ATTR, new)


VALIDATION, TEST = "validation", "held-out test"
TEST_SIZE_ATTR = "test_size"  # images of the held-out split, recorded with the first held-out figure
Figures = dict[str, dict[int, float]]


def race_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials a confirmation races: the front and, with ``training.confirm_near: z`` (0: off, the
    default), up to half as many complete trials off it (the nearest first) whose single run is within z
    paired noise sds (sqrt 2 x the noise floor) of every trial that dominates it: one noisy run cannot put
    them behind. Off by default: ``nas bench decisions`` measured that at z = 1 they lower the regret a
    little for 1.9x to 2.7x today's trainings."""
    from nas.study.studies import front, near_front_trials, space_of

    members = front(study)
    space = space_of(study)
    near = space.training.confirm_near if space is not None else 0.0
    noise = noise_of(study) if near else None
    if noise is None or noise.final <= 0:
        return members
    others = sum(1 for t in members if not TrialInfo.of(t).baseline)
    return members + near_front_trials(study, near * math.sqrt(2) * noise.final, near_quota(others))


def finals(study: optuna.Study) -> tuple[dict[str, dict[int, float]], str]:
    """architecture -> seed -> the figure every stored re-run is judged on, and which split that is: the
    held-out split where every re-run has its figure there (the search selected on validation, so
    judging on it would reuse the images the front was chosen by); validation otherwise (runs stored
    before held-out figures were recorded, or data without a held-out split)."""
    runs = reruns(study)
    held: dict[str, dict[int, float]] = {}
    for k, v in study.user_attrs.items():
        if k.startswith(HELDOUT) and isinstance(v, (int, float)) and not isinstance(v, bool):
            seed, arch = _seed_arch(study, k, HELDOUT)
            held.setdefault(arch, {})[seed] = float(v)
    if runs and all(s in held.get(a, {}) for a, row in runs.items() for s in row):
        return {a: {s: held[a][s] for s in row} for a, row in runs.items()}, TEST
    return {a: {s: c[-1] for s, c in row.items()} for a, row in runs.items()}, VALIDATION


def race_state(study: optuna.Study, members: Sequence[str], race: Race) -> RaceState | None:
    """Where the race of ``members`` (architectures other than the baseline) stands on the stored runs."""
    return _race(study, members, race)[0]


def _race(study: optuna.Study, members: Sequence[str], race: Race) -> tuple[RaceState | None, Figures, str]:
    """The race's state, the figures it judged and their split (its floor: one image of that split)."""
    base = baseline_trial(study)
    figures, split = finals(study)
    if base is None:
        return None, figures, split
    arch = TrialInfo.of(base).arch
    others = list(dict.fromkeys(m for m in members if m != arch))
    race = replace(race, floor=resolution(study, split))
    return race.run(others, arch, figures, fresh_seeds(study, race.ceiling)), figures, split


def judge(study: optuna.Study, members: Sequence[Member], race: Race) -> tuple[list[Member], RaceState | None, str]:
    """Fill in each member's label from the race on the stored re-runs (``Race``: pooled noise, Dunnett
    intervals, alpha spent by halves over the looks), its accuracy over the seeds it raced on (on the
    split the race judged: ``finals``), and mark the front recomputed on confirmed figures only (a member
    without them is shown apart). Returns the members, the race's state and the split judged on."""
    state, figures, split = _race(study, [m.arch for m in members if not m.baseline], race)
    if state is None:
        return list(members), None, split
    floor = resolution(study, split)
    used = fresh_seeds(study, max(state.spent.values(), default=0))
    out = []
    for m in members:
        mine = figures.get(m.arch, {})
        o = None if m.baseline else state.outcomes.get(m.arch)
        if m.baseline:
            seeds = [s for s in used if s in mine]  # as many as the most raced member
        else:
            seeds = list(o.seeds) if o else []
        if not seeds:
            have = [s for s in fresh_seeds(study, race.ceiling) if s in mine]
            out.append(replace(m, verdict=NOT_PAIRED if have and not m.baseline else m.verdict))
            continue
        accs = tuple(mine[s] for s in seeds)
        out.append(
            replace(
                m,
                accuracies=accs,
                accuracy=mean_interval(accs, sd_floor=floor),
                difference=o.difference if o else None,
                seeds=tuple(seeds),
                verdict=o.label if o else "",
                p_positive=o.p_positive if o else math.nan,
                trainings=len(seeds),
            )
        )
    return mark_front(out), state, split


def mark_front(members: Sequence[Member]) -> list[Member]:
    """The front on confirmed figures only: non-dominated on mean accuracy and the second objective among
    the members with a confirmed accuracy and the baseline; a member without confirmed figures is off it
    (shown apart). Plain dominance on the means: ``nas bench decisions`` measured that asking a slower
    member to beat a faster one by the equivalence margin exported the baseline instead of small real
    gains (regret 0.28 against 0.035 points on the warm recording)."""
    judged = [i for i, m in enumerate(members) if m.accuracy is not None and (m.baseline or m.difference is not None)]
    points = [(members[i].accuracy.mean, _second(members[i])) for i in judged]
    on = {judged[k] for k in pareto_front(points)}
    return [replace(m, on_front=i in on) for i, m in enumerate(members)]


def _second(m: Member) -> float:
    return m.latency if math.isnan(m.second) else m.second


def resolution(study: optuna.Study, split: str = "validation") -> float:
    """One image's share of accuracy on ``split`` (0 where the study does not record that split's size)."""
    n = study.user_attrs.get("val_size" if split == VALIDATION else TEST_SIZE_ATTR)
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
