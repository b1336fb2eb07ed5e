"""A real, throwaway PostgreSQL server for the tests.

``start_postgres()`` runs ``initdb`` into a fresh directory under /tmp, starts ``postgres`` on a free
TCP port of 127.0.0.1 only (its unix socket in that directory too), waits for ``pg_isready``, creates
the database ``nas`` and returns a ``Server`` whose ``.url`` is an SQLAlchemy/Optuna storage URL
(``postgresql+psycopg2://nas@127.0.0.1:<port>/nas``; trust authentication, superuser ``nas``).
``Server.stop()`` (or leaving ``with start_postgres() as server:``) runs ``pg_ctl stop -m fast`` and
removes the directory.

PostgreSQL refuses to run as root; when the tests run as root the server commands run as the system
user ``postgres`` and the directory is handed to it. Missing binaries raise ``RuntimeError`` (the
tests that need the server fail, they are never skipped).
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres", "pg_isready", "createdb")
SEARCH_GLOB = "/usr/lib/postgresql/*/bin"
SUPERUSER = "nas"
DATABASE = "nas"
RUN_AS = "postgres"  # the user the server runs as when we are root
READY_TIMEOUT = 30.0
SETTINGS = {  # small and fast; durability is worthless for a throwaway test server
    "listen_addresses": "127.0.0.1",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "logging_collector": "off",
}

_INSTALL_HINT = (
    "Install the PostgreSQL server: `apt-get install postgresql` (Debian/Ubuntu; on Debian 12 that "
    "is the package postgresql-15, whose binaries go to /usr/lib/postgresql/15/bin), or put the "
    "directory holding these programs on PATH."
)


def _version_key(bin_dir: str) -> tuple:
    """Sort key for /usr/lib/postgresql/<version>/bin: numeric version parts, newest last."""
    version = Path(bin_dir).parent.name
    return tuple(int(p) for p in re.findall(r"\d+", version))


def _candidate_dirs() -> list[str]:
    """Directories that may hold the server binaries, in search order: PATH, then the newest
    /usr/lib/postgresql/<version>/bin first. A program found on PATH through a symlink (e.g.
    /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb) also names its real directory."""
    dirs: list[str] = []
    for name in SERVER_BINARIES:
        found = shutil.which(name)
        if found:
            dirs.append(os.path.dirname(os.path.realpath(found)))
    dirs += [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += sorted(glob.glob(SEARCH_GLOB), key=_version_key, reverse=True)
    seen: set[str] = set()
    unique = []
    for d in dirs:
        real = os.path.realpath(d)  # /bin and /usr/bin are often the same directory
        if real not in seen:
            seen.add(real)
            unique.append(d)
    return unique


def _is_exe(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def find_bin_dir() -> Path:
    """The first candidate directory holding every program in SERVER_BINARIES (all from one
    installation, so initdb and postgres are the same version). RuntimeError naming what is
    missing and how to install it otherwise."""
    candidates = _candidate_dirs()
    for d in candidates:
        if all(_is_exe(os.path.join(d, name)) for name in SERVER_BINARIES):
            return Path(d)
    partial = {d: [n for n in SERVER_BINARIES if _is_exe(os.path.join(d, n))] for d in candidates}
    partial = {d: names for d, names in partial.items() if names}
    if partial:
        found = "; ".join(
            f"{d} has only {', '.join(names)} (missing {', '.join(n for n in SERVER_BINARIES if n not in names)})"
            for d, names in partial.items()
        )
    else:
        found = "none of them was found anywhere"
    raise RuntimeError(
        "PostgreSQL server binaries not found: the tests need one directory holding all of "
        f"{', '.join(SERVER_BINARIES)}, searched for on PATH and in {SEARCH_GLOB}; {found}. " + _INSTALL_HINT
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """preexec_fn: SIGQUIT (immediate shutdown) the postmaster if the process that started it dies
    without stopping it (pytest killed), so no server outlives the test run. Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGQUIT, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no server log: {e})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


class Server:
    """A running throwaway server; see the module docstring. ``url`` is the storage URL of the
    database ``nas``; ``url_for(name)`` that of another database on the same server."""

    def __init__(self, bin_dir: Path | None = None, ready_timeout: float = READY_TIMEOUT):
        self.bin_dir = Path(bin_dir) if bin_dir else find_bin_dir()
        self.ready_timeout = ready_timeout
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._user: dict = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(RUN_AS)
            except KeyError:
                raise RuntimeError(
                    f"running as root, and PostgreSQL refuses to run as root: the server would run "
                    f"as the user {RUN_AS!r}, which does not exist (create it: "
                    f"`useradd --system {RUN_AS}`, or run the tests as a non-root user)"
                ) from None
            self._user = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        # Not under pytest's tmp_path: /tmp/pytest-of-root is not traversable by the postgres user.
        self.dir = Path(tempfile.mkdtemp(prefix="nas-pg-"))
        try:
            if self._user:
                os.chown(self.dir, self._user["user"], self._user["group"])
            self.data = self.dir / "data"
            self.log = self.dir / "server.log"
            atexit.register(self.stop)  # a script that forgets stop() leaves no server behind
            self._start()
        except BaseException:
            self.stop()
            raise

    # -- commands -------------------------------------------------------------------------------

    def _exe(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _run(self, name: str, *args: str, as_server: bool = True, timeout: float = 60):
        """Run one of the PostgreSQL programs (as the server user when `as_server` and root);
        RuntimeError with its output if it fails."""
        cmd = [self._exe(name), *args]
        r = subprocess.run(
            cmd,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            **(self._user if as_server else {}),
        )
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stdout}{r.stderr}")
        return r

    def _start(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        for attempt in range(3):  # another process may take the free port before postgres binds it
            self.port = _free_port()
            settings = [a for k, v in SETTINGS.items() for a in ("-c", f"{k}={v}")]
            cmd = [
                self._exe("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.dir),
                *settings,
            ]
            with open(self.log, "ab") as log:
                self._proc = subprocess.Popen(
                    cmd,
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # a Ctrl-C in the terminal goes to pytest only
                    preexec_fn=(
                        _die_with_parent
                        if sys.platform == "linux" and threading.current_thread() is threading.main_thread()
                        else None
                    ),
                    **self._user,
                )
            if self._wait_ready():
                break
            if attempt == 2 or "could not bind" not in _tail(self.log):
                raise RuntimeError(
                    f"PostgreSQL (port {self.port}) exited during startup "
                    f"(exit {self._proc.returncode}); {self.log}:\n{_tail(self.log)}"
                )
        self._run(
            "createdb",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            DATABASE,
            as_server=False,
        )

    def _wait_ready(self) -> bool:
        """True once pg_isready accepts; False if the server exited; RuntimeError on timeout."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                return False
            r = subprocess.run(
                [
                    self._exe("pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
            )
            if r.returncode == 0:
                return True
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"PostgreSQL on 127.0.0.1:{self.port} not ready after {self.ready_timeout:.0f} s "
                    f"(pg_isready exit {r.returncode}); {self.log}:\n{_tail(self.log)}"
                )
            time.sleep(0.1)

    # -- public ---------------------------------------------------------------------------------

    def pause(self, seconds: float) -> None:
        """Stop the server (fast: open sessions are cut), stay down ``seconds``, start it again on
        the same port with the same data: a database that is briefly unreachable."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
        self._proc.wait(timeout=30)
        time.sleep(seconds)
        settings = [a for k, v in SETTINGS.items() for a in ("-c", f"{k}={v}")]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [self._exe("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir), *settings],
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                **self._user,
            )
        if not self._wait_ready():
            raise RuntimeError(f"PostgreSQL did not come back on port {self.port}:\n{_tail(self.log)}")

    def url_for(self, database: str) -> str:
        return f"postgresql+psycopg2://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(DATABASE)

    def connect(self, database: str = DATABASE):
        """A psycopg2 connection (autocommit) to `database`, e.g. for CREATE DATABASE."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database)
        conn.autocommit = True
        return conn

    def stop(self) -> None:
        """pg_ctl stop -m fast (killing the server if that fails), then remove the directory.
        Safe to call twice."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        try:
            if proc is not None and proc.poll() is None:
                try:
                    self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "30")
                    proc.wait(timeout=30)
                except (RuntimeError, subprocess.TimeoutExpired):
                    proc.kill()  # SIGKILL the postmaster; its children exit when they notice
                    proc.wait()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_postgres(**kwargs) -> Server:
    """Start a throwaway server; see the module docstring. Use as a context manager or call
    ``.stop()``."""
    return Server(**kwargs)
