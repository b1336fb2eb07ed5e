"""What every task folder provides under the same module names, so a task class says only what differs:
``space.py`` (``OWN_KEYS``, ``parse``), ``settings.py`` (``SOURCES``, ``parse_settings``), ``export.py``
(``export``), ``train.py`` (``train``) and ``start.py`` (``given_start``). Each is imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.core.task import ExportFacts, ExportOptions, Task, TrainRequest, TrainResult


class FolderTask(Task):
    """A Task whose folder ``nas/tasks/<name>/`` has the modules named above."""

    def _module(self, name: str) -> Any:
        return importlib.import_module(f"nas.tasks.{self.name}.{name}")

    @property
    def space_keys(self) -> tuple[str, ...]:
        return tuple(self._module("space").OWN_KEYS)

    @property
    def data_sources(self) -> tuple[str, ...]:
        return tuple(self._module("settings").SOURCES)

    def parse_space(self, c: Any, doc: Mapping, base: Path, elsewhere: Mapping[str, str]) -> dict[str, Any]:
        return self._module("space").parse(c, doc, base, elsewhere)

    def settings(self, file: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
        return self._module("settings").parse_settings(file, raw)

    def export(
        self, space: Any, arch: Any, num_classes: int, out: Path, facts: ExportFacts, opts: ExportOptions
    ) -> tuple[list[Path], dict[str, float]]:
        return self._module("export").export(space, arch, num_classes, out, facts, opts)

    def train(self, req: TrainRequest) -> TrainResult:
        return self._module("train").train(req)

    def given_start(self, space: Any, num_classes: int, seed: int) -> tuple[dict[str, Any], str, list[str]]:
        return self._module("start").given_start(space, num_classes, seed)
