"""YOLO-style aliases: every mechanism as ``Name(c1, c2, *args)``, and ``register()`` for ultralytics.

Detector model YAMLs (YOLOv5/v8-style ``parse_model``) build modules as ``m(c1, c2, *args)`` where
``c1`` is the input width and ``c2`` the output width. Attention keeps the width, so ``c2`` must
equal ``c1`` (or be None); the remaining positional ``args`` are the mechanism's hyperparameters in
registry order (e.g. ``CBAM(c1, c2, reduction, kernel_size)``).

``register()`` makes an installed ultralytics (8.4) parse the twelve names in a model YAML row with
the hyperparameters only, the width taken from the incoming layer: ``[-1, 1, CBAM, [16, 7]]``. It
needs no change to ultralytics' files: ultralytics passes a module it does not know only the row's
arguments, so register() wraps its ``parse_model`` to put the channel list and the row's input in front
of them (``["ch", f, *args]``: parse_model itself replaces the name ``ch`` by its list of layer widths)
and names, in ultralytics' namespace, a row class per mechanism that builds the alias from ``ch[f]``.
Models hold the aliases themselves, so a saved model loads back with ``attention`` importable;
register() is needed again only to parse a YAML. ultralytics is AGPL-3.0: it is imported here only
when register() is called.
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

ALIASES = {
    c.__name__: c
    for c in (
        SE,
        ECA,
        SOCA,
        CBAM,
        GAM,
        CoordAtt,
        SimAM,
        NAM,
        ShuffleAttention,
        CrissCrossAttention,
        S2Attention,
        SelectiveKernel,
    )
}


def _row_class(alias: type) -> type:
    """What a YAML row names: called by parse_model as ``Row(ch, f, *hparams)`` (after register()'s
    rewrite), it returns the alias built for the width of layer ``f``; being an ``nn.Module`` subclass
    it passes ultralytics' check of model layers."""
    import torch.nn as nn

    def __new__(cls: type, ch: Any = None, f: Any = -1, *hparams: Any) -> Any:
        if not isinstance(ch, list) or not isinstance(f, int) or isinstance(f, bool):
            raise HyperparameterError(
                alias.__name__,
                "from",
                f,
                "one input layer ([-1, 1, Name, [hyperparameters]]), parsed after attention.yolo.register()",
            )
        return alias(ch[f], None, *hparams)

    return type(alias.__name__, (nn.Module,), {"__new__": __new__, "__module__": f"{__name__}.rows"})


def register() -> list[str]:
    """Make ultralytics' model YAML parser build the twelve mechanisms by name (see the module's text).
    Safe to call again; returns the names registered. Under ULTRALYTICS_SAFE_LOAD the aliases are added
    to torch's safe globals so weights-only loading accepts them."""
    import copy

    import torch
    import ultralytics.nn.tasks as tasks

    if not getattr(tasks.parse_model, "_attention_rows", False):
        original = tasks.parse_model

        def parse_model(d: dict, ch: Any, verbose: bool = True) -> Any:
            d = copy.deepcopy(d)
            for section in ("backbone", "head"):
                for k, row in enumerate(d.get(section) or []):
                    if isinstance(row, list) and len(row) == 4 and row[2] in ALIASES:
                        if not isinstance(row[0], int) or isinstance(row[0], bool):
                            raise HyperparameterError(
                                row[2], f"{section}[{k}] from", row[0], "one input layer (an integer such as -1)"
                            )
                        row[3] = ["ch", row[0], *(row[3] or [])]
            return original(d, ch, verbose)

        parse_model._attention_rows = True  # type: ignore[attr-defined]
        parse_model.__wrapped__ = original  # type: ignore[attr-defined]
        tasks.parse_model = parse_model
    for name, alias in ALIASES.items():
        setattr(tasks, name, _row_class(alias))
    torch.serialization.add_safe_globals(list(ALIASES.values()))
    return sorted(ALIASES)


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
    "register",
]
