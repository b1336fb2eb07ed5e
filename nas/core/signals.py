"""SIGTERM stops a command the way Ctrl-C does: the running trial is recorded as interrupted, nothing
is left RUNNING, and the process exits with 128 + the signal number.

Both signals raise ``Interrupted``, not KeyboardInterrupt: Lightning turns a KeyboardInterrupt inside
``fit`` into ``sys.exit(1)`` and typer turns one into a silent exit 130, and both would hide the cause."""

from __future__ import annotations

import signal
from typing import Any

received: list[int] = []  # signals that interrupted this process, in order
_deferring = 0  # > 0: inside defer() ... resume(); a signal then waits for resume()
_pending = False


class Interrupted(BaseException):
    """A stop asked for by a signal (BaseException, like KeyboardInterrupt: not an error to handle)."""


def install() -> None:
    """Raise ``Interrupted`` on SIGTERM and on SIGINT (unless SIGINT is ignored). Lightning, which
    watches SIGTERM during ``fit``, calls this handler too. Only the first signal raises: the ones
    after it arrive while the first one's cleanup records the trial, and must not interrupt that."""

    def on_signal(signum: int, frame: Any) -> None:
        global _pending
        first = not received
        received.append(signum)
        if not first:  # a second signal (Ctrl-C pressed again, a parent's SIGTERM) must not break the cleanup
            return
        if _deferring:
            _pending = True
            return
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_signal)


def defer() -> None:
    """From here until ``resume()``, a signal is held back (for code that must not be cut in two, such
    as creating a trial and recording whose it is). A pure-Python flag rather than a signal mask:
    Python runs handlers in the main thread whichever thread the signal hit."""
    global _deferring
    _deferring += 1


def resume(raise_pending: bool = True) -> None:
    """End of ``defer()``: a signal that came meanwhile is raised now (unless ``raise_pending`` is
    False: an exception is already on its way)."""
    global _deferring, _pending
    _deferring = max(0, _deferring - 1)
    if _deferring == 0 and _pending:
        _pending = False
        if raise_pending:
            raise Interrupted(signal.Signals(received[0]).name)


def raise_if_received() -> None:
    """Raise ``Interrupted`` if a signal came and its exception was lost: Python drops an exception
    raised by a signal handler while a garbage-collection callback runs ("Exception ignored in ..."),
    seen with SQLAlchemy's. Called at points where stopping is safe (between training batches, before
    the next trial), it makes such a signal stop the command anyway. Never after the exception was
    raised normally: that unwinds past these points."""
    if received and not _deferring:
        raise Interrupted(signal.Signals(received[0]).name)


def cause() -> str:
    """What interrupted the process: 'Ctrl-C', 'SIGTERM', ..."""
    if not received or received[0] == signal.SIGINT:
        return "Ctrl-C"
    return signal.Signals(received[0]).name


def exit_code() -> int:
    return 128 + (received[0] if received else signal.SIGINT)
