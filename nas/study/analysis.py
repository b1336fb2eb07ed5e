"""What a finished (or running) study says about its front: the members and the baseline with every
figure's uncertainty (latency re-measured interleaved where asked; the confirmation's means, paired
differences and verdicts), the noise floor, the headline verdict, the hypervolume and the run's timing.
``nas report``, ``nas export`` and the search's last lines read it; nothing here trains.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.core.errors import BadOption, UserError
from nas.core.pareto import hypervolume
from nas.core.racing import Race, RaceState
from nas.core.stats import BETTER, INCONCLUSIVE, LABELS
from nas.study import confirmation as cf
from nas.study.confirmation import Member, Noise
from nas.study.record import TrialInfo, study_attr
from nas.study.studies import front, num_classes_of, space_of

baseline_trial = cf.baseline_trial


def reference_point(study: optuna.Study) -> tuple[float, float]:
    """(accuracy 0, 1.1 x the largest latency of a complete feasible trial)."""
    lats = [t.values[1] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not lats:
        raise UserError(f"study {study.study_name!r} has no complete trial yet")
    return 0.0, 1.1 * max(lats)


def summary(study: optuna.Study) -> dict[str, Any]:
    ref = reference_point(study)
    pts = [(t.values[0], t.values[1]) for t in front(study)]
    return {"reference": ref, "hypervolume": hypervolume(pts, ref), **timing_summary(study)}


SLOW_AT = 1.25  # a trial this much slower per epoch than the study's median, at least, is flagged
SLOW_MIN_TRIALS = 5  # trials with timings needed before any is flagged


@dataclass(frozen=True)
class Slow:
    """A trial that trained slower than its study's others: ``times`` its seconds per epoch (at cost,
    ``TrialInfo.seconds_per_epoch_at_cost``) over their median; the threads it had."""

    number: int
    times: float
    threads: int | None


def slow_trials(infos: Sequence[TrialInfo]) -> list[Slow]:
    """The trials that trained slower than the study's trials by more than their spread: seconds per
    epoch at cost above the median by a factor of at least ``SLOW_AT`` and of 1 + 3 robust sds (1.4826
    x the median absolute deviation, relative to the median). Contention, not architecture: the cost of
    an architecture is divided out. Nothing is flagged before ``SLOW_MIN_TRIALS`` trials have timings."""
    timed = [(i, x) for i in infos if (x := i.seconds_per_epoch_at_cost) is not None]
    if len(timed) < SLOW_MIN_TRIALS:
        return []
    median = statistics.median(x for _, x in timed)
    spread = 1.4826 * statistics.median(abs(x - median) for _, x in timed) / median
    bar = max(SLOW_AT, 1 + 3 * spread)
    return [Slow(i.number, x / median, i.threads) for i, x in timed if x > bar * median]


def slow_line(slow: Sequence[Slow]) -> str:
    """The trials that trained slower than the study's others (``slow_trials``), in one line."""
    shown = ", ".join(
        f"{s.number} ({s.times:.1f}x" + (f", {s.threads} thread(s))" if s.threads else ")") for s in slow[:10]
    )
    more = f" and {len(slow) - 10} more" if len(slow) > 10 else ""
    return (
        f"{len(slow)} trial(s) trained slower per epoch than the study's median, the cost of their architecture "
        f"divided out: {shown}{more}. Was the machine busy with other work? (nas search takes fewer threads when "
        "it sees other work; --threads fixes them)"
    )


def timing_summary(study: optuna.Study) -> dict[str, Any]:
    """Wall time from the first trial's start to the last one's end; epochs trained; and the per-trial
    overhead: the share of trained trials' time spent outside training and validation batches (model
    build, latency, Trainer setup, storage writes), pooled over trials."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return {"wall_s": 0.0, "epochs": 0, "overhead_pct": None, "slow": []}
    wall = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    trained = [(t, info) for t in trials if (info := TrialInfo.of(t)).seconds_train_val is not None]
    total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t, _ in trained)
    inside = sum(info.seconds_train_val or 0.0 for _, info in trained)
    epochs = sum(len(info.curve) for _, info in trained)
    return {
        "wall_s": wall,
        "epochs": epochs,
        "overhead_pct": 100 * (1 - inside / total) if total else None,
        "slow": slow_trials([info for _, info in trained]),
    }


# ----------------------------------------------------------------------------------------------------
# The front as the report shows it: every figure with its uncertainty
# ----------------------------------------------------------------------------------------------------


def _member(t: optuna.trial.FrozenTrial) -> Member:
    info = TrialInfo.of(t)
    lat = info.latency_ms if info.latency_ms is not None else float(t.values[1])
    lo, hi = info.latency_ci_ms or (lat, lat)
    return Member(
        t.number,
        info.arch or "?",
        float(t.values[0]),
        lat,
        lo,
        hi,
        info.params or 0,
        info.flops or 0,
        info.baseline,
        second=float(t.values[1]),
    )


def latency_objective(study: optuna.Study) -> bool:
    """The study's second objective is latency (its recorded objectives, else its metric names)."""
    names = study.metric_names
    default = ["accuracy", "latency" if not names or names[1:] == ["latency_ms"] else str(names[1])]
    return list(study_attr(study, "objectives", list, default))[1:] == ["latency"]


def shown_trials(study: optuna.Study, include: Sequence[int] = ()) -> list[optuna.trial.FrozenTrial]:
    """The trials the confirmation races (the front and those near it: ``race_trials``), the baseline
    (every figure is read against it) and the complete trials numbered in ``include``, each once."""
    trials = list(cf.race_trials(study))
    base = baseline_trial(study)
    extra = ([base] if base is not None else []) + [get_complete(study, n) for n in include]
    for t in extra:
        if all(t.number != s.number for s in trials):
            trials.append(t)
    return trials


def get_complete(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise BadOption("--include", number, f"a trial number of study {study.study_name!r} (0 to {len(trials) - 1})")
    t = trials[number]
    copy = TrialInfo.of(t).is_copy
    if t.state != TrialState.COMPLETE or copy:
        raise BadOption(
            "--include",
            number,
            f"a complete trial (trial {number} is {t.state.name.lower()}"
            + (", a copy of another" if copy else "")
            + ")",
        )
    return t


def remeasure(study: optuna.Study, members: Sequence[Member], space: Any) -> list[Member]:
    """Every shown architecture and the baseline timed again now, all in one interleaved run against
    the plain backbone, x the study's reference latency: figures that share the machine's state, and
    each member's difference to the baseline from ratios taken in the same rounds."""
    from nas.core.architecture import Architecture
    from nas.core.stats import median_interval
    from nas.measure.cost import REMEASURE_ROUNDS, LatencyTarget, PairedMeter
    from nas.study.latency import reference_latency_ms

    base = LatencyTarget.from_space(space.latency)
    target = replace(base, rounds=max(base.rounds, REMEASURE_ROUNDS))
    classes = num_classes_of(study, space)
    reference = space.task.build(space, space.baseline(), classes, init_seed=0)
    meter = PairedMeter(target, reference, space.in_chans)
    ref_ms = reference_latency_ms(study, target, str(space.baseline()), lambda: meter.reference_ms)
    objective = latency_objective(study)
    ratios = meter.ratios([space.task.build(space, Architecture.parse(m.arch), classes, init_seed=0) for m in members])
    base_i = next((i for i, m in enumerate(members) if m.baseline), None)
    out = []
    for m, r in zip(members, ratios, strict=True):
        lo, hi = r.interval
        diff = None
        if base_i is not None and not m.baseline:
            d = [(x - y) * ref_ms for x, y in zip(r.samples, ratios[base_i].samples, strict=True)]
            import statistics

            dlo, dhi = median_interval(d)
            diff = (statistics.median(d), dlo, dhi)
        out.append(
            replace(
                m,
                latency=r.median * ref_ms,
                latency_low=lo * ref_ms,
                latency_high=hi * ref_ms,
                latency_diff=diff,
                remeasured=True,
                second=r.median * ref_ms if objective else m.second,
            )
        )
    return out


@dataclass(frozen=True)
class Analysis:
    members: list[Member]  # the front's members and the baseline, fastest first
    noise: Noise | None
    confirm: int  # the race's ceiling: the most confirmation seeds a member may get (0: not confirmed)
    seeds: list[int]
    metric: str = "accuracy"  # the quality objective's name (a detector's: mAP50-95)
    failed: tuple[tuple[int, str, int, str], ...] = ()  # (trial, architecture, seed, why) of failed re-runs
    race: RaceState | None = None
    rules: Race | None = None
    split: str = "validation"  # what the confirmed figures were measured on (nas.study.confirmation.finals)

    @property
    def baseline(self) -> Member | None:
        return next((m for m in self.members if m.baseline), None)

    @property
    def confirmed(self) -> bool:
        """Some member other than the baseline has a paired difference (the baseline's noise-floor
        runs alone confirm nothing)."""
        return any(m.difference is not None for m in self.members if not m.baseline)

    @property
    def seeds_text(self) -> str:
        """How many fresh seeds the confirmed members trained: "3", or "3 to 6" after a race."""
        n = sorted({m.difference.n for m in self.members if m.difference is not None})
        return "" if not n else str(n[0]) if len(n) == 1 else f"{n[0]} to {n[-1]}"

    def headline(self) -> str:
        """The report's first line: the verdict, never stronger than the evidence."""
        if self.baseline is None:
            return "No baseline trial: the differences cannot be judged (a stage of the space has no 'none')."
        others = [m for m in self.members if not m.baseline]
        if not others:
            return "The front holds the baseline alone: no attention placement found that is faster or more accurate."
        if not self.confirmed:
            noise = str(self.noise) if self.noise else "noise not measured"
            return (
                f"Not confirmed: every {self.metric} is one training run ({noise}); no member is called better than "
                "the baseline before 'nas report --confirm 3' re-trains the front from fresh seeds."
            )
        better = [m for m in others if m.verdict == BETTER]
        judged = [m for m in others if m.difference is not None]
        counts = ", ".join(
            f"{sum(m.verdict == v for m in judged)} {name}"
            for v, name in zip(LABELS, ("better", "worse", "equivalent", "inconclusive"), strict=True)
        )
        over = self.seeds_text
        how = self.method()
        pending = [m.number for m in others if m.difference is None]
        tail = f" Not confirmed yet: trial(s) {', '.join(map(str, pending))}." if pending else ""
        lead = (
            f"Better than the baseline in {self.metric}: "
            + ", ".join(f"trial {m.number} ({points_text(m.difference)})" for m in better)
            + "."
            if better
            else f"No front member is better than the baseline in {self.metric}."
        )
        return f"{lead} Confirmed over {over} fresh seeds: {counts} ({how}).{self.settle_text()}{tail}"

    def method(self) -> str:
        """How the labels were reached, in words."""
        parts = [f"judged on the {self.split} split"]
        judged = sum(1 for m in self.members if not m.baseline and m.difference is not None)
        parts.append("Dunnett-adjusted 95% intervals" + (f" for {judged} members" if judged > 1 else ""))
        if self.race is not None and self.race.pooled is not None:
            parts.append(f"pooled noise sd {100 * self.race.pooled.sd:.2f} points on {self.race.pooled.dof} df")
        if self.race is not None and self.race.looks > 1:
            parts.append(f"error spent by halves over {self.race.looks} looks")
        if self.rules is not None:
            parts.append(f"equivalent: inside ±{100 * self.rules.delta:.2g} points")
        return "; ".join(parts)

    def settle_text(self) -> str:
        """What more seeds would likely settle, for the members still inconclusive."""
        if self.race is None or self.rules is None or self.race.pooled is None:
            return ""
        open_ = [m for m in self.members if not m.baseline and m.verdict == INCONCLUSIVE and m.difference is not None]
        if not open_:
            return ""
        family = sum(1 for m in self.members if not m.baseline)
        needs = []
        for m in open_:
            o = self.race.outcomes.get(m.arch)
            n = self.rules.seeds_to_settle(o, family, self.race.pooled.dof) if o is not None else None
            needs.append(f"trial {m.number}: " + (f"about {n} seeds" if n else "no number (it sits at the margin)"))
        if self.race.wanted:
            left = len(self.race.wanted)
            return f" The race is not finished ({left} run(s) to train: nas report --confirm {self.confirm})."
        more = " ..." if len(needs) > 5 else ""
        return " Would likely settle the inconclusive: " + "; ".join(needs[:5]) + more + "."


def points_text(e: Any) -> str:
    if e is None:
        return "-"
    if e.n < 2 or math.isnan(e.half_width):
        return f"{100 * e.mean:+.1f} pts"
    return f"{100 * e.mean:+.1f} ± {100 * e.half_width:.1f} pts"


def analyse(
    study: optuna.Study,
    *,
    confirm: int = 0,
    measure_again: bool = True,
    status: Callable[[str], None] = lambda s: None,
    include: Sequence[int] = (),
) -> Analysis:
    """The front and the baseline (and the trials in ``include``), re-measured (``measure_again``) and
    judged on the confirmation re-runs stored at ``confirm`` fresh seeds (default: the confirmation the
    search ran)."""
    space = space_of(study)
    trials = shown_trials(study, include)
    members = [_member(t) for t in trials]
    noise = cf.noise_of(study)
    race = cf.race_of(study, space.training if space is not None else None, confirm)
    base = next((m for m in members if m.baseline), None)
    if base is not None:
        members = [
            m
            if m.baseline
            else replace(
                m,
                unconfirmed=cf.unconfirmed_difference(
                    m.search_accuracy, base.search_accuracy, noise, cf.resolution(study)
                ),
            )
            for m in members
        ]
    if measure_again and space is not None:
        status("re-measuring latency of the front and the baseline, interleaved")
        members = remeasure(study, members, space)
    state, split = None, cf.VALIDATION
    if race is not None:
        members, state, split = cf.judge(study, members, race)  # the front recomputed on confirmed figures only
    members.sort(key=lambda m: m.latency)
    metric = (study.metric_names or ["accuracy"])[0]
    failed = cf.failed_reruns(study)
    lost = tuple((m.number, m.arch, seed, why) for m in members for seed, why in sorted(failed.get(m.arch, {}).items()))
    k = race.ceiling if race is not None else 0
    return Analysis(members, noise, k, cf.fresh_seeds(study, k) if k else [], metric, lost, state, race, split)


def verdict_text(m: Member) -> str:
    if m.baseline:
        return "baseline"
    if m.verdict:
        return m.verdict
    u = m.unconfirmed
    if u is None:
        return "not confirmed; noise not measured"
    if u.low <= 0 <= u.high:
        return "tie: within noise (not confirmed)"
    return ("ahead" if u.low > 0 else "behind") + " beyond noise, not confirmed"
