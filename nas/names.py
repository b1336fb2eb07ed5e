"""Names that become folders (a study, a space's ``name``): one rule, checked wherever a name given by
a user, a space file or a stored study turns into a path, so nothing is written outside the folder
the user chose (``..``, ``/abs/path`` and ``a/b`` are refused, not followed)."""

from __future__ import annotations

import re
from pathlib import Path

from nas.errors import BadOption

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit (the name is a folder's)"


def name_problem(value: object) -> str | None:
    """Why ``value`` cannot name a folder, or None."""
    if isinstance(value, str) and NAME.fullmatch(value):
        return None
    return f"{value!r} is not allowed; {NAME_RULE}"


def check_name(value: str, what: str) -> str:
    """``value`` when it can name a folder; a BadOption naming ``what`` (an option, a key) otherwise."""
    if name_problem(value) is not None:
        raise BadOption(what, value, NAME_RULE)
    return value


def folder_of(root: Path, name: str, what: str = "study") -> Path:
    """``root/name`` for a checked name: a study's folder under runs/."""
    return Path(root) / check_name(name, what)
