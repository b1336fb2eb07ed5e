"""A detection trial as a folder ultralytics users can take on: ``model.yaml`` (the detector's model YAML
with its attention rows, the trial's scale only, its classes), ``weights.safetensors`` (the trial's final
EMA weights), ``load.py`` (register, then ``YOLO("model.yaml")`` with the weights), ``metrics.json`` and
``architecture.yaml`` (what ``nas train`` reads). The export is checked: the model ultralytics builds from
model.yaml, given the weights, predicts what the search's model predicted, on a fixed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from nas.core.artifacts import CARD_FILE, WEIGHTS_FILE, ExportError, ModelCard, install_weights
from nas.core.names import write_text_atomic
from nas.core.task import ExportFacts, ExportOptions
from nas.tasks.detect.fit import MAP50_CURVE
from nas.tasks.detect.model import MODEL_YAML

LOADER = "load.py"

LOAD_PY = '''"""The exported detector: ``load()`` gives an ultralytics YOLO with the trained weights.

    from attention.yolo import register; register()   # our mechanisms by name in model YAMLs
    model = YOLO("model.yaml")                         # the architecture (random weights)

is all ultralytics needs for the architecture; ``load()`` adds the search's weights. Then use
ultralytics as usual: ``load().predict(...)``, ``.train(data=...)``, ``.export(format="onnx")``.
"""

from pathlib import Path

from attention.yolo import register

register()

from safetensors.torch import load_file  # noqa: E402
from ultralytics import YOLO  # noqa: E402

HERE = Path(__file__).resolve().parent


def load(weights=HERE / "weights.safetensors"):
    model = YOLO(str(HERE / "model.yaml"), task="detect")
    if weights is not None:
        model.model.load_state_dict(load_file(str(weights)))
    return model
'''


def export_yaml(space: Any, arch: Any, num_classes: int) -> dict[str, Any]:
    """The model YAML of ``arch``: attention rows in place, ``nc``, and the chosen scale as the only
    one (ultralytics reads a scale from a file's name; with one scale listed it needs none)."""
    from nas.tasks.detect.model import model_dict

    d = model_dict(space.detector, space.positions, arch, num_classes, gated=space.training.gated)
    scales = d.get("scales") or {}
    if scales and d.get("scale") in scales:
        d["scales"] = {d["scale"]: scales[d["scale"]]}
    return d


def model_yaml_text(d: dict[str, Any]) -> str:
    """A model YAML as ultralytics writes its own: one row per line (``- [-1, 1, CBAM, [16, 7]]``)."""
    head = {k: v for k, v in d.items() if k not in ("backbone", "head")}
    text = yaml.safe_dump(head, sort_keys=False, default_flow_style=None)
    for section in ("backbone", "head"):
        text += f"{section}:\n"
        for row in d[section]:
            text += "  - " + yaml.safe_dump(row, default_flow_style=True, width=1000).strip() + "\n"
    return text


def export(
    space: Any, arch: Any, nc: int, out: Path, facts: ExportFacts, opts: ExportOptions
) -> tuple[list[Path], dict[str, float]]:
    """Write the folder (see the module's text); returns its files and the checks made."""
    from nas.tasks.detect import ultra
    from nas.tasks.detect.model import build

    if opts.onnx or opts.torchscript:
        raise ExportError(
            "--onnx/--torchscript: a detector is exported as an ultralytics model YAML with its weights; "
            "convert it with ultralytics itself: load().export(format='onnx') (see load.py)"
        )
    ultra.load()
    out.mkdir(parents=True, exist_ok=True)
    files = [out / MODEL_YAML, out / LOADER, out / CARD_FILE, out / "metrics.json"]
    write_text_atomic(files[0], model_yaml_text(export_yaml(space, arch, nc)))
    write_text_atomic(files[1], LOAD_PY)
    training = {
        **space.training.as_dict(),
        "seed": facts.seed or 0,
        "epochs": len(facts.curve) or space.training.epochs,
    }
    ModelCard(arch, nc, 3, space.input_size, space.data.as_dict(), training, task="detect").write(out)
    map50 = facts.attrs.get(MAP50_CURVE) or []
    metrics = {
        "study": facts.study,
        "trial": facts.number,
        "architecture": str(arch),
        "detector": space.detector.source,
        "mAP50-95": facts.values[0],
        "mAP50": map50[-1] if map50 else None,
        "latency_ms": facts.latency_ms,
        "latency_ci_ms": list(facts.latency_ci_ms) if facts.latency_ci_ms else None,
        "latency_target": facts.latency_target,
        "seed": facts.seed,
        "params": facts.params,
        "flops": facts.flops,
        "map50_95_curve": list(facts.curve) or None,
        "map50_curve": list(map50) or None,
        "weights": WEIGHTS_FILE if opts.weights_src else None,
        **facts.judged,
    }
    write_text_atomic(files[3], json.dumps(metrics, indent=1))

    from ultralytics import YOLO

    reference = build(space.detector, space.positions, arch, nc, gated=space.training.gated).eval()
    generated = YOLO(str(files[0]), task="detect").model.eval()
    files += install_weights(opts.weights_src, out, reference, generated)
    size = space.input_size[0]
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = float((generated(x)[0] - reference(x)[0]).abs().max())
    if not diff <= opts.tolerance:
        raise ExportError(f"{out}: the model built from {MODEL_YAML} differs from the search's by {diff:.3g}")
    return files, {MODEL_YAML: diff}
