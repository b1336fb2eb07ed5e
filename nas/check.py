"""``nas check``: what a search space or an architecture amounts to, before anything runs."""

from __future__ import annotations

import time

import optuna
import torch

from nas.core.architecture import Architecture
from nas.core.errors import UserError
from nas.core.space import SearchSpace
from nas.tasks.classify import backbone as bb
from nas.tasks.classify.model import build


def parse_arch(text: str) -> Architecture:
    return Architecture.parse(text)


def stage_table(space: SearchSpace) -> list[dict]:
    """Per stage of the backbone: module, blocks, channels per placement, spatial size, built-in
    attention, and what the space searches there."""
    by_index = {s.index: s for s in space.stages}
    rows = []
    for info in bb.describe(space.backbone, space.input_size, space.in_chans):
        st = by_index.get(info.index)
        rows.append(
            {
                "stage": info.index,
                "module": info.module,
                "blocks": info.blocks,
                "out_channels": info.out_channels,
                "spatial": info.spatial,
                "channels": {p: c for p, c in info.channels.items()},
                "builtin": sorted({n for names in info.builtin.values() for n in names}),
                "choices": st.count() if st else 1,
                "mechanisms": [o.mechanism for o in st.options] if st else ["none (fixed)"],
            }
        )
    return rows


def position_table(space: SearchSpace) -> list[dict]:
    """Per position of a detection space: the layer it follows, its module, channels, stride and
    feature-map size at the space's image size, and what the space searches there."""
    rows = []
    for p, st in zip(space.positions, space.stages, strict=True):
        side = space.input_size[0] // max(p.stride, 1)
        rows.append(
            {
                "position": p.index,
                "at": p.at,
                "after": p.after,
                "module": p.kind,
                "channels": p.channels,
                "stride": p.stride,
                "spatial": (side, side),
                "choices": st.count(),
                "mechanisms": [o.mechanism for o in st.options],
            }
        )
    return rows


def time_builds(space: SearchSpace, samples: int, batch: int, seed: int = 0) -> list[dict]:
    """Sample architectures at random from ``space``; for each, time build() and one training-mode
    forward+backward at the space's input size."""
    if samples < 1 or batch < 2:
        raise UserError(
            f"--samples must be >= 1 and --batch >= 2 (BatchNorm needs two samples); got {samples}, {batch}"
        )
    num_classes = space.num_classes or 10
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rows, seen = [], set()
    x = torch.randn(batch, space.in_chans, *space.input_size)
    y = torch.randint(0, num_classes, (batch,))
    for _ in range(samples * 5):
        if len(rows) == samples:
            break
        arch = space.sample(study.ask())
        if arch in seen:
            continue
        seen.add(arch)
        start = time.perf_counter()
        model = build(arch, num_classes, space.in_chans).train()
        built = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        done = time.perf_counter()
        rows.append({"arch": str(arch), "build_s": built - start, "step_s": done - built, "total_s": done - start})
    return rows
