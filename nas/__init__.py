"""Neural architecture search over attention placement.

The public API, imported on first use (``import nas`` alone stays cheap, so the command line starts
at once)::

    from nas import Architecture, load_space, build, attention_maps, grad_cam
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC = {
    "Architecture": "nas.core.architecture",
    "load_space": "nas.tasks.spacefile",
    "build": "nas.tasks.classify.model",
    "attention_maps": "nas.viz",
    "grad_cam": "nas.viz",
}

if TYPE_CHECKING:
    from nas.core.architecture import Architecture
    from nas.tasks.classify.model import build
    from nas.tasks.spacefile import load_space
    from nas.viz import attention_maps, grad_cam


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])


__all__ = ["Architecture", "attention_maps", "build", "grad_cam", "load_space"]
