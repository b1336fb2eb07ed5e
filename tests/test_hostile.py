"""Hostile and careless input: a clear error (exit 2, the value as given, no traceback) and nothing
written outside the folder the user chose. Names that become folders: the study's (``--study``, the
space's ``name``, a name stored in a study) follow one rule (nas.core.names)."""

import os

import optuna
import pytest

from nas.core.errors import BadOption
from nas.core.names import NAME_RULE, check_name, folder_of

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
    """In a process limited to 1.5 GiB beyond what torch takes: each file is refused with exit 2 within
    5 s (an expansion took minutes, then MemoryError at 9 GB; a file of 1.5 M keys printed 1.5 M problems)."""
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
        assert code == "2" and float(seconds) < 5, (name, code, seconds)
    assert "at most 100,000 are allowed" in r.stderr and "refers to the value that contains it" in r.stderr
    assert "flood.yaml: 2,977,812 characters; at most 1,000,000 are allowed" in r.stderr
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


# -- what reaches the terminal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "[/x]",
        "[link=https://example.invalid]click[/link]",
        "[bold red]alarm",
        "\x1b[2J\x1b]0;title\x07",
        "a\x9bb",
        "[e.g. ]",
    ],
)
def test_text_from_a_user_or_a_study_prints_exactly_as_given(text):
    """Markup is not interpreted (no crash on '[/x]', no hidden link, no lost text) and control
    characters are shown as \\xNN instead of moving the cursor or retitling the terminal."""
    import io

    from rich.console import Console

    from nas.cli.console import plain, shown

    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(f"value {shown(text)} end", highlight=False)
    assert out.getvalue() == f"value {plain(text)} end\n"
    assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in plain(text))
    assert plain("tab\tand\nnewline") == "tab\tand\nnewline"


def test_markup_in_a_space_is_printed_not_interpreted(tmp_path):
    path = space_file(tmp_path)
    path.write_text(path.read_text() + '"[/x]": 1\n"[link=https://example.invalid]k[/link]": 2\n')
    r = run_nas("check", "--space", path.name, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "MarkupError" not in r.stderr, r
    assert "'[/x]': unknown key" in r.stderr.replace("\n", " ") or "[/x]: unknown key" in r.stderr, r
    assert "[link=https://example.invalid]k[/link]" in r.stderr, r


# -- writes that never destroy ---------------------------------------------------------------------------


def test_an_output_folder_is_checked_before_any_work(tmp_path):
    from nas.core.names import check_out

    (tmp_path / "file").write_text("x")
    with pytest.raises(BadOption, match="a folder to write into"):
        check_out(tmp_path / "file")
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(b"png")
    for out in (images, tmp_path):  # the input itself, or a folder holding it
        with pytest.raises(BadOption, match="apart from the input"):
            check_out(out, inputs=[images / "a.png"], force=True)
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("keep me")
    with pytest.raises(BadOption, match=r"a new or empty folder \(it holds 1 entries\); add --force"):
        check_out(full)
    assert check_out(full, force=True) == full
    assert check_out(full, ours=lambda f: (f / "notes.txt").exists()) == full
    assert check_out(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert (full / "notes.txt").read_text() == "keep me"


def test_nas_train_never_writes_over_its_source_or_a_folder_it_did_not_make(tmp_path):
    from nas.core.architecture import Architecture
    from nas.core.artifacts import ModelCard

    source = tmp_path / "exp"
    source.mkdir()
    card = ModelCard(Architecture.parse("resnet10t|none|none|none|none"), 10, 1, (32, 32), {"source": "digits"})
    card.write(source)
    before = (source / "architecture.yaml").read_text()
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("1,2\n")
    for out, words in ((source, "apart from the input"), (other, "add --force")):
        r = run_nas("train", source, "--out", out, "--epochs", 1, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr and words in r.stderr, r
    assert (source / "architecture.yaml").read_text() == before and sorted(os.listdir(source)) == ["architecture.yaml"]
    assert sorted(os.listdir(other)) == ["data.csv"]


def test_a_truncated_weights_file_is_named_not_a_traceback(tmp_path):
    import torch
    from safetensors.torch import save_file

    from nas.core.architecture import Architecture
    from nas.core.artifacts import ModelCard

    folder = tmp_path / "exp"
    folder.mkdir()
    ModelCard(Architecture.parse("resnet10t|none|none|none|none"), 10, 1, (32, 32), {"source": "digits"}).write(folder)
    save_file({"w": torch.zeros(1000)}, str(folder / "weights.safetensors"))
    data = (folder / "weights.safetensors").read_bytes()
    (folder / "weights.safetensors").write_bytes(data[: len(data) // 2])
    r = run_nas("viz", folder, "--digits", 1, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "weights.safetensors cannot be read as safetensors weights" in r.stderr.replace("\n", " "), r
    assert not (folder / "viz").exists()


@pytest.mark.parametrize(
    "top, shown",
    [
        ({"in_chans": 3}, "in_chans: 3 is not allowed with data.source digits; its images have 1 channel(s)"),
        (
            {"input_size": 48, "data": {"source": "digits", "canvas": 32, "train": 64, "val": 32}},
            "data.canvas: 32 does not match input_size [48, 48]",
        ),
        ({"latency": {"device": "cuda", "input_size": 32}}, "latency.device: 'cuda' cannot be used on this machine"),
    ],
)
def test_check_applies_the_rules_search_meets_later(top, shown, tmp_path):
    """nas check used to pass these spaces, which nas search then refused (or failed every trial on)
    without a word. A latency device this machine lacks is a warning from check (the space may be
    meant for another machine) and a refusal from search."""
    import torch

    if "latency" in top and torch.cuda.is_available():
        top = {"latency": {"device": f"cuda:{torch.cuda.device_count()}", "input_size": 32}}
        shown = "cannot be used on this machine"
    path = space_file(tmp_path)
    import yaml

    doc = yaml.safe_load(path.read_text())
    doc.update(top)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    machine = "latency" in top  # the machine's limit: check warns (the file may be for another machine)
    for command in (("check", "--space", path.name), ("search", "--space", path.name, "--trials", 1)):
        r = run_nas(*command, cwd=tmp_path)
        assert r.returncode == (0 if machine and command[0] == "check" else 2) and "Traceback" not in r.stderr, r
        assert shown in r.stderr.replace("\n", " "), r
    assert not (tmp_path / "runs").exists()


def test_an_interrupted_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch):
    from pathlib import Path

    from nas.core.names import write_text_atomic

    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old")

    def interrupted(self, other):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_text_atomic(target, "new " * 1000)
    monkeypatch.undo()
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]
    assert write_text_atomic(target, "new").read_text() == "new"


def test_a_plot_written_over_is_whole_or_old_never_half(tmp_path, monkeypatch):
    """PNGs (the report's plot, nas viz's figures) go through the same rename as text files."""
    from pathlib import Path

    import torch

    from nas import viz

    target = viz.save_figure(torch.zeros(1, 8, 8), {"m": torch.rand(4, 4)}, None, tmp_path / "a.png")
    old = target.read_bytes()

    def interrupted(self, other):
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        viz.save_figure(torch.ones(1, 8, 8), {"m": torch.rand(4, 4)}, None, target)
    monkeypatch.undo()
    assert target.read_bytes() == old and os.listdir(tmp_path) == ["a.png"]


def _study_with(tmp_path, study_attrs, trial_attrs):
    """A study as nas search leaves it, with some attributes changed to another type."""
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    url = f"sqlite:///{tmp_path / 'edited.db'}"
    st = optuna.create_study(directions=["maximize", "minimize"], study_name="edited", storage=url)
    study_attrs = {"space": space_file(tmp_path / "space", "edited").read_text(), **study_attrs}
    for key, value in study_attrs.items():
        st.set_user_attr(key, value)
    base = {"arch": "resnet10t|none|none|none|none", "latency_ms": 3.7, "params": 4_900_000, "flops": 45_000_000}
    for n, extra in enumerate([{"baseline": True}, trial_attrs]):
        st.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[0.9 + n / 100, 3.7 + n],
                params={"stage4.mechanism": "none"},
                distributions={"stage4.mechanism": CategoricalDistribution(["none"])},
                user_attrs={**base, "val_acc_curve": [0.9 + n / 100], **extra},
            )
        )
    return url


@pytest.mark.parametrize(
    "study_attrs, trial_attrs, command, message",
    [
        ({"num_classes": "ten"}, {}, "export", "study 'edited': attribute 'num_classes' is 'ten'; expected an integer"),
        ({"space": 5}, {}, "export", "study 'edited': attribute 'space' is 5; expected a string"),
        ({}, {"params": "many"}, "report", "trial 1: attribute 'params' is 'many'; expected an integer"),
        ({}, {"latency_ci_ms": "wide"}, "report", "trial 1: attribute 'latency_ci_ms' is 'wide'; expected [low, high]"),
        ({"latency_reference": [1]}, {}, "report", "attribute 'latency_reference' is [1]; expected a mapping"),
    ],
)
def test_a_study_attribute_of_the_wrong_type_is_named_not_a_traceback(
    study_attrs, trial_attrs, command, message, tmp_path
):
    (tmp_path / "space").mkdir()
    url = _study_with(tmp_path, study_attrs, trial_attrs)
    args = ["export", "1", "--no-weights", "--out", "x"] if command == "export" else ["report", "--no-remeasure"]
    r = run_nas(*args, "--study", "edited", "--storage", url, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert message in r.stderr.replace("\n", " "), r.stderr


def test_an_image_over_the_pixel_limit_is_named(tmp_path, monkeypatch):
    from PIL import Image

    from nas import viz

    Image.new("L", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4,096 > 2 x 1,000: a "bomb" here
    with pytest.raises(viz.ImageError, match=r"big.png: it has more pixels than PIL opens \(over 2,000"):
        viz.load_image(tmp_path / "big.png", 1, (32, 32), imagenet=False)


def test_cifar_without_network_says_so(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from nas.tasks.classify.data import CifarDataModule, DataError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    dm = CifarDataModule("cifar10", str(tmp_path / "c10"), (32, 32), download=True)
    with pytest.raises(DataError, match=r"data.download: cifar10 could not be downloaded into .*no network \(test\)"):
        dm.setup("fit")
