"""The search engine: the study and its storage (``study``, ``storage``, the only code that knows
Optuna's internals), the loop of one worker (``loop``: ``decide`` stop, wait or start), one trial
(``trial``), pruning, the noise floor and confirmation (``confirm``), latency, locks, heartbeats,
worker processes and signals. ``options`` checks the command line's settings without heavy imports.

``from nas.search import Search`` is the loop's worker (imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nas.search.loop import Search, SearchResult

__all__ = ["Search", "SearchResult"]


def __getattr__(name: str) -> Any:
    if name in ("Search", "SearchResult"):
        from nas.search import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'nas.search' has no attribute {name!r}")
