"""A detector's fit through ultralytics' own DetectionTrainer, with the search's hooks.

The trainer gets the seeded model we built (``get_model``), trains with the space's epochs, image size,
batch, optimiser and schedule, validates after every epoch (mAP50-95 and mAP50 of the EMA weights, as
ultralytics reports them) and calls ``hooks.epoch_end`` there: a True answer stops the fit (the
search's pruning). It writes no checkpoints (the search keeps the final EMA weights itself) and skips
ultralytics' final re-validation of best.pt (the search's objective is the last epoch, as for
classification). Its console output goes to ``<log_dir>/ultralytics.log``; its results.csv to log_dir.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from nas.core.errors import NonFiniteLoss
from nas.core.task import FitHooks, FitResult

MAP = "metrics/mAP50-95(B)"
MAP50 = "metrics/mAP50(B)"
MAP50_CURVE = "map50_curve"  # a trial's mAP50 after each epoch, recorded beside its mAP50-95 curve
OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW"}


def trainer_args(
    data_yaml: Path, training: Any, imgsz: int, epochs: int, seed: int, log_dir: Path, device: str
) -> dict[str, Any]:
    """ultralytics' arguments for a fit: the one place the space's training section becomes them."""
    schedule = training.schedule
    return {
        "data": str(data_yaml),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": training.batch_size,
        "optimizer": OPTIMIZERS[training.optimizer],
        "lr0": training.lr,
        "lrf": 1.0 if schedule == "constant" else 0.01,
        "cos_lr": schedule == "cosine",
        "momentum": training.momentum,
        "weight_decay": training.weight_decay,
        "warmup_epochs": training.warmup_epochs,
        "mosaic": training.mosaic,
        "close_mosaic": training.close_mosaic,
        "seed": seed,
        "deterministic": True,
        "device": device,
        "workers": 0,  # the images are small; data.num_workers is not passed on (it never was)
        "amp": False,  # ultralytics' AMP check downloads a model; the space's precision is 32 for detection
        "project": str(log_dir.parent.resolve()),
        "name": log_dir.name,
        "exist_ok": True,
        "plots": False,
        "save": False,
        "val": True,
        "verbose": False,
        "pretrained": False,
    }


def fit(
    model: nn.Module,
    data_yaml: Path,
    training: Mapping[str, Any],
    imgsz: int,
    epochs: int,
    seed: int,
    log_dir: Path,
    hooks: FitHooks,
    device: str = "cpu",
) -> FitResult:
    """Train ``model`` (a DetectionModel) for ``epochs`` unless ``hooks.epoch_end`` stops it; see the
    module's text. The gate hooks hold every training and validation batch."""
    from nas.tasks.detect import ultra

    ultra.load()
    from ultralytics.models.yolo.detect import DetectionTrainer

    result = FitResult(extra={MAP50_CURVE: []})
    prebuilt = model

    class SearchTrainer(DetectionTrainer):
        def get_model(self, cfg: Any = None, weights: Any = None, verbose: bool = True) -> nn.Module:
            return prebuilt

        def save_model(self) -> bool:
            return False

        def final_eval(self) -> None:
            return None

        def _handle_nan_recovery(self, epoch: int) -> bool:
            """A non-finite loss or fitness fails the trial (as for classification) instead of ultralytics'
            reload of last.pt, which the search does not write."""
            loss_bad = self.loss is not None and not bool(self.loss.isfinite())
            fitness_bad = self.fitness is not None and not math.isfinite(float(self.fitness))
            if loss_bad or fitness_bad:
                what = f"training loss is {float(self.loss)}" if loss_bad else f"validation fitness is {self.fitness}"
                raise NonFiniteLoss(f"{what} at epoch {epoch + 1}")
            return False

    import yaml

    log_dir.mkdir(parents=True, exist_ok=True)
    model_yaml = log_dir / "model.yaml"  # what was trained, as ultralytics reads it (attention rows included)
    model_yaml.write_text(yaml.safe_dump(model.yaml, sort_keys=False))
    args = {**trainer_args(data_yaml, training, imgsz, epochs, seed, log_dir, device), "model": str(model_yaml)}
    trainer = SearchTrainer(overrides=args)
    state = {"step": 0, "start": 0.0, "images": 0, "last": 0.0, "batch_t0": 0.0, "val_t0": 0.0}

    def epoch_start(t: Any) -> None:
        state.update(step=0, start=time.perf_counter(), images=0, last=0.0)

    def batch_start(t: Any) -> None:
        hooks.batch_start()
        state["batch_t0"] = time.perf_counter()

    def batch_end(t: Any) -> None:
        now = time.perf_counter()
        result.seconds += now - state["batch_t0"]
        hooks.batch_end()
        state["step"] += 1
        state["images"] += int(t.batch_size)
        steps = len(t.train_loader)
        if now - state["last"] >= 0.5 or state["step"] == steps:
            state["last"] = now
            hooks.step(t.epoch + 1, state["step"], steps, state["images"] / max(now - state["start"], 1e-9))

    def epoch_end(t: Any) -> None:  # after validation; once per epoch trained (final_eval is skipped)
        metrics = t.metrics or {}
        if MAP not in metrics:
            return
        result.curve.append(float(metrics[MAP]))
        result.extra[MAP50_CURVE].append(float(metrics[MAP50]))
        result.model = t.ema.ema if t.ema else t.model
        if hooks.epoch_end(list(result.curve), {MAP50_CURVE: [round(v, 5) for v in result.extra[MAP50_CURVE]]}):
            t.stop = True

    def train_epoch_end(t: Any) -> None:
        hooks.phase("validating")

    def val_start(v: Any) -> None:  # validation batches hold the gate too (the validator copies our callbacks)
        hooks.batch_start()
        state["val_t0"] = time.perf_counter()

    def val_end(v: Any) -> None:
        result.seconds += time.perf_counter() - state["val_t0"]
        hooks.batch_end()

    trainer.add_callback("on_val_batch_start", val_start)
    trainer.add_callback("on_val_batch_end", val_end)
    trainer.add_callback("on_train_epoch_start", epoch_start)
    trainer.add_callback("on_train_batch_start", batch_start)
    trainer.add_callback("on_train_batch_end", batch_end)
    trainer.add_callback("on_train_epoch_end", train_epoch_end)
    trainer.add_callback("on_fit_epoch_end", epoch_end)
    try:
        with ultra.logged_to(log_dir / "ultralytics.log"):
            trainer.train()
    finally:
        hooks.release()  # the gate is never left held by a fit that failed inside a batch
    with contextlib.suppress(OSError):
        (log_dir / "weights").rmdir()  # made by ultralytics for checkpoints it does not write here
    hooks.fit_end(result.seconds, None)
    return result
