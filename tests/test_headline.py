"""The report's first line (``Analysis.headline``), never stronger than the evidence, from hand-built
members: not confirmed (single runs), better than the baseline, no member better, how many of each of
the four labels, and how the labels were reached (Dunnett-adjusted when more than one member is judged).
No study, no training."""

from nas.core.stats import BETTER, EQUIVALENT, INCONCLUSIVE, WORSE, Estimate
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
        "Better than the baseline in accuracy: trial 1 (+3.0 ± 1.0 pts). Confirmed over 3 fresh seeds: 1 better, "
        "0 worse, 0 equivalent, 0 inconclusive (judged on the validation split; Dunnett-adjusted 95% intervals)."
    )


def test_several_judged_members_are_counted_by_label_and_the_better_ones_named():
    a = analysis(
        BASE,
        member(1, difference=diff(0.03, 0.01, n=4), verdict=BETTER),
        member(2, difference=diff(0.001, 0.02, n=8), verdict=INCONCLUSIVE),
        member(3, difference=diff(0.05, 0.02, n=4), verdict=BETTER),
        member(4, difference=diff(0.0, 0.002, n=4), verdict=EQUIVALENT),
    )
    assert a.headline() == (
        "Better than the baseline in accuracy: trial 1 (+3.0 ± 1.0 pts), trial 3 (+5.0 ± 2.0 pts). Confirmed over "
        "4 to 8 fresh seeds: 2 better, 0 worse, 1 equivalent, 1 inconclusive (judged on the validation split; "
        "Dunnett-adjusted 95% intervals for 4 members)."
    )


def test_no_member_better_says_so_with_the_counts_and_the_members_still_unconfirmed():
    open_ = member(1, difference=diff(0.0, 0.02), verdict=INCONCLUSIVE)
    worse = member(2, difference=diff(-0.1, 0.02), verdict=WORSE)
    assert analysis(BASE, open_, worse).headline() == (
        "No front member is better than the baseline in accuracy. Confirmed over 3 fresh seeds: 0 better, 1 worse, "
        "0 equivalent, 1 inconclusive (judged on the validation split; Dunnett-adjusted 95% intervals for 2 members)."
    )
    line = analysis(BASE, open_, member(2, verdict=NOT_PAIRED)).headline()
    assert line.endswith("Not confirmed yet: trial(s) 2.") and "1 inconclusive" in line
    better = member(3, difference=diff(0.03, 0.01), verdict=BETTER)
    line = analysis(BASE, better, member(4), member(5)).headline()
    assert line.startswith("Better than the baseline in accuracy: trial 3 (+3.0 ± 1.0 pts).")
    assert line.endswith("Not confirmed yet: trial(s) 4, 5.")


def test_without_a_baseline_or_with_the_baseline_alone_nothing_is_judged():
    assert analysis(member(1), member(2)).headline() == (
        "No baseline trial: the differences cannot be judged (a stage of the space has no 'none')."
    )
    assert analysis(BASE).headline() == (
        "The front holds the baseline alone: no attention placement found that is faster or more accurate."
    )
