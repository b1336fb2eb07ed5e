"""A trial leaves the tool: a folder with a readable ``model.py`` (timm + attention only), the
architecture, its metrics and its trained weights; optionally ONNX and TorchScript, each checked
against PyTorch.

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
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from torch import nn

import attention
from nas.core.architecture import Architecture
from nas.core.artifacts import (
    CARD_FILE,
    WEIGHTS_FILE,
    ExportError,
    ModelCard,
    install_weights,
    load_weights,
    verify_weights,
    weights_path,
)
from nas.core.errors import UserError
from nas.core.names import write_text_atomic
from nas.study import record as r
from nas.study.record import TrialInfo
from nas.study.studies import storage_of, study_id
from nas.tasks.classify import backbone as bb
from nas.tasks.classify.model import build

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z|\d+\Z")
_SAFE_STR = re.compile(r"[A-Za-z0-9_.\-]{1,64}\Z")
_ARCH_CHARS = re.compile(r"[A-Za-z0-9_.\-|(),=@!]+\Z")


# -- choosing the trial ---------------------------------------------------------------------------


def pick_best(
    study: optuna.Study, max_latency_ms: float | None = None, min_accuracy: float | None = None
) -> tuple[optuna.trial.FrozenTrial, str]:
    """From the Pareto front: the most accurate; with ``max_latency_ms``, the most accurate within it;
    with only ``min_accuracy``, the fastest that reaches it. Returns the trial and why it was chosen.
    In a confirmed study the front and the accuracies are the confirmed ones (means over the fresh
    seeds, the front recomputed on them), as ``nas report`` shows them: a single lucky run is not
    "the best"; the reason then carries the member's verdict against the baseline."""
    from nas.report import analyse, verdict_text
    from nas.study.studies import front

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    a = analyse(study, measure_again=False)
    if a.confirmed:
        members = [(trials[m.number], m.shown_accuracy, m.latency, m) for m in a.members if m.on_front]
        kind = f"confirmed front member(s) (mean accuracy over {len(a.seeds)} fresh seeds)"
    else:
        members = [(t, t.values[0], t.values[1], None) for t in front(study)]
        kind = "front member(s)"
    if not members:
        raise ExportError(f"study {study.study_name!r} has no complete feasible trial yet; nothing to export")
    ok = [
        c
        for c in members
        if (max_latency_ms is None or c[2] <= max_latency_ms) and (min_accuracy is None or c[1] >= min_accuracy)
    ]
    budget = " and ".join(
        x
        for x in (
            f"latency <= {max_latency_ms:g} ms" if max_latency_ms is not None else "",
            f"accuracy >= {min_accuracy:g}" if min_accuracy is not None else "",
        )
        if x
    )
    if not ok:
        have = ", ".join(f"trial {t.number}: accuracy {acc:.4f}, {lat:.3f} ms" for t, acc, lat, _ in members)
        raise ExportError(f"no trial on the front meets {budget}; the front is: {have}")
    if min_accuracy is not None and max_latency_ms is None:
        best = min(ok, key=lambda c: (c[2], -c[1], c[0].number))
        why = f"the fastest of the {len(ok)} {kind} with {budget}"
    else:
        best = max(ok, key=lambda c: (c[1], -c[2], -c[0].number))
        why = f"the most accurate of the {len(ok)} {kind}" + (f" with {budget}" if budget else "")
    if best[3] is not None:
        m = best[3]
        why += f": {m.shown_accuracy:.4f}; {'the baseline itself' if m.baseline else verdict_text(m)}"
    return best[0], why


def get_trial(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise ExportError(f"trial {number} does not exist in study {study.study_name!r} (trials 0..{len(trials) - 1})")
    trial = trials[number]
    source = TrialInfo.of(trial).duplicate_of  # a copy: the trial it copied (copies are recorded as pruned)
    if source is not None and 0 <= source < len(trials):
        trial = trials[source]
    if trial.state != TrialState.COMPLETE:
        reason = TrialInfo.of(trial).stop_reason
        raise ExportError(
            f"trial {trial.number} is {trial.state.name.lower()}"
            + (f" ({reason})" if reason else "")
            + "; only complete trials have trained weights to export"
        )
    return trial


# -- the generated code ---------------------------------------------------------------------------


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


def _describe(module: nn.Module) -> dict[str, Any]:
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
        if old is None or isinstance(new, attention.Attention):
            out.append(Edit("set", path, attr, **_describe(new)))
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
        return f"attention.MECHANISMS[{e.mechanism!r}].cls({', '.join(args)}, stride={_literal(e.stride, 'stride')})"
    return f"attention.create({e.mechanism!r}, {', '.join(args)})"


def _line(e: Edit) -> str:
    if e.kind == "identity":
        return f"    _set(model, {_path(e.path)}, {_path(e.attr)}, nn.Identity())"
    fn = "_set" if e.kind == "set" else "_after"
    return f"    {fn}(model, {_path(e.path)}, {_path(e.attr)}, {_constructor(e)})"


def timm_name(study_name: str, number: int) -> str:
    """``nas_<study>_t<trial>``, lower-case letters, digits and underscores only."""
    return f"nas_{re.sub(r'[^a-z0-9]+', '_', study_name.lower()).strip('_') or 'study'}_t{number}"


def render_model_py(arch: Architecture, num_classes: int, in_chans: int, name: str) -> str:
    """The source of model.py for ``arch`` (checked: see the module docstring)."""
    text = str(arch)
    if not _ARCH_CHARS.match(text) or bb.check_model_name(arch.backbone) or not _SAFE_STR.match(arch.backbone):
        raise ExportError(f"refusing to write architecture {text!r} into generated code")
    if not re.fullmatch(r"nas_[a-z0-9_]{1,80}", name):
        raise ExportError(f"refusing to register timm model name {name!r}; use letters, digits and underscores")
    plain = bb.create(arch.backbone, num_classes=num_classes, in_chans=in_chans, device="meta")
    lines, stage = [], None
    for e in edits(plain, build(arch, num_classes, in_chans, device="meta")):
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


# -- writing the folder ---------------------------------------------------------------------------


@dataclass
class Exported:
    folder: Path
    trial: int
    files: list[Path]
    checks: dict[str, float]  # what was verified -> largest absolute difference


def _weights_of(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, root: Path, artifacts: str | None, scratch: Path
) -> Path:
    """The trial's kept weights as a local file, checked against the trial (``verify_weights``):
    fetched from the study's artifact store (``artifacts`` overrides where the study says it is) into
    ``scratch``, or, for a study made before the store, read where the search wrote them."""
    from nas.study.stores import STORE_ATTR, open_store, store_location
    from nas.study.studies import stored_study_attrs, uid_of

    info = TrialInfo.of(trial)
    expected = {"study": study.study_name, "study_uid": uid_of(study), "trial": str(trial.number), "arch": info.arch}
    artifact = info.weights_artifact
    if artifact is None:  # a study made before the artifact store
        path = Path(info.weights) if info.weights else weights_path(root / study.study_name, trial.number)
        if not path.exists():
            raise ExportError(
                f"the weights of trial {trial.number} were not kept ({path} is missing): the search keeps "
                "those of the current front only. Export a front member, add --no-weights for the "
                "definition alone, or train it with nas train"
            )
        return verify_weights(path, expected)
    from optuna.artifacts import download_artifact
    from optuna.artifacts.exceptions import ArtifactNotFound

    attrs = stored_study_attrs(study)
    location = store_location(artifacts, Path(".")) if artifacts else attrs.get(STORE_ATTR)
    if not isinstance(location, str) or not location:
        raise ExportError(f"study {study.study_name!r} does not say where its artifacts are; give --artifacts")
    path = scratch / f"trial_{trial.number}.safetensors"
    try:
        download_artifact(artifact_store=open_store(location), file_path=str(path), artifact_id=artifact)
    except ArtifactNotFound:
        removed = r.weights_removed_key(trial.number) in storage_of(study).get_study_system_attrs(study_id(study))
        raise ExportError(
            f"the weights of trial {trial.number} are not in the artifact store {location} (artifact {artifact})"
            + (
                ": they were removed when the trial left the front (the search keeps the front's only). "
                if removed
                else ": the store is not the one the search wrote to, or was changed (--artifacts names another). "
            )
            + "Export a front member, add --no-weights for the definition alone, or train it with nas train"
        ) from None
    except UserError:
        raise
    except Exception as e:  # a cloud store that cannot be reached, a folder that cannot be read
        raise ExportError(f"cannot read artifact {artifact} from {location}: {e.__class__.__name__}: {e}") from None
    return verify_weights(path, expected)


def judged(study: optuna.Study, trial: optuna.trial.FrozenTrial, remeasure: bool, root: Path) -> dict[str, Any]:
    """The figures ``nas report`` shows for the trial: latency re-measured beside the baseline (with
    ``remeasure``), the noise floor, and where confirmed its mean accuracy, paired difference to the
    baseline (95% intervals) and verdict."""
    from nas.report import analyse, verdict_text

    a = analyse(study, measure_again=remeasure, include=[trial.number])
    m = next(m for m in a.members if m.number == trial.number)
    out: dict[str, Any] = {
        "noise_sd": a.noise.final if a.noise else None,
        "noise_seeds": list(a.noise.seeds) if a.noise else None,
        "verdict": verdict_text(m),
    }
    if m.remeasured:
        out["latency_remeasured_ms"] = m.latency
        out["latency_remeasured_ci_ms"] = [m.latency_low, m.latency_high]
        if m.latency_diff is not None:
            out["latency_vs_baseline_ms"] = list(m.latency_diff)
    if m.accuracy is not None:
        out["confirmed"] = {
            "seeds": list(m.seeds),
            "accuracies": list(m.accuracies),
            "accuracy_mean": m.accuracy.mean,
            "accuracy_ci95": [m.accuracy.low, m.accuracy.high],
        }
        if m.difference is not None:
            out["confirmed"]["difference_to_baseline"] = m.difference.mean
            out["confirmed"]["difference_ci95"] = [m.difference.low, m.difference.high]
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}


def is_export_of(folder: Path, study: str, number: int) -> bool:
    """Whether ``folder`` is an earlier export of this study's trial (its metrics.json says so)."""
    try:
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and metrics.get("study") == study and metrics.get("trial") == number


def trial_seed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> int | None:
    """The seed the trial trained from; None for trials of studies made before every trial recorded
    it (they trained from --seed + trial number, seeded otherwise: ``nas train`` cannot reproduce them)."""
    return TrialInfo.of(trial).seed


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def export_trial(
    study: optuna.Study,
    trial: optuna.trial.FrozenTrial,
    out: Path,
    *,
    weights: bool = True,
    onnx: bool = False,
    torchscript: bool = False,
    name: str | None = None,
    root: Path = Path("runs"),
    tolerance: float = 1e-4,
    remeasure: bool = True,
    artifacts: str | None = None,
) -> Exported:
    """Write the export folder for ``trial`` and check model.py (and ONNX/TorchScript) against the
    model the search built, on a random input."""
    from nas.measure.cost import model_cost
    from nas.study.studies import num_classes_of, space_of

    space = space_of(study)
    if space is None:
        raise ExportError(f"study {study.study_name!r} does not record its search space; it was not made by nas search")
    info = TrialInfo.of(trial)
    arch = info.architecture
    num_classes = num_classes_of(study, space)
    if space.is_detection:
        if onnx or torchscript:
            raise ExportError(
                "--onnx/--torchscript: a detector is exported as an ultralytics model YAML with its weights; "
                "convert it with ultralytics itself: load().export(format='onnx') (see load.py)"
            )
        from nas.tasks.detect.export import export_detector

        with tempfile.TemporaryDirectory(prefix="nas-weights-") as scratch:
            weights_src = _weights_of(study, trial, root, artifacts, Path(scratch)) if weights else None
            files, checks = export_detector(
                study, trial, space, out, weights_src=weights_src, judged=judged(study, trial, remeasure, root)
            )
        return Exported(out, trial.number, files, checks)
    name = name or timm_name(study.study_name, trial.number)
    source = render_model_py(arch, num_classes, space.in_chans, name)
    with tempfile.TemporaryDirectory(prefix="nas-weights-") as scratch:
        weights_src = _weights_of(study, trial, root, artifacts, Path(scratch)) if weights else None

        out.mkdir(parents=True, exist_ok=True)
        files = [out / "model.py", out / CARD_FILE, out / "metrics.json"]
        write_text_atomic(files[0], source)
        ModelCard(
            arch,
            num_classes,
            space.in_chans,
            space.input_size,
            dict(space.data),
            {
                **dict(space.training),
                "seed": trial_seed(study, trial) or 0,
                "epochs": len(info.curve) or space.training["epochs"],
            },
            timm_name=name,
        ).write(out)
        cost = model_cost(arch, num_classes, space.input_size, space.in_chans)
        metrics = {
            "study": study.study_name,
            "trial": trial.number,
            "architecture": str(arch),
            "accuracy": trial.values[0],
            "latency_ms": info.latency_ms,
            "latency_ci_ms": list(info.latency_ci_ms) if info.latency_ci_ms else None,
            "latency_spread_pct": info.latency_spread_pct,
            "latency_target": info.latency_target,
            "seed": trial_seed(study, trial),
            "params": cost.params,
            "flops": cost.flops,
            "val_acc_curve": list(info.curve) or None,
            "weights": WEIGHTS_FILE if weights else None,
            **judged(study, trial, remeasure, root),
        }
        write_text_atomic(files[2], json.dumps(metrics, indent=1))

        reference = build(arch, num_classes, space.in_chans).eval()
        generated = import_model_py(files[0]).build_model().eval()
        files += install_weights(weights_src, out, reference, generated)
        x = torch.randn(2, space.in_chans, *space.input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref_out = reference(x)
            checks = {"model.py": _max_diff(generated(x), ref_out)}
        if onnx:
            files.append(out / "model.onnx")
            checks["onnx"] = _export_onnx(generated, x, files[-1], ref_out)
        if torchscript:
            files.append(out / "model.torchscript.pt")
            checks["torchscript"] = _export_torchscript(generated, x, files[-1], ref_out)
        bad = {k: v for k, v in checks.items() if not v <= tolerance}
        if bad:
            raise ExportError(
                f"{out}: the exported "
                + ", ".join(f"{k} differs from PyTorch by {v:.3g}" for k, v in bad.items())
                + f" (tolerance {tolerance:g})"
            )
        return Exported(out, trial.number, files, checks)


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


# -- loading --------------------------------------------------------------------------------------


NOT_FOR_DETECTORS = (
    "nas viz draws classifiers' attention maps and Grad-CAM; load a detector with the export's load.py "
    "(ultralytics' YOLO) instead"
)


def load_export(path: Path) -> tuple[nn.Module, ModelCard]:
    """The model of an export folder with its weights (eval mode), built through the search code from
    architecture.yaml (the same modules model.py builds), and its card."""
    path = Path(path)
    card = ModelCard.read(path)
    if card.task == "detect":
        raise ExportError(f"{path}: a detector's export; {NOT_FOR_DETECTORS}")
    model = build(card.architecture, card.num_classes, card.in_chans).eval()
    folder = path if path.is_dir() else path.parent
    if (folder / WEIGHTS_FILE).exists():
        load_weights(model, folder / WEIGHTS_FILE)
    else:
        raise ExportError(f"{folder}: no {WEIGHTS_FILE}; this export has the definition only")
    return model, card


def load_trial(
    study_name: str | None,
    storage: str | None,
    number: int,
    root: Path = Path("runs"),
    artifacts: str | None = None,
) -> tuple[nn.Module, ModelCard]:
    """A trial's model with the weights the search kept (eval mode), and its card."""
    from nas.study.studies import num_classes_of, open_existing, space_of

    study = open_existing(study_name, storage)
    trial = get_trial(study, number)
    space = space_of(study)
    if space is not None and space.is_detection:
        raise ExportError(f"study {study.study_name!r} searched a detector; {NOT_FOR_DETECTORS}")
    arch = TrialInfo.of(trial).architecture
    num_classes = num_classes_of(study, space)
    in_chans = space.in_chans if space else 3
    with tempfile.TemporaryDirectory(prefix="nas-weights-") as scratch:
        weights = _weights_of(study, trial, root, artifacts, Path(scratch))
        model = load_weights(build(arch, num_classes, in_chans).eval(), weights)
    return model, ModelCard(
        arch, num_classes, in_chans, space.input_size if space else (224, 224), dict(space.data) if space else {}
    )
