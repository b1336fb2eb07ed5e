"""One folder per task (``classify``: timm classifiers; ``detect``: ultralytics detectors), each an
implementation of ``nas.core.task.Task``; ``task_named`` finds one by the name an export's card or a
study records. A third task is one more folder and one more line here."""

from __future__ import annotations

import importlib
from typing import Any

from nas.core.errors import UserError
from nas.core.task import Task

NAMES = ("classify", "detect")  # the first is the default: a space or a card that names no task


def task_named(name: str) -> Task:
    """The task called ``name`` (its package ``nas.tasks.<name>``, imported on first use)."""
    if name not in NAMES:
        raise UserError(f"task {name!r} is not one of {', '.join(NAMES)}")
    return importlib.import_module(f"nas.tasks.{name}").TASK


def all_tasks() -> list[Task]:
    return [task_named(n) for n in NAMES]


def space_from_data(d: dict) -> Any:
    """A SearchSpace from ``SearchSpace.to_data``'s output (a study's record of its parsed space)."""
    from nas.core.space import SearchSpace, fields_from_data

    task = task_named(d["task"])
    return SearchSpace(task=task, **fields_from_data(d), **task.fields_from_data(d))
