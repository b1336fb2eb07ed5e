"""Re-runs of architectures from further seeds, and what they say.

- The noise floor: the baseline trained from ``training.noise_seeds`` seeds (the study's seed and the
  next ones) gives the seed-to-seed spread of accuracy at every epoch, which pruning and the report use.
- Confirmation: the front's members and the baseline re-trained from K fresh seeds, the same seeds for
  all (paired). Accuracy becomes a mean with its interval, the difference to the baseline a paired mean
  with its interval, and a member is better than the baseline only when that interval excludes 0.

Every re-run is one study user attribute ``rerun:<seed>:<architecture>`` holding its validation
curve (Optuna refuses writes to a finished trial, and one key per run means workers never overwrite
each other's results). A claim ``claim:<seed>:<architecture>``, taken under the study lock, keeps two
processes from training the same run.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.core.pareto import nondominated_ranks
from nas.core.stats import Estimate, mean_interval, paired_difference, seed_sd, verdict
from nas.study.record import TrialInfo, study_attr
from nas.study.studies import NOISE_SEEDS_ATTR, SEED_ATTR, WORKER

log = logging.getLogger(__name__)
RERUN, CLAIM, FAILED = "rerun:", "claim:", "rerun_failed:"
CLAIM_EXPIRES_S = 12 * 3600  # a claim from another machine older than this counts as abandoned
FRESH_OFFSET = 1  # confirmation seeds: seed + 1, seed + 2, ... (never the seed the search selected with)


def key(seed: int, arch: str, prefix: str = RERUN) -> str:
    return f"{prefix}{seed}:{arch}"


def study_seed(study: optuna.Study) -> int:
    return study_attr(study, SEED_ATTR, int, 0)


def fresh_seeds(study: optuna.Study, k: int) -> list[int]:
    """The K confirmation seeds: after the study's own seed, never it (the front was selected on it,
    so its accuracies there are biased upwards: the winner's curse)."""
    base = study_seed(study)
    return [base + FRESH_OFFSET + i for i in range(k)]


def noise_seed_list(study: optuna.Study, r: int | None = None) -> list[int]:
    """The baseline's seeds for the noise floor: the study's seed (the baseline trial itself) and the
    next r - 1. They coincide with the first confirmation seeds, so the baseline is trained once."""
    r = study_attr(study, NOISE_SEEDS_ATTR, int, 1) if r is None else r
    base = study_seed(study)
    return [base + i for i in range(r)]


def reruns(study: optuna.Study) -> dict[str, dict[int, list[float]]]:
    """architecture -> seed -> validation curve, for every stored re-run."""
    out: dict[str, dict[int, list[float]]] = {}
    for k, v in study.user_attrs.items():
        if k.startswith(RERUN):
            seed, arch = k[len(RERUN) :].split(":", 1)
            out.setdefault(arch, {})[int(seed)] = [float(x) for x in v]
    return out


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    return next(
        (t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if TrialInfo.of(t).baseline),
        None,
    )


@dataclass(frozen=True)
class Noise:
    """The seed-to-seed spread of the baseline's accuracy, per epoch."""

    seeds: tuple[int, ...]
    sd: tuple[float, ...]

    def at(self, epoch: int) -> float:
        """The sd at ``epoch`` (1-based); 0 where unknown."""
        if 1 <= epoch <= len(self.sd) and not math.isnan(self.sd[epoch - 1]):
            return self.sd[epoch - 1]
        return 0.0

    @property
    def final(self) -> float:
        return self.at(len(self.sd))

    def __str__(self) -> str:
        return f"noise: sd {100 * self.final:.1f} points over {len(self.seeds)} seeds"


def noise_curves(study: optuna.Study) -> tuple[list[int], list[list[float]]]:
    trial = baseline_trial(study)
    base = None if trial is None else TrialInfo.of(trial)
    if base is None or not base.curve:
        return [], []
    stored = reruns(study).get(base.arch, {})
    seeds, curves = [study_seed(study)], [list(base.curve)]
    for s in noise_seed_list(study)[1:]:
        if s in stored:
            seeds.append(s)
            curves.append(stored[s])
    return seeds, curves


def noise_of(study: optuna.Study) -> Noise | None:
    """The noise floor measured so far (None until the baseline has two seeds)."""
    seeds, curves = noise_curves(study)
    if len(curves) < 2:
        return None
    return Noise(tuple(seeds), tuple(seed_sd(curves)))


def pending_noise_runs(study: optuna.Study) -> list[tuple[str, int]]:
    base = baseline_trial(study)
    if base is None:
        return []
    arch = TrialInfo.of(base).arch
    done = reruns(study).get(arch, {})
    return [(arch, s) for s in noise_seed_list(study)[1:] if s not in done]


Fit = Callable[[str, int, str], list[float]]  # (architecture, seed, why) -> validation curve


def run_reruns(
    study: optuna.Study, jobs: Iterable[tuple[str, int]], fit: Fit, why: str, claim: Callable[[], Any] | None = None
) -> int:
    """Train every (architecture, seed) of ``jobs`` not stored and not claimed by a live process;
    each result is stored as soon as it is there, so an interruption loses at most the run in
    progress. ``claim``: a context manager (the study lock) inside which a run is claimed. Returns
    the number of runs trained."""
    import contextlib
    import time

    trained = 0
    for arch, seed in jobs:
        with claim() if claim else contextlib.nullcontext():
            attrs = study.user_attrs
            if (
                key(seed, arch) in attrs
                or key(seed, arch, FAILED) in attrs
                or _claimed(attrs.get(key(seed, arch, CLAIM)))
            ):
                continue
            study.set_user_attr(key(seed, arch, CLAIM), f"{WORKER}@{int(time.time())}")
        try:
            curve = fit(arch, seed, why)
        except (KeyboardInterrupt, SystemExit):
            study.set_user_attr(key(seed, arch, CLAIM), None)  # released: a later run takes it
            raise
        except Exception as e:  # this run's own failure (NaN loss, out of memory): recorded, the rest goes on
            from nas.core.errors import trial_failure

            reason = trial_failure(e) or f"{e.__class__.__name__}: {e}"
            if e.__class__.__name__ == "Interrupted":  # signals.Interrupted (SIGTERM)
                study.set_user_attr(key(seed, arch, CLAIM), None)
                raise
            log.warning("re-run of %s from seed %d failed: %s", arch, seed, reason)
            study.set_user_attr(key(seed, arch, FAILED), reason[:1000])
            study.set_user_attr(key(seed, arch, CLAIM), None)
            continue
        study.set_user_attr(key(seed, arch), [round(float(c), 6) for c in curve])
        study.set_user_attr(key(seed, arch, CLAIM), None)  # done: the result stands for itself
        trained += 1
    return trained


def _claimed(holder: Any) -> bool:
    """A claim holds while its process may be alive: on this machine, while its pid runs; from
    another machine, always (its result or its release will come)."""
    import time

    if not holder:
        return False
    who, _, since = str(holder).partition("@")
    host, _, pid = who.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return not since.isdigit() or time.time() - int(since) < CLAIM_EXPIRES_S
    if int(pid) == os.getpid():
        return False  # this process's own claim, left by an interrupted earlier call
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------------------------------
# Confirmation of the front
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One architecture as the report shows it: the search's single run, and where confirmed, its
    accuracy over the fresh seeds and its paired difference to the baseline."""

    number: int
    arch: str
    search_accuracy: float
    latency: float
    latency_low: float
    latency_high: float
    params: int
    flops: int
    baseline: bool
    accuracies: tuple[float, ...] = ()
    accuracy: Estimate | None = None  # over the confirmation seeds
    difference: Estimate | None = None  # paired, member - baseline, over the same seeds
    verdict: str = ""
    on_front: bool = True  # after confirmation: non-dominated on (mean accuracy, second objective)
    second: float = math.nan  # the study's second objective (latency unless params or flops)
    seeds: tuple[int, ...] = ()  # the confirmation seeds behind ``accuracies``
    latency_diff: tuple[float, float, float] | None = None  # member - baseline in ms: (median, low, high)
    remeasured: bool = False  # latency measured again by the report, beside the baseline
    unconfirmed: Estimate | None = None  # single-run difference to the baseline with the noise floor's interval

    @property
    def shown_accuracy(self) -> float:
        return self.accuracy.mean if self.accuracy is not None else self.search_accuracy


NOT_PAIRED = "not confirmed: fewer than 2 seeds shared with the baseline"


def family_level(comparisons: int, level: float = 0.95) -> float:
    """Bonferroni: each of ``comparisons`` differences is judged at 1 - (1 - level) / comparisons, so the
    chance that any member tied with the baseline is called better or worse stays under 1 - level."""
    return 1 - (1 - level) / max(1, comparisons)


def confirm_jobs(study: optuna.Study, archs: Sequence[str], k: int) -> list[tuple[str, int]]:
    """The baseline first (its runs pair with every member), then the members, seed by seed."""
    base = baseline_trial(study)
    first = [TrialInfo.of(base).arch] if base else []
    order = first + [a for a in archs if a not in first]
    return [(a, s) for s in fresh_seeds(study, k) for a in order]


def judge(study: optuna.Study, members: Sequence[Member], k: int) -> list[Member]:
    """Fill in the confirmed accuracy, the paired difference to the baseline and the verdict of each
    member, from the stored re-runs at the first K fresh seeds (only seeds that both the member and
    the baseline have count, so every difference is paired); then mark which members stay on the
    front recomputed on mean accuracy."""
    from dataclasses import replace

    runs = reruns(study)
    base = baseline_trial(study)
    base_runs = runs.get(TrialInfo.of(base).arch, {}) if base else {}
    seeds = fresh_seeds(study, k)
    level = family_level(sum(1 for m in members if not m.baseline))
    out = []
    for m in members:
        mine = runs.get(m.arch, {})
        have = [s for s in seeds if s in mine]
        if not have:
            out.append(m)
            continue
        accs = tuple(mine[s][-1] for s in have)
        paired = [s for s in have if s in base_runs]
        diff = None
        if not m.baseline and len(paired) >= 2:
            diff = paired_difference(
                [mine[s][-1] for s in paired], [base_runs[s][-1] for s in paired], level, sd_floor=resolution(study)
            )
        out.append(
            replace(
                m,
                accuracies=accs,
                accuracy=mean_interval(accs, sd_floor=resolution(study)),
                difference=diff,
                seeds=tuple(have),
                verdict="" if m.baseline else (verdict(diff) if diff is not None else NOT_PAIRED),
            )
        )
    points = [(m.shown_accuracy, m.latency if math.isnan(m.second) else m.second) for m in out]
    ranks = nondominated_ranks(points)
    return [replace(m, on_front=ranks[i] == 0) for i, m in enumerate(out)]


def resolution(study: optuna.Study) -> float:
    """One validation image's share of accuracy (0 where the study does not record its split)."""
    n = study.user_attrs.get("val_size")
    return 1.0 / n if isinstance(n, int) and n > 0 else 0.0


def unconfirmed_difference(
    member_acc: float, base_acc: float, noise: Noise | None, floor: float = 0.0
) -> Estimate | None:
    """The difference of two single runs (same seed), with the interval a difference of two runs has
    when each carries the baseline's seed-to-seed sd: +-t * sqrt(2) * sd, t over the noise seeds."""
    if noise is None:
        return None
    from nas.core.stats import t_quantile

    d = member_acc - base_acc
    sd = math.sqrt(2) * max(noise.final, floor)
    half = t_quantile(0.975, len(noise.seeds) - 1) * sd
    return Estimate(d, d - half, d + half, len(noise.seeds), sd)


def make_fit(
    space: Any,
    data: Any,
    num_classes: int,
    epochs: int,
    run_dir: Any,
    status: Callable[[str], None] = lambda s: None,
    gate: Any = None,
) -> Fit:
    """The re-run trainer of a space: full ``epochs`` from the seed, no pruning, seeded exactly as the
    search's trials (the task's fit); its logs under ``run_dir/reruns``. Re-runs train in this process
    (a DDP fit's curve stays in its ranks)."""
    import hashlib

    from nas.core.architecture import Architecture
    from nas.search.hooks import RerunHooks

    task = space.task

    def fit(arch: str, seed: int, why: str) -> list[float]:
        status(f"{why}: {arch} from seed {seed}")
        folder = run_dir / "reruns" / f"seed_{seed}_{hashlib.sha1(arch.encode()).hexdigest()[:10]}"
        hooks = RerunHooks(gate, status, f"{why}: {arch} from seed {seed}", epochs, task.per_epoch)
        result = task.fit(
            space, Architecture.parse(arch), seed, data, epochs, folder, hooks, num_classes, single_process=True
        )
        if len(result.curve) < epochs:
            raise RuntimeError(f"training stopped after {len(result.curve)} of {epochs} epochs")
        return result.curve

    return fit
