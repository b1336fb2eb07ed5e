"""``nas train`` for a classifier: the architecture of an export (or a hand-written architecture.yaml)
trained with a longer schedule than the search's proxy, with checkpoints (last and best by validation
accuracy) and resume; the weights it writes load into the export's model.py. By default it trains as the
search's trial did: its epochs, from its seed, seeded in the same one place
(``fit.seeded_classifier``), so the curve is the trial's."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from nas.core.artifacts import WEIGHTS_FILE, ModelCard, load_weights, save_weights
from nas.core.errors import BadOption, UserError
from nas.core.names import check_out, write_text_atomic
from nas.core.task import TrainRequest, TrainResult
from nas.tasks.classify import data as data_mod
from nas.tasks.classify.fit import prepare_fit, tensorboard_available
from nas.tasks.classify.settings import parse_settings

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


def train(req: TrainRequest) -> TrainResult:
    """Train the card's architecture with its data and training sections (with the command's overrides)
    for their epochs, into ``out`` (default ``<export>/train``): checkpoints in ``out/checkpoints``,
    resumed when there. What it will do is told before the first step; ``progress`` shows Lightning's
    bar per epoch."""
    source, card, data, out = req.source, req.card, req.data, req.out
    raw = {"data": data_option(data) if data else (dict(card.data) or {"source": "digits"}), "training": req.training}
    data_cfg, training = parse_settings(str(source), raw)
    if data_cfg.source == "digits" and data_cfg.canvas != card.input_size[0]:
        data_cfg = data_cfg.replace(canvas=card.input_size[0])
    folder = source if source.is_dir() else source.parent
    out = out or (folder / "train" if source.is_dir() else Path("runs") / "train" / source.stem)
    inputs = [source] + ([Path(data)] if data and Path(data).is_dir() else [])
    check_out(out, inputs=inputs, force=req.force, ours=lambda f: (f / CHECKPOINTS).is_dir())  # ours: resumed
    last = out / CHECKPOINTS / "last.ckpt"
    if last.exists() and not req.resume:
        raise BadOption("--restart", str(out), f"{last} exists; pass --resume to continue it, or choose another --out")
    dm = data_mod.datamodule(data_cfg, card.input_size, training.batch_size, training.seed)
    dm.setup("fit")
    fitting = prepare_fit(
        card.architecture,
        training.seed,
        dm,
        training,
        dm.num_classes,
        dm.in_chans,
        callbacks=_callbacks(out / CHECKPOINTS, last, req.report, req.progress),
        log_dir=out / "logs",
        progress=req.progress,
    )
    req.announce(_plan(card, data_cfg, training, dm, len(dm.train_dataloader()), out))
    done = _resumed_epochs(last, training.epochs)
    if req.initial is not None and not done:  # a warm-started trial: on from its weights (or its first step)
        load_weights(fitting.module.model, req.initial)
        req.announce(f"starting from {req.initial}")
    earlier: list[dict[str, str]] = []
    if done:
        req.announce(f"resuming after epoch {done} of {training.epochs} from {last}")
        earlier = _log_rows(out / "logs" / LOG_FILE, before_epoch=done)  # Lightning's CSV logger starts anew
    _fit(fitting, last, earlier, out / "logs" / LOG_FILE)
    module = fitting.module
    weights = save_weights(module.model, out / WEIGHTS_FILE, {"arch": str(card.architecture)})
    ModelCard(
        card.architecture,
        dm.num_classes,
        dm.in_chans,
        card.input_size,
        data_cfg.as_dict(),
        training.as_dict(),
        start=card.start,
    ).write(out)
    _write_metrics(out, card, module.curve)
    loads_with = f"load with build_model(weights={str(weights)!r}) from model.py"
    return TrainResult(out, list(module.curve), done, weights, loads_with=loads_with)


def _callbacks(
    ckpt_dir: Path, last: Path, report: Callable[[int, int, float], None], progress: bool
) -> list[pl.Callback]:
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
    return callbacks


def _plan(card: ModelCard, data_cfg: Any, training: Any, dm: Any, steps: int, out: Path) -> str:
    """What the run will do, in words, before its first step."""
    source_name = getattr(data_cfg, "root", None) or data_cfg.source  # an image folder by its path
    logs = out / "logs"
    return (
        f"training {card.architecture}: {len(dm.train_set):,} training and {len(dm.val_set):,} validation images "
        f"({source_name}, {card.input_size[0]}x{card.input_size[1]}, {dm.num_classes} classes); batch "
        f"{training.batch_size}, {steps} steps per epoch x {training.epochs} epochs, seed {training.seed}\n"
        f"output: {out} (checkpoints/, weights.safetensors at the end); per-epoch train loss, val accuracy and "
        f"learning rate: {logs / 'metrics.csv'}"
        + (
            f"; TensorBoard: tensorboard --logdir {logs}"
            if tensorboard_available()
            else " (TensorBoard logs too with pip install tensorboard)"
        )
    )


def _resumed_epochs(last: Path, epochs: int) -> int:
    """The epochs a checkpoint to resume holds (0 without one); a BadOption when it was planned for
    another number of epochs (its learning-rate schedule depends on it)."""
    if not last.exists():
        return 0
    state = _load_checkpoint(last)
    done, planned = int(state.get("epoch", -1)) + 1, state.get("planned_epochs")
    if planned is not None and planned != epochs:
        raise BadOption(
            "--epochs",
            epochs,
            f"{planned}: {last} belongs to a run of {planned} epochs, whose learning-rate schedule depends on it; "
            f"resume with --epochs {planned}, or train anew into another --out",
        )
    return done


def _fit(fitting: Any, last: Path, earlier: list[dict[str, str]], log: Path) -> None:
    """Fit (from ``last`` where it exists); a Ctrl-C leaves the last finished epoch's checkpoint for
    --resume; the log keeps the epochs trained before a resume ahead of the new ones."""
    try:
        fitting.run(ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into a clean stop and sys.exit(1)
        if fitting.trainer.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        if earlier:
            _prepend_log_rows(log, earlier)
    if fitting.trainer.interrupted:
        raise KeyboardInterrupt


def _write_metrics(out: Path, card: ModelCard, curve: list[float]) -> None:
    best = max(range(len(curve)), key=lambda i: curve[i]) if curve else None
    write_text_atomic(
        out / "metrics.json",
        json.dumps(
            {
                "architecture": str(card.architecture),
                "epochs": len(curve),
                "val_acc_curve": curve,
                "final_val_acc": curve[-1] if curve else None,
                "best_val_acc": curve[best] if best is not None else None,
                "best_epoch": best + 1 if best is not None else None,
                "weights": WEIGHTS_FILE,
                "best_checkpoint": f"{CHECKPOINTS}/best.ckpt",
            },
            indent=1,
        ),
    )
