"""The thread policy of a search (nas.measure.cpus): its choice follows the free cores, the quota, the
workers sharing the machine and an explicit --threads or OMP_NUM_THREADS, decided without timing
anything; the workers of --workers get the policy, not a fixed count; a trial that trained slower than
its study's others (its architecture's cost divided out) is named in the report."""

from __future__ import annotations

import os

import optuna
import pytest
import torch

from nas.measure import cpus
from nas.measure.cpus import Cores, Sample, ThreadPolicy, busy_between, cgroup_quota, choose
from nas.search._workers import SHARE_ENV, Plan, _workers, plan
from nas.study import record as r
from nas.study.analysis import SLOW_AT, slow_line, slow_trials, timing_summary
from nas.study.record import TrialInfo


@pytest.mark.parametrize(
    ("cores", "workers", "explicit", "threads"),
    [
        (Cores(2), 1, None, 2),  # not measured: the share
        (Cores(2, busy=0.0), 1, None, 2),  # idle
        (Cores(2, busy=0.3), 1, None, 2),  # a light background: 1.7 free counts as 2
        (Cores(2, busy=0.67), 1, None, 1),  # one busy process beside our 2 threads got 2/3 of a core
        (Cores(2, busy=1.0), 1, None, 1),  # one busy process
        (Cores(2, busy=2.0), 1, None, 1),  # two: never below 1
        (Cores(16, busy=3.0), 1, None, 13),
        (Cores(16, busy=12.0), 4, None, 4),  # 4 workers: each sees the 3 others busy, keeps its share
        (Cores(16, busy=13.0), 4, None, 3),  # ... and one more core busy elsewhere
        (Cores(8, quota=2.5), 1, None, 2),  # a cgroup quota of 2.5 cores: 2 whole ones
        (Cores(8, quota=0.5, busy=0.0), 1, None, 1),
        (Cores(2, busy=2.0), 1, 2, 2),  # --threads: kept whatever the machine does
        (Cores(64, busy=0.0), 1, 3, 3),
    ],
)
def test_the_thread_count_follows_free_cores_quota_workers_and_an_explicit_choice(cores, workers, explicit, threads):
    assert choose(cores, workers, explicit) == threads


def test_the_cgroup_quota_is_read_from_v2_or_v1_files(tmp_path):
    assert cgroup_quota(tmp_path) is None  # neither: no limit
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    assert cgroup_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")  # v2 wins where present
    assert cgroup_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5


def test_busy_cores_of_others_come_from_proc_stat_less_this_process(tmp_path):
    stat = tmp_path / "stat"
    # cpu0 and cpu1 allowed, cpu2 not: its counters must not count
    stat.write_text(
        "cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\ncpu1 50 0 50 900 0 0 0 0\ncpu2 999 0 0 1 0 0 0 0\nintr 1 2 3\n"
    )
    s = cpus.sample({0, 1}, stat)
    assert (s.busy, s.total) == (200, 2000)
    assert cpus.sample({0}, tmp_path / "missing") is None
    # over 2 s: 300 of 400 jiffies on 2 CPUs busy (1.5 cores), this process used 1 s of CPU (0.5 cores)
    a, b = Sample(10.0, 0, 0, 3.0), Sample(12.0, 300, 400, 4.0)
    assert busy_between(a, b, 2) == pytest.approx(1.0)
    assert busy_between(a, Sample(12.0, 100, 400, 8.0), 2) == 0.0  # never negative
    assert busy_between(a, Sample(10.1, 300, 400, 4.0), 2) is None  # too short to tell


def test_an_explicit_count_sets_torch_and_measures_nothing(monkeypatch):
    saved = torch.get_num_threads()
    monkeypatch.setattr(cpus, "sample", lambda *a: pytest.fail("measured although the count was given"))
    try:
        assert ThreadPolicy(explicit=1).before_trial() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        policy = ThreadPolicy()
        assert policy.explicit == 2 and policy.before_trial() == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_a_measured_policy_follows_what_others_keep_busy(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    saved = torch.get_num_threads()
    samples = iter([Sample(0.0, 0, 0, 0.0), Sample(1.0, 100, 200, 0.0), Sample(11.0, 1100, 2200, 8.0)])
    monkeypatch.setattr(cpus, "sample", lambda *a: next(samples))
    monkeypatch.setattr(cpus.time, "sleep", lambda s: None)
    monkeypatch.setattr(cpus, "allowed_cpus", lambda: {0, 1})
    monkeypatch.setattr(cpus, "cgroup_quota", lambda: None)
    try:
        policy = ThreadPolicy()
        # first look: half of 2 CPUs busy = 1 core, all of it someone else's
        assert policy.before_trial() == 1 and policy.cores.busy == pytest.approx(1.0)
        # over the trial: 1000 of 2000 jiffies busy (1 core), 8 CPU s of ours in 10 s (0.8): 0.2 others
        assert policy.before_trial() == 2 and policy.cores.busy == pytest.approx(0.2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_workers_measure_their_threads_unless_they_were_given(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    measured = _workers(Plan(2, 4, ()), ["--space", "s.yaml"], print)
    assert all("--threads" not in w.argv and "OMP_NUM_THREADS" not in w.env for w in measured)
    assert all(w.env[SHARE_ENV] == "2" for w in measured)
    fixed = _workers(Plan(2, 3, (), fixed=True), ["--space", "s.yaml"], print)
    assert all(w.argv[w.argv.index("--threads") + 1] == "3" and w.env["OMP_NUM_THREADS"] == "3" for w in fixed)
    assert not plan("2", None).fixed and plan("2", 3).fixed
    assert "up to" in plan("2", None).describe() and "up to" not in plan("2", 3).describe()
    monkeypatch.setenv("OMP_NUM_THREADS", "6")  # a batch system's allocation: shared among the workers
    assert (plan("2", None).threads, plan("2", None).fixed) == (3, True)


def _info(number, seconds, ratio=1.0, epochs=2, threads=2):
    attrs = {r.SECONDS_TRAIN_VAL: seconds, r.LATENCY_RATIO: ratio, r.CURVE: [0.5] * epochs, r.THREADS: threads}
    return TrialInfo(number, optuna.trial.TrialState.COMPLETE, (0.5, 1.0), attrs)


def test_a_trial_slower_than_its_study_by_more_than_the_spread_is_flagged():
    same = [_info(i, 10.0 + 0.1 * i) for i in range(6)]
    assert slow_trials(same) == []
    # 1.6x the time of an architecture that costs 1.6x: not slow; 2x at the same cost, on 1 thread: slow
    flagged = slow_trials([*same, _info(6, 16.0, ratio=1.6), _info(7, 20.6, threads=1)])
    assert [(s.number, s.threads) for s in flagged] == [(7, 1)] and flagged[0].times == pytest.approx(2.0, rel=0.05)
    assert slow_trials([_info(0, 10.0), _info(1, 40.0)]) == []  # too few to tell
    noisy = [_info(i, x) for i, x in enumerate([10, 13, 8, 12, 7, 14, 9, 11])]
    assert slow_trials([*noisy, _info(8, 14.5)]) == []  # within the study's own spread (> SLOW_AT)
    assert 14.5 / 10.5 > SLOW_AT
    line = slow_line(flagged)
    assert "1 trial(s) trained slower" in line and "7 (2.0x, 1 thread(s))" in line and "--threads" in line


def test_the_report_names_slow_trials(tmp_path):
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, seconds in enumerate([10, 10.2, 9.9, 10.1, 10.0, 25.0]):
        trial = study.ask()
        for key, value in _info(i, seconds, threads=2 if i < 5 else 1).attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, [0.5, 1.0])
    slow = timing_summary(study)["slow"]
    assert [(s.number, s.threads) for s in slow] == [(5, 1)]


def test_the_policy_reads_this_machine():
    assert Cores(len(os.sched_getaffinity(0))).usable >= 1
    s = cpus.sample(cpus.allowed_cpus())
    assert s is not None and s.total > 0 and 0 <= s.busy <= s.total


def test_contention_summary_takes_medians_and_ratios_to_the_idle_runs():
    from nas.bench import contention_summary

    def row(policy, busy, wall, timed_out=False, threads=(2,)):
        return {"policy": policy, "busy": busy, "wall_s": wall, "timed_out": timed_out, "threads": list(threads)}

    rows = [
        row("auto", 0, 50.0),
        row("auto", 0, 54.0),
        row("auto", 1, 70.0, threads=(1,)),
        row("auto", 1, 66.0, threads=(1, 2)),
        row("all", 0, 51.0),
        row("all", 1, 400.0, timed_out=True),
    ]
    cells = {(s["policy"], s["busy"]): s for s in contention_summary(rows)}
    assert cells[("auto", 0)]["wall_s"] == 52.0 and cells[("auto", 0)]["vs_auto_idle"] == 1.0
    assert cells[("auto", 1)]["vs_own_idle"] == round(68 / 52, 2) and cells[("auto", 1)]["threads"] == [1, 2]
    assert (cells[("auto", 1)]["min_s"], cells[("auto", 1)]["max_s"], cells[("auto", 1)]["runs"]) == (66.0, 70.0, 2)
    slow = cells[("all", 1)]
    assert slow["timed_out"] and slow["vs_own_idle"] == round(400 / 51, 2)
    assert slow["vs_auto_idle"] == round(400 / 52, 2)
