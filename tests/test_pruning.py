"""Multi-objective successive halving and hypervolume, against direct computations."""

import itertools
import random
import statistics

import pytest

from nas.core.pareto import hypervolume, nondominated_ranks, pareto_front
from nas.search._pruning import MOASHA, Recorded, replay_moasha, replay_none, rungs


def test_rungs():
    assert rungs(4) == [1, 3] and rungs(9) == [1, 3] and rungs(10) == [1, 3, 9] and rungs(1) == []
    assert rungs(20, min_epochs=2, eta=2) == [2, 4, 8, 16]


def test_nondominated_ranks_match_a_brute_force_definition():
    rnd = random.Random(0)
    pts = [(rnd.random(), rnd.random()) for _ in range(40)] + [(0.5, 0.5), (0.5, 0.5)]
    ranks = nondominated_ranks(pts)
    for i, p in enumerate(pts):
        dominated_by = [j for j, q in enumerate(pts) if q[0] >= p[0] and q[1] <= p[1] and q != p]
        assert (ranks[i] == 0) == (not dominated_by)
        assert all(ranks[j] < ranks[i] for j in dominated_by)


def test_hypervolume_against_a_grid_count():
    rnd = random.Random(1)
    pts = [(rnd.random(), rnd.random()) for _ in range(12)]
    ref = (0.0, 1.0)
    n = 400
    cells = sum(
        1
        for i, j in itertools.product(range(n), range(n))
        if any(p[0] >= (i + 0.5) / n and p[1] <= (j + 0.5) / n for p in pts)
    )
    assert abs(hypervolume(pts, ref) - cells / n / n) < 5e-3
    assert hypervolume([], ref) == 0 and hypervolume([(0.5, 2.0)], ref) == 0  # beyond the reference
    assert pareto_front([(0.9, 2.0), (0.5, 1.0), (0.4, 3.0)]) == [0, 1]


def test_decision_keeps_the_best_third_by_fronts_with_a_defined_tie_break():
    p = MOASHA(eta=3)
    others = [(0, 0.9, 10.0), (1, 0.5, 1.0), (2, 0.4, 5.0), (3, 0.3, 6.0), (4, 0.2, 7.0)]
    # 6 trials at the rung -> 2 continue. Front 0 = {0, 1}; trial 5 (0.95, 20) is also non-dominated
    # and wins the tie-break on accuracy.
    d = p.decide((5, 0.95, 20.0), others, 1)
    assert d.keep and d.position == 0 and d.competitors == 6 and d.kept == 2
    d = p.decide((5, 0.35, 5.5), others, 1)
    assert not d.keep and "pruned at epoch 1" in str(d)
    # fewer than eta trials: only the best continues (as Optuna's successive halving)
    assert p.decide((9, 0.1, 1.0), [(0, 0.2, 0.5)], 1).keep is False
    assert p.decide((9, 0.3, 0.5), [(0, 0.2, 0.5)], 1).keep is True
    # a rung where every accuracy is the same (a detector's mAP is 0 before it finds a box) prunes nobody:
    # the decision would otherwise be latency's alone
    d = p.decide((9, 0.0, 9.0), [(0, 0.0, 1.0), (1, 0.0, 2.0), (2, 0.0, 3.0)], 1)
    assert d.keep and d.within_noise.startswith("every trial at this rung has accuracy 0.0000"), d
    assert p.decide((9, 0.0, 9.0), [(0, 0.001, 1.0), (1, 0.0, 2.0), (2, 0.0, 3.0)], 1).keep is False


def test_replay_prunes_and_keeps_the_baseline():
    rnd = random.Random(2)
    recs = [Recorded(0, "base", (0.2, 0.4, 0.5, 0.55), 1.0, baseline=True)]
    recs += [
        Recorded(i, f"a{i}", tuple(sorted(rnd.random() for _ in range(4))), rnd.uniform(1, 2)) for i in range(1, 30)
    ]
    full, moasha = replay_none(recs), replay_moasha(recs)
    assert full.epochs == 120 and len(full.completed) == 30
    assert moasha.epochs < full.epochs / 2 and recs[0] in moasha.completed


def test_replay_within_noise_stops_fewer_members_of_the_confirmed_front():
    """Ten architectures whose epoch-1 accuracies differ by less than the seed noise: the plain rung
    decision prunes by that noise, the noise-aware one keeps what it cannot tell apart, and the count
    of confirmed-front members stopped says so."""
    from nas.search._pruning import confirmed_front, noise_from_records, replay_moasha

    base = Recorded(
        0,
        "base",
        (0.50, 0.80, 0.85, 0.86),
        1.0,
        True,
        (0.99, 1.01),
        ((0.44, 0.79, 0.84, 0.86), (0.56, 0.81, 0.86, 0.87)),
    )
    # mean final accuracy rises with the number; epoch-1 accuracy falls with it, by less than the noise;
    # latencies rise a little, inside each other's intervals
    recs = [base] + [
        Recorded(
            i,
            f"a{i}",
            (0.50 - 0.005 * i, 0.8, 0.85, 0.86 + 0.004 * i),
            1.0 + 0.002 * i,
            False,
            (0.97 + 0.002 * i, 1.03 + 0.002 * i),
            ((0.5, 0.8, 0.85, 0.86 + 0.004 * i),) * 2,
        )
        for i in range(1, 10)
    ]
    noise = noise_from_records(recs)
    assert noise[0] == pytest.approx(statistics.stdev([0.50, 0.44, 0.56]))
    front = confirmed_front(recs)
    plain, aware = replay_moasha(recs), replay_moasha(recs, noise_sd=noise)
    stopped = lambda res: len(front - {r.arch for r in res.completed})  # noqa: E731
    assert stopped(plain) > 0 and stopped(aware) == 0
    assert aware.epochs > plain.epochs, "the price: more epochs"
    assert aware.method.endswith("within noise")


def test_tpe_samples_after_pruned_trials_that_carry_learning_curves():
    """Every epoch's accuracy goes to the storage as an intermediate value (the dashboard's curves).
    Optuna's TPE ranks pruned trials by their last intermediate value in the study's single direction,
    which a multi-objective study refuses to give: plain TPE stops at the first such trial. The search's
    own sampler goes on sampling, and ranks pruned trials by their last accuracy, higher is better: after
    pruned trials only, where one arm's curves end highest (and start lowest), it proposes that arm."""
    import collections

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from nas.search._samplers import _AccuracyView, make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    arms = ["none", "se", "eca"]

    def proposals(best: str, sampler) -> collections.Counter:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        dist = {"stage4.mechanism": CategoricalDistribution(arms)}
        for i in range(21):  # 7 pruned trials per arm: the best arm's curve starts lowest and ends highest
            name = arms[i % 3]
            curve = {1: 0.1, 2: 0.9} if name == best else {1: 0.5, 2: 0.3}
            study.add_trial(
                create_trial(
                    state=TrialState.PRUNED,
                    params={"stage4.mechanism": name},
                    distributions=dist,
                    intermediate_values={k: v + i / 1000 for k, v in curve.items()},
                )
            )
        seen = collections.Counter()
        for _ in range(20):
            trial = study.ask()
            seen[trial.suggest_categorical("stage4.mechanism", arms)] += 1
            study.tell(trial, state=TrialState.FAIL)  # the observations stay the 21 pruned trials
        return seen

    with pytest.raises(RuntimeError, match="multi-objective"):
        proposals("se", optuna.samplers.TPESampler(seed=0))
    for best in arms:  # each arm in turn: the proposals follow the curves' last values, not an arm's place
        seen = proposals(best, make_sampler("tpe", 0))
        # at random an arm gets about 7 of 20; ranked by the first value, or lower-is-better, the others win
        assert seen[best] >= 16, (best, seen)

    study = optuna.create_study(directions=["maximize", "minimize"])
    view = _AccuracyView(study)
    assert view.direction == optuna.study.StudyDirection.MAXIMIZE
    assert view.directions == study.directions and view.trials == study.trials


def test_the_search_sampler_reads_the_trials_once_a_proposal_and_proposes_as_when_reading_them_each_time(
    monkeypatch,
):
    """TPE with the constant liar reads every trial again for each parameter; the search's sampler reads
    them once per proposal, which changes nothing it proposes."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import create_trial

    from nas.search import _samplers

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names = [f"stage{i}.mechanism" for i in range(1, 6)]
    choices = ["none", "se", "eca", "cbam"]

    def run() -> tuple[list[tuple[str, ...]], int]:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=_samplers.make_sampler("tpe", 3))
        dist = {n: CategoricalDistribution(choices) for n in names}
        for i in range(30):
            params = {n: choices[(i * (k + 1)) % 4] for k, n in enumerate(names)}
            study.add_trial(create_trial(values=[i % 7 / 7, i % 5], params=params, distributions=dist))
        reads = 0
        get_all = study._storage.get_all_trials

        def counted(*a, **k):
            nonlocal reads
            reads += 1
            return get_all(*a, **k)

        monkeypatch.setattr(study._storage, "get_all_trials", counted)
        proposed = []
        for _ in range(8):
            trial = study.ask()
            proposed.append(tuple(trial.suggest_categorical(n, choices) for n in names))
            study.tell(trial, [0.5, 2.0])
        return proposed, reads

    once, reads_once = run()
    monkeypatch.setattr(_samplers.CurveAwareTPE, "_view", lambda self, study, trial: _samplers._AccuracyView(study))
    every, reads_every = run()
    assert once == every
    assert reads_every - reads_once >= 8 * (len(names) - 1), (reads_once, reads_every)
