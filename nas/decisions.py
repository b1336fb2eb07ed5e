"""``nas bench decisions``: how often the search's answer is right, measured by replaying its whole
decision pipeline many times without training.

A replay is one search on a world whose truth is known: the trials arrive in a random order (the
baseline first, every architecture once, as ``--sampler bruteforce`` runs them), each shows its curve at
the study's seed, the baseline's noise floor is measured from ``noise_seeds`` seeds, multi-objective
successive halving prunes within that noise, the front of the completed trials is confirmed from fresh
seeds, every member is labelled, and the "best" is chosen as ``nas export best`` chooses it. Two
confirmation rules run on the same draws (common random numbers), side by side:

- ``today``: the rule before racing: K seeds, each member's paired t-interval on K - 1 degrees of
  freedom, Bonferroni over the members; better / tied / worse; best = most accurate on the front of means.
- ``race``: ``nas.core.racing.Race``: pooled noise, Dunnett, looks spending alpha by halves, up to 2K
  seeds for the members still inconclusive (with ``near`` > 0 also the complete trials within ``near``
  paired noise sds of the front, as ``training.confirm_near``); four labels; best = most accurate on
  the front of the confirmed means.

Worlds:

- ``recording``: the recorded curves themselves; the search seed is drawn among the recorded seeds and
  the others are the only fresh ones, so K is the number of recorded seeds less one and no race can go
  past it. Its truth is unknown; its architecture effect is not detectable (``nas bench variance``), so
  any "better" counts as false.
- ``null`` and ``planted``: simulated on the recording's measured noise (per epoch: the shared seed
  effect's sd and one run's residual sd, from the two-way table of the recorded curves; evaluation
  noise on the validation images is part of that residual). Every architecture's true curve is the
  recording's grand mean curve; ``planted`` adds +1, +2 and +3 paired sd (sqrt 2 x the residual sd at the
  last epoch) to three architectures drawn per replay and -5 to a fourth, growing linearly over the
  epochs. The latencies are the recording's.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.core.config import CONFIRM_NEAR
from nas.core.config import EQUIVALENCE as EQUIVALENCE_SETTING
from nas.core.errors import BadOption
from nas.core.pareto import near_front, pareto_front
from nas.core.racing import Race, near_quota
from nas.core.stats import BETTER, EQUIVALENCE, WORSE, mean_interval, pooled_residual, seed_sd, t_quantile
from nas.search import Recorded, replay_moasha, replay_none

PLANTED = (1.0, 2.0, 3.0, -5.0)  # effects in paired sd
WORLDS = ("recording", "null", "planted")


@dataclass(frozen=True)
class NoiseModel:
    """Per epoch: the sd of the seed's shared effect and of one run's own noise (the residual)."""

    seed_sd: tuple[float, ...]
    run_sd: tuple[float, ...]
    dof: int

    @property
    def paired_sd(self) -> float:
        """The sd of a difference of two architectures at the same seed, at the last epoch."""
        return math.sqrt(2) * self.run_sd[-1]


def noise_model(rows: Sequence[Recorded]) -> NoiseModel:
    """The noise structure of a recording with paired seeds (every architecture at the same seeds)."""
    paired = [r for r in rows if r.seed_curves and len(r.seed_curves) == len(rows[0].seed_curves)]
    if len(paired) < 2 or not paired[0].seed_curves:
        raise BadOption("--curves", "a recording", "one with 2 or more architectures at 2 or more paired seeds")
    epochs = min(len(c) for r in paired for c in (r.curve, *r.seed_curves))
    seeds_, runs, dof = [], [], 0
    for e in range(epochs):
        table = {r.arch: {j: c[e] for j, c in enumerate((r.curve, *r.seed_curves))} for r in paired}
        pooled = pooled_residual(table)
        resid = pooled.sd if pooled else 0.0
        cols = [statistics.fmean(row[j] for row in table.values()) for j in range(len(paired[0].seed_curves) + 1)]
        shared = max(0.0, statistics.variance(cols) - resid**2 / len(paired))
        seeds_.append(math.sqrt(shared))
        runs.append(resid)
        dof = pooled.dof if pooled else 0
    return NoiseModel(tuple(seeds_), tuple(runs), dof)


@dataclass
class World:
    """Architectures with latencies and a way to produce the curve of (architecture, seed)."""

    name: str
    rows: list[Recorded]
    baseline: int
    truth: list[float]  # true final figure per architecture (nan: unknown)
    effects: dict[int, float] = field(default_factory=dict)  # planted, in paired sd
    noise: NoiseModel | None = None
    mean: list[list[float]] = field(default_factory=list)
    seeds: int = 10_000  # fresh seeds available after the search's own
    key: int = 0
    search_seed: int = 0  # recording: which recorded seed the search saw

    def curve(self, arch: int, seed: int) -> list[float]:
        """``seed`` 0: the search's own; 1, 2, ...: fresh ones."""
        if self.noise is None:
            r = self.rows[arch]
            runs = (r.curve, *r.seed_curves)
            order = [self.search_seed] + [j for j in range(len(runs)) if j != self.search_seed]
            return list(runs[order[seed]])
        shared = np.random.default_rng([self.key, seed, 0]).standard_normal()
        own = np.random.default_rng([self.key, seed, 1, arch]).standard_normal()
        n = self.noise
        return [m + n.seed_sd[e] * shared + n.run_sd[e] * own for e, m in enumerate(self.mean[arch])]


def worlds(rows: list[Recorded], kind: str, replay: int) -> World:
    """World number ``replay`` of ``kind`` (the same number gives the same world)."""
    base = next((i for i, r in enumerate(rows) if r.baseline), None)
    if base is None:
        raise BadOption("--curves", "a recording without its baseline", "one whose baseline is recorded")
    rng = np.random.default_rng([replay, WORLDS.index(kind)])
    if kind == "recording":
        k = len(rows[base].seed_curves) + 1
        return World(kind, rows, base, [math.nan] * len(rows), seeds=k - 1, search_seed=int(rng.integers(k)))
    noise = noise_model(rows)
    epochs = len(noise.run_sd)
    grand = [statistics.fmean(c[e] for r in rows for c in (r.curve, *r.seed_curves)) for e in range(epochs)]
    mean = [list(grand) for _ in rows]
    effects: dict[int, float] = {}
    if kind == "planted":
        others = [i for i in range(len(rows)) if i != base]
        for i, eff in zip(rng.choice(others, size=len(PLANTED), replace=False), PLANTED, strict=True):
            effects[int(i)] = eff
            mean[int(i)] = [g + eff * noise.paired_sd * (e + 1) / epochs for e, g in enumerate(grand)]
    truth = [m[-1] for m in mean]
    return World(kind, rows, base, truth, effects, noise, mean, key=replay * 7919 + WORLDS.index(kind))


# ----------------------------------------------------------------------------------------------------
# One replay
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdicts:
    labels: dict[int, str]  # architecture -> label
    trainings: int
    best: int  # the exported architecture


def today_rule(world: World, members: list[int], k: int, noise_seeds: int) -> Verdicts:
    """The confirmation before racing: K fresh seeds, paired t on K - 1 df, Bonferroni over members (the
    baseline confirmed even when alone, as that rule did)."""
    base = world.baseline
    finals = {a: [world.curve(a, s)[-1] for s in range(1, k + 1)] for a in [base, *members]}
    level = 1 - (1 - 0.95) / max(1, len(members))
    labels = {}
    for m in members:
        d = mean_interval([x - y for x, y in zip(finals[m], finals[base], strict=True)], level)
        labels[m] = BETTER if d.low > 0 else WORSE if d.high < 0 else "tied"
    means = {a: statistics.fmean(v) for a, v in finals.items()}
    cand = [base, *members]
    front = [cand[i] for i in pareto_front([(means[a], world.rows[a].latency) for a in cand])]
    best = max(front, key=lambda a: (means[a], -world.rows[a].latency))
    return Verdicts(labels, (len(members) + 1) * k - _floor_runs(k, noise_seeds), best)


def _floor_runs(seeds: int, noise_seeds: int) -> int:
    """The baseline's runs among the first ``seeds`` fresh ones that its noise floor already trained."""
    return min(seeds, noise_seeds - 1)


def race_rule(world: World, members: list[int], k: int, ceiling: int, delta: float, noise_seeds: int) -> Verdicts:
    """The racing confirmation, trained look by look as the search trains it (nothing when the front
    holds the baseline alone)."""
    base = world.baseline
    if not members:
        return Verdicts({}, 0, base)
    race = Race(k, ceiling, delta=delta)
    have: dict[str, dict[int, float]] = {str(a): {} for a in [base, *members]}
    seeds = list(range(1, ceiling + 1))
    while (state := race.run([str(m) for m in members], str(base), have, seeds)).wanted:
        for a, s in state.wanted:
            have[a][s] = world.curve(int(a), s)[-1]
    labels = {m: state.outcomes[str(m)].label for m in members}
    cand = [base, *members]
    means = {a: statistics.fmean(have[str(a)].values()) for a in cand}
    front = [cand[i] for i in pareto_front([(means[a], world.rows[a].latency) for a in cand])]
    best = max(front, key=lambda a: (means[a], -world.rows[a].latency))
    return Verdicts(labels, sum(len(v) for v in have.values()) - _floor_runs(len(have[str(base)]), noise_seeds), best)


@dataclass(frozen=True)
class Replay:
    world: World
    completed: set[int]
    members: list[int]
    today: Verdicts
    race: Verdicts
    raced: list[int] = field(default_factory=list)  # the race's members: the front and those near it


def search_view(w: World, number: int, noise_seeds: int) -> tuple[list[Recorded], list[float]]:
    """What a live search on ``w`` sees: every architecture once at the study's seed, the baseline first
    and the rest in a random order (``number``'s), and the noise floor per epoch from the baseline's
    first ``noise_seeds`` seeds."""
    shuffled = np.random.default_rng([number, 99]).permutation(len(w.rows))
    order = [w.baseline] + [int(i) for i in shuffled if i != w.baseline]
    shown = [
        Recorded(i, r.arch, tuple(w.curve(i, 0)), r.latency, r.baseline, r.latency_ci)
        for i, r in ((i, w.rows[i]) for i in order)
    ]
    floor = seed_sd([w.curve(w.baseline, s) for s in range(min(noise_seeds, w.seeds + 1))])
    return shown, [0.0 if v != v else v for v in floor]


def planted_stops(rows: list[Recorded], methods: Sequence[Callable[..., Any]], worlds_: int = 100) -> list[dict]:
    """For each pruning method (``(shown rows, noise floor) -> ReplayResult``), how often it stopped
    each planted winner over ``worlds_`` simulated planted studies (``nas bench pruning``'s column)."""
    out: list[dict[float, int]] = [dict.fromkeys((e for e in PLANTED if e > 0), 0) for _ in methods]
    for i in range(worlds_):
        w = worlds(rows, "planted", i)
        shown, noise = search_view(w, i, 3)
        for j, method in enumerate(methods):
            completed = {r.number for r in method(shown, noise).completed}
            for a, e in w.effects.items():
                if e > 0:
                    out[j][e] += a not in completed
    return [{e: n / worlds_ for e, n in counts.items()} for counts in out]


def replay(
    rows: list[Recorded],
    kind: str,
    number: int,
    *,
    confirm: int,
    noise_seeds: int,
    eta: int,
    delta: float,
    near: float = 0.0,
) -> Replay:
    """One search on world ``number`` of ``kind``: order, noise floor, pruning, front, both rules (the
    race also takes the complete trials within ``near`` paired noise sds of the front)."""
    w = worlds(rows, kind, number)
    k = min(confirm, w.seeds)
    shown, noise = search_view(w, number, noise_seeds)
    done = replay_moasha(shown, eta, noise) if eta else replay_none(shown)
    completed = {r.number for r in done.completed}
    pts = [(r.curve[-1], r.latency) for r in done.completed]
    front = [done.completed[i].number for i in pareto_front(pts)]
    members = [a for a in front if a != w.baseline]
    today = today_rule(w, members, k, noise_seeds)
    ceiling = k if kind == "recording" else 2 * k
    margin = near * math.sqrt(2) * noise[-1] if noise else 0.0
    raced = members + [done.completed[i].number for i in near_front(pts, margin, near_quota(len(members)))]
    race = race_rule(w, [a for a in raced if a != w.baseline], k, ceiling, delta, noise_seeds)
    return Replay(w, completed, members, today, race, raced)


# ----------------------------------------------------------------------------------------------------
# Many replays
# ----------------------------------------------------------------------------------------------------


def summarise(replays: Sequence[Replay], rule: str) -> dict[str, Any]:
    """Rates over replays for one rule: family-wise false "better" (a replay in which any architecture
    without a positive effect was called better), power per planted effect (called better, or worse for
    a negative one, over all replays: a planted architecture pruned or off the front counts as missed),
    trainings, regret of the exported best (true figure of the best architecture less the exported's, in
    points), and how often pruning stopped a planted winner."""
    n = len(replays)
    false_better = sum(
        any(lab == BETTER and r.world.effects.get(a, 0.0) <= 0 for a, lab in getattr(r, rule).labels.items())
        for r in replays
    )
    out: dict[str, Any] = {"rule": rule, "replays": n, "false_better": false_better / n}
    out["false_better_ci"] = _wilson(false_better, n)
    for eff in PLANTED:
        hits = stopped = judged = 0
        for r in replays:
            a = next((a for a, e in r.world.effects.items() if e == eff), None)
            if a is None:
                continue
            want = BETTER if eff > 0 else WORSE
            hits += getattr(r, rule).labels.get(a) == want
            stopped += a not in r.completed
            judged += a in (r.raced if rule == "race" else r.members)
        present = sum(1 for r in replays if eff in r.world.effects.values())
        out[f"power_{eff:+g}"] = hits / present if present else None
        out[f"confirm_power_{eff:+g}"] = hits / judged if judged else None  # among replays that confirmed it
        out[f"judged_{eff:+g}"] = judged / present if present else None
        out[f"stopped_{eff:+g}"] = stopped / present if present else None
    spent = [getattr(r, rule).trainings for r in replays]
    out["trainings"] = statistics.fmean(spent)
    out["trainings_max"] = max(spent)
    regrets = [
        100 * (max(r.world.truth) - r.world.truth[getattr(r, rule).best])
        for r in replays
        if not math.isnan(r.world.truth[0])
    ]
    out["regret"] = statistics.fmean(regrets) if regrets else None
    out["regret_sd"] = statistics.stdev(regrets) if len(regrets) > 1 else None
    return out


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate k / n."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def bench_decisions(
    rows: list[Recorded],
    replays: int = 200,
    *,
    kinds: Sequence[str] = WORLDS,
    confirm: int = 3,
    noise_seeds: int = 3,
    eta: int = 3,
    delta: float = EQUIVALENCE,
    near: float = 0.0,
    status: Callable[[str], None] = lambda s: None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every world kind replayed ``replays`` times under both rules; the rows of the table and facts
    about the run (the noise model, seconds per hundred replays)."""
    if not 1 <= replays <= 100_000:
        raise BadOption("--replays", replays, "an integer from 1 to 100,000")
    if confirm < 2:
        raise BadOption("--confirm", confirm, "an integer >= 2")
    # the bounds of the space settings these options stand for (training.equivalence, training.confirm_near)
    options = ("--equivalence", EQUIVALENCE_SETTING, 100 * delta, "points"), ("--near", CONFIRM_NEAR, near, "noise sds")
    for option, setting, given, unit in options:
        allowed = setting.violation(given)
        if allowed is not None:
            raise BadOption(option, given, f"{allowed} ({unit})")
    bad = [k for k in kinds if k not in WORLDS]
    if bad:
        raise BadOption("--worlds", ",".join(bad), f"some of {', '.join(WORLDS)}")
    noise = noise_model(rows)
    out, started = [], time.perf_counter()
    for kind in kinds:
        done = []
        for i in range(replays):
            if i % 20 == 0:
                status(f"{kind}: replay {i + 1} of {replays}")
            done.append(
                replay(rows, kind, i, confirm=confirm, noise_seeds=noise_seeds, eta=eta, delta=delta, near=near)
            )
        for rule in ("today", "race"):
            out.append(
                {"world": kind, **summarise(done, rule), "members": statistics.fmean(len(r.members) for r in done)}
            )
    seconds = time.perf_counter() - started
    facts = {
        "seed_sd_pts": 100 * noise.seed_sd[-1],
        "run_sd_pts": 100 * noise.run_sd[-1],
        "paired_sd_pts": 100 * noise.paired_sd,
        "dof": noise.dof,
        "seconds_per_100": 100 * seconds / (replays * len(kinds)),
        "t_today": t_quantile(0.975, confirm - 1),
        "near": near,
    }
    return out, facts
