"""The engine's side of a study: creating or resuming it (refusing another space; recording the changes
a resume may make), its fingerprint, and the ways a trial ends: told, recorded as failed, failed for a
dead worker and retried once. Optuna's internals are reached through ``nas.study.studies``."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nas.core.errors import UserError, reason_text
from nas.study.record import ARCH, BASELINE, STOP_REASON, study_attr
from nas.study.storage import grace_s, open_storage
from nas.study.studies import (
    CHANGES_ATTR,
    NOISE_SEEDS_ATTR,
    SEED_ATTR,
    SPACE_DATA_ATTR,
    UID_ATTR,
    storage_of,
    stored_space,
    stored_trial,
    study_id,
    trial_id,
)

if TYPE_CHECKING:
    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)


def set_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


# this process, as user attribute ``worker`` of its trials and in the claims of re-runs
WORKER = f"{socket.gethostname()}:{os.getpid()}"

METRIC_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "params": "params", "flops": "flops"}
DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "flops": "minimize"}


def create_or_resume(
    space: SearchSpace,
    study_name: str,
    storage: str,
    sampler: optuna.samplers.BaseSampler,
    heartbeat_s: int | None = None,
    seed: int = 0,
) -> optuna.Study:
    """Create or resume the study. A study made from a different space is refused. A new study
    records ``seed``: every one of its trials trains from it (common random numbers)."""
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    directions = [DIRECTIONS[o] for o in space.objectives]
    try:
        study = optuna.create_study(
            study_name=study_name,
            storage=open_storage(storage, heartbeat_s),
            sampler=sampler,
            directions=directions,
            load_if_exists=True,
        )
    except ValueError as e:  # directions differ from an existing study of that name
        raise UserError(f"study {study_name!r} in {storage}: {e}") from None
    except Exception as e:  # bad URL, unreachable database
        raise UserError(f"cannot open storage {storage!r}: {e.__class__.__name__}: {e}") from None
    fingerprint = space_fingerprint(space)
    stored = study.user_attrs.get("space_fingerprint")
    if stored is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([space.metric if o == "accuracy" else METRIC_NAMES[o] for o in space.objectives])
        study.set_user_attr("space_fingerprint", fingerprint)
        study.set_user_attr("space_path", str(Path(space.path).resolve()))
        study.set_user_attr("space", Path(space.path).read_text() if Path(space.path).exists() else "")
        study.set_user_attr(SPACE_DATA_ATTR, _space_data(space))
        study.set_user_attr("objectives", list(space.objectives))
        study.set_user_attr(SEED_ATTR, seed)
        study.set_user_attr(NOISE_SEEDS_ATTR, space.training.noise_seeds)
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
    elif stored not in accepted_fingerprints(space, _stored_rounds(study)):
        raise UserError(
            f"study {study_name!r} in {storage} was created from a different search space "
            f"({study.user_attrs.get('space_path')}); resume it with that space or choose another --study"
        )
    else:
        if stored != fingerprint:  # an earlier version's form: today's from now on, so the next resume matches
            study.set_user_attr("space_fingerprint", fingerprint)
        record_resume_changes(study, space)
    return study


def _space_data(space: SearchSpace) -> dict[str, Any]:
    """The parsed space as the study stores it: its paths absolute, so a command run from another folder
    reads the same files."""
    d = space.to_data()
    d["path"] = str(Path(space.path).resolve())
    d["data"] = space.data.with_absolute_paths(Path.cwd()).as_dict()  # as the search read them, from here
    return d


def record_resume_changes(study: optuna.Study, space: SearchSpace) -> list[str]:
    """A study resumed from a space that differs only in settings a study may change on resume
    (``Setting.on_resume``: how results are checked, not what the trials trained): the study's record of
    its space takes the new values, each change is logged and noted (``space_changes``), and the values
    the search and ``nas report`` read follow. Returns the changes, as "section.key: old -> new"."""
    before = stored_space(study)
    if before is None:
        return []
    changed = []
    for section in RESUMABLE_SECTIONS:
        now, then = getattr(space, section), getattr(before, section).as_dict()
        changed += [
            (section, k, then.get(k), v)
            for k, v in now.as_dict().items()
            if k in now.changeable_on_resume() and then.get(k) != v
        ]
    if not changed:
        return []
    import datetime

    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    history = list(study_attr(study, CHANGES_ATTR, list, []))
    history += [{"key": f"{sec}.{k}", "from": old, "to": new, "at": when} for sec, k, old, new in changed]
    updated = before.to_data()
    for section in RESUMABLE_SECTIONS:
        updated[section] = {**updated[section], **{k: new for sec, k, _, new in changed if sec == section}}
    study.set_user_attr(SPACE_DATA_ATTR, updated)
    study.set_user_attr(CHANGES_ATTR, history)
    if any(sec == "training" and k == "noise_seeds" for sec, k, _, _ in changed):
        study.set_user_attr(NOISE_SEEDS_ATTR, space.training.noise_seeds)
    lines = [f"{sec}.{k}: {old} -> {new}" for sec, k, old, new in changed]
    log.warning("study %s resumed with %s (recorded on the study)", study.study_name, "; ".join(lines))
    return lines


RESUMABLE_SECTIONS = ("training", "latency")  # the sections with settings a resume may change
ROUNDS_BEFORE = 80  # latency.rounds' default while the fingerprint still held it (until it became 32)


def space_fingerprint(space: SearchSpace) -> str:
    """What a study's trials depend on, hashed: a resume must match it. Not the settings a resume may
    change (``Setting.on_resume``), nor settings added since, while at their default."""
    return _fingerprint(space, space.latency.fingerprinted())


def accepted_fingerprints(space: SearchSpace, rounds_then: int | None = None) -> set[str]:
    """Today's fingerprint, and those that studies made by earlier versions stored for the same space:
    they hashed the whole latency section, with the rounds then in force (as the study recorded its
    space, ``rounds_then``; ``ROUNDS_BEFORE``, the default; or the space's own), or without rounds
    before the setting existed."""
    latency = space.latency.as_dict()
    then = {latency["rounds"], ROUNDS_BEFORE} | ({rounds_then} if rounds_then is not None else set())
    older = [sorted({**latency, "rounds": rounds}.items()) for rounds in then]
    older.append(sorted((k, v) for k, v in latency.items() if k != "rounds"))
    return {space_fingerprint(space), *(_fingerprint(space, items) for items in older)}


def _stored_rounds(study: optuna.Study) -> int | None:
    """The latency rounds of the space a study recorded (None: it recorded none to read)."""
    data = study.user_attrs.get(SPACE_DATA_ATTR)
    rounds = data.get("latency", {}).get("rounds") if isinstance(data, dict) else None
    return rounds if isinstance(rounds, int) else None


def _fingerprint(space: SearchSpace, latency: list[tuple[str, Any]]) -> str:
    parts = [
        space.backbone,
        space.input_size,
        space.in_chans,
        space.num_classes,
        sorted(space.data.as_dict().items()),
        [
            (s.index, s.replace_builtin, [(o.mechanism, o.hparams, o.placements) for o in s.options])
            for s in space.stages
        ],
        # what the trials trained; how results are checked (noise_seeds, confirm) may change on resume
        space.training.fingerprinted(),
        space.objectives,
        latency,
        sorted(space.limits.as_dict().items()),
        *space.task.fingerprint(space),  # a detector and where each position is (a classifier: nothing)
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def fail_stale(study: optuna.Study, heartbeat_s: int) -> None:
    """Fail (and retry once) the running trials silent for 3 heartbeats: their worker died or hung,
    on this machine or another. Call with the study's lock held."""
    storage = storage_of(study)
    for stale in storage.stale_trial_ids(study_id(study)):
        fail_dead(
            study, storage.get_trial(stale), f"no heartbeat for {grace_s(heartbeat_s)} s: its worker died or hung"
        )


def fail_dead(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """A running trial whose worker is gone: failed with ``why``, and its architecture queued again
    once (``storage.retry_once``). Call with the study's lock held."""
    storage = storage_of(study)
    try:
        storage.set_trial_user_attr(trial_id(trial), STOP_REASON, reason_text(f"failed: {why}"))
        storage.set_trial_state_values(trial_id(trial), state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # it finished, or someone else failed it, meanwhile
    retry_once(study, storage.get_trial(trial_id(trial)))


def finished(study: optuna.Study, trial: optuna.Trial) -> bool:
    return stored_trial(study, trial).state.is_finished()


def record_end(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Record a trial that did not finish (FAIL, with the reason), unless another process already
    failed it (no heartbeat seen): that must not mask what is being handled."""
    try:
        trial.set_user_attr(STOP_REASON, reason_text(reason))
        tell(study, trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        log.warning("trial %d was already failed by another process", trial.number)


def tell(study: optuna.Study, trial: optuna.Trial, *args: Any, **kwargs: Any) -> None:
    """``study.tell``, except that BruteForceSampler's request to stop once every combination was told
    (``study.stop()`` from its after_trial hook, which outside ``optimize`` raises) is not an error:
    the trial is recorded by then, and the loop sees the space exhausted."""
    try:
        study.tell(trial, *args, **kwargs)
    except RuntimeError as e:
        finished = study.get_trials(deepcopy=False)[trial.number].state != TrialState.RUNNING
        if not (finished and "Study.stop" in str(e)):
            raise


def retry_once(study: optuna.Study, trial: FrozenTrial) -> None:
    """What happens to a trial whose worker died (no heartbeat, or the parent saw the process end):
    its architecture is queued again, once; a retry that dies too is not retried. The retry keeps
    the architecture and the baseline mark, not the dead trial's partial results."""
    keep = {k: v for k, v in trial.user_attrs.items() if k in (ARCH, BASELINE)}
    RetryHeartbeatStaleTrialCallback(max_retry=1)(
        study,
        FrozenTrial(
            number=trial.number,
            state=trial.state,
            value=None,
            values=trial.values,
            datetime_start=None,
            datetime_complete=None,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=keep,
            system_attrs={k: v for k, v in trial.system_attrs.items() if k in ("failed_trial", "retry_history")},
            intermediate_values={},
            trial_id=trial_id(trial),
        ),
    )
