"""The samplers a search may use (``--sampler``), built from their names."""

from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.core.errors import BadOption
from nas.search._options import SAMPLERS


class _AccuracyView:
    """The study as Optuna's TPE should see it. TPE ranks pruned trials by their last intermediate
    value in ``study.direction``, which a multi-objective study refuses to give (RuntimeError), so the
    first pruned trial with a learning curve in the storage would end the search. The intermediate
    values written here are always validation accuracy: higher is better.

    ``trials``: the study's trials as read once for the trial being sampled. With the constant liar
    TPE reads every trial from the storage again for each parameter it samples (7 reads a proposal
    in spaces/resnet.yaml, 2.5 ms each at 60 trials); one read serves them all."""

    def __init__(self, study: optuna.Study, trials: list[FrozenTrial] | None = None):
        self._study, self._trials = study, trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return optuna.study.StudyDirection.MAXIMIZE

    def _get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None, use_cache: bool = False
    ) -> list[FrozenTrial]:
        if self._trials is None:
            return self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        chosen = [t for t in self._trials if states is None or t.state in states]
        return copy.deepcopy(chosen) if deepcopy else chosen


class CurveAwareTPE(optuna.samplers.TPESampler):
    """Optuna's TPE, with pruned trials ranked by their last validation accuracy (``_AccuracyView``),
    reading the study's trials once per proposal."""

    _read: tuple[int, int, int, list[FrozenTrial]] | None = None  # (storage, study id, trial number, trials)

    def _view(self, study: Any, trial: FrozenTrial) -> _AccuracyView:
        key = (id(study._storage), study._study_id, trial.number)
        if self._read is None or self._read[:3] != key:
            self._read = (*key, study._get_trials(deepcopy=False))
        return _AccuracyView(study, self._read[3])

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return super().sample_relative(_AccuracyView(study), trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return super().sample_independent(self._view(study, trial), trial, param_name, param_distribution)


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return CurveAwareTPE(seed=seed, constant_liar=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "bruteforce":  # every architecture once, in random order: for recordings of small spaces
        return optuna.samplers.BruteForceSampler(seed=seed)
    raise BadOption("--sampler", name, f"one of {', '.join(SAMPLERS)}")
