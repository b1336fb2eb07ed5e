"""A trial leaves the tool: a folder its task writes (a classifier's readable ``model.py``, a detector's
model YAML) with the architecture, its metrics and its trained weights, each checked against the model
the search built. Which trial (``pick_best``, ``get_trial``), its kept weights (``_weights_of``,
checked against the trial before use) and the figures ``nas report`` judged for it are the same for
every task.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from torch import nn

from nas.core.artifacts import WEIGHTS_FILE, ExportError, ModelCard, verify_weights, weights_path
from nas.core.errors import BadOption, UserError
from nas.core.names import staged
from nas.core.task import ExportFacts, ExportOptions
from nas.study import record as r
from nas.study.record import TrialInfo
from nas.study.studies import storage_of, study_id
from nas.tasks import task_named

# -- choosing the trial ---------------------------------------------------------------------------


def pick_best(
    study: optuna.Study, max_latency_ms: float | None = None, min_accuracy: float | None = None
) -> tuple[optuna.trial.FrozenTrial, str]:
    """From the Pareto front: the most accurate; with ``max_latency_ms``, the most accurate within it;
    with only ``min_accuracy``, the fastest that reaches it. Returns the trial and why it was chosen.
    In a confirmed study the front and the accuracies are the confirmed ones (means over the fresh
    seeds, the front recomputed on them), as ``nas report`` shows them: a single lucky run is not
    "the best"; the reason then carries the member's verdict against the baseline."""
    from nas.study.analysis import analyse, latency_objective, verdict_text
    from nas.study.studies import front

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    a = analyse(study, measure_again=False)
    if a.confirmed:
        members = [(trials[m.number], m.shown_accuracy, m.latency, m) for m in a.members if m.on_front]
        kind = f"confirmed front member(s) (mean accuracy over {a.seeds_text} fresh seeds)"
    else:
        # latency, whatever objective 2 is: the objective itself where it is latency (the stored attribute
        # is rounded, and a budget given as the front's own figure must admit it)
        exact = latency_objective(study)
        members = [(t, t.values[0], t.values[1] if exact else _latency_of(t), None) for t in front(study)]
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


def _latency_of(trial: optuna.trial.FrozenTrial) -> float:
    latency = TrialInfo.of(trial).latency_ms
    return float("inf") if latency is None else latency


@dataclass(frozen=True)
class Chosen:
    """The trial ``nas export`` writes, why it was chosen, and its search run in words."""

    study: optuna.Study
    trial: optuna.trial.FrozenTrial
    line: str
    search_run: str
    folder: Path  # where it goes


def choose(
    which: str,
    study_name: str | None,
    storage: str | None,
    out: Path | None = None,
    max_latency_ms: float | None = None,
    min_accuracy: float | None = None,
) -> Chosen:
    """``best`` (``pick_best``) or a trial number of the study named on the command line, and the folder
    it goes to (``out``, default runs/<study>/export/trial_<n>: the study's name checked before any work)."""
    from nas.core.names import folder_of
    from nas.study.studies import open_existing

    st = open_existing(study_name, storage)
    exports = None if out else folder_of(Path("runs"), st.study_name) / "export"
    if which == "best":
        trial, why = pick_best(st, max_latency_ms, min_accuracy)
        line = f"trial {trial.number}: {TrialInfo.of(trial).arch}, {why}"
    elif which.isdigit():
        if max_latency_ms is not None or min_accuracy is not None:
            raise BadOption("--max-latency-ms/--min-accuracy", "given", "only with 'nas export best'")
        trial = get_trial(st, int(which))
        line = f"trial {trial.number}: {TrialInfo.of(trial).arch}"
    else:
        raise BadOption("WHICH", which, "best or a trial number, e.g. nas export best or nas export 12")
    info, names = TrialInfo.of(trial), st.metric_names or ["accuracy", "latency_ms"]
    second = f"latency {trial.values[1]:.3f} ms" if names[1] == "latency_ms" else f"{names[1]} {trial.values[1]:,.0f}"
    search_run = (
        f"its search run: {names[0]} {trial.values[0]:.4f}, {second} ({info.latency_target or '?'}); "
        "metrics.json has the confirmed figures where there are"
    )
    return Chosen(st, trial, line, search_run, out or exports / f"trial_{trial.number}")


def export_chosen(chosen: Chosen, *, force: bool = False, **options: Any) -> Exported:
    """``export_trial`` into the chosen folder, checked first: one that holds other files than an earlier
    export of this trial needs ``force``."""
    from nas.core.names import check_out
    from nas.study.stores import STORE_ATTR
    from nas.study.studies import stored_study_attrs

    st, trial = chosen.study, chosen.trial
    store = stored_study_attrs(st).get(STORE_ATTR)
    inputs = [Path(store)] if isinstance(store, str) and "://" not in store else []  # the study's weights
    check_out(chosen.folder, inputs=inputs, force=force, ours=lambda f: is_export_of(f, st.study_name, trial.number))
    return export_trial(st, trial, chosen.folder, **options)


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
    if artifact is None and info.weights_not_kept:
        raise ExportError(
            f"the weights of trial {trial.number} were never kept ({info.weights_not_kept}): the search "
            "keeps those of the front only. Export a front member, add --no-weights for the definition "
            "alone, or train it with nas train"
        )
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
    from nas.study.analysis import analyse, verdict_text

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
    """Write the export folder for ``trial`` (what its task writes: a classifier's model.py, a detector's
    model.yaml) and check it against the model the search built, on a random input."""
    from nas.study.studies import num_classes_of, space_of

    space = space_of(study)
    if space is None:
        raise ExportError(f"study {study.study_name!r} does not record its search space; it was not made by nas search")
    info = TrialInfo.of(trial)
    facts = ExportFacts(
        study.study_name,
        trial.number,
        tuple(trial.values),
        info.seed,
        info.curve,
        info.latency_ms,
        info.latency_ci_ms,
        info.latency_spread_pct,
        info.latency_target,
        info.params,
        info.flops,
        trial.user_attrs,
        judged(study, trial, remeasure, root),
    )
    with tempfile.TemporaryDirectory(prefix="nas-weights-") as scratch:
        weights_src = _weights_of(study, trial, root, artifacts, Path(scratch)) if weights else None  # checked first
        start = _start_of(study, space, Path(scratch), artifacts) if weights else None
        options = ExportOptions(weights_src, onnx, torchscript, name, tolerance)
        exported = _install(space, info, num_classes_of(study, space), out, facts, options, start)
    if space.training.warm and start is None:  # the definition alone: the card still says where it started
        _record_start(out, _start_record(study), None)
    return exported


def _start_record(study: optuna.Study) -> dict[str, Any]:
    from nas.study.start import recorded

    record = recorded(study)
    if record is None:
        raise ExportError(f"study {study.study_name!r} starts its trials from a trained network but records none")
    return record.to_dict()


def _start_of(study: optuna.Study, space: Any, scratch: Path, artifacts: str | None) -> Any:
    """A warm-started study's starting weights with its record (None for a study that trains from scratch)."""
    from nas.study.start import study_start

    state = study_start(study, space.training.warm, scratch, artifacts)
    return None if state is None else (state, _start_record(study))


def _install(
    space: Any, info: TrialInfo, nc: int, out: Path, facts: ExportFacts, options: ExportOptions, start: Any = None
) -> Exported:
    """The task's export written and checked in a staging folder, then installed into ``out`` whole; with
    ``start`` (a warm-started trial's starting weights and their record) also the trial's network at its
    first step (``start.safetensors``, what ``nas train --from-start`` trains from) and the record."""
    with staged(out) as stage:
        try:
            files, checks = space.task.export(space, info.architecture, nc, stage, facts, options)
            if start is not None:
                state, record = start
                model = space.task.build(space, info.architecture, nc, init_seed=info.seed, start=state)
                files.append(_record_start(stage, record, model, info))
        except UserError as e:  # named by what the user knows, not by scratch files that will be gone
            message = str(e).replace(str(stage), str(out))
            if options.weights_src is not None and info.weights_artifact:
                weights = f"the weights of trial {info.number} ({info.weights_artifact})"
                message = message.replace(str(options.weights_src), weights)
            raise ExportError(message) from None
    return Exported(out, info.number, [out / f.relative_to(stage) for f in files], checks)


def _record_start(folder: Path, record: dict[str, Any], model: Any, info: TrialInfo | None = None) -> Path:
    """The start of a warm-started trial in its export folder: ``model`` (the trial's network at step 0) as
    start.safetensors, and the study's start record (artifact, digest, source; with the file's digest) in
    architecture.yaml and metrics.json."""
    from dataclasses import replace

    from nas.core.artifacts import START_FILE, save_weights, sha256_of
    from nas.core.names import write_text_atomic

    path = folder / START_FILE
    if model is not None and info is not None:
        meta = {"arch": info.arch, "trial": str(info.number), "role": "the trial's network at its first step"}
        save_weights(model, path, meta)
        record = {**record, "file_sha256": sha256_of(path)}
    replace(ModelCard.read(folder), start=record).write(folder)
    metrics_file = folder / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    write_text_atomic(metrics_file, json.dumps({**metrics, "start": record}, indent=1))
    return path


# -- loading --------------------------------------------------------------------------------------


def load_export(path: Path) -> tuple[nn.Module, ModelCard]:
    """The model of an export folder with its weights (eval mode), built through the search code from
    architecture.yaml (the same modules model.py builds), and its card: what ``nas viz`` draws."""
    path = Path(path)
    card = ModelCard.read(path)
    folder = path if path.is_dir() else path.parent
    _refuse_viz(task_named(card.task), f"{path}: a {card.task} export")
    if not (folder / WEIGHTS_FILE).exists():
        raise ExportError(f"{folder}: no {WEIGHTS_FILE}; this export has the definition only")
    return task_named(card.task).load_for_viz(card, folder / WEIGHTS_FILE), card


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
    task = space.task if space is not None else task_named("classify")
    _refuse_viz(task, f"study {study.study_name!r} searched a {task.name} task")
    card = ModelCard(
        TrialInfo.of(trial).architecture,
        num_classes_of(study, space),
        space.in_chans if space else 3,
        space.input_size if space else (224, 224),
        space.data.as_dict() if space else {},
        task=task.name,
    )
    with tempfile.TemporaryDirectory(prefix="nas-weights-") as scratch:
        weights = _weights_of(study, trial, root, artifacts, Path(scratch))
        return task.load_for_viz(card, weights), card


def _refuse_viz(task: Any, what: str) -> None:
    why = task.viz_refusal()
    if why:
        raise ExportError(f"{what}; {why}")
