"""The command line as a user meets it: exit codes, messages, files written."""

import json
import os
import subprocess
import sys

import attention


def run_nas(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "nas", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_mechanisms_lists_all_twelve_with_valid_values():
    r = run_nas("mechanisms", "--channels", "96")
    assert r.returncode == 0, r.stderr
    for spec in attention.MECHANISMS.values():
        assert spec.name in r.stdout
    assert "arXiv:1709.01507" in r.stdout
    assert "groups [g] = 64" in r.stdout and "valid at 96: 1, 2, 3, 4, 6, 8, 12, 16, 24, 48" in r.stdout
    assert "defaults invalid at 96 channels: sa: groups=64" in r.stdout


def test_bench_modules_writes_json_and_csv_with_timm_ratios(tmp_path):
    r = run_nas("bench", "modules", "--only", "se,eca,sa", "--batch", "2", "--channels", "64", "--size", "8",
                "--repeats", "4", "--warmup", "1", "--threads", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "modules.json").read_text())
    rows = {row["mechanism"]: row for row in data["rows"]}
    assert set(rows) == {"se", "eca", "sa"}
    assert rows["se"]["fb_ratio"] > 0 and rows["se"]["params"] == 2 * 64 * 4 + 4 + 64
    assert "fwd_ratio" not in rows["sa"], "SA is not in timm: no ratio"
    assert rows["sa"]["error"].startswith("sa: groups=64"), "SA's official groups=64 cannot work at 64 channels"
    assert data["meta"]["shape"] == [2, 64, 8, 8] and data["meta"]["threads"] == 1
    assert (tmp_path / "modules.csv").read_text().startswith("mechanism,")
    assert "se" in r.stdout and "ratio" in r.stdout


def test_bad_options_exit_2_with_a_message_and_no_traceback(tmp_path):
    for args, words in [
        (("bench", "modules", "--device", "cuda:7"), ["--device", "cuda:7"]),
        (("bench", "modules", "--device", "tpu"), ["--device", "'tpu'"]),
        (("bench", "modules", "--only", "se,foo"), ["--only", "'foo'", "cbam"]),
        (("bench", "modules", "--batch", "0"), ["--batch", "0", "positive"]),
    ]:
        r = run_nas(*args, "--out", str(tmp_path))
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
        for word in words:
            assert word in r.stderr, (word, r.stderr)
