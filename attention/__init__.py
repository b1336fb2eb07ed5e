"""Twelve attention mechanisms for CNN backbones behind one interface.

    >>> import attention
    >>> m = attention.create("cbam", 256, reduction=16, kernel_size=7)
    >>> attention.MECHANISMS["eca"].valid_values("k_size", 256, candidates=[1, 3, 4, 5])
    [1, 3, 5]

Every module maps (B, C, H, W) to (B, C, H, W), accepts ``device=``/``dtype=`` (so it plugs into
timm's ``attn_layer`` slot) and refuses at construction any hyperparameter that cannot work at the
given channel count.

A mechanism of your own joins the registry (and so search spaces, ``nas mechanisms`` and exports)
with the ``mechanism`` decorator on an ``Attention`` subclass::

    @attention.mechanism(name="mine", title="My attention", arxiv=None, reference="...",
                         placement="residual", placement_note="...", hparams=())
    class Mine(attention.Attention):
        def __init__(self, channels, *, device=None, dtype=None): ...
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from . import cbam, coord, criss_cross, nam, s2, shuffle, simam, sk, squeeze  # noqa: F401  (registers)
from ._base import Attention, mechanism
from ._registry import (
    MECHANISMS,
    PLACEMENTS,
    HParam,
    HyperparameterError,
    MechanismSpec,
    UnknownMechanismError,
    get_spec,
    known_names,
    register,
    unregister,
)
from .cbam import CBAM, GAM
from .coord import CoordAtt
from .criss_cross import CrissCrossAttention
from .gated import Gated, attention_parameters, with_attention_lr
from .nam import NAM
from .s2 import S2Attention
from .shuffle import ShuffleAttention
from .simam import SimAM
from .sk import SelectiveKernel
from .squeeze import ECA, SE, SOCA, eca_kernel_size

__all__ = [
    "MECHANISMS",
    "PLACEMENTS",
    "Attention",
    "Gated",
    "attention_parameters",
    "with_attention_lr",
    "HParam",
    "HyperparameterError",
    "MechanismSpec",
    "UnknownMechanismError",
    "create",
    "attn_layer",
    "get_spec",
    "known_names",
    "eca_kernel_size",
    "mechanism",
    "register",
    "unregister",
    "SE",
    "ECA",
    "SOCA",
    "CBAM",
    "GAM",
    "CoordAtt",
    "SimAM",
    "NAM",
    "ShuffleAttention",
    "CrissCrossAttention",
    "S2Attention",
    "SelectiveKernel",
]


def create(name: str, channels: int, *, device: Any = None, dtype: Any = None, **hparams: Any) -> nn.Module:
    """Build mechanism ``name`` for ``channels`` channels. Hyperparameters may be given by keyword or
    by their short key (``create("cbam", 64, r=8, k=7)``). Unknown names, unknown or invalid
    hyperparameters raise ``UnknownMechanismError`` / ``HyperparameterError`` (both ``ValueError``)."""
    spec = get_spec(name)
    resolved = spec.resolve(channels, **hparams)
    return spec.cls(channels, **resolved, device=device, dtype=dtype)


def attn_layer(name: str, **hparams: Any) -> Any:
    """A constructor for timm's ``attn_layer`` slot:
    ``timm.create_model("resnet50", block_args=dict(attn_layer=attention.attn_layer("eca", k_size=5)))``.
    The hyperparameters are checked now (type and range) and again per channel count when timm builds
    each block."""
    spec = get_spec(name)
    for key, value in hparams.items():
        spec.hparam(key, value).coerce(spec.name, value)
    return functools.partial(create, spec.name, **hparams)
