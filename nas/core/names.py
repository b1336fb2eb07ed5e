"""Names that become folders (a study, a space's ``name``): one rule, checked wherever a name given by
a user, a space file or a stored study turns into a path, so nothing is written outside the folder
the user chose (``..``, ``/abs/path`` and ``a/b`` are refused, not followed)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from nas.core.errors import BadOption

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


def check_out(
    out: Path,
    *,
    inputs: Sequence[Path] = (),
    force: bool = False,
    ours: Callable[[Path], bool] = lambda folder: False,
    option: str = "--out",
) -> Path:
    """``out`` when a command may write into it: a folder or a path not yet there, never a folder
    holding one of the command's ``inputs`` (or one of them), and, when it already has files, only
    with ``force`` or when ``ours`` recognises it as this command's own earlier output for the same
    thing (written again, as asked). Checked before any work, so a refusal loses nothing."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadOption(option, str(out), "a folder to write into (that path is a file)")
    target = out.resolve()
    for given in inputs:
        source = Path(given).resolve()
        if source == target or target in source.parents:
            raise BadOption(option, str(out), f"a folder apart from the input {given} (writing there would change it)")
    if out.is_dir() and not force and not ours(out):
        entries = sum(1 for _ in out.iterdir())
        if entries:
            raise BadOption(
                option, str(out), f"a new or empty folder (it holds {entries} entries); add --force to write into it"
            )
    return out


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary file in ``path``'s folder to write to; renamed over ``path`` when the block ends
    without error, removed otherwise: a reader (or a command interrupted midway) sees the old file or
    the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")  # the suffix tells writers the format
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> Path:
    """``text`` to ``path`` through a temporary file renamed over it (``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def staged(folder: Path) -> Iterator[Path]:
    """A fresh folder inside ``folder`` to write a whole output into (an export: several files checked
    together); when the block ends without error its files replace those of the same names in
    ``folder``, each by a rename; on an error it is removed and ``folder``'s files are as they were.
    Yields the staging folder."""
    import shutil
    import uuid

    folder = Path(folder)
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    done = False
    try:
        yield tmp
        for p in sorted(tmp.rglob("*")):
            target = folder / p.relative_to(tmp)
            if p.is_dir():
                target.mkdir(exist_ok=True)
            else:
                p.replace(target)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made and not done and not any(folder.iterdir()):
            folder.rmdir()  # a folder this call made for an output that failed: not left behind
