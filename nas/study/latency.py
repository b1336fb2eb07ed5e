"""Latency in a search: the reference (plain backbone) latency remembered per machine, and every
architecture's paired ratio to it, cached per study (``runs/<study>/latency.json``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from nas.core.names import write_text_atomic
from nas.measure.cost import LatencyTarget
from nas.study.record import study_attr
from nas.study.studies import stored_study_attrs

log = logging.getLogger(__name__)

REFERENCE_FILE = "latency-reference.json"  # the reference's quiet latency per machine and target


def machine_cache() -> Path:
    """Where this machine's facts are remembered across projects and clones: ``$NAS_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/attention-nas``, else ``~/.cache/attention-nas``."""
    if os.environ.get("NAS_CACHE_DIR"):
        return Path(os.environ["NAS_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attention-nas"


def reference_latency_ms(
    study: optuna.Study, target: LatencyTarget, reference: str, measure: Callable[[], float], lock: Any = None
) -> float:
    """The reference's (plain backbone's) latency on a quiet machine, fixed for the whole study so that
    every trial's latency = ratio x the same figure. A new study takes the figure this machine
    remembers for the target and reference (``machine_cache() / REFERENCE_FILE``, keyed by host name
    too, for a home folder shared by several machines), so every study and every clone on one machine
    agree; only where none is remembered is it measured and remembered. ``lock`` (the study lock):
    the figure is set only if no other process set it meanwhile, and whichever was set first is
    returned, so all of a study's trials share one figure."""
    import torch

    key = f"{target.key()}|{reference}|torch {torch.__version__}"  # the study's: the same on every machine

    def stored_ms(attrs: dict) -> float | None:
        stored = attrs.get("latency_reference")
        if stored is not None and not isinstance(stored, dict):
            study_attr(study, "latency_reference", dict)  # raises the error that names the value
        ok = isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("ms"), (int, float))
        return float(stored["ms"]) if ok else None

    found = stored_ms(study.user_attrs)
    if found is not None:
        return found
    path, mine = machine_cache() / REFERENCE_FILE, f"{socket.gethostname()}|{key}"
    try:
        remembered = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        remembered = {}
    ms = remembered.get(mine) if isinstance(remembered, dict) else None
    if not isinstance(ms, (int, float)) or ms <= 0:
        ms = float(measure())
        remembered = {**(remembered if isinstance(remembered, dict) else {}), mine: ms}
        try:
            write_text_atomic(path, json.dumps(remembered, indent=1))
        except OSError as e:  # a read-only home: measured again by the next study, nothing lost
            log.warning("could not remember the reference latency in %s: %s", path, e)
    with lock.held() if lock is not None else contextlib.nullcontext():
        found = stored_ms(stored_study_attrs(study))  # set by another process meanwhile
        if found is not None:
            return found
        study.set_user_attr("latency_reference", {"key": key, "ms": round(float(ms), 5), "architecture": reference})
    return round(float(ms), 5)
