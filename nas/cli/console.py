"""The one rich console of the project."""

import shutil

from rich.console import Console

# Tables are wide; when output goes to a file or pipe rich would assume 80 columns and fold them.
_WIDTH = None if shutil.get_terminal_size((0, 0)).columns else 140
console = Console(width=_WIDTH)
err_console = Console(stderr=True, width=_WIDTH)
