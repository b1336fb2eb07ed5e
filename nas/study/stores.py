"""The study's artifact store (Optuna's ``optuna.artifacts``): where the weights of the front go. Its
location is a study attribute, so any directory and any machine that reaches the storage and the store
finds them: a folder (made absolute; the default is ``runs/<study>/artifacts``), ``s3://bucket[/prefix]``
or ``gs://bucket[/prefix]``. Imports nothing heavy: ``nas search`` checks ``--artifacts`` before torch
loads."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nas.core.errors import UserError

ARTIFACTS_DIR = "artifacts"  # the default store: runs/<study>/artifacts
STORE_ATTR = "artifact_store"  # study user attribute: where the study's artifacts are (a folder or a URL)
CLOUD = {"s3": "boto3", "gs": "google-cloud-storage"}  # store URL scheme -> the package it needs
HOST_ATTR = "artifact_store_host"  # study user attribute: the machine whose folder a folder store is


class StoreError(UserError):
    """The artifact store cannot be opened, written or read."""


def store_location(given: str | None, default_dir: Path) -> str:
    """``--artifacts`` as the study records it: ``s3://bucket[/prefix]``, ``gs://bucket[/prefix]``, or a
    folder made absolute (so another directory finds it); ``default_dir`` when not given."""
    if given is None:
        return str(Path(default_dir).resolve())
    scheme, sep, rest = given.partition("://")
    if sep:
        bucket = rest.split("/", 1)[0]
        if scheme not in CLOUD or not bucket:
            raise UserError(
                f"--artifacts: {given!r} is not a store this tool opens; expected a folder, "
                "s3://BUCKET[/PREFIX] or gs://BUCKET[/PREFIX]"
            )
        return given.rstrip("/")
    if not given.strip() or "\0" in given:
        raise UserError(f"--artifacts: {given!r} is not a folder; expected a folder, s3://BUCKET or gs://BUCKET")
    path = Path(given).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"--artifacts: {given} is a file; expected a folder for the study's artifacts")
    return str(path)


class _Prefixed:
    """An Optuna artifact store whose ids are kept under ``prefix/`` (Optuna's cloud stores write at
    the bucket's top level)."""

    def __init__(self, store: Any, prefix: str) -> None:
        self.store, self.prefix = store, prefix.strip("/") + "/"

    def open_reader(self, artifact_id: str) -> Any:
        return self.store.open_reader(self.prefix + artifact_id)

    def write(self, artifact_id: str, content_body: Any) -> None:
        self.store.write(self.prefix + artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        self.store.remove(self.prefix + artifact_id)


def open_store(location: str, create: bool = False) -> Any:
    """The Optuna artifact store at ``location`` (as ``store_location`` wrote it); with ``create`` (a new
    study's store) a folder is made. A folder store writes each file under a temporary name and renames
    it when whole, so a process killed in an upload leaves no partial artifact under the real name."""
    import optuna.artifacts as oa

    scheme, sep, rest = location.partition("://")
    if not sep:
        if create:
            try:
                Path(location).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"--artifacts: cannot make the folder {location} ({e})") from None
        elif not Path(location).is_dir():
            raise StoreError(
                f"the artifact store {location} is not there (a deleted folder, or a share not mounted here); it is "
                "not recreated empty: restore or mount it, or give its new place with --artifacts"
            )
        return _AtomicFolder(location)
    bucket, _, prefix = rest.partition("/")
    try:
        store = oa.Boto3ArtifactStore(bucket) if scheme == "s3" else oa.GCSArtifactStore(bucket)
    except ImportError:
        raise UserError(
            f"the artifact store {location} needs the {CLOUD[scheme]} package: pip install {CLOUD[scheme]}"
        ) from None
    return _Prefixed(store, prefix) if prefix else store


PARTIAL = ".partial-"  # a file being written into a folder store: <id>.partial-<host>-<pid>-<random>


def _AtomicFolder(location: str) -> Any:  # noqa: N802 (a class made on first use: optuna is imported late)
    import optuna.artifacts as oa

    class AtomicFolder(oa.FileSystemArtifactStore):
        def write(self, artifact_id: str, content_body: Any) -> None:
            import os
            import shutil

            final = Path(self._base_path) / artifact_id
            tmp = final.with_name(f"{final.name}{PARTIAL}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            try:
                with open(tmp, "wb") as f:
                    shutil.copyfileobj(content_body, f)
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)

    return AtomicFolder(location)


def leftovers(folders: list[Path]) -> list[Path]:
    """Files and folders an upload killed on this machine left behind: ``<id>.partial-<host>-<pid>-...``
    in a folder store and ``.upload-<host>-<pid>-...`` scratch folders, whose process is gone (another
    live process's are its own)."""

    host = socket.gethostname()
    found = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            mark = PARTIAL if PARTIAL in p.name else (UPLOAD if p.name.startswith(UPLOAD) else None)
            if mark is None:
                continue
            owner = p.name.split(mark, 1)[1]
            who, _, pid = owner.rpartition("-")[0].rpartition("-")
            if who == host and pid.isdigit() and not _alive(int(pid)):
                found.append(p)
    return found


UPLOAD = ".upload-"  # the scratch folder a trial's weights are saved in before the upload


def upload_prefix() -> str:
    import os

    return f"{UPLOAD}{socket.gethostname()}-{os.getpid()}-"


@contextlib.contextmanager
def staged(scratch: Path) -> Iterator[Path]:
    """A fresh folder under ``scratch`` for a file on its way to or from the store, removed afterwards;
    named (``upload_prefix``) so that what a killed process left is found by ``leftovers``."""
    import tempfile

    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=upload_prefix(), dir=scratch) as tmp:
        yield Path(tmp)


def upload(store: Any, location: str, target: Any, path: Path, what: str) -> str:
    """Upload ``path`` to ``store`` (at ``location``) for ``target`` (a study or a trial); its artifact
    id. A store that cannot be written is a StoreError naming ``what`` and where."""
    from optuna.artifacts import upload_artifact

    try:
        return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=target)
    except Exception as e:
        raise StoreError(
            f"could not upload {what} to the artifact store {location}: {e.__class__.__name__}: {e}"
        ) from None


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def study_store(study: Any, given: str | None, default_dir: Path) -> str:
    """The store of ``study``: the one it records (which must still be there); a new study (or one made
    before the store) records ``given``, else ``default_dir``, once a small file was written to it and
    removed (an unwritable store is named now and never recorded). A different ``given`` for a study that
    has one is refused (its weights would be split between two stores)."""
    stored = study.user_attrs.get(STORE_ATTR)
    wanted = None if given is None else store_location(given, default_dir)
    if isinstance(stored, str) and stored:
        if wanted is not None and wanted != stored:
            raise UserError(
                f"--artifacts: study {study.study_name!r} keeps its artifacts in {stored}, not {wanted}; "
                "leave --artifacts out to use that store, or choose another --study"
            )
        probe(open_store(stored), stored)
        return stored
    location = wanted or store_location(None, default_dir)
    probe(open_store(location, create=True), location)
    study.set_user_attr(STORE_ATTR, location)
    if "://" not in location:
        study.set_user_attr(HOST_ATTR, socket.gethostname())
    return location


def folder_elsewhere(study: Any, location: str) -> str | None:
    """A warning when ``location`` is a folder recorded by another machine: written here, it is this
    machine's own folder of that path unless it is a shared mount (None otherwise)."""
    host = study.user_attrs.get(HOST_ATTR)
    if "://" in location or not isinstance(host, str) or host == socket.gethostname():
        return None
    return (
        f"study {study.study_name!r} keeps its artifacts in the folder {location}, recorded on {host}: on this machine "
        "that is a folder of its own unless the path is a shared mount; export then finds only the weights of "
        "trials run where the folder is. Several machines: give the study an s3:// or gs:// store (--artifacts) "
        "when it is made"
    )


def probe(store: Any, location: str) -> None:
    """Write and remove a small file in ``store``: a store that cannot be written is named now, before a
    trial trains, not after."""
    import io

    name = f"probe-{uuid.uuid4().hex}"
    try:
        store.write(name, io.BytesIO(b"probe"))
        store.remove(name)
    except Exception as e:
        raise StoreError(
            f"--artifacts: cannot write to the artifact store {location} ({e.__class__.__name__}: {e}); "
            "give a folder you can write to, or a bucket with credentials"
        ) from None


def dashboard_hint(storage: str, location: str) -> str:
    """The optuna-dashboard command that shows the study with its artifacts."""
    import shlex

    if "://" in location:  # optuna-dashboard opens cloud stores through its config file
        return (
            f"optuna-dashboard {shlex.quote(storage)}  (the weights are in {location}; the dashboard opens a "
            "cloud store from its config file, and only at a bucket's top level)"
        )
    return f"optuna-dashboard {shlex.quote(storage)} --artifact-dir {shlex.quote(location)}"
