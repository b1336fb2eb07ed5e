"""One folder per task (``classify``: timm classifiers; ``detect``: ultralytics detectors), each an
implementation of ``nas.core.task.Task``; ``task_named`` finds one by the name an export's card or a
study records. A third task is one more folder and one more line here."""

from __future__ import annotations

import importlib

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
