"""``nas bench decisions`` as a test: the whole decision pipeline replayed on the shipped recording and on
studies simulated with its noise (seeded: the same replays every run), no training. What a user relies
on: the race calls a null architecture better in at most 5% of studies, finds planted winners that
today's rule misses, and spends at most twice today's trainings; the pruning table names how often each
method stopped a planted winner."""

import json
import math
from pathlib import Path

import pytest

from nas import bench, decisions

from _helpers import run_nas

RECORDING = Path(__file__).parent.parent / "spaces" / "recorded" / "small-noprune.json"


@pytest.fixture(scope="module")
def rows():
    return bench.load_recorded(RECORDING)


def test_the_noise_model_is_the_recordings_two_way_table(rows):
    import statistics

    noise = decisions.noise_model(rows)
    table = [[c[-1] for c in (r.curve, *r.seed_curves)] for r in rows]
    a, s = len(table), len(table[0])
    grand = statistics.fmean(v for row in table for v in row)
    means = [statistics.fmean(row) for row in table]
    cols = [statistics.fmean(row[j] for row in table) for j in range(s)]
    ss = sum((table[i][j] - means[i] - cols[j] + grand) ** 2 for i in range(a) for j in range(s))
    assert noise.dof == (a - 1) * (s - 1)
    assert noise.run_sd[-1] == pytest.approx(math.sqrt(ss / noise.dof), rel=1e-9), "the residual of one run"
    shared = statistics.variance(cols) - noise.run_sd[-1] ** 2 / a  # the seed's effect, its own noise removed
    assert noise.seed_sd[-1] == pytest.approx(math.sqrt(max(shared, 0.0)), rel=1e-9)
    assert len(noise.run_sd) == len(rows[0].curve) and noise.run_sd[0] > noise.run_sd[-1], "early epochs are noisier"


def test_a_replay_is_repeatable_and_both_rules_see_the_same_runs(rows):
    a = decisions.replay(rows, "planted", 4, confirm=3, noise_seeds=3, eta=0, delta=0.005)
    b = decisions.replay(rows, "planted", 4, confirm=3, noise_seeds=3, eta=0, delta=0.005)
    assert a.members == b.members and a.race.labels == b.race.labels and a.today.labels == b.today.labels
    assert set(a.today.labels) == set(a.members) and set(a.race.labels) == set(a.raced) >= set(a.members)
    assert sorted(a.world.effects.values()) == sorted(decisions.PLANTED)
    assert a.world.curve(0, 1) == b.world.curve(0, 1) and a.world.curve(0, 1) != a.world.curve(0, 2)


def test_the_race_controls_false_better_and_has_power_within_twice_todays_trainings(rows):
    results, facts = decisions.bench_decisions(rows, 60, kinds=("null", "planted"), eta=0)
    by = {(r["world"], r["rule"]): r for r in results}
    for world in ("null", "planted"):
        assert by[(world, "race")]["false_better"] <= 0.05, by[(world, "race")]
        assert by[(world, "race")]["trainings"] <= 2 * by[(world, "today")]["trainings"]
    planted_race, planted_today = by[("planted", "race")], by[("planted", "today")]
    assert planted_race["confirm_power_+3"] >= 0.9 and planted_today["confirm_power_+3"] < 0.7
    assert planted_race["confirm_power_+2"] > planted_today["confirm_power_+2"] + 0.3
    assert facts["dof"] == 80 and facts["seconds_per_100"] > 0
    assert by[("null", "race")]["regret"] == 0.0, "a null world has nothing to regret"


def test_the_cli_prints_the_table_and_writes_it(tmp_path):
    r = run_nas(
        "bench", "decisions", "--curves", RECORDING, "--replays", 10, "--worlds", "recording,planted", "--out", tmp_path
    )
    assert r.returncode == 0, r
    assert "false better" in r.stdout and "today" in r.stdout and "per 100" in r.stdout and "pruned" in r.stdout
    saved = json.loads((tmp_path / "decisions.json").read_text())
    assert [(x["world"], x["rule"]) for x in saved["rows"]] == [
        ("recording", "today"),
        ("recording", "race"),
        ("planted", "today"),
        ("planted", "race"),
    ]
    bad = run_nas("bench", "decisions", "--curves", RECORDING, "--worlds", "null,moon", "--out", tmp_path)
    assert bad.returncode == 2 and "--worlds" in bad.stderr and "moon" in bad.stderr


@pytest.mark.parametrize(
    "options,words",
    [
        ({"delta": 1.5}, "--equivalence: 150.0 is not allowed; a number from 0.0 to 100.0 (points)"),
        ({"near": 11.0}, "--near: 11.0 is not allowed; a number from 0.0 to 10.0 (noise sds)"),
    ],
)
def test_margins_outside_the_space_settings_bounds_are_refused_before_any_replay(rows, options, words):
    """--equivalence and --near stand for training.equivalence and training.confirm_near: the same bounds."""
    from nas.core.errors import BadOption

    with pytest.raises(BadOption) as e:
        decisions.bench_decisions(rows, 1, kinds=["null"], **options)
    assert words in str(e.value)


def test_the_pruning_table_says_how_often_each_method_stopped_a_planted_winner(rows):
    results, _ = bench.bench_pruning(rows, 3, planted=30)
    none, *pruned = results
    assert none["planted_stopped"] == {"+1": 0.0, "+2": 0.0, "+3": 0.0}, "no pruning stops nothing"
    for r in pruned:
        assert set(r["planted_stopped"]) == {"+1", "+2", "+3"} and r["planted_worlds"] == 30
        assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in r["planted_stopped"].values())
    assert max(v for r in pruned for v in r["planted_stopped"].values()) > 0, "pruning does stop winners here"
