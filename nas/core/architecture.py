"""The Architecture value: one choice per stage of a backbone, with its canonical string
(``resnet10t|none|none|se(reduction=8)|cbam(reduction=16,kernel_size=7)@stage_output``), its parsing and
round trips (whether it can be built: ``nas.tasks.classify.model.architecture_problems``)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import attention
from nas.core.errors import UserError

NONE = "none"


class ArchitectureError(UserError):
    pass


def _format_value(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class StageChoice:
    """One stage's choice: a mechanism (or ``none``) with complete hyperparameters and its placement;
    ``replace_builtin`` removes attention the backbone already has in this stage."""

    mechanism: str = NONE
    hparams: tuple[tuple[str, Any], ...] = ()
    placement: str | None = None
    replace_builtin: bool = False

    def __post_init__(self) -> None:
        if self.mechanism == NONE:
            if self.hparams or self.placement is not None:
                raise ArchitectureError("'none' takes no hyperparameters and no placement")
            return
        try:
            spec = attention.get_spec(self.mechanism)
        except attention.UnknownMechanismError as e:
            raise ArchitectureError(str(e)) from None
        given = dict(self.hparams)
        for key, value in given.items():  # type/range only; channel rules are checked at build time
            try:
                spec.hparam(key, value).coerce(spec.name, value)
            except attention.HyperparameterError as e:
                raise ArchitectureError(str(e)) from None
        full = tuple((h.name, given.get(h.name, given.get(h.short, h.default))) for h in spec.hparams)
        object.__setattr__(self, "mechanism", spec.name)
        object.__setattr__(self, "hparams", full)
        placement = self.placement or spec.placement
        if placement not in attention.PLACEMENTS:
            raise ArchitectureError(f"placement {placement!r} is unknown; allowed: {', '.join(attention.PLACEMENTS)}")
        object.__setattr__(self, "placement", placement)

    def __str__(self) -> str:
        text = "!" if self.replace_builtin else ""
        if self.mechanism == NONE:
            return text + NONE
        spec = attention.MECHANISMS[self.mechanism]
        text += self.mechanism
        if self.hparams:
            text += "(" + ",".join(f"{spec.hparam(k).short}={_format_value(v)}" for k, v in self.hparams) + ")"
        if self.placement != spec.placement:
            text += "@" + self.placement
        return text

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mechanism": self.mechanism}
        if self.mechanism != NONE:
            d["hparams"] = dict(self.hparams)
            d["placement"] = self.placement
        if self.replace_builtin:
            d["replace_builtin"] = True
        return d


_CHOICE = re.compile(
    r"^(?P<bang>!?)(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<args>[^()]*)\))?(?:@(?P<place>[a-z0-9_]+))?$"
)
NUMBER_TEXT = re.compile(r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?)$")


def _parse_value(text: str) -> Any:
    text = text.strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    if NUMBER_TEXT.match(text) or text.lower() in ("inf", "-inf", "nan"):
        return float(text)
    return text


@dataclass(frozen=True)
class Architecture:
    """An immutable, hashable architecture: a timm backbone and one StageChoice per stage that has blocks
    (in the backbone's order). Canonical string: ``resnet18|se(r=16)|none|cbam(r=8,k=7)|eca(k=3)``;
    a placement other than the mechanism's own is written ``@placement``; ``!`` marks a stage whose
    built-in attention is removed."""

    backbone: str
    stages: tuple[StageChoice, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.backbone):
            raise ArchitectureError(f"backbone {self.backbone!r} is not a model name")
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages or not all(isinstance(s, StageChoice) for s in self.stages):
            raise ArchitectureError("an architecture needs one StageChoice per stage")

    def __str__(self) -> str:
        return "|".join([self.backbone, *map(str, self.stages)])

    @classmethod
    def parse(cls, text: str) -> Architecture:
        if not isinstance(text, str) or "|" not in text:
            raise ArchitectureError(
                f"{text!r} is not an architecture string; expected "
                "'backbone|stage|stage|...', e.g. 'resnet18|se(r=16)|none|none|eca(k=3)'"
            )
        backbone, *parts = [p.strip() for p in text.split("|")]
        choices = []
        for i, part in enumerate(parts):
            m = _CHOICE.match(part)
            if not m:
                raise ArchitectureError(
                    f"stage {i + 1} of {text!r}: {part!r} is not 'name(key=value,...)'; "
                    "e.g. 'cbam(r=8,k=7)', 'none', 'simam(lam=0.1)@post_conv3x3'"
                )
            hp: dict[str, Any] = {}
            if m.group("args"):
                for item in m.group("args").split(","):
                    key, eq, value = item.partition("=")
                    if not eq or not key.strip():
                        raise ArchitectureError(f"stage {i + 1} of {text!r}: {item!r} is not key=value")
                    hp[key.strip()] = _parse_value(value)
            name = m.group("name")
            if name == NONE and (hp or m.group("place")):
                raise ArchitectureError(f"stage {i + 1} of {text!r}: 'none' takes no arguments")
            try:
                choices.append(StageChoice(name, tuple(hp.items()), m.group("place"), bool(m.group("bang"))))
            except ArchitectureError as e:
                raise ArchitectureError(f"stage {i + 1} of {text!r}: {e}") from None
        return cls(backbone, tuple(choices))

    def to_dict(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "stages": [s.to_dict() for s in self.stages], "string": str(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        if not isinstance(data, Mapping) or "backbone" not in data or not isinstance(data.get("stages"), list):
            raise ArchitectureError("an architecture mapping needs 'backbone' and a list 'stages'")
        stages = []
        for i, s in enumerate(data["stages"]):
            if not isinstance(s, Mapping) or set(s) - {"mechanism", "hparams", "placement", "replace_builtin"}:
                raise ArchitectureError(f"stages[{i}]: expected keys mechanism, hparams, placement, replace_builtin")
            hp = s.get("hparams") or {}
            if not isinstance(hp, Mapping):
                raise ArchitectureError(f"stages[{i}].hparams must be a mapping")
            stages.append(
                StageChoice(
                    s.get("mechanism", NONE),
                    tuple(hp.items()),
                    s.get("placement"),
                    bool(s.get("replace_builtin", False)),
                )
            )
        arch = cls(data["backbone"], tuple(stages))
        if "string" in data and data["string"] != str(arch):
            raise ArchitectureError(f"'string' {data['string']!r} disagrees with the stages ({arch})")
        return arch

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(json.loads(text))

    @property
    def is_baseline(self) -> bool:
        return all(s.mechanism == NONE and not s.replace_builtin for s in self.stages)
