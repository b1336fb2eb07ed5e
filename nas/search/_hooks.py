"""What the search does while a task's fit runs (``nas.core.task.FitHooks``): a trial's hooks store its
curve after every epoch and ask the pruner at the rungs (``TrialHooks``); a re-run's only show where it
is (``RerunHooks``). Both hold the latency gate around every batch, so no worker of this machine trains
while another measures latency, and stop at a batch's end for a Ctrl-C whose exception was lost."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nas.core import signals as signals
from nas.core.task import FitHooks
from nas.search._locks import LatencyGate
from nas.search._pruning import MOASHA, Entry, TrialRecord, rung_values
from nas.study.record import CURVE, EPOCHS_PER_RANK, PRUNED_AT, SECONDS_TRAIN_VAL, rung_key


class GateHooks(FitHooks):
    """The latency gate's shared lock during every training and validation batch."""

    def __init__(self, gate: LatencyGate | None):
        self.gate = gate

    def batch_start(self) -> None:
        if self.gate is not None:
            self.gate.batch_start()

    def batch_end(self) -> None:
        if self.gate is not None:
            self.gate.batch_end()
        signals.raise_if_received()  # a Ctrl-C whose exception was lost stops here

    def release(self) -> None:
        if self.gate is not None:
            self.gate.batch_end()


class Display:
    """Where a trial's progress is shown (the search's Reporter, bound to one trial); None in DDP ranks."""

    def __init__(self, reporter: Any, number: int, epochs: int):
        self.reporter, self.number, self.epochs = reporter, number, epochs

    def epoch(self, epoch: int, value: float) -> None:
        self.reporter.epoch(self.number, epoch, self.epochs, value)

    def step(self, epoch: int, step: int, steps: int, rate: float) -> None:
        self.reporter.step(self.number, epoch, self.epochs, step, steps, rate)

    def phase(self, text: str) -> None:
        self.reporter.status(text)


class TrialHooks(GateHooks):
    """A trial's fit: after every epoch its curve is stored in the trial (and as Optuna's intermediate
    values, the learning curve optuna-dashboard draws), and at a rung the pruner decides from every
    trial's stored curve whether it goes on; the decision is stored too (``PRUNED_AT``), so the process
    that started a spawned DDP fit reads the outcome from the storage. It travels into DDP ranks
    (without a display), where only rank 0 calls it."""

    def __init__(
        self,
        record: TrialRecord,
        latency: Entry,
        max_epochs: int,
        pruner: MOASHA | None,
        gate: LatencyGate | None,
        *,
        exempt: bool = False,
        display: Display | None = None,
        noise_sd: Sequence[float] = (),
    ):
        """``latency``: (latency, low, high); ``noise_sd``: the seed-to-seed sd of the quality per epoch
        (empty while the noise floor is not measured); ``exempt``: never pruned (the baseline)."""
        super().__init__(gate)
        self.record, self.latency, self.max_epochs = record, tuple(latency), max_epochs
        self.noise_sd = [0.0 if v != v else float(v) for v in noise_sd]  # nan (unknown) -> no tolerance
        self.pruner, self.exempt, self.display = pruner, exempt, display
        self.rungs = set(pruner.rungs(max_epochs)) if pruner else set()

    def epoch_end(self, curve: Sequence[float], extra: Mapping[str, Sequence[float]]) -> bool:
        curve = list(curve)
        for key, values in extra.items():  # a detector's mAP50 beside its mAP50-95
            self.record.set(key, list(values))
        self.record.set(CURVE, curve)
        epoch = len(curve)
        # the learning curve in optuna-dashboard: Optuna refuses Trial.report in multi-objective
        # studies, its storage does not
        self.record.storage.set_trial_intermediate_value(self.record.trial_id, epoch, curve[-1])
        if self.display:
            self.display.epoch(epoch, curve[-1])
        if epoch in self.rungs and not self.exempt:
            others = [v for v in rung_values(self.record.trials(), epoch) if v[0] != self.record.number]
            sd = self.noise_sd[epoch - 1] if epoch <= len(self.noise_sd) else 0.0
            decision = self.pruner.decide((self.record.number, curve[-1], *self.latency), others, epoch, sd)
            if decision.within_noise:
                self.record.set(rung_key(epoch), str(decision))
            if not decision.keep:
                self.record.set(PRUNED_AT, str(decision))
                return True
        return False

    def step(self, epoch: int, step: int, steps: int, samples_per_s: float) -> None:
        if self.display:
            self.display.step(epoch, step, steps, samples_per_s)

    def phase(self, text: str) -> None:
        if self.display:
            self.display.phase(text)

    def fit_end(self, seconds_train_val: float, epochs_per_rank: Sequence[int] | None) -> None:
        if epochs_per_rank is not None:  # evidence that every rank stopped after the same epoch
            self.record.set(EPOCHS_PER_RANK, list(epochs_per_rank))
        self.record.set(SECONDS_TRAIN_VAL, round(seconds_train_val, 3))


class RerunHooks(GateHooks):
    """A re-run's fit (noise floor, confirmation): the whole budget, no pruning; ``status`` says where it is.
    ``every_epoch``: validated after every epoch, else after the last one only."""

    def __init__(
        self,
        gate: LatencyGate | None,
        status: Callable[[str], None],
        what: str,
        epochs: int,
        metric: str,
        every_epoch: bool = True,
    ):
        super().__init__(gate)
        self.status, self.what, self.epochs, self.metric = status, what, epochs, metric
        self.every_epoch = every_epoch

    def epoch_end(self, curve: Sequence[float], extra: Mapping[str, Sequence[float]]) -> bool:
        epoch = len(curve) if self.every_epoch else self.epochs
        self.status(f"{self.what}, epoch {epoch}/{self.epochs} done, {self.metric} {curve[-1]:.4f}")
        return False
