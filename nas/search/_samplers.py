"""The samplers a search may use (``--sampler``), built from their names."""

from __future__ import annotations

from typing import Any

import optuna

from nas.core.errors import BadOption
from nas.search._options import SAMPLERS


class _AccuracyView:
    """The study as Optuna's TPE should see it. TPE ranks pruned trials by their last intermediate
    value in ``study.direction``, which a multi-objective study refuses to give (RuntimeError), so the
    first pruned trial with a learning curve in the storage would end the search. The intermediate
    values written here are always validation accuracy: higher is better."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    @property
    def direction(self) -> optuna.study.StudyDirection:
        return optuna.study.StudyDirection.MAXIMIZE


class CurveAwareTPE(optuna.samplers.TPESampler):
    """Optuna's TPE, with pruned trials ranked by their last validation accuracy (``_AccuracyView``)."""

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        return super().sample_relative(_AccuracyView(study), trial, search_space)

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return super().sample_independent(_AccuracyView(study), trial, param_name, param_distribution)


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
