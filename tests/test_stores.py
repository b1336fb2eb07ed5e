"""The study's artifact store (nas.study.stores): the forms --artifacts takes, one store per study, a store that
cannot be written named before any training, a prefix for cloud buckets."""

import io
import socket

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore

from nas.core.errors import UserError
from nas.study.stores import (
    HOST_ATTR,
    STORE_ATTR,
    StoreError,
    _Prefixed,
    dashboard_hint,
    folder_elsewhere,
    open_store,
    probe,
    store_location,
    study_store,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_locations_are_absolute_folders_or_cloud_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert store_location(None, tmp_path / "runs" / "s" / "artifacts") == str(tmp_path / "runs" / "s" / "artifacts")
    assert store_location("rel/store", tmp_path) == str(tmp_path / "rel" / "store"), "made absolute"
    assert store_location("s3://bucket/pre/fix/", tmp_path) == "s3://bucket/pre/fix"
    assert store_location("gs://b", tmp_path) == "gs://b"
    (tmp_path / "file").write_text("x")
    for bad, says in [
        ("ftp://host/x", "not a store this tool opens"),
        ("s3://", "not a store this tool opens"),
        ("", "is not a folder"),
        ("a\0b", "is not a folder"),
        (str(tmp_path / "file"), "is a file"),
    ]:
        with pytest.raises(UserError, match=says):
            store_location(bad, tmp_path)


def test_a_study_keeps_the_store_it_was_made_with(tmp_path):
    st = optuna.create_study(study_name="s")
    first = study_store(st, None, tmp_path / "a")
    assert first == str(tmp_path / "a") and st.user_attrs[STORE_ATTR] == first
    assert st.user_attrs[HOST_ATTR] == socket.gethostname()
    assert study_store(st, None, tmp_path / "b") == first, "resumed elsewhere: the recorded store"
    assert study_store(st, str(tmp_path / "a"), tmp_path / "b") == first, "the same store named again"
    with pytest.raises(UserError, match=r"keeps its artifacts in .*/a, not .*/other; leave --artifacts out"):
        study_store(st, str(tmp_path / "other"), tmp_path / "b")
    assert folder_elsewhere(st, first) is None
    st.set_user_attr(HOST_ATTR, "another-host")
    assert "recorded on another-host" in folder_elsewhere(st, first)
    assert folder_elsewhere(st, "s3://bucket") is None


def test_a_store_that_cannot_be_written_is_named_before_training(tmp_path):
    store = open_store(str(tmp_path / "ok"), create=True)
    probe(store, "ok")  # writes and removes its file
    assert list((tmp_path / "ok").iterdir()) == []

    class ReadOnly(FileSystemArtifactStore):  # as a read-only mount or a bucket without write access
        def write(self, artifact_id, content_body):
            raise PermissionError(13, "Permission denied")

    with pytest.raises(StoreError, match=r"cannot write to the artifact store /ro \(PermissionError"):
        probe(ReadOnly(tmp_path), "/ro")
    (tmp_path / "f").write_text("x")
    with pytest.raises(StoreError, match="cannot make the folder"):
        open_store(str(tmp_path / "f" / "sub"), create=True)


def test_a_prefix_keeps_ids_under_it(tmp_path):
    store = _Prefixed(FileSystemArtifactStore(tmp_path), "runs/r18/")
    (tmp_path / "runs" / "r18").mkdir(parents=True)
    store.write("abc", io.BytesIO(b"weights"))
    assert (tmp_path / "runs" / "r18" / "abc").read_bytes() == b"weights"
    assert store.open_reader("abc").read() == b"weights"
    store.remove("abc")
    assert not (tmp_path / "runs" / "r18" / "abc").exists()


def test_the_dashboard_command_names_the_store():
    assert dashboard_hint("sqlite:///runs/s/study.db", "/x/y z") == (
        "optuna-dashboard sqlite:///runs/s/study.db --artifact-dir '/x/y z'"
    )
    assert "only at a bucket's top level" in dashboard_hint("postgresql://h/db", "s3://b/p")
