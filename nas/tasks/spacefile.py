"""Search-space YAML files -> validated SearchSpace: the shell every task shares (safe loading, duplicate
and unknown keys, the study name), then the task the file describes (a ``detector:`` key makes it a
detection space) parses its own part (``nas.tasks.*.space``).

Validation reports every problem at once, each with the file, the key path (``stages[2].mechanisms.se
.reduction``), the line, what was given and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.core.config import Checker, SpaceError
from nas.core.names import name_problem
from nas.core.space import SearchSpace
from nas.core.yamlio import load, loads
from nas.tasks import all_tasks

__all__ = ["SpaceError", "load_space", "parse_space"]

COMMON_KEYS = ("name", "input_size", "in_chans", "data", "training", "objectives", "latency", "limits")


def load_space(path: str | Path, base: Path | None = None) -> SearchSpace:
    """Read and validate a search-space YAML file; raises SpaceError listing every problem. Files the
    space names by a relative path (a detector's model YAML, a dataset YAML) are read from ``base``,
    by default the space's folder."""
    path = Path(path)
    data, duplicates = load(path)
    return _parse(data, duplicates, str(path), base or path.parent, path.stem)


def parse_space(text: str, path: str | Path, base: Path) -> SearchSpace:
    """``load_space`` of a file's text already read (``path`` names it in messages and is recorded)."""
    data, duplicates = loads(text, path)
    return _parse(data, duplicates, str(path), base, Path(path).stem)


def _parse(data: Any, duplicates: list, file: str, base: Path, stem: str) -> SearchSpace:
    c = Checker(file)
    for key, first, again in duplicates:
        c.add("", f"duplicate key {key!r} (first at line {first}); each key may appear once", again)
    tasks = all_tasks()
    top = (*COMMON_KEYS, *(k for t in tasks for k in t.space_keys))
    if not isinstance(data, Mapping):
        c.add("", f"the file must be a mapping with keys {', '.join(top)}; got {type(data).__name__}")
        c.raise_if_any()
    for key in data:
        if key not in top:
            c.add(str(key), f"unknown key; allowed: {', '.join(top)}", c.line(data, key))
    name = data.get("name", stem)
    if problem := name_problem(name):
        c.add("name", problem, c.line(data, "name"))
        name = stem
    task = next((t for t in tasks if t.selector and t.selector in data), tasks[0])
    for other in tasks:
        if other is not task:
            for key in other.space_keys:
                if key in data:
                    c.add(key, other.foreign_key_note, c.line(data, key))
    elsewhere = {s: t.data_kind for t in tasks if t is not task for s in t.data_sources}
    fields = task.parse_space(c, data, base, elsewhere)
    c.raise_if_any()
    return SearchSpace(path=file, name=name, task=task, **fields)
