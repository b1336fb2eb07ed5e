"""The LightningModule of a trial and the Trainer configured from a space's training section."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from nas.core.errors import NonFiniteLoss
from nas.core.task import FitHooks, FitResult


class Classifier(pl.LightningModule):
    """Cross-entropy training; top-1 validation accuracy via torchmetrics; optimiser and schedule
    from the space's ``training`` section."""

    def __init__(self, model: nn.Module, num_classes: int, training: Mapping[str, Any]):
        super().__init__()
        self.model, self.cfg = model, training
        self.threads = torch.get_num_threads()  # the process's share (nas.measure.cpus): DDP ranks split it
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.curve: list[float] = []
        self._loss_sum: torch.Tensor | None = None  # the epoch's training loss x samples, so far
        self._samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        """In every process of the fit, spawned DDP ranks included: quiet logs and, for CPU ranks,
        their share of the threads the starting process had (each would otherwise take every core)."""
        quiet_lightning()
        world = self.trainer.world_size
        if world > 1 and self.trainer.strategy.root_device.type == "cpu":
            torch.set_num_threads(max(1, self.threads // world))

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(self._input(x)), y)
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"training loss is {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}")
        # summed here and logged once an epoch: Lightning's per-step self.log costs about 0.4 ms a step
        weighted = loss.detach() * len(y)
        self._loss_sum = weighted if self._loss_sum is None else self._loss_sum + weighted
        self._samples += len(y)
        return loss

    def on_train_epoch_end(self) -> None:
        if self._samples:  # the epoch's mean training loss per sample (with DDP, the ranks' means averaged)
            self.log("train_loss", self._loss_sum / self._samples, sync_dist=True)
            self._loss_sum, self._samples = None, 0
        if self.trainer.optimizers:  # the learning rate the epoch ended with (schedules step per batch)
            self.log("lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), sync_dist=True)

    def validation_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_acc.update(self(self._input(x)), y)

    def on_validation_epoch_end(self) -> None:
        acc = float(self.val_acc.compute())
        self.val_acc.reset()
        self.log("val_acc", acc, sync_dist=True)
        if not self.trainer.sanity_checking:
            self.curve.append(acc)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_acc_curve"] = list(self.curve)
        checkpoint["planned_epochs"] = self.trainer.max_epochs  # the schedule depends on it

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.curve = list(checkpoint.get("val_acc_curve", []))

    def configure_optimizers(self) -> Any:
        cfg = self.cfg
        groups = parameter_groups(self.model, cfg)
        peaks = [g["lr"] for g in groups]
        opt = make_optimizer(groups, cfg)
        total = int(self.trainer.estimated_stepping_batches)
        if total < 8:  # too few steps to shape: one-cycle's phases would be empty
            return opt
        if cfg.schedule == "onecycle":
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=max(total, 1), pct_start=0.25)
        elif cfg.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(total, 1))
        else:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_optimizer(groups: list[dict[str, Any]], cfg: Any, fused: bool = True) -> torch.optim.Optimizer:
    """The space's optimiser (``training.optimizer``) over ``groups``, its update fused where
    ``fused_step`` allows (``fused=False``: torch's per-tensor loop, for ``nas bench step``)."""
    kind = fused_step(groups) if fused else None
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True, fused=kind
        )
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=kind)


FUSED_DEVICES = ("cpu", "cuda")  # where torch has one-kernel SGD and AdamW steps (measured here on CPU)


def fused_step(groups: Sequence[Mapping[str, Any]]) -> bool | None:
    """Whether the optimiser updates every parameter in one fused kernel: where all parameters are
    floating point on a device in FUSED_DEVICES (else None, torch's default). The same update as the
    per-tensor loop up to rounding; on 2 CPU cores it takes an AdamW step of the resnet10t proxy from
    17 ms to under 4 ms (the loop reads and writes each tensor about ten times; ``nas bench step``)."""
    params = [p for g in groups for p in g["params"]]
    ok = bool(params) and all(p.is_floating_point() and p.device.type in FUSED_DEVICES for p in params)
    return True if ok else None


def parameter_groups(model: nn.Module, training: Any) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: every parameter at ``training.lr``; in a warm start with
    ``insert_lr``, what the start did not have (the attention put in and its gates) at that rate."""
    import attention

    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": training.lr}]
    scale = training.insert_scale
    return groups if scale is None else attention.with_attention_lr(groups, model, scale)


def quiet_lightning() -> None:
    """Keep Lightning's banners, tips and warnings out of the terminal (logs still go to runs/)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_utilities"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"lightning(\.|$)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*")


def make_trainer(
    training: Mapping[str, Any],
    *,
    epochs: int | None = None,
    log_dir: Path | None = None,
    callbacks: list[pl.Callback] | None = None,
    accelerator: str = "auto",
    progress: bool = False,
) -> pl.Trainer:
    quiet_lightning()
    precision = training.precision
    if precision != "32" and not torch.cuda.is_available() and precision == "16-mixed":
        precision = "bf16-mixed"  # float16 autocast on CPU is slow and unsupported by Lightning there
    logger: Any = False
    if log_dir is not None:  # metrics.csv (and TensorBoard events where the package is installed) per epoch
        from lightning.pytorch.loggers import CSVLogger

        logger = [CSVLogger(str(log_dir.parent), name=log_dir.name, version="", flush_logs_every_n_steps=1)]
        if tensorboard_available():
            from lightning.pytorch.loggers import TensorBoardLogger

            logger.append(
                TensorBoardLogger(str(log_dir.parent), name=log_dir.name, version="", default_hp_metric=False)
            )
    devices = training.devices
    # several devices: DDP in spawned processes. Plain "ddp" would start this whole command again in
    # every rank (each would run its own search); spawned ranks run only the fit.
    strategy = "ddp_spawn" if devices > 1 else "auto"
    return pl.Trainer(
        max_epochs=epochs or training.epochs,
        accelerator=accelerator,
        devices=devices,
        precision=precision,
        strategy=strategy,
        logger=logger,
        callbacks=callbacks or [],
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, pl.callbacks.ModelCheckpoint) for c in callbacks or []),
        num_sanity_val_steps=0,
        deterministic=False,
        log_every_n_steps=10,
        default_root_dir=str(log_dir) if log_dir else None,
    )


def tensorboard_available() -> bool:
    """Whether TensorBoard event files can be written (the ``tensorboard`` extra)."""
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX"))


def seed_everything(seed: int) -> None:
    pl.seed_everything(seed, workers=True, verbose=False)


def seeded_classifier(
    arch: Any,
    seed: int,
    dm: Any,
    training: Any,
    num_classes: int,
    in_chans: int,
    start: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
) -> Classifier:
    """The LightningModule of ``arch`` with every source of randomness fixed by ``seed`` alone: the
    backbone's initial weights (identical for every architecture), each attention module's own
    generator, the order of training batches and the training stream itself. Two architectures built
    with one seed differ only where their choices differ (common random numbers); the same call
    reproduces a trial exactly. The one place where the search, its re-runs and ``nas train`` seed.
    ``model``: that same build made already (a trial's latency was timed on it)."""
    from nas.tasks.classify.model import build

    dm.shuffle_seed = seed
    if model is None:
        model = build(arch, num_classes, in_chans, init_seed=seed, start=start, gated=training.gated)
    if training.channels_last:
        model = model.to(memory_format=torch.channels_last)
    seed_everything(seed)  # after the build: what the attention modules drew does not shift training
    return Classifier(model, num_classes, training)


@dataclass
class Fitting:
    """An architecture ready to train: its seeded module and its Trainer (``prepare_fit``)."""

    module: Classifier
    trainer: pl.Trainer
    dm: Any

    def run(self, **fit_kwargs: Any) -> None:
        """Fit; in-memory data moves to the trainer's GPU first (a DDP fit's ranks load their own)."""
        ddp = self.trainer.world_size > 1
        if (
            not ddp
            and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
            and hasattr(self.dm, "to_device")
        ):
            self.dm.to_device(self.trainer.strategy.root_device)
        fit_detached(self.trainer, self.module, self.dm, **fit_kwargs)


def prepare_fit(
    arch: Any,
    seed: int,
    dm: Any,
    training: Mapping[str, Any],
    num_classes: int,
    in_chans: int,
    *,
    epochs: int | None = None,
    callbacks: Sequence[pl.Callback] = (),
    log_dir: Path | None = None,
    progress: bool = False,
    start: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    every_epoch: bool = True,
) -> Fitting:
    """Build -> seeded Classifier -> Trainer for ``arch``: the one place where a search trial, its re-runs
    (``fit_curve``) and ``nas train`` set up a fit. ``progress``: Lightning's own bar (``nas train``).
    ``every_epoch``: validate after every epoch, else after the last one only."""
    module = seeded_classifier(arch, seed, dm, training, num_classes, in_chans, start, model)
    trainer = make_trainer(training, epochs=epochs, callbacks=list(callbacks), log_dir=log_dir, progress=progress)
    if not every_epoch and epochs:
        trainer.check_val_every_n_epoch = epochs
    if getattr(dm, "resample", False):  # the data module draws each epoch's training set anew
        trainer.reload_dataloaders_every_n_epochs = 1
    return Fitting(module, trainer, dm)


def fit_detached(trainer: pl.Trainer, module: Any, dm: Any, **kwargs: Any) -> None:
    """``trainer.fit`` that leaves the data module as it found it: Lightning keeps the trainer on the
    data module (``dm.trainer``), so a later fit that spawns DDP ranks would pickle this trainer and
    its callbacks (closures among them) along with the data module, and fail."""
    try:
        trainer.fit(module, dm, **kwargs)
    finally:
        dm.trainer = None


class _Hooked(pl.Callback):
    """A fit's ``FitHooks`` as a Lightning callback: the gate around every training and validation batch
    and the seconds inside them, steps and phases for a display, the pruner's word after each validation
    (rank 0 decides; the decision is broadcast, so with DDP every rank stops after the same epoch), and
    the end. Only global rank 0 calls the hooks; a rank waiting at the gate while another holds it inside
    a batch, waiting for the first in a collective, would deadlock with a latency measurement."""

    def __init__(self, hooks: FitHooks, every_s: float = 0.5):
        self.hooks, self.every_s = hooks, every_s
        self.seconds = self._t0 = self._start = self._last = 0.0
        self._samples = 0

    def _batch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        if trainer.is_global_zero:
            self.hooks.batch_start()
        self._t0 = time.perf_counter()

    def _batch_end(self, trainer: pl.Trainer, *_: Any) -> None:
        self.seconds += time.perf_counter() - self._t0
        if trainer.is_global_zero:
            self.hooks.batch_end()

    on_validation_batch_start = _batch_start
    on_validation_batch_end = _batch_end
    on_train_batch_start = _batch_start

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._batch_end(trainer)
        if trainer.world_size > 1:
            return
        self._samples += len(batch[0])
        now, steps = time.perf_counter(), int(trainer.num_training_batches)
        if now - self._last >= self.every_s or batch_idx + 1 == steps:
            self._last = now
            rate = self._samples / max(now - self._start, 1e-9)
            self.hooks.step(trainer.current_epoch + 1, batch_idx + 1, steps, rate)

    def on_train_epoch_start(self, trainer: pl.Trainer, module: Any) -> None:
        self._start, self._last, self._samples = time.perf_counter(), 0.0, 0

    def on_validation_start(self, trainer: pl.Trainer, module: Any) -> None:
        if not trainer.sanity_checking and trainer.world_size == 1:
            self.hooks.phase("validating")

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        if trainer.sanity_checking:
            return
        stop = self.hooks.epoch_end(list(module.curve), {}) if trainer.is_global_zero else False
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
        epochs = None
        if trainer.world_size > 1:  # evidence that every rank stopped after the same epoch
            gathered = trainer.strategy.all_gather(torch.tensor(len(module.curve)))
            epochs = [int(e) for e in gathered.flatten()]
        if trainer.is_global_zero:
            self.hooks.fit_end(self.seconds, epochs)

    def on_exception(self, trainer: pl.Trainer, module: Any, exception: BaseException) -> None:
        self.hooks.release()  # the gate is never left held by a fit that failed inside a batch


def fit(
    arch: Any,
    seed: int,
    dm: Any,
    training: Mapping[str, Any],
    num_classes: int,
    in_chans: int,
    epochs: int,
    log_dir: Path,
    hooks: FitHooks,
    start: Mapping[str, Any] | None = None,
    model: nn.Module | None = None,
    every_epoch: bool = True,
) -> FitResult:
    """Train ``arch`` from ``seed`` for ``epochs`` unless ``hooks`` stop it: the classifier's fit for a
    search trial and its re-runs. A Ctrl-C (which Lightning turns into ``sys.exit(1)``) is raised as
    KeyboardInterrupt."""
    fitting = prepare_fit(
        arch, seed, dm, training, num_classes, in_chans, epochs=epochs, callbacks=[_Hooked(hooks)], log_dir=log_dir,
        start=start, model=model, every_epoch=every_epoch,
    )  # fmt: skip
    try:
        fitting.run()
    except SystemExit as e:
        if e.code in (None, 0, 1, 130):
            raise KeyboardInterrupt from None
        raise
    if fitting.trainer.interrupted:
        raise KeyboardInterrupt
    return FitResult(list(fitting.module.curve), fitting.module.model)
