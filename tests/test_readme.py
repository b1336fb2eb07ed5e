"""Every fenced Python block of README.md runs as written: from a temporary folder laid out as a user's
clone after the quick start (spaces/ and an export at runs/small/export/trial_7, made here from a
small search), each block in a fresh namespace of one interpreter."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from nas import export
from nas.search._loop import Search
from nas.tasks.spacefile import load_space

from _helpers import space_file

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)

RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
for i, (line, code) in enumerate(blocks):
    try:
        exec(compile(code, f"README.md block at line {line}", "exec"), {"__name__": "__main__"})
        print(f"BLOCK {line} ok", flush=True)
    except Exception:
        print(f"BLOCK {line} failed", flush=True)
        traceback.print_exc()
"""


def readme_blocks() -> list[tuple[int, str]]:
    text = (ROOT / "README.md").read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in BLOCK.finditer(text)]


def test_the_readme_has_python_blocks_to_run():
    assert len(readme_blocks()) >= 5


def test_every_python_block_of_the_readme_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "spaces", tmp_path / "spaces")
    runs = tmp_path / "runs"
    path = space_file(tmp_path, "small", training={"epochs": 1, "noise_seeds": 1}, data={"train": 128, "val": 64})
    study = Search(load_space(path), "small", f"sqlite:///{runs / 'small' / 'study.db'}", 1, root=runs).run().study
    trial = study.best_trials[0]
    export.export_trial(study, trial, runs / "small/export/trial_7", root=runs, name="nas_small_t7", remeasure=False)

    blocks = readme_blocks()
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    r = subprocess.run(
        [sys.executable, "-c", RUNNER, "blocks.json"], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    failed = [line for line in r.stdout.splitlines() if line.endswith("failed")]
    assert not failed and r.stdout.count(" ok") == len(blocks), r.stdout + r.stderr[-4000:]
