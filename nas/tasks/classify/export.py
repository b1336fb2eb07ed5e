"""A classifier leaves the tool: a readable ``model.py`` (timm + attention only), its card, metrics and
trained weights; optionally ONNX and TorchScript, each checked against PyTorch.

``model.py`` is generated from a structural comparison of the built model with the plain timm
backbone: every place where an attention module was put in (or built-in attention removed) becomes
one line. Every value written into it is checked first: module paths must be identifiers or indices,
the mechanism a registry name, hyperparameters numbers or registry strings, the backbone a timm
model. Nothing read from a study or a YAML file reaches the generated code unchecked.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import attention
from nas.core.architecture import Architecture
from nas.core.artifacts import CARD_FILE, WEIGHTS_FILE, ExportError, ModelCard, install_weights
from nas.core.names import write_text_atomic
from nas.core.task import ExportFacts, ExportOptions
from nas.tasks.classify import backbone as bb
from nas.tasks.classify.model import build, model_cost

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z|\d+\Z")
_SAFE_STR = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
_ARCH_CHARS = re.compile(r"[A-Za-z0-9_.\-|(),=@!]+\Z")


@dataclass(frozen=True)
class Edit:
    """One change to the plain backbone: at ``path`` (a module), attribute ``attr`` becomes
    ``kind``: "set" (the mechanism), "after" (Sequential(old, mechanism)) or "identity"."""

    kind: str
    path: str
    attr: str
    mechanism: str = ""
    channels: int = 0
    hparams: tuple[tuple[str, Any], ...] = ()
    stride: int = 1
    gated: bool = False  # inside attention.Gated (identity-started), around what it replaced:
    old: tuple[str, ...] = ()  # the plain backbone's modules (paths) the gate keeps; () the identity


def _describe(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, attention.Gated):
        return {**_describe(module.new), "gated": True}
    if not isinstance(module, attention.Attention):
        raise ExportError(f"cannot express {type(module).__name__} in model.py (not an attention mechanism)")
    return {
        "mechanism": module.spec.name,
        "channels": module.channels,
        "hparams": tuple(module.hparams.items()),
        "stride": int(getattr(module, "stride", 1)),
    }


def edits(plain: nn.Module, built: nn.Module, path: str = "") -> list[Edit]:
    """The changes that turn ``plain`` (timm's backbone) into ``built``, found by walking both."""
    out: list[Edit] = []
    for attr, new in built.named_children():
        old = plain._modules.get(attr)
        where = f"{path}.{attr}" if path else attr
        if old is None or isinstance(new, (attention.Attention, attention.Gated)):
            kept = _kept(plain, built, attr, new, path) if isinstance(new, attention.Gated) else ()
            out.append(Edit("set", path, attr, **_describe(new), old=kept))
        elif isinstance(new, nn.Identity) and not isinstance(old, nn.Identity):
            out.append(Edit("identity", path, attr))
        elif (
            isinstance(new, nn.Sequential)
            and not isinstance(old, nn.Sequential)
            and len(new) == 2
            and type(new[0]) is type(old)
        ):
            out.append(Edit("after", path, attr, **_describe(new[1])))
        elif type(new) is not type(old):
            raise ExportError(f"cannot express the change at {where}: {type(old).__name__} -> {type(new).__name__}")
        else:
            out += edits(old, new, where)
    return out


def _kept(plain: nn.Module, built: nn.Module, attr: str, gated: Any, path: str) -> tuple[str, ...]:
    """The paths of the plain backbone's modules a gate keeps as its ``old``: none (the identity), the
    module it took the place of, or that one and the siblings after it that became identities (a
    bottleneck's 3x3 convolution with its BN and activation)."""
    if isinstance(gated.old, nn.Identity):
        return ()
    parts = list(gated.old) if type(gated.old) is nn.Sequential else [gated.old]
    names = [attr] + [
        a
        for a in list(plain._modules)[list(plain._modules).index(attr) + 1 :]
        if isinstance(built._modules.get(a), nn.Identity) and not isinstance(plain._modules[a], nn.Identity)
    ]
    if len(names) < len(parts) or any(
        type(m) is not type(plain._modules[a]) for m, a in zip(parts, names, strict=False)
    ):
        raise ExportError(f"cannot express the gate at {path}.{attr} in model.py: it keeps modules not found there")
    return tuple(f"{path}.{a}" if path else a for a in names[: len(parts)])


def _literal(value: Any, what: str) -> str:
    """``value`` as Python source, for the few kinds a generated file may contain."""
    if isinstance(value, bool) or (isinstance(value, int) and not isinstance(value, bool)):
        return repr(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, str) and _SAFE_STR.match(value):
        return repr(value)
    raise ExportError(f"refusing to write {what} = {value!r} into generated code")


def _path(text: str) -> str:
    if text and not all(_IDENT.match(p) for p in text.split(".")):
        raise ExportError(f"refusing to write module path {text!r} into generated code")
    return repr(text)


def _constructor(e: Edit) -> str:
    spec = attention.MECHANISMS.get(e.mechanism)
    if spec is None:
        raise ExportError(f"refusing to write mechanism {e.mechanism!r}: not one of {', '.join(attention.MECHANISMS)}")
    hp = dict(e.hparams)
    if set(hp) - {p.name for p in spec.hparams} or not spec.is_valid(e.channels, **hp):
        raise ExportError(
            f"refusing to write {e.mechanism} with {hp!r} at {e.channels} channels: "
            + "; ".join(str(p) for p in spec.problems(e.channels, **hp))
        )
    args = [_literal(e.channels, "channels")] + [f"{k}={_literal(v, k)}" for k, v in hp.items()]
    if e.stride != 1:  # only the selective kernel replaces a (strided) convolution
        made = f"attention.MECHANISMS[{e.mechanism!r}].cls({', '.join(args)}, stride={_literal(e.stride, 'stride')})"
    else:
        made = f"attention.create({e.mechanism!r}, {', '.join(args)})"
    if e.gated:
        kept = "(" + "".join(f"{_path(p)}, " for p in e.old) + ")"  # checked paths, as a tuple
        return f"attention.Gated({made}, _kept(model, {kept}))"
    return made


def _line(e: Edit) -> str:
    if e.kind == "identity":
        return f"    _set(model, {_path(e.path)}, {_path(e.attr)}, nn.Identity())"
    fn = "_set" if e.kind == "set" else "_after"
    return f"    {fn}(model, {_path(e.path)}, {_path(e.attr)}, {_constructor(e)})"


def timm_name(study_name: str, number: int) -> str:
    """``nas_<study>_t<trial>``, lower-case letters, digits and underscores only."""
    return f"nas_{re.sub(r'[^a-z0-9]+', '_', study_name.lower()).strip('_') or 'study'}_t{number}"


def render_model_py(arch: Architecture, num_classes: int, in_chans: int, name: str, gated: bool = False) -> str:
    """The source of model.py for ``arch`` (checked: see the module docstring)."""
    text = str(arch)
    if not _ARCH_CHARS.match(text) or bb.check_model_name(arch.backbone) or not _SAFE_STR.match(arch.backbone):
        raise ExportError(f"refusing to write architecture {text!r} into generated code")
    if not re.fullmatch(r"nas_[a-z0-9_]{1,80}", name):
        raise ExportError(f"refusing to register timm model name {name!r}; use letters, digits and underscores")
    plain = bb.create(arch.backbone, num_classes=num_classes, in_chans=in_chans, device="meta")
    lines, stage = [], None
    for e in edits(plain, build(arch, num_classes, in_chans, device="meta", gated=gated)):
        code = _line(e)  # checks every value first
        top = (e.path or e.attr).split(".")[0]
        if top != stage:
            stage = top
            lines.append(f"    # {top}: {e.mechanism or 'built-in attention removed'}")
        lines.append(code)
    body = "\n".join(lines) if lines else "    # the plain backbone: no attention"
    return f'''"""{text}

Generated by ``nas export``. Rebuilds the architecture with timm and the attention package only;
``build_model(weights=True)`` loads the trained weights next to this file. Importing it registers
the timm model ``{name}``: ``timm.create_model("{name}", pretrained=True)``.
"""

from pathlib import Path

import timm
from torch import nn

import attention

ARCHITECTURE = {text!r}
BACKBONE = {arch.backbone!r}
NUM_CLASSES = {_literal(num_classes, "num_classes")}
IN_CHANS = {_literal(in_chans, "in_chans")}
WEIGHTS = Path(__file__).with_name({WEIGHTS_FILE!r})


def _set(model, path, attr, module):
    setattr(model.get_submodule(path), attr, module)


def _after(model, path, attr, module):
    owner = model.get_submodule(path)
    setattr(owner, attr, nn.Sequential(getattr(owner, attr), module))


def _kept(model, paths):
    """What an identity-started mechanism keeps beside it: the modules it takes the place of (None: none)."""
    modules = [model.get_submodule(p) for p in paths]
    return None if not modules else modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def build_model(num_classes=NUM_CLASSES, weights=None, in_chans=IN_CHANS, **timm_kwargs):
    """The architecture, randomly initialised; ``weights``: True for the trained weights next to this
    file, or a path to a .safetensors file with the same keys (needs the same num_classes)."""
    model = timm.create_model(BACKBONE, pretrained=False, num_classes=num_classes, in_chans=in_chans, **timm_kwargs)
{body}
    if weights:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(WEIGHTS if weights is True else weights)))
    return model


@timm.models.register_model
def {name}(pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kwargs):
    return build_model(weights=pretrained, **kwargs)
'''


def import_model_py(path: Path) -> Any:
    """Import a generated model.py under a unique module name (timm's registry needs it in sys.modules)."""
    name = f"nas_export_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def export(
    space: Any, arch: Architecture, num_classes: int, out: Path, facts: ExportFacts, opts: ExportOptions
) -> tuple[list[Path], dict[str, float]]:
    """Write the export folder of a classifier's trial (model.py, architecture.yaml, metrics.json, the
    weights; ONNX and TorchScript on request) and check model.py (and those) against the model the
    search built, on a random input."""
    name = opts.name or timm_name(facts.study, facts.number)
    source = render_model_py(arch, num_classes, space.in_chans, name, gated=space.training.gated)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "model.py", out / CARD_FILE, out / "metrics.json"]
    write_text_atomic(files[0], source)
    training = {
        **space.training.as_dict(),
        "seed": facts.seed or 0,
        "epochs": len(facts.curve) or space.training.epochs,
    }
    ModelCard(
        arch, num_classes, space.in_chans, space.input_size, space.data.as_dict(), training, timm_name=name
    ).write(out)
    cost = model_cost(arch, num_classes, space.input_size, space.in_chans, space.training.gated)
    metrics = {
        "study": facts.study,
        "trial": facts.number,
        "architecture": str(arch),
        "accuracy": facts.values[0],
        "latency_ms": facts.latency_ms,
        "latency_ci_ms": list(facts.latency_ci_ms) if facts.latency_ci_ms else None,
        "latency_spread_pct": facts.latency_spread_pct,
        "latency_target": facts.latency_target,
        "seed": facts.seed,
        "params": cost.params,
        "flops": cost.flops,
        "val_acc_curve": list(facts.curve) or None,
        "weights": WEIGHTS_FILE if opts.weights_src else None,
        **facts.judged,
    }
    write_text_atomic(files[2], json.dumps(metrics, indent=1))
    reference = build(arch, num_classes, space.in_chans, gated=space.training.gated).eval()
    generated = import_model_py(files[0]).build_model().eval()
    files += install_weights(opts.weights_src, out, reference, generated)
    x = torch.randn(2, space.in_chans, *space.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref_out = reference(x)
        checks = {"model.py": _max_diff(generated(x), ref_out)}
    if opts.onnx:
        files.append(out / "model.onnx")
        checks["onnx"] = _export_onnx(generated, x, files[-1], ref_out)
    if opts.torchscript:
        files.append(out / "model.torchscript.pt")
        checks["torchscript"] = _export_torchscript(generated, x, files[-1], ref_out)
    bad = {k: v for k, v in checks.items() if not v <= opts.tolerance}
    if bad:
        raise ExportError(
            f"{out}: the exported "
            + ", ".join(f"{k} differs from PyTorch by {v:.3g}" for k, v in bad.items())
            + f" (tolerance {opts.tolerance:g})"
        )
    return files, checks


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def _export_onnx(model: nn.Module, x: torch.Tensor, path: Path, expected: torch.Tensor) -> float:
    import logging
    import warnings

    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamo=True,
                opset_version=18,
                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
            )
        finally:
            logging.disable(logging.NOTSET)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return _max_diff(torch.from_numpy(out), expected)


def _export_torchscript(model: nn.Module, x: torch.Tensor, path: Path, expected: torch.Tensor) -> float:
    import warnings

    with warnings.catch_warnings(), torch.no_grad():  # torch.jit is deprecated in favour of torch.export
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, (x,))
        traced.save(str(path))
        return _max_diff(torch.jit.load(str(path))(x), expected)
