"""The study's starting network, made once: with ``init: baseline`` the space's baseline trained for
``init_epochs`` from the study's seed; with ``init: pretrained`` the given weights read by the task
(converted to the plain network's state dict). Made under the study's lock, so of several workers (any
machine) one makes it and the others wait for it, then fetch it from the artifact store like everyone.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from nas.study import start as st

log = logging.getLogger(__name__)
WARMUP_DIR = "warmup"  # runs/<study>/warmup: the warm-up's logs


def starting_weights(
    space: Any,
    study: Any,
    data: Any,
    num_classes: int,
    seed: int,
    store: Any,
    location: str,
    lock: Any,
    run_dir: Path,
    gate: Any = None,
    status: Any = lambda s: None,
) -> dict[str, Any] | None:
    """The state dict every trial of ``study`` starts from (None: the space trains from scratch), made
    here if no worker made it yet."""
    if not space.training.warm:
        return None
    with lock.held():
        record = st.recorded(study)
        if record is None:
            started = time.perf_counter()
            if space.training.init == "baseline":
                state, record = _warm_up(space, data, num_classes, seed, run_dir / WARMUP_DIR, gate, status)
                log.info("warm-up of study %s: %s", study.study_name, record.curve)
            else:
                status("reading the starting weights")
                state, source, notes = space.task.given_start(space, num_classes, seed)
                record = st.StartRecord("pretrained", "", "", source, notes=notes)
            record = st.StartRecord(**{**record.to_dict(), "seconds": round(time.perf_counter() - started, 3)})
            record = st.save(study, store, location, state, record, run_dir)
    return st.fetch(study, location, run_dir, record)


def _warm_up(
    space: Any, data: Any, num_classes: int, seed: int, log_dir: Path, gate: Any, status: Any
) -> tuple[dict[str, Any], st.StartRecord]:
    """The space's baseline trained ``init_epochs`` from ``seed``: its weights, and their record."""
    from nas.search._hooks import RerunHooks

    task, arch, training = space.task, space.baseline(), space.training
    epochs, lr = training.init_epochs, training.init_lr or training.lr
    what = f"warm-up: {arch} from seed {seed}"
    status(what)
    hooks = RerunHooks(gate, status, what, epochs, task.per_epoch)
    warm = replace(space, training=training.replace(lr=lr))  # the trials fine-tune at training.lr
    result = task.fit(warm, arch, seed, data, epochs, log_dir, hooks, num_classes, single_process=True)
    if len(result.curve) < epochs or result.model is None:
        raise RuntimeError(f"the warm-up stopped after {len(result.curve)} of {epochs} epochs")
    source = f"{arch} trained {epochs} epochs from seed {seed} (peak learning rate {lr:g})"
    return result.model.state_dict(), st.StartRecord("baseline", "", "", source, epochs, list(result.curve))
