"""``nas train`` for a detection export: ultralytics' own DetectionTrainer on the export's model.yaml
(attention rows parsed after register()), with the search's training settings unless overridden, its
checkpoints (``weights/last.pt``, ``weights/best.pt``) in ultralytics' format under the output folder
and resume from ``last.pt``. The weights start from ``seed`` as ultralytics initialises a model, not from
the search's seeded build, so the curve is not the trial's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from nas.core.artifacts import ModelCard
from nas.core.errors import BadOption, UserError
from nas.core.task import TrainRequest, TrainResult


def train(req: TrainRequest) -> TrainResult:
    """A detection export (a folder: model.yaml, weights, architecture.yaml) trained into ``out``
    (default ``<export>/train``); ``data``: an ultralytics dataset YAML instead of the card's data."""
    source, card, data, out = req.source, req.card, req.data, req.out
    from nas.core.artifacts import CARD_FILE
    from nas.core.names import check_out
    from nas.tasks.detect.settings import parse_settings

    if not source.is_dir():
        raise BadOption(
            "SOURCE", str(source), "a detection export is a folder (model.yaml, weights, architecture.yaml)"
        )
    raw = {"data": {"source": "ultralytics", "yaml": data} if data else dict(card.data), "training": req.training}
    data_cfg, training = parse_settings(str(source / CARD_FILE), raw)
    out = out or source / "train"
    check_out(out, inputs=[source], force=req.force, ours=lambda f: (f / "weights").is_dir())
    curve, done, weights = _train(
        card,
        source,
        training,
        data_cfg,
        out,
        resume=req.resume,
        report=req.report,
        announce=req.announce,
        initial=req.initial,
    )
    return TrainResult(out, curve, done, weights, loads_with=f"after register(), YOLO({str(weights)!r}) loads it")


def _train(
    card: ModelCard,
    folder: Path,
    training: Any,
    data_cfg: Any,
    out: Path,
    *,
    resume: bool,
    report: Callable[[int, int, float], None],
    announce: Callable[[str], None],
    initial: Path | None = None,
) -> tuple[list[float], int, Path]:
    """The curve of this run (mAP50-95 per epoch), the epochs done before it (a resume) and best.pt."""
    from nas.tasks.detect import ultra
    from nas.tasks.detect.data import dataset
    from nas.tasks.detect.fit import MAP, trainer_args, trainer_type
    from nas.tasks.detect.model import MODEL_YAML, read_model_yaml

    ultra.load()
    model_yaml = folder / MODEL_YAML
    if not model_yaml.is_file():
        raise BadOption("SOURCE", str(folder), f"a detection export folder holds {MODEL_YAML}; it is missing")
    model = read_model_yaml(model_yaml)  # data, checked, before ultralytics parses it
    epochs, seed = training.epochs, training.seed
    last = out / "weights" / "last.pt"
    if last.exists() and not resume:
        raise BadOption("--restart", str(out), f"{last} exists; pass --resume to continue it, or choose another --out")
    done = _check_resumable(last, model, model_yaml, epochs) if last.exists() else 0
    data = dataset(data_cfg, Path("runs"))
    args = {
        **trainer_args(data.yaml, training, card.input_size[0], epochs, seed, out, "cpu"),
        "model": str(model_yaml.resolve()),
        "save": True,
        "save_dir": str(out.resolve()),  # on resume ultralytics would take the checkpoint's own
    }
    if last.exists():
        args["resume"] = str(last)
    announce(
        f"training {card.architecture} with ultralytics for {epochs} epochs on {data.train_images} images "
        f"({data.yaml}); checkpoints in {out / 'weights'}, log in {out / 'ultralytics.log'}"
    )
    if done:
        announce(f"resuming after epoch {done} of {epochs} from {last}")
    trainer = trainer_type(_trainer(initial if not done else None), training)(overrides=args)
    if initial is not None and not done:
        announce(f"starting from {initial}")
    curve: list[float] = []

    def epoch_end(t: Any) -> None:  # not ultralytics' final re-validation of best.pt (its epoch is t.epochs)
        if MAP in (t.metrics or {}) and done + len(curve) == t.epoch < t.epochs:
            curve.append(float(t.metrics[MAP]))
            report(t.epoch + 1, t.epochs, curve[-1])

    trainer.add_callback("on_fit_epoch_end", epoch_end)
    with ultra.logged_to(out / "ultralytics.log"):
        trainer.train()
    return curve, done, out / "weights" / "best.pt"


def _trainer(initial: Path | None) -> type:
    """ultralytics' DetectionTrainer; with ``initial``, the model it builds from the export's model.yaml
    takes those weights (the whole architecture's, checked) before the first step."""
    from ultralytics.models.yolo.detect import DetectionTrainer

    if initial is None:
        return DetectionTrainer

    class FromWeights(DetectionTrainer):
        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> Any:
            from nas.core.artifacts import load_weights

            return load_weights(super().get_model(cfg, weights, verbose), initial)

    return FromWeights


def _check_resumable(last: Path, model: dict[str, Any], model_yaml: Path, epochs: int) -> int:
    """The epochs done in ``last`` if it may be continued: a checkpoint read as data
    (``ultra.read_checkpoint``), of the architecture in ``model_yaml``, unfinished, planned for ``epochs``;
    a UserError saying which it is not."""
    from nas.tasks.detect import ultra

    remedy = "delete it to train anew into this --out, or choose another --out"
    ckpt = ultra.read_checkpoint(last, remedy)
    built = getattr(ckpt.get("model") or ckpt.get("ema"), "yaml", None) or {}  # during a run: the EMA alone
    mine = {k: model.get(k) for k in ("backbone", "head", "nc")}
    if not isinstance(built, dict) or {k: built.get(k) for k in mine} != mine:
        raise UserError(f"{last} holds another detector than {model_yaml} (its layers differ); {remedy}")
    planned, epoch = ckpt["train_args"].get("epochs"), ckpt.get("epoch")
    if epoch == -1 or not isinstance(epoch, int):
        raise UserError(
            f"{last} ends a finished run of {planned} epoch{'s' if planned != 1 else ''} (best.pt beside it): "
            "nothing to resume; to train again, delete it or choose another --out"
        )
    if planned != epochs:
        raise BadOption(
            "--epochs",
            epochs,
            f"{planned}: {last} belongs to a run of {planned} epochs, whose learning-rate schedule depends on it; "
            f"resume with --epochs {planned}, or {remedy}",
        )
    return epoch + 1
