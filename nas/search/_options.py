"""The options of ``nas search``, checked once (``SearchOptions``) and turned back into a command line
(``to_argv``) wherever a search is started as a process: the workers of ``--workers``, ``nas bench
workers``. Imports nothing heavy: the command line checks its options before torch or Optuna load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nas.core.errors import MAX_SEED, MAX_THREADS, BadOption, check_range
from nas.core.names import check_name
from nas.study.stores import store_location

SAMPLERS = ("tpe", "nsga2", "random", "gp", "bruteforce")
HEARTBEAT_S = 10  # a running trial records a heartbeat this often; silent for 3 of them, it is failed
MAX_WORKERS = 256  # worker processes on one machine
MAX_TRIALS = 1_000_000
WORKERS_ALLOWED = f"an integer from 1 to {MAX_WORKERS}, or auto (one per visible GPU, one on a CPU-only machine)"


def check_numbers(*, trials: int, timeout: float | None, sampler: str, eta: int, heartbeat: int) -> None:
    """The rules for the search's own settings; ``SearchOptions`` and ``Search`` both apply them."""
    check_range("--trials", trials, 1, MAX_TRIALS)
    if timeout is not None and not timeout > 0:
        raise BadOption("--timeout", timeout, "a positive number of seconds")
    if sampler not in SAMPLERS:
        raise BadOption("--sampler", sampler, f"one of {', '.join(SAMPLERS)}")
    if eta < 2:
        raise BadOption("--eta", eta, "an integer >= 2")
    check_range("--heartbeat", heartbeat, 1, 3600, "a whole number of seconds")


def check_workers(workers: str, threads: int | None) -> int | None:
    """``--workers`` as a count (None for auto) and ``--threads``, checked."""
    if workers != "auto" and not (workers.isdigit() and 1 <= int(workers) <= MAX_WORKERS):
        raise BadOption("--workers", workers, WORKERS_ALLOWED)
    if threads is not None:
        check_range("--threads", threads, 1, MAX_THREADS, "threads per worker")
    return None if workers == "auto" else int(workers)


@dataclass(frozen=True)
class SearchOptions:
    """Everything ``nas search`` was told, checked at construction."""

    space: Path
    trials: int = 50
    timeout: float | None = None
    study: str | None = None
    storage: str | None = None
    seed: int = 0
    sampler: str = "tpe"
    prune: bool = True
    eta: int = 3
    workers: str = "1"
    threads: int | None = None
    heartbeat: int = HEARTBEAT_S
    artifacts: str | None = None

    def __post_init__(self) -> None:
        check_numbers(
            trials=self.trials, timeout=self.timeout, sampler=self.sampler, eta=self.eta, heartbeat=self.heartbeat
        )
        check_workers(self.workers, self.threads)
        check_range("--seed", self.seed, 0, MAX_SEED)
        if self.study is not None:
            check_name(self.study, "--study")
        if self.artifacts is not None:
            store_location(self.artifacts, Path("."))  # its form, before anything loads
        if self.storage is not None and not self.storage.strip():
            raise BadOption("--storage", self.storage, "an Optuna storage URL, e.g. sqlite:///runs/x/study.db")

    def to_argv(self) -> list[str]:
        """The ``nas search`` arguments that give these options (``--workers`` and ``--threads`` left
        out: the caller says how each process runs)."""
        argv = [
            "--space",
            str(self.space),
            "--trials",
            str(self.trials),
            "--seed",
            str(self.seed),
            "--sampler",
            self.sampler,
            "--prune" if self.prune else "--no-prune",
            "--eta",
            str(self.eta),
            "--heartbeat",
            str(self.heartbeat),
        ]
        if self.study is not None:
            argv += ["--study", self.study]
        if self.storage is not None:
            argv += ["--storage", self.storage]
        if self.timeout is not None:
            argv += ["--timeout", repr(self.timeout)]
        if self.artifacts is not None:
            argv += ["--artifacts", self.artifacts]
        return argv
