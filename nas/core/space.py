"""Search spaces: which choices each stage offers (``Option``, ``StageSpace``), how many architectures
that makes, the baseline, and sampling an Architecture from an Optuna trial. ``nas.tasks.spacefile`` reads
and validates the YAML files."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nas.core.architecture import Architecture, ArchitectureError, StageChoice

if TYPE_CHECKING:
    from nas.core.config import Data, Latency, Limits, Training


@dataclass(frozen=True)
class StageInfo:
    """What a user needs to know about a stage (or a detector's position) to write a search space."""

    index: int
    module: str
    blocks: int
    out_channels: int
    spatial: tuple[int, int]
    placements: tuple[str, ...]
    channels: dict  # placement -> list of channel counts met there
    builtin: dict  # placement -> builtin attention class names


@dataclass(frozen=True)
class Option:
    """A mechanism allowed at a stage, with the values each hyperparameter may take and its placements."""

    mechanism: str
    hparams: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    placements: tuple[str | None, ...] = (None,)

    def count(self) -> int:
        return math.prod(len(v) for _, v in self.hparams) * len(self.placements)

    def choices(self, replace_builtin: bool) -> Iterator[StageChoice]:
        names = [n for n, _ in self.hparams]
        for place in self.placements:
            for combo in _product([v for _, v in self.hparams]):
                yield StageChoice(self.mechanism, tuple(zip(names, combo, strict=True)), place, replace_builtin)


def _product(lists: list[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for tail in _product(lists[1:]):
            yield (head, *tail)


@dataclass(frozen=True)
class StageSpace:
    index: int
    options: tuple[Option, ...]
    replace_builtin: bool = False

    def count(self) -> int:
        return sum(o.count() for o in self.options)


@dataclass(frozen=True)
class SearchSpace:
    path: str
    name: str
    backbone: str
    input_size: tuple[int, int]
    in_chans: int
    num_classes: int | None  # None: taken from the data
    data: Data  # typed, frozen sections (nas.core.config)
    stages: tuple[StageSpace, ...]
    stage_indices: tuple[int, ...]  # every stage of the backbone that has blocks
    training: Training
    objectives: tuple[str, ...]
    latency: Latency
    limits: Limits
    builtin_stages: tuple[int, ...] = field(default=())
    detector: Any = None  # a detection space: nas.tasks.detect.model.Detector (the backbone is its name)
    positions: tuple[Any, ...] = ()  # ... and its Positions, one per "stage" of an Architecture
    task: Any = None  # nas.core.task.Task: what kind of model it searches; readers ask it, not the fields above

    @property
    def unit(self) -> str:
        """What a choice is made for: a backbone's stage or a detector's position (parameter names,
        tables)."""
        return self.task.unit if self.task else "stage"

    @property
    def metric(self) -> str:
        """The name of the quality objective as shown to a user."""
        return self.task.metric if self.task else "accuracy"

    def count(self) -> int:
        """Number of distinct architectures."""
        return math.prod(s.count() for s in self.stages) if self.stages else 1

    def _fixed(self) -> dict[int, StageChoice]:
        return {i: StageChoice() for i in self.stage_indices}

    def baseline(self) -> Architecture:
        """No attention added anywhere (built-in attention kept)."""
        return Architecture(self.backbone, tuple(self._fixed().values()))

    def architectures(self) -> Iterator[Architecture]:
        def rec(k: int, chosen: dict[int, StageChoice]) -> Iterator[Architecture]:
            if k == len(self.stages):
                yield Architecture(self.backbone, tuple(chosen[i] for i in self.stage_indices))
                return
            st = self.stages[k]
            for opt in st.options:
                for choice in opt.choices(st.replace_builtin):
                    yield from rec(k + 1, {**chosen, st.index: choice})

        yield from rec(0, self._fixed())

    def sample(self, trial: Any) -> Architecture:
        """Define-by-run sampling: ``stage{i}.mechanism``, then only for the chosen mechanism
        ``stage{i}.{mechanism}.{hyperparameter}`` and ``stage{i}.{mechanism}.placement`` (where there
        is more than one value)."""
        chosen = self._fixed()
        for st in self.stages:
            names = [o.mechanism for o in st.options]
            unit = f"{self.unit}{st.index}"
            name = trial.suggest_categorical(f"{unit}.mechanism", names) if len(names) > 1 else names[0]
            opt = st.options[names.index(name)]
            hp = {}
            for key, values in opt.hparams:
                hp[key] = (
                    trial.suggest_categorical(f"{unit}.{name}.{key}", list(values)) if len(values) > 1 else values[0]
                )
            place = opt.placements[0]
            if len(opt.placements) > 1:
                place = trial.suggest_categorical(f"{unit}.{name}.placement", list(opt.placements))
            chosen[st.index] = StageChoice(name, tuple(hp.items()), place, st.replace_builtin)
        return Architecture(self.backbone, tuple(chosen[i] for i in self.stage_indices))

    def params_of(self, arch: Architecture) -> dict[str, Any]:
        """The trial parameters that ``sample`` would have drawn for ``arch`` (for enqueueing)."""
        by_index = dict(zip(self.stage_indices, arch.stages, strict=True))
        params: dict[str, Any] = {}
        for st in self.stages:
            choice, unit = by_index[st.index], f"{self.unit}{st.index}"
            names = [o.mechanism for o in st.options]
            if choice.mechanism not in names:
                raise ArchitectureError(f"{arch}: {unit} mechanism {choice.mechanism!r} is not in the space")
            if len(names) > 1:
                params[f"{unit}.mechanism"] = choice.mechanism
            opt = st.options[names.index(choice.mechanism)]
            for key, values in opt.hparams:
                if len(values) > 1:
                    params[f"{unit}.{choice.mechanism}.{key}"] = dict(choice.hparams)[key]
            if len(opt.placements) > 1:
                params[f"{unit}.{choice.mechanism}.placement"] = choice.placement
        return params

    # -- the space as data (what a study stores, so no command parses its YAML again) -----------------

    def to_data(self) -> dict[str, Any]:
        """The parsed space as JSON-able data; ``nas.tasks.space_from_data`` makes it a SearchSpace again."""
        return {
            "version": SPACE_DATA_VERSION,
            "task": self.task.name,
            "path": self.path,
            "name": self.name,
            "backbone": self.backbone,
            "input_size": list(self.input_size),
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "stages": [
                {
                    "index": st.index,
                    "replace_builtin": st.replace_builtin,
                    "options": [
                        {
                            "mechanism": o.mechanism,
                            "hparams": [[name, list(values)] for name, values in o.hparams],
                            "placements": list(o.placements),
                        }
                        for o in st.options
                    ],
                }
                for st in self.stages
            ],
            "stage_indices": list(self.stage_indices),
            "builtin_stages": list(self.builtin_stages),
            "objectives": list(self.objectives),
            "data": self.data.as_dict(),
            "training": self.training.as_dict(),
            "latency": self.latency.as_dict(),
            "limits": self.limits.as_dict(),
            **self.task.part_to_data(self),
        }


SPACE_DATA_VERSION = 1


def fields_from_data(d: dict[str, Any]) -> dict[str, Any]:
    """The task-independent SearchSpace fields of ``to_data``'s output (the task adds the rest)."""
    return dict(
        path=d["path"],
        name=d["name"],
        backbone=d["backbone"],
        input_size=tuple(d["input_size"]),
        in_chans=d["in_chans"],
        num_classes=d["num_classes"],
        stages=tuple(
            StageSpace(
                st["index"],
                tuple(
                    Option(o["mechanism"], tuple((n, tuple(v)) for n, v in o["hparams"]), tuple(o["placements"]))
                    for o in st["options"]
                ),
                st["replace_builtin"],
            )
            for st in d["stages"]
        ),
        stage_indices=tuple(d["stage_indices"]),
        builtin_stages=tuple(d["builtin_stages"]),
        objectives=tuple(d["objectives"]),
    )
