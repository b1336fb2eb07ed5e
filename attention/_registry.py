"""The mechanism registry: names, hyperparameter schemas, papers and placements.

Everything a caller needs to know about a mechanism without building it lives here, so the search
space can validate user input ("is reduction=32 valid at 64 channels?") and enumerate choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Where a mechanism sits inside a block. Values are the vocabulary of the whole project.
PLACEMENTS: dict[str, str] = {
    "residual": "on the residual branch after its last normalisation, before the addition (the SE/CBAM/ECA slot)",
    "post_conv3x3": "right after the block's 3x3 (or depthwise) convolution, before its normalisation",
    "post_conv3x3_act": "after the block's 3x3 (or depthwise) convolution, normalisation and "
    "activation, before the projecting 1x1 convolution",
    "replace_conv3x3": "replaces the block's 3x3 convolution (carries its stride)",
    "stage_output": "after the last block of a stage",
}


class UnknownMechanismError(ValueError):
    """A mechanism name that is not in the registry."""

    def __init__(self, name: Any):
        self.given = name
        super().__init__(f"unknown attention mechanism {name!r}; known: {', '.join(sorted(MECHANISMS))}")


class HyperparameterError(ValueError):
    """A hyperparameter value a mechanism refuses (wrong type, out of range, or not valid at the
    given channel count). Carries the pieces a caller needs to report it."""

    def __init__(self, mechanism: str, name: str, value: Any, allowed: str, channels: int | None = None):
        self.mechanism, self.name, self.value, self.allowed, self.channels = (mechanism, name, value, allowed, channels)
        where = f" at {channels} channels" if channels is not None else ""
        super().__init__(f"{mechanism}: {name}={value!r} is not allowed{where}; {allowed}")


@dataclass(frozen=True)
class HParam:
    """One hyperparameter of a mechanism.

    ``kind`` is int, float or str. Numeric values are bounded by ``low``/``high`` (inclusive);
    ``odd`` asks for odd integers; ``choices`` lists the only allowed values (strings or numbers);
    ``extra`` lists special values accepted beside the numeric range (e.g. ECA's ``"auto"``).
    ``short`` is the key used in canonical architecture strings.
    """

    name: str
    short: str
    default: Any
    kind: type
    doc: str
    low: float | None = None
    high: float | None = None
    odd: bool = False
    choices: tuple[Any, ...] | None = None
    extra: tuple[Any, ...] = ()

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = ["an odd integer" if self.odd else f"{'an integer' if self.kind is int else 'a number'}"]
        if self.low is not None and self.high is not None:
            parts.append(f"in [{self.low:g}, {self.high:g}]")
        elif self.low is not None:
            parts.append(f">= {self.low:g}")
        elif self.high is not None:
            parts.append(f"<= {self.high:g}")
        text = " ".join(parts)
        if self.extra:
            text += " or " + ", ".join(repr(e) for e in self.extra)
        return text

    def coerce(self, mechanism: str, value: Any) -> Any:
        """Type/range check independent of the channel count; returns the normalised value."""
        if value in self.extra and not isinstance(value, bool):
            return value
        if self.choices is not None:
            if isinstance(value, bool) or value not in self.choices:
                raise HyperparameterError(mechanism, self.name, value, f"allowed: {self.describe()}")
            return value
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise HyperparameterError(mechanism, self.name, value, f"allowed: {self.describe()}")
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise HyperparameterError(mechanism, self.name, value, f"allowed: {self.describe()}")
            value = float(value)
            if not math.isfinite(value):
                raise HyperparameterError(mechanism, self.name, value, f"allowed: {self.describe()}")
        if (
            (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
            or (self.odd and value % 2 == 0)
        ):
            raise HyperparameterError(mechanism, self.name, value, f"allowed: {self.describe()}")
        return value


# A channel-dependent rule: (channels, resolved hyperparameters) -> list of (hparam name, constraint text)
# for every rule that is broken. An empty list means valid.
ChannelRule = Callable[[int, Mapping[str, Any]], "list[tuple[str, str]]"]


@dataclass(frozen=True)
class MechanismSpec:
    """Registry entry: everything known about a mechanism without instantiating it."""

    name: str
    cls: type
    title: str
    arxiv: str | None
    reference: str  # paper venue / official code, for users who want to read the source
    placement: str  # where the paper (or official code) puts it, key of PLACEMENTS
    placement_note: str
    hparams: tuple[HParam, ...]
    rule: ChannelRule | None = None
    min_channels: int = 1
    aliases: tuple[str, ...] = field(default=())

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hparams}

    def find(self, name: str) -> HParam | None:
        """The hyperparameter called ``name`` (its keyword or its short key), or None."""
        for h in self.hparams:
            if h.name == name or h.short == name:
                return h
        return None

    def hparam(self, name: str, value: Any = None) -> HParam:
        h = self.find(name)
        if h is None:
            known = ", ".join(f"{h.name} ({h.short})" for h in self.hparams) or "none"
            raise HyperparameterError(self.name, name, value, f"unknown hyperparameter; {self.name} accepts: {known}")
        return h

    def problems(self, channels: Any, **hparams: Any) -> list[HyperparameterError]:
        """Every reason why ``create(self.name, channels, **hparams)`` would be refused (empty when valid)."""
        errors: list[HyperparameterError] = []
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < self.min_channels:
            errors.append(
                HyperparameterError(self.name, "channels", channels, f"allowed: an integer >= {self.min_channels}")
            )
            return errors
        resolved = self.defaults
        for key, value in hparams.items():
            try:
                h = self.hparam(key, value)
                resolved[h.name] = h.coerce(self.name, value)
            except HyperparameterError as e:
                errors.append(e)
        if errors or self.rule is None:
            return errors
        for name, constraint in self.rule(channels, resolved):
            errors.append(HyperparameterError(self.name, name, resolved.get(name, channels), constraint, channels))
        return errors

    def resolve(self, channels: int, **hparams: Any) -> dict[str, Any]:
        """Validated, complete hyperparameters (defaults filled in); raises the first problem."""
        errors = self.problems(channels, **hparams)
        if errors:
            raise errors[0]
        resolved = self.defaults
        for key, value in hparams.items():
            h = self.hparam(key)
            resolved[h.name] = h.coerce(self.name, value)
        return resolved

    def is_valid(self, channels: int, **hparams: Any) -> bool:
        return not self.problems(channels, **hparams)

    def valid_values(
        self, name: str, channels: int, candidates: Iterable[Any] | None = None, **others: Any
    ) -> list[Any]:
        """The values of hyperparameter ``name`` accepted at ``channels`` (other hyperparameters at
        their defaults unless given). Integers are enumerated up to ``channels`` when no candidates
        are given; continuous hyperparameters need explicit candidates."""
        h = self.hparam(name)
        if candidates is None:
            if h.choices is not None:
                candidates = h.choices
            elif h.kind is int:
                lo = int(h.low) if h.low is not None else 1
                hi = int(h.high) if h.high is not None else channels
                candidates = list(h.extra) + list(range(lo, hi + 1))
            else:
                raise ValueError(f"{self.name}.{h.name} is continuous: pass candidates")
        return [v for v in candidates if self.is_valid(channels, **{**others, h.name: v})]


MECHANISMS: dict[str, MechanismSpec] = {}
_ALIASES: dict[str, str] = {}


def register(spec: MechanismSpec) -> MechanismSpec:
    """Add a mechanism to the registry (``@attention.mechanism(...)`` on a class does this). A name or
    alias already taken is refused: a mechanism never silently replaces another."""
    if spec.placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {spec.placement!r}; allowed: {', '.join(PLACEMENTS)}")
    taken = [a for a in (spec.name, *spec.aliases) if a.lower() in _ALIASES]
    if taken:
        raise ValueError(
            f"mechanism name {taken[0]!r} is already registered (for {_ALIASES[taken[0].lower()]}); "
            "choose another name, or unregister the first"
        )
    MECHANISMS[spec.name] = spec
    for alias in (spec.name, *spec.aliases):
        _ALIASES[alias.lower()] = spec.name
    return spec


def unregister(name: str) -> None:
    """Remove a registered mechanism and its aliases (a test's or a plugin's)."""
    spec = get_spec(name)
    del MECHANISMS[spec.name]
    for alias in [a for a, n in _ALIASES.items() if n == spec.name]:
        del _ALIASES[alias]


def get_spec(name: str) -> MechanismSpec:
    if not isinstance(name, str) or name.lower() not in _ALIASES:
        raise UnknownMechanismError(name)
    return MECHANISMS[_ALIASES[name.lower()]]


def known_names() -> list[str]:
    """Every accepted mechanism name, aliases included."""
    return sorted(_ALIASES)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
