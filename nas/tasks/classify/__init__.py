"""The classification task: a timm backbone with attention at its stages, the embedded digits,
ImageFolder or CIFAR data, a Lightning fit, ``model.py`` exports and ``nas train`` with checkpoints."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.core.task import FitHooks, FitResult, SpaceTable, TaskData
from nas.tasks._folder import FolderTask


class Classify(FolderTask):
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

    def build(
        self, space: Any, arch: Any, num_classes: int, init_seed: int | None = None, start: Mapping | None = None
    ) -> Any:
        from nas.tasks.classify.model import build

        return build(arch, num_classes, space.in_chans, init_seed=init_seed, start=start, gated=space.training.gated)

    def cost(self, space: Any, arch: Any, num_classes: int) -> Any:
        from nas.tasks.classify.model import model_cost

        return model_cost(arch, num_classes, space.input_size, space.in_chans, space.training.gated)

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
        start: Mapping | None = None,
        model: Any = None,
        every_epoch: bool = True,
    ) -> FitResult:
        from nas.tasks.classify.fit import fit

        training = space.training.replace(devices=1) if single_process else space.training
        return fit(
            arch, seed, data.handle, training, num_classes, space.in_chans, epochs, log_dir, hooks, start, model,
            every_epoch,
        )  # fmt: skip

    def heldout(self, data: TaskData, model: Any) -> tuple[float, int] | None:
        """Top-1 accuracy on the data's test split (the embedded digits' ``test`` images), in float32."""
        import torch

        test = getattr(data.handle, "test_set", None)
        if model is None or test is None or len(test) == 0:
            return None
        device = next(model.parameters()).device
        was = model.training
        model.eval()
        right = 0
        with torch.no_grad():
            for x, y in data.handle.test_dataloader():
                right += int((model(x.to(device).float()).argmax(1) == y.to(device)).sum())
        model.train(was)
        return right / len(test), len(test)

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
        from nas.core.config import LatencySettings
        from nas.core.spacecheck import sections_from_data
        from nas.tasks.classify.settings import DATA_CLASSES, TrainingSettings

        return sections_from_data(d, DATA_CLASSES, TrainingSettings, LatencySettings, "the study's record of its space")

    def load_for_viz(self, card: Any, weights: Path) -> Any:
        from nas.core.artifacts import load_weights
        from nas.tasks.classify.model import build

        return load_weights(build(card.architecture, card.num_classes, card.in_chans).eval(), weights)


TASK = Classify()
