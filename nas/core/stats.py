"""Uncertainty of the search's figures: intervals of a median (latency ratios), of a mean and of a
paired difference (accuracy over seeds), and the verdict a difference supports.

Pure functions of numbers, tested against their textbook formulas. A difference whose interval
contains 0 is a tie: it is never reported as a win.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Hashable, Mapping, Sequence
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


BETTER, WORSE = "better than the baseline", "worse than the baseline"
EQUIVALENT, INCONCLUSIVE = "equivalent to the baseline", "inconclusive"
LABELS = (BETTER, WORSE, EQUIVALENT, INCONCLUSIVE)
EQUIVALENCE = 0.005  # the default margin of equivalence: 0.5 points of accuracy


def label(difference: Estimate, delta: float = EQUIVALENCE) -> str:
    """Four labels from an interval of member - baseline: better or worse when it excludes 0 on that
    side; equivalent when it lies inside (-delta, +delta) (two one-sided tests: the interval is at least
    the 1 - 2 alpha one they need); inconclusive otherwise: the data cannot tell yet."""
    if difference.n < 2 or math.isnan(difference.low):
        return INCONCLUSIVE
    if difference.low > 0:
        return BETTER
    if difference.high < 0:
        return WORSE
    if -delta < difference.low and difference.high < delta:
        return EQUIVALENT
    return INCONCLUSIVE


@dataclass(frozen=True)
class Pooled:
    """The residual sd of an architecture x seed table under the additive model (an effect per
    architecture plus one per seed, the seed's effect shared by every architecture trained from it), with
    its degrees of freedom: the noise of one run once its architecture and its seed are accounted for."""

    sd: float
    dof: int
    runs: int
    architectures: int

    def __str__(self) -> str:
        runs = f"{self.runs} runs of {self.architectures} networks"
        return f"pooled sd {100 * self.sd:.2f} points ({self.dof} df, {runs})"


def pooled_residual(table: Mapping[Hashable, Mapping[Hashable, float]]) -> Pooled | None:
    """``table[architecture][seed]``: one figure per run; holes allowed (least squares on the additive
    model, degrees of freedom = runs - rank of the design). None when no degree of freedom is left (a
    single architecture: its seed effects absorb every run)."""
    import numpy as np

    cells = [(a, s, float(v)) for a, row in table.items() for s, v in row.items()]
    archs = sorted({a for a, _, _ in cells}, key=str)
    seeds = sorted({s for _, s, _ in cells}, key=str)
    if len(archs) < 2 or not cells:
        return None
    ai, si = {a: i for i, a in enumerate(archs)}, {s: i for i, s in enumerate(seeds)}
    x = np.zeros((len(cells), len(archs) + len(seeds)))
    y = np.array([v for _, _, v in cells])
    for r, (a, s, _) in enumerate(cells):
        x[r, ai[a]] = 1.0
        x[r, len(archs) + si[s]] = 1.0
    rank = int(np.linalg.matrix_rank(x))
    dof = len(cells) - rank
    if dof < 1:
        return None
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss = float(np.sum((y - x @ beta) ** 2))
    return Pooled(math.sqrt(rss / dof), dof, len(cells), len(archs))


@functools.lru_cache(maxsize=512)
def dunnett_critical(comparisons: int, dof: float, alpha: float) -> float:
    """The two-sided critical value c of Dunnett's many-against-one comparison: P(max_i |T_i| <= c) =
    1 - alpha for ``comparisons`` t statistics on ``dof`` degrees of freedom (inf: normal) that share the
    control, each pair correlated 0.5 (every member and the baseline on the same seeds). With that
    correlation Z_i = (W + U_i) / sqrt(2) for independent normals W, U_i, so the coverage is a
    two-dimensional integral (W by Gauss-Hermite, the sd estimate's chi distribution by its quantiles),
    solved for c. One comparison: Student's t quantile."""
    import numpy as np
    from scipy.optimize import brentq
    from scipy.stats import chi, norm

    if comparisons < 1 or not 0 < alpha < 1:
        raise ValueError(f"comparisons must be >= 1 and alpha in (0, 1) (got {comparisons}, {alpha})")
    if comparisons == 1:
        return t_quantile(1 - alpha / 2, dof) if math.isfinite(dof) else float(norm.ppf(1 - alpha / 2))
    w, weights = np.polynomial.hermite_e.hermegauss(96)
    weights = weights / weights.sum()
    if math.isfinite(dof):
        q = (np.arange(2000) + 0.5) / 2000
        scale = chi.ppf(q, dof) / math.sqrt(dof)  # S = sqrt(chi2_dof / dof), equal weights
    else:
        scale = np.ones(1)

    def coverage(c: float) -> float:
        cs = c * scale[:, None] * math.sqrt(2)  # |W + U| <= c S sqrt(2)
        inner = norm.cdf(cs - w[None, :]) - norm.cdf(-cs - w[None, :])
        return float(np.mean((inner**comparisons) @ weights))

    lower = norm.ppf(1 - alpha / 2)
    bonferroni = 1 - alpha / (2 * comparisons)  # Dunnett's c lies between the unadjusted and this one
    upper = t_quantile(bonferroni, dof) if math.isfinite(dof) else norm.ppf(bonferroni)
    return float(brentq(lambda c: coverage(c) - (1 - alpha), 0.9 * lower, 1.1 * upper, xtol=1e-6))


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
    tiny = 1e-12 * sum((v - grand) ** 2 for row in x for v in row)  # float dust of an exactly additive table
    if ss_err > tiny:
        f = (ss_arch / dof[0]) / (ss_err / dof[1])
        p = float(f_dist.sf(f, *dof))
    else:  # no seed-to-seed variation left: an effect is certain, and no effect is no effect
        f, p = (math.inf, 0.0) if ss_arch > tiny else (math.nan, 1.0)
    within = sum((x[i][j] - rows[i]) ** 2 for i in range(a) for j in range(s)) / (a * (s - 1))
    diffs = [[x[i][j] - x[baseline][j] for j in range(s)] for i in range(a) if i != baseline]
    paired = sum((d - statistics.fmean(row)) ** 2 for row in diffs for d in row) / ((a - 1) * (s - 1))
    return VarianceTable(a, s, rows[baseline], math.sqrt(within), math.sqrt(paired), f, p, dof, max(rows) - min(rows))


@dataclass(frozen=True)
class MainEffect:
    """One searched position's main effect in a recording that holds every combination of the
    positions' choices (a full factorial) at the same seeds. The figures are first averaged over the
    other positions, per choice and seed; ``f`` and ``p`` are then the two-way table's (seeds as blocks)
    of those means: the choice's effect against how much it varies from seed to seed. (Pooling every
    architecture's residual instead would treat the architectures that share a choice at a seed as
    independent, while they share that seed's draw of the module and the data order: too many false
    effects.) ``effects``: each choice's mean minus the mean of ``reference`` (the plain choice, where
    there is one)."""

    position: int  # 1-based, in the architecture string after the backbone
    f: float
    p: float
    dof: tuple[int, int]
    reference: str
    effects: dict[str, float]


def factorial_positions(choices: Sequence[Sequence[str]]) -> list[int] | None:
    """The 0-based positions whose choice varies over ``choices`` (one tuple per architecture) when the
    architectures are exactly every combination of those positions' choices, each once; else None."""
    if not choices or len({len(c) for c in choices}) != 1:
        return None
    varying = [k for k in range(len(choices[0])) if len({c[k] for c in choices}) > 1]
    if not varying:
        return None
    cells = {tuple(c[k] for k in varying) for c in choices}
    combos = math.prod(len({c[k] for c in choices}) for k in varying)
    return varying if len(cells) == len(choices) == combos else None


def main_effects(table: Sequence[Sequence[float]], choices: Sequence[Sequence[str]]) -> list[MainEffect]:
    """``table[i][j]``: architecture i's figure at seed j; ``choices[i]``: its choice at every position.
    One ``MainEffect`` per varying position of a full factorial (``factorial_positions``); [] otherwise."""
    if len(table) != len(choices):
        raise ValueError(f"{len(table)} rows of figures for {len(choices)} architectures")
    varying = factorial_positions(choices)
    s = len(table[0]) if table else 0
    if varying is None or s < 2 or any(len(row) != s for row in table):
        return []
    out = []
    for k in varying:
        levels = sorted({c[k] for c in choices})
        rows = [[i for i, c in enumerate(choices) if c[k] == lv] for lv in levels]
        means = [[statistics.fmean(float(table[i][j]) for i in at) for j in range(s)] for at in rows]
        ref = levels.index("none") if "none" in levels else 0
        v = variance_table(means, ref)
        overall = [statistics.fmean(m) for m in means]
        effects = {lv: overall[n] - overall[ref] for n, lv in enumerate(levels)}
        out.append(MainEffect(k + 1, v.f, v.p, v.dof, levels[ref], effects))
    return out
