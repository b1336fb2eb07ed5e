"""SIGTERM stops a command the way Ctrl-C does: the running trial is recorded as interrupted, nothing
is left RUNNING, and the process exits with 128 + the signal number.

Both signals raise ``Interrupted``, not KeyboardInterrupt: Lightning turns a KeyboardInterrupt inside
``fit`` into ``sys.exit(1)`` and typer turns one into a silent exit 130, and both would hide the cause."""

from __future__ import annotations

import signal
from typing import Any

received: list[int] = []  # signals that interrupted this process, in order


class Interrupted(BaseException):
    """A stop asked for by a signal (BaseException, like KeyboardInterrupt: not an error to handle)."""


def install() -> None:
    """Raise ``Interrupted`` on SIGTERM and on SIGINT (unless SIGINT is ignored). Lightning, which
    watches SIGTERM during ``fit``, calls this handler too. Only the first signal raises: the ones
    after it arrive while the first one's cleanup records the trial, and must not interrupt that."""

    def on_signal(signum: int, frame: Any) -> None:
        first = not received
        received.append(signum)
        if first:  # a second signal (Ctrl-C pressed again, a parent's SIGTERM) must not break the cleanup
            raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_signal)


def cause() -> str:
    """What interrupted the process: 'Ctrl-C', 'SIGTERM', ..."""
    if not received or received[0] == signal.SIGINT:
        return "Ctrl-C"
    return signal.Signals(received[0]).name


def exit_code() -> int:
    return 128 + (received[0] if received else signal.SIGINT)
