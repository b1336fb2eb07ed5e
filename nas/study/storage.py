"""Optuna storage that rides out a briefly locked or unreachable database: every storage call is
retried with exponential backoff on transient database errors, and SQLite waits for a lock instead
of failing at once. Used for every study the commands open."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage  # what optuna.storages.get_storage wraps RDB with

from nas.core.errors import StorageUnavailable, UserError

log = logging.getLogger(__name__)

ATTEMPTS = 8  # about 21 s of waiting in all before giving up (retry_budget_s)
ATTEMPTS_ENV = "NAS_STORAGE_ATTEMPTS"  # changes ATTEMPTS; every worker of a study must use the same value
FIRST_WAIT_S = 0.2
MAX_WAIT_S = 8.0
SQLITE_LOCK_TIMEOUT_S = 30


def configured_attempts() -> int:
    """Attempts per storage call: ``$NAS_STORAGE_ATTEMPTS`` (1 to 20), else ``ATTEMPTS``. The budget
    also sets how long a silent trial waits before it counts as dead (``grace_s``), so every worker of
    a study must see the same value."""
    raw = os.environ.get(ATTEMPTS_ENV)
    if raw is None:
        return ATTEMPTS
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 20:
        raise UserError(
            f"${ATTEMPTS_ENV}: {raw!r} is not allowed; an integer from 1 to 20 (attempts per storage "
            f"call; default {ATTEMPTS}, about {retry_budget_s(ATTEMPTS):.0f} s of retrying)"
        )
    return int(raw)


def retry_budget_s(attempts: int | None = None, first_wait: float = FIRST_WAIT_S) -> float:
    """How long ``retry`` waits in all before giving up (about 20.6 s with the default attempts)."""
    waits, wait = 0.0, first_wait
    for _ in range((configured_attempts() if attempts is None else attempts) - 1):
        waits += wait
        wait = min(2 * wait, MAX_WAIT_S)
    return waits


def grace_s(heartbeat_s: int) -> int:
    """Silence after which a running trial counts as dead: 3 heartbeats, plus the time a heartbeat may
    spend retrying through a database outage, so that an outage the retries ride out never makes a
    live trial look dead."""
    return 3 * heartbeat_s + math.ceil(retry_budget_s())


def _transient(e: BaseException) -> bool:
    """Lost connections, locked databases, failed connects: errors a later retry can succeed after.
    Also what wraps one: Optuna's StorageInternalError, and SQLAlchemy's PendingRollbackError (the
    session touched its connection again after losing it; a new session, as a retry opens, works)."""
    from sqlalchemy.exc import DBAPIError, OperationalError, PendingRollbackError

    if isinstance(e, OperationalError) or (isinstance(e, DBAPIError) and e.connection_invalidated):
        return True
    cause = e.__cause__ or e.__context__
    wrapper = isinstance(e, (optuna.exceptions.StorageInternalError, PendingRollbackError))
    return wrapper and cause is not None and cause is not e and _transient(cause)


def _transient_at_connect(e: BaseException) -> bool:
    """Also transient when opening: another process creating the same empty database's tables at the
    same moment (every machine of a search starting together) makes one of the two fail with an
    integrity error; once the other has committed, opening again finds the tables."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return _transient(e) or isinstance(e, (IntegrityError, ProgrammingError))


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e``, then the error it was raised from or during, and so on to the innermost (each once)."""
    seen: set[int] = set()
    link: BaseException | None = e
    while link is not None and id(link) not in seen:
        yield link
        seen.add(id(link))
        link = link.__cause__ or link.__context__


def interrupt_in(e: BaseException) -> BaseException | None:
    """The stop asked for by a signal (``signals.Interrupted``, KeyboardInterrupt) that a database error
    wraps, if one does: a signal handled while the driver ran comes back as the driver's error (SQLite's
    "interrupted"), which must stop the process, not be retried as a lost connection."""
    from nas.core.signals import Interrupted

    return next((link for link in _chain(e) if isinstance(link, (Interrupted, KeyboardInterrupt))), None)


def cause_of(e: BaseException) -> str:
    """What a storage error came from, for a log line: its class and, when it wraps another error, the
    innermost one's class; then the first line of the innermost message (the database's own words)."""
    *_, root = _chain(e)
    first = (str(root).strip().splitlines() or [""])[0][:200]
    name = e.__class__.__name__
    if root.__class__.__name__ != name:  # not SQLAlchemy's OperationalError around the driver's, nor e itself
        name = f"{name} from {root.__class__.__name__}"
    return f"{name}: {first}" if first else name


def retry(
    fn: Callable[[], Any],
    what: str,
    *,
    attempts: int | None = None,
    first_wait: float = FIRST_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[], None] = lambda: None,
    transient: Callable[[BaseException], bool] = _transient,
) -> Any:
    """``fn()``; on a transient database error, again after ``first_wait`` s, doubling up to
    MAX_WAIT_S, ``attempts`` times in all; then ``StorageUnavailable`` names the call, the time spent
    and the last error. Any other error is raised as it is, at once."""
    wait, attempts = first_wait, (configured_attempts() if attempts is None else attempts)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:
            stop = interrupt_in(e)
            if stop is not None:  # a Ctrl-C or SIGTERM inside the driver, wrapped as a database error
                raise stop from None
            if not transient(e):
                raise
            if attempt == attempts:
                raise StorageUnavailable(
                    f"the study's database did not answer ({what}) through {attempts} attempts over "
                    f"{retry_budget_s(attempts, first_wait):.1f} s "
                    f"(${ATTEMPTS_ENV} sets the attempts): {cause_of(e)}"
                ) from e
            on_retry()
            log.warning(
                "storage %s failed (%s); retry %d of %d in %.1f s",
                what,
                cause_of(e),
                attempt,
                attempts - 1,
                wait,
            )
            sleep(wait)
            wait = min(2 * wait, MAX_WAIT_S)
    raise AssertionError("unreachable")


class RetryingStorage(BaseStorage):
    """Delegates to ``backend``; every call is retried on transient database errors (see ``retry``).
    The backend's heartbeat calls are passed through for ``Heartbeat`` and ``search.fail_stale``.
    Not an Optuna ``BaseHeartbeat``: Optuna runs heartbeats only inside ``optimize`` (and warns on
    every ``ask`` outside it); the search runs its own. ``database`` is the ``RDBStorage`` where
    ``backend`` is a cache in front of it (``open_storage``): its engine, session and heartbeat
    interval."""

    def __init__(
        self,
        backend: BaseStorage,
        *,
        attempts: int | None = None,
        first_wait: float = FIRST_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        database: BaseStorage | None = None,
    ):
        self.backend, self.first_wait, self.sleep = backend, first_wait, sleep
        self.database = backend if database is None else database
        self.attempts = configured_attempts() if attempts is None else attempts
        self.retries = 0  # transient failures ridden out so far

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        def count() -> None:
            self.retries += 1

        return retry(
            lambda: getattr(self.backend, name)(*args, **kwargs),
            name,
            attempts=self.attempts,
            first_wait=self.first_wait,
            sleep=self.sleep,
            on_retry=count,
        )

    def remove_session(self) -> None:
        self.database.remove_session()

    @property
    def engine(self) -> Any:
        return getattr(self.database, "engine", None)

    def record_heartbeat(self, trial_id: int) -> None:
        self._call("record_heartbeat", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self._call("_get_stale_trial_ids", study_id)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """Running trials of the study whose heartbeat is older than the grace period."""
        return self._get_stale_trial_ids(study_id)

    def get_heartbeat_interval(self) -> int | None:
        return getattr(self.database, "heartbeat_interval", None)


def _delegate(name: str) -> Callable[..., Any]:
    def method(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = getattr(BaseStorage, name).__doc__
    return method


for _name in BaseStorage.__abstractmethods__:
    setattr(RetryingStorage, _name, _delegate(_name))
RetryingStorage.__abstractmethods__ = frozenset()


def open_storage(url: str, heartbeat_s: int | None = None) -> RetryingStorage:
    """The storage behind an Optuna storage URL, with retries (connecting included) and, for SQLite,
    a lock timeout. With ``heartbeat_s``, running trials record a heartbeat that often (``Heartbeat``),
    and one silent for ``grace_s`` counts as stale (``search.fail_stale`` fails it and retries it once).

    Reads of the study's trials go through Optuna's own cache (what ``optuna.storages.get_storage``
    puts in front of every ``RDBStorage``): a finished trial cannot change, so it is read from the
    database once, and each later read asks only for the running trials and those added since. Without
    it every read loads every trial with all its attributes: 0.27 s at 317 trials, read about 50 times
    a trial (sampler, pruner, display), which made a 200-trial search's time outside a trial's batches
    grow from 1.7 s (trials 0 to 79) to 4.6 s (trials 240 to 319)."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT_S}}
    heartbeat: dict[str, Any] = {}
    if heartbeat_s is not None:
        heartbeat = {"heartbeat_interval": heartbeat_s, "grace_period": grace_s(heartbeat_s)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        backend = retry(
            lambda: RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat),
            "connect",
            transient=_transient_at_connect,
        )
    return RetryingStorage(_CachedStorage(backend), database=backend)


class Heartbeat:
    """A running trial's heartbeat: the first one recorded before ``start`` returns (a trial without
    any would never count as stale), then one every interval from a daemon thread, which neither keeps
    the process alive at exit nor dies on a database error (it logs it and tries again next time)."""

    def __init__(self, storage: RetryingStorage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.interval = storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval is None:
            return
        self.storage.record_heartbeat(self.trial_id)
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.trial_id}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as e:  # after the retries: the next beat tries again
                log.warning("heartbeat of trial id %d not recorded: %s: %s", self.trial_id, e.__class__.__name__, e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
