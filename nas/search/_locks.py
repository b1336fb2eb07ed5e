"""Locks that let several workers share one study.

``StudyLock``: held while a worker decides whether another trial is needed and asks for it, so that
N workers end with exactly the number of trials asked for and never pop the same waiting trial.
SQLite studies (one machine) use a file lock beside the database; PostgreSQL studies (several
machines) use a session advisory lock, which the server releases if the worker's connection dies.

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
            from sqlalchemy import text
            from sqlalchemy.exc import DBAPIError

            from nas.study.storage import retry

            def connect() -> Any:
                conn = self.engine.connect()
                try:  # a dead machine's session (and its lock) is dropped in about 20 s, not hours
                    for setting in ("tcp_keepalives_idle", "tcp_keepalives_interval"):
                        conn.execute(text(f"SET {setting} = 5"))
                    conn.execute(text("SET tcp_keepalives_count = 3"))
                    conn.commit()
                except BaseException:
                    conn.close()
                    raise
                return conn

            conn: Any = None

            def try_lock() -> bool:
                nonlocal conn
                if conn is None:
                    conn = connect()
                try:
                    got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar())
                    conn.commit()
                    return got
                except DBAPIError:  # a broken connection: the next attempt opens a new one
                    conn.invalidate()
                    conn = None
                    raise

            locked = False
            try:
                # polled, not blocking in the driver, so Ctrl-C stays responsive; the database briefly
                # unreachable: waited for like every storage call
                while not retry(try_lock, "study lock"):
                    time.sleep(LOCK_POLL_S)
                locked = True
                yield
            finally:
                if conn is not None:
                    try:
                        if locked:
                            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                            conn.commit()
                        conn.close()
                    except DBAPIError:  # the connection died, and the server dropped its lock with it
                        log.warning("the study lock's connection was lost; the server released the lock")
                        conn.invalidate()
        else:
            yield


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
