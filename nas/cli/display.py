"""The live terminal display of ``nas search`` (rich)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import optuna
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from nas.cli.console import console, plain, shown
from nas.search import Reporter
from nas.study.confirmation import noise_of
from nas.study.record import TrialInfo
from nas.study.studies import count_states, front

if TYPE_CHECKING:
    from nas.core.architecture import Architecture

SUMMARY_S = 5.0  # a re-run's status line reads the summary again at most this often (trial ends always do)


class LiveReporter(Reporter):
    """Progress over trials, the current trial (architecture, epoch, accuracy so far), counts by state
    and the current front. The counts, the noise line and the front are read from the study when the
    search starts and when a trial ends, and on a re-run's status line (noise floor, confirmation) at most
    every ``SUMMARY_S``; never while a trial runs, whose start, steps, epochs and status lines change
    nothing in them: the reads take about 20 ms (45 ms at 500 trials on SQLite), outside the batches,
    so a trial's time, and a step's line is drawn every 0.5 s on the training thread."""

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        )
        self.task = self.progress.add_task("trials", total=1)
        self.current = Text("")
        self.counts = Text("")
        self.front = Table()
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)
        self.study: optuna.Study | None = None
        self._metric = "val acc"  # each epoch's line names the study's first objective (search_start)
        self._polled = 0.0
        self._summarised = 0.0  # when the counts, noise line and front were last read from the study
        self._epoch: tuple[int, int] | None = None  # the epoch being trained, for the "validating" line

    def _render(self) -> Group:
        return Group(self.progress, self.current, self.counts, self.front)

    def __enter__(self) -> LiveReporter:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    def search_start(self, study: optuna.Study, target: int) -> None:
        self.study = study
        first = (study.metric_names or ["accuracy"])[0]
        self._metric = "val acc" if first == "accuracy" else f"val {first}"
        self.progress.update(self.task, total=target, completed=min(target, self._done()))
        self._refresh()

    def _done(self) -> int:
        c = count_states(self.study)
        return c["complete"] + c["pruned"] + c["infeasible"]

    def trial_start(self, number: int, arch: Architecture) -> None:
        self._epoch = None
        self._trial = plain(f"trial {number}: {arch}")
        self.current = Text(self._trial)
        self._refresh(summary=False)  # the previous trial's end read it; nothing changed since

    def status(self, text: str) -> None:
        head = getattr(self, "_trial", "")
        text = plain(text)
        if text == "validating" and self._epoch:
            text = f"epoch {self._epoch[0]}/{self._epoch[1]} validating"
        self.current = Text(f"{head}  {text}" if head and not text.startswith(("noise", "confirm")) else text)
        # within a trial never (its end reads it); for the re-runs' progress at most every SUMMARY_S
        self._refresh(summary=not head and time.monotonic() - self._summarised >= SUMMARY_S)

    def epoch(self, number: int, epoch: int, epochs: int, acc: float) -> None:
        self.current = Text(f"{getattr(self, '_trial', '')}  epoch {epoch}/{epochs} done, {self._metric} {acc:.4f}")
        self._refresh(summary=False)

    def step(self, number: int, epoch: int, epochs: int, step: int, steps: int, samples_per_s: float) -> None:
        self._epoch = (epoch, epochs)
        row = Table.grid(padding=(0, 1))
        row.add_row(
            Text(f"{getattr(self, '_trial', '')}  epoch {epoch}/{epochs} training"),
            ProgressBar(total=steps, completed=step, width=24),
            Text(f"{step}/{steps} steps, {samples_per_s:,.0f} samples/s"),
        )
        self.current = row
        self._refresh(summary=False)

    def trial_end(self, trial: optuna.trial.FrozenTrial) -> None:
        self.progress.update(self.task, completed=self._done())
        self._trial = ""
        reason = plain(TrialInfo.of(trial).stop_reason)
        self.current = Text(f"trial {trial.number}: {trial.state.name.lower()} - {reason}")
        self._refresh()

    def print(self, line: str) -> None:
        """A line above the live display (the workers' lines, with --workers)."""
        self.live.console.print(plain(line), markup=False, highlight=False)

    def poll(self) -> None:
        """Progress and counts read again from the study (other processes run the trials), at most
        every 2 s."""
        if time.monotonic() - self._polled < 2.0:
            return
        self._polled = time.monotonic()
        self.progress.update(self.task, completed=self._done())
        self.current = Text("workers running")
        self._refresh()

    def _refresh(self, summary: bool = True) -> None:
        """Draw again; with ``summary``, the counts, noise line and front read again from the study."""
        if summary and self.study is not None:
            self._summarised = time.monotonic()
            c = count_states(self.study)
            noise = noise_of(self.study)
            self.counts = Text(
                f"complete {c['complete']}  pruned {c['pruned']}  infeasible {c['infeasible']}  "
                f"failed {c['failed']}  copies {c['copies']} (not counted)    "
                + (str(noise) if noise else "noise: not measured yet (the baseline's seeds)")
            )
            self.front = front_table(self.study, limit=8)
        self.live.update(self._render())


def front_table(
    study: optuna.Study, limit: int | None = None, title: str = "current Pareto front (one run each; not yet confirmed)"
) -> Table:
    """The front as the trials stored it: single runs (the noise line above says how far to trust a
    difference) with each latency's 95% interval."""
    names = study.metric_names or ["accuracy", "latency_ms"]
    table = Table(title=title, title_justify="left")
    for col in ("trial", "architecture", names[0], names[1]):
        table.add_column(col, overflow="fold")
    rows = front(study)
    for t in rows[:limit]:
        info = TrialInfo.of(t)
        ci = info.latency_ci_ms if names[1] == "latency_ms" else None
        second = f"{t.values[1]:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")
        table.add_row(str(t.number), shown(info.arch or "?"), f"{t.values[0]:.4f}", second)
    return table


class LineReporter(Reporter):
    """One plain line per finished trial: the output of a worker process of ``--workers``."""

    def trial_end(self, trial: optuna.trial.FrozenTrial) -> None:
        values = f" {trial.values[0]:.4f} {trial.values[1]:.4g}" if trial.values else ""
        info = TrialInfo.of(trial)
        print(
            plain(f"trial {trial.number} {trial.state.name.lower()}{values}: {info.arch or '?'} - {info.stop_reason}"),
            flush=True,
        )
