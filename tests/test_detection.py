"""Detection spaces: positions in a real ultralytics model YAML with their channels and strides, the model
YAML with attention rows (every consumer of a position reads the attended output), seeded builds that
differ only where the choices differ, the embedded dataset, and the whole path through the command line
(check, search that prunes, Ctrl-C and resume, report, export -> load -> same predictions, nas train)
with every network connection refused."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

if importlib.util.find_spec("ultralytics") is None:  # not imported here: nas.tasks.detect.ultra imports it, offline
    pytest.skip("the [yolo] extra (pip install -e '.[yolo]'); [test] installs it", allow_module_level=True)

from nas.core.architecture import Architecture  # noqa: E402
from nas.tasks.spacefile import SpaceError, load_space  # noqa: E402

from _helpers import Polled, from_terminal, run_nas  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY = """
name: det
detector: yolov8n.yaml
input_size: 64
data: {source: digits_boxes, train: 256, val: 32, max_objects: 1, clutter: 0, noise: 0.0}
positions:
  - at: before_sppf
    mechanisms: {none: , cbam: {reduction: 16, kernel_size: [3, 7]}, ca: }
  - at: p3
    mechanisms: {none: , simam: , se: {reduction: [4, 16]}}
training: {epochs: 4, batch_size: 4, lr: 0.003, warmup_epochs: 0.2, noise_seeds: 2}
objectives: [mAP50-95, latency]
latency: {device: cpu, threads: 1, rounds: 16}
"""


def test_quick_start_space_positions_channels_and_strides():
    s = load_space(ROOT / "spaces" / "yolo.yaml")
    assert s.task.name == "detect" and s.backbone == "yolov8n" and s.count() == 27
    # YOLOv8n at scale n: the last backbone C2f has 256 channels at stride 32; P3 64 at 8; P5 256 at 32
    assert [(p.at, p.after, p.kind, p.channels, p.stride) for p in s.positions] == [
        ("before_sppf", 8, "C2f", 256, 32),
        ("p3", 15, "C2f", 64, 8),
        ("p5", 21, "C2f", 256, 32),
    ]
    assert str(s.baseline()) == "yolov8n|none|none|none"


def test_bad_detection_space_names_every_problem_with_its_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        textwrap.dedent("""\
        detector: yolov8n.yaml
        input_size: 70
        backbone: resnet18
        data: {source: digits}
        positions:
          - at: p7
            mechanisms: {none: }
          - at: 4
            mechanisms: {sa: {groups: 7}, se: {placement: post_conv}}
          - at: 4
            mechanisms: {none: }
        """)
    )
    with pytest.raises(SpaceError) as e:
        load_space(bad)
    text = str(e.value)
    for line, words in [
        (2, "input_size: 70 is not allowed; a detector's image size is one integer, a multiple of 32"),
        (3, "backbone: belongs to a classification space"),
        (4, "data.source: 'digits' is not allowed (classification data); one of digits_boxes, ultralytics"),
        (6, "positions[0].at: 'p7' is not allowed; an integer layer index, before_sppf, or"),
        (9, "positions[1].mechanisms.sa.groups: 7 is not allowed at 64 channels (after layer 4 (C2f))"),
        (9, "positions[1].mechanisms.se.placement: a detection position takes no placement"),
        (10, "positions[2].at: 4 is layer 4, already a position at positions[1]"),
    ]:
        assert f"{bad}:{line}: {words}" in text, (words, text)
    (tmp_path / "scale.yaml").write_text(
        "detector: yolov8n.yaml\nscale: q\npositions: [{at: p3, mechanisms: {none: }}]\n"
    )
    with pytest.raises(SpaceError, match="scale 'q' is not one of yolov8n.yaml's scales: n, s, m, l, x"):
        load_space(tmp_path / "scale.yaml")


def test_attention_rows_feed_every_consumer_and_builds_share_the_plain_weights(tmp_path):
    from nas.tasks.detect.model import attention_rows

    (tmp_path / "s.yaml").write_text(TINY)
    s = load_space(tmp_path / "s.yaml")
    arch = Architecture.parse("yolov8n|cbam(r=16,k=7)|se(r=4)")
    model = s.task.build(s, arch, 10, init_seed=3).eval()
    plain = s.task.build(s, s.baseline(), 10, init_seed=3).eval()
    rows = attention_rows(model)
    assert rows == [(9, "CBAM"), (17, "SE")]  # after layer 8 and after layer 15 (+1 for the CBAM row)
    layers = list(model.model)
    # SPPF reads the CBAM row; Detect's first input is the SE row; the neck's concat of layer 15 too
    assert layers[10].__class__.__name__ == "SPPF" and layers[10].f == -1
    assert layers[-1].f[0] == 17
    assert all(9 not in (m.f if isinstance(m.f, list) else [m.f]) for m in layers[11:])  # nobody skips the row
    # every layer of the plain detector starts from the same weights in both (common random numbers)
    k = 0
    for j, layer in enumerate(plain.model):
        while type(layers[j + k]).__module__ == "attention.yolo":
            k += 1
        for (a, x), (b, y) in zip(layer.state_dict().items(), layers[j + k].state_dict().items(), strict=True):
            assert a == b and torch.equal(x, y), (j, a)
    # and an attention row starts the same whatever the other position holds
    other = s.task.build(s, Architecture.parse("yolov8n|cbam(r=16,k=7)|none"), 10, init_seed=3)
    for (a, x), (_, y) in zip(model.model[9].state_dict().items(), other.model[9].state_dict().items(), strict=True):
        assert torch.equal(x, y), a
    with torch.no_grad():
        y = model(torch.rand(1, 3, 64, 64))[0]
    assert y.shape[:2] == (1, 4 + 10)


def test_embedded_detection_data_is_deterministic_and_well_formed(tmp_path):
    from nas.tasks.detect.data import digits_boxes

    opts = {"canvas": 64, "train": 24, "val": 8, "min_objects": 1, "max_objects": 3, "clutter": 2, "noise": 0.1}
    a = digits_boxes(tmp_path / "a", {**opts, "seed": 0})
    b = digits_boxes(tmp_path / "b", {**opts, "seed": 0})
    c = digits_boxes(tmp_path / "c", {**opts, "seed": 1})
    files = sorted(p.relative_to(a.yaml.parent) for p in a.yaml.parent.rglob("*.*") if p.suffix in (".png", ".txt"))
    assert len(files) == 2 * (24 + 8)
    same = all((a.yaml.parent / f).read_bytes() == (b.yaml.parent / f).read_bytes() for f in files)
    assert same, "the same options and seed write the same bytes"
    assert any((a.yaml.parent / f).read_bytes() != (c.yaml.parent / f).read_bytes() for f in files)
    counts = []
    for label in (a.yaml.parent / "labels" / "train").glob("*.txt"):
        rows = [list(map(float, ln.split())) for ln in label.read_text().splitlines()]
        counts.append(len(rows))
        boxes = []
        for cls, xc, yc, w, h in rows:
            assert cls in range(10) and 0 < w <= 0.5 and 0 < h <= 0.5
            x0, y0, x1, y1 = (xc - w / 2) * 64, (yc - h / 2) * 64, (xc + w / 2) * 64, (yc + h / 2) * 64
            assert -1e-6 <= x0 < x1 <= 64 + 1e-6 and -1e-6 <= y0 < y1 <= 64 + 1e-6
            boxes.append((x0, y0, x1, y1))
        for i, p in enumerate(boxes):  # digits never overlap
            for q in boxes[i + 1 :]:
                assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1], (label, p, q)
    assert 1 <= min(counts) and max(counts) <= 3 and np.mean(counts) > 1.5
    again = digits_boxes(tmp_path / "a", {**opts, "seed": 0})
    assert again == a, "written once: found again by its options"


GUARD = textwrap.dedent("""
    import os, socket, sys

    def _refuse(*args, **kwargs):
        with open(os.environ["NAS_TEST_NET_LOG"], "a") as f:
            f.write(repr((sys.argv[:3], args[:2])) + "\\n")
        raise OSError("network unreachable (test)")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse
""")


def test_detection_search_prunes_resumes_after_ctrl_c_reports_exports_and_trains_offline(tmp_path, monkeypatch):
    """The search, its resume, the exported model's loading and nas train run as real processes with
    the network refused by a sitecustomize; check, report and export run in this process with the same
    calls refused."""
    import socket

    import optuna
    from optuna.trial import TrialState

    (tmp_path / "det.yaml").write_text(TINY)
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    net_log = tmp_path / "net.log"
    env = {
        **os.environ,
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([str(guard), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "NAS_TEST_NET_LOG": str(net_log),
        "HOME": str(tmp_path / "home"),  # nothing written to the user's settings either
    }

    def refuse(*args, **kwargs):
        with open(net_log, "a") as f:
            f.write(repr(("in process", args[:2])) + "\n")
        raise OSError("network unreachable (test)")

    def nas(*args):
        """``nas ARGS`` in this process, every network connection refused as in the processes."""
        with monkeypatch.context() as m:
            for owner, name in ((socket.socket, "connect"), (socket.socket, "connect_ex")):
                m.setattr(owner, name, refuse)
            for name in ("create_connection", "getaddrinfo"):
                m.setattr(socket, name, refuse)
            r = run_nas(*args, cwd=tmp_path, env={"HOME": env["HOME"]}, width=200)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r

    r = nas("check", "--space", "det.yaml")
    assert "before_sppf" in r.stdout and "p3" in r.stdout and "16 distinct architectures" in r.stdout, r.stdout

    cmd = [sys.executable, "-m", "nas", "search", "--space", "det.yaml", "--trials", "4", "--sampler", "random"]
    proc = from_terminal(cmd, cwd=tmp_path, env=env)
    url = "sqlite:///" + str(tmp_path / "runs" / "det" / "study.db")
    deadline, polled = time.monotonic() + 600, Polled("det", url)
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.25)
        trials = polled.trials() or []
        if any(t.state == TrialState.RUNNING and t.number >= 2 and t.user_attrs.get("val_acc_curve") for t in trials):
            break
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of a trial's training
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    before = optuna.load_study(study_name="det", storage=url).get_trials()
    assert before[-1].state == TrialState.FAIL and before[-1].user_attrs["stop_reason"] == "interrupted (Ctrl-C)"

    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)  # the same command resumes
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = optuna.load_study(study_name="det", storage=url)
    trials = study.get_trials()
    done = [
        t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and "duplicate_of" not in t.user_attrs
    ]
    assert len(done) == 4 and not [t for t in trials if t.state == TrialState.RUNNING]
    assert [t.number for t in before if t.state == TrialState.COMPLETE] == [
        t.number for t in trials[: len(before)] if t.state == TrialState.COMPLETE
    ], "resumed: nothing trained again"
    assert study.metric_names == ["mAP50-95", "latency_ms"]
    pruned = [t for t in done if t.state == TrialState.PRUNED and "infeasible" not in t.user_attrs]
    assert pruned and all(len(t.user_attrs["val_acc_curve"]) in (1, 3) for t in pruned), "pruned at a rung"
    # no detector finds a box after one epoch here (the head's prior keeps every score under the
    # validation threshold): every mAP at rung 1 is 0, so the rung keeps everyone, saying why, rather
    # than decide by latency alone; the pruning happens at rung 3
    curves = [t.user_attrs["val_acc_curve"] for t in trials if t.user_attrs.get("val_acc_curve")]
    assert all(c[0] == 0 for c in curves), curves
    assert all(len(t.user_attrs["val_acc_curve"]) == 3 for t in pruned), "epoch 1 did not decide by latency"
    for t in done:
        if not t.user_attrs.get("baseline") and "infeasible" not in t.user_attrs:
            assert "every trial at this rung has accuracy 0.0000" in t.user_attrs["rung_1"], (t.number, t.user_attrs)
    for t in done:
        curve, map50 = t.user_attrs["val_acc_curve"], t.user_attrs["map50_curve"]
        assert len(curve) == len(map50) and all(0 <= a <= b <= 1 for a, b in zip(curve, map50, strict=True))
    assert "mAP50-95" in r.stdout

    r = nas("report", "--study", "det", "--no-remeasure")
    assert "Δ mAP50-95" in r.stdout and "yolov8n|" in r.stdout and "noise: sd" in r.stdout, r.stdout

    r = nas("export", "best", "--study", "det")
    folder = next((tmp_path / "runs" / "det" / "export").iterdir())
    assert {p.name for p in folder.iterdir()} >= {"model.yaml", "load.py", "weights.safetensors", "metrics.json"}
    arch = json.loads((folder / "metrics.json").read_text())["architecture"]
    check = textwrap.dedent(f"""
        import json, sys, torch
        sys.path.insert(0, {str(folder)!r})
        from load import load
        from safetensors.torch import load_file
        from nas.tasks.spacefile import load_space
        from nas.core.architecture import Architecture
        exported = load()  # register(), YOLO("model.yaml"), the weights
        space = load_space("det.yaml")
        ours = space.task.build(space, Architecture.parse({arch!r}), 10).eval()
        ours.load_state_dict(load_file({str(folder / "weights.safetensors")!r}))
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = exported.model.eval()(x)[0], ours(x)[0]
        img = sorted(__import__("pathlib").Path("runs/data").rglob("val/*.png"))[0]
        p = exported.predict(str(img), imgsz=64, conf=0.001, verbose=False)[0]
        print("RESULT " + json.dumps({{"diff": float((a - b).abs().max()), "boxes": len(p.boxes),
              "rows": [type(m).__name__ for m in exported.model.model if type(m).__module__ == "attention.yolo"]}}))
    """)
    offline = {**env, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp_path / "yolo-settings")}  # as README says
    r = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=offline, capture_output=True, text=True)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, r.stdout[-2000:] + r.stderr[-3000:]
    got = json.loads(line[7:])
    assert got["diff"] == 0.0 and got["boxes"] > 0, got
    assert len(got["rows"]) == sum(part != "none" for part in arch.split("|")[1:]), (arch, got)

    r = subprocess.run(  # a real process: ultralytics decides where its settings go when imported
        [sys.executable, "-m", "nas", "train", str(folder), "--epochs", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (folder / "train" / "weights" / "best.pt").is_file() and "epoch 1/1: val mAP50-95" in r.stdout, r.stdout
    assert not net_log.exists(), net_log.read_text()  # nothing tried to reach the network
    home = tmp_path / "home"  # (matplotlib keeps a font cache there; ultralytics keeps nothing)
    assert not [p for p in home.rglob("*") if "ltralytics" in p.name], "ultralytics' settings not in the home folder"


def test_a_detector_validated_after_its_last_epoch_only_ends_where_one_validated_every_epoch_ends(tmp_path):
    """A confirmation's re-run validates after its last epoch only (ultralytics' ``val`` off): it trains
    exactly as the same run validated every epoch, its one figure is that run's final one, and the
    earlier epoch's stale metrics are not taken for a validation."""
    from nas.search._hooks import RerunHooks

    path = tmp_path / "det.yaml"
    path.write_text(TINY.replace("epochs: 4", "epochs: 2"))
    space = load_space(path)
    data = space.task.data(space, tmp_path, 0)
    runs = {}
    for every in (True, False):
        hooks = RerunHooks(None, lambda s: None, "test", 2, space.task.per_epoch, every_epoch=every)
        runs[every] = space.task.fit(
            space, space.baseline(), 0, data, 2, tmp_path / f"run_{every}", hooks, data.num_classes,
            single_process=True, every_epoch=every,
        )  # fmt: skip
    assert len(runs[True].curve) == 2 and runs[False].curve == runs[True].curve[-1:], (runs[True].curve, runs[False])
    # this tiny detector finds no box yet (mAP 0 both ways): the weights say that training was the same
    full, last = runs[True].model.state_dict(), runs[False].model.state_dict()
    assert full.keys() == last.keys() and all(torch.equal(full[k], last[k]) for k in full)


def test_importing_ultralytics_leaves_pil_and_thread_settings_as_they_were():
    """ultralytics patches PIL's Image.open (to pip-install pi-heif on an unreadable file) and sets
    OMP_NUM_THREADS for later processes; nas.tasks.detect.ultra undoes both (a fresh process: this one may
    have imported ultralytics already)."""
    code = textwrap.dedent("""
        import os
        from PIL import Image
        before = Image.open, os.environ.get("OMP_NUM_THREADS")
        from nas.tasks.detect import ultra
        ultra.load()
        import ultralytics.utils.patches
        print("SAME" if (Image.open, os.environ.get("OMP_NUM_THREADS")) == before else "CHANGED")
    """)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.stdout.strip().endswith("SAME"), r.stdout + r.stderr[-2000:]


def test_user_dataset_and_detector_files_are_checked_with_what_is_wrong(tmp_path):
    from PIL import Image

    from nas.tasks.detect.data import DetectionDataError, user_dataset
    from nas.tasks.detect.model import DetectorError, load_detector

    data = tmp_path / "data.yaml"
    for text, words in [
        ("train: a\nval: b\n", "missing names"),
        ("path: rel\ntrain: a\nval: b\nnames: [x]\n", "path 'rel' is relative; give the dataset's absolute path"),
        (f"path: {tmp_path}\ntrain: a\nval: b\nnames: [x]\ndownload: http://x\n", "has 'download'"),
        (f"path: {tmp_path}\ntrain: nowhere\nval: b\nnames: [x]\n", f"train: {tmp_path / 'nowhere'} does not exist"),
    ]:
        data.write_text(text)
        with pytest.raises(DetectionDataError, match=words):
            user_dataset(data)
    (tmp_path / "im" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "im" / "a" / "1.png")  # a real image: its header is read
    data.write_text(f"path: {tmp_path}\ntrain: im\nval: im\nnames: {{0: cat, 1: dog}}\n")
    assert user_dataset(data).names == ("cat", "dog")

    with pytest.raises(DetectorError, match="neither a file .* nor an ultralytics model name"):
        load_detector("models/nope.yaml", tmp_path)
    with pytest.raises(DetectorError, match="is not an ultralytics model YAML"):
        load_detector("yolov99z.yaml", tmp_path)
    seg = tmp_path / "seg.yaml"
    seg.write_text("backbone: [[-1, 1, Conv, [16, 3, 2]]]\nhead: [[[0], 1, Segment, [nc, 32, 64]]]\n")
    with pytest.raises(DetectorError, match="the last head row must be Detect"):
        load_detector("seg.yaml", tmp_path)
    s = load_detector("yolo11s.yaml", tmp_path)
    assert (s.name, s.scale) == ("yolo11s", "s")
