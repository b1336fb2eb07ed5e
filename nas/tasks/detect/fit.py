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
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.core.errors import NonFiniteLoss
from nas.core.task import FitHooks, FitResult

MAP = "metrics/mAP50-95(B)"
MAP50 = "metrics/mAP50(B)"
MAP50_CURVE = "map50_curve"  # a trial's mAP50 after each epoch, recorded beside its mAP50-95 curve
OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW"}


def trainer_args(
    data_yaml: Path,
    training: Any,
    imgsz: int,
    epochs: int,
    seed: int,
    log_dir: Path,
    device: str,
    every_epoch: bool = True,
) -> dict[str, Any]:
    """ultralytics' arguments for a fit: the one place the space's training section becomes them.
    ``every_epoch``: validate after every epoch, else after the last one only (ultralytics' ``val``)."""
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
        "val": every_epoch,
        "verbose": False,
        "pretrained": False,
    }


def fit(
    model: nn.Module,
    data_yaml: Path,
    training: Any,
    imgsz: int,
    epochs: int,
    seed: int,
    log_dir: Path,
    hooks: FitHooks,
    device: str = "cpu",
    every_epoch: bool = True,
) -> FitResult:
    """Train ``model`` (a DetectionModel) for ``epochs`` unless ``hooks.epoch_end`` stops it; see the
    module's text. The gate hooks hold every training and validation batch."""
    from nas.tasks.detect import ultra

    ultra.load()
    import yaml

    log_dir.mkdir(parents=True, exist_ok=True)
    model_yaml = log_dir / "model.yaml"  # what was trained, as ultralytics reads it (attention rows included)
    model_yaml.write_text(yaml.safe_dump(model.yaml, sort_keys=False))
    args = {
        **trainer_args(data_yaml, training, imgsz, epochs, seed, log_dir, device, every_epoch),
        "model": str(model_yaml),
    }
    threads = torch.get_num_threads()  # the search's count (nas.measure.cpus)
    trainer = trainer_type(_trainer_class(model), training)(overrides=args)
    torch.set_num_threads(threads)  # ultralytics' select_device set it to its own (cores - 1)
    hooked = _Hooked(hooks)
    hooked.attach(trainer)
    try:
        with ultra.logged_to(log_dir / "ultralytics.log"):
            trainer.train()
    finally:
        hooks.release()  # the gate is never left held by a fit that failed inside a batch
    with contextlib.suppress(OSError):
        (log_dir / "weights").rmdir()  # made by ultralytics for checkpoints it does not write here
    hooks.fit_end(hooked.result.seconds, None)
    return hooked.result


def trainer_type(base: type, training: Any) -> type:
    """The ultralytics trainer a search's fits and ``nas train`` use: ``base`` with validation that leaves
    the random generators as it found them, and the attention's ``insert_lr`` (``with_insert_lr``)."""
    return with_insert_lr(_validation_keeps_rng(base), training)


def _validation_keeps_rng(base: type) -> type:
    """ultralytics trainer ``base`` whose validation restores the random generators (torch's CPU one,
    numpy's, Python's) it found: its data loader draws from them, so without this a run validated after
    every epoch and one validated after its last only (a confirmation's) train differently (measured:
    other weights after 2 epochs of the tiny detector)."""

    class KeptRng(base):  # type: ignore[misc, valid-type]
        def validate(self) -> Any:
            import random

            import numpy as np

            states = torch.get_rng_state(), np.random.get_state(), random.getstate()
            try:
                return super().validate()
            finally:
                torch.set_rng_state(states[0])
                np.random.set_state(states[1])
                random.setstate(states[2])

    return KeptRng


def with_insert_lr(base: type, training: Any) -> type:
    """ultralytics trainer ``base``; in a warm start with ``insert_lr``, one whose optimiser trains the
    attention put in (and its gates) at that rate, every other parameter as ultralytics groups it."""
    scale = training.insert_scale  # ultralytics' groups start at lr0, the space's lr
    if scale is None:
        return base
    import attention

    class InsertLr(base):  # type: ignore[misc, valid-type]
        def build_optimizer(self, model: nn.Module, *args: Any, **kwargs: Any) -> Any:
            optimizer = super().build_optimizer(model, *args, **kwargs)
            groups = attention.with_attention_lr(optimizer.param_groups, model, scale)
            optimizer.param_groups.clear()  # no state yet: the groups are only re-cut
            for group in groups:
                optimizer.add_param_group(group)
            return optimizer

    return InsertLr


def _trainer_class(prebuilt: nn.Module) -> type:
    """ultralytics' DetectionTrainer training ``prebuilt`` (our seeded build), writing no checkpoints,
    without its final re-validation of best.pt, and failing on a non-finite loss."""
    from ultralytics.models.yolo.detect import DetectionTrainer

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

    return SearchTrainer


class _Hooked:
    """A fit's ``FitHooks`` on ultralytics' callbacks: the gate around every training and validation batch
    (the validator copies the trainer's callbacks) and the seconds inside them, steps for a display, and
    after each epoch's validation the curve so far (a True answer stops the trainer)."""

    def __init__(self, hooks: FitHooks):
        self.hooks, self.result = hooks, FitResult(extra={MAP50_CURVE: []})
        self.step = self.images = 0
        self.start = self.last = self.batch_t0 = self.val_t0 = 0.0
        self.validated = False  # this epoch ran a validation (without ``val``, the last epoch alone does)

    def attach(self, trainer: Any) -> None:
        for event, fn in (
            ("on_val_batch_start", self.val_start),
            ("on_val_batch_end", self.val_end),
            ("on_train_epoch_start", self.epoch_start),
            ("on_train_batch_start", self.batch_start),
            ("on_train_batch_end", self.batch_end),
            ("on_train_epoch_end", lambda t: self.hooks.phase("validating")),
            ("on_fit_epoch_end", self.epoch_end),
        ):
            trainer.add_callback(event, fn)

    def epoch_start(self, t: Any) -> None:
        self.step, self.start, self.images, self.last = 0, time.perf_counter(), 0, 0.0
        self.validated = False

    def batch_start(self, t: Any) -> None:
        self.hooks.batch_start()
        self.batch_t0 = time.perf_counter()

    def batch_end(self, t: Any) -> None:
        now = time.perf_counter()
        self.result.seconds += now - self.batch_t0
        self.hooks.batch_end()
        self.step += 1
        self.images += int(t.batch_size)
        steps = len(t.train_loader)
        if now - self.last >= 0.5 or self.step == steps:
            self.last = now
            self.hooks.step(t.epoch + 1, self.step, steps, self.images / max(now - self.start, 1e-9))

    def epoch_end(self, t: Any) -> None:  # after validation; once per epoch trained (final_eval is skipped)
        metrics, r = t.metrics or {}, self.result
        if MAP not in metrics or not self.validated:  # not validated: the metrics are an earlier epoch's
            return
        r.curve.append(float(metrics[MAP]))
        r.extra[MAP50_CURVE].append(float(metrics[MAP50]))
        r.model = t.ema.ema if t.ema else t.model
        if self.hooks.epoch_end(list(r.curve), {MAP50_CURVE: [round(v, 5) for v in r.extra[MAP50_CURVE]]}):
            t.stop = True

    def val_start(self, v: Any) -> None:
        self.hooks.batch_start()
        self.val_t0 = time.perf_counter()

    def val_end(self, v: Any) -> None:
        self.result.seconds += time.perf_counter() - self.val_t0
        self.hooks.batch_end()
        self.validated = True
