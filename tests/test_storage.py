"""The storage rides out a briefly locked or unreachable database (retries with backoff) and gives up
with the error when the database stays away."""

import sqlite3
import threading
import time

import optuna
import pytest
from sqlalchemy.exc import OperationalError

from nas.core.errors import StorageUnavailable
from nas.study.storage import RetryingStorage, open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Flaky(optuna.storages.InMemoryStorage):
    """Every call from outside fails ``failures`` times with a lost-connection error before it succeeds
    (calls the storage makes to itself go through)."""

    def __init__(self, failures: int):
        super().__init__()
        self.failures, self.pending, self.depth = failures, {}, 0

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name.startswith("_") or not callable(attr) or name in ("failures", "pending", "depth"):
            return attr

        def call(*args, **kwargs):
            key = (name, repr(args), repr(kwargs))
            if self.depth == 0:
                left = self.pending.setdefault(key, self.failures)
                if left:
                    self.pending[key] = left - 1
                    raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))
                self.pending.pop(key)
            self.depth += 1
            try:
                return attr(*args, **kwargs)
            finally:
                self.depth -= 1

        return call


def test_ask_and_tell_through_a_database_that_drops_every_call_twice(caplog):
    waits = []
    storage = RetryingStorage(Flaky(failures=2), sleep=waits.append)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    for i in range(3):
        trial = study.ask()
        trial.set_user_attr("arch", f"a{i}")
        study.tell(trial, [0.5 + i / 10, 1.0])
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE"] * 3
    assert storage.retries > 0 and waits[:2] == [0.2, 0.4], "exponential backoff"
    # each retry says which call failed and the database's own words
    assert (
        "storage create_new_study failed (OperationalError: (builtins.ConnectionError) server closed the "
        in (caplog.text)
        and "retry 1 of 7 in 0.2 s" in caplog.text
    ), caplog.text


def test_a_database_that_stays_away_raises_after_the_attempts():
    """After the last attempt: one error that names the call, the attempts, the time and the cause,
    which the command line prints in one line (exit code 1); an error that is not a lost connection
    is raised at once, unretried."""
    from nas.core.errors import exit_code_of
    from nas.study.storage import retry

    waits = []
    storage = RetryingStorage(Flaky(failures=100), attempts=4, sleep=waits.append)
    with pytest.raises(StorageUnavailable) as gave_up:
        optuna.create_study(storage=storage)
    assert waits == [0.2, 0.4, 0.8]
    assert str(gave_up.value).startswith(
        "the study's database did not answer (create_new_study) through 4 attempts over 1.4 s "
        "($NAS_STORAGE_ATTEMPTS sets the attempts): OperationalError: (builtins.ConnectionError) server closed"
    ), gave_up.value
    assert isinstance(gave_up.value.__cause__, OperationalError) and exit_code_of(gave_up.value) == 1

    def invalid():
        raise ValueError("not a lost connection")

    waits.clear()
    with pytest.raises(ValueError, match="not a lost connection"):
        retry(invalid, "set_trial_user_attr", attempts=4, sleep=waits.append)
    assert waits == []


def test_a_session_that_touched_its_lost_connection_again_is_retried():
    """Seen with a PostgreSQL server restarted under a search: the query loses its connection, the
    same session touches it again (PendingRollbackError), and Optuna wraps that in StorageInternalError.
    A retry opens a new session and succeeds; a rollback error with no lost connection behind it is
    not retried."""
    from sqlalchemy.exc import PendingRollbackError

    from nas.study.storage import cause_of, retry

    def chained(lost: bool) -> Exception:
        """StorageInternalError from PendingRollbackError, raised while handling a lost connection (or,
        with ``lost`` False, a ValueError), as SQLAlchemy and Optuna chain them."""
        try:
            try:
                if lost:
                    raise OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))
                raise ValueError("bad value")
            except Exception:  # the lost connection as context, not cause, as SQLAlchemy raises it
                raise PendingRollbackError("Can't reconnect until invalid transaction is rolled back")  # noqa: B904
        except PendingRollbackError as e:
            wrapped = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
            wrapped.__cause__ = e
            return wrapped

    calls, waits = [], []

    def get_all_trials():
        calls.append(1)
        if len(calls) == 1:
            raise chained(lost=True)
        return "trials"

    def no_connection_lost():
        raise chained(lost=False)

    assert retry(get_all_trials, "get_all_trials", attempts=4, sleep=waits.append) == "trials" and waits == [0.2]
    assert cause_of(chained(lost=True)) == (
        "StorageInternalError from OperationalError: (builtins.ConnectionError) server closed the connection"
    )
    with pytest.raises(optuna.exceptions.StorageInternalError):
        retry(no_connection_lost, "get_all_trials", attempts=4, sleep=waits.append)
    assert waits == [0.2]


def test_a_signal_inside_a_storage_call_stops_at_once_instead_of_being_retried():
    """Ctrl-C (or SIGTERM) while SQLite runs: the handler's exception comes back wrapped as SQLAlchemy's
    OperationalError inside Optuna's StorageInternalError, which looked like a lost connection: the
    search retried for about 20 s per write after a Ctrl-C. The stop is raised as itself, with no wait."""
    from nas.core.signals import Interrupted
    from nas.study.storage import retry

    def write():
        try:
            try:
                raise Interrupted("SIGINT")
            except Interrupted as stop:
                raise OperationalError("UPDATE trials", {}, Exception("interrupted")) from stop
        except OperationalError as e:
            raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from e

    waits = []
    with pytest.raises(Interrupted, match="SIGINT"):
        retry(write, "set_trial_user_attr", attempts=4, sleep=waits.append)
    assert waits == [], "no retry, no wait"


def test_sqlite_locked_by_another_writer_waits_instead_of_failing(tmp_path):
    path = tmp_path / "study.db"
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{path}"))
    lock = sqlite3.connect(path, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    release = threading.Timer(6.0, lock.rollback)  # longer than sqlite3's own 5 s default wait
    release.start()
    start = time.monotonic()
    trial = study.ask()  # blocks until the lock is released, then succeeds
    study.tell(trial, 1.0)
    assert time.monotonic() - start >= 5.5
    assert study.trials[0].state.name == "COMPLETE"
    release.join()
    lock.close()


def test_the_retry_budget_is_set_by_the_environment_and_sets_the_heartbeat_grace(monkeypatch):
    from nas.core.errors import UserError
    from nas.study.storage import grace_s, retry_budget_s

    assert retry_budget_s() == pytest.approx(20.6) and grace_s(10) == 51
    monkeypatch.setenv("NAS_STORAGE_ATTEMPTS", "3")
    waits = []
    storage = RetryingStorage(Flaky(failures=100), sleep=waits.append)
    with pytest.raises(StorageUnavailable, match="through 3 attempts over 0.6 s"):
        optuna.create_study(storage=storage)
    assert waits == [0.2, 0.4] and retry_budget_s() == pytest.approx(0.6) and grace_s(1) == 4
    for bad in ("0", "21", "many"):
        monkeypatch.setenv("NAS_STORAGE_ATTEMPTS", bad)
        with pytest.raises(UserError, match=f"NAS_STORAGE_ATTEMPTS: '{bad}' is not allowed; an integer from 1 to 20"):
            grace_s(1)


def test_finished_trials_are_read_once_and_another_process_writes_are_seen(tmp_path):
    """A search reads the study's trials about 50 times a trial (sampler, pruner, display): each read
    must fetch only what can have changed (running trials and new ones), not every trial again, or a
    long search slows down trial by trial. What another process writes must still be seen."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    writer = optuna.create_study(storage=open_storage(url), study_name="s", directions=["maximize", "minimize"])
    for i in range(30):
        writer.tell(writer.ask(), [i / 30, 1.0])
    storage = open_storage(url)  # a second process's view of the study
    study_id = storage.get_study_id_from_name("s")
    loaded = []
    fetch = storage.database._get_trials

    def counted(*args, **kwargs):
        rows = fetch(*args, **kwargs)
        loaded.append(len(rows))
        return rows

    storage.database._get_trials = counted
    assert len(storage.get_all_trials(study_id)) == 30
    running = writer.ask()
    seen = storage.get_all_trials(study_id, deepcopy=False)
    assert [t.state for t in seen].count(optuna.trial.TrialState.RUNNING) == 1
    running.set_user_attr("arch", "resnet10t|se(r=4)")
    writer.tell(running, [0.5, 2.0])
    for _ in range(3):
        again = storage.get_all_trials(study_id, deepcopy=False)
    assert again[-1].state == optuna.trial.TrialState.COMPLETE
    assert again[-1].user_attrs == {"arch": "resnet10t|se(r=4)"} and again[-1].values == [0.5, 2.0]
    assert loaded == [30, 1, 1, 0, 0], loaded  # all once; the new one while running, once finished; then none
