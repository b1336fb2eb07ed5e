"""Re-runs of architectures from further seeds (the noise floor, the confirmation of the front): which
are pending, and training them so that several processes never train the same one. What they say is
read by ``nas.study.confirmation``.

Every re-run is one study user attribute ``rerun:<seed>:<architecture>`` holding its validation
curve (Optuna refuses writes to a finished trial, and one key per run means workers never overwrite
each other's results). A claim ``claim:<seed>:<architecture>``, taken under the study lock, keeps two
processes from training the same run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from nas.core.racing import Race
from nas.search._study import WORKER
from nas.study.confirmation import (
    CLAIM,
    FAILED,
    HELDOUT,
    TEST_SIZE_ATTR,
    baseline_trial,
    epochs_of,
    every_epoch,
    key,
    noise_seed_list,
    per_epoch_reruns,
)
from nas.study.record import TrialInfo

log = logging.getLogger(__name__)
CLAIM_EXPIRES_S = 12 * 3600  # a claim from another machine older than this counts as abandoned


def pending_noise_runs(study: optuna.Study) -> list[tuple[str, int]]:
    base = baseline_trial(study)
    if base is None:
        return []
    arch = TrialInfo.of(base).arch
    done = per_epoch_reruns(study).get(arch, {})
    return [(arch, s) for s in noise_seed_list(study)[1:] if s not in done]


@dataclass(frozen=True)
class Rerun:
    """What a re-run gives: its validation curve and, where the data has a held-out split, its final
    model's quality there."""

    curve: list[float]
    heldout: float | None = None
    heldout_size: int = 0  # images of the held-out split


Fit = Callable[[str, int, str, bool], Rerun]  # (architecture, seed, why, validated every epoch) -> the run


def run_reruns(
    study: optuna.Study,
    jobs: Iterable[tuple[str, int]],
    fit: Fit,
    why: str,
    claim: Callable[[], Any] | None = None,
    per_epoch: bool = True,
) -> int:
    """Train every (architecture, seed) of ``jobs`` not stored and not claimed by a live process;
    each result is stored as soon as it is there, so an interruption loses at most the run in
    progress. A run that failed is recorded with its reason and tried again by the next process that
    asks for it (a resumed search, ``nas report --confirm``), not by the one it failed in. ``claim``: a
    context manager (the study lock) inside which a run is claimed. ``per_epoch``: the jobs need a
    validation after every epoch (the noise floor, a recording), and a run stored with its last one
    only (a confirmation's) is trained again; else they validate after the last epoch only. Returns
    the number of runs trained."""
    import contextlib
    import time

    trained = 0
    epochs = epochs_of(study)
    for arch, seed in jobs:
        with claim() if claim else contextlib.nullcontext():
            attrs = study.user_attrs
            failed = attrs.get(key(seed, arch, FAILED))
            stored = attrs.get(key(seed, arch))
            if (
                (stored is not None and (not per_epoch or not isinstance(stored, list) or every_epoch(stored, epochs)))
                or (isinstance(failed, dict) and failed.get("by") == WORKER)  # failed here: not again
                or _claimed(attrs.get(key(seed, arch, CLAIM)))
            ):
                continue
            study.set_user_attr(key(seed, arch, CLAIM), f"{WORKER}@{int(time.time())}")
        try:
            run = fit(arch, seed, why, per_epoch)
        except (KeyboardInterrupt, SystemExit):
            study.set_user_attr(key(seed, arch, CLAIM), None)  # released: a later run takes it
            raise
        except Exception as e:  # this run's own failure (NaN loss, out of memory): recorded, the rest goes on
            from nas.core.errors import reason_text, trial_failure

            reason = reason_text(trial_failure(e) or f"{e.__class__.__name__}: {e}")
            if e.__class__.__name__ == "Interrupted":  # signals.Interrupted (SIGTERM)
                study.set_user_attr(key(seed, arch, CLAIM), None)
                raise
            log.warning("re-run of %s from seed %d failed: %s", arch, seed, reason)
            study.set_user_attr(key(seed, arch, FAILED), {"reason": reason[:1000], "by": WORKER})
            study.set_user_attr(key(seed, arch, CLAIM), None)
            continue
        if run.heldout is not None:  # first: a run whose curve is stored always has its held-out figure
            if run.heldout_size and TEST_SIZE_ATTR not in attrs:
                study.set_user_attr(TEST_SIZE_ATTR, run.heldout_size)
            study.set_user_attr(key(seed, arch, HELDOUT), round(float(run.heldout), 6))
        study.set_user_attr(key(seed, arch), [round(float(c), 6) for c in run.curve])
        study.set_user_attr(key(seed, arch, CLAIM), None)  # done: the result stands for itself
        if study.user_attrs.get(key(seed, arch, FAILED)):
            study.set_user_attr(key(seed, arch, FAILED), None)  # an earlier failure, now trained
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


def run_race(
    study: optuna.Study, archs: Sequence[str], race: Race, fit: Fit, claim: Callable[[], Any] | None = None
) -> int:
    """Train the confirmation race of ``archs`` (``nas.core.racing``): the first batch of fresh seeds for
    every member and the baseline, then further batches only for members still inconclusive, up to the
    race's ceiling; runs already stored are reused. Stops early when a look's runs cannot be trained
    here (failed, or claimed by another process). Returns the runs trained."""
    from nas.study import confirmation as cf

    cf.record_race(study, race)
    trained = 0
    while (state := cf.race_state(study, archs, race)) is not None and state.wanted:
        n = run_reruns(study, state.wanted, fit, "confirming the front", claim, per_epoch=False)
        trained += n
        if n == 0:
            break
    return trained


def make_fit(
    space: Any,
    data: Any,
    num_classes: int,
    epochs: int,
    run_dir: Any,
    status: Callable[[str], None] = lambda s: None,
    gate: Any = None,
    start: Any = None,
) -> Fit:
    """The re-run trainer of a space: full ``epochs`` from the seed, no pruning, seeded exactly as the
    search's trials (the task's fit) and from their starting network (``start``, a warm start); its logs
    under ``run_dir/reruns``. Re-runs train in this process (a DDP fit's curve stays in its ranks)."""
    import hashlib

    from nas.core.architecture import Architecture
    from nas.search._hooks import RerunHooks

    task = space.task

    def fit(arch: str, seed: int, why: str, per_epoch: bool = True) -> Rerun:
        status(f"{why}: {arch} from seed {seed}")
        folder = run_dir / "reruns" / f"seed_{seed}_{hashlib.sha1(arch.encode()).hexdigest()[:10]}"
        what = f"{why}: {arch} from seed {seed}"
        hooks = RerunHooks(gate, status, what, epochs, task.per_epoch, every_epoch=per_epoch)
        result = task.fit(
            space,
            Architecture.parse(arch),
            seed,
            data,
            epochs,
            folder,
            hooks,
            num_classes,
            single_process=True,
            start=start,
            every_epoch=per_epoch,
        )
        if len(result.curve) < (epochs if per_epoch else 1):
            raise RuntimeError(
                f"training stopped after {len(result.curve)} of {epochs} epochs"
                if per_epoch
                else f"training stopped before its last validation (of {epochs} epochs, only the last validates)"
            )
        held = task.heldout(data, result.model)
        return Rerun(list(result.curve), *(held or (None, 0)))

    return fit
