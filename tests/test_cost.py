"""Latency measurement: quiet blocks are told from disturbed ones by a reference workload."""

import time

import pytest
import torch

from nas import cost
from nas.cost import Latency, LatencyMeter, LatencyTarget


def spin(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


class Machine:
    """A simulated machine on which everything takes 1.5x as long while it is busy: always, or from
    ``busy_from`` to ``busy_until`` seconds after the timed blocks begin (the first reference call)."""

    def __init__(self, busy_from: float = 0.0, busy_until: float = float("inf")):
        self.window = busy_from, busy_until
        self.t0: float | None = None

    @property
    def busy(self) -> bool:
        if self.t0 is None:
            return False
        t = time.perf_counter() - self.t0
        return self.window[0] <= t < self.window[1]

    def model(self) -> None:
        spin(1.5 if self.busy else 1.0)

    def reference(self) -> None:
        if self.t0 is None:
            self.t0 = time.perf_counter()
        spin(0.3 if self.busy else 0.2)


def meter(machine: Machine, quiet_ms: float | None = None) -> LatencyMeter:
    m = LatencyMeter(LatencyTarget(input_size=8, warmup=1, repeats=6), quiet_ms)
    m._reference = machine.reference
    return m


def test_blocks_timed_while_the_machine_was_busy_are_left_out():
    machine = Machine(busy_from=0.1, busy_until=0.4)  # about four blocks
    m = meter(machine)
    result = m._measure(machine.model)
    assert not result.disturbed
    assert len(result.block_medians) == cost.BLOCKS
    assert max(result.block_medians) < 1.2, "no busy block among those kept"
    assert result.ms == pytest.approx(1.0, rel=0.05), result.block_medians
    assert m.quiet_reference_ms == pytest.approx(0.2, rel=0.05)


def test_a_machine_busy_throughout_is_reported_not_hidden():
    machine = Machine()
    result = meter(machine, quiet_ms=0.2)._measure(machine.model)  # quiet speed known from an earlier run
    assert result.disturbed and len(result.block_medians) == cost.MAX_BLOCKS
    assert result.ms == pytest.approx(1.5, rel=0.05)
    assert "machine busy" in str(result)


def test_latency_of_a_real_model_is_positive_and_restores_threads():
    threads = torch.get_num_threads()
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    result = cost.measure_latency(model, LatencyTarget(input_size=16, warmup=1, repeats=6, threads=1), 1)
    assert isinstance(result, Latency) and result.ms > 0 and len(result.samples) >= 6
    assert torch.get_num_threads() == threads
