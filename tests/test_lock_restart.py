"""The PostgreSQL study lock across a server restart inside the critical section: a session advisory
lock (what the lock was) is released with its session, so another worker could enter while the first is
still inside; the lease row the lock is now keeps it held through the restart."""

import threading
import time

import pytest
from sqlalchemy import create_engine, text

from nas.search._locks import StudyLock

from postgres import start_postgres


@pytest.fixture(scope="module")
def server():
    """A server of this file's own: restarting the session's would cut the other tests' connections."""
    with start_postgres() as s:
        yield s


def test_a_session_advisory_lock_is_lost_in_a_restart_which_is_why_the_study_lock_is_a_lease(server):
    engine = create_engine(server.url)
    holder = engine.connect()
    assert holder.execute(text("SELECT pg_try_advisory_lock(42)")).scalar()
    holder.commit()
    server.pause(0.5)  # the holder still "holds" it, as far as it knows
    other = create_engine(server.url).connect()
    assert other.execute(text("SELECT pg_try_advisory_lock(42)")).scalar(), "released by the restart"
    other.close()
    holder.invalidate()


def test_no_other_worker_enters_the_study_lock_while_its_holder_is_inside_through_a_server_restart(server):
    a = StudyLock(server.url, "s", create_engine(server.url))
    b = StudyLock(server.url, "s", create_engine(server.url))
    log, inside, leave = [], threading.Event(), threading.Event()

    def hold():
        with a.held():
            log.append("a in")
            inside.set()
            assert leave.wait(120)
            log.append("a out")

    def enter():
        with b.held():
            log.append("b in")

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    server.pause(1.0)  # the server restarts while a is inside its section
    other = threading.Thread(target=enter)
    other.start()
    deadline = time.monotonic() + 6  # the advisory lock let b in at once after the restart
    while time.monotonic() < deadline and "b in" not in log:
        time.sleep(0.1)
    assert log == ["a in"], log
    leave.set()
    holder.join(60)
    other.join(60)
    assert log == ["a in", "a out", "b in"], log
