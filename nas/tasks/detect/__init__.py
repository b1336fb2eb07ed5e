"""Detection: attention placed in an ultralytics YOLO model YAML, trained by ultralytics' own trainer.

``ultra``: ultralytics imported offline and quiet; ``model``: positions, model YAMLs with attention rows
and seeded builds; ``data``: the embedded digits-on-canvases dataset in ultralytics' format;
``train``: a trial's fit through ultralytics' DetectionTrainer with the search's pruning at each epoch.
ultralytics (AGPL-3.0, the ``[yolo]`` extra) is imported only here, and only when a detection space is
used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nas.core.task import ExportFacts, ExportOptions, FitHooks, FitResult, SpaceTable, Task, TaskData, TrainResult


class Detect(Task):
    name = "detect"
    metric = "mAP50-95"
    unit = "position"
    per_epoch = "val mAP50-95"
    selector = "detector"
    data_kind = "detection"
    foreign_key_note = "belongs to a detection space; give 'detector' (an ultralytics model YAML) too"

    @property
    def space_keys(self) -> tuple[str, ...]:
        from nas.tasks.detect.space import OWN_KEYS

        return OWN_KEYS

    @property
    def data_sources(self) -> tuple[str, ...]:
        from nas.tasks.detect.settings import SOURCES

        return tuple(SOURCES)

    def parse_space(self, c: Any, doc: Mapping, base: Path, elsewhere: Mapping[str, str]) -> dict[str, Any]:
        from nas.tasks.detect.space import parse

        return parse(c, doc, base, elsewhere)

    def settings(self, file: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
        from nas.tasks.detect.settings import parse_settings

        return parse_settings(file, raw)

    def build(self, space: Any, arch: Any, num_classes: int, init_seed: int | None = None) -> Any:
        from nas.tasks.detect.model import build

        return build(space.detector, space.positions, arch, num_classes, init_seed=init_seed)

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
    ) -> FitResult:
        from nas.tasks.detect.fit import fit

        model = self.build(space, arch, num_classes, init_seed=seed)
        return fit(model, data.handle.yaml, space.training, space.input_size[0], epochs, seed, log_dir, hooks)

    def fingerprint(self, space: Any) -> list[Any]:
        return [(space.detector.yaml_text, [(p.at, p.after) for p in space.positions])]

    def export(
        self, space: Any, arch: Any, num_classes: int, out: Path, facts: ExportFacts, opts: ExportOptions
    ) -> tuple[list[Path], dict[str, float]]:
        from nas.tasks.detect.export import export

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
        from nas.tasks.detect.train import train

        return train(source, card, training, data, out, resume, force, report, announce)

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
        from nas.core.config import LimitSettings
        from nas.tasks.detect.model import Detector, Position
        from nas.tasks.detect.settings import TrainingSettings, data_class
        from nas.tasks.detect.space import DetectorLatency

        return dict(
            data=data_class(d["data"]["source"])(**d["data"]),
            training=TrainingSettings(**d["training"]),
            latency=DetectorLatency(**d["latency"]),
            limits=LimitSettings(**d["limits"]),
            detector=Detector(**d["detector"]),
            positions=tuple(Position(**p) for p in d["positions"]),
        )

    def viz_refusal(self) -> str | None:
        return (
            "nas viz draws classifiers' attention maps and Grad-CAM; load a detector with the export's load.py "
            "(ultralytics' YOLO) instead"
        )


TASK = Detect()
