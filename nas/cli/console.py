"""The one rich console of the project, and the one way text that came from a user or a study (a
name, an architecture, a path, a message quoting a value) reaches it: ``shown``."""

import re
import shutil

from rich.console import Console
from rich.markup import escape

# Tables are wide; when output goes to a file or pipe rich would assume 80 columns and fold them.
_WIDTH = None if shutil.get_terminal_size((0, 0)).columns else 140
# emoji=False: rich would turn ":x:" in a study's text (a re-run's attribute name) into an emoji
console = Console(width=_WIDTH, emoji=False)
err_console = Console(stderr=True, width=_WIDTH, emoji=False)

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


def plain(text: object) -> str:
    """``text`` with control characters (terminal escape sequences among them) written visibly as
    ``\\xNN``, so a stored string cannot move the cursor, recolour or retitle the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def shown(text: object) -> str:
    """``text`` as rich markup that prints it exactly: control characters made visible (``plain``)
    and square brackets escaped, so ``[/x]`` neither crashes the command nor becomes a style or link."""
    return escape(plain(text))
