"""What makes the front trustworthy, against formulas, brute force and a simulated machine: intervals
of a median and of a (paired) mean, verdicts that call a difference inside its noise a tie, latency
as a ratio to a reference timed interleaved (a busy machine does not move it), common random numbers
in the build, and rung decisions that do not prune within noise."""

import math
import random
import statistics

import pytest
import torch

from nas.core.architecture import Architecture
from nas.core.stats import (
    BETTER,
    EQUIVALENT,
    INCONCLUSIVE,
    WORSE,
    label,
    mean_interval,
    median_interval,
    paired_difference,
    seed_sd,
    t_quantile,
)
from nas.measure import cost
from nas.measure.cost import Ratio, time_against_reference
from nas.search._pruning import MOASHA, within_noise
from nas.tasks.classify.model import build


def _binom_cdf_brute(k: int, n: int) -> float:
    # by enumerating all 2^n outcomes for small n
    from itertools import product

    return sum(1 for bits in product((0, 1), repeat=n) if sum(bits) <= k) / 2**n


@pytest.mark.parametrize("n", [6, 9, 12, 15])
def test_median_interval_is_the_order_statistic_interval_by_its_definition(n):
    xs = list(range(n))
    lo, hi = median_interval(xs)
    k = lo + 1  # 1-based rank of the lower end
    assert hi == n - k, "symmetric order statistics"
    assert _binom_cdf_brute(k - 1, n) <= 0.025, "coverage at least 95%"
    assert _binom_cdf_brute(k, n) > 0.025, "the narrowest such interval"


def test_median_interval_covers_the_true_median_95_percent_of_the_time():
    rnd = random.Random(0)
    true_median = math.log(2)  # exponential(1)
    hits = 0
    for _ in range(2000):
        lo, hi = median_interval([rnd.expovariate(1.0) for _ in range(41)])
        hits += lo <= true_median <= hi
    assert hits / 2000 >= 0.94


def test_mean_and_paired_intervals_against_the_t_formula():
    xs = [0.91, 0.94, 0.93, 0.90]
    e = mean_interval(xs)
    half = t_quantile(0.975, 3) * statistics.stdev(xs) / 2
    assert e.mean == pytest.approx(statistics.fmean(xs)) and e.half_width == pytest.approx(half)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4) and t_quantile(0.975, 2) == pytest.approx(
        4.3027, abs=1e-4
    )
    ys = [0.90, 0.93, 0.92, 0.89]  # every pair 0.01 apart: the shared noise cancels
    d = paired_difference(xs, ys, sd_floor=0.002)
    assert d.mean == pytest.approx(0.01) and d.sd == pytest.approx(0.002), "the floor replaces a chance sd of 0"
    assert label(d) == BETTER and label(paired_difference(ys, xs, sd_floor=0.002)) == WORSE
    unpaired = mean_interval(xs).half_width + mean_interval(ys).half_width
    assert d.half_width < unpaired / 5, "pairing is what makes a small difference visible"
    assert label(paired_difference([0.9, 0.95], [0.92, 0.91])) == INCONCLUSIVE, "+-27 points: not a tie"
    assert label(mean_interval([0.1])) == INCONCLUSIVE, "one run never decides"
    near = paired_difference([0.9001, 0.9002, 0.9, 0.9001], [0.9, 0.9, 0.9001, 0.9])
    assert label(near) == EQUIVALENT and label(near, delta=near.high) == INCONCLUSIVE, "inside +-delta, whole"
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_seed_sd_per_epoch():
    sd = seed_sd([[0.5, 0.9], [0.7, 0.92], [0.6]])
    assert sd[0] == pytest.approx(0.1) and sd[1] == pytest.approx(statistics.stdev([0.9, 0.92]))
    assert math.isnan(seed_sd([[0.5, 0.6], [0.5]])[1])


class BusyMachine:
    """A simulated clock: the reference takes 1.0 ms and the candidate 1.2 ms when quiet; in random
    phases (a few ms to tens of ms long) everything runs 1.6x slower, as when another process shares
    the cores."""

    def __init__(self, seed: int = 0):
        self.rnd = random.Random(seed)
        self.now = 0.0
        self.busy_until = 0.0
        self.quiet_until = 0.0

    def perf_counter(self) -> float:
        return self.now

    def _factor(self) -> float:
        if self.now >= max(self.busy_until, self.quiet_until):
            if self.rnd.random() < 0.5:
                self.busy_until = self.now + self.rnd.uniform(0.002, 0.03)
            else:
                self.quiet_until = self.now + self.rnd.uniform(0.002, 0.03)
        return 1.6 if self.now < self.busy_until else 1.0

    def reference(self) -> None:
        self.now += self._factor() * 1.0e-3

    def candidate(self) -> None:
        self.now += self._factor() * 1.2e-3


def _two_way_f_by_least_squares(table):
    """Brute force: the rows' F in a two-way table (rows x seeds), as the nested least-squares test of
    seeds only against seeds + rows, dummy-coded."""
    import numpy as np

    a, k = table.shape

    def rss(design):
        beta, *_ = np.linalg.lstsq(design, table.ravel(), rcond=None)
        return float(((table.ravel() - design @ beta) ** 2).sum())

    seeds = np.kron(np.ones((a, 1)), np.eye(k))
    rows = np.kron(np.eye(a), np.ones((k, 1)))[:, 1:]
    small, full = rss(seeds), rss(np.hstack([seeds, rows]))
    return ((small - full) / (a - 1)) / (full / ((a - 1) * (k - 1)))


def test_variance_table_against_least_squares_and_its_own_definitions():
    """The architecture F of the two-way table equals the nested least-squares test (seeds only vs seeds
    + architectures, dummy-coded); the sds are their definitions; an effect planted on one architecture
    far above the noise gives p < 0.01, none gives a large p on average."""
    import numpy as np
    from scipy.stats import f as f_dist

    from nas.core.stats import variance_table

    rng = np.random.default_rng(0)
    a, s = 7, 4
    x = 0.9 + rng.normal(0, 0.01, (a, s)) + rng.normal(0, 0.02, (1, s))  # seed effects shared by every row
    v = variance_table(x.tolist(), baseline=0)
    f = _two_way_f_by_least_squares(x)
    assert v.f == pytest.approx(f, rel=1e-9) and v.dof == (a - 1, (a - 1) * (s - 1))
    assert v.p == pytest.approx(f_dist.sf(f, a - 1, (a - 1) * (s - 1)), rel=1e-9)
    assert v.seed_sd == pytest.approx(math.sqrt(np.mean(x.var(axis=1, ddof=1))), rel=1e-9)
    d = x[1:] - x[0]
    assert v.paired_sd == pytest.approx(math.sqrt(np.mean(d.var(axis=1, ddof=1))), rel=1e-9)
    assert v.spread == pytest.approx(x.mean(axis=1).max() - x.mean(axis=1).min())
    assert v.baseline_mean == pytest.approx(x[0].mean())
    planted = x.copy()
    planted[3] += 0.05
    assert variance_table(planted.tolist(), 0).p < 0.01
    nulls = [variance_table((0.9 + rng.normal(0, 0.01, (a, s))).tolist(), 0).p for _ in range(200)]
    assert 0.4 < statistics.fmean(nulls) < 0.6  # p is uniform under no effect
    with pytest.raises(ValueError, match="paired"):
        variance_table([[0.9, 0.91], [0.9]], 0)


def test_main_effects_of_a_full_factorial_against_least_squares_and_seed_to_seed_luck():
    """Each searched position's F is the two-way least-squares test (seeds as blocks) of its choices'
    means per seed; effects are the choices' means minus the plain one's. Where a choice's luck varies
    from seed to seed (the architectures sharing it share its draw) and nothing is planted, p stays
    uniform (pooling every architecture's residual would call that luck an effect); a planted choice
    is found; one position gives the variance table's own F; incomplete sets give nothing."""
    import itertools

    import numpy as np
    from scipy.stats import f as f_dist

    from nas.core.stats import factorial_positions, main_effects, variance_table

    rng = np.random.default_rng(1)
    first, second, s = ["none", "se", "eca"], ["none", "cbam", "simam", "sa"], 3
    choices = [("none", a, "none", b) for a, b in itertools.product(first, second)]  # two positions vary
    n = len(choices)
    x = 0.9 + rng.normal(0, 0.01, (n, s)) + rng.normal(0, 0.02, (1, s))
    found = main_effects(x.tolist(), choices)
    assert [m.position for m in found] == [2, 4] and factorial_positions(choices) == [1, 3]

    for m, k, levels in ((found[0], 1, first), (found[1], 3, second)):
        means = np.array([x[[i for i, c in enumerate(choices) if c[k] == lv]].mean(axis=0) for lv in levels])
        f = _two_way_f_by_least_squares(means)
        assert m.f == pytest.approx(f, rel=1e-9) and m.dof == (len(levels) - 1, (len(levels) - 1) * (s - 1))
        assert m.p == pytest.approx(f_dist.sf(f, *m.dof), rel=1e-9)
        assert m.reference == "none" and m.effects["none"] == 0.0
        for lv, row in zip(levels, means, strict=True):
            assert m.effects[lv] == pytest.approx(row.mean() - means[0].mean(), abs=1e-12)

    lucky, planted = [], []
    for _ in range(300):
        y = 0.9 + rng.normal(0, 0.01, (n, s))
        for lv in second:  # each choice at position 4 draws its own luck at every seed
            y[[i for i, c in enumerate(choices) if c[3] == lv]] += rng.normal(0, 0.02, (1, s))
        lucky.append(main_effects(y.tolist(), choices)[1].p)
        y[[i for i, c in enumerate(choices) if c[1] == "se"]] += 0.03
        planted.append(main_effects(y.tolist(), choices)[0].p)
    assert 0.4 < statistics.fmean(lucky) < 0.6 and np.mean(np.array(lucky) < 0.05) < 0.1
    assert np.mean(np.array(planted) < 0.01) > 0.8

    one = [("none", c) for c in second]
    (m,) = main_effects(x[: len(one)].tolist(), one)
    v = variance_table(x[: len(one)].tolist(), 0)
    assert (m.f, m.p) == pytest.approx((v.f, v.p), rel=1e-9) and m.dof == v.dof
    assert main_effects(x[:-1].tolist(), choices[:-1]) == [] and factorial_positions(choices[:-1]) is None
    assert main_effects(x.tolist(), [("none",) * 4] * n) == []  # nothing varies
    with pytest.raises(ValueError, match="rows of figures"):
        main_effects(x[:-1].tolist(), choices)


def test_a_table_without_seed_to_seed_variation_is_certain_only_where_something_moved():
    from nas.core.stats import main_effects, variance_table

    assert variance_table([[0.9, 0.9], [0.9, 0.9]], 0).p == 1.0  # nothing moved: no effect
    shifted = variance_table([[0.9, 0.8], [0.95, 0.85]], 0)  # an exact shift at every seed: certain
    assert shifted.p == 0.0 and shifted.f == math.inf
    choices = [(a, b) for a in ("none", "se") for b in ("none", "eca")]
    additive = [[0.9 + 0.05 * (a == "se") + 0.1 * j for j in range(3)] for a, _ in choices]  # position 2 moves nothing
    first, second = main_effects(additive, choices)
    assert (first.p, second.p) == (0.0, 1.0)


def test_paired_ratio_is_unmoved_by_a_busy_machine_where_absolute_times_are(monkeypatch):
    sim = BusyMachine()
    monkeypatch.setattr(cost, "time", sim)
    ratios, ref = time_against_reference([sim.candidate], sim.reference, torch.device("cpu"), rounds=200, seconds=0)
    r = ratios[0]
    assert r.median == pytest.approx(1.2, rel=0.01)
    lo, hi = r.interval
    assert lo - 1e-9 <= 1.2 <= hi + 1e-9 and r.spread < 5
    spread_abs = (max(ref.samples) - min(ref.samples)) / min(ref.samples)
    assert spread_abs > 0.5, "the machine was busy: absolute times of the reference vary by half"


def test_ratio_of_several_candidates_in_one_interleaved_run(monkeypatch):
    sim = BusyMachine(1)
    monkeypatch.setattr(cost, "time", sim)
    slower = lambda: (sim.candidate(), sim.reference())  # noqa: E731  2.2 ms
    ratios, _ = time_against_reference(
        [sim.reference, sim.candidate, slower], sim.reference, torch.device("cpu"), rounds=150, seconds=0
    )
    assert [round(r.median, 2) for r in ratios] == [1.0, 1.2, 2.2]
    assert isinstance(ratios[0], Ratio)


def test_common_random_numbers_in_the_build():
    """With one init seed the backbone starts identical for every architecture, and an attention
    module starts the same whatever the other stages hold."""
    a = build(Architecture.parse("resnet10t|none|none|none|none"), 10, 1, init_seed=3).state_dict()
    b = build(Architecture.parse("resnet10t|none|none|se(r=4)|cbam(r=16,k=7)"), 10, 1, init_seed=3).state_dict()
    c = build(Architecture.parse("resnet10t|none|none|eca(k=3)|cbam(r=16,k=7)"), 10, 1, init_seed=3).state_dict()
    d = build(Architecture.parse("resnet10t|none|none|se(r=4)|cbam(r=16,k=7)"), 10, 1, init_seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the backbone's weights do not depend on the attention"
    cbam = [k for k in b if k.startswith("layer4") and k not in a]
    assert cbam and all(torch.equal(b[k], c[k]) for k in cbam), "stage 4's CBAM does not depend on stage 3"
    assert not all(torch.equal(b[k], d[k]) for k in cbam), "another seed draws other weights"


def test_a_rung_does_not_prune_within_noise():
    p = MOASHA(eta=3)
    # six trials at the rung, two continue; trial 5 is third, 0.01 below the last kept, latency intervals overlap
    others = [
        (0, 0.80, 5.0, 4.9, 5.1),
        (1, 0.75, 5.0, 4.9, 5.1),
        (2, 0.50, 5.0, 4.9, 5.1),
        (3, 0.40, 5.0, 4.9, 5.1),
        (4, 0.30, 5.0, 4.9, 5.1),
    ]
    me = (5, 0.74, 5.05, 4.95, 5.15)
    assert not p.decide(me, others, 1).keep, "without a noise floor the quota decides"
    d = p.decide(me, others, 1, acc_sd=0.02)
    assert d.keep and d.position == 2 and "within noise of place 2" in str(d) and "noise sd 0.0200" in str(d)
    assert not p.decide((5, 0.70, 5.05, 4.95, 5.15), others, 1, acc_sd=0.02).keep, "0.05 below: beyond one sd"
    assert not p.decide((5, 0.74, 5.5, 5.4, 5.6), others, 1, acc_sd=0.02).keep, "slower beyond its interval"
    assert within_noise((0, 0.5, 1.0), (1, 0.5, 1.0), 0.01), "equal points without intervals are a tie"
    assert not within_noise((0, 0.5, 1.0), (1, 0.5, 1.0), 0.0), "no noise measured: the quota decides, as before"
