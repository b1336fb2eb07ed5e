"""Shared base class and helpers for the mechanisms."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ._registry import MechanismSpec, register


class Attention(nn.Module):
    """Base of every mechanism: validates hyperparameters against the registry at construction.

    Subclasses call ``super().__init__(channels, **hparams)`` first; afterwards ``self.channels`` and
    ``self.hparams`` (complete, validated) are set. Forward maps (B, C, H, W) to (B, C, H, W).
    """

    spec: MechanismSpec

    def __init__(self, channels: int, **hparams: Any):
        super().__init__()
        self.hparams = type(self).spec.resolve(channels, **hparams)
        self.channels = channels

    def extra_repr(self) -> str:
        return ", ".join([str(self.channels)] + [f"{k}={v!r}" for k, v in self.hparams.items()])


def mechanism(**fields: Any) -> Callable[[type], type]:
    """Class decorator: register the class under ``fields['name']`` with the given spec fields."""

    def deco(cls: type) -> type:
        cls.spec = register(MechanismSpec(cls=cls, **fields))
        return cls

    return deco


def fp32(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A region computed in float32 even under autocast (statistics that overflow or lose precision
    in float16). Outside autocast it does nothing."""
    try:
        enabled = torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know (e.g. "meta"): nothing to turn off
        enabled = False
    if enabled:
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def floor_div_rule(param: str, what: str = "hidden width") -> Callable:
    """Rule for reductions: channels // value must be at least 1."""

    def rule(channels: int, hp: dict) -> list[tuple[str, str]]:
        r = hp[param]
        if channels // r < 1:
            return [(param, f"needs channels // {param} >= 1 for the {what} (so {param} <= {channels})")]
        return []

    return rule
