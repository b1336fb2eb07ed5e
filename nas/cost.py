"""Costs of a module: parameters, FLOPs (torch's own counter) and careful wall-clock timing."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .errors import BadOption


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass as counted by ``torch.utils.flop_counter`` (convolutions and matrix
    products; element-wise operations are not counted)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return int(counter.get_total_flops())


@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one operation, in milliseconds."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median, in percent."""
        if len(self.samples) < 4:
            return 0.0
        q = statistics.quantiles(self.samples, n=4)
        return 100.0 * (q[2] - q[0]) / self.median if self.median else 0.0

    def __str__(self) -> str:
        return f"{self.median:.3f} ms ±{self.spread:.1f}%"


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadOption("--device", name, "a torch device such as cpu, cuda or cuda:1") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadOption("--device", name, "CUDA is not available on this machine; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadOption("--device", name, f"this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise BadOption("--device", name, "cpu or cuda[:N]")
    return device


def steady_allocator() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS (and to serve large blocks from
    the heap), so repeated runs of the same operation do not page-fault their buffers anew each time.
    Without it, CPU timings of forward+backward passes on multi-megabyte activations vary by tens of
    percent from run to run on Linux. Returns False where glibc is not there (nothing changes)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_trim_threshold, 1 << 30) == 1
    return mallopt(m_mmap_threshold, 32 << 20) == 1 and ok


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: Sequence[Callable[[], object]], device: torch.device, *, warmup: int = 3,
                     repeats: int = 20) -> list[Timing]:
    """Time several operations round-robin (one call each per round), so slow drifts of the machine
    (frequency, other load) hit all of them alike and their ratio is fair. CUDA is synchronised around
    every call."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    _sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[i].append((time.perf_counter() - start) * 1e3)
    return [Timing(tuple(s)) for s in samples]


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of a's time over b's time in the same round of ``time_interleaved``: robust
    to drifts that last longer than a round, which a ratio of two medians is not."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples))


def forward_fn(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One inference-mode forward pass."""

    def run() -> object:
        with torch.inference_mode():
            return module(x)

    return run


def train_step_fn(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """One training-mode forward + backward pass (gradients w.r.t. the input and every parameter, as
    inside a network), from a fixed upstream gradient."""
    x = x.detach().clone().requires_grad_(True)
    with torch.no_grad():
        grad = torch.randn_like(module(x))

    def run() -> object:
        module.zero_grad(set_to_none=True)
        x.grad = None
        module(x).backward(grad)
        return None

    return run


@dataclass(frozen=True)
class LatencyTarget:
    device: str = "cpu"
    batch_size: int = 1
    input_size: int = 224
    threads: int = 1
    warmup: int = 5
    repeats: int = 30

    def key(self) -> str:
        return f"{self.device}/b{self.batch_size}/{self.input_size}px/t{self.threads}"

    @classmethod
    def from_space(cls, latency: "dict") -> "LatencyTarget":
        """The target described by a space's validated ``latency`` section."""
        return cls(**{f: latency[f] for f in cls.__dataclass_fields__})


def measure_latency(model: nn.Module, target: LatencyTarget, in_chans: int) -> Timing:
    """Inference latency of ``model`` on ``target``: inference mode, eval mode, ``warmup`` untimed
    runs, then ``repeats`` timed ones (CUDA-synchronised), with torch limited to ``target.threads``
    CPU threads for the measurement only. Call it when nothing else trains in this process."""
    device = resolve_device(target.device)
    steady_allocator()
    previous = torch.get_num_threads()
    torch.set_num_threads(target.threads)
    try:
        model = model.eval().to(device)
        x = torch.randn(target.batch_size, in_chans, target.input_size, target.input_size, device=device)
        (timing,) = time_interleaved([forward_fn(model, x)], device, warmup=target.warmup, repeats=target.repeats)
        return timing
    finally:
        torch.set_num_threads(previous)
