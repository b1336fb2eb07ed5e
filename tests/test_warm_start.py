"""Trials that start from a trained network: attention put in with ``insert: identity`` leaves the network
computing exactly what it computed (every mechanism, every placement, every block family), the starting
weights go where they belong, and the start settings are checked where they are written."""

import functools

import pytest
import torch

import attention
from nas.core.architecture import Architecture
from nas.core.errors import UserError
from nas.tasks.classify import backbone as bb
from nas.tasks.classify.model import build

from _helpers import SMALL_HP, space_file

BACKBONES = {  # one of each block family with slots, small enough for a quick test: (size, chans, stage)
    "resnet10t": (32, 1, -1),  # BasicBlock
    # Bottleneck; its third stage (1,024 channels): on the last one's 2,048, SOCA's covariance square
    # root alone takes 5 s a call on one thread (C^3), and every placement is at every stage
    "resnet14t": (32, 1, -2),
    "mobilenetv3_small_050": (32, 1, -1),  # InvertedResidual / DepthwiseSeparable
    "regnetx_002": (32, 1, -1),  # RegNet Bottleneck
}


def _cases():
    for backbone, (size, chans, stage) in BACKBONES.items():
        infos = bb.describe(backbone, (size, size), chans)
        for info in infos[stage:][:1]:  # one late stage of each: every placement is there, and the test stays quick
            for placement in info.placements:
                for name, spec in attention.MECHANISMS.items():
                    hp = {k: v for k, v in SMALL_HP.get(name, {}).items()}
                    channels = info.channels[placement]
                    if bb.placement_problem(name, placement, info.index, info.placements, info.builtin, True):
                        continue
                    if not all(spec.is_valid(c, **hp) for c in channels):
                        hp = {}
                        if not all(spec.is_valid(c) for c in channels):
                            continue
                    yield backbone, size, chans, infos, info.index, placement, name, hp


CASES = list(_cases())


def _arch(backbone, infos, index, placement, name, hp):
    spec = attention.MECHANISMS[name]
    hparams = ",".join(f"{spec.hparam(k, v).short}={v}" for k, v in hp.items())
    choice = f"{name}({hparams})" if hparams else name
    choice += "" if placement == spec.placement else f"@{placement}"
    builtin = any(info.builtin.get(placement) for info in infos if info.index == index)  # "!": replaces it
    return Architecture.parse(
        "|".join([backbone, *(("!" if builtin else "") + choice if i.index == index else "none" for i in infos)])
    )


def test_every_mechanism_family_and_placement_is_covered():
    assert {c[6] for c in CASES} == set(attention.MECHANISMS)
    assert {c[5] for c in CASES} >= set(attention.PLACEMENTS)
    assert {c[0] for c in CASES} == set(BACKBONES)


@functools.cache
def _start(backbone, size, chans, stages):
    """A backbone's starting network, built once for all its cases: its weights (a trained network is
    not at its initialisation: every weight moved), an input, and the network's output on it."""
    plain = build(Architecture.parse("|".join([backbone] + ["none"] * stages)), 10, chans, init_seed=0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
        x = torch.randn(2, chans, size, size, generator=gen)
        return {k: v.clone() for k, v in plain.state_dict().items()}, x, plain.eval()(x)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-s{c[4]}-{c[5]}-{c[6]}")
def test_identity_insertion_computes_exactly_what_the_starting_network_computed(case):
    from nas.measure.cost import forward_fn

    backbone, size, chans, infos, index, placement, name, hp = case
    start, x, expected = _start(backbone, size, chans, len(infos))
    before = {k: v.clone() for k, v in start.items()}
    arch = _arch(backbone, infos, index, placement, name, hp)
    warm = build(arch, 10, chans, init_seed=1, start=start, gated=True).eval()
    with torch.no_grad():
        assert torch.equal(warm(x), expected), arch
    assert all(torch.equal(v, before[k]) for k, v in start.items()), "the build left its start as it was"
    gates = [m for m in warm.modules() if isinstance(m, attention.Gated)]
    assert gates and all(float(g.gate.detach()) == 0.0 for g in gates), arch
    # a trial's latency is timed on the very model it then trains (Trials._latency): inference, as the
    # meter runs it, changes no weight or buffer and keeps nothing a training step would trip on (an
    # inference tensor saved for backward)
    state = {k: v.clone() for k, v in warm.state_dict().items()}
    timed = forward_fn(warm, x)
    timed(), timed()
    assert (
        all(torch.equal(v, state[k]) for k, v in warm.state_dict().items()) and warm.state_dict().keys() == state.keys()
    )
    warm.train()(x).square().mean().backward()
    assert all(p.grad is not None for p in warm.parameters()), arch
    official = build(arch, 10, chans, init_seed=1, start=start, gated=False).eval()
    assert not any(isinstance(m, attention.Gated) for m in official.modules())


def test_a_gate_learns_from_the_first_step():
    """The gate's gradient is the mechanism's change to its input: non-zero, so training moves it."""
    gated = attention.Gated(attention.create("se", 16, reduction=4))
    x = torch.randn(4, 16, 8, 8)
    gated(x).square().mean().backward()
    assert gated.gate.grad is not None and float(gated.gate.grad) != 0.0


def test_builds_from_one_start_are_copies_equal_to_a_fresh_build_and_follow_a_changed_start():
    """Builds from a start copy one plain network loaded once per process: each equals a build from
    scratch with the start loaded (every tensor), training one leaves the next as the start, and a
    start changed in place since is loaded again."""
    from nas.tasks.classify import model as assembly

    plain = build(Architecture.parse("resnet10t|none|none|none|none"), 10, 1, init_seed=0)
    start = {k: v.clone() for k, v in plain.state_dict().items()}
    arch = Architecture.parse("resnet10t|se(r=4)|none|eca(k=3)|none")
    fresh = bb.create("resnet10t", num_classes=10, in_chans=1)
    fresh.load_state_dict(start)
    first = build(arch, 10, 1, init_seed=1, start=start)
    with torch.no_grad():
        for p in first.parameters():
            p.add_(1.0)  # as training would
    second = build(arch, 10, 1, init_seed=1, start=start)
    got = second.state_dict()
    assert all(torch.equal(got[k], v) for k, v in fresh.state_dict().items())
    assert assembly._started is not None and assembly._started[1] is start  # the copy, not a rebuild
    with torch.no_grad():
        start["fc.bias"].add_(2.0)
    assert torch.equal(build(arch, 10, 1, init_seed=1, start=start).state_dict()["fc.bias"], start["fc.bias"])


@pytest.mark.parametrize("insert", ["identity", "official"])
def test_insert_lr_gives_what_the_start_did_not_have_its_own_rate_and_nothing_else(insert, tmp_path):
    """With ``insert_lr`` the optimiser holds the inserted attention (and its gates) at that rate, every
    parameter of the starting network at ``lr``; each parameter once. A replaced 3x3 convolution kept
    as the gate's ``old`` is trained weights: it stays at ``lr``."""
    from nas.tasks.classify.fit import parameter_groups
    from nas.tasks.spacefile import load_space

    training = {"init": "baseline", "init_epochs": 1, "lr": 0.001, "insert_lr": 0.02, "insert": insert}
    space = load_space(space_file(tmp_path, training=training))
    plain = build(Architecture.parse("resnet10t|none|none|none|none"), 10, 1, init_seed=0)
    start = plain.state_dict()
    arch = Architecture.parse("resnet10t|none|none|se(r=4)|sk(r=4)@replace_conv3x3")
    model = build(arch, 10, 1, init_seed=0, start=start, gated=insert == "identity")
    groups = parameter_groups(model, space.training)
    assert [g["lr"] for g in groups] == [0.001, 0.02]
    names = {id(p): n for n, p in model.named_parameters()}
    fast = {names[id(p)] for p in groups[1]["params"]}
    slow = {names[id(p)] for p in groups[0]["params"]}
    assert len(fast) + len(slow) == len(names) and not fast & slow
    gated = insert == "identity"
    new = (
        {n for n in names.values() if n.endswith(".gate") or ".new." in n}
        if gated
        else set(names.values()) - {k for k in start if k in names.values()}
    )
    assert fast == new and fast
    assert not any(n.startswith("layer4.0.conv2.old.") for n in fast)  # the replaced convolution: trained
    if gated:
        assert {n for n in slow if ".old." in n}, "the kept convolution is among the trained parameters"
    scratch = load_space(space_file(tmp_path, "s", training={"lr": 0.001}))
    assert [g["lr"] for g in parameter_groups(model, scratch.training)] == [0.001]


@pytest.mark.parametrize(
    "training, words",
    [
        ({"init": "baseline"}, "training.init_epochs: 0 is not allowed with init: baseline"),
        ({"init": "pretrained"}, "pretrained needs one of checkpoint: <a weights file> or pretrained: true"),
        ({"init": "scratch", "checkpoint": "w.safetensors"}, "training.checkpoint: only with init: pretrained"),
        ({"init": "warm"}, "training.init: 'warm' is not allowed; expected one of 'scratch', 'baseline', 'pretrained'"),
        ({"insert": "zero"}, "training.insert: 'zero' is not allowed; expected one of 'identity', 'official'"),
        ({"insert_lr": 0.01}, "training.insert_lr: only with init: baseline or pretrained (init is scratch)"),
    ],
)
def test_start_settings_are_checked_where_they_are_written(training, words, tmp_path):
    from nas.tasks.spacefile import load_space

    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")):
        load_space(space_file(tmp_path, training=training))


# -- the study's starting network: made once, kept in the store, checked by every reader -----------------

WARM = {"epochs": 2, "batch_size": 32, "init": "baseline", "init_epochs": 3, "noise_seeds": 2, "lr": 0.003}


def _starts_in(store):
    """The files of a folder artifact store that hold a study's starting network (their metadata says so)."""
    from safetensors import safe_open

    found = []
    for f in sorted(p for p in store.iterdir() if p.is_file()):
        with safe_open(str(f), "pt") as h:
            if (h.metadata() or {}).get("role") == "start":
                found.append(f)
    return found


@pytest.fixture(scope="module")
def warm_study(tmp_path_factory):
    """A warm-started search by two workers (3 architectures, no pruning), and its study."""
    import optuna

    from _helpers import run_nas

    folder = tmp_path_factory.mktemp("warm")
    space = space_file(
        folder,
        "warm",
        training=WARM,
        data={"train": 512},
        stages={4: {"none": None, "se": {"reduction": 4}, "eca": None}},
    )
    r = run_nas("search", "--space", space, "--trials", 3, "--no-prune", "--workers", 2, cwd=folder)
    assert r.returncode == 0, r
    study = optuna.load_study(study_name="warm", storage=f"sqlite:///{folder / 'runs' / 'warm' / 'study.db'}")
    return folder, study


def test_two_workers_train_the_warm_up_once_and_every_run_starts_from_it(warm_study):
    from nas.study.start import recorded

    folder, study = warm_study
    record = recorded(study)
    assert record.init == "baseline" and record.epochs == 3 and len(record.curve) == 3
    assert record.source == "resnet10t|none|none|none|none trained 3 epochs from seed 0 (peak learning rate 0.003)"
    # one start in the store: the second worker waited for the first one's and fetched it
    starts = _starts_in(folder / "runs" / "warm" / "artifacts")
    assert [f.name for f in starts] == [record.artifact]
    # the trials fine-tuned it: the baseline's 2 epochs go on from where the warm-up's 3 ended
    base = next(t for t in study.trials if t.user_attrs.get("baseline"))
    assert len(base.user_attrs["val_acc_curve"]) == 2
    assert base.user_attrs["val_acc_curve"][-1] > record.curve[-1] + 0.1, (record.curve, base.user_attrs)


def _copy_study(folder, tmp_path):
    import shutil

    shutil.copytree(folder / "runs", tmp_path / "runs")
    shutil.copy(folder / "warm.yaml", tmp_path / "warm.yaml")
    storage = f"sqlite:///{tmp_path / 'runs' / 'warm' / 'study.db'}"
    import optuna

    study = optuna.load_study(study_name="warm", storage=storage)
    # the copied study's store is where the original's is recorded; point it at the copy
    study.set_user_attr("artifact_store", str(tmp_path / "runs" / "warm" / "artifacts"))
    return study, storage


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_a_missing_or_damaged_start_is_an_error_naming_the_study_and_the_store(warm_study, damage, tmp_path):
    from nas.study.start import recorded

    from _helpers import run_nas

    study, storage = _copy_study(warm_study[0], tmp_path)
    file = tmp_path / "runs" / "warm" / "artifacts" / recorded(study).artifact
    if damage == "missing":
        file.unlink()
    else:
        data = bytearray(file.read_bytes())
        data[-100] ^= 0xFF  # one byte of a weight changed: still safetensors, another network
        file.write_bytes(bytes(data))
    before = (len(study.trials), dict(study.user_attrs))
    store = str(tmp_path / "runs" / "warm" / "artifacts")
    words = "cannot be read" if damage == "missing" else "is damaged or was replaced"
    for args in (
        ("search", "--space", tmp_path / "warm.yaml", "--trials", 4, "--no-prune"),  # a resumed search
        ("report", "--study", "warm", "--storage", storage, "--confirm", 2, "--no-remeasure"),  # re-runs
        ("export", "best", "--study", "warm", "--storage", storage, "--out", tmp_path / "e"),
    ):
        r = run_nas(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r)
        assert "study 'warm'" in r.stderr and store in r.stderr and words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    import optuna

    after = optuna.load_study(study_name="warm", storage=storage)
    assert (len(after.trials), dict(after.user_attrs)) == before  # nothing trained, nothing recorded
    assert not (tmp_path / "e").exists()


def test_export_of_a_warm_trial_records_its_start_and_nas_train_repeats_or_continues_it(warm_study, tmp_path):
    import json

    import yaml
    from safetensors.torch import load_file

    from nas.study.start import recorded, sha256_of

    from _helpers import run_nas

    folder, study = warm_study
    storage = f"sqlite:///{folder / 'runs' / 'warm' / 'study.db'}"
    from nas.study.studies import front

    trial = front(study)[0]  # its weights are kept
    out = tmp_path / "e"
    r = run_nas("export", trial.number, "--study", "warm", "--storage", storage, "--out", out)
    assert r.returncode == 0, r
    record = recorded(study)
    card = yaml.safe_load((out / "architecture.yaml").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    for start in (card["start"], metrics["start"]):
        assert (start["artifact"], start["sha256"]) == (record.artifact, record.sha256)
        assert start["file_sha256"] == sha256_of(out / "start.safetensors")
    # --from-start: the trial's network at its first step, then its epochs: the trial's curve, exactly (on
    # one thread, as each of the search's two workers trained)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        r = run_nas("train", out, "--from-start", "--out", tmp_path / "t1")
    finally:
        torch.set_num_threads(threads)
    assert r.returncode == 0, r
    trained = json.loads((tmp_path / "t1" / "metrics.json").read_text())
    assert trained["val_acc_curve"] == pytest.approx(trial.user_attrs["val_acc_curve"], abs=1e-6)
    # the default: on from the trial's weights (its first epoch starts where the trial ended)
    r = run_nas("train", out, "--out", tmp_path / "t2")
    assert r.returncode == 0 and f"starting from {out / 'weights.safetensors'}" in r.stdout, r
    weights = load_file(str(out / "weights.safetensors"))
    assert set(weights) == set(load_file(str(out / "start.safetensors")))  # the same architecture, both files
    # a scratch export has no start to repeat from
    card["start"] = None
    card["training"]["init"] = "scratch"
    (out / "architecture.yaml").write_text(yaml.safe_dump(card))
    r = run_nas("train", out, "--from-start", "--out", tmp_path / "t3")
    assert r.returncode == 2 and "--from-start" in r.stderr and "trained from scratch" in r.stderr, r


# -- given weights (init: pretrained) --------------------------------------------------------------------


def _pretrained_space(tmp_path, checkpoint, **top):
    from nas.tasks.spacefile import load_space

    training = {"init": "pretrained", "checkpoint": str(checkpoint)}
    return load_space(space_file(tmp_path, training=training, **top))


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_timm_checkpoint_for_other_classes_and_colour_input_fits_the_plain_backbone(wrapped, tmp_path):
    """timm's file of resnet10t (1000 classes, 3 input channels) for a space of 10 classes and 1 channel:
    every tensor but the classifier's comes from the file, the first convolution adapted as timm adapts
    it (summed over the colours), the classifier drawn from the seed; nested and DDP-prefixed files too."""
    from timm.models import adapt_input_conv

    from nas.tasks.classify.start import given_start

    torch.manual_seed(5)
    theirs = bb.create("resnet10t", num_classes=1000, in_chans=3).state_dict()
    payload = {"state_dict": {f"module.{k}": v for k, v in theirs.items()}} if wrapped else theirs
    torch.save(payload, tmp_path / "r.pth")
    space = _pretrained_space(tmp_path, tmp_path / "r.pth")
    state, source, notes = given_start(space, 10, seed=0)
    torch.manual_seed(0)
    fresh = bb.create("resnet10t", num_classes=10, in_chans=1).state_dict()
    assert set(state) == set(fresh)
    for key, value in state.items():
        if key.startswith("fc."):
            assert torch.equal(value, fresh[key]), key  # drawn from the seed, as a trial's plain network
        elif key == "conv1.0.weight":
            assert torch.equal(value, adapt_input_conv(1, theirs[key]))
        else:
            assert torch.equal(value, theirs[key]), key
    assert str(tmp_path / "r.pth") in source and "SHA-256" in source
    assert any("kept as initialised from the seed (fc.weight, fc.bias)" in n for n in notes), notes
    assert any("conv1.0.weight from 3 input channels to 1" in n for n in notes), notes
    # the start builds every architecture: the plain network computes what the file's network computes
    build(Architecture.parse("resnet10t|none|none|none|se(r=4)"), 10, 1, init_seed=0, start=state, gated=True)


def test_weights_of_another_design_are_refused_naming_the_first_tensor(tmp_path):
    """timm's skresnet18 is another network than resnet18 with selective kernels in our sense: refused,
    the first tensor that differs named, nothing loaded."""
    import timm
    from safetensors.torch import save_file

    from nas.core.checkpoints import CheckpointFileError
    from nas.tasks.classify.start import given_start

    save_file(timm.create_model("skresnet18", num_classes=10).state_dict(), str(tmp_path / "sk.safetensors"))
    space = _pretrained_space(tmp_path, tmp_path / "sk.safetensors", backbone="resnet18")
    with pytest.raises(
        CheckpointFileError,
        match=r"do not fit the plain resnet18 \(1 input channels, 10 classes\): 280 tensors differ; "
        r"first: 'layer1\.0\.conv1\.weight' \(64, 64, 3, 3\) is not in it",
    ):
        given_start(space, 10, seed=0)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointFileError, match=r"junk\.pth cannot be read as weights"):
        given_start(_pretrained_space(tmp_path, tmp_path / "junk.pth"), 10, seed=0)


def test_published_weights_without_the_network_say_what_to_do(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from nas.core.checkpoints import CheckpointFileError
    from nas.tasks.classify.start import given_start
    from nas.tasks.spacefile import load_space

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as a machine without the network
    space = load_space(space_file(tmp_path, training={"init": "pretrained", "pretrained": True}))
    with pytest.raises(CheckpointFileError, match="needs the network .* Give checkpoint: <a weights file> instead"):
        given_start(space, 10, seed=0)


DETECT = """
name: det
detector: yolov8n.yaml
input_size: 64
data: {{source: digits_boxes, train: 64, val: 16}}
positions:
  - at: p3
    mechanisms: {{none: , cbam: {{reduction: 16, kernel_size: 7}}}}
  - at: before_sppf
    mechanisms: {{none: , se: {{reduction: 16}}}}
training: {{epochs: 1, batch_size: 4, init: pretrained, checkpoint: {checkpoint}}}
objectives: [mAP50-95, latency]
latency: {{device: cpu, threads: 1, rounds: 16}}
"""


def _ultralytics_checkpoint(path):
    """A checkpoint as ultralytics releases them (yolov8n.pt: 80 classes, the model in half precision), of
    random weights: no download."""
    import copy

    from nas.tasks.detect import ultra

    ultra.load()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(7)
    model = DetectionModel("yolov8n.yaml", nc=80, verbose=False)
    with torch.no_grad():
        for p in model.parameters():  # away from any initialisation a fresh model could share with it
            p.add_(torch.randn_like(p) * 0.1)
    torch.save({"model": copy.deepcopy(model).half(), "train_args": {}, "epoch": -1}, path)
    return {k: v.float() for k, v in model.half().state_dict().items()}


def test_an_ultralytics_checkpoint_reaches_every_layer_it_was_trained_for_after_inserted_rows(tmp_path):
    """yolov8n.pt's layers with two attention rows inserted: every tensor of the file lands on the layer it
    was trained for (its index shifted by the rows before it), but the Detect layer's class outputs (80
    classes in the file, 10 here), drawn from the seed. ultralytics' own transfer (``model.load``, by name
    and shape) of the same file into the same model leaves the layers after the first row random or gives
    them another layer's weights: counted here."""
    import yaml

    from nas.tasks.detect.model import build, model_dict
    from nas.tasks.detect.start import given_start
    from nas.tasks.spacefile import load_space

    theirs = _ultralytics_checkpoint(tmp_path / "yolov8n.pt")
    (tmp_path / "det.yaml").write_text(DETECT.format(checkpoint=tmp_path / "yolov8n.pt"))
    space = load_space(tmp_path / "det.yaml")
    state, source, notes = given_start(space, 10, seed=0)
    assert "(ultralytics, SHA-256" in source
    fresh = {k for k in state if not torch.equal(state[k], theirs.get(k, torch.empty(0)))}
    assert fresh and all(k.startswith("model.22.cv3.") for k in fresh), sorted(fresh)
    arch = Architecture.parse("yolov8n|cbam(r=16,k=7)|se(r=16)")
    for gated in (False, True):
        model = build(space.detector, space.positions, arch, 10, init_seed=0, start=state, gated=gated)
        rows = {p.after for p in space.positions}
        placed = 0
        for j in range(len(space.detector.dict["backbone"]) + len(space.detector.dict["head"])):
            shift = sum(1 for a in rows if a < j)
            mine = model.model[j + shift].state_dict()
            for name, value in mine.items():
                key = f"model.{j}.{name}"
                if key in fresh:
                    continue
                assert torch.equal(value, theirs[key]), (gated, key, j + shift)
                placed += 1
        assert placed == len(theirs) - len(fresh)
    # ultralytics' transfer: by name and shape, blind to the shifted indices
    from ultralytics.nn.tasks import DetectionModel

    d = model_dict(space.detector, space.positions, arch, 10)
    theirs_model = torch.load(tmp_path / "yolov8n.pt", weights_only=False)["model"]
    torch.manual_seed(0)
    plain_load = DetectionModel(yaml.safe_load(yaml.safe_dump(d)), ch=3, nc=10, verbose=False)
    before = {k: v.clone() for k, v in plain_load.state_dict().items()}
    plain_load.load(theirs_model, verbose=False)
    to_plain, m = {}, 0  # index in the model with rows -> index in the plain detector
    for j in range(len(space.detector.dict["backbone"]) + len(space.detector.dict["head"])):
        to_plain[m] = j
        m += 2 if j in rows else 1
    counts = {"own": 0, "random": 0, "another layer's": 0}
    for key, value in plain_load.state_dict().items():
        layer, rest = int(key.split(".")[1]), key.split(".", 2)[2]
        if layer not in to_plain or to_plain[layer] <= min(rows) or key.endswith("num_batches_tracked"):
            continue  # an attention row, or a layer before the first row
        home = f"model.{to_plain[layer]}.{rest}"
        if home in theirs and torch.equal(value.float(), theirs[home]):
            counts["own"] += 1
        elif torch.equal(value, before[key]):
            counts["random"] += 1
        else:
            counts["another layer's"] += 1
    assert counts["random"] > 0 and counts["another layer's"] > 0, counts


def test_a_detector_s_attention_rows_train_at_insert_lr_in_ultralytics_own_groups(tmp_path):
    """Detection: ultralytics' optimiser (its weight / bn / bias groups, built by its own trainer code)
    with the attention rows and their gates cut out into copies of their groups at ``insert_lr``; every
    other parameter keeps its group and rate, and each parameter is in one group."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    from nas.tasks.detect.fit import with_insert_lr
    from nas.tasks.detect.model import build as build_detector
    from nas.tasks.spacefile import load_space

    (tmp_path / "w.pt").write_bytes(b"")
    text = DETECT.format(checkpoint=tmp_path / "w.pt").replace("init: pretrained", "insert_lr: 0.05, init: pretrained")
    (tmp_path / "det.yaml").write_text(text)
    space = load_space(tmp_path / "det.yaml")
    arch = Architecture.parse("yolov8n|cbam(r=16,k=7)|se(r=16)")
    model = build_detector(space.detector, space.positions, arch, 10, init_seed=0, gated=True)
    trainer = object.__new__(with_insert_lr(DetectionTrainer, space.training))  # build_optimizer needs no setup
    opt = trainer.build_optimizer(model, name="SGD", lr=space.training.lr, momentum=0.9, decay=5e-4)
    ours = {id(p) for p in attention.attention_parameters(model)}
    names = {id(p): n for n, p in model.named_parameters()}
    rows = [f"model.{i}." for i, m in enumerate(model.model) if isinstance(m, attention.Gated)]
    assert len(rows) == 2
    assert {n for i, n in names.items() if i in ours} == {n for n in names.values() if n.startswith(tuple(rows))}
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(names) and len(seen) == len(set(seen))
    for g in opt.param_groups:
        mine = {id(p) in ours for p in g["params"]}
        assert len(mine) == 1, "a group holds attention or the rest, not both"
        assert g["lr"] == pytest.approx(0.05 if mine == {True} else space.training.lr)
        assert g["param_group"] in ("weight", "bn", "bias")
    assert {g["param_group"] for g in opt.param_groups if g["lr"] == pytest.approx(0.05)} >= {"weight", "bias"}
    plain = object.__new__(with_insert_lr(DetectionTrainer, space.training.replace(insert_lr=None)))
    assert len(plain.build_optimizer(model, name="SGD", lr=0.01, momentum=0.9, decay=5e-4).param_groups) == 3
