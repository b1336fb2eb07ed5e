"""Multi-objective successive halving and hypervolume, against direct computations."""

import itertools
import random

from nas.pruning import MOASHA, Recorded, hypervolume, nondominated_ranks, pareto_front, replay_moasha, replay_none, rungs


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
    cells = sum(1 for i, j in itertools.product(range(n), range(n))
                if any(p[0] >= (i + 0.5) / n and p[1] <= (j + 0.5) / n for p in pts))
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


def test_replay_prunes_and_keeps_the_baseline():
    rnd = random.Random(2)
    recs = [Recorded(0, "base", (0.2, 0.4, 0.5, 0.55), 1.0, baseline=True)]
    recs += [Recorded(i, f"a{i}", tuple(sorted(rnd.random() for _ in range(4))), rnd.uniform(1, 2)) for i in range(1, 30)]
    full, moasha = replay_none(recs), replay_moasha(recs)
    assert full.epochs == 120 and len(full.completed) == 30
    assert moasha.epochs < full.epochs / 2 and recs[0] in moasha.completed
