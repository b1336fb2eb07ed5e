"""The command line: parse, call, print; no logic lives here. One module per command; each imports
its work (torch, Lightning, Optuna) inside the command, so ``--help`` and a bad option answer at once."""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Sequence

from nas.cli import bench, check, export, mechanisms, report, search, train, viz  # noqa: F401  (registers the commands)
from nas.cli.base import app
from nas.cli.console import err_console, shown
from nas.core import signals as signals
from nas.core.errors import exit_code_of

app.command("viz")(viz.viz_cmd)

__all__ = ["app", "main", "run"]


def _stray_space(argv: list[str]) -> str | None:
    """A YAML file given as a bare argument to a command that takes it as ``--space`` (``nas search
    spaces/small.yaml``), or None."""
    if not argv or argv[0] not in ("search", "check", "bench") or "--space" in argv or "--help" in argv:
        return None
    for before, arg in zip(argv, argv[1:], strict=False):
        if arg.endswith((".yaml", ".yml")) and not before.startswith("-"):
            return arg
    return None


def run(argv: Sequence[str]) -> int:
    """Run ``nas`` with ``argv`` in this process and return its exit code: 0, 2 for an error a user can
    cause (one line on stderr, no traceback), 130/143 when interrupted. Anything else is raised."""
    stray = _stray_space(list(argv))
    if stray is not None:  # click would say only that --space is missing
        command = " ".join(a for a in argv[:2] if not a.startswith("-") and a != stray)
        err_console.print(
            f"[bold red]error:[/bold red] {shown(repr(stray))} was given without an option; "
            f"nas {shown(command)} takes the space as --space {shown(stray)}",
            highlight=False,
        )
        return 2
    try:
        app(args=list(argv), prog_name="nas")
    except SystemExit as e:  # click exits on its own: --help, usage errors (2), a command's sys.exit
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except (KeyboardInterrupt, signals.Interrupted):
        err_console.print(f"interrupted ({signals.cause()})")
        return signals.exit_code()
    except Exception as e:
        code = exit_code_of(e)
        if code is None:
            raise
        err_console.print(f"[bold red]error:[/bold red] {shown(str(e))}", highlight=False)
        return code
    return 0


def main() -> None:
    signals.install()
    # Optuna's notes that an API it calls is experimental (set_metric_names, artifacts) are for this
    # tool's authors, not its users (matched by text: Optuna is not imported this early)
    warnings.filterwarnings("ignore", message=r".* is experimental \(supported from")
    code = run(sys.argv[1:])
    # The process ends here. What is alive now is left to the operating system instead of to the
    # interpreter's last garbage collections, which scan the half million objects torch, timm and
    # Lightning leave: 1.5 s on exit, 0.2 s frozen. atexit handlers and the modules' teardown still
    # run (log handlers, storage connections, stdout are flushed and closed as before).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    main()
