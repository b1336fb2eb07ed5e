"""The search engine: what runs a search, and nothing that only reads one (that is ``nas.study``).

One worker's loop (``Search``: ``decide`` stop, wait or start), one trial (latency, limits, the task's
fit with the pruner's hooks, its record), multi-objective successive halving, the samplers, the study's
lock and the latency gate, the worker processes of ``--workers``, the re-runs of the noise floor and the
confirmation, and creating or resuming a study. The modules are private (``_x.py``); what the rest of
the tool uses is named here and imported on first use, so ``nas --help`` loads none of it.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    # nas search as the command line runs it
    "prepare": "_command",
    "run": "_command",
    "run_worker": "_command",
    # the loop
    "Search": "_loop",
    "SearchResult": "_loop",
    "failing": "_loop",
    "Reporter": "_trial",
    # nas search's own settings (no heavy imports)
    "SearchOptions": "_options",
    "SAMPLERS": "_options",
    "MAX_TRIALS": "_options",
    "HEARTBEAT_S": "_options",
    # several processes, several machines
    "plan": "_workers",
    "run_workers": "_workers",
    "die_with_parent": "_workers",
    "cpu_count": "_workers",
    "StudyLock": "_locks",
    "LatencyGate": "_locks",
    "create_or_resume": "_study",
    "make_sampler": "_samplers",
    # re-runs (noise floor, confirmation)
    "Fit": "_reruns",
    "Rerun": "_reruns",
    "make_fit": "_reruns",
    "run_reruns": "_reruns",
    "run_race": "_reruns",
    # replays of recorded curves (nas bench pruning)
    "Recorded": "_pruning",
    "MOASHA": "_pruning",
    "replay_none": "_pruning",
    "replay_moasha": "_pruning",
    "replay_optuna_sh": "_pruning",
    "confirmed_front": "_pruning",
    "noise_from_records": "_pruning",
}
__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"nas.search.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
