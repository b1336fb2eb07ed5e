"""Locks that let several workers share one study.

``StudyLock``: held while a worker decides whether another trial is needed and asks for it, so that
N workers end with exactly the number of trials asked for and never pop the same waiting trial.
SQLite studies (one machine) use a file lock beside the database; PostgreSQL studies (several
machines) a row with a lease (``_LeaseLock``): it is on disk, so a server restart inside the section
releases nothing, and a holder that died releases it when its lease runs out.

``LatencyGate``: latency is measured while no other worker on this machine trains. Training workers
hold a shared lock during every training and validation batch; a measurement takes the exclusive
lock, after announcing itself on a second lock so that a stream of batches cannot starve it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
LOCK_POLL_S = 0.1


class _FileLock:
    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def _open(self) -> int:
        if self.fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self.fd

    def lock(self, shared: bool = False) -> None:
        fcntl.flock(self._open(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)

    def unlock(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __getstate__(self) -> dict[str, Any]:  # a file descriptor does not travel to another process
        return {"path": self.path, "fd": None}


class StudyLock:
    """Mutual exclusion between every worker of a study, on this machine or (PostgreSQL) any machine."""

    def __init__(self, storage_url: str, study_name: str, engine: Any = None):
        self.kind = "none"
        self.file: _FileLock | None = None
        self.engine = engine
        self.key = int.from_bytes(hashlib.sha256(f"nas:{study_name}".encode()).digest()[:8], "big", signed=True)
        if storage_url.startswith("sqlite:///") and not storage_url.endswith(":memory:"):
            self.kind = "file"
            self.file = _FileLock(Path(storage_url[len("sqlite:///") :] + ".lock"))
        elif storage_url.startswith("postgresql") and engine is not None:
            self.kind = "postgresql"
        else:
            log.warning(
                "no cross-worker lock for %s: with several workers the study may end with a few "
                "trials more than asked for",
                storage_url.split("://")[0],
            )

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        if self.kind == "file":
            assert self.file is not None
            self.file.lock()
            try:
                yield
            finally:
                self.file.unlock()
        elif self.kind == "postgresql":
            lease = _LeaseLock(self.engine, self.key)
            lease.acquire()
            try:
                yield
            finally:
                lease.release()
        else:
            yield


LOCK_TABLE = "nas_study_locks"


def lease_s() -> float:
    """How long a study lock lasts without renewal: longer than the storage's retry budget (a holder
    riding out a database outage keeps it), short enough that a dead holder's lock frees itself."""
    from nas.study.storage import retry_budget_s

    return retry_budget_s() + 30.0


class _LeaseLock:
    """One study's lock on PostgreSQL: a row of ``nas_study_locks`` (key, holder, expiry) taken with an
    atomic insert-or-update that succeeds only where the row is free or its lease ran out, renewed by a
    thread every few seconds while held, and freed by its holder. Being a row on disk, it survives a
    server restart inside the section (a session's advisory lock would be released with the session and
    let another worker in); a holder that died frees it when its lease runs out. Every statement is
    retried like the storage's calls. A holder that could not renew before its lease ran out says so."""

    _created: set[str] = set()  # databases where the table is known to exist (per process)

    def __init__(self, engine: Any, key: int):
        import socket
        import threading
        import uuid

        self.engine, self.key = engine, key
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = lease_s()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def _run(self, sql: str, what: str, **params: Any) -> Any:
        from sqlalchemy import text

        from nas.study.storage import retry

        def go() -> Any:
            with self.engine.begin() as conn:
                url = str(self.engine.url)
                if url not in _LeaseLock._created:
                    conn.execute(
                        text(
                            f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} "
                            "(key BIGINT PRIMARY KEY, holder TEXT, expires TIMESTAMPTZ)"
                        )
                    )
                    _LeaseLock._created.add(url)
                result = conn.execute(text(sql), {"k": self.key, "me": self.me, "s": self.lease, **params})
                return result.fetchall() if result.returns_rows else []

        return retry(go, what, transient=_transient_or_race)

    def acquire(self) -> None:
        take = (
            f"INSERT INTO {LOCK_TABLE} (key, holder, expires) VALUES (:k, :me, now() + :s * interval '1 second') "
            f"ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, expires = EXCLUDED.expires "
            f"WHERE {LOCK_TABLE}.holder IS NULL OR {LOCK_TABLE}.expires < now() RETURNING holder"
        )
        while not self._run(take, "study lock"):  # polled, so Ctrl-C stays responsive
            time.sleep(LOCK_POLL_S)
        import threading

        self._thread = threading.Thread(target=self._renew, name="study-lock-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        renew = (
            f"UPDATE {LOCK_TABLE} SET expires = now() + :s * interval '1 second' "
            "WHERE key = :k AND holder = :me RETURNING holder"
        )
        while not self._stop.wait(RENEW_S):
            try:
                held = self._run(renew, "study lock lease")
            except Exception as e:  # the database down past the retries: the lease may run out
                log.warning("could not renew the study lock's lease: %s", e)
                continue
            if not held:
                self.lost = True
                log.error(
                    "the study lock's lease ran out while this worker held it (the database was unreachable for "
                    "over %.0f s); another worker may have entered its section",
                    self.lease,
                )
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._run(f"UPDATE {LOCK_TABLE} SET holder = NULL WHERE key = :k AND holder = :me", "study lock release")


RENEW_S = 5.0  # a held lock's lease is renewed this often


def _transient_or_race(e: BaseException) -> bool:
    """Transient as for every storage call; also two processes creating the lock table at once."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    from nas.study.storage import _transient

    return _transient(e) or isinstance(e, (IntegrityError, ProgrammingError))


class LatencyGate:
    """Reader-writer lock between training batches (shared) and latency measurements (exclusive) of
    the workers on this machine, in ``folder``."""

    def __init__(self, folder: Path):
        self.rw = _FileLock(folder / "latency.rw.lock")
        self.intent = _FileLock(folder / "latency.intent.lock")

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        self.intent.lock()  # new batches wait from here on
        try:
            self.rw.lock()  # batches already running finish
            try:
                yield
            finally:
                self.rw.unlock()
        finally:
            self.intent.unlock()

    def batch_start(self) -> None:
        self.intent.lock(shared=True)  # waits while a measurement is announced or running
        self.intent.unlock()
        self.rw.lock(shared=True)

    def batch_end(self) -> None:
        self.rw.unlock()
