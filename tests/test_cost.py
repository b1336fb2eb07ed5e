"""Latency measurement: quiet blocks are told from disturbed ones by a reference workload."""

import pytest
import torch

from nas.measure import cost
from nas.measure.cost import Latency, LatencyMeter, LatencyTarget


class Machine:
    """A simulated machine with its own clock (patched into nas.measure.cost, so real load on the test machine
    cannot interfere): the model takes 1 ms and the reference 0.2 ms, 1.5x as long while the machine
    is busy: always, or from ``busy_from`` to ``busy_until`` seconds after the timed blocks begin (the
    first reference call)."""

    def __init__(self, busy_from: float = 0.0, busy_until: float = float("inf")):
        self.window = busy_from, busy_until
        self.now = 0.0
        self.t0: float | None = None

    def perf_counter(self) -> float:
        return self.now

    @property
    def busy(self) -> bool:
        return self.t0 is not None and self.window[0] <= self.now - self.t0 < self.window[1]

    def model(self) -> None:
        self.now += (1.5 if self.busy else 1.0) / 1e3

    def reference(self) -> None:
        if self.t0 is None:
            self.t0 = self.now
        self.now += (0.3 if self.busy else 0.2) / 1e3


@pytest.fixture
def simulate(monkeypatch):
    """(machine, quiet_ms) -> a LatencyMeter timing on the simulated machine."""

    def make(machine: Machine, quiet_ms: float | None = None) -> LatencyMeter:
        m = LatencyMeter(LatencyTarget(input_size=8, warmup=1, repeats=6), quiet_ms)  # real clock here
        m._reference = machine.reference
        monkeypatch.setattr(cost, "time", machine)
        return m

    return make


def test_blocks_timed_while_the_machine_was_busy_are_left_out(simulate):
    sim = Machine(busy_from=0.1, busy_until=0.25)  # about four blocks
    m = simulate(sim)
    result = m._measure(sim.model)
    assert not result.disturbed
    assert len(result.block_medians) == cost.BLOCKS
    assert max(result.block_medians) == pytest.approx(1.0), "no busy block among those kept"
    assert result.ms == pytest.approx(1.0)
    assert m.quiet_reference_ms == pytest.approx(0.2)


def test_a_machine_busy_throughout_is_reported_not_hidden(simulate):
    sim = Machine()
    result = simulate(sim, quiet_ms=0.2)._measure(sim.model)  # quiet speed known from an earlier run
    assert result.disturbed and len(result.block_medians) == cost.MAX_BLOCKS
    assert result.ms == pytest.approx(1.5)
    assert "machine busy" in str(result)


def test_latency_of_a_real_model_is_positive_and_restores_threads():
    threads = torch.get_num_threads()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    result = LatencyMeter(LatencyTarget(input_size=16, warmup=1, repeats=6, threads=1)).measure(model, 1)
    assert isinstance(result, Latency) and result.ms > 0 and len(result.samples) >= 6
    assert torch.get_num_threads() == threads


def test_a_space_s_rounds_set_how_long_a_paired_latency_is_timed(monkeypatch):
    """``latency.rounds``: at least that many interleaved rounds (one ratio each), and at least PAIRED_S
    per FULL_ROUNDS of them in seconds; fewer rounds than FULL_ROUNDS warm up for that share of
    WARMUP_S, more rounds for WARMUP_S (a longer measurement needs no longer warm-up)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    default = cost.PairedMeter(LatencyTarget(input_size=16, warmup=1), model, 1, reference_ms=1.0)
    assert len(default.measure(model).ratio.samples) >= cost.PAIRED_ROUNDS == 12
    asked = {}
    timer = cost.time_against_reference

    def spy(*args, **kwargs):
        asked.update(rounds=kwargs["rounds"], seconds=kwargs["seconds"], warmup_s=kwargs["warmup_s"])
        return timer(*args, **kwargs)

    monkeypatch.setattr(cost, "time_against_reference", spy)
    few = cost.PairedMeter(LatencyTarget(input_size=16, warmup=1, rounds=8), model, 1, reference_ms=1.0)
    assert len(few.measure(model).ratio.samples) >= 8
    assert asked == {
        "rounds": 8,
        "seconds": pytest.approx(cost.PAIRED_S * 8 / cost.FULL_ROUNDS),
        "warmup_s": pytest.approx(cost.WARMUP_S * 8 / cost.FULL_ROUNDS),
    }
    many = cost.PairedMeter(LatencyTarget(input_size=16, warmup=1, rounds=160), model, 1, reference_ms=1.0)
    assert len(many.measure(model).ratio.samples) >= 160
    assert asked == {"rounds": 160, "seconds": pytest.approx(cost.PAIRED_S * 2), "warmup_s": cost.WARMUP_S}


def test_a_meter_warms_its_reference_up_fully_once_and_calls_it_once_before_later_measurements(monkeypatch):
    """A search times the same reference beside every trial: after the first measurement its warm-up is
    one call, and the calls per timed slot come from its warm time measured then."""
    calls = {"reference": 0}

    class Counted(torch.nn.Conv2d):
        def forward(self, x):
            calls["reference"] += 1
            return super().forward(x)

    reference, candidate = Counted(1, 4, 3), torch.nn.Conv2d(1, 4, 3)
    blocks = []
    block = cost._block

    def spy(fn, device, seconds, at_least):
        before = calls["reference"]
        out = block(fn, device, seconds, at_least)
        blocks.append((calls["reference"] > before, len(out)))
        return out

    monkeypatch.setattr(cost, "_block", spy)
    meter = cost.PairedMeter(LatencyTarget(input_size=16, warmup=4, rounds=8), reference, 1, reference_ms=1.0)
    meter.ratios([candidate])
    first = list(blocks)
    assert first[0][0] and first[0][1] >= 4 and not first[1][0], "first: the reference warmed up fully"
    blocks.clear()
    ratios = meter.ratios([candidate])
    assert blocks[0] == (True, 1), "later: the reference called once before the rounds"
    assert not blocks[1][0] and blocks[1][1] >= 4, "the candidate still warms up fully"
    assert len(ratios[0].samples) >= 8 and all(r > 0 for r in ratios[0].samples)


def test_the_report_times_the_front_again_at_least_remeasure_rounds_though_trials_take_fewer(monkeypatch, tmp_path):
    """A trial's latency is timed at the space's ``latency.rounds`` (12 by default: every trial pays for
    them); ``nas report`` times the front once, so it keeps at least REMEASURE_ROUNDS (32), and more
    when the space asks for more."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from nas.study import analysis
    from nas.tasks.spacefile import load_space

    from _helpers import space_file

    asked = []
    monkeypatch.setattr(
        cost,
        "time_against_reference",
        lambda fns, *a, **k: (asked.append(k["rounds"]) or [cost.Ratio((1.0,))] * len(fns), cost.Timing((1.0,))),
    )
    for rounds, expected in ((16, cost.REMEASURE_ROUNDS), (64, 64)):
        space = load_space(space_file(tmp_path, latency={"input_size": 32, "warmup": 1, "rounds": rounds}))
        study = optuna.create_study(directions=["maximize", "minimize"])
        arch = str(space.baseline())
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, values=[0.9, 1.0], user_attrs={"arch": arch, "baseline": True})
        )
        members = [analysis._member(t) for t in study.trials]
        with monkeypatch.context() as m:
            m.setattr("nas.study.latency.reference_latency_ms", lambda *a, **k: 1.0)
            analysis.remeasure(study, members, space)
        assert asked[-1] == expected == max(rounds, 32)


def test_collections_inside_a_search_skip_what_was_alive_before_and_still_free_what_the_trial_made():
    import gc
    import weakref

    class Node:
        pass

    before = Node()
    before.me = before  # alive when the block begins: left out of collections inside it
    with cost.long_lived_left_out():
        assert gc.get_freeze_count() > 0
        made = Node()
        made.me = made  # a reference cycle, as a trial's Trainer and model leave behind
        gone = weakref.ref(made)
        del made
        cost.release_memory()
        assert gone() is None, "garbage made inside the block is still collected"
    assert gc.get_freeze_count() == 0, "every object handed back to the collector"
    alive = weakref.ref(before)
    del before
    gc.collect()
    assert alive() is None
