"""Typed settings, parsed once: the sections of a search space (``training``, ``data``, ``latency``,
``limits``) as frozen values whose every key is declared once, with its type or choices, its default,
its bounds, any rule of its own, and whether a study may change it on resume (``Setting``). A task
declares its own training keys and data sources (``nas.tasks.*``); the rest is here.

Parsing reports every problem at once (``Checker``), each with the file, the line, the key path, what
was given and what is allowed (``SpaceError``). The values' ``as_dict()`` is what studies and exports
store (the keys in their declared order), so stored studies and export cards read as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, make_dataclass, replace
from typing import Any, ClassVar

from nas.core.architecture import NUMBER_TEXT
from nas.core.errors import MAX_SEED, UserError

# -- problems, with file, line and key path -------------------------------------------------------------


@dataclass
class Problem:
    path: str
    message: str
    line: int | None = None


SHOWN_PROBLEMS = 50  # a message lists this many problems, then counts the rest


class SpaceError(UserError):
    """All problems of a search-space file (or of the sections of an export's card)."""

    def __init__(self, file: str, problems: list[Problem]):
        self.file, self.problems = file, problems
        lines = [f"{file}: {len(problems):,} problem{'s' if len(problems) != 1 else ''}"]
        for p in problems[:SHOWN_PROBLEMS]:
            where = f"{file}:{p.line}" if p.line else file
            lines.append(f"  {where}: {p.path}: {p.message}" if p.path else f"  {where}: {p.message}")
        if len(problems) > SHOWN_PROBLEMS:
            lines.append(f"  ... and {len(problems) - SHOWN_PROBLEMS:,} more")
        super().__init__("\n".join(lines))


class Checker:
    """Collects the problems of one file."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(path, message, line))

    def raise_if_any(self) -> None:
        if self.problems:
            raise SpaceError(self.file, self.problems)

    @staticmethod
    def line(container: Any, key: Any) -> int | None:
        lines = getattr(container, "lines", None)
        if isinstance(lines, dict):
            return lines.get(key)
        if isinstance(lines, list) and isinstance(key, int) and key < len(lines):
            return lines[key]
        return None


# -- one setting ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One key of a section: ``kind`` (int, float, bool, str, or a tuple of allowed strings), its default
    (None: required or filled in later), closed ``bounds``, a ``rule`` beyond them with the text that
    states it, and ``on_resume``: whether a study may be resumed with another value (the study records
    the change; nothing its trials trained depends on it)."""

    kind: Any
    default: Any = None
    bounds: tuple[float, float] | None = None
    rule: Callable[[Any], bool] | None = None
    rule_text: str = ""
    on_resume: bool = False
    path: bool = False  # a file or folder: a study records it made absolute (read from any folder later)
    added: bool = False  # came after studies were fingerprinted: left out of a fingerprint at its default

    def describe(self) -> str:
        """What is allowed, as messages say it."""
        if self.bounds is not None:
            low, high = self.bounds
            return f"a number from {low:,} to {high:,}" + (f"; {self.rule_text}" if self.rule_text else "")
        return _describe_type(self.kind) + (f"; {self.rule_text}" if self.rule_text else "")

    def violation(self, value: Any) -> str | None:
        """What is allowed, when ``value`` (already of the right type) is not; None when it is."""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and self.bounds is not None:
            low, high = self.bounds
            if not low <= value <= high:
                return f"a number from {low:,} to {high:,}"
        if self.rule is not None and value is not None and not self.rule(value):
            return self.rule_text
        return None

    def problem(self, value: Any, shown: Any = None) -> str | None:
        """Why ``value`` (already of the right type; ``shown`` as the user wrote it) is not allowed, or None."""
        allowed = self.violation(value)
        return None if allowed is None else f"{value if shown is None else shown!r} is not allowed; expected {allowed}"


def yaml_float(v: Any) -> Any:
    """PyYAML (YAML 1.1) reads ``1e-4`` and ``12.0e6`` as strings (its floats need a dot and a signed
    exponent); where a number is expected, such a string is read as the number it spells."""
    if isinstance(v, str) and NUMBER_TEXT.match(v.strip()):
        return float(v)
    return v


def typed(v: Any, kind: Any) -> tuple[bool, Any]:
    """Whether ``v`` is of ``kind``, and the value as that kind."""
    if kind is float:
        v = yaml_float(v)
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


# -- sections as frozen values --------------------------------------------------------------------------


class Section:
    """Base of a parsed section: a frozen dataclass made from a schema (``section_class``)."""

    schema: ClassVar[Mapping[str, Setting]]

    def as_dict(self) -> dict[str, Any]:
        """The values by key, in the schema's order: what studies and export cards store."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Any:
        return replace(self, **changes)  # type: ignore[type-var]

    def changeable_on_resume(self) -> tuple[str, ...]:
        return tuple(k for k, s in self.schema.items() if s.on_resume)

    def fingerprinted(self) -> list[tuple[str, Any]]:
        """The (key, value) pairs that say what a study's trials trained: not those a resume may change,
        nor settings added since studies were fingerprinted while at their default (so a study made
        before them resumes)."""
        return sorted(
            (k, v)
            for k, v in self.as_dict().items()
            if not self.schema[k].on_resume and not (self.schema[k].added and v == self.schema[k].default)
        )

    def with_absolute_paths(self, base: Any) -> Any:
        """These settings with every path (``Setting.path``) made absolute, relative ones against ``base``."""
        from pathlib import Path

        changes = {
            k: str((Path(base) / v).resolve())
            for k, s in self.schema.items()
            if s.path and isinstance(v := getattr(self, k), str) and not Path(v).is_absolute()
        }
        return self.replace(**changes) if changes else self


def section_class(name: str, schema: Mapping[str, Setting], base: type, module: str) -> type:
    """A frozen dataclass ``name`` with one field per key of ``schema`` (in its order), deriving from
    ``base`` (which declares the attributes every reader may use); ``module``: where it is bound to
    ``name`` (so it pickles, for spawned DDP ranks)."""
    cls = make_dataclass(name, [(k, Any, s.default) for k, s in schema.items()], bases=(base,), frozen=True)
    cls.schema = dict(schema)
    cls.__module__ = module
    return cls


def parse_section(
    c: Checker, raw: Any, schema: Mapping[str, Setting], path: str, line: int | None = None
) -> dict[str, Any]:
    """``raw`` (a mapping as written, or None) checked against ``schema``: every key known, of its kind,
    within its bounds and rule; the defaults filled in. Problems go to ``c``; a bad value keeps its
    default."""
    out = {k: s.default for k, s in schema.items()}
    if raw is None:
        return out
    if not isinstance(raw, Mapping):
        c.add(path, f"expected a mapping, got {type(raw).__name__} {raw!r}", line)
        return out
    for k, v in raw.items():
        where = f"{path}.{k}"
        if k not in schema:
            c.add(where, f"unknown key; allowed: {', '.join(schema)}", c.line(raw, k))
            continue
        if v is None and schema[k].default is None:  # written empty (as a card writes one not given)
            continue
        ok, value = typed(v, schema[k].kind)
        if not ok:
            c.add(where, f"{v!r} is not allowed; expected {_describe_type(schema[k].kind)}", c.line(raw, k))
            continue
        problem = schema[k].problem(value, v)
        if problem:
            c.add(where, problem, c.line(raw, k))
            continue
        out[k] = value
    return out


def as_list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


# -- what every task shares -----------------------------------------------------------------------------

CONFIRM_RULE = (
    "0 (no confirmation) or an integer >= 2 (one seed gives no interval; 3 or more give intervals worth reading)"
)
MAX_CONFIRM = 100  # confirmation seeds per member

# the keys every task's training section has (each task adds its own and sets its defaults)
SEED = Setting(int, 0, bounds=(0, MAX_SEED))
NOISE_SEEDS = Setting(int, 3, bounds=(1, 100), on_resume=True)  # the baseline from this many seeds: the noise floor
CONFIRM = Setting(int, 0, bounds=(0, MAX_CONFIRM), rule=lambda v: v != 1, rule_text=CONFIRM_RULE, on_resume=True)
# racing confirmation: ``confirm`` seeds per look, more only for members still inconclusive, up to
# ``confirm_max`` (0: twice ``confirm``); ``equivalence``: the margin, in points, inside which a member
# whose whole interval lies is called equivalent to the baseline
CONFIRM_MAX = Setting(int, 0, bounds=(0, MAX_CONFIRM), on_resume=True, added=True)
EQUIVALENCE = Setting(float, 0.5, bounds=(0.0, 100.0), on_resume=True, added=True)
# complete trials off the front within this many paired noise sds of it also race (0: off)
CONFIRM_NEAR = Setting(float, 0.0, bounds=(0.0, 10.0), on_resume=True, added=True)
CONFIRMATION = {
    "confirm": CONFIRM,
    "confirm_max": CONFIRM_MAX,
    "equivalence": EQUIVALENCE,
    "confirm_near": CONFIRM_NEAR,
}
LR_RULE = dict(bounds=(0.0, 10.0), rule=lambda v: v > 0, rule_text="a learning rate > 0")

# where a trial's network starts (every task): from scratch; from the space's baseline trained once for
# ``init_epochs`` (the study's warm-up, kept in its artifact store); or from given weights (``checkpoint``,
# a local file, or ``pretrained: true``: the backbone's published weights, which needs the network)
START = {
    "init": Setting(("scratch", "baseline", "pretrained"), "scratch", added=True),
    "init_epochs": Setting(int, 0, bounds=(0, 10_000), added=True),
    "init_lr": Setting(float, None, **LR_RULE, added=True),  # the warm-up's peak learning rate (default: lr)
    "insert": Setting(("identity", "official"), "identity", added=True),  # attention put in a trained network
    # the learning rate of what a warm start puts in (attention modules, their gates; default: lr)
    "insert_lr": Setting(float, None, **LR_RULE, added=True),
    "checkpoint": Setting(str, None, path=True, added=True),
    "pretrained": Setting(bool, False, added=True),
}


def confirm_allowed(value: int) -> str | None:
    """What a confirmation count (``training.confirm``, ``nas report --confirm``) may be, when ``value``
    is not allowed; None when it is."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return CONFIRM_RULE
    return CONFIRM.violation(value)


class Training(Section):
    """A space's ``training`` section; each task adds keys of its own (``schema``)."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    momentum: float
    schedule: str
    precision: str
    devices: int
    seed: int
    noise_seeds: int
    confirm: int
    confirm_max: int
    equivalence: float
    confirm_near: float
    init: str
    init_epochs: int
    init_lr: float | None
    insert: str
    insert_lr: float | None
    checkpoint: str | None
    pretrained: bool

    @property
    def race_ceiling(self) -> int:
        """The most confirmation seeds a member gets (``confirm_max``, by default twice ``confirm``)."""
        return self.confirm_max or 2 * self.confirm

    @property
    def warm(self) -> bool:
        """Trials start from a trained network (``init`` other than scratch)."""
        return self.init != "scratch"

    @property
    def gated(self) -> bool:
        """Attention is put in so that the starting network computes what it did (``insert: identity``)."""
        return self.warm and self.insert == "identity"

    @property
    def insert_scale(self) -> float | None:
        """How many times ``lr`` the attention put into a warm start trains at (``insert_lr``); None where
        it trains at ``lr`` like the rest."""
        return self.insert_lr / self.lr if self.warm and self.insert_lr is not None else None


class Data(Section):
    """A space's ``data`` section: ``source`` and that source's keys."""

    source: str
    num_workers: int


DATA_COMMON = {"num_workers": Setting(int, 0, bounds=(0, 64))}


class Latency(Section):
    """Where latency is measured: device, batch, input size, threads, warm-up, timed runs (absolute
    measurements) and interleaved rounds (paired ones)."""

    device: str
    batch_size: int
    input_size: int | None
    threads: int
    warmup: int
    repeats: int
    rounds: int


LATENCY_SCHEMA = {
    "device": Setting(str, "cpu", rule=lambda v: _device_ok(v), rule_text="cpu, cuda or cuda:N"),
    "batch_size": Setting(int, 1, bounds=(1, 65_536)),
    "input_size": Setting(int, 224, bounds=(1, 8_192)),
    "threads": Setting(int, 1, bounds=(1, 1_024)),
    "warmup": Setting(int, 5, bounds=(0, 10_000)),
    "repeats": Setting(int, 30, bounds=(1, 100_000)),
    # paired latency: interleaved rounds at least (each times the candidate and the reference once)
    # (12: a fresh model's ratio varies by 1.0% from one measurement to the next, 0.9% at 16 rounds, 0.7% at
    # 32 and 0.5% at 80, while measurements in different processes differ by 2.6% at 80 rounds: more rounds
    # buy little and cost every trial their time; README "Latency")
    "rounds": Setting(int, 12, bounds=(8, 100_000), on_resume=True, added=True),
}


def _device_ok(v: str) -> bool:
    import re

    return re.fullmatch(r"cpu|cuda(:\d+)?", v) is not None


class Limits(Section):
    """Optional hard limits: candidates over them are not trained."""

    max_latency_ms: float | None
    max_params: float | None
    max_flops: float | None


_POSITIVE = dict(rule=lambda v: v > 0, rule_text="a positive number (or leave it out)")
LIMITS_SCHEMA = {
    "max_latency_ms": Setting(float, None, **_POSITIVE),
    "max_params": Setting(float, None, **_POSITIVE),
    "max_flops": Setting(float, None, **_POSITIVE),
}

LatencySettings = section_class("LatencySettings", LATENCY_SCHEMA, Latency, __name__)
LimitSettings = section_class("LimitSettings", LIMITS_SCHEMA, Limits, __name__)
