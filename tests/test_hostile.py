"""Hostile and careless input: a clear error (exit 2, the value as given, no traceback) and nothing
written outside the folder the user chose. Names that become folders: the study's (``--study``, the
space's ``name``, a name stored in a study) follow one rule (nas.names)."""

import os

import optuna
import pytest

from nas.errors import BadOption
from nas.names import NAME_RULE, check_name, folder_of

from _helpers import run_nas, space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)

ESCAPES = ["..", ".", "../../x", "/abs/path", "a/b", "a\\b", "", " x", "-x", "x" * 101, "x\n", "caf\u00e9/.."]


def tree(folder):
    """Every path under ``folder`` (to see that nothing was written)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", ESCAPES)
def test_a_name_that_would_leave_its_folder_is_refused_with_the_rule(name, tmp_path):
    with pytest.raises(BadOption) as e:
        folder_of(tmp_path, name, "--study")
    assert str(e.value) == f"--study: {name!r} is not allowed; {NAME_RULE}"


@pytest.mark.parametrize("name", ["tiny", "resnet.v2", "a_b-c", "x" * 100, "0"])
def test_ordinary_names_pass(name):
    assert check_name(name, "--study") == name


@pytest.mark.parametrize("name", ["../../x", "/abs/path", ".."])
def test_search_refuses_a_study_name_that_leaves_runs_before_writing_anything(name, tmp_path):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    space_file(work)
    before = tree(tmp_path)
    r = run_nas("search", "--space", "tiny.yaml", "--trials", 1, "--study", name, cwd=work)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert f"--study: {name!r} is not allowed" in r.stderr
    assert tree(tmp_path) == before, "nothing written anywhere"


def test_a_space_named_dot_dot_is_refused_at_its_line(tmp_path):
    path = space_file(tmp_path, "evil")
    path.write_text(path.read_text().replace("name: evil", "name: '..'"))
    before = tree(tmp_path)
    for command in (("check", "--space", "evil.yaml"), ("search", "--space", "evil.yaml", "--trials", 1)):
        r = run_nas(*command, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert "evil.yaml:1: name: '..' is not allowed" in r.stderr, r
    assert tree(tmp_path) == before


def test_a_study_name_stored_in_a_database_does_not_steer_where_reports_and_exports_go(tmp_path):
    """A database made elsewhere (or tampered with) holds a study named '../../x': reading it is
    fine, turning its name into a folder is refused."""
    url = f"sqlite:///{tmp_path / 'other.db'}"
    optuna.create_study(study_name="../../x", storage=url, directions=["maximize", "minimize"])
    work = tmp_path / "w"
    work.mkdir()
    before = tree(tmp_path)
    for command in (("report", "--no-remeasure"), ("export", "best", "--no-weights")):
        r = run_nas(*command, "--study", "../../x", "--storage", url, cwd=work)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert "study: '../../x' is not allowed" in r.stderr, r
    assert tree(tmp_path) == before
    assert not os.path.exists(tmp_path.parent / "x")


# -- files that would take all memory or flood the terminal ---------------------------------------------

BOMB = """name: bomb
backbone: resnet10t
{key}: &a9 [&a8 [&a7 [&a6 [&a5 [&a4 [&a3 [&a2 [&a1 [&a0 [x, x, x, x, x, x, x, x, x, x],
  *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0], *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1, *a1],
  *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2, *a2], *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3, *a3],
  *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4, *a4], *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5, *a5],
  *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6, *a6], *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7, *a7],
  *a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8, *a8]
"""  # 10^10 values once expanded, 9 lines of text


def test_alias_bombs_and_floods_are_refused_in_seconds_under_a_memory_limit(tmp_path):
    """In a process limited to 1.5 GiB beyond what torch takes: each file is refused with exit 2 in
    well under the time an expansion would take (minutes, then MemoryError at 9 GB before)."""
    import subprocess
    import sys
    import textwrap

    files = {f"bomb-{key}.yaml": BOMB.format(key=key) for key in ("data", "stages", "training", "latency")}
    files["self.yaml"] = "name: loop\nbackbone: resnet10t\ndata: &d {train: 10, more: *d}\n"
    files["flood.yaml"] = "name: flood\nbackbone: resnet10t\n" + "".join(f"k{i}: {i}\n" for i in range(200_000))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    script = textwrap.dedent(
        """
        import resource, sys, time
        import torch, timm  # what nas check loads anyway, before the limit
        size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 29), resource.RLIM_INFINITY))
        from nas.cli import run
        for name in sys.argv[1:]:
            start = time.monotonic()
            code = run(["check", "--space", name])
            print(f"RESULT {name} {code} {time.monotonic() - start:.2f}", flush=True)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, *files],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    results = {line.split()[1]: line.split()[2:] for line in r.stdout.splitlines() if line.startswith("RESULT")}
    assert set(results) == set(files), r.stdout
    for name, (code, seconds) in results.items():
        assert code == "2" and float(seconds) < 20, (name, code, seconds)
    assert "at most 100,000 are allowed" in r.stderr and "refers to the value that contains it" in r.stderr
    assert len(r.stderr) < 20_000, "messages stay short"


def test_a_space_with_many_problems_lists_fifty_then_counts_the_rest(tmp_path):
    path = space_file(tmp_path)
    path.write_text(path.read_text() + "".join(f"unknown{i}: 1\n" for i in range(60)))
    r = run_nas("check", "--space", path.name, cwd=tmp_path)
    assert r.returncode == 2 and "60 problems" in r.stderr and "... and 10 more" in r.stderr, r
    assert "unknown49" in r.stderr and "unknown50:" not in r.stderr


def test_a_nul_byte_in_a_space_or_its_path_is_an_error_with_the_position(tmp_path):
    path = space_file(tmp_path)
    path.write_text(path.read_text().replace("backbone: resnet10t", "backbone: resnet\x0010t"))
    r = run_nas("check", "--space", path.name, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "tiny.yaml:2" in r.stderr, r
    r = run_nas("check", "--space", "ti\x00ny.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "embedded null byte" in r.stderr, r


# -- numbers that size memory or time ------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, shown",
    [
        (("mechanisms", "--channels", "1000000000000"), "--channels: 1000000000000 is not allowed; an integer from 1"),
        (("mechanisms", "--channels", "0"), "--channels: 0 is not allowed"),
        (("bench", "modules", "--size", "1000000"), "--size: 1000000 is not allowed; an integer from 1 to 4,096"),
        (("bench", "modules", "--batch", "4096", "--size", "512"), "an input of at most 268,435,456 values"),
        (("search", "--space", "tiny.yaml", "--workers", "10000"), "--workers: '10000' is not allowed"),
        (("search", "--space", "tiny.yaml", "--seed", "-1"), "--seed: -1 is not allowed; an integer from 0"),
        (("search", "--space", "tiny.yaml", "--trials", "10000000000"), "--trials: 10000000000 is not allowed"),
        (("search", "--space", "tiny.yaml", "--timeout", "nan"), "--timeout: nan is not allowed"),
        (("search", "--space", "tiny.yaml", "--storage", ""), "--storage: '' is not allowed"),
        (("search", "--space", "tiny.yaml", "--study", ""), "--study: '' is not allowed"),
    ],
)
def test_numbers_and_names_out_of_bounds_fail_at_once_with_the_bound(args, shown, tmp_path):
    space_file(tmp_path)
    before = tree(tmp_path)
    r = run_nas(*args, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert shown in r.stderr.replace("\n", " "), r
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    "section, key, value, shown",
    [
        ("data", "val", 0, "data.val: 0 is not allowed; expected a number from 1 to 1,000,000"),
        ("data", "train", 0, "data.train: 0 is not allowed"),
        ("data", "train", 10**12, "data.train: 1000000000000 is not allowed"),
        ("training", "lr", 0, "training.lr: 0 is not allowed; expected a learning rate > 0"),
        ("training", "lr", float("nan"), "training.lr: nan is not allowed"),
        ("training", "epochs", 10**9, "training.epochs: 1000000000 is not allowed; expected a number from 1 to 10,000"),
        ("training", "seed", -1, "training.seed: -1 is not allowed"),
    ],
)
def test_check_refuses_what_the_search_could_not_run(section, key, value, shown, tmp_path):
    """An empty split or a learning rate of 0 used to pass nas check, then fail every trial (or train
    trials that never learn) while the search exited 0."""
    path = space_file(tmp_path, **{section: {key: value}})
    for command in (("check", "--space", path.name), ("search", "--space", path.name, "--trials", 1)):
        r = run_nas(*command, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert shown in r.stderr.replace("\n", " "), r
    assert not (tmp_path / "runs").exists()
