"""A detection space's own part of the file: ``detector`` (an ultralytics model YAML) with its ``scale``
and ``positions``, one integer ``input_size`` (a multiple of 32), the detector's training keys and data
sources; the rest of the file as for classification."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attention
from nas.core.config import LATENCY_SCHEMA, Checker, Latency, Setting, section_class
from nas.core.space import StageInfo, StageSpace
from nas.core.spacecheck import parse_data, parse_latency_limits, parse_objectives, parse_options, parse_training
from nas.tasks.detect.settings import DEFAULT_SOURCE, SOURCES, TrainingSettings, data_class

OWN_KEYS = ("detector", "scale", "positions")  # keys only a detection space has
DetectorLatency = section_class(
    "DetectorLatency",
    {
        **LATENCY_SCHEMA,
        "input_size": Setting(  # default: the space's input_size
            int,
            None,
            rule=lambda v: v >= 1 and v % 32 == 0,
            rule_text="a multiple of 32 (the detector's largest stride)",
        ),
    },
    Latency,
    __name__,
)


def parse(c: Checker, doc: Mapping, base: Path, elsewhere: Mapping[str, str]) -> dict[str, Any]:
    """The SearchSpace fields of a detection space (problems go to ``c``)."""
    size = doc.get("input_size", 64)
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size % 32:
        c.add(
            "input_size",
            f"{size!r} is not allowed; a detector's image size is one integer, a multiple of 32 (its largest stride)",
            c.line(doc, "input_size"),
        )
        size = 64
    if doc.get("in_chans", 3) != 3:
        c.add(
            "in_chans",
            f"{doc.get('in_chans')!r} is not allowed; ultralytics detectors read 3-channel images",
            c.line(doc, "in_chans"),
        )
    data = _data(c, doc, size, base, elsewhere)
    training = parse_training(c, doc, TrainingSettings)
    latency, limits = parse_latency_limits(c, doc, DetectorLatency)
    if latency.input_size is None:
        latency = latency.replace(input_size=size)
    objectives = parse_objectives(c, doc, "mAP50-95")
    detector, positions, stages = _detector(c, doc, base), (), ()
    if detector is not None:
        positions, stages = _positions(c, doc, detector, size)
    return dict(
        backbone=detector.name if detector is not None else None,
        input_size=(size, size),
        in_chans=3,
        num_classes=None,
        data=data,
        stages=stages,
        stage_indices=tuple(range(len(positions))),
        training=training,
        objectives=objectives,
        latency=latency,
        limits=limits,
        detector=detector,
        positions=positions,
    )


def _data(c: Checker, doc: Mapping, size: int, base: Path, elsewhere: Mapping[str, str]) -> Any:
    data = parse_data(c, doc, {s: data_class(s) for s in SOURCES}, DEFAULT_SOURCE, elsewhere)
    raw = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}
    if data.source == "digits_boxes":
        if data.min_objects > data.max_objects:
            c.add(
                "data.min_objects",
                f"{data.min_objects} is more than max_objects {data.max_objects}",
                c.line(raw, "min_objects"),
            )
        if "canvas" not in raw:
            data = data.replace(canvas=size)
    if data.source == "ultralytics":
        if not data.yaml:
            c.add("data.yaml", "missing; an ultralytics dataset YAML (train, val, names)", c.line(doc, "data"))
        else:
            given = Path(data.yaml)
            data = data.replace(yaml=str(given if given.is_absolute() else (base / given).resolve()))
            from nas.tasks.detect.data import DetectionDataError, user_dataset

            try:  # the rules the search meets when it loads the data, checked here (nas check too)
                user_dataset(Path(data.yaml))
            except DetectionDataError as e:
                c.add("data.yaml", str(e), c.line(raw, "yaml"))
    return data


def _detector(c: Checker, doc: Mapping, base: Path) -> Any:
    source, scale = doc.get("detector"), doc.get("scale")
    if not isinstance(source, str) or not source:
        c.add(
            "detector",
            f"{source!r} is not allowed; an ultralytics model YAML: yolov8n.yaml, yolo11s.yaml or a file",
            c.line(doc, "detector"),
        )
        return None
    if scale is not None and not isinstance(scale, str):
        c.add("scale", f"{scale!r} is not allowed; one of the model YAML's scales, e.g. n, s, m", c.line(doc, "scale"))
        return None
    from nas.tasks.detect.model import DetectorError, load_detector

    try:
        return load_detector(source, base, scale)
    except DetectorError as e:
        c.add(
            "scale" if "scale" in str(e).split(":")[0] else "detector",
            str(e),
            c.line(doc, "scale" if scale else "detector"),
        )
        return None


def _positions(c: Checker, doc: Mapping, detector: Any, imgsz: int) -> tuple[tuple, tuple[StageSpace, ...]]:
    from nas.tasks.detect.model import Position

    raw = doc.get("positions")
    if not isinstance(raw, list) or not raw:
        c.add(
            "positions",
            f"expected a non-empty list of positions ({{at: ..., mechanisms: ...}}); got {raw!r}",
            c.line(doc, "positions"),
        )
        return (), ()
    entries = [e if isinstance(e, Mapping) else {} for e in raw]
    found = detector.positions([e.get("at") for e in entries], imgsz)
    positions: list[Position] = []
    stages: list[StageSpace] = []
    seen: dict[int, int] = {}
    for k, (entry, where) in enumerate(zip(raw, found, strict=True)):
        path, line = f"positions[{k}]", c.line(raw, k)
        if not isinstance(entry, Mapping):
            c.add(path, f"expected a mapping with 'at' and 'mechanisms'; got {entry!r}", line)
            continue
        for key in entry:
            if key not in ("at", "mechanisms"):
                c.add(f"{path}.{key}", "unknown key; allowed: at, mechanisms", c.line(entry, key))
        if isinstance(where, str):
            c.add(f"{path}.at", where, c.line(entry, "at") or line)
            continue
        if where.after in seen:
            c.add(
                f"{path}.at",
                f"{entry.get('at')!r} is layer {where.after}, already a position at positions[{seen[where.after]}]",
                c.line(entry, "at"),
            )
            continue
        seen[where.after] = k
        number = len(positions)
        where = Position(number, where.at, where.after, where.channels, where.stride, where.kind)
        side = imgsz // max(where.stride, 1)
        info = StageInfo(
            number,
            where.label(),
            1,
            where.channels,
            (side, side),
            tuple(attention.PLACEMENTS),
            {p: [where.channels] for p in attention.PLACEMENTS},
            {},
        )
        options = parse_options(c, path, entry, info, _own_placement, lambda place, i=info: i.module)
        if options:
            positions.append(where)
            stages.append(StageSpace(number, tuple(options)))
    return tuple(positions), tuple(stages)


def _own_placement(c: Checker, where: str, cfg: Mapping, spec: attention.MechanismSpec) -> list[str]:
    """A row after the position's layer: the mechanism's own placement stands for it (none may be given)."""
    if "placement" in cfg:
        c.add(
            f"{where}.placement",
            "a detection position takes no placement; the attention row goes after the position's layer",
            c.line(cfg, "placement"),
        )
    return [spec.placement]
