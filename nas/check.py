"""``nas check``: what a search space or an architecture amounts to, before anything runs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from nas.core.architecture import Architecture
from nas.core.errors import BadOption, UserError
from nas.core.space import SearchSpace
from nas.core.task import SpaceTable


def parse_arch(text: str) -> Architecture:
    return Architecture.parse(text)


def arch_cost(text: str, input_size: int, in_chans: int, num_classes: int) -> tuple[Architecture, Any]:
    """``nas check --arch``: the architecture (a timm backbone's stages) and its params and FLOPs."""
    from nas.tasks.classify.model import model_cost

    for opt, value in (("--input-size", input_size), ("--in-chans", in_chans), ("--num-classes", num_classes)):
        if value < 1:
            raise BadOption(opt, value, "a positive integer")
    arch = parse_arch(text)
    return arch, model_cost(arch, num_classes, (input_size, input_size), in_chans)


@dataclass(frozen=True)
class Checked:
    """``nas check --space``: the space, what its task shows of it, the baseline's cost, and a warning
    about this machine (a space for a GPU machine may be checked on a laptop)."""

    space: SearchSpace
    table: SpaceTable
    baseline_cost: Any
    warning: str | None


def check_space(path: Path) -> Checked:
    from nas.measure.cost import latency_device_problem
    from nas.tasks.spacefile import load_space

    s = load_space(path)
    problem = latency_device_problem(str(path), s.latency.device)
    table = s.task.describe(s)
    cost = s.task.cost(s, s.baseline(), table.num_classes)
    warning = f"{problem}; nas search on this machine refuses this space" if problem is not None else None
    return Checked(s, table, cost, warning)


def time_builds(space: SearchSpace, samples: int, batch: int, seed: int = 0) -> list[dict]:
    """Sample architectures at random from ``space``; for each, time its build and one training-mode
    forward and backward pass at the space's input size (through a plain sum of the outputs: the
    task's own loss would cost the same order)."""
    if samples < 1 or batch < 2:
        raise UserError(
            f"--samples must be >= 1 and --batch >= 2 (BatchNorm needs two samples); got {samples}, {batch}"
        )
    num_classes = space.num_classes or 10
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rows, seen = [], set()
    x = torch.randn(batch, space.in_chans, *space.input_size)
    for _ in range(samples * 5):
        if len(rows) == samples:
            break
        arch = space.sample(study.ask())
        if arch in seen:
            continue
        seen.add(arch)
        start = time.perf_counter()
        model = space.task.build(space, arch, num_classes).train()
        built = time.perf_counter()
        output_sum(model(x)).backward()
        done = time.perf_counter()
        rows.append({"arch": str(arch), "build_s": built - start, "step_s": done - built, "total_s": done - start})
    return rows


def output_sum(out: Any) -> torch.Tensor:
    """A scalar that depends on every output tensor (a classifier's logits, a detector's feature maps)."""
    if isinstance(out, torch.Tensor):
        return out.float().sum()
    if isinstance(out, dict):
        out = list(out.values())
    return sum(output_sum(o) for o in out)
