"""``nas search --workers N``: N worker processes on this machine share one study.

Each worker is ``nas search`` itself (``--worker-index i``), started in its own session with its own
thread count and, on a GPU machine, only its own GPU visible. The parent shows progress, prints the
workers' lines, and watches them:

- a worker that dies (killed, out of host memory): its running trial is failed at once with the
  cause and its architecture queued again, once; a new worker takes its place (at most
  ``RESTARTS`` times per slot). Trials of workers on other machines are covered by the heartbeat.
- a worker that stops with an error: the others are stopped and the error is reported.
- Ctrl-C or SIGTERM to the parent: every worker gets SIGTERM, records its trial as interrupted and
  exits; a worker still there after ``STOP_WAIT_S`` is killed and its trial failed by the parent.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from nas.core.errors import UserError, WorkerFailed
from nas.search._locks import StudyLock
from nas.search._options import check_workers
from nas.study.record import TrialInfo

RESTARTS = 3
STOP_WAIT_S = 60.0
POLL_S = 0.5


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip():
        return [d.strip() for d in listed.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


@dataclass(frozen=True)
class Plan:
    workers: int
    threads: int  # each worker's share of the cores, or --threads
    gpus: tuple[str, ...]  # one per worker (round robin), empty on a CPU-only machine
    fixed: bool = False  # --threads given: no measurement (nas.measure.cpus)

    def describe(self) -> str:
        where = f", GPU {', '.join(self.gpus)}" if self.gpus else ""
        each = f"{self.threads} thread(s) each" if self.fixed else f"up to {self.threads} thread(s) each"
        return f"{self.workers} worker(s), {each}{where}"


def plan(workers: str, threads: int | None, devices_per_trial: int = 1) -> Plan:
    """``--workers`` (N or auto) and ``--threads`` -> how many processes, threads and GPUs. Threads are
    fixed by ``--threads`` (per worker) or ``OMP_NUM_THREADS`` (shared among the workers), else each
    worker takes up to its share of the cores, fewer while other work keeps them busy."""
    from nas.measure.cpus import environment_threads

    gpus = visible_gpus()
    count = check_workers(workers, threads)
    n = count if count is not None else (max(1, len(gpus) // devices_per_trial) if gpus else 1)
    given = environment_threads()
    per_worker = threads or max(1, (given or cpu_count()) // n)
    if gpus and devices_per_trial > 1:  # a DDP trial needs its GPUs together
        groups = [
            ",".join(gpus[i : i + devices_per_trial])
            for i in range(0, len(gpus) - devices_per_trial + 1, devices_per_trial)
        ]
        assigned = tuple(groups[i % len(groups)] for i in range(n)) if groups else ()
    else:
        assigned = tuple(gpus[i % len(gpus)] for i in range(n)) if gpus else ()
    return Plan(n, per_worker, assigned, fixed=threads is not None or given is not None)


PARENT_ENV = "NAS_WORKERS_PARENT"
SHARE_ENV = "NAS_WORKERS_HERE"  # how many workers of the search share this machine's cores


def workers_here() -> int:
    """In a worker of ``--workers``: the number of workers on this machine (1 elsewhere)."""
    from nas.measure.cpus import positive_env

    return positive_env(SHARE_ENV) or 1


def die_with_parent() -> None:
    """In a worker, first thing: SIGTERM when the parent dies (Linux), so no worker is orphaned; and
    if the parent is already gone, stop now. (Done in the worker, not in a preexec_fn, which is unsafe
    while the parent runs threads.)"""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != int(parent):
        raise SystemExit(f"the nas search process that started this worker ({parent}) is gone")


@dataclass
class Worker:
    index: int
    argv: list[str]
    env: dict[str, str]
    on_line: Callable[[str], None]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    tail: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None

    def start(self) -> None:
        self.tail = []
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.pump = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self.pump.start()

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            self.tail = (self.tail + [line])[-20:]
            self.on_line(f"[w{self.index}] {line}")

    @property
    def ident(self) -> str:
        import socket

        assert self.proc is not None
        return f"{socket.gethostname()}:{self.proc.pid}"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def fail_trials_of(study: optuna.Study, lock: StudyLock, ident: str, why: str) -> list[int]:
    """Fail (and queue again, once) the running trials of the worker process ``ident``."""
    from nas.search._study import fail_dead

    failed = []
    with lock.held():
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if TrialInfo.of(t).worker == ident:
                fail_dead(study, t, why)
                failed.append(t.number)
    return failed


def run_workers(
    plan_: Plan,
    child_args: Sequence[str],
    study: optuna.Study,
    lock: StudyLock,
    heartbeat_s: int,
    on_line: Callable[[str], None],
    on_poll: Callable[[], None] = lambda: None,
) -> str:
    """Start the workers and watch them until every one has finished (see the module docstring).
    Every ``heartbeat_s`` it also fails trials silent for 3 heartbeats (workers on other machines),
    so that does not wait until one of its own workers finishes a trial. Raises UserError when a
    worker stopped with an error; re-raises an interruption after stopping every worker. Returns why
    the workers stopped (what the last of them said)."""
    from nas.search._study import fail_stale

    workers = _workers(plan_, child_args, on_line)
    for w in workers:
        w.start()
    try:
        running = list(workers)
        stale_checked = time.monotonic()
        reasons: list[str] = []
        while running:
            time.sleep(POLL_S)
            on_poll()
            if time.monotonic() - stale_checked > heartbeat_s:
                with lock.held():
                    fail_stale(study, heartbeat_s)
                stale_checked = time.monotonic()
            for w in list(running):
                assert w.proc is not None
                code = w.proc.poll()
                if code is not None:
                    running.remove(w)
                    running += _ended(w, code, study, lock, on_line, reasons)
    except BaseException:
        stop_all(workers, study, lock, on_line)
        raise
    return reasons[-1] if reasons else "no worker reported"


def _workers(plan_: Plan, child_args: Sequence[str], on_line: Callable[[str], None]) -> list[Worker]:
    """The worker processes of ``plan_``: ``nas search`` with ``child_args``, its threads and (on a GPU
    machine) its GPU, and the parent's pid to die with."""
    workers = []
    for i in range(plan_.workers):
        fixed = {"OMP_NUM_THREADS": str(plan_.threads), "MKL_NUM_THREADS": str(plan_.threads)}
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            **(fixed if plan_.fixed else {}),  # else each worker measures (nas.measure.cpus)
            **{PARENT_ENV: str(os.getpid()), SHARE_ENV: str(plan_.workers)},
        )
        if plan_.gpus:
            env["CUDA_VISIBLE_DEVICES"] = plan_.gpus[i]
        threads = ["--threads", str(plan_.threads)] if plan_.fixed else []  # else: measured in the worker
        argv = [sys.executable, "-m", "nas", "search", *child_args, *threads]
        workers.append(Worker(i, [*argv, "--worker-index", str(i)], env, on_line))
    return workers


def _ended(
    w: Worker, code: int, study: optuna.Study, lock: StudyLock, on_line: Callable[[str], None], reasons: list[str]
) -> list[Worker]:
    """A worker's process ended with ``code``: its reason noted (exit 0); its input error raised (exit 2);
    killed from outside: its trials failed and queued again, and it restarted (returned) up to RESTARTS
    times; anything else raised as WorkerFailed."""
    if w.pump is not None:
        w.pump.join(timeout=5)  # its last lines (the reason it stopped) are read
    if code == 0:
        reasons += [line[len("done: ") :] for line in w.tail[-1:] if line.startswith("done: ")]
        return []
    if code == 2:  # the worker's own message says what was wrong with the input
        raise UserError(f"worker {w.index} stopped: " + " | ".join(w.tail[-3:]))
    if code < 0 or code in (128 + signal.SIGKILL, 128 + signal.SIGTERM):  # killed from outside
        why = f"worker process {w.proc.pid} {describe_exit(code)}"
        failed = fail_trials_of(study, lock, w.ident, why)
        on_line(f"[w{w.index}] {why}; failed and queued again: trial(s) {failed or 'none running'}")
        if w.restarts < RESTARTS:
            w.restarts += 1
            w.start()
            on_line(f"[w{w.index}] restarted ({w.restarts} of {RESTARTS})")
            return [w]
        reasons.append(f"worker {w.index} died {RESTARTS + 1} times and was not restarted")
        return []
    raise WorkerFailed(f"worker {w.index} failed ({describe_exit(code)}): " + " | ".join(w.tail[-5:]))


def stop_all(workers: Sequence[Worker], study: optuna.Study, lock: StudyLock, on_line: Callable[[str], None]) -> None:
    """SIGTERM to every live worker; wait; kill every one still there, then fail their trials (after
    the kills: a straggler may hold the study lock)."""
    live = [w for w in workers if w.proc is not None and w.proc.poll() is None]
    for w in live:
        w.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT_S
    killed = []
    for w in live:
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
            killed.append(w)
    for w in killed:
        fail_trials_of(
            study,
            lock,
            w.ident,
            f"worker process {w.proc.pid} did not stop within {STOP_WAIT_S:.0f} s of SIGTERM and was killed",
        )
        on_line(f"[w{w.index}] killed: it did not stop within {STOP_WAIT_S:.0f} s")
