"""A detector and where attention may go in it: an ultralytics model YAML (scale included), its layers
with the channels and stride of each output, the positions a space names (``at: 4``, ``before_sppf``,
``p3``), the model YAML with an attention row after each chosen position, and seeded builds.

A position is "after layer i": the attention row takes layer i's output and every later layer that read
layer i reads the attended output instead (so attention before SPPF feeds SPPF, attention at ``p3``
feeds Detect and the neck alike). Rows are written ``[-1, 1, CBAM, [16, 7]]`` and parsed by
``attention.yolo.register()``; the width comes from the incoming layer.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import attention
from nas.core.architecture import NONE, Architecture, ArchitectureError, StageChoice

MODEL_YAML = "model.yaml"  # a detection export's model YAML
NAMED_POSITIONS = "an integer layer index, before_sppf, or the Detect input at a stride level: p3, p4, p5"


@dataclass(frozen=True)
class Layer:
    index: int
    kind: str  # the module's class name (Conv, C2f, SPPF, Concat, Detect, ...)
    channels: int | None  # of its output; None for a Detect or a layer with several outputs
    stride: int | None


@dataclass(frozen=True)
class Position:
    """Where a space may put attention: after ``after`` (a layer index of the plain model)."""

    index: int  # the position's number in the space (its "stage" in an Architecture)
    at: str  # as the space wrote it
    after: int
    channels: int
    stride: int
    kind: str  # the layer's class name

    def label(self) -> str:
        return f"after layer {self.after} ({self.kind})" + ("" if self.at == str(self.after) else f", {self.at}")


@dataclass(frozen=True)
class Detector:
    """An ultralytics model YAML at one scale: ``name`` (e.g. ``yolov8n``, the Architecture's backbone),
    where it came from, and its model dictionary (without ``nc``: the data decides)."""

    name: str
    source: str  # an ultralytics model name (yolov8n.yaml) or a file path
    scale: str | None
    yaml_text: str  # the model dictionary as YAML, so the value is hashable and travels to a study

    @functools.cached_property
    def dict(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.yaml_text)

    def layers(self, imgsz: int, nc: int = 80) -> tuple[Layer, ...]:
        return _layers(self.yaml_text, imgsz, nc)

    def positions(self, ats: Sequence[Any], imgsz: int) -> list[Position | str]:
        """For each ``at`` a Position, or the reason it is none (a message naming what is allowed)."""
        layers = self.layers(imgsz)
        detect = layers[-1]
        out: list[Position | str] = []
        head_inputs = _detect_inputs(self.dict, len(layers))
        levels = {f"p{round(math.log2(layers[i].stride))}": i for i in head_inputs if layers[i].stride}
        sppf = next((layer.index for layer in layers if layer.kind == "SPPF"), None)
        for k, at in enumerate(ats):
            if isinstance(at, int) and not isinstance(at, bool):
                if not 0 <= at < detect.index:
                    out.append(f"{at} is not a layer before Detect; layers 0 to {detect.index - 1}")
                    continue
                index = at
            elif at == "before_sppf":
                if sppf is None or sppf == 0:
                    out.append(f"{self.name} has no SPPF layer; allowed: {NAMED_POSITIONS}")
                    continue
                index = sppf - 1
            elif isinstance(at, str) and at in levels:
                index = levels[at]
            else:
                named = ", ".join(sorted(levels))
                out.append(f"{at!r} is not allowed; {NAMED_POSITIONS.replace('p3, p4, p5', named)}")
                continue
            layer = layers[index]
            if layer.channels is None:
                out.append(f"layer {index} ({layer.kind}) has no single feature map output")
                continue
            out.append(Position(k, str(at), index, layer.channels, layer.stride or 0, layer.kind))
        return out


def _detect_inputs(d: Mapping[str, Any], n: int) -> list[int]:
    f = (d["head"][-1])[0]
    return [x % n if x < 0 else x for x in (f if isinstance(f, list) else [f])]


class DetectorError(ArchitectureError):
    pass


def load_detector(source: str, base: Path, scale: str | None = None) -> Detector:
    """The detector a space names: an ultralytics model YAML shipped with the package (``yolov8n.yaml``,
    ``yolo11s.yaml``; the scale read from the name) or a file (relative to the space's folder). Raises
    DetectorError naming what was given and what is allowed."""
    from nas.tasks.detect import ultra

    ultra.load()
    import yaml
    from ultralytics.nn.tasks import yaml_model_load

    path = Path(source)
    if not path.is_absolute():
        path = base / path
    try:
        if path.is_file():
            d = read_model_yaml(path)
            name = path.stem
            d.setdefault("scale", _scale_from(name, d))
        else:
            if "/" in source or "\\" in source or not re.fullmatch(r"[A-Za-z0-9_.\-]+\.yaml", source):
                raise DetectorError(
                    f"{source!r} is neither a file (looked at {path}) nor an ultralytics model name; "
                    "e.g. yolov8n.yaml, yolo11s.yaml"
                )
            d = dict(yaml_model_load(source))
            name = Path(source).stem
    except (FileNotFoundError, OSError) as e:
        raise DetectorError(
            f"{source!r} is not an ultralytics model YAML ({str(e).splitlines()[0]}); "
            "give a file or a name such as yolov8n.yaml or yolo11s.yaml"
        ) from None
    for key in ("backbone", "head"):
        if not isinstance(d.get(key), list) or not d[key]:
            raise DetectorError(f"{source}: a model YAML needs a non-empty list {key!r}")
    last = d["head"][-1]
    if not isinstance(last, list) or len(last) != 4 or last[2] != "Detect":
        raise DetectorError(f"{source}: the last head row must be Detect (a detection model); it is {last!r}")
    scales = d.get("scales") or {}
    if scale is not None:
        if scale not in scales:
            raise DetectorError(f"scale {scale!r} is not one of {source}'s scales: {', '.join(scales) or 'none'}")
        d["scale"] = scale
    elif scales and d.get("scale") not in scales:
        d["scale"] = next(iter(scales))
    chosen = d.get("scale") if scales else None
    stem = re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", name)
    if chosen and not name.endswith(chosen):
        name = f"{stem}{chosen}" if stem != name else f"{name}-{chosen}"
    keep = {k: v for k, v in d.items() if k not in ("yaml_file", "nc", "ch")}
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
        name = re.sub(r"[^A-Za-z0-9_.\-]", "-", name)
    return Detector(name, source, chosen, yaml.safe_dump(keep, sort_keys=False))


def read_model_yaml(path: Path) -> dict[str, Any]:
    """The model YAML at ``path`` as plain data, read safely and checked as ultralytics' parser will
    meet it (``attention.yolo.model_yaml_problems``: no code in ``activation:``, only model layers in
    rows); a DetectorError names each problem with its line."""
    from attention.yolo import keypath, model_yaml_problems
    from nas.core.yamlio import line_at, load, plain
    from nas.tasks.detect import ultra

    ultra.load()  # the parser's names, ours registered
    d, _ = load(path)
    problems = model_yaml_problems(d)
    if problems:
        shown = [f"{path}:{line_at(d, k) or 1}: {keypath(k) or 'the file'}: {m}" for k, m in problems]
        raise DetectorError("\n    ".join([f"{path}: not a model YAML that may be built:", *shown]))
    return plain(d)


def _scale_from(name: str, d: Mapping[str, Any]) -> str | None:
    m = re.search(r"\d+([nslmx])(.+)?$", name)
    return m.group(1) if m and m.group(1) in (d.get("scales") or {}) else None


@functools.lru_cache(maxsize=32)
def _layers(yaml_text: str, imgsz: int, nc: int) -> tuple[Layer, ...]:
    import yaml

    from nas.tasks.detect import ultra

    ultra.load()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel({**yaml.safe_load(yaml_text), "nc": nc}, ch=3, nc=nc, verbose=False).eval()
    shapes: dict[int, Any] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, o, i=i: shapes.__setitem__(i, o)) for i, m in enumerate(model.model)
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for i, m in enumerate(model.model):
        o = shapes.get(i)
        ok = isinstance(o, torch.Tensor) and o.dim() == 4
        out.append(
            Layer(
                i,
                type(m).__name__,
                int(o.shape[1]) if ok else None,
                round(imgsz / o.shape[2]) if ok else None,
            )
        )
    return tuple(out)


# -- the model YAML of an architecture ------------------------------------------------------------------


def alias_name(mechanism: str) -> str:
    """The class name a YAML row uses for ``mechanism`` (attention.yolo's alias)."""
    return attention.MECHANISMS[mechanism].cls.__name__


def row_args(choice: StageChoice, channels: int) -> list[Any]:
    """The row's arguments: the mechanism's hyperparameters in registry order, resolved at ``channels``."""
    spec = attention.MECHANISMS[choice.mechanism]
    try:
        hp = spec.resolve(channels, **dict(choice.hparams))
    except attention.HyperparameterError as e:
        raise DetectorError(str(e)) from None
    return [hp[h.name] for h in spec.hparams if h.name in hp]


def model_dict(
    detector: Detector, positions: Sequence[Position], arch: Architecture, nc: int, gated: bool = False
) -> dict[str, Any]:
    """The detector's model YAML dictionary with an attention row after each position whose choice is
    not ``none`` (``gated``: a ``Gated`` row, identity-started); ``nc`` classes. Absolute ``from``
    indices are renumbered so that every layer reading a layer that gained attention reads the row."""
    if len(arch.stages) != len(positions):
        raise DetectorError(
            f"{arch}: {len(arch.stages)} choices for {len(positions)} positions of the space ({detector.name})"
        )
    d = copy.deepcopy(detector.dict)
    nb = len(d["backbone"])
    rows = d["backbone"] + d["head"]
    inserted = {
        p.after: (
            [-1, 1, "Gated", [alias_name(c.mechanism), *row_args(c, p.channels)]]
            if gated
            else [-1, 1, alias_name(c.mechanism), row_args(c, p.channels)]
        )
        for p, c in zip(positions, arch.stages, strict=True)
        if c.mechanism != NONE
    }

    def new(j: int) -> int:  # the new index of what layer j's consumers read
        return j + sum(1 for a in inserted if a <= j)

    out_rows, backbone_rows = [], 0
    for j, row in enumerate(rows):
        f = row[0]
        fs = f if isinstance(f, list) else [f]
        mapped = [(-1 if x == -1 else new(j + x if x < 0 else x)) for x in fs]
        out_rows.append([mapped if isinstance(f, list) else mapped[0], *row[1:]])
        if j < nb:
            backbone_rows += 1
        if j in inserted:
            out_rows.append(inserted[j])
            if j < nb:
                backbone_rows += 1
    d["backbone"], d["head"] = out_rows[:backbone_rows], out_rows[backbone_rows:]
    d["nc"] = nc
    return d


def build(
    detector: Detector,
    positions: Sequence[Position],
    arch: Architecture,
    nc: int,
    init_seed: int | None = None,
    start: Mapping[str, torch.Tensor] | None = None,
    gated: bool = False,
) -> nn.Module:
    """The ultralytics DetectionModel of ``arch``. With ``init_seed`` the detector's own layers start from
    the weights the plain detector gets from that seed (identical for every architecture) and each
    attention row from a generator of its own (the seed and its position), so two architectures differ
    only where their choices differ, as for classification (``nas.tasks.classify.model.build``).
    ``start``: the plain detector's trained weights, loaded into its layers before they are copied into
    the architecture's; ``gated``: attention rows identity-started (``attention.Gated``)."""
    from nas.tasks.detect import ultra

    ultra.load()
    from ultralytics.nn.tasks import DetectionModel

    from nas.core.seeding import seeded

    if init_seed is not None:
        torch.manual_seed(init_seed)
    plain = DetectionModel(copy.deepcopy({**detector.dict, "nc": nc}), ch=3, nc=nc, verbose=False)
    if start is not None:
        load_start(plain, start, str(arch))
    if arch.is_baseline:
        return plain
    try:
        model = DetectionModel(model_dict(detector, positions, arch, nc, gated), ch=3, nc=nc, verbose=False)
    except attention.HyperparameterError as e:
        raise DetectorError(f"{arch}: {e}") from None
    chosen = {p.after: (p, c) for p, c in zip(positions, arch.stages, strict=True) if c.mechanism != NONE}
    k = 0
    for j, layer in enumerate(plain.model):
        model.model[j + k].load_state_dict(layer.state_dict())
        if j in chosen:
            k += 1
            p, c = chosen[j]
            row = model.model[j + k]
            with seeded(init_seed, p.index, -1):
                alias = type(row.new if gated else row)
                fresh = alias(p.channels, None, *row_args(c, p.channels))
            row.load_state_dict((attention.Gated(fresh) if gated else fresh).state_dict())
    return model


def attention_rows(model: nn.Module) -> list[tuple[int, str]]:
    """(layer index, class name) of each attention row in a built detector (a gated row: its mechanism's)."""
    rows = []
    for i, m in enumerate(model.model):
        inner = m.new if isinstance(m, attention.Gated) else m
        if type(inner).__module__ == "attention.yolo":
            rows.append((i, type(inner).__name__))
    return rows


def load_start(model: nn.Module, start: Mapping[str, torch.Tensor], what: str) -> None:
    """``start`` (a plain detector's state dict) into ``model``; a DetectorError naming the first key or
    shape that does not fit."""
    from nas.core.artifacts import state_mismatch

    problem = state_mismatch(model.state_dict(), start)
    if problem:
        raise DetectorError(f"{what}: the starting weights do not fit the plain detector ({problem})")
    model.load_state_dict(start)
