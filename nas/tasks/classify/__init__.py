"""The classification task: a timm backbone with attention at its stages, the embedded digits,
ImageFolder or CIFAR data, a Lightning fit, ``model.py`` exports and ``nas train`` with checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nas.core.task import ExportFacts, ExportOptions, FitHooks, FitResult, SpaceTable, Task, TaskData, TrainResult


class Classify(Task):
    name = "classify"
    metric = "accuracy"
    unit = "stage"
    per_epoch = "val accuracy"
    selector = None  # the default: a space without another task's key
    data_kind = "classification"
    foreign_key_note = (
        "belongs to a classification space; a detection space names 'detector' and 'positions' "
        "(classes come from the data)"
    )

    @property
    def space_keys(self) -> tuple[str, ...]:
        from nas.tasks.classify.space import OWN_KEYS

        return OWN_KEYS

    @property
    def data_sources(self) -> tuple[str, ...]:
        from nas.tasks.classify.settings import SOURCES

        return tuple(SOURCES)

    def parse_space(self, c: Any, doc: Mapping, base: Path, elsewhere: Mapping[str, str]) -> dict[str, Any]:
        from nas.tasks.classify.space import parse

        return parse(c, doc, base, elsewhere)

    def settings(self, file: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
        from nas.tasks.classify.settings import parse_settings

        return parse_settings(file, raw)

    def build(self, space: Any, arch: Any, num_classes: int, init_seed: int | None = None) -> Any:
        from nas.tasks.classify.model import build

        return build(arch, num_classes, space.in_chans, init_seed=init_seed)

    def cost(self, space: Any, arch: Any, num_classes: int) -> Any:
        from nas.tasks.classify.model import model_cost

        return model_cost(arch, num_classes, space.input_size, space.in_chans)

    def data(self, space: Any, root: Path, seed: int) -> TaskData:
        from nas.core.errors import UserError
        from nas.tasks.classify.data import datamodule

        dm = datamodule(space.data, space.input_size, space.training.batch_size, seed)
        dm.setup("fit")
        if dm.in_chans != space.in_chans:
            raise UserError(
                f"{space.path}: in_chans is {space.in_chans} but the {space.data.source} "
                f"data has {dm.in_chans} channel(s); set in_chans: {dm.in_chans}"
            )
        return TaskData(dm, dm.num_classes, len(dm.val_set) if getattr(dm, "val_set", None) is not None else None)

    def fit(
        self,
        space: Any,
        arch: Any,
        seed: int,
        data: TaskData,
        epochs: int,
        log_dir: Path,
        hooks: FitHooks,
        num_classes: int,
        single_process: bool = False,
    ) -> FitResult:
        from nas.tasks.classify.fit import fit

        training = space.training.replace(devices=1) if single_process else space.training
        return fit(arch, seed, data.handle, training, num_classes, space.in_chans, epochs, log_dir, hooks)

    def export(
        self, space: Any, arch: Any, num_classes: int, out: Path, facts: ExportFacts, opts: ExportOptions
    ) -> tuple[list[Path], dict[str, float]]:
        from nas.tasks.classify.export import export

        return export(space, arch, num_classes, out, facts, opts)

    def train(
        self,
        source: Path,
        card: Any,
        training: Mapping[str, Any],
        *,
        data: str | None,
        out: Path | None,
        resume: bool,
        force: bool,
        report: Callable[[int, int, float], None],
        announce: Callable[[str], None],
        progress: bool,
    ) -> TrainResult:
        from nas.tasks.classify.train import train

        return train(source, card, training, data, out, resume, force, report, announce, progress)

    def describe(self, space: Any) -> SpaceTable:
        from nas.tasks.classify import backbone as bb

        by_index = {s.index: s for s in space.stages}
        rows = []
        for info in bb.describe(space.backbone, space.input_size, space.in_chans):
            st = by_index.get(info.index)
            rows.append(
                [
                    str(info.index),
                    info.module,
                    str(info.blocks),
                    ", ".join(f"{p} {'/'.join(map(str, c))}" for p, c in info.channels.items()),
                    f"{info.out_channels} x {info.spatial[0]}x{info.spatial[1]}",
                    ", ".join(sorted({n for names in info.builtin.values() for n in names})) or "-",
                    f"{st.count() if st else 1}: "
                    + ", ".join([o.mechanism for o in st.options] if st else ["none (fixed)"]),
                ]
            )
        return SpaceTable(
            f"{space.backbone} at {space.input_size[0]}x{space.input_size[1]}, {space.in_chans} input channel(s)",
            ["stage", "module", "blocks", "channels by placement", "output", "built-in", "searched"],
            rows,
            space.num_classes or 10,
            "",
        )

    def fields_from_data(self, d: Mapping[str, Any]) -> dict[str, Any]:
        from nas.core.config import LatencySettings, LimitSettings
        from nas.tasks.classify.settings import TrainingSettings, data_class

        return dict(
            data=data_class(d["data"]["source"])(**d["data"]),
            training=TrainingSettings(**d["training"]),
            latency=LatencySettings(**d["latency"]),
            limits=LimitSettings(**d["limits"]),
        )

    def load_for_viz(self, card: Any, weights: Path) -> Any:
        from nas.core.artifacts import load_weights
        from nas.tasks.classify.model import build

        return load_weights(build(card.architecture, card.num_classes, card.in_chans).eval(), weights)


TASK = Classify()
