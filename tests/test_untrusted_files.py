"""Files that reach ultralytics from a user, a study or an export are read as data: a model YAML's
``activation:`` and row names cannot run code, a checkpoint to resume cannot unpickle anything but
layers, and a broken one is named, not a traceback. Each test runs the command a user would."""

import importlib.util
import os
import textwrap
from pathlib import Path

import pytest
import torch

if importlib.util.find_spec("ultralytics") is None:  # not imported here: nas.tasks.detect.ultra imports it, offline
    pytest.skip("the [yolo] extra (pip install -e '.[yolo]'); [test] installs it", allow_module_level=True)

from _helpers import run_nas  # noqa: E402

SPACE = """
name: det
detector: {detector}
input_size: 64
data: {{source: digits_boxes, train: 16, val: 8, max_objects: 1, clutter: 0, noise: 0.0}}
positions:
  - at: before_sppf
    mechanisms: {{none: , cbam: {{reduction: 16, kernel_size: 7}}}}
  - at: p3
    mechanisms: {{none: , se: {{reduction: 4}}}}
training: {{epochs: 1, batch_size: 4, lr: 0.003, warmup_epochs: 0.0, noise_seeds: 2}}
objectives: [mAP50-95, latency]
latency: {{device: cpu, threads: 1, rounds: 16}}
"""
INJECTED = 'activation: __import__("os").system("echo ran > {marker}") or __import__("torch").nn.SiLU()\n'


def detection_export(folder: Path, detector: str = "yolov8n.yaml") -> Path:
    """An export folder of ``yolov8n|cbam|se`` as ``nas export`` writes one for a detector (model.yaml and
    architecture.yaml), made without a search."""
    from nas.core.architecture import Architecture
    from nas.core.artifacts import ModelCard
    from nas.tasks.detect.export import export_yaml, model_yaml_text
    from nas.tasks.spacefile import load_space

    (folder / "det.yaml").write_text(SPACE.format(detector=detector))
    space = load_space(folder / "det.yaml")
    arch = Architecture.parse(f"{space.backbone}|cbam(r=16,k=7)|se(r=4)")
    out = folder / "export"
    out.mkdir()
    (out / "model.yaml").write_text(model_yaml_text(export_yaml(space, arch, 10)))
    training = {**space.training.as_dict(), "seed": 0, "epochs": 1}
    ModelCard(arch, 10, 3, space.input_size, space.data.as_dict(), training, task="detect").write(out)
    return out


def test_code_in_an_exports_model_yaml_is_refused_by_nas_train_before_ultralytics_reads_it(tmp_path):
    export = detection_export(tmp_path)
    marker = tmp_path / "ran.txt"
    text = (export / "model.yaml").read_text()
    (export / "model.yaml").write_text(INJECTED.format(marker=marker) + text)
    r = run_nas("train", export, "--epochs", 1, "--out", tmp_path / "t", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert f"{export / 'model.yaml'}:1: activation: '__import__" in r.stderr and "is not allowed" in r.stderr, r
    assert not marker.exists(), "the activation was evaluated"
    assert not (tmp_path / "t").exists() and not (tmp_path / "runs").exists(), "nothing trained, no data written"

    # a row that names a function of ultralytics' namespace (called with the row's arguments) instead of a layer
    evil = tmp_path / "evil.pt"
    rows = text.replace("[-1, 1, Conv, [64, 3, 2]]", f"[-1, 1, torch_safe_load, ['{evil}']]", 1)
    assert rows != text
    (export / "model.yaml").write_text(rows)
    r = run_nas("train", export, "--epochs", 1, "--out", tmp_path / "t", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert "backbone[0][2]: 'torch_safe_load' is not a model layer; a module class of ultralytics" in r.stderr, r


def test_the_parser_register_wraps_refuses_code_wherever_a_model_yaml_is_built(tmp_path):
    """User code and the export's load.py build through ultralytics' parser after register(): the same
    rule holds there; an activation from the allowed list is built, rewritten from its checked parts."""
    from attention import yolo
    from nas.tasks.detect import ultra

    ultra.load()
    from ultralytics.nn.modules import Conv
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    yolo.register()
    d = {**yaml_model_load("yolov8n.yaml"), "scale": "n"}
    marker = tmp_path / "ran.txt"
    for activation in (
        f"__import__('os').system('echo ran > {marker}') or nn.SiLU()",
        "nn.SiLU() if open('x', 'w') else nn.ReLU()",
        "nn.Conv2d(1, 1, 1)",
        "nn.LeakyReLU('0.1')",
    ):
        with pytest.raises(yolo.ModelYamlError, match="activation: .* is not allowed; an activation of torch.nn"):
            DetectionModel({**d, "activation": activation}, ch=3, nc=2, verbose=False)
    assert not marker.exists()
    default = Conv.default_act
    model = DetectionModel({**d, "activation": "torch.nn.LeakyReLU(negative_slope=0.2)"}, ch=3, nc=2, verbose=False)
    act = model.model[0].act
    assert type(act) is torch.nn.LeakyReLU and act.negative_slope == 0.2
    Conv.default_act = default  # process-wide in older ultralytics
    with pytest.raises(yolo.ModelYamlError, match=r"head\[0\]\[1\]: repeats 10000 is not an integer from 1 to 100"):
        DetectionModel({**d, "head": [[-1, 10000, "C2f", [64]], *d["head"][1:]]}, ch=3, nc=2, verbose=False)


def test_a_space_may_name_its_detector_as_a_file_and_that_file_is_checked_at_its_line(tmp_path):
    from nas.tasks.detect.model import DetectorError, read_model_yaml

    ultra_yaml = Path(importlib.util.find_spec("ultralytics").origin).parent / "cfg" / "models" / "v8" / "yolov8.yaml"
    mine = tmp_path / "mine.yaml"
    mine.write_text("activation: nn.ReLU()\n" + ultra_yaml.read_text())
    (tmp_path / "det.yaml").write_text(SPACE.format(detector="mine.yaml"))
    r = run_nas("check", "--space", "det.yaml", cwd=tmp_path)
    assert r.returncode == 0, r
    assert "4 distinct architectures" in r.stdout and "mine-n|none|none" in r.stdout, r.stdout

    marker = tmp_path / "ran.txt"
    mine.write_text(mine.read_text().replace("activation: nn.ReLU()\n", INJECTED.format(marker=marker)))
    for command in (("check", "--space", "det.yaml"), ("search", "--space", "det.yaml", "--trials", 1)):
        r = run_nas(*command, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert "det.yaml:3: detector: " in r.stderr and "    mine.yaml:1: activation: '__import__" in r.stderr, r
    assert not marker.exists() and not (tmp_path / "runs").exists()
    mine.write_text(
        textwrap.dedent("""\
        backbone:
          - [-1, 1, Conv, [16, 3, 2]]
          - [-1, 1, exec, ["print(1)"]]
        head:
          - [[1], 1, Detect, [nc]]
    """)
    )
    with pytest.raises(DetectorError, match=rf"{mine}:3: backbone\[1\]\[2\]: 'exec' is not a model layer"):
        read_model_yaml(mine)


def _crafted_checkpoint(path: Path, marker: Path) -> None:
    """A file ultralytics' unrestricted loader would unpickle into a command run."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"echo ran > {marker}",))

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 0, "model": None, "ema": Payload(), "train_args": {"epochs": 1}}, path)


def test_a_crafted_or_truncated_checkpoint_is_refused_when_nas_train_resumes_a_detector(tmp_path):
    export = detection_export(tmp_path)
    last = tmp_path / "t" / "weights" / "last.pt"
    marker = tmp_path / "ran.txt"
    _crafted_checkpoint(last, marker)
    r = run_nas("train", export, "--out", tmp_path / "t", cwd=tmp_path)  # --resume is the default
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert not marker.exists(), "the checkpoint was unpickled with its payload"
    assert f"{last} cannot be read as an ultralytics checkpoint (it names Python objects other than" in r.stderr, r

    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 2])  # what a crash during the write can leave
    r = run_nas("train", export, "--out", tmp_path / "t", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r
    assert f"{last} cannot be read as an ultralytics checkpoint (empty, truncated or not a torch checkpoint" in r.stderr
    assert "delete it to train anew into this --out, or choose another --out" in r.stderr


# -- a user's dataset YAML: read as data, bounded, its images and labels checked before anything trains --


def _dataset(root: Path, labels: dict[str, str], names=("cat", "dog"), images: int = 2) -> Path:
    """An ultralytics dataset under ``root``: ``images`` real PNGs per split, label files as given."""
    from PIL import Image

    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(images):
            Image.new("RGB", (32, 32)).save(root / "images" / split / f"{i}.png")
            (root / "labels" / split / f"{i}.txt").write_text(labels.get(f"{split}/{i}", "0 0.5 0.5 0.2 0.2\n"))
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames: {list(names)}\n")
    return path


@pytest.mark.parametrize(
    "label, words",
    [
        ("-1 0.5 0.5 0.2 0.2", "class -1 is not one of 0 to 1 (2 names)"),
        ("5 0.5 0.5 0.2 0.2", "class 5 is not one of 0 to 1 (2 names)"),
        ("0 nan 0.5 0.2 0.2", "coordinates must be finite and in [0, 1]"),
        ("0 inf 0.5 0.2 0.2", "coordinates must be finite and in [0, 1]"),
        ("0 1.5 0.5 0.2 0.2", "coordinates must be finite and in [0, 1]"),
        ("0 0.5 0.5", "2 coordinates; expected x y w h"),
        ("cat 0.5 0.5 0.2 0.2", "'cat 0.5 0.5 0.2 0.2' is not numbers"),
    ],
)
def test_a_dataset_s_invalid_labels_are_named_with_file_and_line_by_check_and_search(label, words, tmp_path):
    from nas.tasks.detect import data

    data._CHECKED.clear()
    path = _dataset(tmp_path / "ds", {"train/1": f"0 0.5 0.5 0.1 0.1\n{label}\n"})
    (tmp_path / "det.yaml").write_text(SPACE.format(detector="yolov8n.yaml").replace(
        "data: {source: digits_boxes, train: 16, val: 8, max_objects: 1, clutter: 0, noise: 0.0}",
        f"data: {{source: ultralytics, yaml: {path}}}",
    ))  # fmt: skip
    for command in (("check", "--space", "det.yaml"), ("search", "--space", "det.yaml", "--trials", 1)):
        r = run_nas(*command, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r
        assert f"{tmp_path / 'ds' / 'labels' / 'train' / '1.txt'}:2: {words}" in r.stderr, r
    assert not (tmp_path / "runs").exists(), "nothing trained"


def test_a_dataset_whose_images_or_splits_cannot_be_trained_on_is_refused_with_what_is_wrong(tmp_path):
    from nas.tasks.detect.data import DetectionDataError, user_dataset

    path = _dataset(tmp_path / "bad", {})
    for p in (tmp_path / "bad" / "images" / "val").iterdir():
        p.write_bytes(b"not a picture")
    with pytest.raises(DetectionDataError, match=r"(?s)val: 2 problem\(s\).*1.png: cannot be read as an image"):
        user_dataset(path)
    empty = _dataset(tmp_path / "empty", {}, images=0)
    with pytest.raises(DetectionDataError, match="train: no images"):
        user_dataset(empty)
    one_name = _dataset(tmp_path / "names", {"train/0": "7 0.5 0.5 0.2 0.2\n"}, names=("digit",))
    with pytest.raises(DetectionDataError, match=r"0.txt:1: class 7 is not one of 0 to 0 \(1 names\)"):
        user_dataset(one_name)


def test_a_dataset_split_that_is_not_a_folder_of_images_is_refused_at_once(tmp_path, monkeypatch):
    """``/dev/zero`` and a FIFO are neither read nor waited on; a split pointing at a huge tree (``path: /``)
    stops at a bound instead of walking or caching all of it."""
    from nas.tasks.detect import data

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for split in ("/dev/zero", str(fifo)):
        (tmp_path / "d.yaml").write_text(f"path: {tmp_path}\ntrain: {split}\nval: {split}\nnames: [a]\n")
        with pytest.raises(data.DetectionDataError, match="is neither a folder of images nor a list of them"):
            data.user_dataset(tmp_path / "d.yaml")
    monkeypatch.setattr(data, "MAX_FILES", 50)
    tree = tmp_path / "tree"
    for i in range(60):
        (tree / str(i)).mkdir(parents=True)
    (tmp_path / "t.yaml").write_text(f"path: {tmp_path}\ntrain: tree\nval: tree\nnames: [a]\n")
    with pytest.raises(data.DetectionDataError, match="holds more than 50 entries"):
        data.user_dataset(tmp_path / "t.yaml")
