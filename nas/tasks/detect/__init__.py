"""Detection: attention placed in an ultralytics YOLO model YAML, trained by ultralytics' own trainer.

``ultra``: ultralytics imported offline and quiet; ``model``: positions, model YAMLs with attention rows
and seeded builds; ``data``: the embedded digits-on-canvases dataset in ultralytics' format;
``train``: a trial's fit through ultralytics' DetectionTrainer with the search's pruning at each epoch.
ultralytics (AGPL-3.0, the ``[yolo]`` extra) is imported only here, and only when a detection space is
used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.core.task import FitHooks, FitResult, SpaceTable, TaskData
from nas.tasks._folder import FolderTask


class Detect(FolderTask):
    name = "detect"
    metric = "mAP50-95"
    unit = "position"
    per_epoch = "val mAP50-95"
    selector = "detector"
    data_kind = "detection"
    foreign_key_note = "belongs to a detection space; give 'detector' (an ultralytics model YAML) too"

    def build(
        self, space: Any, arch: Any, num_classes: int, init_seed: int | None = None, start: Mapping | None = None
    ) -> Any:
        from nas.tasks.detect.model import build

        gated = space.training.gated
        return build(space.detector, space.positions, arch, num_classes, init_seed=init_seed, start=start, gated=gated)

    def cost(self, space: Any, arch: Any, num_classes: int) -> Any:
        """Built on the CPU (ultralytics runs a forward pass while building); FLOPs at the space's image size."""
        import torch

        from nas.measure.cost import ModelCost, count_flops, count_params

        model = self.build(space, arch, num_classes).eval()
        with torch.no_grad():
            return ModelCost(count_params(model), count_flops(model, torch.zeros(1, 3, *space.input_size)))

    def data(self, space: Any, root: Path, seed: int) -> TaskData:
        """ultralytics reads the dataset itself; the embedded one is written once under ``root/data``."""
        from nas.tasks.detect.data import dataset

        data = dataset(space.data, root)
        return TaskData(data, data.num_classes, data.val_images or None)

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
        from nas.tasks.detect.fit import fit

        if model is None:
            model = self.build(space, arch, num_classes, init_seed=seed, start=start)
        return fit(
            model, data.handle.yaml, space.training, space.input_size[0], epochs, seed, log_dir, hooks,
            every_epoch=every_epoch,
        )  # fmt: skip

    def fingerprint(self, space: Any) -> list[Any]:
        return [(space.detector.yaml_text, [(p.at, p.after) for p in space.positions])]

    def describe(self, space: Any) -> SpaceTable:
        rows = []
        for p, st in zip(space.positions, space.stages, strict=True):
            side = space.input_size[0] // max(p.stride, 1)
            rows.append(
                [
                    str(p.index),
                    p.at,
                    str(p.after),
                    p.kind,
                    str(p.channels),
                    str(p.stride),
                    f"{side}x{side}",
                    f"{st.count()}: {', '.join(o.mechanism for o in st.options)}",
                ]
            )
        return SpaceTable(
            f"{space.backbone} ({space.detector.source}) at imgsz {space.input_size[0]}",
            ["position", "at", "after layer", "module", "channels", "stride", "output", "searched"],
            rows,
            10,
            " (10 classes)",
        )

    def part_to_data(self, space: Any) -> dict[str, Any]:
        from dataclasses import asdict

        return {"detector": asdict(space.detector), "positions": [asdict(p) for p in space.positions]}

    def fields_from_data(self, d: Mapping[str, Any]) -> dict[str, Any]:
        from nas.core.spacecheck import sections_from_data
        from nas.tasks.detect.model import Detector, Position
        from nas.tasks.detect.settings import DATA_CLASSES, TrainingSettings
        from nas.tasks.detect.space import DetectorLatency

        return dict(
            **sections_from_data(d, DATA_CLASSES, TrainingSettings, DetectorLatency, "the study's record of its space"),
            detector=Detector(**d["detector"]),
            positions=tuple(Position(**p) for p in d["positions"]),
        )

    def viz_refusal(self) -> str | None:
        return (
            "nas viz draws classifiers' attention maps and Grad-CAM; load a detector with the export's load.py "
            "(ultralytics' YOLO) instead"
        )


TASK = Detect()
