"""A detector's settings: its ``training`` keys (what ``nas.tasks.detect.fit.trainer_args`` gives
ultralytics) and its data sources, each key declared once."""

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
    "epochs": Setting(int, 4, bounds=(1, 10_000)),
    "batch_size": Setting(int, 16, bounds=(1, 65_536)),
    "optimizer": Setting(("adamw", "sgd"), "adamw"),
    "lr": Setting(float, 3e-3, **LR_RULE),
    "weight_decay": Setting(float, 5e-4, bounds=(0.0, 10.0)),
    "momentum": Setting(float, 0.937, bounds=(0.0, 1.0)),
    "schedule": Setting(("linear", "cosine", "constant"), "linear"),
    "warmup_epochs": Setting(float, 0.5, bounds=(0.0, 100.0)),
    "mosaic": Setting(float, 0.0, bounds=(0.0, 1.0)),
    "close_mosaic": Setting(int, 0, bounds=(0, 10_000)),
    "precision": Setting(("32",), "32"),  # ultralytics' AMP check would download a model
    "devices": Setting(int, 1, bounds=(1, 1)),  # several processes per trial: use workers
    "seed": SEED,
    "noise_seeds": NOISE_SEEDS,
    **CONFIRMATION,
    **START,
}


class DetectorTraining(Training):
    warmup_epochs: float
    mosaic: float
    close_mosaic: int


TrainingSettings = section_class("TrainingSettings", TRAINING_SCHEMA, DetectorTraining, __name__)

_COUNT = (1, 1_000_000)
SOURCES = {
    "digits_boxes": {  # the embedded boxes (nas.tasks.detect.data)
        "canvas": Setting(
            int, 64, bounds=(8, 1024), rule=lambda v: v >= 32, rule_text="at least 32 (a digit is 16 to 32 pixels)"
        ),
        "train": Setting(int, 1024, bounds=_COUNT),
        "val": Setting(int, 256, bounds=_COUNT),
        "min_objects": Setting(int, 1, bounds=(0, 50)),
        "max_objects": Setting(int, 3, bounds=(1, 50)),
        "clutter": Setting(int, 2, bounds=(0, 100)),
        "noise": Setting(float, 0.1, bounds=(0.0, 10.0)),
        "seed": SEED,
    },
    "ultralytics": {"yaml": Setting(str, None, path=True)},
}
DEFAULT_SOURCE = "digits_boxes"


def _data(cls_name: str, source: str) -> type:
    return section_class(
        cls_name, {"source": Setting(tuple(SOURCES), source), **SOURCES[source], **DATA_COMMON}, Data, __name__
    )


def data_class(source: str) -> type:
    return _DATA[source]


DigitsBoxesData = _data("DigitsBoxesData", "digits_boxes")
UltralyticsData = _data("UltralyticsData", "ultralytics")
DATA_CLASSES = _DATA = {"digits_boxes": DigitsBoxesData, "ultralytics": UltralyticsData}


def parse_settings(file: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
    """The ``data`` and ``training`` sections of ``raw`` (an export's card, with a command's overrides)
    as typed values; a SpaceError naming ``file`` lists every problem."""
    from nas.core.spacecheck import parse_card_settings

    return parse_card_settings(file, raw, _DATA, DEFAULT_SOURCE, TrainingSettings)
