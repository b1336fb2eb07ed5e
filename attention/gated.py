"""Attention put into a trained network without changing what it computes: ``Gated(new, old)`` returns
``old(x) + gate * (new(x) - old(x))`` with a learned scalar ``gate`` that starts at 0, so at the first
step the network computes exactly what it did before (``old``: the identity for a mechanism inserted
after a layer; the replaced layer for one that replaces it, such as a selective kernel), and training
decides how much of the mechanism to take (the gate's gradient is ``new(x) - old(x)``, non-zero; the
mechanism's own parameters learn once the gate has moved).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Gated(nn.Module):
    """``old(x) + gate * (new(x) - old(x))``; ``gate`` starts at ``start`` (0: the identity on ``old``)."""

    def __init__(self, new: nn.Module, old: nn.Module | None = None, start: float = 0.0):
        super().__init__()
        self.new = new
        self.old = old if old is not None else nn.Identity()
        ref = next(iter(new.parameters()), None)
        kwargs: dict[str, Any] = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.gate = nn.Parameter(torch.full((), float(start), **kwargs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before = self.old(x)
        return before + self.gate.to(before.dtype) * (self.new(x) - before)

    def extra_repr(self) -> str:
        return f"gate={float(self.gate):.4g}"


def attention_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter of the attention modules in ``model`` and of the gates that put them in: what a
    warm start adds to a trained network (a replaced layer kept as a gate's ``old`` is not among them)."""
    from ._base import Attention

    found: dict[int, nn.Parameter] = {}
    for module in model.modules():
        if isinstance(module, Attention):
            found.update((id(p), p) for p in module.parameters())
        elif isinstance(module, Gated):
            found[id(module.gate)] = module.gate
    return list(found.values())


def with_attention_lr(groups: list[dict[str, Any]], model: nn.Module, scale: float) -> list[dict[str, Any]]:
    """An optimiser's parameter groups with the attention parameters of ``model``
    (``attention_parameters``) moved to copies of their groups at ``scale`` times the group's
    learning rate; every other setting of a group (weight decay, momentum, tags) is kept. Groups left
    empty are dropped."""
    ours = {id(p) for p in attention_parameters(model)}
    out = []
    for group in groups:
        rest = [p for p in group["params"] if id(p) not in ours]
        moved = [p for p in group["params"] if id(p) in ours]
        if rest:
            out.append({**group, "params": rest})
        if moved:
            out.append({**group, "params": moved, "lr": group["lr"] * scale})
    return out
