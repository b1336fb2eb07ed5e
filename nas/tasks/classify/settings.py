"""A classifier's settings: its ``training`` keys and its data sources, each key declared once (type,
default, bounds, rule, resume) for the space loader, the data modules and ``nas train`` alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nas.core.config import (
    CONFIRMATION,
    DATA_COMMON,
    LR_RULE,
    NOISE_SEEDS,
    SEED,
    START,
    Data,
    Setting,
    Training,
    section_class,
)

TRAINING_SCHEMA = {
    "epochs": Setting(int, 6, bounds=(1, 10_000)),
    "batch_size": Setting(int, 128, bounds=(1, 65_536)),
    "optimizer": Setting(("adamw", "sgd"), "adamw"),
    "lr": Setting(float, 2e-3, **LR_RULE),
    "weight_decay": Setting(float, 0.05, bounds=(0.0, 10.0)),
    "momentum": Setting(float, 0.9, bounds=(0.0, 1.0)),
    "schedule": Setting(("onecycle", "cosine", "constant"), "onecycle"),
    "precision": Setting(("32", "16-mixed", "bf16-mixed"), "32"),
    "channels_last": Setting(bool, False),
    "devices": Setting(int, 1, bounds=(1, 64)),
    "seed": SEED,
    "noise_seeds": NOISE_SEEDS,
    **CONFIRMATION,
    **START,
}


class ClassifierTraining(Training):
    channels_last: bool


TrainingSettings = section_class("TrainingSettings", TRAINING_SCHEMA, ClassifierTraining, __name__)

_COUNT = (1, 1_000_000)
DIGITS = {  # the embedded task (nas.tasks.classify.data): its one home of defaults
    "canvas": Setting(int, 32, bounds=(8, 1024)),
    "train": Setting(int, 3000, bounds=_COUNT),
    "val": Setting(int, 1000, bounds=_COUNT),
    "test": Setting(int, 1000, bounds=(0, 1_000_000)),
    "clutter": Setting(int, 2, bounds=(0, 100)),
    "noise": Setting(float, 0.1, bounds=(0.0, 10.0)),
    "seed": SEED,
    # fresh training canvases every epoch (the same training digits at new places, new clutter and noise):
    # a network cannot learn the training set by heart, so fine-tuning still has a loss to lower
    "resample": Setting(bool, False, added=True),
}
SOURCES = {
    "digits": DIGITS,
    "imagefolder": {
        "root": Setting(str, None, path=True),
        "val_split": Setting(float, 0.2, rule=lambda v: 0 < v < 1, rule_text="a number in (0, 1)"),
        "on_error": Setting(("raise", "skip"), "raise"),
    },
    "cifar10": {"root": Setting(str, "data", path=True), "download": Setting(bool, True)},
    "cifar100": {"root": Setting(str, "data", path=True), "download": Setting(bool, True)},
}
DEFAULT_SOURCE = "digits"
CHANNELS = {"digits": 1, "cifar10": 3, "cifar100": 3, "imagefolder": 3}  # images as the data modules give them


def _data(cls_name: str, source: str) -> type:
    return section_class(
        cls_name, {"source": Setting(tuple(SOURCES), source), **SOURCES[source], **DATA_COMMON}, Data, __name__
    )


def data_class(source: str) -> type:
    """The frozen value of a ``data`` section with this source: ``source``, its keys, ``num_workers``."""
    return _DATA[source]


DigitsData = _data("DigitsData", "digits")
ImagefolderData = _data("ImagefolderData", "imagefolder")
Cifar10Data = _data("Cifar10Data", "cifar10")
Cifar100Data = _data("Cifar100Data", "cifar100")
DATA_CLASSES = _DATA = {
    "digits": DigitsData,
    "imagefolder": ImagefolderData,
    "cifar10": Cifar10Data,
    "cifar100": Cifar100Data,
}


def parse_settings(file: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
    """The ``data`` and ``training`` sections of ``raw`` (an export's card, with a command's overrides)
    as typed values; a SpaceError naming ``file`` lists every problem."""
    from nas.core.spacecheck import parse_card_settings

    return parse_card_settings(file, raw, _DATA, DEFAULT_SOURCE, TrainingSettings)
