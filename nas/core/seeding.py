"""Seeds of the attention modules: each drawn from a generator of its own, fixed by the architecture's
``init_seed`` and its place alone, so a module starts the same whatever the other stages (or a
detector's other positions) hold. Used by the classifier and the detector builds alike."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch


def module_seed(init_seed: int, *where: int) -> int:
    """A seed of its own for the attention module at ``where`` (stage index, block), fixed by the
    architecture's ``init_seed`` and the place alone."""
    return int.from_bytes(hashlib.sha256(repr((init_seed, *where)).encode()).digest()[:8], "little") >> 1


def seeded(init_seed: int | None, *where: int) -> Any:
    if init_seed is None:
        return contextlib.nullcontext()
    return fresh_rng(module_seed(init_seed, *where))


@contextlib.contextmanager
def fresh_rng(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
