"""Errors a user can cause, and the exit code of each: the command line prints them without a
traceback and exits with ``exit_code_of(error)``."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input: the message says what was given, where, and what is allowed."""

    exit_code = 2


class BadOption(UserError):
    """A command-line option outside its allowed values."""

    def __init__(self, option: str, value: object, allowed: str):
        super().__init__(f"{option}: {value!r} is not allowed; {allowed}")


MAX_CHANNELS = 65_536  # a channel count a user may give (the widest backbones have 4,096 at a stage)
MAX_THREADS = 1024  # CPU threads a user may ask torch for
MAX_SEED = 2**32 - 1  # numpy's and torch's seed range


def check_range(option: str, value: int, low: int, high: int, what: str = "an integer") -> int:
    """``value`` when ``low <= value <= high``; a BadOption stating the bounds otherwise. Every number a
    user gives that sizes memory or time has an upper bound, so a typo fails at once instead of
    allocating until the machine gives up."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadOption(option, value, f"{what} from {low:,} to {high:,}")
    return value


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the trial fails, the search goes on."""


def reason_text(text: str, limit: int = 1000) -> str:
    """``text`` as a stop reason is stored: terminal colour codes (ultralytics colours its errors) and
    other control characters left out, at most ``limit`` characters."""
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[ -/]*[@-~]", "", text)
    return "".join(c for c in text if c == "\n" or c >= " ")[:limit]


def trial_failure(e: BaseException) -> str | None:
    """The reason to record when training a trial raised ``e``, for failures that belong to that
    trial alone (the worker goes on); None for anything else. In a spawned DDP fit the rank's
    exception arrives as text."""
    if isinstance(e, NonFiniteLoss):
        return str(e)
    if type(e).__name__ == "OutOfMemoryError":  # torch's, without importing torch
        return f"out of memory ({str(e).splitlines()[0]})"
    if e.__class__.__name__ == "ProcessExitedException":  # a DDP rank killed (the host's OOM killer)
        return f"a DDP rank died: {e}"
    if e.__class__.__name__ == "ProcessRaisedException":  # torch.multiprocessing, from a DDP rank
        lines = [ln for ln in str(e).splitlines() if ln.strip()]
        for name, what in (("NonFiniteLoss", ""), ("OutOfMemoryError", "out of memory ")):
            hits = [ln for ln in lines if name in ln]
            if hits:
                return f"{what}{hits[-1].split(':', 1)[-1].strip()} (in a DDP rank)"
    return None


class WorkerFailed(Exception):
    """A worker of ``--workers`` stopped with an unexpected error (its trial is recorded); the others
    were stopped."""

    exit_code = 1


class StorageUnavailable(Exception):
    """The study's database kept failing with connection errors through every retry of a call: the
    message names the call, how long it was retried and the database's last error."""

    exit_code = 1


def exit_code_of(error: BaseException) -> int | None:
    """The exit code of an error the command line reports in one line (no traceback), or None for
    anything else. The attention library's own bad-input errors count as user errors; it is not
    imported here (only an error it raised can be one of its errors)."""
    if isinstance(error, (UserError, WorkerFailed, StorageUnavailable)):
        return error.exit_code
    attention = sys.modules.get("attention")
    if attention is not None and isinstance(error, (attention.HyperparameterError, attention.UnknownMechanismError)):
        return UserError.exit_code
    return None
