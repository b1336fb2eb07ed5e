"""Optuna storage that rides out a briefly locked or unreachable database: every storage call is
retried with exponential backoff on transient database errors, and SQLite waits for a lock instead
of failing at once. Used for every study the commands open."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import optuna
from optuna.storages import BaseStorage, RDBStorage

log = logging.getLogger(__name__)

ATTEMPTS = 8  # about 25 s of waiting in all before giving up
FIRST_WAIT_S = 0.2
MAX_WAIT_S = 8.0
SQLITE_LOCK_TIMEOUT_S = 30


def _transient(e: BaseException) -> bool:
    """Lost connections, locked databases, failed connects: errors a later retry can succeed after."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated):
        return True
    cause = e.__cause__ or e.__context__
    return isinstance(e, optuna.exceptions.StorageInternalError) and cause is not None and _transient(cause)


def retry(fn: Callable[[], Any], what: str, *, attempts: int = ATTEMPTS, first_wait: float = FIRST_WAIT_S,
          sleep: Callable[[float], None] = time.sleep, on_retry: Callable[[], None] = lambda: None) -> Any:
    """``fn()``; on a transient database error, again after ``first_wait`` s, doubling up to
    MAX_WAIT_S, ``attempts`` times in all; then the error is raised."""
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == attempts or not _transient(e):
                raise
            on_retry()
            log.warning("storage %s failed (%s); retry %d of %d in %.1f s", what, e.__class__.__name__, attempt,
                        attempts - 1, wait)
            sleep(wait)
            wait = min(2 * wait, MAX_WAIT_S)
    raise AssertionError("unreachable")


class RetryingStorage(BaseStorage):
    """Delegates to ``backend``; every call is retried on transient database errors (see ``retry``)."""

    def __init__(self, backend: BaseStorage, *, attempts: int = ATTEMPTS, first_wait: float = FIRST_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep):
        self.backend, self.attempts, self.first_wait, self.sleep = backend, attempts, first_wait, sleep
        self.retries = 0  # transient failures ridden out so far

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        def count() -> None:
            self.retries += 1

        return retry(lambda: getattr(self.backend, name)(*args, **kwargs), name, attempts=self.attempts,
                     first_wait=self.first_wait, sleep=self.sleep, on_retry=count)

    def remove_session(self) -> None:
        self.backend.remove_session()


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(BaseStorage, name).__doc__
    return method


for _name in BaseStorage.__abstractmethods__:
    setattr(RetryingStorage, _name, _delegate(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def open_storage(url: str) -> RetryingStorage:
    """The storage behind an Optuna storage URL, with retries (connecting included) and, for SQLite,
    a lock timeout."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    return RetryingStorage(retry(lambda: RDBStorage(url, engine_kwargs=engine_kwargs), "connect"))
