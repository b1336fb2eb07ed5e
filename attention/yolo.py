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


# -- a model YAML read as data ---------------------------------------------------------------------------
# ultralytics evaluates a model YAML's ``activation:`` with eval() and calls whatever a row's module name
# finds in its namespace (functions included). A model YAML is data: register()'s parser and
# ``model_yaml_problems`` accept only what follows.

ACTIVATIONS = (
    "CELU", "ELU", "GELU", "Hardsigmoid", "Hardswish", "Hardtanh", "Identity", "LeakyReLU", "LogSigmoid", "Mish",
    "PReLU", "ReLU", "ReLU6", "RReLU", "SELU", "Sigmoid", "SiLU", "Softplus", "Softsign", "Tanh", "Tanhshrink",
)  # fmt: skip
ACTIVATION_RULE = (
    "an activation of torch.nn with number or true/false arguments, e.g. nn.SiLU() or nn.LeakyReLU(0.1); "
    f"one of {', '.join(ACTIVATIONS)}"
)
MAX_REPEATS = 100  # a row's repeats (ultralytics' own models use at most 9)
LAYER_RULE = (
    "a module class of ultralytics (Conv, C2f, SPPF, Concat, Detect, ...), nn.<Name> of torch, "
    "or an attention row after attention.yolo.register(): " + ", ".join(sorted(ALIASES))
)


class ModelYamlError(ValueError):
    """A model YAML that is not data ultralytics may build: ``problems`` is a list of (key path, message)."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{keypath(k)}: {m}" for k, m in problems))


def keypath(path: tuple[Any, ...]) -> str:
    """``('backbone', 3, 2)`` as ``backbone[3][2]``."""
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(path))


def activation_code(value: Any) -> str:
    """The ``activation:`` of a model YAML rewritten from its checked parts (what ultralytics may evaluate),
    e.g. ``torch.nn.LeakyReLU(negative_slope=0.1)`` -> ``nn.LeakyReLU(negative_slope=0.1)``; a ValueError
    naming ACTIVATION_RULE otherwise."""
    import ast
    import math

    def number(node: ast.AST) -> Any:
        v = ast.literal_eval(node)
        if not isinstance(v, (bool, int, float)) or not math.isfinite(v):
            raise ValueError(v)
        return v

    try:
        if not isinstance(value, str) or len(value) > 200:
            raise ValueError(value)
        call = ast.parse(value.strip(), mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError(value)
        parts, node = [], call.func
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or [node.id, *parts[:-1]] not in (["nn"], ["torch", "nn"]):
            raise ValueError(value)
        if not parts or parts[-1] not in ACTIVATIONS:
            raise ValueError(value)
        args = [number(a) for a in call.args]
        kwargs = {k.arg: number(k.value) for k in call.keywords if k.arg and k.arg.isidentifier()}
        if len(kwargs) != len(call.keywords):
            raise ValueError(value)
        getattr(__import__("torch").nn, parts[-1])(*args, **kwargs)  # the arguments fit (TypeError if not)
        code = f"nn.{parts[-1]}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, IndexError):
        raise ValueError(f"{value!r} is not allowed; {ACTIVATION_RULE}") from None
    return code


def _layer_class(name: str, tasks: Any) -> type | None:
    """The nn.Module class a row's module name builds, found as ultralytics' parser finds it; None for
    anything else (a function, a module, a missing name)."""
    import torch.nn as nn

    if name.startswith("nn."):
        found = getattr(nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        import torchvision

        found = getattr(torchvision.ops, name[16:], None)
    else:
        found = getattr(tasks, name, None) if name.isidentifier() and not name.startswith("_") else None
    return found if isinstance(found, type) and issubclass(found, nn.Module) else None


def model_yaml_problems(d: Any) -> list[tuple[tuple[Any, ...], str]]:
    """What in the model dictionary ``d`` is not data ultralytics may build, as (key path, message): an
    ``activation`` outside ACTIVATION_RULE, a row that is not ``[from, repeats, module, args]``, a module
    name that is not a model layer ultralytics knows (nor one of ours, after register()), repeats outside
    1 to MAX_REPEATS. Empty when ``d`` is fine."""
    import ultralytics.nn.tasks as tasks

    if not isinstance(d, dict):
        return [((), f"a model YAML is a mapping with backbone and head lists; got {type(d).__name__}")]
    problems: list[tuple[tuple[Any, ...], str]] = []
    if d.get("activation") is not None:
        try:
            activation_code(d["activation"])
        except ValueError as e:
            problems.append((("activation",), str(e)))
    for section in ("backbone", "head"):
        rows = d.get(section)
        if not isinstance(rows, list):
            problems.append(((section,), f"a list of rows [from, repeats, module, args]; got {rows!r:.80}"))
            continue
        for k, row in enumerate(rows):
            where = (section, k)
            if not (isinstance(row, list) and len(row) == 4 and isinstance(row[3], list)):
                problems.append((where, f"{row!r:.80} is not a row [from, repeats, module, [args]]"))
                continue
            n, m = row[1], row[2]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REPEATS:
                problems.append(((*where, 1), f"repeats {n!r:.40} is not an integer from 1 to {MAX_REPEATS}"))
            if not isinstance(m, str) or _layer_class(m, tasks) is None:
                problems.append(((*where, 2), f"{m!r:.80} is not a model layer; {LAYER_RULE}"))
            elif m == GATED and (not row[3] or row[3][0] not in ALIASES):
                problems.append(((*where, 3), f"a Gated row names its mechanism first: one of {', '.join(ALIASES)}"))
    return problems


GATED = "Gated"  # a row ``[-1, 1, Gated, [CBAM, 16, 7]]``: the mechanism put in identity-started


def _gated_row() -> type:
    """What a ``Gated`` row names: ``Row(ch, f, name, *hparams)`` builds ``attention.Gated`` around the alias
    ``name`` at the width of layer ``f`` (its output is layer f's at first; the gate learns how much of
    the mechanism to take)."""
    import torch.nn as nn

    from .gated import Gated

    def __new__(cls: type, ch: Any = None, f: Any = -1, name: Any = None, *hparams: Any) -> Any:
        if name not in ALIASES:
            raise HyperparameterError(GATED, "mechanism", name, f"one of {', '.join(ALIASES)}")
        if not isinstance(ch, list) or not isinstance(f, int) or isinstance(f, bool):
            raise HyperparameterError(GATED, "from", f, "one input layer ([-1, 1, Gated, [Name, hyperparameters]])")
        return Gated(ALIASES[name](ch[f], None, *hparams))

    return type(GATED, (nn.Module,), {"__new__": __new__, "__module__": f"{__name__}.rows"})


def register() -> list[str]:
    """Make ultralytics' model YAML parser build the twelve mechanisms by name (see the module's text)
    and read every model YAML as data: one that ``model_yaml_problems`` finds fault with raises
    ModelYamlError before ultralytics evaluates any of it. Safe to call again; returns the names registered.
    The aliases are added to torch's safe globals, so weights-only loading (ULTRALYTICS_SAFE_LOAD) accepts
    them."""
    import copy

    import torch
    import ultralytics.nn.tasks as tasks

    if not getattr(tasks.parse_model, "_attention_rows", False):
        original = tasks.parse_model

        def parse_model(d: dict, ch: Any, verbose: bool = True) -> Any:
            problems = model_yaml_problems(d)
            if problems:
                raise ModelYamlError(problems)
            d = copy.deepcopy(d)
            if d.get("activation") is not None:  # what ultralytics evaluates: rebuilt from the checked parts
                d["activation"] = activation_code(d["activation"])
            for section in ("backbone", "head"):
                for k, row in enumerate(d.get(section) or []):
                    if isinstance(row, list) and len(row) == 4 and (row[2] in ALIASES or row[2] == GATED):
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
    tasks.Gated = _gated_row()
    from .gated import Gated

    torch.serialization.add_safe_globals([*ALIASES.values(), Gated])
    return sorted(ALIASES)


__all__ = [
    "ACTIVATIONS",
    "CBAM",
    "ECA",
    "GAM",
    "ModelYamlError",
    "NAM",
    "SE",
    "SOCA",
    "CoordAtt",
    "CrissCrossAttention",
    "S2Attention",
    "SelectiveKernel",
    "ShuffleAttention",
    "SimAM",
    "activation_code",
    "keypath",
    "model_yaml_problems",
    "register",
]
