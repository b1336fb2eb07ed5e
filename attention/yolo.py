"""YOLO-style aliases: every mechanism as ``Name(c1, c2, *args)``.

Detector model YAMLs (YOLOv5/v8-style ``parse_model``) build modules as ``m(c1, c2, *args)`` where
``c1`` is the input width and ``c2`` the output width. Attention keeps the width, so ``c2`` must
equal ``c1`` (or be None); the remaining positional ``args`` are the mechanism's hyperparameters in
registry order (e.g. ``CBAM(c1, c2, reduction, kernel_size)``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._registry import MECHANISMS, HyperparameterError, MechanismSpec

if TYPE_CHECKING:
    import torch


def _alias(spec: MechanismSpec) -> type:
    base = spec.cls
    names = [h.name for h in spec.hparams]

    def __init__(
        self: Any,
        c1: int,
        c2: int | None = None,
        *args: Any,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ):
        if c2 is not None and c2 != c1:
            raise HyperparameterError(
                spec.name, "c2", c2, f"attention keeps the channel count: c2 must equal c1 ({c1}) or be omitted"
            )
        if len(args) > len(names):
            raise HyperparameterError(
                spec.name, "args", list(args), f"at most {len(names)} positional hyperparameters: {names or 'none'}"
            )
        hp = dict(zip(names, args, strict=False))
        clash = sorted(set(hp) & set(kwargs))
        if clash:
            raise HyperparameterError(spec.name, clash[0], kwargs[clash[0]], "given both by position and keyword")
        base.__init__(self, c1, **hp, **kwargs, device=device, dtype=dtype)

    doc = f"{base.__name__}(c1, c2, {', '.join(names)}) - YOLO-style alias of attention.{base.__name__}."
    return type(base.__name__, (base,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


SE = _alias(MECHANISMS["se"])
ECA = _alias(MECHANISMS["eca"])
SOCA = _alias(MECHANISMS["soca"])
CBAM = _alias(MECHANISMS["cbam"])
GAM = _alias(MECHANISMS["gam"])
CoordAtt = _alias(MECHANISMS["ca"])
SimAM = _alias(MECHANISMS["simam"])
NAM = _alias(MECHANISMS["nam"])
ShuffleAttention = _alias(MECHANISMS["sa"])
CrissCrossAttention = _alias(MECHANISMS["cca"])
S2Attention = _alias(MECHANISMS["s2"])
SelectiveKernel = _alias(MECHANISMS["sk"])

__all__ = [
    "CBAM",
    "ECA",
    "GAM",
    "NAM",
    "SE",
    "SOCA",
    "CoordAtt",
    "CrissCrossAttention",
    "S2Attention",
    "SelectiveKernel",
    "ShuffleAttention",
    "SimAM",
]
