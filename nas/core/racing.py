"""Racing confirmation: a pure decision function from the runs stored so far to each member's label
and the runs to train next.

The members and the baseline are trained from the same fresh seeds, in batches of ``batch``; look l
judges every member still racing on the first ``batch * l`` seeds. At each look:

- the noise is the residual sd of every run at those seeds (``stats.pooled_residual``: architectures
  and seeds as the two factors, the seed's effect shared), so it rests on many more degrees of freedom
  than the baseline's few seeds;
- each member's paired difference to the baseline has a simultaneous interval, Dunnett's critical value
  for the whole family of members (``stats.dunnett_critical``), at the look's share of the error rate;
- a member whose interval says better, worse or equivalent (inside +-``delta``) stops; one still
  inconclusive gets the next batch of seeds, up to ``ceiling``, unless it is futile: even a difference
  one standard error further from 0 (or from the margin) than measured would not settle by the race's
  first ceiling (``horizon``).

Error control under repeated looks: alpha spending by halves, look l at alpha / 2^l (so any number of
looks spends at most alpha: the union bound over looks, each look's family covered by Dunnett). The
spending does not depend on the ceiling, so a race may be continued later (``nas report --confirm``)
with its earlier looks still counted: looking again stays valid. Chosen over confidence sequences
because the looks are few (a handful of batches) and fixed in advance by ``batch``, where spending
costs less width than an anytime-valid bound; chosen over Pocock or O'Brien-Fleming boundaries because
those need the number of looks fixed in advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from nas.core.stats import (
    EQUIVALENCE,
    INCONCLUSIVE,
    LEVEL,
    Estimate,
    Pooled,
    dunnett_critical,
    label,
    pooled_residual,
)

Runs = Mapping[str, Mapping[int, float]]  # architecture -> seed -> final figure


def near_quota(members: int) -> int:
    """How many complete trials near the front may join a race (``training.confirm_near``): half as many
    as the front has members other than the baseline, rounded up."""
    return (members + 1) // 2


@dataclass(frozen=True)
class Outcome:
    """One member's standing: its label, the paired difference to the baseline with the simultaneous
    interval of the look that decided it (or of the last look it raced in), the look, the seeds it was
    judged on, and P(difference > 0) under the t distribution of that look (a flat-prior reading)."""

    label: str
    difference: Estimate | None
    look: int
    seeds: tuple[int, ...]
    p_positive: float = math.nan
    critical: float = math.nan
    futile: bool = False  # stopped inconclusive: even an optimistic reading would not settle by the ceiling

    @property
    def decided(self) -> bool:
        return self.label != INCONCLUSIVE

    @property
    def done(self) -> bool:
        """No more seeds for this member: labelled, or stopped for futility."""
        return self.decided or self.futile


@dataclass(frozen=True)
class RaceState:
    """Where a race stands: every member's ``Outcome``, the runs it needs next (empty: finished, or
    waiting for nothing), the pooled noise of the last look, and the trainings each architecture has
    spent on it."""

    outcomes: dict[str, Outcome]
    wanted: list[tuple[str, int]]
    pooled: Pooled | None
    looks: int
    spent: dict[str, int] = field(default_factory=dict)


def look_alpha(look: int, alpha: float = 1 - LEVEL) -> float:
    """The error rate look ``look`` (1-based) may spend: alpha / 2^look, summing to alpha over any number."""
    return alpha / 2**look


@dataclass(frozen=True)
class Race:
    """``batch``: seeds per look (the space's ``confirm``); ``ceiling``: the most seeds any member gets
    (``confirm_max``, a multiple of ``batch``); ``delta``: the equivalence margin; ``floor``: the least
    sd to assume (one evaluation image's share); ``horizon``: the ceiling futility is judged against,
    fixed when the race first ran, so that continuing a race to a higher ceiling replays its earlier
    looks exactly (a member stopped for futility stays stopped; those still inconclusive go on)."""

    batch: int
    ceiling: int
    alpha: float = 1 - LEVEL
    delta: float = EQUIVALENCE
    floor: float = 0.0
    futility: bool = True
    horizon: int = 0  # the seeds futility looks ahead to: the race's first ceiling (0: this ceiling)

    def __post_init__(self) -> None:
        if self.batch < 2 or self.ceiling < self.batch or self.ceiling % self.batch:
            raise ValueError(
                f"a race needs batch >= 2 and a ceiling that is a multiple of it (got {self.batch}, {self.ceiling})"
            )

    def sizes(self) -> list[int]:
        return list(range(self.batch, self.ceiling + 1, self.batch))

    def run(self, members: Sequence[str], baseline: str, runs: Runs, seeds: Sequence[int]) -> RaceState:
        """Replay the looks on ``runs`` (every stored run of the study counts for the pooled noise; a
        member's own difference uses its runs at the look's seeds only). ``seeds``: the fresh seeds in
        order, at least ``ceiling`` of them. A member without the runs of a look waits for them there
        (``wanted``, with the baseline's runs it pairs with) while the others go on."""
        if len(seeds) < self.ceiling:
            raise ValueError(f"{len(seeds)} seeds given for a race up to {self.ceiling}")
        family = len(members)
        outcomes: dict[str, Outcome] = {}
        pending: set[str] = set()
        wanted: list[tuple[str, int]] = []
        pooled = None
        looks = 0
        for look, n in enumerate(self.sizes(), start=1):
            at = list(seeds[:n])
            racing = []
            for m in members:
                if m in pending or (m in outcomes and outcomes[m].done):  # waiting, or stopped at a look before
                    continue
                missing = [(a, s) for s in at for a in (baseline, m) if s not in runs.get(a, {})]
                if missing:  # this member waits for its runs; the others go on
                    pending.add(m)
                    wanted += missing
                else:
                    racing.append(m)
            if not racing:
                break
            looks = look
            pooled = pooled_residual({a: {s: v for s, v in row.items() if s in at} for a, row in runs.items()})
            crit = dunnett_critical(family, pooled.dof, look_alpha(look, self.alpha)) if pooled else math.nan
            for m in racing:
                o = self._judge(runs[m], runs[baseline], at, pooled, crit, look)
                if not o.decided and n < min(self.ceiling, self.horizon or self.ceiling) and self.futility and pooled:
                    o = replace(o, futile=self._futile(o, family, pooled.dof))
                outcomes[m] = o
        spent = self._spent(members, baseline, outcomes)
        order = _unique(sorted(wanted, key=lambda p: (p[1], p[0] != baseline)))  # seed by seed, the baseline first
        return RaceState(outcomes, order, pooled, looks, spent)

    def _judge(
        self,
        mine: Mapping[int, float],
        base: Mapping[int, float],
        at: list[int],
        pooled: Pooled | None,
        crit: float,
        look: int,
    ) -> Outcome:
        from scipy.stats import t

        diffs = [mine[s] - base[s] for s in at]
        mean = sum(diffs) / len(diffs)
        if pooled is None:
            return Outcome(INCONCLUSIVE, Estimate(mean, math.nan, math.nan, len(at), math.nan), look, tuple(at))
        sd = max(pooled.sd, self.floor)  # one run's residual sd; a difference of two has sqrt(2) of it
        se = sd * math.sqrt(2 / len(at))
        est = Estimate(mean, mean - crit * se, mean + crit * se, len(at), sd * math.sqrt(2))
        p = float(t.cdf(mean / se, pooled.dof)) if se > 0 else (1.0 if mean > 0 else 0.0)
        return Outcome(label(est, self.delta), est, look, tuple(at), p, crit)

    @staticmethod
    def _spent(members: Sequence[str], baseline: str, outcomes: Mapping[str, Outcome]) -> dict[str, int]:
        spent = {m: len(outcomes[m].seeds) if m in outcomes else 0 for m in members}
        spent[baseline] = max(spent.values(), default=0)
        return spent

    def _futile(self, o: Outcome, family: int, dof: int) -> bool:
        """Would the member stay inconclusive up to the ceiling even if its difference were one standard
        error further from 0 than measured, and the pooled noise had the degrees of freedom of every
        member at the ceiling (an optimistic reading)? Stopping such a member only removes chances to
        label it, so the error control is untouched; the trainings go to members that can still settle."""
        d = o.difference
        if d is None or math.isnan(d.sd):
            return False
        se = d.sd / math.sqrt(d.n)
        top = self.horizon or self.ceiling
        later = dof * (top - 1) / max(1, d.n - 1)  # an a x n table has (a - 1)(n - 1)
        crit = dunnett_critical(family, max(later, 1), look_alpha(top // self.batch, self.alpha))
        reach = crit * d.sd / math.sqrt(top)  # the half-width at the horizon
        optimistic = abs(d.mean) + se
        return reach >= optimistic and reach >= self.delta - max(0.0, abs(d.mean) - se)

    def seeds_to_settle(self, outcome: Outcome, comparisons: int, dof: int) -> int | None:
        """About how many seeds an inconclusive member would need for its interval to settle, if its
        difference and the noise stayed as measured (at the error rate of the look after the ceiling);
        None when no number would (its difference sits at the equivalence margin)."""
        d = outcome.difference
        if d is None or outcome.decided or math.isnan(d.sd):
            return None
        crit = dunnett_critical(comparisons, max(dof, 1), look_alpha(len(self.sizes()) + 1, self.alpha))
        room = max(abs(d.mean), self.delta - abs(d.mean))  # to exclude 0, or to fit inside +-delta
        if room <= 1e-12:
            return None
        return max(d.n + 1, math.ceil((crit * d.sd / room) ** 2))


def _unique(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    seen: set[tuple[str, int]] = set()
    return [p for p in pairs if not (p in seen or seen.add(p))]
