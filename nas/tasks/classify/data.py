"""Data as Lightning DataModules: the embedded digits task, ImageFolder directories and CIFAR.

The embedded default needs no download: scikit-learn ships 1,797 real 8x8 handwritten digits. Each
image of the task is a canvas with one digit (upscaled to 16x16) at a random position, fragments of
other digits as clutter and Gaussian noise; the label is the digit, and its box is recorded. The
source digits of train, validation and test are disjoint, and everything is deterministic from the
seed.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from nas.core.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError):
    pass


@dataclass(frozen=True)
class DigitsSplit:
    images: torch.Tensor  # (N, 1, canvas, canvas) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64
    boxes: torch.Tensor  # (N, 4) int64: x0, y0, x1, y1 (exclusive) of the digit


@functools.cache
def _upscaled_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float32) / 16.0  # (1797, 8, 8)
    return np.kron(images, np.ones((1, 2, 2), np.float32)), d.target.astype(np.int64)  # 16x16


def make_digits(
    n: int,
    pool: np.ndarray,
    labels: np.ndarray,
    clutter_pool: np.ndarray,
    *,
    canvas: int,
    clutter: int,
    noise: float,
    rng: np.random.Generator,
) -> DigitsSplit:
    """``n`` canvases, each with one digit from ``pool`` and ``clutter`` 8x8 fragments cut from
    ``clutter_pool`` digits, placed outside the digit's box."""
    size = pool.shape[-1]
    if canvas < size + 2:
        raise DataError(f"data.canvas: {canvas} is too small; the digit is {size}x{size}, so canvas >= {size + 2}")
    out = np.zeros((n, canvas, canvas), np.float32)
    picks = rng.integers(0, len(pool), n)
    xy = rng.integers(0, canvas - size + 1, (n, 2))
    for i in range(n):
        x, y = xy[i]
        for _ in range(clutter):
            for _attempt in range(20):
                src = clutter_pool[rng.integers(0, len(clutter_pool))]
                sx, sy = rng.integers(0, size - 8 + 1, 2)
                frag = src[sy : sy + 8, sx : sx + 8]
                if frag.sum() < 4:  # an empty corner is no clutter
                    continue
                fx, fy = rng.integers(0, canvas - 8 + 1, 2)
                if fx + 8 <= x or fx >= x + size or fy + 8 <= y or fy >= y + size:
                    np.maximum(out[i, fy : fy + 8, fx : fx + 8], frag, out=out[i, fy : fy + 8, fx : fx + 8])
                    break
        np.maximum(out[i, y : y + size, x : x + size], pool[picks[i]], out=out[i, y : y + size, x : x + size])
    if noise > 0:
        out += rng.normal(0, noise, out.shape).astype(np.float32)
    np.clip(out, 0, 1, out=out)
    boxes = np.stack([xy[:, 0], xy[:, 1], xy[:, 0] + size, xy[:, 1] + size], 1)
    return DigitsSplit(torch.from_numpy(out[:, None]), torch.from_numpy(labels[picks]), torch.from_numpy(boxes))


def digits_splits(**options: Any) -> dict[str, DigitsSplit]:
    """Train/val/test of the embedded task. The 1,797 source digits are split 60/20/20 first, so no
    digit drawn in training is seen in validation or test. ``options``: the keys of a ``digits`` data
    section (``nas.tasks.classify.settings.DIGITS``, whose defaults fill in the others)."""
    o, images, labels, parts = _digit_sources(options)
    out = {}
    for k, (name, idx) in enumerate(parts.items()):
        rng = np.random.default_rng([o["seed"], k])
        out[name] = _canvases(o, name, images[idx], labels[idx], rng)
    return out


def resampled_train(options: Mapping[str, Any], stream: int, epoch: int) -> DigitsSplit:
    """The training canvases of one epoch with ``resample: true``: the same training digits as
    ``digits_splits`` (none of validation's or test's), drawn at new places with new clutter and noise
    for every (``stream``, ``epoch``). ``stream``: the fit's seed, so two architectures trained from one
    seed see the same images in the same epoch (common random numbers)."""
    o, images, labels, parts = _digit_sources(options)
    rng = np.random.default_rng([o["seed"], 3, stream, epoch])  # 0-2: the fixed splits' streams
    return _canvases(o, "train", images[parts["train"]], labels[parts["train"]], rng)


def _digit_sources(options: Mapping[str, Any]) -> tuple[dict[str, Any], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The options with their defaults, the source digits and labels, and which of them each split draws."""
    from nas.tasks.classify.settings import DIGITS

    unknown = set(options) - set(DIGITS)
    if unknown:
        raise TypeError(f"digits_splits: unknown options {sorted(unknown)}; allowed: {', '.join(DIGITS)}")
    o = {k: v.default for k, v in DIGITS.items()} | dict(options)
    images, labels = _upscaled_digits()
    order = np.random.default_rng(o["seed"]).permutation(len(images))
    cut1, cut2 = int(0.6 * len(order)), int(0.8 * len(order))
    return o, images, labels, {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}


def _canvases(o: Mapping[str, Any], split: str, images: np.ndarray, labels: np.ndarray, rng: Any) -> DigitsSplit:
    return make_digits(
        o[split], images, labels, images, canvas=o["canvas"], clutter=o["clutter"], noise=o["noise"], rng=rng
    )


EVAL_BATCH_FACTOR = 4  # validation and test batches: this many training batches (no gradients, no kept activations)


def eval_batch_size(batch_size: int) -> int:
    """The batch size of every validation and test loader: evaluation keeps no activations for a backward
    pass, so a batch several times the training one needs less memory than a training step, and takes
    fewer per-batch costs (Lightning's hooks, the latency gate). Eval-mode predictions do not depend on
    it, up to float rounding (another batch size may take another convolution algorithm)."""
    return EVAL_BATCH_FACTOR * batch_size


def eval_loader(ds: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
    """A validation or test loader: in order, at ``eval_batch_size``, and with a generator of its own, so
    that evaluating draws nothing from the global one (a loader without one takes a seed from it for each
    pass): a run validated after every epoch trains as the same run validated after its last only."""
    return DataLoader(ds, batch_size=eval_batch_size(batch_size), generator=torch.Generator(), **kwargs)


class BatchedTensors(TensorDataset):
    """Tensors in memory whose loader takes a whole batch with one index per tensor (``__getitems__``)
    instead of one item at a time and a stack: a third of the time for 5,000 digits, the same batches.
    A DataLoader over it needs ``collate_fn=_as_taken`` (``TensorDataModule`` passes it); ``ds[i]``
    is an item as in a TensorDataset."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(t[index.to(t.device)] for t in self.tensors)


def _as_taken(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate function of ``BatchedTensors``: its batch is already made."""
    return batch


class TensorDataModule(pl.LightningDataModule):
    """Tensors in memory (moved to the GPU once when training there); a seeded shuffle."""

    num_classes: int
    in_chans: int

    def __init__(self, batch_size: int, seed: int = 0):
        super().__init__()
        self.batch_size, self.seed = batch_size, seed
        self.shuffle_seed = seed  # the order of training batches: set per fit (see training.fit_architecture)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        collate = {"collate_fn": _as_taken} if isinstance(ds, BatchedTensors) else {}
        if not shuffle:
            return eval_loader(ds, self.batch_size, **collate)
        gen = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(ds, batch_size=self.batch_size, shuffle=True, generator=gen, **collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False)


class DigitsDataModule(TensorDataModule):
    num_classes = 10
    in_chans = 1

    def __init__(self, batch_size: int, seed: int, options: Mapping[str, Any]):
        """``options``: the data section's digits keys (canvas, train, val, test, clutter, noise, seed)."""
        super().__init__(batch_size, seed)
        self.options = dict(options)
        self.resample = bool(self.options.get("resample", False))  # fresh training canvases every epoch
        self.splits: dict[str, DigitsSplit] | None = None
        self._device: torch.device | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            self.splits = _cached_digits(**self.options)
            s = self.splits
            self.train_set = BatchedTensors(s["train"].images, s["train"].labels)
            self.val_set = BatchedTensors(s["val"].images, s["val"].labels)
            self.test_set = BatchedTensors(s["test"].images, s["test"].labels)

    def train_dataloader(self) -> DataLoader:
        """The fixed training set; with ``resample``, the canvases of the trainer's current epoch (the
        trainer reloads this loader every epoch: ``prepare_fit``)."""
        if not self.resample:
            return super().train_dataloader()
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        split = _cached_resample(self.options, self.shuffle_seed, epoch)
        tensors = (split.images, split.labels)
        if self._device is not None:
            tensors = tuple(t.to(self._device) for t in tensors)
        return self._loader(BatchedTensors(*tensors), True)

    def to_device(self, device: torch.device) -> None:
        """Keep the whole (small) data set on the training device."""
        self.setup()
        self._device = device
        for name in ("train_set", "val_set", "test_set"):
            ds = getattr(self, name)
            setattr(self, name, BatchedTensors(*(t.to(device) for t in ds.tensors)))


_DIGITS_CACHE: dict[tuple, dict[str, DigitsSplit]] = {}


_RESAMPLED: collections.OrderedDict[tuple, DigitsSplit] = collections.OrderedDict()
RESAMPLED_BYTES = 256 * 2**20  # the epochs kept, at most (the last drawn always): 32 epochs of 2,000 at 32 px


def _cached_resample(options: Mapping[str, Any], stream: int, epoch: int) -> DigitsSplit:
    """``resampled_train``, kept for the epochs last drawn: every trial of a search fine-tunes from the
    same seed, so it draws the same canvases as the trial before (about 0.2 s an epoch at 2,000)."""
    key = (tuple(sorted(options.items())), stream, epoch)
    if key in _RESAMPLED:
        _RESAMPLED.move_to_end(key)
        return _RESAMPLED[key]
    split = _RESAMPLED[key] = resampled_train(options, stream, epoch)
    while len(_RESAMPLED) > 1 and sum(s.images.nbytes for s in _RESAMPLED.values()) > RESAMPLED_BYTES:
        _RESAMPLED.popitem(last=False)
    return split


def _cached_digits(**options: Any) -> dict[str, DigitsSplit]:
    key = tuple(sorted(options.items()))
    if key not in _DIGITS_CACHE:
        _DIGITS_CACHE[key] = digits_splits(**options)
    return _DIGITS_CACHE[key]


class _CheckedImageFolder(Dataset):
    """ImageFolder whose unreadable files raise an error naming the file, or are skipped and counted."""

    def __init__(self, root: Path, transform: Any, on_error: str, classes: list[str] | None = None):
        from PIL import Image
        from torchvision.datasets import ImageFolder

        try:
            base = ImageFolder(str(root), allow_empty=False)
        except (FileNotFoundError, OSError) as e:
            raise DataError(
                f"data.root: cannot read {root} as an image folder (one subfolder per class): {e}"
            ) from None
        if classes is not None and base.classes != classes:
            raise DataError(f"data.root: {root} has classes {base.classes}, but the training folder has {classes}")
        self.classes, self.transform = base.classes, transform
        self.samples, self.skipped = [], []
        for path, label in base.samples:
            try:
                with Image.open(path) as im:
                    im.verify()
                self.samples.append((path, label))
            except Exception as e:  # PIL raises many types for broken files
                if on_error == "raise":
                    raise DataError(
                        f"unreadable image {path}: {e.__class__.__name__}: {e} "
                        "(set data.on_error: skip to skip such files)"
                    ) from None
                self.skipped.append(path)
        if self.skipped:
            log.warning("skipped %d unreadable image(s) under %s, e.g. %s", len(self.skipped), root, self.skipped[0])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


class ImageFolderDataModule(pl.LightningDataModule):
    """Your own images: ``root/train/<class>/*`` and ``root/val/<class>/*``, or ``root/<class>/*`` split
    by ``val_split``; timm's train/eval transforms at the space's input size."""

    in_chans = 3

    def __init__(
        self,
        root: str,
        input_size: tuple[int, int],
        batch_size: int = 64,
        seed: int = 0,
        val_split: float = 0.2,
        on_error: str = "raise",
        num_workers: int = 0,
        **_: Any,
    ):
        super().__init__()
        self.root, self.input_size, self.batch_size, self.seed = Path(root), input_size, batch_size, seed
        self.shuffle_seed = seed  # the order of training batches; ``seed`` also fixes the validation split
        self.val_split, self.on_error, self.num_workers = val_split, on_error, num_workers
        self.train_set = self.val_set = None
        self.num_classes = 0

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from timm.data import create_transform

        if not self.root.is_dir():
            raise DataError(f"data.root: {self.root} is not a folder")
        train_tf = create_transform(self.input_size, is_training=True)
        eval_tf = create_transform(self.input_size, is_training=False)
        if (self.root / "train").is_dir() and (self.root / "val").is_dir():
            self.train_set = _CheckedImageFolder(self.root / "train", train_tf, self.on_error)
            self.val_set = _CheckedImageFolder(self.root / "val", eval_tf, self.on_error, self.train_set.classes)
        else:
            full_train = _CheckedImageFolder(self.root, train_tf, self.on_error)
            full_eval = _CheckedImageFolder(self.root, eval_tf, self.on_error)
            order = torch.randperm(len(full_train), generator=torch.Generator().manual_seed(self.seed)).tolist()
            n_val = max(1, int(round(self.val_split * len(order))))
            self.train_set = torch.utils.data.Subset(full_train, order[n_val:])
            self.val_set = torch.utils.data.Subset(full_eval, order[:n_val])
            self.train_set.classes = full_train.classes
        self.num_classes = len(self.train_set.classes)

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=gen, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_set, self.batch_size, num_workers=self.num_workers)


class CifarDataModule(pl.LightningDataModule):
    """CIFAR-10/100 in torchvision's on-disk format (downloaded into ``root`` when allowed)."""

    in_chans = 3

    def __init__(
        self,
        source: str,
        root: str,
        input_size: tuple[int, int],
        batch_size: int = 128,
        seed: int = 0,
        download: bool = True,
        num_workers: int = 0,
        **_: Any,
    ):
        super().__init__()
        self.source, self.root, self.input_size = source, root, input_size
        self.batch_size, self.seed, self.download, self.num_workers = batch_size, seed, download, num_workers
        self.shuffle_seed = seed  # the order of training batches
        self.num_classes = 10 if source == "cifar10" else 100
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from timm.data import create_transform
        from torchvision import datasets

        cls = datasets.CIFAR10 if self.source == "cifar10" else datasets.CIFAR100
        train_tf = create_transform(self.input_size, is_training=True)
        eval_tf = create_transform(self.input_size, is_training=False)
        try:
            self.train_set = cls(self.root, train=True, transform=train_tf, download=self.download)
            self.val_set = cls(self.root, train=False, transform=eval_tf, download=self.download)
        except RuntimeError as e:
            raise DataError(
                f"data.root: {self.source} not found under {self.root!r} ({e}); "
                "set data.download: true or point root at the extracted data"
            ) from None
        except OSError as e:  # the download: no network, a proxy, a full disk, a root not writable
            raise DataError(
                f"data.download: {self.source} could not be downloaded into {self.root!r} "
                f"({e.__class__.__name__}: {e}); download it where there is network and point data.root "
                "at the extracted folder"
            ) from None

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.shuffle_seed)
        return DataLoader(self.train_set, self.batch_size, shuffle=True, generator=gen, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_set, self.batch_size, num_workers=self.num_workers)


def datamodule(data: Any, input_size: tuple[int, int], batch_size: int, seed: int) -> pl.LightningDataModule:
    """The DataModule a space's ``data`` section describes (its typed value, or a mapping as written)."""
    options = {k: v for k, v in (data.as_dict() if hasattr(data, "as_dict") else data).items() if k != "source"}
    source = data.source if hasattr(data, "source") else data["source"]
    if source == "digits":
        if tuple(input_size) != (options["canvas"], options["canvas"]):
            raise DataError(
                f"input_size {list(input_size)} must equal data.canvas ({options['canvas']}) for the digits data"
            )
        options.pop("num_workers", None)  # in memory: no loader processes
        return DigitsDataModule(batch_size, seed, options)
    if source == "imagefolder":
        return ImageFolderDataModule(input_size=input_size, batch_size=batch_size, seed=seed, **options)
    return CifarDataModule(source, input_size=input_size, batch_size=batch_size, seed=seed, **options)
