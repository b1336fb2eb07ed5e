import itertools
import os

import pytest
import torch

from postgres import start_postgres

# Run side by side (pytest-xdist, ``-n N``): each test process, and every process it starts, uses its
# share of the cores for torch, so N processes on N cores do not oversubscribe them (two torch thread
# pools on two cores spin against each other and cost half as much CPU time again).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    os.environ["OMP_NUM_THREADS"] = _threads
    torch.set_num_threads(int(_threads))

# The files in the order of their length (longest first, as measured side by side), the others after
# them: with ``--dist loadfile`` a process takes the next file when it is nearly done, so the processes
# finish close together when the last files to hand out are the short ones. Only the order changes.
LONG_FIRST = (
    "test_workers.py",
    "test_detection.py",
    "test_confirm.py",
    "test_search.py",
    "test_export_train.py",
    "test_warm_start.py",
    "test_viz.py",
    "test_cli.py",
    "test_export.py",
    "test_yolo.py",
    "test_readme.py",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the others stays


@pytest.fixture(scope="session", autouse=True)
def _machine_cache(tmp_path_factory):
    """What the tool remembers per machine (the reference latency) goes to a folder of this session,
    never to the user's cache; subprocesses inherit it. Side by side, the test processes of one run
    share it, as the processes of one machine do."""
    base = tmp_path_factory.getbasetemp()
    folder = base.parent / "machine-cache" if _WORKERS > 1 else base / "machine-cache"
    folder.mkdir(exist_ok=True)
    os.environ["NAS_CACHE_DIR"] = str(folder)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the whole session (tests/postgres.py). Fails, never skips,
    when PostgreSQL is not installed."""
    with start_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """Storage URL of the session server's database `nas` (shared by every test that uses it)."""
    return postgres_server.url


_db_numbers = itertools.count()


@pytest.fixture
def fresh_postgres_db(postgres_server):
    """Storage URL of a new, empty database test_<n> on the session server, dropped afterwards, so
    tests don't see each other's studies."""
    name = f"test_{next(_db_numbers)}"
    conn = postgres_server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        yield postgres_server.url_for(name)
        with conn.cursor() as cur:  # FORCE: ends connections a test's storage left open
            cur.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        conn.close()
