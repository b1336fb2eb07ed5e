"""The locks that let workers share a study: latency measurements wait for running batches and keep
new ones out (writer preference); the study lock excludes other workers on SQLite and PostgreSQL;
--workers and --threads are planned or refused with a clear error."""

import threading
import time
from pathlib import Path

import pytest

from nas.core.errors import BadOption
from nas.search._locks import LatencyGate, StudyLock
from nas.search._workers import cpu_count, plan

from _helpers import run_nas


def started(fn):
    done = threading.Event()

    def run():
        fn()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done


def test_a_measurement_waits_for_the_running_batch_and_keeps_new_batches_out(tmp_path):
    trainer, measurer, other = LatencyGate(tmp_path), LatencyGate(tmp_path), LatencyGate(tmp_path)
    trainer.batch_start()  # a batch is running
    release = threading.Event()
    measuring = threading.Event()

    def measure():
        with measurer.measuring():
            measuring.set()
            release.wait(5)

    started(measure)
    time.sleep(0.3)
    assert not measuring.is_set()  # waits for the running batch
    new_batch = started(other.batch_start)
    time.sleep(0.3)
    assert not new_batch.is_set()  # announced measurement: no new batch, even while one is running
    trainer.batch_end()
    assert measuring.wait(5)
    time.sleep(0.3)
    assert not new_batch.is_set()  # still measuring
    release.set()
    assert new_batch.wait(5)
    other.batch_end()


def hold_then_report(lock, hold_s, log, name):
    with lock.held():
        log.append((name, "in", time.monotonic()))
        time.sleep(hold_s)
        log.append((name, "out", time.monotonic()))


def assert_exclusive(make_lock):
    log = []
    a, b = make_lock(), make_lock()
    t = threading.Thread(target=hold_then_report, args=(a, 0.5, log, "a"))
    t.start()
    time.sleep(0.1)
    hold_then_report(b, 0.0, log, "b")
    t.join()
    assert [e[:2] for e in log] == [("a", "in"), ("a", "out"), ("b", "in"), ("b", "out")]


def test_the_study_lock_excludes_other_workers_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert_exclusive(lambda: StudyLock(url, "s"))
    assert (tmp_path / "study.db.lock").exists()


def test_the_study_lock_excludes_other_workers_on_postgresql(fresh_postgres_db):
    from sqlalchemy import create_engine

    engine = create_engine(fresh_postgres_db)
    assert_exclusive(lambda: StudyLock(fresh_postgres_db, "s", engine))
    other_study = StudyLock(fresh_postgres_db, "other", engine)
    with StudyLock(fresh_postgres_db, "s", engine).held():  # a different study is not blocked
        done = started(lambda: other_study.held().__enter__())
        assert done.wait(5)


def test_workers_and_threads_are_planned_or_refused():
    p = plan("2", None)
    assert (p.workers, p.threads, p.gpus) == (2, max(1, cpu_count() // 2), ())
    assert plan("auto", 3).workers == 1 and plan("auto", 3).threads == 3  # CPU-only: one worker
    for bad in ("0", "-1", "two", "1.5", "10000"):
        with pytest.raises(BadOption, match=f"--workers.*{bad}.*an integer from 1 to 256, or auto"):
            plan(bad, None)
    with pytest.raises(BadOption, match="--threads"):
        plan("2", 0)


def test_bad_workers_option_exits_2_with_the_value_named(tmp_path):
    r = run_nas("search", "--space", Path(__file__).parents[1] / "spaces" / "small.yaml", "--workers", "zero")
    assert r.returncode == 2 and "--workers" in r.stderr and "zero" in r.stderr, r.stderr


def test_bad_heartbeat_exits_2_with_the_value_named_before_any_worker_starts(tmp_path):
    r = run_nas(
        "search",
        "--space",
        Path(__file__).parents[1] / "spaces" / "small.yaml",
        "--workers",
        "2",
        "--heartbeat",
        "0",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "--heartbeat: 0 is not allowed" in r.stderr, r.stderr
    assert not (tmp_path / "runs").exists()  # no study was created
