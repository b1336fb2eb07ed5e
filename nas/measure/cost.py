"""Costs of a module: parameters, FLOPs (torch's own counter) and careful wall-clock timing."""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nas.core.config import LATENCY_SCHEMA as _LATENCY
from nas.core.errors import BadOption, UserError

T = TypeVar("T")


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


def device_problem(name: str) -> str | None:
    """What is allowed instead when ``name`` is not a device of this machine, or None."""
    try:
        device = torch.device(name)
    except RuntimeError:
        return "a torch device such as cpu, cuda or cuda:1"
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available on this machine; use cpu"
        if device.index is not None and device.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type != "cpu":
        return "cpu or cuda[:N]"
    return None


def latency_device_problem(space_file: str, name: str) -> UserError | None:
    """Why a space's ``latency.device`` cannot be measured on this machine (no CUDA, too few GPUs),
    or None: what ``nas check`` reports and ``nas search`` refuses before its first trial."""
    allowed = device_problem(name)
    if allowed is None:
        return None
    return UserError(f"{space_file}: latency.device: {name!r} cannot be used on this machine: {allowed}")


def resolve_device(name: str) -> torch.device:
    allowed = device_problem(name)
    if allowed is not None:
        raise BadOption("--device", name, allowed)
    return torch.device(name)


@functools.cache
def _glibc(name: str) -> Callable[..., int] | None:
    """A glibc function, or None where glibc is not there. Cached: ``find_library`` runs ldconfig."""
    import ctypes
    import ctypes.util

    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def steady_allocator() -> bool:
    """Ask glibc to keep freed memory instead of returning it to the OS (and to serve large blocks from
    the heap), so repeated runs of the same operation do not page-fault their buffers anew each time.
    Without it, CPU timings of forward+backward passes on multi-megabyte activations vary by tens of
    percent from run to run on Linux. Returns False where glibc is not there (nothing changes)."""
    mallopt = _glibc("mallopt")
    if mallopt is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    ok = mallopt(m_trim_threshold, 1 << 30) == 1
    return mallopt(m_mmap_threshold, 32 << 20) == 1 and ok


def release_memory() -> None:
    """Collect garbage in reference cycles now and hand freed heap memory back to the OS (glibc), so a
    long search keeps a flat footprint although ``steady_allocator`` asked glibc to keep memory."""
    import gc

    gc.collect()
    malloc_trim = _glibc("malloc_trim")
    if malloc_trim is not None:
        malloc_trim(0)


@contextlib.contextmanager
def long_lived_left_out() -> Iterator[None]:
    """Within the block, garbage collection leaves out every object alive when it began (modules,
    the space, the data): ``release_memory`` after a trial, and Python's own full collections during
    training, then scan what the trial made instead of the half million objects torch, timm and
    Lightning leave at import (0.26 s a collection on the development machine, under 1 ms frozen).
    Garbage is collected first, so nothing unreachable is kept; the objects are handed back at the end."""
    import gc

    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def device_sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    fns: Sequence[Callable[[], object]], device: torch.device, *, warmup: int = 3, repeats: int = 20
) -> list[Timing]:
    """Time several operations round-robin (one call each per round), so slow drifts of the machine
    (frequency, other load) hit all of them alike and their ratio is fair. CUDA is synchronised around
    every call."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    device_sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            device_sync(device)
            start = time.perf_counter()
            fn()
            device_sync(device)
            samples[i].append((time.perf_counter() - start) * 1e3)
    return [Timing(tuple(s)) for s in samples]


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of a's time over b's time in the same round of ``time_interleaved``: robust
    to drifts that last longer than a round, which a ratio of two medians is not."""
    return statistics.median(x / y for x, y in zip(a.samples, b.samples, strict=True))


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
    """Where and how latency is measured; the defaults are a space's (``LATENCY_SCHEMA``)."""

    device: str = _LATENCY["device"].default
    batch_size: int = _LATENCY["batch_size"].default
    input_size: int = _LATENCY["input_size"].default
    threads: int = _LATENCY["threads"].default
    warmup: int = _LATENCY["warmup"].default  # untimed calls, at least (and at least WARMUP_S seconds of them)
    repeats: int = _LATENCY["repeats"].default  # timed calls, at least (and BLOCKS x BLOCK_S seconds of them)
    rounds: int = _LATENCY["rounds"].default  # paired: interleaved rounds, at least (PAIRED_S per FULL_ROUNDS)

    def key(self) -> str:
        return f"{self.device}/b{self.batch_size}/{self.input_size}px/t{self.threads}"

    @classmethod
    def from_space(cls, latency: Any) -> LatencyTarget:
        """The target described by a space's ``latency`` section (its typed value)."""
        return cls(**{f: getattr(latency, f) for f in cls.__dataclass_fields__})


WARMUP_S = 0.1  # caches, allocator and CPU frequency settle within this on the machines we measured
BLOCKS = 6  # quiet blocks wanted
MAX_BLOCKS = 16  # give up waiting for a quiet machine after this many
BLOCK_S = 0.03
REFERENCE_S = 0.01
QUIET = 1.05  # a block is quiet when the reference timed right after it is within 5% of its fastest


@dataclass(frozen=True)
class Latency(Timing):
    """Timed calls in consecutive blocks, each followed by a short block of a fixed reference workload.
    Shared machines have slow phases (we saw 25% slower for seconds at a time, on every workload alike);
    a block counts when the reference right after it ran at its quiet speed, and the latency is the
    median of the quiet blocks' medians. ``disturbed``: too few quiet blocks came before MAX_BLOCKS, and
    the latency is the fastest block's median instead."""

    block_medians: tuple[float, ...] = ()
    reference_ms: float = 0.0
    disturbed: bool = False

    @property
    def ms(self) -> float:
        if not self.block_medians:
            return self.median
        return min(self.block_medians) if self.disturbed else statistics.median(self.block_medians)

    def __str__(self) -> str:
        return f"{self.ms:.3f} ms ±{self.spread:.1f}%" + (" (machine busy)" if self.disturbed else "")


def _block(fn: Callable[[], object], device: torch.device, seconds: float, at_least: int) -> list[float]:
    block: list[float] = []
    begun = time.perf_counter()
    while len(block) < at_least or time.perf_counter() - begun < seconds:
        t = time.perf_counter()
        fn()
        device_sync(device)
        block.append((time.perf_counter() - t) * 1e3)
    return block


class LatencyMeter:
    """Measures models on one latency target. It remembers the reference workload's quiet speed (the
    fastest seen by this meter, or given by ``quiet_reference_ms`` from an earlier run) to tell quiet
    blocks from disturbed ones."""

    def __init__(self, target: LatencyTarget, quiet_reference_ms: float | None = None):
        self.target = target
        self.device = resolve_device(target.device)
        self.quiet_reference_ms = quiet_reference_ms
        conv = nn.Conv2d(64, 64, 3, padding=1, device=self.device).eval()
        self._reference = forward_fn(conv, torch.randn(1, 64, 32, 32, device=self.device))
        with_threads(target.threads, lambda: _block(self._reference, self.device, 5 * REFERENCE_S, 3))  # warm

    def measure(self, model: nn.Module, in_chans: int) -> Latency:
        """Inference latency of ``model``: eval and inference mode, warm-up (at least ``warmup`` calls
        and WARMUP_S seconds), then blocks of at least ``repeats / BLOCKS`` calls and BLOCK_S seconds,
        CUDA-synchronised around every call, with torch limited to ``target.threads`` CPU threads for
        the measurement only. Call it when nothing else trains in this process."""
        t = self.target
        steady_allocator()
        model = model.eval().to(self.device)
        x = torch.randn(t.batch_size, in_chans, t.input_size, t.input_size, device=self.device)
        return with_threads(t.threads, lambda: self._measure(forward_fn(model, x)))

    def _measure(self, fn: Callable[[], object]) -> Latency:
        t, dev = self.target, self.device
        _block(fn, dev, WARMUP_S, t.warmup)
        _block(self._reference, dev, REFERENCE_S, 3)
        per_block = max(1, -(-t.repeats // BLOCKS))
        blocks: list[tuple[list[float], float]] = []

        def quiet() -> list[tuple[list[float], float]]:
            fastest = min(ref for _, ref in blocks)
            if self.quiet_reference_ms is None or fastest < self.quiet_reference_ms:
                self.quiet_reference_ms = fastest
            return [b for b in blocks if b[1] <= QUIET * self.quiet_reference_ms]

        while len(blocks) < MAX_BLOCKS:
            block = _block(fn, dev, BLOCK_S, per_block)
            blocks.append((block, statistics.median(_block(self._reference, dev, REFERENCE_S, 3))))
            if len(quiet()) >= BLOCKS:
                break
        good = quiet()
        chosen = good if len(good) >= BLOCKS else blocks
        return Latency(
            tuple(x for b, _ in chosen for x in b),
            tuple(statistics.median(b) for b, _ in chosen),
            statistics.median(ref for _, ref in chosen),
            disturbed=len(good) < BLOCKS,
        )


def with_threads(threads: int, fn: Callable[[], T]) -> T:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn()
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------
# Paired latency: every candidate timed interleaved with a fixed reference model
# ----------------------------------------------------------------------------------------------------

REFERENCE_MEASURES = 9  # the reference's quiet latency: the median of this many measurements (about 6 s)
PAIRED_ROUNDS = LatencyTarget.rounds  # rounds at least, by default
REMEASURE_ROUNDS = 32  # rounds at least where the front is timed again for the report (once, not per trial)
FULL_ROUNDS = 80  # PAIRED_S and WARMUP_S are for this many rounds; fewer rounds take their share of both
PAIRED_S = 0.4
SLOT_MS = 1.0  # each timed slot repeats the call until it lasts about this long (fast models, GPUs)


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of a candidate's time to the reference's time in the same round."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def interval(self) -> tuple[float, float]:
        """95% distribution-free interval of the median ratio (order statistics)."""
        from nas.core.stats import median_interval

        return median_interval(self.samples)

    @property
    def spread(self) -> float:
        """Half the interval's width relative to the median, in percent."""
        lo, hi = self.interval
        return 100.0 * (hi - lo) / 2 / self.median


def time_against_reference(
    fns: Sequence[Callable[[], object]],
    reference: Callable[[], object],
    device: torch.device,
    *,
    rounds: int = PAIRED_ROUNDS,
    seconds: float = PAIRED_S * PAIRED_ROUNDS / FULL_ROUNDS,
    warmup: int = 5,
    warmup_s: float = WARMUP_S,
    reference_call_ms: float | None = None,
) -> tuple[list[Ratio], Timing]:
    """Time ``fns`` and ``reference`` round-robin: every round times the reference and each candidate
    once (the order rotates and reverses from round to round, so no candidate always follows the
    same one), and records each candidate's time over the reference's time in that round. A slow
    phase of the machine (another process, frequency) then hits both sides of a ratio alike, which
    absolute timings cannot offer. Each is first called ``warmup`` times and ``warmup_s`` seconds,
    untimed; the reference once only where ``reference_call_ms`` says how long its warm call takes (it
    was warmed in this process before: a search's meter times it beside every trial). Returns the
    ratios per candidate and the reference's own times."""
    everything = [reference, *fns]
    known = reference_call_ms is not None
    warm = _block(reference, device, 0.0, 1) if known else _block(reference, device, warmup_s, warmup)
    for fn in fns:
        _block(fn, device, warmup_s, warmup)
    # a warm call of the reference: how many calls fill a slot
    single = reference_call_ms if known else min(warm[-3:] or _block(reference, device, 0.0, 3))
    calls = max(1, math.ceil(SLOT_MS / max(single, 1e-6)))

    def slot(fn: Callable[[], object]) -> float:
        device_sync(device)
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        device_sync(device)
        return (time.perf_counter() - t) * 1e3 / calls

    ratios: list[list[float]] = [[] for _ in fns]
    ref_times: list[float] = []
    begun, i = time.perf_counter(), 0
    while i < rounds or time.perf_counter() - begun < seconds:
        order = [-1, *((i + k) % len(fns) for k in range(len(fns)))]
        if i % 2:
            order.reverse()
        times = {k: slot(everything[k + 1]) for k in order}
        ref_times.append(times[-1])
        for k in range(len(fns)):
            ratios[k].append(times[k] / times[-1])
        i += 1
    return [Ratio(tuple(r)) for r in ratios], Timing(tuple(ref_times))


@dataclass(frozen=True)
class PairedLatency:
    """Latency = (median ratio to the reference) x (the reference's latency on a quiet machine), with
    the ratio's 95% interval carried over."""

    ratio: Ratio
    reference_ms: float

    @property
    def ms(self) -> float:
        return self.ratio.median * self.reference_ms

    @property
    def interval_ms(self) -> tuple[float, float]:
        lo, hi = self.ratio.interval
        return lo * self.reference_ms, hi * self.reference_ms

    @property
    def spread(self) -> float:
        return self.ratio.spread

    def __str__(self) -> str:
        return f"{self.ms:.3f} ms ±{self.spread:.1f}% (ratio {self.ratio.median:.4f})"


class PairedMeter:
    """Measures models on one latency target against a fixed reference model (the space's plain
    backbone), interleaved in this process. ``reference_ms`` is the reference's quiet latency on the
    target; when not given it is measured once: the median of ``REFERENCE_MEASURES`` measurements by
    ``LatencyMeter`` (quiet blocks)."""

    def __init__(self, target: LatencyTarget, reference: nn.Module, in_chans: int, reference_ms: float | None = None):
        self.target, self.in_chans = target, in_chans
        self.device = resolve_device(target.device)
        steady_allocator()
        self._reference = reference.eval().to(self.device)
        self.x = torch.randn(target.batch_size, in_chans, target.input_size, target.input_size, device=self.device)
        self._reference_ms = reference_ms
        self._reference_call_ms: float | None = None  # a warm call, known once it was warmed here

    @property
    def reference_ms(self) -> float:
        if self._reference_ms is None:
            meter = LatencyMeter(self.target)
            self._reference_ms = statistics.median(
                meter.measure(self._reference, self.in_chans).ms for _ in range(REFERENCE_MEASURES)
            )
        return self._reference_ms

    def ratios(self, models: Sequence[nn.Module]) -> list[Ratio]:
        """The ratio of every model to the reference, all timed in one interleaved run. The reference is
        warmed up fully at its first run only; later runs call it once first (measured over 40
        architectures of spaces/resnet.yaml, a training step between measurements: the median ratio moved
        by -0.3% +- 0.4% (mean, its standard error); a measurement took 3 to 14 ms less of about 150)."""
        fns = [forward_fn(m.eval().to(self.device), self.x) for m in models]
        ref = forward_fn(self._reference, self.x)
        t = self.target
        share = t.rounds / FULL_ROUNDS  # fewer rounds asked: a shorter floor and warm-up alike (never longer)
        ratios, reference_times = with_threads(
            t.threads,
            lambda: time_against_reference(
                fns,
                ref,
                self.device,
                rounds=t.rounds,
                seconds=PAIRED_S * share,
                warmup=t.warmup,
                warmup_s=WARMUP_S * min(1.0, share),
                reference_call_ms=self._reference_call_ms,
            ),
        )
        if self._reference_call_ms is None:
            self._reference_call_ms = min(reference_times.samples)
        return ratios

    def measure(self, model: nn.Module) -> PairedLatency:
        return PairedLatency(self.ratios([model])[0], self.reference_ms)


@dataclass(frozen=True)
class ModelCost:
    params: int
    flops: int  # one forward pass at batch 1 (torch's counter: convolutions and matrix products)
