"""``nas train``: an exported (or hand-written) architecture trained with a longer schedule than the
search's proxy, with checkpoints and resume; the weights it writes load into the export's model.py.

Kept apart from export.py: exporting reads a study, training reads only an architecture file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from nas import data as data_mod
from nas.artifacts import WEIGHTS_FILE, ModelCard
from nas.errors import BadOption, UserError
from nas.model import save_weights
from nas.names import check_out, write_text_atomic
from nas.spacefile import data_and_training
from nas.training import prepare_fit

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
) -> TrainResult:
    """Train the architecture of ``source`` (an export folder or an architecture.yaml) for ``epochs``,
    with the export's data and training sections unless overridden. Checkpoints (last and best by
    validation accuracy) go to ``out/checkpoints``; running again resumes from the last one.

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
    fitting = prepare_fit(
        card.architecture,
        seed,
        dm,
        training,
        dm.num_classes,
        dm.in_chans,
        callbacks=[best, latest, _EpochLine(report)],
        log_dir=out / "logs",
    )
    module, trainer = fitting.module, fitting.trainer
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
    try:
        fitting.run(ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into a clean stop and sys.exit(1)
        if trainer.interrupted:
            raise KeyboardInterrupt from None  # the last finished epoch's checkpoint stays for --resume
        raise
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
