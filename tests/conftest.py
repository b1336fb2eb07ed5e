import itertools
import os

import pytest
import torch

from postgres import start_postgres


@pytest.fixture(scope="session", autouse=True)
def _machine_cache(tmp_path_factory):
    """What the tool remembers per machine (the reference latency) goes to a folder of this session,
    never to the user's cache; subprocesses inherit it."""
    os.environ["NAS_CACHE_DIR"] = str(tmp_path_factory.mktemp("machine-cache"))
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
