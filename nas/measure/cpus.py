"""How many CPU threads a search process trains with: the cores it may use (its affinity and its
cgroup's CPU quota), shared among the workers of this machine, less the cores that other processes
keep busy, measured from ``/proc/stat`` over the last trial and checked again before the next one.

Why: torch's parallel regions end in a barrier, so when one of its threads waits for a core that
another process holds, every thread waits; beside one busy process a search with as many threads as
cores slows by an order of magnitude instead of by the share of the machine it lost. With a thread
fewer it slows by that share. ``--threads`` fixes the count and turns the measurement off; so does
``OMP_NUM_THREADS`` in the environment (a batch system's allocation, or the user's own choice).

``choose`` is the decision, a pure function of what ``Cores`` read; ``ThreadPolicy`` applies it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

FREE_ROUNDING = 0.4  # a core counts as free when at least 0.6 of it was idle
FIRST_LOOK_S = 0.5  # the first measurement, before the first trial: the machine watched this long


@dataclass(frozen=True)
class Cores:
    """What a process may use and what others used: ``allowed`` CPUs in its affinity mask, ``quota``
    its cgroup's CPU limit in cores (None: no limit), ``busy`` the cores that other processes kept
    busy while it last looked (None: not measured)."""

    allowed: int
    quota: float | None = None
    busy: float | None = None

    @property
    def usable(self) -> int:
        """Whole cores this process may run on: affinity, capped by the quota (at least 1)."""
        cap = self.allowed if self.quota is None else min(self.allowed, math.floor(self.quota + 1e-9))
        return max(1, cap)

    def describe(self) -> str:
        quota = "" if self.quota is None else f", quota {self.quota:g}"
        busy = "" if self.busy is None else f", {self.busy:.1f} busy with other work"
        return f"{self.allowed} core(s){quota}{busy}"


def choose(cores: Cores, workers: int = 1, explicit: int | None = None) -> int:
    """The threads of one of ``workers`` processes on this machine: ``explicit`` when given; else its
    share of the usable cores, and no more than the cores others left free (rounded so that a core at
    least 0.6 idle counts), at least 1. The other workers of the search are among the others when
    measured: each sees them busy, and takes its own share."""
    if explicit is not None:
        return explicit
    share = max(1, cores.usable // max(1, workers))
    if cores.busy is None:
        return share
    free = math.floor(cores.usable - cores.busy + FREE_ROUNDING)
    return max(1, min(share, free))


# -- reading the machine (Linux; elsewhere: affinity or cpu_count, no quota, not measured) ---------------


def allowed_cpus() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return set(range(os.cpu_count() or 1))


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in cores: cgroup v2 ``cpu.max`` ("max 100000" is none),
    else v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 is none); None where neither is readable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Sample:
    """Counters at one moment: seconds of wall time; busy and total jiffies of the allowed CPUs; this
    process's CPU seconds (all its threads)."""

    wall: float
    busy: int
    total: int
    own: float


def sample(cpus: set[int], stat: Path = Path("/proc/stat")) -> Sample | None:
    """The counters now; None where ``/proc/stat`` cannot be read."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    t = os.times()  # this process and its children that ended (a DDP fit's ranks, once joined)
    return Sample(time.monotonic(), busy, total, t.user + t.system + t.children_user + t.children_system)


def busy_between(a: Sample, b: Sample, cpus: int) -> float | None:
    """Cores kept busy by other processes from ``a`` to ``b``: all busy time on the allowed CPUs less
    this process's own, per second of wall time. None when the interval is too short to tell."""
    wall, total = b.wall - a.wall, b.total - a.total
    if wall < 0.2 or total <= 0:
        return None
    all_busy = cpus * (b.busy - a.busy) / total  # in cores, from jiffies (their rate need not be known)
    own = (b.own - a.own) / wall
    return max(0.0, all_busy - own)


def positive_env(name: str) -> int | None:
    """The environment variable ``name`` when it is a positive whole number, else None."""
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def environment_threads() -> int | None:
    """``OMP_NUM_THREADS`` when it is a positive whole number, else None."""
    return positive_env("OMP_NUM_THREADS")


class ThreadPolicy:
    """Sets torch's threads for one search process before each trial (``before_trial``): ``explicit``
    (``--threads``, else ``OMP_NUM_THREADS``) fixes them; otherwise ``choose`` on what others kept busy
    since the previous call (the first call watches the machine for ``FIRST_LOOK_S``)."""

    def __init__(self, workers: int = 1, explicit: int | None = None):
        self.workers, self.explicit = workers, explicit if explicit is not None else environment_threads()
        self.cpus = allowed_cpus()
        self.quota = cgroup_quota()
        self._last: Sample | None = None
        self.cores = Cores(len(self.cpus), self.quota)

    @staticmethod
    def current() -> int:
        import torch

        return torch.get_num_threads()

    def before_trial(self) -> int:
        import torch

        if self.explicit is None:
            if self._last is None:
                self._last = sample(self.cpus)
                time.sleep(FIRST_LOOK_S if self._last is not None else 0)
            now = sample(self.cpus)
            busy = busy_between(self._last, now, len(self.cpus)) if self._last and now else None
            self._last = now
            self.cores = Cores(len(self.cpus), self.quota, busy)
        threads = choose(self.cores, self.workers, self.explicit)
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads
