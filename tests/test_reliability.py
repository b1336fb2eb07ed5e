"""A careless or hostile user's probes of the study and artifact surfaces, each through the command a user
would run: every count has a bound checked before anything is sized by it; paths a study records are
absolute; an export that fails leaves an earlier good one whole and names what is wrong; a failed re-run
is tried again and reported until then; a store is recorded only once it was written to, and one that
vanished is an error, not recreated; an upload killed midway leaves nothing a later run keeps."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from nas.search._samplers import make_sampler
from nas.search._study import create_or_resume
from nas.study.stores import STORE_ATTR
from nas.study.studies import stored_space
from nas.tasks.spacefile import load_space

from _helpers import run_nas, space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)
DEAD_PID = 2**22 + 12345  # above Linux's pid_max default: no such process


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A finished 2-trial search (the baseline and one other, 1 epoch, no confirmation)."""
    folder = tmp_path_factory.mktemp("rel")
    space_file(folder, "rel", training={"epochs": 1, "noise_seeds": 2, "confirm": 0})
    r = run_nas("search", "--space", "rel.yaml", "--trials", 2, "--sampler", "random", "--no-prune", cwd=folder)
    assert r.returncode == 0, r
    return folder


def _study(folder):
    return optuna.load_study(study_name="rel", storage=f"sqlite:///{folder / 'runs' / 'rel' / 'study.db'}")


# -- 3: every count a user or a study sets has a bound, checked before anything is sized by it -----------


@pytest.mark.parametrize("given", ["99999999999999999999999", "1000000000", "101"])
def test_a_confirmation_count_past_its_bound_is_refused_before_anything_is_allocated(given, study_dir):
    r = run_nas("report", "--study", "rel", "--confirm", given, "--no-remeasure", cwd=study_dir)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert f"--confirm: {int(given)!r} is not allowed; a number from 0 to 100" in r.stderr, r


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("noise_seeds", 10**12, "attribute 'noise_seeds' is 1000000000000; expected a number from 1 to 100"),
        ("epochs", 10**12, "attribute 'epochs' is 1000000000000; expected a number from 1 to 10,000"),
    ],
)
def test_a_count_edited_large_in_a_study_is_refused_with_its_bound(key, value, shown, study_dir, tmp_path):
    copy = tmp_path / "study.db"
    copy.write_bytes((study_dir / "runs" / "rel" / "study.db").read_bytes())
    url = f"sqlite:///{copy}"
    optuna.load_study(study_name="rel", storage=url).set_user_attr(key, value)
    r = run_nas("report", "--study", "rel", "--storage", url, "--confirm", 2, "--no-remeasure", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert shown in r.stderr, r


def test_a_study_s_record_of_its_space_edited_out_of_bounds_is_refused(study_dir, tmp_path):
    copy = tmp_path / "study.db"
    copy.write_bytes((study_dir / "runs" / "rel" / "study.db").read_bytes())
    url = f"sqlite:///{copy}"
    st = optuna.load_study(study_name="rel", storage=url)
    data = st.user_attrs["space_data"]
    data["training"]["epochs"] = 10**12
    st.set_user_attr("space_data", data)
    r = run_nas("export", "best", "--study", "rel", "--storage", url, "--no-weights", "--out", tmp_path / "x")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "training.epochs: 1000000000000 is not allowed; expected a number from 1 to 10,000" in r.stderr, r
    assert "changed by hand or by another tool" in r.stderr


# -- 5: paths a study records are absolute ---------------------------------------------------------------


def test_relative_data_paths_are_recorded_absolute_so_another_folder_reads_the_same_data(tmp_path, monkeypatch):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "folders.yaml").write_text(
        "backbone: resnet10t\ninput_size: 32\nin_chans: 3\ndata: {source: imagefolder, root: imgs}\n"
        "stages: [{stage: 4, mechanisms: {none: , se: }}]\n"
    )
    space = load_space(tmp_path / "folders.yaml")
    assert space.data.root == "imgs", "the space is as written (its fingerprint too)"
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    create_or_resume(space, "folders", url, make_sampler("random", 0), None, 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recorded = stored_space(optuna.load_study(study_name="folders", storage=url))
    assert recorded.data.root == str(tmp_path / "imgs")
    assert Path(recorded.path) == tmp_path / "folders.yaml"


# -- 6: an export that fails leaves an earlier good one whole, and names what is wrong --------------------


def _rewrite_weights(study_dir, number, change):
    """The trial's kept weights in the study's store, rewritten with ``change(tensors)`` (same metadata)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    st = _study(study_dir)
    artifact = st.trials[number].user_attrs["weights_artifact"]
    path = Path(st.user_attrs[STORE_ATTR]) / artifact
    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    original = path.read_bytes()
    save_file(change(tensors), str(path), metadata=meta)
    return path, original


def test_a_failed_export_keeps_the_earlier_export_and_names_the_tensor(study_dir, tmp_path):
    out = tmp_path / "exp"
    r = run_nas("export", "0", "--study", "rel", "--out", out, cwd=study_dir)
    assert r.returncode == 0, r
    good = {p.name: p.read_bytes() for p in out.iterdir()}

    def nan(tensors):
        key = next(k for k, v in tensors.items() if v.is_floating_point())
        return {**tensors, key: torch.full_like(tensors[key], float("nan"))}

    path, original = _rewrite_weights(study_dir, 0, nan)
    try:
        r = run_nas("export", "0", "--study", "rel", "--out", out, cwd=study_dir)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert "holds NaN or infinite values" in r.stderr and "tensor '" in r.stderr, r
        assert {p.name: p.read_bytes() for p in out.iterdir()} == good, "the earlier export is whole"
        assert "the weights of trial 0 (" in r.stderr, "named as the user knows them, not by a scratch file"
        assert "nas-weights-" not in r.stderr and ".staging-" not in r.stderr, r.stderr
        r = run_nas("viz", "--study", "rel", "--trial", 0, "--digits", 1, "--out", tmp_path / "viz", cwd=study_dir)
        assert r.returncode == 2 and "holds NaN or infinite values" in r.stderr, r

        path.write_bytes(original)
        dropped = []

        def missing(tensors):
            dropped.append(sorted(tensors)[0])
            return {k: v for k, v in tensors.items() if k != dropped[0]}

        _rewrite_weights(study_dir, 0, missing)
        r = run_nas("export", "0", "--study", "rel", "--out", out, cwd=study_dir)
        assert r.returncode == 2 and "Missing key(s)" in r.stderr and f'"{dropped[0]}"' in r.stderr, r
        assert {p.name: p.read_bytes() for p in out.iterdir()} == good
    finally:
        path.write_bytes(original)


def test_export_into_the_study_s_artifact_store_is_refused_even_with_force(study_dir):
    store = Path(_study(study_dir).user_attrs[STORE_ATTR])
    before = sorted(p.name for p in store.iterdir())
    r = run_nas("export", "0", "--study", "rel", "--out", store, "--force", cwd=study_dir)
    assert r.returncode == 2 and "a folder apart from the input" in r.stderr, r
    assert sorted(p.name for p in store.iterdir()) == before


# -- 7: a failed re-run is tried again by the next request, and reported until then ----------------------


def test_a_failed_rerun_is_reported_then_trained_by_the_next_confirmation(study_dir, tmp_path):
    copy = tmp_path / "runs" / "rel"
    copy.mkdir(parents=True)
    (copy / "study.db").write_bytes((study_dir / "runs" / "rel" / "study.db").read_bytes())
    url = f"sqlite:///{copy / 'study.db'}"
    st = optuna.load_study(study_name="rel", storage=url)
    base = next(t for t in st.trials if t.user_attrs.get("baseline"))
    arch = base.user_attrs["arch"]
    st.set_user_attr(f"rerun_failed:2:{arch}", {"reason": "failed: out of memory", "by": "elsewhere:1"})
    r = run_nas("report", "--study", "rel", "--storage", url, "--no-remeasure", cwd=study_dir)
    assert r.returncode == 0, r
    assert f"trial {base.number}: its re-run from seed 2 failed (failed: out of memory)" in r.stdout, r.stdout
    other = next(t for t in st.trials if not t.user_attrs.get("baseline"))  # a member: something to confirm
    args = ("--confirm", 2, "--include", other.number, "--no-remeasure")
    r = run_nas("report", "--study", "rel", "--storage", url, *args, cwd=study_dir)
    assert r.returncode == 0, r
    attrs = optuna.load_study(study_name="rel", storage=url).user_attrs
    assert f"rerun:2:{arch}" in attrs and not attrs.get(f"rerun_failed:2:{arch}"), "trained, failure cleared"
    assert "failed (failed: out of memory)" not in r.stdout


def test_a_malformed_rerun_attribute_is_named_not_a_traceback(study_dir, tmp_path):
    copy = tmp_path / "study.db"
    copy.write_bytes((study_dir / "runs" / "rel" / "study.db").read_bytes())
    url = f"sqlite:///{copy}"
    optuna.load_study(study_name="rel", storage=url).set_user_attr("rerun:x:arch", "not a curve")
    r = run_nas("report", "--study", "rel", "--storage", url, "--no-remeasure", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "attribute 'rerun:x:arch' is not rerun:<seed>:<architecture>" in r.stderr, r


# -- 9, 10: a store is recorded once written to; a vanished one is an error; leftovers are cleaned -------


def test_an_unwritable_store_is_named_and_never_recorded(tmp_path):
    space_file(tmp_path, "st", training={"epochs": 1, "noise_seeds": 2})
    r = run_nas("search", "--space", "st.yaml", "--trials", 1, "--artifacts", "/proc/x", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "/proc/x" in r.stderr, r
    st = optuna.load_study(study_name="st", storage=f"sqlite:///{tmp_path / 'runs' / 'st' / 'study.db'}")
    assert STORE_ATTR not in st.user_attrs, "the study is not bound to a store that failed"


def test_a_vanished_store_is_an_error_and_an_upload_s_leftovers_are_removed_on_resume(study_dir, tmp_path):
    import shutil

    work = tmp_path / "w"
    shutil.copytree(study_dir, work)
    st = optuna.load_study(study_name="rel", storage=f"sqlite:///{work / 'runs' / 'rel' / 'study.db'}")
    store = Path(st.user_attrs[STORE_ATTR])
    moved = work / "runs" / "rel" / "artifacts"  # the copy's own store (the study names the original)
    host = socket.gethostname()
    partial = moved / f"abc{'.partial-'}{host}-{DEAD_PID}-0000"
    partial.write_bytes(b"half")
    upload = work / "runs" / "rel" / f".upload-{host}-{DEAD_PID}-xyz"
    upload.mkdir()
    (upload / "trial_9.safetensors").write_bytes(b"half")
    live = work / "runs" / "rel" / f".upload-{host}-{os.getpid()}-live"  # a live process's: kept
    live.mkdir()
    st.set_user_attr(STORE_ATTR, str(moved))
    r = run_nas("search", "--space", "rel.yaml", "--trials", 2, "--sampler", "random", "--no-prune", cwd=work)
    assert r.returncode == 0, r
    assert not partial.exists() and not upload.exists() and live.exists()
    shutil.rmtree(moved)
    r = run_nas("search", "--space", "rel.yaml", "--trials", 2, "--sampler", "random", "--no-prune", cwd=work)
    assert r.returncode == 2 and f"the artifact store {moved} is not there" in r.stderr, r
    assert not moved.exists(), "not recreated empty"
    assert store.exists()


# -- 11: the rest ----------------------------------------------------------------------------------------


def test_metric_names_reach_the_interactive_plot_escaped(study_dir, tmp_path):
    from nas import report
    from nas.study import analysis

    copy = tmp_path / "study.db"
    copy.write_bytes((study_dir / "runs" / "rel" / "study.db").read_bytes())
    st = optuna.load_study(study_name="rel", storage=f"sqlite:///{copy}")
    st.set_metric_names(["<b>acc</b>", "latency_ms"])
    fig = report.figure(st, analysis.analyse(st, measure_again=False))
    assert fig.layout.yaxis.title.text == "&lt;b&gt;acc&lt;/b&gt;"
    assert all("<b>" not in (t.name or "") for t in fig.data)


def test_optuna_s_experimental_warnings_stay_out_of_a_search_s_output(tmp_path):
    space_file(tmp_path, "quiet", training={"epochs": 1, "noise_seeds": 2})
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-m", "nas", "search", "--space", "quiet.yaml", "--trials", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ExperimentalWarning" not in r.stderr + r.stdout, r.stderr[-2000:]


def test_stop_reasons_are_stored_without_terminal_colour_codes():
    from nas.core.errors import reason_text

    assert reason_text("failed: \x1b[34m\x1b[1mtrain: \x1b[0mno labels\x07") == "failed: train: no labels"
    assert len(reason_text("x" * 5000)) == 1000


def test_a_dataset_record_of_an_export_is_json(study_dir, tmp_path):
    """(an export's metrics.json stays plain JSON after the staging: a sanity check of the install step)"""
    out = tmp_path / "e"
    r = run_nas("export", "best", "--study", "rel", "--out", out, cwd=study_dir)
    assert r.returncode == 0, r
    assert json.loads((out / "metrics.json").read_text())["study"] == "rel"
    assert not [p for p in out.iterdir() if p.name.startswith(".staging-")]
