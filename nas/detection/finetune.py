"""``nas train`` for a detection export: ultralytics' own DetectionTrainer on the export's model.yaml
(attention rows parsed after register()), with the search's training settings unless overridden, its
checkpoints (``weights/last.pt``, ``weights/best.pt``) in ultralytics' format under the output folder
and resume from ``last.pt``. The weights start from ``seed`` as ultralytics initialises a model, not from
the search's seeded build, so the curve is not the trial's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.artifacts import ModelCard
from nas.errors import BadOption


def train(
    card: ModelCard,
    folder: Path,
    training: dict[str, Any],
    data_cfg: dict[str, Any],
    out: Path,
    *,
    resume: bool,
    report: Callable[[int, int, float], None],
    announce: Callable[[str], None],
) -> tuple[list[float], Path]:
    from nas.detection import ultra
    from nas.detection.data import dataset
    from nas.detection.model import MODEL_YAML
    from nas.detection.train import MAP, trainer_args

    ultra.load()
    from ultralytics.models.yolo.detect import DetectionTrainer

    model_yaml = folder / MODEL_YAML
    if not model_yaml.is_file():
        raise BadOption("SOURCE", str(folder), f"a detection export folder holds {MODEL_YAML}; it is missing")
    data = dataset(data_cfg, Path("runs"))
    epochs, seed = training["epochs"], training["seed"]
    last = out / "weights" / "last.pt"
    if last.exists() and not resume:
        raise BadOption("--restart", str(out), f"{last} exists; pass --resume to continue it, or choose another --out")
    args = {
        **trainer_args(data.yaml, training, card.input_size[0], epochs, seed, out, "cpu"),
        "model": str(model_yaml),
        "save": True,
    }
    if last.exists():
        args["resume"] = str(last)
    announce(
        f"training {card.architecture} with ultralytics for {epochs} epochs on {data.train_images} images "
        f"({data.yaml}); checkpoints in {out / 'weights'}, log in {out / 'ultralytics.log'}"
    )
    trainer = DetectionTrainer(overrides=args)
    curve: list[float] = []

    def epoch_end(t: Any) -> None:
        if MAP in (t.metrics or {}) and len(curve) < t.epochs and t.epoch + 1 > len(curve):
            curve.append(float(t.metrics[MAP]))
            report(t.epoch + 1, t.epochs, curve[-1])

    trainer.add_callback("on_fit_epoch_end", epoch_end)
    with ultra.logged_to(out / "ultralytics.log"):
        trainer.train()
    return curve, out / "weights" / "best.pt"
