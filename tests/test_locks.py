"""The locks that let workers share a study: latency measurements wait for running batches and keep
new ones out (writer preference); the study lock excludes other workers on SQLite and PostgreSQL;
--workers and --threads are planned or refused with a clear error."""

import os
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


def wait_until(condition, what, timeout=30.0):
    """Polls ``condition`` until it holds; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


def waiting_on(folder: Path) -> int:
    """How many lock requests wait for a lock file in ``folder``: Linux's lock table (/proc/locks) lists
    each blocked flock request, marked "->", with the device and inode of its file. A thread blocked in
    the lock shows here, which no timing can tell."""
    table = Path("/proc/locks")
    if not table.exists():
        pytest.skip("needs Linux's lock table (/proc/locks) to see a request waiting for a lock")
    files = {
        f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        for st in (p.stat() for p in folder.glob("*.lock"))
    }
    return sum(1 for line in table.read_text().splitlines() if "->" in line.split() and line.split()[-3] in files)


def test_a_measurement_waits_for_the_running_batch_and_keeps_new_batches_out(tmp_path):
    trainer, measurer, other = LatencyGate(tmp_path), LatencyGate(tmp_path), LatencyGate(tmp_path)
    trainer.batch_start()  # a batch is running
    release = threading.Event()
    measuring = threading.Event()

    def measure():
        with measurer.measuring():
            measuring.set()
            release.wait(30)

    started(measure)
    wait_until(lambda: waiting_on(tmp_path) == 1, "the measurement to wait for the running batch")
    assert not measuring.is_set()
    new_batch = started(other.batch_start)
    wait_until(lambda: waiting_on(tmp_path) == 2, "a new batch to wait: a measurement is announced")
    assert not new_batch.is_set()  # announced measurement: no new batch, even while one is running
    trainer.batch_end()
    assert measuring.wait(10)
    assert waiting_on(tmp_path) == 1 and not new_batch.is_set()  # still measuring: the new batch waits on
    release.set()
    assert new_batch.wait(10)
    assert waiting_on(tmp_path) == 0
    other.batch_end()


def assert_exclusive(a, b, b_waits):
    """``a`` held; ``b`` asked for from another thread gets the lock only after ``a`` is released.
    ``b_waits()``: whether ``b`` has been refused, so ``a`` is released only once ``b`` has tried."""
    log = []
    a_in, a_may_leave = threading.Event(), threading.Event()

    def hold_a():
        with a.held():
            log.append(("a", "in"))
            a_in.set()
            a_may_leave.wait(30)
            log.append(("a", "out"))

    def take_b():
        with b.held():
            log.append(("b", "in"))
        log.append(("b", "out"))

    threads = [threading.Thread(target=hold_a, daemon=True), threading.Thread(target=take_b, daemon=True)]
    threads[0].start()
    assert a_in.wait(30)
    threads[1].start()
    wait_until(b_waits, "the second worker to wait for the lock")
    assert log == [("a", "in")]
    a_may_leave.set()
    for t in threads:
        t.join(30)
    assert log == [("a", "in"), ("a", "out"), ("b", "in"), ("b", "out")]


def test_the_study_lock_excludes_other_workers_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert_exclusive(StudyLock(url, "s"), StudyLock(url, "s"), lambda: waiting_on(tmp_path) == 1)
    assert (tmp_path / "study.db.lock").exists()


def test_the_study_lock_excludes_other_workers_on_postgresql(fresh_postgres_db):
    import collections

    from sqlalchemy import create_engine, event

    engine, engine_b = create_engine(fresh_postgres_db), create_engine(fresh_postgres_db)
    sent = collections.Counter()  # the second worker's statements: the lock is polled, so one sent twice
    # is an attempt made again after a refusal

    @event.listens_for(engine_b, "before_cursor_execute")
    def count(conn, cursor, statement, *args):
        sent[statement] += 1

    a, b = StudyLock(fresh_postgres_db, "s", engine), StudyLock(fresh_postgres_db, "s", engine_b)
    assert_exclusive(a, b, lambda: max(sent.values(), default=0) >= 2)
    other_study = StudyLock(fresh_postgres_db, "other", engine)
    with StudyLock(fresh_postgres_db, "s", engine).held():  # a different study is not blocked
        done = started(lambda: other_study.held().__enter__())
        assert done.wait(5)


def test_workers_and_threads_are_planned_or_refused(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # set by conftest: it would fix the threads
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
