"""``nas train``: an exported (or hand-written) architecture trained with a longer schedule than the
search's proxy, with checkpoints and resume; the weights it writes load into the export's model.py.

Kept apart from export.py: exporting reads a study, training reads only an architecture file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from nas.core.artifacts import CARD_FILE, WEIGHTS_FILE, ModelCard
from nas.core.errors import BadOption, UserError
from nas.core.names import check_out, write_text_atomic
from nas.spacefile import data_and_training
from nas.tasks.classify import data as data_mod
from nas.tasks.classify.fit import prepare_fit, tensorboard_available
from nas.tasks.classify.model import save_weights

CHECKPOINTS = "checkpoints"


def data_option(value: str) -> dict[str, Any]:
    """``--data``: digits, cifar10, cifar100, or a folder of images (ImageFolder layout)."""
    if value in ("digits", "cifar10", "cifar100"):
        return {"source": value}
    if Path(value).is_dir():
        return {"source": "imagefolder", "root": value}
    raise BadOption(
        "--data",
        value,
        "digits, cifar10, cifar100 or an existing folder of images "
        "(train/ and val/ subfolders, or one folder per class)",
    )


@dataclass
class TrainResult:
    out: Path
    curve: list[float]
    resumed_from: int  # epochs already done when this run started
    weights: Path


class _EpochLine(pl.Callback):
    def __init__(self, report: Callable[[int, int, float], None]):
        self.report = report

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if module.curve:  # validation ran inside the epoch; its result is recorded and checkpointed
            self.report(len(module.curve), trainer.max_epochs, module.curve[-1])


LOG_FILE = "metrics.csv"


def _log_rows(path: Path, before_epoch: int) -> list[dict[str, str]]:
    """The rows of a metrics.csv for the epochs before ``before_epoch`` (none if there is no file)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("epoch", "").isdigit() and int(row["epoch"]) < before_epoch]


def _prepend_log_rows(path: Path, rows: list[dict[str, str]]) -> None:
    """``rows`` put back ahead of what the resumed run wrote to the metrics.csv at ``path``."""
    later = []
    before = {row["epoch"] for row in rows}
    if path.is_file():  # what the resumed run wrote (the old file itself if it stopped before writing)
        with path.open(newline="") as f:
            later = [row for row in csv.DictReader(f) if row.get("epoch") not in before]
    columns = sorted({k for row in rows + later for k in row})
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows + later)
    write_text_atomic(path, out.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents (tensors and plain values only), or a UserError naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or not a checkpoint of ours
        raise UserError(
            f"{path} cannot be read as a checkpoint ({e.__class__.__name__}: {str(e)[:200]}); "
            "delete it to train anew into this --out, or choose another --out"
        ) from None
    if not isinstance(state, dict) or "epoch" not in state:
        raise UserError(f"{path} is not a checkpoint written by nas train (no epoch recorded)")
    return state


def train(
    source: Path,
    *,
    epochs: int | None = None,
    data: str | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    out: Path | None = None,
    resume: bool = True,
    seed: int | None = None,
    force: bool = False,
    report: Callable[[int, int, float], None] = lambda e, n, acc: None,
    announce: Callable[[str], None] = lambda text: None,
    progress: bool = False,
) -> TrainResult:
    """Train the architecture of ``source`` (an export folder or an architecture.yaml) for ``epochs``,
    with the export's data and training sections unless overridden. Checkpoints (last and best by
    validation accuracy) go to ``out/checkpoints``; running again resumes from the last one. What it
    will do (data, steps, output folder) is told to ``announce`` before the first step; ``progress``
    shows Lightning's bar per epoch.

    By default (``epochs`` and ``seed`` None) it trains as the search's trial did: its epochs, from its
    seed, seeded in the same one place (``train.seeded_classifier``), so the curve is the trial's."""
    if epochs is not None and epochs < 1:
        raise BadOption("--epochs", epochs, "an integer >= 1")
    card = ModelCard.read(source)
    raw_training = dict(card.training)
    if epochs is not None:
        raw_training["epochs"] = epochs
    if seed is not None:
        raw_training["seed"] = seed
    for key, value, option in (("batch_size", batch_size, "--batch-size"), ("lr", lr, "--lr")):
        if value is not None:
            if not value > 0:
                raise BadOption(option, value, "a positive number")
            raw_training[key] = value
    if card.task == "detect":
        return _train_detector(source, card, raw_training, data, out, resume, force, report, announce)
    raw = {"data": data_option(data) if data else (dict(card.data) or {"source": "digits"}), "training": raw_training}
    data_cfg, training = data_and_training(str(source), raw)
    if data_cfg["source"] == "digits" and data_cfg["canvas"] != card.input_size[0]:
        data_cfg["canvas"] = card.input_size[0]
    folder = source if source.is_dir() else source.parent
    out = out or (folder / "train" if source.is_dir() else Path("runs") / "train" / source.stem)
    inputs = [source] + ([Path(data)] if data and Path(data).is_dir() else [])
    check_out(out, inputs=inputs, force=force, ours=lambda f: (f / CHECKPOINTS).is_dir())  # ours: resumed
    ckpt_dir = out / CHECKPOINTS
    last = ckpt_dir / "last.ckpt"
    if last.exists() and not resume:
        raise BadOption("--restart", str(out), f"{last} exists; pass --resume to continue it, or choose another --out")

    epochs, seed = training["epochs"], training["seed"]
    dm = data_mod.datamodule(data_cfg, card.input_size, training["batch_size"], seed)
    dm.setup("fit")
    best = pl.callbacks.ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename="best",
        monitor="val_acc",
        mode="max",
        save_top_k=1,
        save_on_train_epoch_end=False,
    )
    # every finished epoch, improved or not (Lightning's save_last follows the best checkpoint only)
    latest = pl.callbacks.ModelCheckpoint(
        dirpath=str(ckpt_dir),
        filename=last.stem,
        save_top_k=1,
        enable_version_counter=False,
        save_on_train_epoch_end=False,
    )
    callbacks: list[pl.Callback] = [best, latest, _EpochLine(report)]
    if progress:
        callbacks.append(pl.callbacks.RichProgressBar(leave=False))
    fitting = prepare_fit(
        card.architecture,
        seed,
        dm,
        training,
        dm.num_classes,
        dm.in_chans,
        callbacks=callbacks,
        log_dir=out / "logs",
        progress=progress,
    )
    module, trainer = fitting.module, fitting.trainer
    steps = len(dm.train_dataloader())
    source_name = data_cfg.get("root") or data_cfg["source"]  # an image folder by its path
    logs = out / "logs"
    announce(
        f"training {card.architecture}: {len(dm.train_set):,} training and {len(dm.val_set):,} validation images "
        f"({source_name}, {card.input_size[0]}x{card.input_size[1]}, {dm.num_classes} classes); batch "
        f"{training['batch_size']}, {steps} steps per epoch x {epochs} epochs, seed {seed}\n"
        f"output: {out} (checkpoints/, weights.safetensors at the end); per-epoch train loss, val accuracy and "
        f"learning rate: {logs / 'metrics.csv'}"
        + (
            f"; TensorBoard: tensorboard --logdir {logs}"
            if tensorboard_available()
            else " (TensorBoard logs too with pip install tensorboard)"
        )
    )
    done = 0
    if last.exists():
        state = _load_checkpoint(last)
        done, planned = int(state.get("epoch", -1)) + 1, state.get("planned_epochs")
        if planned is not None and planned != epochs:
            raise BadOption(
                "--epochs",
                epochs,
                f"{planned}: {last} belongs to a run of {planned} epochs, whose "
                f"learning-rate schedule depends on it; resume with --epochs {planned}, "
                "or train anew into another --out",
            )
    earlier: list[dict[str, str]] = []
    if done:
        announce(f"resuming after epoch {done} of {epochs} from {last}")
        earlier = _log_rows(logs / LOG_FILE, before_epoch=done)  # Lightning's CSV logger starts the file anew
    try:
        fitting.run(ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into a clean stop and sys.exit(1)
        if trainer.interrupted:
            raise KeyboardInterrupt from None  # the last finished epoch's checkpoint stays for --resume
        raise
    finally:
        if earlier:  # the epochs trained before the resume stay in the log, ahead of the new ones
            _prepend_log_rows(logs / LOG_FILE, earlier)
    if trainer.interrupted:
        raise KeyboardInterrupt

    weights = save_weights(module.model, out / WEIGHTS_FILE, {"arch": str(card.architecture)})
    best = max(range(len(module.curve)), key=lambda i: module.curve[i]) if module.curve else None
    ModelCard(card.architecture, dm.num_classes, dm.in_chans, card.input_size, data_cfg, training).write(out)
    write_text_atomic(
        out / "metrics.json",
        json.dumps(
            {
                "architecture": str(card.architecture),
                "epochs": len(module.curve),
                "val_acc_curve": module.curve,
                "final_val_acc": module.curve[-1] if module.curve else None,
                "best_val_acc": module.curve[best] if best is not None else None,
                "best_epoch": best + 1 if best is not None else None,
                "weights": WEIGHTS_FILE,
                "best_checkpoint": f"{CHECKPOINTS}/best.ckpt",
            },
            indent=1,
        ),
    )
    return TrainResult(out, list(module.curve), done, weights)


def _train_detector(
    source: Path,
    card: ModelCard,
    raw_training: dict[str, Any],
    data: str | None,
    out: Path | None,
    resume: bool,
    force: bool,
    report: Callable[[int, int, float], None],
    announce: Callable[[str], None],
) -> TrainResult:
    """A detection export: ultralytics trains it (``nas.tasks.detect.train``); ``--data`` is an
    ultralytics dataset YAML."""
    from nas.tasks.detect import train as detection

    if not source.is_dir():
        raise BadOption(
            "SOURCE", str(source), "a detection export is a folder (model.yaml, weights, architecture.yaml)"
        )
    raw = {"data": {"source": "ultralytics", "yaml": data} if data else dict(card.data), "training": raw_training}
    data_cfg, training = data_and_training(str(source / CARD_FILE), raw, detection=True)
    out = out or source / "train"
    check_out(out, inputs=[source], force=force, ours=lambda f: (f / "weights").is_dir())
    curve, done, weights = detection.train(
        card, source, training, data_cfg, out, resume=resume, report=report, announce=announce
    )
    return TrainResult(out, curve, done, weights)
