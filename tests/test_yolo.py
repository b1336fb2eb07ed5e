"""attention.yolo.register() against the installed ultralytics (8.4): the twelve mechanisms by name in
real model YAMLs (YOLOv8n and YOLO11n with CBAM and Coordinate Attention rows, widths from the incoming
layer at every scale), one training epoch on tiny generated data through ultralytics' own trainer, and
the saved model loaded back through YOLO(...). Run in a subprocess: ultralytics reads its settings folder
and offline switches at import and changes process-wide state."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(r'''
    import copy, json, sys
    from pathlib import Path

    import numpy as np
    import torch
    import yaml
    from PIL import Image

    from attention import yolo

    out = {"registered": yolo.register(), "again": yolo.register()}
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    work = Path(sys.argv[1])

    def with_rows(name, after):
        """The model YAML of ``name`` with attention rows inserted after the given layers; every
        reference to a layer at or after an insertion point moves with it (its consumers get the
        attended output)."""
        d = yaml_model_load(name)
        nb = len(d["backbone"])
        rows = d["backbone"] + d["head"]
        for index, row in sorted(after.items(), reverse=True):
            shift = lambda f: [shift(x) for x in f] if isinstance(f, list) else (f + 1 if f >= index else f)
            rows = [[-1 if r[0] == -1 else shift(r[0]), r[1], r[2], r[3]] for r in rows]
            rows.insert(index + 1, row)
            nb += index < nb
        d["backbone"], d["head"] = rows[:nb], rows[nb:]
        return d

    rows = {4: [-1, 1, "CBAM", [16, 7]], 6: [-1, 1, "CoordAtt", [32]]}
    for base in ("yolov8n.yaml", "yolo11n.yaml"):
        d = with_rows(base, rows)
        widths = {}
        for scale in ("n", "s"):
            m = DetectionModel({**d, "scale": scale}, ch=3, nc=2, verbose=False).eval()
            with torch.no_grad():
                y = m(torch.zeros(1, 3, 64, 64))
            found = {f"{type(l).__module__}.{type(l).__name__}": l.channels for l in m.model if hasattr(l, "channels")}
            before = {}  # the width each attention row receives, from a forward hook on the layer before it
            for i, l in enumerate(m.model):
                if type(l).__module__ == "attention.yolo":
                    def note(mod, a, o, i=i):  # returns None: the output is kept
                        before[i] = o.shape[1]

                    h = m.model[i - 1].register_forward_hook(note)
                    with torch.no_grad():
                        m(torch.zeros(1, 3, 64, 64))
                    h.remove()
            widths[scale] = {"found": found, "incoming": sorted(before.values())}
        out[base] = widths

    # rows the mechanisms cannot take are named: two inputs, a width the hyperparameters do not fit
    out["errors"] = []
    for bad in ([[-1, 4], 1, "CBAM", [16]], [-1, 1, "ShuffleAttention", [7]]):
        d = yaml_model_load("yolov8n.yaml")
        d["head"].insert(0, bad)
        try:
            DetectionModel(d, ch=3, nc=2, verbose=False)
        except Exception as e:
            out["errors"].append(f"{type(e).__name__}: {e}")

    # tiny data: a bright square (class 0) or a dark one (class 1) on noise, boxes in YOLO format
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4)):
        (work / "images" / split).mkdir(parents=True)
        (work / "labels" / split).mkdir(parents=True)
        for k in range(n):
            img = (rng.random((64, 64, 3)) * 80).astype("uint8")
            cls, s, x, yy = k % 2, 16 + k % 3 * 4, 8 + k * 3 % 30, 10 + k * 5 % 30
            img[yy : yy + s, x : x + s] = 240 if cls == 0 else 10
            Image.fromarray(img).save(work / "images" / split / f"{k}.png")
            (work / "labels" / split / f"{k}.txt").write_text(
                f"{cls} {(x + s / 2) / 64:.4f} {(yy + s / 2) / 64:.4f} {s / 64:.4f} {s / 64:.4f}\n"
            )
    data = {"path": str(work), "train": "images/train", "val": "images/val", "names": ["bright", "dark"]}
    (work / "data.yaml").write_text(yaml.safe_dump(data))
    out["trained"] = {}
    for base in ("yolov8n", "yolo11n"):
        cfg = work / f"{base}-attn.yaml"  # the scale is read from the name
        cfg.write_text(yaml.safe_dump({**with_rows(f"{base}.yaml", rows), "nc": 2}, sort_keys=False))
        model = YOLO(str(cfg))
        model.train(
            data=str(work / "data.yaml"), epochs=1, imgsz=64, batch=4, device="cpu", workers=0, plots=False,
            amp=False, optimizer="SGD", lr0=0.01, project=str(work / "runs"), name=base, exist_ok=True,
            verbose=False, val=True,
        )
        # the trained model as best.pt stores it (the EMA weights, at half precision), before any reload
        trained = copy.deepcopy(model.trainer.ema.ema).half().float().eval()
        best = work / "runs" / base / "weights" / "best.pt"
        back = YOLO(str(best))  # a fresh load: the model's classes come back by their module path
        kinds = sorted({f"{type(l).__module__}.{type(l).__name__}" for l in back.model.model})
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y_trained, y_back = trained(x)[0], back.model.float().eval()(x)[0]
        attn = [i for i, l in enumerate(back.model.model) if type(l).__module__ == "attention.yolo"]
        same_attn = all(
            torch.equal(a, b)
            for i in attn
            for a, b in zip(
                trained.model[i].state_dict().values(), back.model.model[i].state_dict().values(), strict=True
            )
        )
        pred = back.predict(
            str(work / "images" / "val" / "0.png"), imgsz=64, device="cpu", verbose=False, conf=0.0, max_det=10
        )[0]
        out["trained"][base] = {
            "best": best.exists(),
            "reloaded": [k for k in kinds if k.startswith("attention.")],
            "names": back.names,
            "shape": list(y_back.shape),
            "reload_diff": float((y_back - y_trained).abs().max()),
            "output_scale": float(y_trained.abs().max()),
            "same_attention_weights": same_attn,
            "boxes": pred.boxes.data.tolist(),
            "orig_shape": list(pred.orig_shape),
        }
    print("RESULT " + json.dumps(out))
''')


def test_register_builds_trains_saves_and_reloads_real_ultralytics_models(tmp_path):
    if importlib.util.find_spec("ultralytics") is None:  # not imported here: it patches PIL and the environment
        pytest.skip("the [yolo] extra (pip install -e '.[yolo]'); [test] installs it")
    config = tmp_path / "ultralytics-config"  # ultralytics' settings and the font it would download
    config.mkdir()
    import matplotlib

    font = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
    (config / "Arial.ttf").write_bytes(open(font, "rb").read())
    env = {**os.environ, "YOLO_CONFIG_DIR": str(config), "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(work)], capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path
    )
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert run.returncode == 0 and line, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads(line[len("RESULT ") :])
    assert out["registered"] == out["again"] and len(out["registered"]) == 12
    for base in ("yolov8n.yaml", "yolo11n.yaml"):
        n, s = out[base]["n"], out[base]["s"]
        assert set(n["found"]) == {"attention.yolo.CBAM", "attention.yolo.CoordAtt"}, n
        # each row takes the width of the layer before it, and the s scale doubles the n scale's widths
        assert sorted(n["found"].values()) == n["incoming"] and sorted(s["found"].values()) == s["incoming"], out[base]
        assert [2 * w for w in n["incoming"]] == s["incoming"], out[base]
    cbam, shuffle = out["errors"]
    assert cbam.startswith("HyperparameterError") and "head[0] from" in cbam and "one input layer" in cbam, cbam
    assert shuffle.startswith("HyperparameterError") and "groups" in shuffle, shuffle
    for base, t in out["trained"].items():
        assert t["best"] and t["reloaded"] == ["attention.yolo.CBAM", "attention.yolo.CoordAtt"], (base, t)
        # the reloaded model is the trained one: its attention rows' weights, and its outputs on a fixed
        # input, equal what training left in memory (best.pt holds the EMA weights at half precision)
        assert t["same_attention_weights"] and t["reload_diff"] <= 1e-6 * t["output_scale"], (base, t)
        assert t["names"] == {"0": "bright", "1": "dark"} and t["shape"][:2] == [2, 4 + 2], (base, t)
        # the prediction on a 64 x 64 image: boxes (x1, y1, x2, y2, confidence, class) inside the image,
        # of the two classes, most confident first
        boxes = t["boxes"]
        assert t["orig_shape"] == [64, 64] and 1 <= len(boxes) <= 10, (base, t)
        for x1, y1, x2, y2, conf, cls in boxes:
            assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64 and 0 <= conf <= 1 and cls in (0, 1), (base, boxes)
        assert [b[4] for b in boxes] == sorted((b[4] for b in boxes), reverse=True), (base, boxes)
    assert sorted(out["trained"]) == ["yolo11n", "yolov8n"]
    assert not (tmp_path / "runs").exists() and sorted(p.name for p in (work / "runs").iterdir()) == sorted(
        out["trained"]
    ), "ultralytics wrote where it was told, nothing beside"
