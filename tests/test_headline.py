"""The report's first line (``Analysis.headline``), never stronger than the evidence, from hand-built
members: not confirmed (single runs), better than the baseline, no member better, and the family-wise
wording (Bonferroni) when more than one member is judged. No study, no training."""

from nas.core.stats import BETTER, TIED, WORSE, Estimate
from nas.study.analysis import Analysis
from nas.study.confirmation import NOT_PAIRED, Member, Noise

NOISE = Noise(seeds=(0, 1, 2), sd=(0.05, 0.013))


def member(number, *, baseline=False, difference=None, verdict=""):
    return Member(
        number,
        f"resnet10t|none|none|none|m{number}",
        0.9,
        1.0 + number / 10,
        1.0,
        1.2,
        1000,
        2000,
        baseline,
        difference=difference,
        verdict=verdict,
    )


def diff(mean, half, n=3):
    """A paired difference to the baseline over ``n`` seeds: ``mean`` ± ``half``."""
    return Estimate(mean, mean - half, mean + half, n, 0.01)


def analysis(*members, noise=NOISE, metric="accuracy"):
    return Analysis(list(members), noise, 3, [1, 2, 3], metric)


BASE = member(0, baseline=True)


def test_unconfirmed_members_are_never_called_better():
    a = analysis(BASE, member(1), member(2))
    assert not a.confirmed
    assert a.headline() == (
        "Not confirmed: every accuracy is one training run (noise: sd 1.3 points over 3 seeds); no member is "
        "called better than the baseline before 'nas report --confirm 3' re-trains the front from fresh seeds."
    )
    # a detector's quality by its name; no noise floor measured, and it says so
    assert analysis(BASE, member(1), noise=None, metric="mAP50-95").headline() == (
        "Not confirmed: every mAP50-95 is one training run (noise not measured); no member is called better "
        "than the baseline before 'nas report --confirm 3' re-trains the front from fresh seeds."
    )


def test_a_member_judged_alone_is_better_at_a_plain_paired_95_percent_interval():
    a = analysis(BASE, member(1, difference=diff(0.03, 0.01), verdict=BETTER))
    assert a.headline() == (
        "Better than the baseline in accuracy, confirmed over 3 fresh seeds (paired 95% interval): "
        "trial 1 (+3.0 ± 1.0 pts)."
    )
    assert "Bonferroni" not in a.headline()


def test_several_judged_members_name_the_better_ones_at_a_bonferroni_adjusted_level():
    a = analysis(
        BASE,
        member(1, difference=diff(0.03, 0.01, n=4), verdict=BETTER),
        member(2, difference=diff(0.001, 0.02, n=4), verdict=TIED),
        member(3, difference=diff(0.05, 0.02, n=4), verdict=BETTER),
    )
    assert a.headline() == (
        "Better than the baseline in accuracy, confirmed over 4 fresh seeds (paired 95% intervals, "
        "Bonferroni-adjusted for 3 comparisons): trial 1 (+3.0 ± 1.0 pts), trial 3 (+5.0 ± 2.0 pts)."
    )


def test_no_member_better_says_so_with_the_level_and_the_members_still_unconfirmed():
    tied = member(1, difference=diff(0.0, 0.02), verdict=TIED)
    worse = member(2, difference=diff(-0.1, 0.02), verdict=WORSE)
    assert analysis(BASE, tied, worse).headline() == (
        "No front member is better than the baseline in accuracy: confirmed over 3 fresh seeds, no interval "
        "of the difference lies above 0 (paired 95% intervals, Bonferroni-adjusted for 2 comparisons)."
    )
    # members without paired runs are named as not confirmed yet, and the level is the one judge() used:
    # adjusted for every member shown, judged or not
    line = analysis(BASE, tied, member(2, verdict=NOT_PAIRED)).headline()
    assert line == (
        "No front member is better than the baseline in accuracy: confirmed over 3 fresh seeds, no interval "
        "of the difference lies above 0 (paired 95% intervals, Bonferroni-adjusted for 2 comparisons). "
        "Not confirmed yet: trial(s) 2."
    )
    better = member(3, difference=diff(0.03, 0.01), verdict=BETTER)
    line = analysis(BASE, better, member(4), member(5)).headline()
    assert line == (
        "Better than the baseline in accuracy, confirmed over 3 fresh seeds (paired 95% intervals, "
        "Bonferroni-adjusted for 3 comparisons): trial 3 (+3.0 ± 1.0 pts). Not confirmed yet: trial(s) 4, 5."
    )


def test_without_a_baseline_or_with_the_baseline_alone_nothing_is_judged():
    assert analysis(member(1), member(2)).headline() == (
        "No baseline trial: the differences cannot be judged (a stage of the space has no 'none')."
    )
    assert analysis(BASE).headline() == (
        "The front holds the baseline alone: no attention placement found that is faster or more accurate."
    )
