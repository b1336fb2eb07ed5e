"""The study: the one place that knows Optuna's storage internals (``Study._storage``,
``Trial._trial_id``), so the rest of the search reads and writes trials through the functions here.

Opening a study for a search (``create_or_resume``) and for reading one (``open_existing``), its
front, its counts, and the ways a trial ends: told, recorded as failed, failed for a dead worker.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from nas.core.errors import BadOption, UserError
from nas.core.names import folder_of
from nas.core.pareto import pareto_front
from nas.study.record import ARCH, BASELINE, STOP_REASON, StudyDataError, TrialInfo, study_attr
from nas.study.storage import RetryingStorage, grace_s, open_storage

if TYPE_CHECKING:
    from nas.core.space import SearchSpace

log = logging.getLogger(__name__)


def storage_of(study: optuna.Study) -> RetryingStorage:
    """The study's storage (every study the search opens has a ``RetryingStorage``)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its ``number`` counts within the study, this across studies)."""
    return trial._trial_id


def stored_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    """The trial as the storage holds it now (other processes, DDP ranks, may have written to it)."""
    return storage_of(study).get_trial(trial_id(trial))


def stored_study_attrs(study: optuna.Study) -> dict[str, Any]:
    """The study's user attributes as the storage holds them now (``study.user_attrs`` may be cached)."""
    return storage_of(study).get_study_user_attrs(study_id(study))


def set_system_attr(study: optuna.Study, trial: optuna.Trial | FrozenTrial, key: str, value: Any) -> None:
    storage_of(study).set_trial_system_attr(trial_id(trial), key, value)


SEED_ATTR = "seed"  # study user attribute: the seed every trial trains from (common random numbers)
NOISE_SEEDS_ATTR = "noise_seeds"
UID_ATTR = "study_uid"  # tells apart studies of one name in different storages (their weights carry it)


def uid_of(study: optuna.Study) -> str | None:
    """The study's uid as stored (None for studies made before studies had one)."""
    uid = stored_study_attrs(study).get(UID_ATTR)
    return uid if isinstance(uid, str) else None


# this process, as user attribute ``worker`` of its trials and in the claims of re-runs
WORKER = f"{socket.gethostname()}:{os.getpid()}"

METRIC_NAMES = {"accuracy": "accuracy", "latency": "latency_ms", "params": "params", "flops": "flops"}
DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "flops": "minimize"}


def default_storage(study: str, root: Path = Path("runs")) -> str:
    return f"sqlite:///{folder_of(root, study, '--study') / 'study.db'}"


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
        study.set_user_attr("space_path", space.path)
        study.set_user_attr("space", Path(space.path).read_text() if Path(space.path).exists() else "")
        study.set_user_attr("objectives", list(space.objectives))
        study.set_user_attr(SEED_ATTR, seed)
        study.set_user_attr(NOISE_SEEDS_ATTR, space.training.noise_seeds)
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
    elif stored != fingerprint:
        raise UserError(
            f"study {study_name!r} in {storage} was created from a different search space "
            f"({study.user_attrs.get('space_path')}); resume it with that space or choose another --study"
        )
    return study


def space_fingerprint(space: SearchSpace) -> str:
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
        sorted((k, v) for k, v in space.training.as_dict().items() if k not in space.training.changeable_on_resume()),
        space.objectives,
        sorted(space.latency.as_dict().items()),
        sorted(space.limits.as_dict().items()),
        *space.task.fingerprint(space),  # a detector and where each position is (a classifier: nothing)
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def count_states(study: optuna.Study) -> dict[str, int]:
    """Trials by how they ended; ``copies`` are proposals of architectures already evaluated (recorded,
    not counted among the others)."""
    counts = {"complete": 0, "pruned": 0, "infeasible": 0, "failed": 0, "running": 0, "copies": 0}
    for t in study.get_trials(deepcopy=False):
        if TrialInfo.of(t).is_copy:
            counts["copies"] += 1
        elif t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            counts["infeasible" if TrialInfo.of(t).infeasible else "pruned"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    return counts


def front(
    study: optuna.Study, snapshot: list[optuna.trial.FrozenTrial] | None = None
) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated feasible complete trials (duplicates collapsed to their first trial), of the study
    as it is now or of ``snapshot`` (its trials read once, by a caller that decides on the same list)."""
    trials = [
        t
        for t in (study.get_trials(deepcopy=False) if snapshot is None else snapshot)
        if t.state == TrialState.COMPLETE
        and not TrialInfo.of(t).is_copy
        and all(v <= 0 for v in t.constraints.values())
    ]
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    points = [(signs[0] * t.values[0], -signs[1] * t.values[1]) for t in trials]
    return sorted((trials[i] for i in pareto_front(points)), key=lambda t: t.values[1])


def fail_stale(study: optuna.Study, heartbeat_s: int) -> None:
    """Fail (and retry once) the running trials silent for 3 heartbeats: their worker died or hung,
    on this machine or another. Call with the study's lock held."""
    storage = storage_of(study)
    for trial_id in storage.stale_trial_ids(study_id(study)):
        fail_dead(
            study, storage.get_trial(trial_id), f"no heartbeat for {grace_s(heartbeat_s)} s: its worker died or hung"
        )


def fail_dead(study: optuna.Study, trial: optuna.trial.FrozenTrial, why: str) -> None:
    """A running trial whose worker is gone: failed with ``why``, and its architecture queued again
    once (``storage.retry_once``). Call with the study's lock held."""
    storage = storage_of(study)
    try:
        storage.set_trial_user_attr(trial_id(trial), STOP_REASON, f"failed: {why}")
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
        trial.set_user_attr(STOP_REASON, reason)
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


def load_from(study_name: str | None, storage: str) -> optuna.Study:
    try:
        store = open_storage(storage)
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    except Exception as e:
        raise UserError(f"cannot open storage {storage!r}: {e.__class__.__name__}: {e}") from None
    if study_name is None:
        if len(names) != 1:
            raise UserError(
                f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}); name one with --study"
            )
        study_name = names[0]
    if study_name not in names:
        raise UserError(f"no study {study_name!r} in {storage}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=store)


def open_existing(study_name: str | None, storage: str | None) -> optuna.Study:
    """The study named on the command line: in ``storage``, or in its default SQLite file under runs/."""
    if storage is None:
        if study_name is None:
            raise UserError(f"--study is missing: {_studies_here()}")
        storage = default_storage(study_name)
        path = storage[len("sqlite:///") :]
        if not Path(path).exists():
            raise BadOption("--study", study_name, f"the name of a study: no database at {path}; {_studies_here()}")
    return load_from(study_name, storage)


def _studies_here(root: Path = Path("runs")) -> str:
    """The studies in their default places under ``root`` (what --study can name without --storage)."""
    names = sorted(p.parent.name for p in root.glob("*/study.db")) if root.is_dir() else []
    if not names:
        return f"there is no study under {root}/ here (run nas search first, or give --storage URL)"
    return f"the studies under {root}/ here: {', '.join(names)} (or give --storage URL)"


def runs_root(study: optuna.Study, storage: str | None) -> Path:
    """The runs folder a study's files belong in: beside its SQLite file when that is
    ``<root>/<study>/study.db`` (the default layout), else ./runs."""
    if storage and storage.startswith("sqlite:///"):
        db = Path(storage[len("sqlite:///") :])
        if db.parent.name == study.study_name:
            return db.parent.parent
    return Path("runs")


def space_of(study: optuna.Study) -> Any:
    """The SearchSpace the study was run with (its YAML text is stored in the study), or None."""
    from nas.tasks.spacefile import load_space

    text = study_attr(study, "space", str, "")
    if not text:
        return None
    base = Path(study_attr(study, "space_path", str, "") or ".").parent  # relative files of the space: from there
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(text)
        return load_space(path, base=base)


def num_classes_of(study: optuna.Study, space: Any) -> int:
    """Classes of the study's models: as the search found them in the data, else the space's, else 10."""
    n = study_attr(study, "num_classes", int) or (space.num_classes if space else None) or 10
    if n < 1:
        raise StudyDataError(f"study {study.study_name!r}: attribute 'num_classes' is {n}; expected at least 1")
    return n
