"""The command line: parse, call, print; no logic lives here. One module per command; each imports
its work (torch, Lightning, Optuna) inside the command, so ``--help`` and a bad option answer at once."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from nas.cli import bench, check, export, mechanisms, report, search, train, viz  # noqa: F401  (registers the commands)
from nas.cli.base import app
from nas.cli.console import err_console, shown
from nas.errors import exit_code_of
from nas.search import signals

app.command("viz")(viz.viz_cmd)

__all__ = ["app", "main", "run"]


def run(argv: Sequence[str]) -> int:
    """Run ``nas`` with ``argv`` in this process and return its exit code: 0, 2 for an error a user can
    cause (one line on stderr, no traceback), 130/143 when interrupted. Anything else is raised."""
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
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
