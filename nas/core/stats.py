"""Uncertainty of the search's figures: intervals of a median (latency ratios), of a mean and of a
paired difference (accuracy over seeds), and the verdict a difference supports.

Pure functions of numbers, tested against their textbook formulas. A difference whose interval
contains 0 is a tie: it is never reported as a win.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

LEVEL = 0.95


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(0, k + 1)) / 2**n


def median_interval(samples: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Distribution-free interval for the median: the order statistics x_(k) and x_(n+1-k), with the
    largest k for which P(Binomial(n, 1/2) < k) <= (1 - level) / 2. Covers the true median with at
    least ``level`` probability for any continuous distribution. Fewer than 6 samples: (min, max)."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples")
    alpha = (1 - level) / 2
    k = 0
    while k + 1 <= n // 2 and _binom_cdf(k, n) <= alpha:  # P(X <= k) = P(X < k + 1)
        k += 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


def t_quantile(p: float, dof: int) -> float:
    """Quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(p, dof))


@dataclass(frozen=True)
class Estimate:
    """A mean over n repeats with its two-sided ``level`` t-interval. With n = 1 the interval is
    unknown (nan): one run says nothing about its own noise."""

    mean: float
    low: float
    high: float
    n: int
    sd: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        return f"{self.mean:.4f}" if self.n < 2 else f"{self.mean:.4f} ± {self.half_width:.4f}"


def mean_interval(values: Sequence[float], level: float = LEVEL, sd_floor: float = 0.0) -> Estimate:
    """``sd_floor``: the least sd to assume. Accuracies are multiples of 1/N on N validation images, so
    a few repeats can agree exactly by chance (sample sd 0) and make any difference look certain; the
    floor (one image's share) keeps such an interval honest."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(xs)
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, math.nan)
    sd = max(statistics.stdev(xs), sd_floor)
    half = t_quantile(1 - (1 - level) / 2, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, sd)


def paired_difference(
    xs: Sequence[float], ys: Sequence[float], level: float = LEVEL, sd_floor: float = 0.0
) -> Estimate:
    """Mean of x_i - y_i over pairs that share a seed, with its t-interval: the common randomness
    cancels, so this is narrower than the difference of two independent means."""
    if len(xs) != len(ys):
        raise ValueError(f"paired samples differ in length ({len(xs)} and {len(ys)})")
    return mean_interval([x - y for x, y in zip(xs, ys, strict=True)], level, sd_floor)


BETTER, TIED, WORSE = "better than the baseline", "tied with the baseline", "worse than the baseline"


def verdict(difference: Estimate) -> str:
    """Better/worse only when the interval of the difference excludes 0; otherwise a tie."""
    if not difference.excludes_zero():
        return TIED
    return BETTER if difference.low > 0 else WORSE


def seed_sd(curves: Sequence[Sequence[float]]) -> list[float]:
    """Per epoch, the sample standard deviation over seeds of the curves that reach that epoch (nan
    where fewer than two do)."""
    length = max((len(c) for c in curves), default=0)
    out = []
    for e in range(length):
        at = [c[e] for c in curves if len(c) > e]
        out.append(statistics.stdev(at) if len(at) > 1 else math.nan)
    return out


@dataclass(frozen=True)
class VarianceTable:
    """How much of a recording's spread is the architectures' and how much the seeds': every architecture
    trained from the same seeds (paired), one final figure per (architecture, seed). ``seed_sd``: the sd
    over seeds within an architecture, pooled; ``paired_sd``: the sd over seeds of an architecture's
    difference to the baseline at the same seed, pooled over the architectures; ``f`` and ``p``: the
    architecture effect in a two-way analysis of variance without replication (seeds as blocks, degrees of
    freedom ``dof``); ``spread``: the largest minus the smallest architecture mean; ``baseline_mean``."""

    architectures: int
    seeds: int
    baseline_mean: float
    seed_sd: float
    paired_sd: float
    f: float
    p: float
    dof: tuple[int, int]
    spread: float


def variance_table(table: Sequence[Sequence[float]], baseline: int) -> VarianceTable:
    """``table[i][j]``: architecture i's figure at seed j (the same seeds for every row); ``baseline``: the
    row of the plain network. Needs 2 architectures and 2 seeds at least."""
    from scipy.stats import f as f_dist

    a, s = len(table), len(table[0]) if table else 0
    if a < 2 or s < 2 or any(len(row) != s for row in table):
        raise ValueError(f"a variance table needs >= 2 architectures x >= 2 seeds, all paired (got {a} x {s})")
    x = [[float(v) for v in row] for row in table]
    grand = statistics.fmean(v for row in x for v in row)
    rows = [statistics.fmean(row) for row in x]
    cols = [statistics.fmean(x[i][j] for i in range(a)) for j in range(s)]
    ss_arch = s * sum((r - grand) ** 2 for r in rows)
    ss_err = sum((x[i][j] - rows[i] - cols[j] + grand) ** 2 for i in range(a) for j in range(s))
    dof = (a - 1, (a - 1) * (s - 1))
    f = (ss_arch / dof[0]) / (ss_err / dof[1]) if ss_err > 0 else math.inf
    p = float(f_dist.sf(f, *dof)) if math.isfinite(f) else 0.0
    within = sum((x[i][j] - rows[i]) ** 2 for i in range(a) for j in range(s)) / (a * (s - 1))
    diffs = [[x[i][j] - x[baseline][j] for j in range(s)] for i in range(a) if i != baseline]
    paired = sum((d - statistics.fmean(row)) ** 2 for row in diffs for d in row) / ((a - 1) * (s - 1))
    return VarianceTable(a, s, rows[baseline], math.sqrt(within), math.sqrt(paired), f, p, dof, max(rows) - min(rows))
