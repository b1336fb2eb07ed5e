"""nas export and nas train end to end on a tiny search (CPU): the exported model.py rebuilds the
trial's model in a fresh interpreter with its weights, ONNX and TorchScript agree with PyTorch,
crafted studies cannot inject code, and training resumes from its checkpoint."""

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import load_file

from nas import export
from nas import train as nas_train
from nas.core.architecture import Architecture
from nas.core.errors import UserError
from nas.measure.cost import LatencyTarget
from nas.search._loop import Search
from nas.study.studies import front
from nas.tasks.classify import export as classify_export
from nas.tasks.classify.model import build
from nas.tasks.spacefile import load_space

from _helpers import from_terminal, run_nas, space_file

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    path = space_file(
        root,
        "exp",
        training={"epochs": 2},
        stages={
            3: {"none": None, "cbam": {"reduction": 16, "kernel_size": 3}},
            4: {"none": None, "se": {"reduction": 16}, "sa": {"groups": 8}},
        },
    )
    space = load_space(path)
    # every architecture's latency ratio to the plain backbone given in the study's latency cache (what a
    # search measured before, it takes from there): fixed figures, a change per attention module, so the
    # front does not depend on this machine's timing. On this tiny data every trial ends its 2 epochs as
    # accurate as the baseline (they all predict one class), so the front is the fastest trial so far.
    # The sampler's order (baseline, cbam at stage 3, se at stage 4, a copy, sa at stage 4) then gives
    # both ways off the front: cbam joins it and leaves when se comes (its weights stored, then removed),
    # and sa completes behind se (its weights never stored).
    cost = {"cbam": -0.1, "se": -0.2, "sa": 0.2}
    target = LatencyTarget.from_space(space.latency).key()
    ratios = {
        str(a): 1 + sum(cost.get(part.split("(")[0], 0) for part in str(a).split("|")[1:])
        for a in space.architectures()
    }
    (root / "exp").mkdir()
    (root / "exp" / "latency.json").write_text(
        json.dumps({f"{arch}@{target}": {"ratios": [ratio] * 80} for arch, ratio in ratios.items()})
    )
    storage = f"sqlite:///{root / 'exp' / 'study.db'}"
    result = Search(space, "exp", storage, 4, sampler="random", prune=False, root=root).run()
    return result.study, root


def off_front(study):
    """The complete trials trained by the search (no copies, not the baseline) that are not on the front."""
    members = {m.number for m in front(study)}
    return [
        t
        for t in study.get_trials()
        if t.state.name == "COMPLETE"
        and t.number not in members
        and "duplicate_of" not in t.user_attrs
        and not t.user_attrs.get("baseline")
    ]


def stored(study, trial) -> Path:
    """The trial's weights file in the study's artifact store (a folder, by default)."""
    return Path(study.user_attrs["artifact_store"]) / trial.user_attrs["weights_artifact"]


def test_only_the_fronts_and_the_baselines_weights_are_kept_in_the_studys_artifact_store(searched):
    from safetensors import safe_open

    study, root = searched
    store = Path(study.user_attrs["artifact_store"])
    assert store == (root / "exp" / "artifacts").resolve(), "absolute: found from any directory"
    assert not (root / "exp" / "weights").exists() or not any((root / "exp" / "weights").iterdir())
    kept = {t.number: t for t in front(study)} | {t.number: t for t in study.trials if t.user_attrs.get("baseline")}
    assert sorted(p.name for p in store.iterdir()) == sorted(t.user_attrs["weights_artifact"] for t in kept.values())
    for t in kept.values():
        with safe_open(str(stored(study, t)), "pt") as f:
            assert f.metadata()["arch"] == t.user_attrs["arch"] and f.metadata()["trial"] == str(t.number)
        # Optuna's own listing (what optuna-dashboard shows) names the file after the trial
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
        assert [m.filename for m in metas] == [f"trial_{t.number}.safetensors"]
    # the complete trials off the front (each dominated by a member: as accurate or more, and faster)
    # have no weights: stored while on the front and removed when they left it (the study says which), or
    # never stored, because a member dominated them when they completed (the trial says which)
    system = study._storage.get_study_system_attrs(study._study_id)
    dropped = off_front(study)
    for t in dropped:
        assert any(m.values[0] >= t.values[0] and m.values[1] < t.values[1] for m in front(study)), t.number
    left = [t for t in dropped if "weights_artifact" in t.user_attrs]
    behind = [t for t in dropped if "weights_not_kept" in t.user_attrs]
    assert len(left) == len(behind) == 1 and len(dropped) == 2, [(t.number, t.values) for t in study.get_trials()]
    assert not stored(study, left[0]).exists()
    assert system[f"weights_removed:{left[0].number}"] == left[0].user_attrs["weights_artifact"]
    ahead = int(behind[0].user_attrs["weights_not_kept"].rsplit("trial ", 1)[1].split()[0])
    assert ahead in {m.number for m in front(study)}, behind[0].user_attrs["weights_not_kept"]


def test_export_best_reloads_in_a_fresh_interpreter_with_equal_outputs(searched, tmp_path):
    study, root = searched
    trial, why = export.pick_best(study)
    assert trial.values[0] == max(t.values[0] for t in front(study)) and "most accurate" in why
    out = tmp_path / "best"
    result = export.export_trial(study, trial, out, onnx=True, torchscript=True, root=root, name="nas_exp_best")
    assert {f.name for f in result.files} >= {
        "model.py",
        "architecture.yaml",
        "metrics.json",
        "weights.safetensors",
        "model.onnx",
        "model.torchscript.pt",
    }
    assert result.checks["onnx"] <= 1e-4 and result.checks["torchscript"] <= 1e-4 and result.checks["model.py"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["trial"] == trial.number and metrics["accuracy"] == trial.values[0]
    assert metrics["latency_target"] == "cpu/b1/32px/t1" and metrics["params"] > 0

    # The trial's own weights, through the search's builder: the reference output.
    arch = Architecture.parse(trial.user_attrs["arch"])
    ref = build(arch, 10, 1).eval()
    ref.load_state_dict(load_file(str(stored(study, trial))))
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(ref(x), tmp_path / "ref.pt")
    code = textwrap.dedent(f"""
        import sys, timm, torch
        sys.path.insert(0, {str(out)!r})
        import model
        assert not any(m.startswith("nas") for m in sys.modules), "model.py must not import the search code"
        x = torch.load({str(tmp_path / "x.pt")!r}, weights_only=True)
        ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
        with torch.no_grad():
            a = model.build_model(weights=True).eval()(x)
            b = timm.create_model("nas_exp_best", pretrained=True).eval()(x)
        assert torch.equal(a, ref) and torch.equal(b, ref), (a - ref).abs().max()
        # the trial's validation accuracy, reproduced from model.py on the embedded data it was measured on
        import json, yaml
        from nas.tasks.classify.data import digits_splits
        data = yaml.safe_load(open({str(out / "architecture.yaml")!r}))["data"]
        val = digits_splits(canvas=data["canvas"], train=data["train"], val=data["val"], test=data["test"],
                            clutter=data["clutter"], noise=data["noise"], seed=data["seed"])["val"]
        net = model.build_model(weights=True).eval()
        with torch.no_grad():
            acc = (net(val.images).argmax(1) == val.labels).float().mean().item()
        expected = json.load(open({str(out / "metrics.json")!r}))["accuracy"]
        assert abs(acc - expected) < 1e-6, (acc, expected)
        print("same")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "same" in run.stdout, run.stderr[-3000:]


def test_export_budgets_and_clear_failures(searched, tmp_path):
    study, root = searched
    members = front(study)
    fastest = min(members, key=lambda t: t.values[1])
    trial, why = export.pick_best(study, max_latency_ms=fastest.values[1])
    assert trial.number == fastest.number and "latency <=" in why
    with pytest.raises(UserError, match="no trial on the front meets latency <= 0.001 ms"):
        export.pick_best(study, max_latency_ms=0.001)
    with pytest.raises(UserError, match="does not exist"):
        export.get_trial(study, 999)
    dropped = off_front(study)
    assert dropped, "the fixture leaves a complete trial off the front"
    for t in dropped:  # off the front: weights gone, and the message says why and what to do
        why = "removed when the trial left the front" if "weights_artifact" in t.user_attrs else "were never kept"
        with pytest.raises(UserError, match=f"{why}.*Export a front member, add --no-weights"):
            export.export_trial(study, t, tmp_path / "x", root=root)
    # what it says to do: the definition alone exports
    export.export_trial(study, dropped[0], tmp_path / "defonly", weights=False, root=root)
    assert (tmp_path / "defonly" / "model.py").exists() and not (tmp_path / "defonly" / "weights.safetensors").exists()


def test_export_fails_when_the_exported_model_differs_from_the_searchs_beyond_the_tolerance(
    searched, tmp_path, monkeypatch
):
    """The exported model.py is run against the model the search built, with the trial's weights: a
    model.py whose outputs are 1e-3 off fails the export (tolerance 1e-4: exit 2) with what differs and
    by how much; export_trial given a wider tolerance accepts it and reports the difference."""
    study, root = searched
    member = front(study)[0]
    real = classify_export.import_model_py

    def off_by_a_thousandth(path):
        module = real(path)
        build_model = module.build_model

        def build(*args, **kwargs):
            net = build_model(*args, **kwargs)
            net.register_forward_hook(lambda m, inputs, out: out + 1e-3)
            return net

        module.build_model = build
        return module

    monkeypatch.setattr(classify_export, "import_model_py", off_by_a_thousandth)
    storage = f"sqlite:///{root / 'exp' / 'study.db'}"
    r = run_nas("export", member.number, "--study", "exp", "--storage", storage, "--out", tmp_path / "x", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "the exported model.py differs from PyTorch by 0.001 (tolerance 0.0001)" in " ".join(r.stderr.split()), r
    result = export.export_trial(study, member, tmp_path / "y", root=root, tolerance=1e-2)
    assert result.checks["model.py"] == pytest.approx(1e-3, rel=1e-2)


def test_weights_of_another_study_or_any_other_file_are_refused_before_anything_is_written(searched, tmp_path):
    """Two studies named alike under one runs/ folder (different storages) write the same weights
    files; a tampered storage can point a trial at any file. Export checks the file's metadata first."""
    from nas.core.artifacts import save_weights

    study, root = searched
    member = front(study)[0]
    arch = member.user_attrs["arch"]
    path = stored(study, member)
    original = path.read_bytes()
    try:  # the other study's trial of the same number and architecture, written over this one's
        other = {"arch": arch, "trial": str(member.number), "study": "exp", "study_uid": "0" * 32}
        save_weights(build(Architecture.parse(arch), 10, 1), path, other)
        with pytest.raises(UserError, match=r"another study or trial: study_uid '0{32}'"):
            export.export_trial(study, member, tmp_path / "a", root=root)
        assert not (tmp_path / "a").exists()
    finally:
        path.write_bytes(original)
    export.export_trial(study, member, tmp_path / "ok", root=root)  # its own weights pass

    # a tampered storage: an artifact id that leads out of the store, a path of a study made before it
    crafted = copy.deepcopy(member)
    crafted.user_attrs = {**crafted.user_attrs, "weights_artifact": "../../../passwd"}
    with pytest.raises(UserError, match="cannot read artifact ../../../passwd"):
        export.export_trial(study, crafted, tmp_path / "b", root=root)
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    crafted.user_attrs = {k: v for k, v in crafted.user_attrs.items() if k != "weights_artifact"}
    crafted.user_attrs["weights"] = str(tmp_path / "passwd")
    with pytest.raises(UserError, match="is not a safetensors weights file"):
        export.export_trial(study, crafted, tmp_path / "b", root=root)
    assert not (tmp_path / "b").exists()


def test_export_and_viz_from_another_directory_fetch_the_weights_from_the_store(searched, tmp_path):
    """The search ran with its runs/ folder elsewhere; the same storage URL is all export and viz need."""
    study, root = searched
    storage = f"sqlite:///{root / 'exp' / 'study.db'}"
    member = front(study)[0]
    r = run_nas("export", member.number, "--study", "exp", "--storage", storage, "--out", "e", cwd=tmp_path)
    assert r.returncode == 0, r
    assert (tmp_path / "e" / "weights.safetensors").read_bytes() == stored(study, member).read_bytes()
    r = run_nas("viz", "--study", "exp", "--storage", storage, "--trial", member.number, "--digits", 1, cwd=tmp_path)
    assert r.returncode == 0, r
    assert list((tmp_path / "runs" / "exp" / "viz" / f"trial-{member.number}").glob("*.png"))
    # a store given explicitly that is not the study's: named, nothing written
    r = run_nas(
        "export",
        member.number,
        "--study",
        "exp",
        "--storage",
        storage,
        "--out",
        "f",
        "--artifacts",
        "elsewhere",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "is not there" in r.stderr and not (tmp_path / "f").exists(), r


@pytest.mark.parametrize(
    "arch",
    [
        "resnet10t|none|none|se(r=__import__('os').system('echo hacked'))|none",
        "resnet10t|none|none|se(r=16);import os|none",
        "os.system('x')|none|none|none|none",
        "resnet10t|none|none|evil()|none",
    ],
)
def test_crafted_architecture_in_a_study_is_rejected_not_executed(searched, tmp_path, arch):
    study, root = searched
    crafted = copy.deepcopy(front(study)[0])  # as a tampered storage would return it
    crafted.user_attrs = {**crafted.user_attrs, "arch": arch}
    with pytest.raises(UserError):
        export.export_trial(study, crafted, tmp_path / "evil", root=root)
    assert not (tmp_path / "evil" / "model.py").exists()


def test_generated_code_refuses_unchecked_values():
    arch = Architecture.parse("resnet10t|none|none|none|se(r=16)")
    with pytest.raises(UserError, match="timm model name"):
        classify_export.render_model_py(arch, 10, 1, "nas_x\nimport os")
    edit = classify_export.Edit("set", "layer4.0", "se", "se", 512, (("reduction", "16); import os; ("),))
    with pytest.raises(UserError, match="refusing"):
        classify_export._line(edit)
    with pytest.raises(UserError, match="refusing to write module path"):
        classify_export._line(classify_export.Edit("identity", "layer4.0;import os", "se"))
    with pytest.raises(UserError, match="refusing to write mechanism"):
        classify_export._line(classify_export.Edit("set", "layer4.0", "se", "se2", 512, ()))


def test_train_resumes_after_ctrl_c_and_writes_weights_model_py_loads(searched, tmp_path):
    study, root = searched
    trial, _ = export.pick_best(study)
    folder = tmp_path / "exp"
    export.export_trial(study, trial, folder, root=root)
    out = tmp_path / "t"
    proc = from_terminal(
        [sys.executable, "-m", "nas", "train", str(folder), "--epochs", "6", "--out", str(out)],
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("epoch 3/6"):  # printed once epoch 3 is checkpointed
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, "".join(lines) + rest
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "weights.safetensors").exists()
    # what it will do, before the first epoch: data, steps, output folder, logs
    head = "".join(lines[:4]).replace("\n", " ")
    assert lines[0].startswith(f"training {trial.user_attrs['arch']}: 256 training and 128 validation images"), head
    assert "(digits, 32x32, 10 classes); batch 64, 4 steps per epoch x 6 epochs" in head, head
    assert f"output: {out}" in head and "tensorboard --logdir" in head, head

    with pytest.raises(UserError, match="resume with --epochs 6"):
        nas_train.train(folder, epochs=5, out=out)
    shown = [line for line in lines if line.startswith("epoch ")]
    resumed = nas_train.train(folder, epochs=6, out=out)
    # every finished epoch was kept, improved or not: the run goes on after epoch 3
    assert resumed.resumed_from == 3 and len(resumed.curve) == 6, (resumed.resumed_from, shown)
    for i, line in enumerate(shown[:3]):
        assert f"{resumed.curve[i]:.4f}" in line, "the first epochs' accuracies are the interrupted run's"
    with pytest.raises(UserError, match="exists"):
        nas_train.train(folder, epochs=6, out=out, resume=False)
    model = classify_export.import_model_py(folder / "model.py").build_model(weights=resumed.weights).eval()
    trained = build(trial_arch(trial), 10, 1).eval()
    trained.load_state_dict(load_file(str(resumed.weights)))
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 6 and metrics["val_acc_curve"] == resumed.curve
    # per-epoch logs: train loss, learning rate and val accuracy in metrics.csv, and TensorBoard events
    import csv

    rows = list(csv.DictReader((out / "logs" / "metrics.csv").open()))
    per_epoch = {}
    for row in rows:
        per_epoch.setdefault(int(row["epoch"]), {}).update({k: v for k, v in row.items() if v != ""})
    assert sorted(per_epoch) == list(range(6)), rows
    for e, row in per_epoch.items():
        assert float(row["val_acc"]) == pytest.approx(resumed.curve[e]), (e, row)
    # an epoch's mean loss and its learning rate are logged after its validation: Ctrl-C right after
    # "epoch 3/6" may take them for that epoch (index 2); every other epoch has both
    complete = [
        e
        for e, row in per_epoch.items()
        if 0 < float(row.get("train_loss", "nan")) < 10 and 0 <= float(row.get("lr", "nan")) < 1
    ]
    assert set(range(6)) - set(complete) <= {2}, rows
    assert list((out / "logs").glob("events.out.tfevents.*")), "TensorBoard events beside metrics.csv"

    # a checkpoint cut short (a full disk, a copy interrupted) is named, not a traceback
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "last.ckpt").write_bytes((out / "checkpoints" / "last.ckpt").read_bytes()[:1000])
    r = run_nas("train", folder, "--epochs", 6, "--out", broken)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "last.ckpt cannot be read as a checkpoint" in r.stderr, r


def trial_arch(trial):
    return Architecture.parse(trial.user_attrs["arch"])


def test_export_refuses_a_folder_holding_other_files_and_writes_its_own_again(searched, tmp_path):
    study, root = searched
    storage = f"sqlite:///{root / 'exp' / 'study.db'}"
    trial, _ = export.pick_best(study)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    args = ("export", trial.number, "--study", "exp", "--storage", storage, "--no-weights", "--out")
    r = run_nas(*args, out, cwd=tmp_path)
    assert r.returncode == 2 and "a new or empty folder (it holds 1 entries); add --force" in r.stderr, r
    assert os.listdir(out) == ["mine.txt"]
    for _ in range(2):  # an export of the same trial is written again, as asked
        r = run_nas(*args, tmp_path / "fresh", cwd=tmp_path)
        assert r.returncode == 0, r
    r = run_nas(*args, out, "--force", cwd=tmp_path)
    assert r.returncode == 0 and (out / "mine.txt").read_text() == "keep" and (out / "model.py").exists(), r
