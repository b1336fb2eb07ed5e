"""A study's starting network (``training.init: baseline`` or ``pretrained``): the plain network's weights
that every trial, every re-run (noise floor, confirmation) and ``nas train --from-start`` begins from.

It is made once per study (the search trains or reads it under the study's lock) and kept in the study's
artifact store, so workers on other machines fetch the same file; the study records its artifact id,
its SHA-256 and what it is (``StartRecord``, user attribute ``start``). Every reader downloads it and
checks the digest, the study it names and that every tensor is finite before anything trains from it:
a missing or damaged start is an error naming the study and the store, never a silent fresh start.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nas.core.artifacts import START_FILE, StartError, StartRecord, sha256_of
from nas.core.errors import UserError

START_ATTR = "start"  # study user attribute: the StartRecord of a warm-started study

__all__ = ["START_ATTR", "START_FILE", "StartError", "StartRecord", "fetch", "recorded", "save", "sha256_of"]


def recorded(study: Any) -> StartRecord | None:
    """The study's start record (None: none made yet, or a study that trains from scratch)."""
    from nas.study.studies import stored_study_attrs

    value = stored_study_attrs(study).get(START_ATTR)
    return None if value is None else StartRecord.from_value(value, f"study {study.study_name!r}")


def _metadata(study: Any) -> dict[str, str]:
    from nas.study.studies import uid_of

    return {"study": study.study_name, "study_uid": uid_of(study) or "", "role": "start"}


def save(
    study: Any, store: Any, location: str, state: Mapping[str, Any], record: StartRecord, scratch: Path
) -> StartRecord:
    """Upload ``state`` (the plain network's state dict) to the study's artifact ``store`` and record it
    on the study (``record`` with the artifact id and digest filled in). Called under the study's lock."""
    from nas.core.artifacts import save_state
    from nas.study.stores import staged, upload

    with staged(scratch) as tmp:
        path = save_state(state, tmp / START_FILE, _metadata(study))
        digest = sha256_of(path)
        artifact = upload(store, location, study, path, f"the starting network of study {study.study_name!r}")
    done = StartRecord(**{**record.to_dict(), "artifact": artifact, "sha256": digest})
    study.set_user_attr(START_ATTR, done.to_dict())
    return done


def fetch(study: Any, location: str, scratch: Path, record: StartRecord | None = None) -> dict[str, Any]:
    """The study's starting weights, downloaded from the artifact store at ``location`` into ``scratch``
    and checked (digest, study, finite values); a StartError naming the study and the store otherwise."""
    from nas.study.stores import staged

    record = record or recorded(study)
    name = study.study_name
    if record is None:
        raise StartError(f"study {name!r} trains from a starting network but records none (no {START_ATTR!r})")
    where = f"artifact {record.artifact} in the artifact store {location}"
    with staged(scratch) as tmp:  # one per reader: workers share the scratch folder
        return _fetched(study, location, record, tmp / START_FILE, where)


def _fetched(study: Any, location: str, record: StartRecord, path: Path, where: str) -> dict[str, Any]:
    from optuna.artifacts import download_artifact
    from safetensors import safe_open
    from safetensors.torch import load_file

    from nas.study.stores import open_store

    name = study.study_name
    fix = (
        "Nothing was trained from it. Point --artifacts at the store the study wrote to, or start a new "
        "study (--study NAME): its trials would start from another network"
    )
    try:
        download_artifact(artifact_store=open_store(location), file_path=str(path), artifact_id=record.artifact)
    except UserError:
        raise
    except Exception as e:  # ArtifactNotFound, a cloud store that cannot be reached, a folder that cannot be read
        raise StartError(
            f"study {name!r}: its starting network ({where}) cannot be read: {e.__class__.__name__}: "
            f"{str(e)[:300]}. {fix}"
        ) from None
    try:
        got = sha256_of(path)
        if got != record.sha256:
            raise StartError(
                f"study {name!r}: its starting network ({where}) is damaged or was replaced: SHA-256 {got[:16]}..., "
                f"the study recorded {record.sha256[:16]}.... {fix}"
            )
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        want = _metadata(study)
        wrong = [k for k in ("study", "study_uid") if want[k] and meta.get(k) != want[k]]
        if wrong:
            raise StartError(
                f"study {name!r}: {where} is the starting network of another study "
                f"({', '.join(f'{k} {meta.get(k)!r}' for k in wrong)}). {fix}"
            )
        state = load_file(str(path))
    finally:
        path.unlink(missing_ok=True)
    bad = next((k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())), None)
    if bad is not None:
        raise StartError(f"study {name!r}: its starting network ({where}) holds NaN or inf in {bad!r}. {fix}")
    return state


def study_start(study: Any, warm: bool, scratch: Path, artifacts: str | None = None) -> dict[str, Any] | None:
    """The starting weights of ``study`` for a reader after its search (re-runs of ``nas report
    --confirm``, ``nas export``): None where its trials trained from scratch (``warm`` false); fetched
    from its artifact store (``artifacts`` overrides where the study says it is) and checked otherwise."""
    if not warm:
        return None
    from nas.study.stores import STORE_ATTR, store_location
    from nas.study.studies import stored_study_attrs

    record = recorded(study)
    if record is None:
        raise StartError(
            f"study {study.study_name!r} starts its trials from a trained network, but its search has not made "
            "it yet (no trial has run); run nas search first"
        )
    location = store_location(artifacts, Path(".")) if artifacts else stored_study_attrs(study).get(STORE_ATTR)
    if not isinstance(location, str) or not location:
        raise StartError(f"study {study.study_name!r} does not say where its artifacts are; give --artifacts")
    return fetch(study, location, scratch, record)
