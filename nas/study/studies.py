"""A study as the read side sees it: the one place that knows Optuna's storage internals
(``Study._storage``, ``Trial._trial_id``), so the rest of the tool reads trials and attributes through
the functions here; opening a study that exists (``open_existing``), the space it was run with
(``stored_space``: its parsed space as recorded, read once per process), its front and its counts.
The engine's writes (creating and resuming a study, how a trial ends) are the engine's (``nas.search``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.core.config import SpaceError
from nas.core.errors import BadOption, UserError
from nas.core.names import folder_of
from nas.core.pareto import dominates, near_front, pareto_front
from nas.study.record import StudyDataError, TrialInfo, study_attr
from nas.study.storage import RetryingStorage, open_storage

if TYPE_CHECKING:
    pass

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


SEED_ATTR = "seed"  # study user attribute: the seed every trial trains from (common random numbers)
NOISE_SEEDS_ATTR = "noise_seeds"
UID_ATTR = "study_uid"  # tells apart studies of one name in different storages (their weights carry it)
SPACE_DATA_ATTR = "space_data"  # the parsed space (SearchSpace.to_data), as every command reads it back
CHANGES_ATTR = "space_changes"  # settings changed on resume: [{"key", "from", "to", "at"}, ...]


def uid_of(study: optuna.Study) -> str | None:
    """The study's uid as stored (None for studies made before studies had one)."""
    uid = stored_study_attrs(study).get(UID_ATTR)
    return uid if isinstance(uid, str) else None


def default_storage(study: str, root: Path = Path("runs")) -> str:
    return f"sqlite:///{folder_of(root, study, '--study') / 'study.db'}"


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


def _candidates(
    study: optuna.Study, snapshot: list[optuna.trial.FrozenTrial] | None = None
) -> tuple[list[optuna.trial.FrozenTrial], list[tuple[float, float]]]:
    """Feasible complete trials (duplicates collapsed to their first trial) and their (quality, cost)
    points, quality maximised and cost minimised."""
    trials = [
        t
        for t in (study.get_trials(deepcopy=False) if snapshot is None else snapshot)
        if t.state == TrialState.COMPLETE
        and not TrialInfo.of(t).is_copy
        and all(v <= 0 for v in t.constraints.values())
    ]
    return trials, [_point(study, t.values) for t in trials]


def _point(study: optuna.Study, values: Sequence[float]) -> tuple[float, float]:
    """A trial's objective values as a (quality, cost) point: quality maximised, cost minimised."""
    signs = [1 if d == optuna.study.StudyDirection.MAXIMIZE else -1 for d in study.directions]
    return signs[0] * values[0], -signs[1] * values[1]


def front(
    study: optuna.Study, snapshot: list[optuna.trial.FrozenTrial] | None = None
) -> list[optuna.trial.FrozenTrial]:
    """Non-dominated feasible complete trials (duplicates collapsed to their first trial), of the study
    as it is now or of ``snapshot`` (its trials read once, by a caller that decides on the same list)."""
    trials, points = _candidates(study, snapshot)
    return sorted((trials[i] for i in pareto_front(points)), key=lambda t: t.values[1])


def dominated_by(study: optuna.Study, values: Sequence[float]) -> optuna.trial.FrozenTrial | None:
    """A front member that dominates a trial with these objective ``values`` (the first found), or None.
    A trial dominated when it completes stays off the front: trials only join it."""
    trials, points = _candidates(study)
    mine = _point(study, values)
    return next((trials[i] for i in pareto_front(points) if dominates(points[i], mine)), None)


def near_front_trials(study: optuna.Study, margin: float, most: int) -> list[optuna.trial.FrozenTrial]:
    """Up to ``most`` complete trials off the front whose single run is within ``margin`` of quality of
    every trial that dominates it (``pareto.near_front``): one noisy run cannot put them behind."""
    trials, points = _candidates(study)
    return [trials[i] for i in near_front(points, margin, most)]


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


def stored_space(study: optuna.Study) -> Any:
    """The SearchSpace the study was run with, as it records it (None for a study that does not): its
    parsed space when stored (rebuilt from that data and checked, no YAML read), else its YAML text,
    parsed once per process, with the files it names relative to where the space was."""
    from nas.tasks import space_from_data

    data = stored_study_attrs(study).get(SPACE_DATA_ATTR)
    if not isinstance(data, dict):
        return _parsed_text(study)
    try:
        return space_from_data(data)
    except SpaceError as e:  # a value out of its kind or bounds
        raise StudyDataError(
            f"study {study.study_name!r}: its record of its search space ({SPACE_DATA_ATTR!r}) was changed "
            f"by hand or by another tool: {e}"
        ) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StudyDataError(
            f"study {study.study_name!r}: attribute {SPACE_DATA_ATTR!r} cannot be read as a search space "
            f"({e.__class__.__name__}: {e}); the storage was changed by hand or by another tool"
        ) from None


_PARSED: dict[tuple[str, str], Any] = {}  # (space path, its text) -> the space: parsed once per process


def _parsed_text(study: optuna.Study) -> Any:
    """A study made before it stored its parsed space: its YAML text, parsed."""
    from nas.tasks.spacefile import parse_space

    text = study_attr(study, "space", str, "")
    if not text:
        return None
    path = study_attr(study, "space_path", str, "") or "space.yaml"
    if (path, text) not in _PARSED:
        _PARSED[(path, text)] = parse_space(text, path, Path(path).parent)  # its files: from where it was
    return _PARSED[(path, text)]


space_of = stored_space


def num_classes_of(study: optuna.Study, space: Any) -> int:
    """Classes of the study's models: as the search found them in the data, else the space's, else 10."""
    n = study_attr(study, "num_classes", int, None, (1, MAX_CLASSES))
    return n or (space.num_classes if space else None) or 10


MAX_CLASSES = 100_000  # a model's classes (its head's width)
