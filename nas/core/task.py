"""The task seam: what the search, the read side and the commands need from a kind of model (a timm
classifier, an ultralytics detector), as one interface. ``nas.tasks`` holds one folder per task with an
implementation; nothing outside ``nas/tasks/`` asks which task a space, a study or an export belongs to.

A fit reports through ``FitHooks``: the search's pruner, live display, latency gate and noise floor are
one implementation of it (``nas.search``), re-runs another, and a task's fit calls nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.core.architecture import Architecture
    from nas.core.artifacts import ModelCard
    from nas.core.space import SearchSpace


class FitHooks:
    """What a fit tells whoever started it, each a no-op here. In a fit whose ranks run in spawned
    processes (DDP), the hooks object travels to them (it must pickle) and only rank 0 calls it; ``step``
    and ``phase`` are not called there."""

    def epoch_end(self, curve: Sequence[float], extra: Mapping[str, Sequence[float]]) -> bool:
        """After an epoch's validation: the quality after each epoch so far and the task's other curves
        (a detector's ``map50_curve``), by the name they are recorded under. True stops the fit here."""
        return False

    def step(self, epoch: int, step: int, steps: int, samples_per_s: float) -> None:
        """Training is at ``step`` of ``steps`` in ``epoch`` (every half second at most, and at an epoch's end)."""

    def phase(self, text: str) -> None:
        """What the fit does now ("validating")."""

    def batch_start(self) -> None:
        """A training or validation batch starts (the latency gate is held until ``batch_end``)."""

    def batch_end(self) -> None:
        """The batch ended (this may raise to stop the fit: a Ctrl-C whose exception was lost)."""

    def release(self) -> None:
        """The fit failed or ended, maybe inside a batch: release what ``batch_start`` holds (a no-op when
        nothing is held); never raises."""

    def fit_end(self, seconds_train_val: float, epochs_per_rank: Sequence[int] | None) -> None:
        """The fit returned: seconds spent inside training and validation batches, and (DDP) the epochs
        each rank trained."""


@dataclass
class FitResult:
    """A fit's outcome: the quality after each epoch, the model those were measured with (a detector's
    EMA), the task's other curves, and the seconds inside training and validation batches."""

    curve: list[float] = field(default_factory=list)
    model: Any = None
    extra: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class TaskData:
    """A space's data, made ready once per process: ``handle`` is what the task's fits read (a Lightning
    data module, an ultralytics dataset), with its classes and validation size."""

    handle: Any
    num_classes: int
    val_size: int | None


@dataclass(frozen=True)
class ExportFacts:
    """What an export writes about the trial beside its model: the figures the search recorded
    (``attrs``, its user attributes), and those the export judged (``judged``)."""

    study: str
    number: int
    values: tuple[float, ...]
    seed: int | None
    curve: tuple[float, ...]
    latency_ms: float | None
    latency_ci_ms: tuple[float, float] | None
    latency_spread_pct: float | None
    latency_target: str | None
    params: int | None
    flops: int | None
    attrs: Mapping[str, Any]
    judged: Mapping[str, Any]


@dataclass(frozen=True)
class ExportOptions:
    weights_src: Path | None  # the trial's checked weights, or None for the definition alone
    onnx: bool = False
    torchscript: bool = False
    name: str | None = None  # a classifier's timm name
    tolerance: float = 1e-4


@dataclass(frozen=True)
class SpaceTable:
    """What ``nas check`` shows of a space: a title (after the file's name), one row per stage or
    position, the classes the baseline's cost is counted for, and a note after that count."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    num_classes: int
    classes_note: str


@dataclass(frozen=True)
class TrainRequest:
    """``nas train`` as a task receives it: the export (``source``: a folder or an architecture.yaml) and
    its card, the card's training section with the command's overrides, the command's other options,
    where to say what happens (``report``: epoch, epochs, the epoch's figure; ``announce``: text), and
    the weights to start from (``initial``; None: drawn from the seed)."""

    source: Path
    card: ModelCard
    training: Mapping[str, Any]
    data: str | None = None
    out: Path | None = None
    resume: bool = True
    force: bool = False
    report: Callable[[int, int, float], None] = lambda e, n, value: None
    announce: Callable[[str], None] = lambda text: None
    progress: bool = False
    initial: Path | None = None  # weights of the whole architecture to start from (a warm-started trial's)


@dataclass
class TrainResult:
    out: Path
    curve: list[float]
    resumed_from: int  # epochs already done when this run started
    weights: Path
    loads_with: str = ""  # how to load ``weights``, for the user


class Task:
    """One kind of model. Subclasses in ``nas.tasks`` fill in every method."""

    name = ""  # as stored in an export's card (``task:``)
    metric = "accuracy"  # the quality objective's name shown to users
    unit = "stage"  # what a choice is made for (parameter names, tables)
    per_epoch = "val accuracy"  # what ``nas train`` reports each epoch
    selector: str | None = None  # the top-level key that makes a space file this task's (None: the default)
    data_kind = ""  # what its data sources are called in messages ("classification", "detection")
    foreign_key_note = ""  # the message for one of its keys in another task's space file

    @property
    def space_keys(self) -> tuple[str, ...]:
        """The top-level keys of a space file only this task has."""
        raise NotImplementedError

    @property
    def data_sources(self) -> tuple[str, ...]:
        raise NotImplementedError

    def parse_space(self, c: Any, doc: Mapping, base: Path, elsewhere: Mapping[str, str]) -> dict[str, Any]:
        """The SearchSpace fields of a space file of this task (problems go to the checker ``c``); files it
        names by a relative path are read from ``base``; ``elsewhere``: other tasks' data sources."""
        raise NotImplementedError

    def settings(self, file: str, raw: Mapping[str, Any]) -> tuple[Any, Any]:
        """The ``data`` and ``training`` sections of ``raw`` (an export's card, with a command's
        overrides) as this task's typed values; a SpaceError naming ``file`` lists every problem."""
        raise NotImplementedError

    def describe(self, space: SearchSpace) -> SpaceTable:
        raise NotImplementedError

    def part_to_data(self, space: SearchSpace) -> dict[str, Any]:
        """What ``SearchSpace.to_data`` adds for this task (a detector and its positions)."""
        return {}

    def fields_from_data(self, d: Mapping[str, Any]) -> dict[str, Any]:
        """The SearchSpace fields this task owns, from ``SearchSpace.to_data``'s output: its typed sections
        (and a detector and its positions)."""
        raise NotImplementedError

    def build(
        self,
        space: SearchSpace,
        arch: Architecture,
        num_classes: int,
        init_seed: int | None = None,
        start: Mapping[str, Any] | None = None,
    ) -> Any:
        """The model of ``arch`` as ``space`` builds it; with ``init_seed`` the weights are drawn from it
        (common random numbers: two architectures differ only where their choices differ). ``start``: the
        plain network's trained weights (a warm start), its attention put in as the space's
        ``training.insert`` says (``identity``: computing exactly ``start``'s function at first)."""
        raise NotImplementedError

    def cost(self, space: SearchSpace, arch: Architecture, num_classes: int) -> Any:
        """Params and FLOPs (``nas.measure.cost.ModelCost``)."""
        raise NotImplementedError

    def data(self, space: SearchSpace, root: Path, seed: int) -> TaskData:
        raise NotImplementedError

    def fit(
        self,
        space: SearchSpace,
        arch: Architecture,
        seed: int,
        data: TaskData,
        epochs: int,
        log_dir: Path,
        hooks: FitHooks,
        num_classes: int,
        single_process: bool = False,
        start: Mapping[str, Any] | None = None,
        model: Any = None,
        every_epoch: bool = True,
    ) -> FitResult:
        """Train ``arch`` from ``seed`` (weights, data order, training stream) for ``epochs`` unless a hook
        stops it; from ``start`` (the plain network's trained weights) where given. ``single_process``: in
        this process even where the space trains on several devices (a
        re-run needs its curve here). ``model``: ``build(space, arch, num_classes, init_seed=seed,
        start=start)`` made already (a trial's latency was timed on it), trained instead of a new one.
        ``every_epoch``: validate after every epoch (the curve a trial, the noise floor and a recording
        need), else after the last one only (a confirmation's re-run, judged on its final figure)."""
        raise NotImplementedError

    def heldout(self, data: TaskData, model: Any) -> tuple[float, int] | None:
        """The quality of a fitted ``model`` on the data's held-out split, one the search never selected on
        (confirmation runs are judged on it), and that split's size; None where the data has none."""
        return None

    def given_start(self, space: SearchSpace, num_classes: int, seed: int) -> tuple[dict[str, Any], str, list[str]]:
        """``init: pretrained``: the plain network's state dict from the space's ``checkpoint`` file (or the
        backbone's published weights), fitted tensor by tensor (``nas.core.checkpoints.fit_state``; what the
        file lacks, such as a head for other classes, drawn from ``seed``); with what it came from and notes
        on what was adapted."""
        raise NotImplementedError

    def fingerprint(self, space: SearchSpace) -> list[Any]:
        """What a study's fingerprint adds for this task (the detector and its positions)."""
        return []

    def export(
        self,
        space: SearchSpace,
        arch: Architecture,
        num_classes: int,
        out: Path,
        facts: ExportFacts,
        opts: ExportOptions,
    ) -> tuple[list[Path], dict[str, float]]:
        """Write the export folder of a trial; returns its files and the checks made (largest differences)."""
        raise NotImplementedError

    def train(self, req: TrainRequest) -> TrainResult:
        """``nas train`` of an export."""
        raise NotImplementedError

    def viz_refusal(self) -> str | None:
        """Why ``nas viz`` cannot draw this task's models, or None."""
        return None

    def load_for_viz(self, card: ModelCard, weights: Path) -> Any:
        """The model of ``card`` with the safetensors ``weights``, in eval mode (``nas viz``)."""
        raise NotImplementedError
