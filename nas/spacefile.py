"""Search-space YAML files -> validated SearchSpace.

Validation reports every problem at once, each with the file, the key path (``stages[2].mechanisms.se
.reduction``), the line, what was given and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attention
from nas.core.architecture import NONE, NUMBER_TEXT
from nas.core.errors import MAX_SEED, UserError
from nas.core.names import name_problem
from nas.core.space import Option, SearchSpace, StageSpace
from nas.core.yamlio import load
from nas.tasks.classify import backbone as bb

DATA_SOURCES: dict[str, dict[str, Any]] = {
    # source: {key: (type, default)}; the data module documents each key
    "digits": {
        "canvas": (int, 32),
        "train": (int, 3000),
        "val": (int, 1000),
        "test": (int, 1000),
        "clutter": (int, 2),
        "noise": (float, 0.1),
        "seed": (int, 0),
    },
    "imagefolder": {"root": (str, None), "val_split": (float, 0.2), "on_error": (("raise", "skip"), "raise")},
    "cifar10": {"root": (str, "data"), "download": (bool, True)},
    "cifar100": {"root": (str, "data"), "download": (bool, True)},
}
DETECTION_SOURCES: dict[str, dict[str, Any]] = {  # nas.tasks.detect.data documents each key
    "digits_boxes": {
        "canvas": (int, 64),
        "train": (int, 1024),
        "val": (int, 256),
        "min_objects": (int, 1),
        "max_objects": (int, 3),
        "clutter": (int, 2),
        "noise": (float, 0.1),
        "seed": (int, 0),
    },
    "ultralytics": {"yaml": (str, None)},
}
DATA_COMMON = {"num_workers": (int, 0)}
# numbers that size memory or time, and splits that must not be empty (closed bounds)
DATA_BOUNDS = {
    "canvas": (8, 1024),
    "train": (1, 1_000_000),
    "val": (1, 1_000_000),
    "test": (0, 1_000_000),
    "clutter": (0, 100),
    "min_objects": (0, 50),
    "max_objects": (1, 50),
    "noise": (0.0, 10.0),
    "num_workers": (0, 64),
    "seed": (0, MAX_SEED),
}
TRAINING_BOUNDS = {
    "epochs": (1, 10_000),
    "batch_size": (1, 65_536),
    "devices": (1, 64),
    "noise_seeds": (1, 100),
    "lr": (0.0, 10.0),
    "weight_decay": (0.0, 10.0),
    "momentum": (0.0, 1.0),
    "seed": (0, MAX_SEED),
}

TRAINING = {
    "epochs": (int, 6),
    "batch_size": (int, 128),
    "optimizer": (("adamw", "sgd"), "adamw"),
    "lr": (float, 2e-3),
    "weight_decay": (float, 0.05),
    "momentum": (float, 0.9),
    "schedule": (("onecycle", "cosine", "constant"), "onecycle"),
    "precision": (("32", "16-mixed", "bf16-mixed"), "32"),
    "channels_last": (bool, False),
    "devices": (int, 1),
    "seed": (int, 0),
    "noise_seeds": (int, 3),  # the baseline trained from this many seeds: the search's noise floor
    "confirm": (int, 0),  # when the trials are done: the front and the baseline re-trained from this many fresh seeds
}
DETECTION_TRAINING = {  # ultralytics' trainer: nas.tasks.detect.fit.trainer_args maps these
    "epochs": (int, 4),
    "batch_size": (int, 16),
    "optimizer": (("adamw", "sgd"), "adamw"),
    "lr": (float, 3e-3),
    "weight_decay": (float, 5e-4),
    "momentum": (float, 0.937),
    "schedule": (("linear", "cosine", "constant"), "linear"),
    "warmup_epochs": (float, 0.5),
    "mosaic": (float, 0.0),
    "close_mosaic": (int, 0),
    "precision": (("32",), "32"),
    "devices": (int, 1),
    "seed": (int, 0),
    "noise_seeds": (int, 3),
    "confirm": (int, 0),
}
DETECTION_BOUNDS = {"warmup_epochs": (0.0, 100.0), "mosaic": (0.0, 1.0), "close_mosaic": (0, 10_000), "devices": (1, 1)}
LATENCY = {
    "device": (str, "cpu"),
    "batch_size": (int, 1),
    "input_size": (int, 224),
    "threads": (int, 1),
    "warmup": (int, 5),
    "repeats": (int, 30),
}
LIMITS = {"max_latency_ms": (float, None), "max_params": (float, None), "max_flops": (float, None)}
OBJECTIVES = ("accuracy", "latency", "params", "flops")
TOP_LEVEL = (
    "name",
    "backbone",
    "input_size",
    "in_chans",
    "num_classes",
    "data",
    "stages",
    "training",
    "objectives",
    "latency",
    "limits",
    "detector",
    "scale",
    "positions",
)
CLASSIFICATION_ONLY = ("backbone", "stages", "num_classes")
DETECTION_ONLY = ("detector", "scale", "positions")


@dataclass
class Problem:
    path: str
    message: str
    line: int | None = None


SHOWN_PROBLEMS = 50  # a message lists this many problems, then counts the rest


class SpaceError(UserError):
    """All problems of a search-space file."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file, self.problems = file, problems
        lines = [f"{file}: {len(problems):,} problem{'s' if len(problems) != 1 else ''}"]
        for p in problems[:SHOWN_PROBLEMS]:
            where = f"{file}:{p.line}" if p.line else file
            lines.append(f"  {where}: {p.path}: {p.message}" if p.path else f"  {where}: {p.message}")
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS:,} more")
        super().__init__("\n".join(lines))


class _Checker:
    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(path, message, line))

    def bounded(self, values: Mapping, raw: Any, section: str, bounds: Mapping[str, tuple[float, float]]) -> None:
        """Each number of a validated section within its closed bounds (a bound is stated in the
        message); ``raw`` is the section as written, for line numbers."""
        for key, (low, high) in bounds.items():
            value = values.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not low <= value <= high:
                self.add(
                    f"{section}.{key}",
                    f"{value!r} is not allowed; expected a number from {low:,} to {high:,}",
                    self.line(raw if isinstance(raw, Mapping) else {}, key),
                )

    @staticmethod
    def line(container: Any, key: Any) -> int | None:
        lines = getattr(container, "lines", None)
        if isinstance(lines, dict):
            return lines.get(key)
        if isinstance(lines, list) and isinstance(key, int) and key < len(lines):
            return lines[key]
        return None

    def section(self, data: Mapping, key: str, schema: Mapping[str, tuple], path: str | None = None) -> dict:
        """Validate ``data[key]`` as a mapping against {name: (type or choices, default)}."""
        path = path or key
        raw = data.get(key) if isinstance(data, Mapping) else None
        out = {k: d for k, (_, d) in schema.items()}
        if raw is None:
            return out
        if not isinstance(raw, Mapping):
            self.add(path, f"expected a mapping, got {type(raw).__name__} {raw!r}", self.line(data, key))
            return out
        for k, v in raw.items():
            where = f"{path}.{k}"
            if k not in schema:
                self.add(where, f"unknown key; allowed: {', '.join(schema)}", self.line(raw, k))
                continue
            ok, value = _typed(v, schema[k][0])
            if not ok:
                self.add(where, f"{v!r} is not allowed; expected {_describe_type(schema[k][0])}", self.line(raw, k))
            else:
                out[k] = value
        return out


def _yaml_float(v: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-4`` and ``12.0e6`` as strings (its floats need a dot and a signed
    exponent); where a number is expected, such a string is read as the number it spells."""
    if isinstance(v, str) and NUMBER_TEXT.match(v.strip()):
        return float(v)
    return v


def _typed(v: Any, kind: Any) -> tuple[bool, Any]:
    if kind is float:
        v = _yaml_float(v)
    if isinstance(kind, tuple):
        return (str(v) in kind and not isinstance(v, bool), str(v))
    if kind is bool:
        return isinstance(v, bool), v
    if kind is int:
        if isinstance(v, bool):
            return False, v
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return isinstance(v, int) and v >= 0, v
    if kind is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            return False, v
        return True, float(v)
    if kind is str:
        return isinstance(v, str) and bool(v), v
    return False, v


def _describe_type(kind: Any) -> str:
    if isinstance(kind, tuple):
        return "one of " + ", ".join(repr(k) for k in kind)
    return {
        bool: "true or false",
        int: "a non-negative integer",
        float: "a non-negative number",
        str: "a non-empty string",
    }[kind]


def _as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


def load_space(path: str | Path, base: Path | None = None) -> SearchSpace:
    """Read and validate a search-space YAML file; raises SpaceError listing every problem. Files the
    space names by a relative path (a detector's model YAML, a dataset YAML) are read from ``base``,
    by default the space's folder."""
    path = Path(path)
    data, duplicates = load(path)
    c = _Checker(str(path))
    for key, first, again in duplicates:
        c.add("", f"duplicate key {key!r} (first at line {first}); each key may appear once", again)
    if not isinstance(data, Mapping):
        c.add("", f"the file must be a mapping with keys {', '.join(TOP_LEVEL)}; got {type(data).__name__}")
        raise SpaceError(str(path), c.problems)
    for key in data:
        if key not in TOP_LEVEL:
            c.add(str(key), f"unknown key; allowed: {', '.join(TOP_LEVEL)}", c.line(data, key))

    name = data.get("name", path.stem)
    if problem := name_problem(name):
        c.add("name", problem, c.line(data, "name"))
        name = path.stem
    if "detector" in data:
        return _detection_space(c, data, path, name, base or path.parent)
    for key in DETECTION_ONLY:
        if key in data:
            c.add(
                key, "belongs to a detection space; give 'detector' (an ultralytics model YAML) too", c.line(data, key)
            )

    input_size = _input_size(c, data, "input_size", data.get("input_size", 224))
    in_chans = data.get("in_chans", 3)
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        c.add("in_chans", f"{in_chans!r} is not allowed; expected a positive integer", c.line(data, "in_chans"))
        in_chans = 3
    num_classes = data.get("num_classes", "auto")
    if num_classes == "auto":
        num_classes = None
    elif isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        c.add(
            "num_classes",
            f"{num_classes!r} is not allowed; expected an integer >= 2 or 'auto'",
            c.line(data, "num_classes"),
        )
        num_classes = None

    data_cfg = _data_section(c, data)
    if "in_chans" not in data:  # the data's own channels
        in_chans = DATA_CHANNELS.get(data_cfg.get("source"), in_chans)
    _data_fits_model(c, data, data_cfg, input_size, in_chans)
    training = _training_section(c, data)
    latency, limits = _latency_and_limits(c, data, LATENCY)
    objectives = _objectives(c, data)

    backbone_name = data.get("backbone")
    stage_infos: tuple[bb.StageInfo, ...] = ()
    if backbone_name is None:
        c.add("backbone", "missing; give a timm model name such as resnet18")
    else:
        reason = bb.check_model_name(backbone_name)
        if reason:
            c.add("backbone", reason, c.line(data, "backbone"))
        else:
            try:
                stage_infos = bb.describe(backbone_name, input_size, in_chans)
            except RuntimeError as e:
                c.add(
                    "input_size",
                    f"{list(input_size)} is too small for {backbone_name}: {str(e).splitlines()[0]}",
                    c.line(data, "input_size"),
                )
    stages = _stages(c, data, stage_infos) if stage_infos else ()
    if c.problems:
        raise SpaceError(str(path), c.problems)
    return SearchSpace(
        path=str(path),
        name=name,
        backbone=backbone_name,
        input_size=input_size,
        in_chans=in_chans,
        num_classes=num_classes,
        data=data_cfg,
        stages=stages,
        stage_indices=tuple(s.index for s in stage_infos),
        training=training,
        objectives=objectives,
        latency=latency,
        limits=limits,
        builtin_stages=tuple(s.index for s in stage_infos if any(s.builtin.values())),
    )


def _latency_and_limits(c: _Checker, data: Mapping, schema: Mapping[str, tuple]) -> tuple[dict, dict]:
    latency = c.section(data, "latency", schema)
    for key in ("batch_size", "input_size", "threads", "repeats"):
        if latency[key] is not None and latency[key] < 1:
            c.add(
                f"latency.{key}",
                f"{latency[key]!r} is not allowed; expected an integer >= 1",
                c.line(data.get("latency") or {}, key),
            )
    if not re.fullmatch(r"cpu|cuda(:\d+)?", latency["device"]):
        c.add(
            "latency.device",
            f"{latency['device']!r} is not allowed; expected cpu, cuda or cuda:N",
            c.line(data.get("latency") or {}, "device"),
        )
    limits = c.section(data, "limits", LIMITS)
    for key, value in limits.items():
        if value is not None and value <= 0:
            c.add(
                f"limits.{key}",
                f"{value!r} is not allowed; expected a positive number (or leave it out)",
                c.line(data.get("limits") or {}, key),
            )
    return latency, limits


def _input_size(c: _Checker, data: Mapping, key: str, value: Any) -> tuple[int, int]:
    v = _as_list(value)
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 8 for x in v):
        c.add(key, f"{value!r} is not allowed; expected an integer >= 8 or [height, width]", c.line(data, key))
        return (224, 224)
    return (v[0], v[1])


def _objectives(c: _Checker, data: Mapping, metric: str = "accuracy") -> tuple[str, ...]:
    """The two objectives, the quality one first (stored as ``accuracy``; a detection space may call
    it by its metric, mAP50-95)."""
    raw = data.get("objectives", ["accuracy", "latency"])
    values = ["accuracy" if v == metric else v for v in _as_list(raw)]
    bad = [v for v in values if v not in OBJECTIVES]
    line = c.line(data, "objectives")
    if bad or len(values) != 2 or len(set(values)) != 2 or "accuracy" not in values:
        c.add(
            "objectives",
            f"{raw!r} is not allowed; expected {metric} and one of latency, params, flops (e.g. [{metric}, latency])",
            line,
        )
        return ("accuracy", "latency")
    return ("accuracy", next(v for v in values if v != "accuracy"))


def _training_section(c: _Checker, data: Mapping, schema: Mapping[str, tuple] = TRAINING) -> dict[str, Any]:
    training = c.section(data, "training", schema)
    if training["confirm"] < 0 or training["confirm"] == 1:
        c.add(
            "training.confirm",
            f"{training['confirm']!r} is not allowed; expected 0 (no confirmation) or an "
            "integer >= 2 (one seed gives no interval; 3 or more give intervals worth reading)",
            c.line(data.get("training") or {}, "confirm"),
        )
    bounds = {**TRAINING_BOUNDS, **(DETECTION_BOUNDS if schema is DETECTION_TRAINING else {})}
    c.bounded(training, data.get("training"), "training", bounds)
    if training["lr"] == 0:  # inside the bounds, but trials that never learn
        c.add("training.lr", "0 is not allowed; expected a learning rate > 0", c.line(data.get("training") or {}, "lr"))
    return training


def data_and_training(file: str, data: Mapping, detection: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``data`` and ``training`` sections of ``data`` (a space or an export's architecture.yaml),
    validated and completed with defaults as in a space (a detection space's with ``detection``);
    SpaceError lists every problem."""
    c = _Checker(file)
    if detection:
        out = _data_section(c, data, DETECTION_SOURCES, "digits_boxes"), _training_section(c, data, DETECTION_TRAINING)
    else:
        out = _data_section(c, data), _training_section(c, data)
    if c.problems:
        raise SpaceError(file, c.problems)
    return out


DATA_CHANNELS = {"digits": 1, "cifar10": 3, "cifar100": 3, "imagefolder": 3}  # images as the data module gives them


def _data_fits_model(c: _Checker, data: Mapping, data_cfg: dict, input_size: Any, in_chans: int) -> None:
    """The rules between sections that the search would otherwise meet only when it loads the data:
    the model's input channels are the data's, and the digits are made at the input size (by default
    the canvas is the input size)."""
    source = data_cfg.get("source")
    raw = data.get("data") if isinstance(data.get("data"), Mapping) else {}
    if source == "digits" and "canvas" not in raw and input_size[0] == input_size[1]:
        data_cfg["canvas"] = input_size[0]
    want = DATA_CHANNELS.get(source)
    if want is not None and in_chans != want:
        c.add(
            "in_chans",
            f"{in_chans} is not allowed with data.source {source}; its images have {want} channel(s): in_chans: {want}",
            c.line(data, "in_chans"),
        )
    canvas = data_cfg.get("canvas")
    if source == "digits" and isinstance(canvas, int) and tuple(input_size) != (canvas, canvas):
        c.add(
            "data.canvas",
            f"{canvas} does not match input_size {list(input_size)}; the digits are drawn at the input size: "
            f"data.canvas: {input_size[0]}" + ("" if input_size[0] == input_size[1] else " (and a square input_size)"),
            c.line(raw, "canvas") or c.line(data, "input_size"),
        )


def _data_section(
    c: _Checker, data: Mapping, sources: Mapping[str, dict] = DATA_SOURCES, default: str = "digits"
) -> dict[str, Any]:
    raw = data.get("data") or {"source": default}
    if not isinstance(raw, Mapping):
        c.add("data", f"expected a mapping with 'source'; got {raw!r}", c.line(data, "data"))
        return {"source": default}
    source = raw.get("source", default)
    if source not in sources:
        other = DETECTION_SOURCES if sources is DATA_SOURCES else DATA_SOURCES
        why = f" ({'detection' if other is DETECTION_SOURCES else 'classification'} data)" if source in other else ""
        c.add("data.source", f"{source!r} is not allowed{why}; one of {', '.join(sources)}", c.line(raw, "source"))
        return {"source": default}
    schema = {"source": (tuple(sources), default), **sources[source], **DATA_COMMON}
    out = c.section({"data": raw}, "data", schema)
    c.bounded(out, raw, "data", DATA_BOUNDS)
    if source == "imagefolder" and not out.get("root"):
        c.add("data.root", "missing; the folder with train/ and val/ (or class) subfolders", c.line(data, "data"))
    if source == "digits_boxes" and out["min_objects"] > out["max_objects"]:
        c.add(
            "data.min_objects",
            f"{out['min_objects']} is more than max_objects {out['max_objects']}",
            c.line(raw, "min_objects"),
        )
    if source == "digits_boxes" and out["canvas"] < 32:
        c.add(
            "data.canvas",
            f"{out['canvas']} is not allowed; expected at least 32 (a digit is 16 to 32 pixels)",
            c.line(raw, "canvas"),
        )
    if source == "ultralytics" and not out.get("yaml"):
        c.add("data.yaml", "missing; an ultralytics dataset YAML (train, val, names)", c.line(data, "data"))
    if source == "imagefolder" and not 0 < out["val_split"] < 1:
        c.add(
            "data.val_split",
            f"{out['val_split']!r} is not allowed; expected a number in (0, 1)",
            c.line(raw, "val_split"),
        )
    return out


def _stages(c: _Checker, data: Mapping, infos: tuple[bb.StageInfo, ...]) -> tuple[StageSpace, ...]:
    raw = data.get("stages")
    by_index = {s.index: s for s in infos}
    allowed_idx = ", ".join(str(s.index) for s in infos)
    if raw is None:
        c.add("stages", f"missing; a list of stages to search ({data.get('backbone')} has stages {allowed_idx})")
        return ()
    if not isinstance(raw, list) or not raw:
        c.add("stages", f"expected a non-empty list of stages; got {raw!r}", c.line(data, "stages"))
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
                f"{index!r} is not a stage of {data.get('backbone')}; its stages with blocks "
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
        options = _options(c, path, entry, by_index[index], replace, data.get("backbone"))
        if options:
            out.append(StageSpace(index, tuple(options), replace))
    return tuple(sorted(out, key=lambda s: s.index))


def _options(
    c: _Checker, path: str, entry: Mapping, info: bb.StageInfo, replace: bool, backbone: str, detection: bool = False
) -> list[Option]:
    mechs = entry.get("mechanisms")
    mpath = f"{path}.mechanisms"
    if not isinstance(mechs, Mapping) or not mechs:
        c.add(
            mpath,
            f"expected a non-empty mapping of mechanism -> hyperparameter choices (use 'none' for no "
            f"attention); got {mechs!r}",
            c.line(entry, "mechanisms") or c.line(entry, "stage"),
        )
        return []
    options = []
    for mname, cfg in mechs.items():
        where, line = f"{mpath}.{mname}", c.line(mechs, mname)
        if mname == NONE:
            if cfg not in (None, {}):
                c.add(where, f"'none' takes no hyperparameters; got {cfg!r}", line)
            options.append(Option(NONE, (), (None,)))
            continue
        try:
            spec = attention.get_spec(str(mname))
        except attention.UnknownMechanismError:
            c.add(where, f"unknown mechanism {mname!r}; allowed: none, {', '.join(attention.MECHANISMS)}", line)
            continue
        if cfg is None:
            cfg = {}
        if not isinstance(cfg, Mapping):
            c.add(where, f"expected a mapping of hyperparameter -> value or list of values; got {cfg!r}", line)
            continue
        if detection:  # a row after the layer: the mechanism's own placement stands for it
            if "placement" in cfg:
                c.add(
                    f"{where}.placement",
                    "a detection position takes no placement; the attention row goes after the position's layer",
                    c.line(cfg, "placement"),
                )
            placements = [spec.placement]
        else:
            placements = _placements(c, where, cfg, spec, info, replace)
        hparams = []
        for h in spec.hparams:
            given = [k for k in cfg if k != "placement" and spec.find(str(k)) is h]
            key = given[0] if given else None
            values = _as_list(cfg[key]) if key is not None else [h.default]
            hwhere = f"{where}.{key or h.name}"
            hline = c.line(cfg, key) if key is not None else line
            if not values:
                c.add(hwhere, f"empty list of choices; allowed: {h.describe()}", hline)
                continue
            if len(set(map(repr, values))) != len(values):
                c.add(hwhere, f"{values!r} lists a value twice", hline)
            if h.kind is float:
                values = [_yaml_float(v) for v in values]
            good = []
            for v in values:
                try:
                    good.append(h.coerce(spec.name, v))
                except attention.HyperparameterError:
                    c.add(hwhere, f"{v!r} is not allowed; {h.describe()}", hline)
            for v in good:
                for place in placements:
                    for ch in info.channels.get(place, []):
                        for err in spec.problems(ch, **{h.name: v}):
                            if err.name == h.name:
                                default_note = "" if key is not None else " (the default)"
                                c.add(
                                    hwhere,
                                    f"{v!r}{default_note} is not allowed at {ch} channels "
                                    f"({info.module if detection else f'{place} of stage {info.index}'}): "
                                    f"{err.allowed}",
                                    hline,
                                )
            hparams.append((h.name, tuple(good)))
        for key in cfg:
            if key != "placement" and spec.find(str(key)) is None:
                known = ", ".join(f"{h.name} ({h.short})" for h in spec.hparams) or "none"
                c.add(
                    f"{where}.{key}",
                    f"unknown hyperparameter of {spec.name}; allowed: {known}, placement",
                    c.line(cfg, key),
                )
        if placements:
            options.append(Option(spec.name, tuple(hparams), tuple(placements)))
    return options


def _placements(
    c: _Checker, where: str, cfg: Mapping, spec: attention.MechanismSpec, info: bb.StageInfo, replace: bool
) -> list[str]:
    if "placement" in cfg:
        values = _as_list(cfg["placement"])
        line = c.line(cfg, "placement")
    else:  # the paper's placement where the blocks offer it, else after the stage
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


# -- detection spaces ------------------------------------------------------------------------------------

DETECTION_LATENCY = {**LATENCY, "input_size": (int, None)}  # default: the space's input_size


def _detection_space(c: _Checker, data: Mapping, path: Path, name: str, base: Path) -> SearchSpace:
    """A space over attention positions in an ultralytics detector (``detector``, ``scale``,
    ``positions``); the rest of the file as for classification, with detection's data and training."""
    for key in CLASSIFICATION_ONLY:
        if key in data:
            c.add(
                key,
                "belongs to a classification space; a detection space names 'detector' and 'positions' "
                "(classes come from the data)",
                c.line(data, key),
            )
    raw_size = data.get("input_size", 64)
    if isinstance(raw_size, bool) or not isinstance(raw_size, int) or raw_size < 32 or raw_size % 32:
        c.add(
            "input_size",
            f"{raw_size!r} is not allowed; a detector's image size is one integer, a multiple of 32 "
            "(its largest stride)",
            c.line(data, "input_size"),
        )
        raw_size = 64
    in_chans = data.get("in_chans", 3)
    if in_chans != 3:
        c.add(
            "in_chans",
            f"{in_chans!r} is not allowed; ultralytics detectors read 3-channel images",
            c.line(data, "in_chans"),
        )
    data_cfg = _data_section(c, data, DETECTION_SOURCES, "digits_boxes")
    if data_cfg.get("source") == "digits_boxes":
        raw_data = data.get("data") if isinstance(data.get("data"), Mapping) else {}
        if "canvas" not in raw_data:
            data_cfg["canvas"] = raw_size
    if data_cfg.get("source") == "ultralytics" and data_cfg.get("yaml"):
        given = Path(data_cfg["yaml"])
        data_cfg["yaml"] = str(given if given.is_absolute() else (base / given).resolve())
    training = _training_section(c, data, DETECTION_TRAINING)
    latency, limits = _latency_and_limits(c, data, DETECTION_LATENCY)
    if latency["input_size"] is None:
        latency["input_size"] = raw_size
    elif isinstance(latency["input_size"], int) and latency["input_size"] % 32:
        c.add(
            "latency.input_size",
            f"{latency['input_size']!r} is not allowed; a multiple of 32 (the detector's largest stride)",
            c.line(data.get("latency") or {}, "input_size"),
        )
    objectives = _objectives(c, data, "mAP50-95")

    detector, positions, stages = None, (), ()
    source, scale = data.get("detector"), data.get("scale")
    if not isinstance(source, str) or not source:
        c.add(
            "detector",
            f"{source!r} is not allowed; an ultralytics model YAML: yolov8n.yaml, yolo11s.yaml or a file",
            c.line(data, "detector"),
        )
    elif scale is not None and not isinstance(scale, str):
        c.add("scale", f"{scale!r} is not allowed; one of the model YAML's scales, e.g. n, s, m", c.line(data, "scale"))
    else:
        from nas.tasks.detect.model import DetectorError, load_detector

        try:
            detector = load_detector(source, base, scale)
        except DetectorError as e:
            c.add(
                "scale" if "scale" in str(e).split(":")[0] else "detector",
                str(e),
                c.line(data, "scale" if scale else "detector"),
            )
    if detector is not None:
        positions, stages = _positions(c, data, detector, raw_size)
    if c.problems:
        raise SpaceError(str(path), c.problems)
    return SearchSpace(
        path=str(path),
        name=name,
        backbone=detector.name,
        input_size=(raw_size, raw_size),
        in_chans=3,
        num_classes=None,
        data=data_cfg,
        stages=stages,
        stage_indices=tuple(range(len(positions))),
        training=training,
        objectives=objectives,
        latency=latency,
        limits=limits,
        detector=detector,
        positions=positions,
    )


def _positions(c: _Checker, data: Mapping, detector: Any, imgsz: int) -> tuple[tuple, tuple[StageSpace, ...]]:
    from nas.tasks.detect.model import Position

    raw = data.get("positions")
    if not isinstance(raw, list) or not raw:
        c.add(
            "positions",
            f"expected a non-empty list of positions ({{at: ..., mechanisms: ...}}); got {raw!r}",
            c.line(data, "positions"),
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
        info = bb.StageInfo(
            number,
            where.label(),
            1,
            where.channels,
            (side, side),
            tuple(attention.PLACEMENTS),
            {p: [where.channels] for p in attention.PLACEMENTS},
            {},
        )
        options = _options(c, path, entry, info, False, detector.name, detection=True)
        if options:
            positions.append(where)
            stages.append(StageSpace(number, tuple(options)))
    return tuple(positions), tuple(stages)
