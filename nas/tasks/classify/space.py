"""A classification space's own part of the file: ``backbone`` (a timm model) and its ``stages``,
``input_size``, ``in_chans``, ``num_classes``, the classifier's training keys and data sources, and the
rules between them (the digits are drawn at the input size, the model's channels are the data's)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attention
from nas.core.config import Checker
from nas.core.space import StageInfo, StageSpace
from nas.core.spacecheck import input_size as parse_input_size
from nas.core.spacecheck import parse_data, parse_latency_limits, parse_objectives, parse_options, parse_training
from nas.tasks.classify import backbone as bb
from nas.tasks.classify.settings import CHANNELS, DEFAULT_SOURCE, SOURCES, TrainingSettings, data_class

OWN_KEYS = ("backbone", "stages", "num_classes")  # keys only a classification space has
MAX_CLASSES = 100_000


def parse(c: Checker, doc: Mapping, base: Path, elsewhere: Mapping[str, str]) -> dict[str, Any]:
    """The SearchSpace fields of a classification space (problems go to ``c``)."""
    size = parse_input_size(c, doc, "input_size", doc.get("input_size", 224))
    in_chans = doc.get("in_chans", 3)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        c.add("in_chans", f"{in_chans!r} is not allowed; expected a positive integer", c.line(doc, "in_chans"))
        in_chans = 3
    num_classes = doc.get("num_classes", "auto")
    if num_classes == "auto":
        num_classes = None
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
        c.add(
            "num_classes",
            f"{num_classes!r} is not allowed; expected an integer from 2 to {MAX_CLASSES:,} or 'auto'",
            c.line(doc, "num_classes"),
        )
        num_classes = None
    data = parse_data(c, doc, {s: data_class(s) for s in SOURCES}, DEFAULT_SOURCE, elsewhere)
    if data.source == "imagefolder" and not data.root:
        c.add("data.root", "missing; the folder with train/ and val/ (or class) subfolders", c.line(doc, "data"))
    if "in_chans" not in doc:  # the data's own channels
        in_chans = CHANNELS.get(data.source, in_chans)
    data = _data_fits_model(c, doc, data, size, in_chans)
    training = parse_training(c, doc, TrainingSettings)
    latency, limits = parse_latency_limits(c, doc)
    objectives = parse_objectives(c, doc, "accuracy")
    name = doc.get("backbone")
    infos: tuple[StageInfo, ...] = ()
    if name is None:
        c.add("backbone", "missing; give a timm model name such as resnet18")
    elif reason := bb.check_model_name(name):
        c.add("backbone", reason, c.line(doc, "backbone"))
    else:
        try:
            infos = bb.describe(name, size, in_chans)
        except RuntimeError as e:
            c.add(
                "input_size",
                f"{list(size)} is too small for {name}: {str(e).splitlines()[0]}",
                c.line(doc, "input_size"),
            )
    return dict(
        backbone=name,
        input_size=size,
        in_chans=in_chans,
        num_classes=num_classes,
        data=data,
        stages=_stages(c, doc, infos) if infos else (),
        stage_indices=tuple(s.index for s in infos),
        training=training,
        objectives=objectives,
        latency=latency,
        limits=limits,
        builtin_stages=tuple(s.index for s in infos if any(s.builtin.values())),
    )


def _data_fits_model(c: Checker, doc: Mapping, data: Any, size: tuple[int, int], in_chans: int) -> Any:
    """The rules between sections that the search would otherwise meet only when it loads the data:
    the model's input channels are the data's, and the digits are made at the input size (by default
    the canvas is the input size)."""
    raw = doc.get("data") if isinstance(doc.get("data"), Mapping) else {}
    if data.source == "digits" and "canvas" not in raw and size[0] == size[1]:
        data = data.replace(canvas=size[0])
    want = CHANNELS.get(data.source)
    if want is not None and in_chans != want:
        c.add(
            "in_chans",
            f"{in_chans} is not allowed with data.source {data.source}; its images have {want} channel(s): "
            f"in_chans: {want}",
            c.line(doc, "in_chans"),
        )
    if data.source == "digits" and tuple(size) != (data.canvas, data.canvas):
        c.add(
            "data.canvas",
            f"{data.canvas} does not match input_size {list(size)}; the digits are drawn at the input size: "
            f"data.canvas: {size[0]}" + ("" if size[0] == size[1] else " (and a square input_size)"),
            c.line(raw, "canvas") or c.line(doc, "input_size"),
        )
    return data


def _stages(c: Checker, doc: Mapping, infos: tuple[StageInfo, ...]) -> tuple[StageSpace, ...]:
    raw = doc.get("stages")
    by_index = {s.index: s for s in infos}
    allowed_idx = ", ".join(str(s.index) for s in infos)
    if raw is None:
        c.add("stages", f"missing; a list of stages to search ({doc.get('backbone')} has stages {allowed_idx})")
        return ()
    if not isinstance(raw, list) or not raw:
        c.add("stages", f"expected a non-empty list of stages; got {raw!r}", c.line(doc, "stages"))
        return ()
    out: list[StageSpace] = []
    seen: dict[int, int] = {}
    for k, entry in enumerate(raw):
        path, line = f"stages[{k}]", c.line(raw, k)
        if not isinstance(entry, Mapping):
            c.add(path, f"expected a mapping with 'stage' and 'mechanisms'; got {entry!r}", line)
            continue
        for key in entry:
            if key not in ("stage", "mechanisms", "replace_builtin"):
                c.add(f"{path}.{key}", "unknown key; allowed: stage, mechanisms, replace_builtin", c.line(entry, key))
        index = entry.get("stage")
        if isinstance(index, bool) or not isinstance(index, int) or index not in by_index:
            c.add(
                f"{path}.stage",
                f"{index!r} is not a stage of {doc.get('backbone')}; its stages with blocks "
                f"are {allowed_idx} (feature_info indices)",
                c.line(entry, "stage") or line,
            )
            continue
        if index in seen:
            c.add(
                f"{path}.stage", f"stage {index} is already described at stages[{seen[index]}]", c.line(entry, "stage")
            )
            continue
        seen[index] = k
        replace = entry.get("replace_builtin", False)
        if not isinstance(replace, bool):
            c.add(
                f"{path}.replace_builtin",
                f"{replace!r} is not allowed; expected true or false",
                c.line(entry, "replace_builtin"),
            )
            replace = False
        info = by_index[index]
        options = parse_options(
            c, path, entry, info, _placements(info, replace), lambda place, i=info: f"{place} of stage {i.index}"
        )
        if options:
            out.append(StageSpace(index, tuple(options), replace))
    return tuple(sorted(out, key=lambda s: s.index))


def _placements(info: StageInfo, replace: bool) -> Any:
    """Where a mechanism may go in the stage: those given (``placement:``, one or a list) or the paper's
    where the blocks offer it, else after the stage; each checked by the one placement rule."""

    def allowed(c: Checker, where: str, cfg: Mapping, spec: attention.MechanismSpec) -> list[str]:
        if "placement" in cfg:
            values = cfg["placement"] if isinstance(cfg["placement"], list) else [cfg["placement"]]
            line = c.line(cfg, "placement")
        else:
            values = [spec.placement if spec.placement in info.placements else "stage_output"]
            line = None
        good = []
        for p in values:
            problem = bb.placement_problem(
                spec.name, p, info.index, info.placements, info.builtin, replace, bb.REPLACE_BY_YAML
            )
            if problem:
                c.add(f"{where}.placement", problem, line or c.line(cfg, "placement"))
            else:
                good.append(p)
        return good

    return allowed
