"""Benchmarks (``nas bench ...``): measured, printed as a table, written under runs/."""

from __future__ import annotations

import csv
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import timm
import torch
from timm.layers import SelectiveKernel as TimmSelectiveKernel
from timm.layers import create_attn
from torch import nn

import attention
from nas.core.errors import MAX_CHANNELS, BadOption, check_range
from nas.measure.cost import (
    count_flops,
    count_params,
    device_sync,
    forward_fn,
    paired_ratio,
    steady_allocator,
    time_interleaved,
    train_step_fn,
)

if TYPE_CHECKING:
    from nas.search import Recorded


def _timm_sk(channels: int, device: torch.device) -> nn.Module:
    # timm's SelectiveKernel configured as the SKNet paper (and our default): two grouped 3x3 paths
    # (the second dilated), groups 32, full input to every path, d = max(C/16, 32).
    return TimmSelectiveKernel(
        channels, channels, groups=32, split_input=False, rd_channels=max(channels // 16, 32), device=device
    )


# Mechanisms that timm also ships, with how timm's version is built for the side-by-side timing.
TIMM_COUNTERPARTS: dict[str, tuple[str, Callable[[int, torch.device], nn.Module]]] = {
    "se": ("create_attn('se')", lambda c, d: create_attn("se", c, device=d)),
    "eca": ("create_attn('eca')", lambda c, d: create_attn("eca", c, device=d)),
    "cbam": ("create_attn('cbam')", lambda c, d: create_attn("cbam", c, device=d)),
    "ca": ("create_attn('coord')", lambda c, d: create_attn("coord", c, device=d)),
    "sk": ("SelectiveKernel(groups=32, split_input=False)", _timm_sk),
}


def bench_modules(
    *,
    device: torch.device,
    batch: int,
    channels: int,
    size: int,
    repeats: int,
    warmup: int,
    only: list[str] | None = None,
    progress: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Time forward (inference mode) and forward+backward (training mode) of every mechanism at its
    default hyperparameters on a (batch, channels, size, size) input; where timm ships the mechanism,
    its version is timed round-robin with ours in the same loop and the ratio ours/timm reported as the
    median of the per-round ratios."""
    names = list(attention.MECHANISMS) if not only else [attention.get_spec(n).name for n in only]
    steady_allocator()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, size, size, generator=gen).to(device)
    rows = []
    for name in names:
        spec = attention.MECHANISMS[name]
        row: dict[str, Any] = {"mechanism": name, "title": spec.title}
        problems = spec.problems(channels)
        if problems:
            row["error"] = str(problems[0])
            rows.append(row)
            continue
        progress(name)
        ours = attention.create(name, channels, device=device)
        modules = [ours]
        if name in TIMM_COUNTERPARTS:
            row["timm"] = TIMM_COUNTERPARTS[name][0]
            modules.append(TIMM_COUNTERPARTS[name][1](channels, device))
        row["params"] = count_params(ours)
        row["flops"] = count_flops(ours.eval(), x)
        fwd = time_interleaved([forward_fn(m.eval(), x) for m in modules], device, warmup=warmup, repeats=repeats)
        for m in modules:
            m.train()
        step = time_interleaved([train_step_fn(m, x) for m in modules], device, warmup=warmup, repeats=repeats)
        row.update(fwd_ms=fwd[0].median, fwd_spread=fwd[0].spread, fb_ms=step[0].median, fb_spread=step[0].spread)
        if len(modules) == 2:
            row.update(
                timm_params=count_params(modules[1]),
                timm_fwd_ms=fwd[1].median,
                timm_fwd_spread=fwd[1].spread,
                timm_fb_ms=step[1].median,
                timm_fb_spread=step[1].spread,
                fwd_ratio=paired_ratio(fwd[0], fwd[1]),
                fb_ratio=paired_ratio(step[0], step[1]),
            )
        rows.append(row)
    return rows


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "torch": torch.__version__,
        "timm": timm.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_results(rows: list[dict[str, Any]], meta: dict[str, Any], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    json_path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path


MAX_INPUT_VALUES = 1 << 28  # a benchmark input of at most 1 GiB in float32


def check_module_input(batch: int, channels: int, size: int, repeats: int) -> None:
    """``nas bench modules``' sizes, each bounded, and the input they make (B x C x H x W) at most
    MAX_INPUT_VALUES values: every mechanism keeps several tensors of that size for the backward pass."""
    check_range("--batch", batch, 1, 4096)
    check_range("--channels", channels, 1, MAX_CHANNELS)
    check_range("--size", size, 1, 4096)
    check_range("--repeats", repeats, 1, 100_000)
    values = batch * channels * size * size
    if values > MAX_INPUT_VALUES:
        raise BadOption(
            "--batch/--channels/--size",
            f"{batch} x {channels} x {size} x {size}",
            f"an input of at most {MAX_INPUT_VALUES:,} values (1 GiB in float32); this one has {values:,}",
        )


def load_recorded(path: Path) -> list[Recorded]:
    from nas.search import Recorded

    try:
        data = json.loads(path.read_text())
        return [
            Recorded(
                d["number"],
                d["arch"],
                tuple(d["curve"]),
                d["latency_ms"],
                d.get("baseline", False),
                tuple(d["latency_ci_ms"]) if d.get("latency_ci_ms") else None,
                tuple(tuple(c) for c in (d.get("seed_curves") or {}).values()),
            )
            for d in data["trials"]
        ]
    except FileNotFoundError:
        raise BadOption(
            "--curves", str(path), "a JSON file written by 'nas bench pruning --study ... --export'"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise BadOption(
            "--curves", str(path), f"a JSON file of recorded curves ({e.__class__.__name__}: {e})"
        ) from None


def recorded_from_study(study: Any) -> tuple[list[Recorded], dict[str, Any]]:
    """Complete, non-duplicate trials of a study run without pruning, with the re-runs of each from
    further seeds where the study holds them (``record_seeds``)."""
    from optuna.trial import TrialState

    from nas.search import Recorded
    from nas.study.confirmation import fresh_seeds, per_epoch_reruns
    from nas.study.record import TrialInfo

    rows = []
    seeds = per_epoch_reruns(study)  # a confirmation's runs (validated after their last epoch only) left out
    stored = [set(v) for v in seeds.values()]
    # the seeds every architecture has (the baseline also holds its noise-floor seeds: left out, so
    # every mean is over the same paired seeds)
    common = sorted(set.intersection(*stored)) if stored else []
    common = [s for s in common if s in fresh_seeds(study, len(common))] if common else []
    for info in map(TrialInfo.of, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
        if info.is_copy or not info.curve or info.latency_ms is None:
            continue
        more = {s: c for s, c in seeds.get(info.arch, {}).items() if s in common}
        rows.append(
            Recorded(
                info.number,
                info.arch,
                info.curve,
                info.latency_ms,
                info.baseline,
                info.latency_ci_ms,
                tuple(tuple(more[s]) for s in sorted(more)),
            )
        )
    lengths = {len(r.curve) for r in rows}
    if len(lengths) > 1:
        raise BadOption(
            "--study", study.study_name, f"a study run with --no-prune (curves have lengths {sorted(lengths)})"
        )
    meta = {"study": study.study_name, "space": _shareable(study.user_attrs.get("space_path")), "trials": len(rows)}
    return rows, meta


def _shareable(path: str | None) -> str | None:
    """A recorded space's path as a recording written for others names it: relative to the current
    folder where it lies inside it, else its file name alone (no machine's folders in a shared file)."""
    if not path:
        return path
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve())) if p.is_absolute() else path
    except ValueError:
        return p.name


def export_recorded(rows: list[Recorded], meta: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "meta": meta,
                "trials": [
                    {
                        "number": r.number,
                        "arch": r.arch,
                        "curve": [round(c, 6) for c in r.curve],
                        "latency_ms": r.latency,
                        "latency_ci_ms": list(r.latency_ci) if r.latency_ci else None,
                        "baseline": r.baseline,
                        "seed_curves": {str(i + 1): list(c) for i, c in enumerate(r.seed_curves)},
                    }
                    for r in rows
                ],
            },
            indent=1,
        )
    )


def record_seeds(study: Any, seeds: int, root: Path, status: Callable[[str], None] = lambda s: None) -> int:
    """Re-train every complete trial of a study run with --no-prune from ``seeds - 1`` further seeds
    (paired: the same seeds for all), stored in the study as they finish (an interrupted recording
    resumes). Returns the runs trained."""
    from optuna.trial import TrialState

    from nas import search
    from nas.report import fitter
    from nas.study import confirmation as cf
    from nas.study.record import TrialInfo

    complete = map(TrialInfo.of, study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    archs = [info.arch for info in complete if not info.is_copy]
    jobs = [(a, s) for s in cf.fresh_seeds(study, seeds - 1) for a in archs]
    return search.run_reruns(study, jobs, fitter(study, status, root), "recording")


def bench_pruning(
    rows: list[Recorded], eta: int, planted: int = 100
) -> tuple[list[dict[str, Any]], tuple[float, float]]:
    """Every pruning method on the recorded curves (epochs, hypervolume, the confirmed front stopped)
    and, where the recording has paired seeds, on ``planted`` simulated studies with its noise and planted
    winners (``nas.decisions``): how often each method stopped the +1, +2 and +3 paired-sd winners."""
    from nas import decisions
    from nas.core.pareto import hypervolume, pareto_front
    from nas.search import confirmed_front, noise_from_records, replay_moasha, replay_none, replay_optuna_sh

    ref = (0.0, 1.1 * max(r.latency for r in rows))
    noise = noise_from_records(rows)
    methods = [
        lambda rs, nz: replay_none(rs),
        lambda rs, nz: replay_moasha(rs, eta),
        *([lambda rs, nz: replay_moasha(rs, eta, nz)] if noise else []),
        lambda rs, nz: replay_optuna_sh(rs, eta),
    ]
    results = [m(rows, noise) for m in methods]
    seeded = any(r.seed_curves for r in rows)
    stops = decisions.planted_stops(rows, methods, planted) if seeded and planted else [None] * len(methods)
    confirmed = confirmed_front(rows) if seeded else set()
    full_epochs, full_hv = results[0].epochs, None
    out = []
    for res, stopped in zip(results, stops, strict=True):
        pts = res.points()
        hv = hypervolume(pts, ref)
        full_hv = hv if full_hv is None else full_hv
        out.append(
            {
                "method": res.method,
                "completed": len(res.completed),
                "epochs": res.epochs,
                "epochs_saved_pct": 100 * (1 - res.epochs / full_epochs),
                "hypervolume": hv,
                "hypervolume_pct": 100 * hv / full_hv if full_hv else 0.0,
                "front": len(pareto_front(pts)),
                "confirmed_front": len(confirmed),
                "confirmed_stopped": len(confirmed - {r.arch for r in res.completed}) if confirmed else None,
                "planted_stopped": None if stopped is None else {f"{e:+g}": v for e, v in stopped.items()},
                "planted_worlds": planted if stopped is not None else 0,
            }
        )
    return out, ref


@dataclass(frozen=True)
class SearchRun:
    """One ``nas search`` run of a benchmark: its wall time, the trials it trained, whether it ran out
    of time (killed at the limit), and the thread counts its trials recorded."""

    wall_s: float
    timed_out: bool
    trials: int = 0
    trained: int = 0
    epochs: int = 0
    threads: tuple[int, ...] = ()


def search_run(
    space: Path,
    trials: int,
    name: str,
    out_dir: Path,
    extra: list[str],
    env: dict[str, str] | None = None,
    limit_s: float | None = None,
    seed: int = 0,
) -> SearchRun:
    """The real ``nas search`` in a subprocess on a fresh study ``name`` under ``out_dir`` (random
    sampler from ``seed``, no pruning, so every trained trial does the same epochs), with ``extra``
    arguments and environment; killed after ``limit_s``. Wall time includes starting the process."""
    import shutil
    import subprocess
    import sys

    import optuna
    from optuna.trial import TrialState

    from nas.search import SearchOptions
    from nas.study.record import TrialInfo

    folder = (out_dir / name).resolve()  # the search runs there: its runs/ and study are the bench's
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    url = f"sqlite:///{folder / 'study.db'}"
    where = Path(space).resolve()
    opts = SearchOptions(where, trials, study=name, storage=url, sampler="random", prune=False, seed=seed)
    cmd = [sys.executable, "-m", "nas", "search", *opts.to_argv(), *extra]
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=limit_s, cwd=folder)
    except subprocess.TimeoutExpired:
        return SearchRun(time.perf_counter() - started, True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
    study = optuna.load_study(study_name=name, storage=url)
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    trained = [info for info in map(TrialInfo.of, finished) if not info.is_copy and not info.infeasible]
    threads = tuple(sorted({n for info in trained if (n := info.threads) is not None}))
    return SearchRun(wall, False, len(finished), len(trained), sum(len(info.curve) for info in trained), threads)


def bench_workers(
    space: Path,
    trials: int,
    workers: list[int],
    threads: int | None,
    out_dir: Path,
    on_row: Callable[[dict[str, Any]], None] = lambda r: None,
) -> list[dict[str, Any]]:
    """Trials per minute of ``nas search --workers N`` for each N, each in a fresh study
    (``search_run``); its wall time includes starting the workers."""
    from nas.search import cpu_count

    rows: list[dict[str, Any]] = []
    for n in workers:
        per = threads or max(1, cpu_count() // n)
        extra = ["--workers", str(n), "--threads", str(per)]
        run = search_run(space, trials, f"bench-workers-{n}x{per}", out_dir, extra)
        wall = run.wall_s
        row = {
            "workers": n,
            "threads_per_worker": per,
            "wall_s": round(wall, 1),
            "trials": run.trials,
            "trained": run.trained,
            "epochs": run.epochs,
            "trials_per_min": round(60 * run.trials / wall, 2),
            "trained_per_min": round(60 * run.trained / wall, 2),
            "epochs_per_min": round(60 * run.epochs / wall, 2),
        }
        row["epochs_per_min_ratio"] = round(row["epochs_per_min"] / rows[0]["epochs_per_min"], 3) if rows else 1.0
        rows.append(row)
        on_row(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# nas bench contention: a search beside other work, per thread policy
# ----------------------------------------------------------------------------------------------------

CONTENTION_POLICIES = {
    "auto": "the default: up to the share of the cores, fewer while other work keeps them busy",
    "all": "--threads <cores>: every core, whatever else runs (the default before the policy)",
    "one": "--threads 1",
    "passive": "--threads <cores> with OMP_WAIT_POLICY=PASSIVE (waiting threads sleep instead of spinning)",
}


def contention_options(policies: str, busy: str, workers: int, repeats: int, limit: int) -> tuple[list, list]:
    """``nas bench contention``'s options checked: the policies and busy counts as lists."""
    check_range("--workers", workers, 1, 256)
    check_range("--repeats", repeats, 1, 100)
    check_range("--limit", limit, 1, 86_400, "seconds, an integer")
    names = [p.strip() for p in policies.split(",") if p.strip()]
    if not names or any(p not in CONTENTION_POLICIES for p in names):
        raise BadOption("--policies", policies, f"names from {', '.join(CONTENTION_POLICIES)}, comma-separated")
    counts = [c.strip() for c in busy.split(",") if c.strip()]
    if not counts or not all(c.isdigit() and int(c) <= 64 for c in counts):
        raise BadOption("--busy", busy, "counts from 0 to 64 separated by commas, e.g. 0,1,2")
    return names, [int(c) for c in counts]


def contention_run(
    space: Path, trials: int, policy: str, busy: int, workers: int, out_dir: Path, limit_s: float, repeat: int
) -> dict[str, Any]:
    """One search beside ``busy`` busy processes (``start_load``) under ``policy``."""
    import os

    from nas.search import cpu_count

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    per = max(1, cpu_count() // workers)
    every_core = ["--threads", str(per)]
    extra = {"auto": [], "all": every_core, "one": ["--threads", "1"], "passive": every_core}[policy]
    if policy == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if workers > 1:
        extra = [*extra, "--workers", str(workers)]
    procs = start_load(busy) if busy else []
    try:
        name = f"bench-contention-{policy}-w{workers}-busy{busy}-{repeat}"
        run = search_run(space, trials, name, out_dir, extra, env, limit_s, seed=3)
    finally:
        stop_load(procs)
    return {
        "policy": policy,
        "workers": workers,
        "busy": busy,
        "repeat": repeat,
        "wall_s": round(run.wall_s, 1),
        "timed_out": run.timed_out,
        "threads": list(run.threads),
        "epochs": run.epochs,
    }


def bench_contention(
    space: Path,
    trials: int,
    policies: list[str],
    busy: list[int],
    workers: int,
    repeats: int,
    limit_s: float,
    out_dir: Path,
    on_row: Callable[[dict[str, Any]], None] = lambda r: None,
) -> list[dict[str, Any]]:
    """Wall time of the same search (fresh study each, random sampler from seed 3, no pruning) beside
    0, 1, ... busy single-threaded processes, for each thread policy, ``repeats`` times, in rounds (every
    cell once, then again) so that a drift of the machine spreads over all cells."""
    rows = []
    for repeat in range(repeats):
        for policy in policies:
            for n in busy:
                row = contention_run(space, trials, policy, n, workers, out_dir, limit_s, repeat)
                rows.append(row)
                on_row(row)
    return rows


def contention_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (policy, busy): the median wall time over repeats, its range, and its ratio to the idle
    median of the same policy and of ``auto`` (the reference); a cell with a run that timed out shows
    its wall time as a lower bound."""
    cells: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["policy"], r["busy"]), []).append(r)

    def median(key: tuple[str, int]) -> float | None:
        return statistics.median(r["wall_s"] for r in cells[key]) if key in cells else None

    out = []
    for (policy, n), runs in cells.items():
        walls = [r["wall_s"] for r in runs]
        m, own_idle, ref_idle = statistics.median(walls), median((policy, 0)), median(("auto", 0))
        out.append(
            {
                "policy": policy,
                "busy": n,
                "runs": len(runs),
                "wall_s": m,
                "min_s": min(walls),
                "max_s": max(walls),
                "timed_out": any(r["timed_out"] for r in runs),
                "vs_own_idle": round(m / own_idle, 2) if own_idle else None,
                "vs_auto_idle": round(m / ref_idle, 2) if ref_idle else None,
                "threads": sorted({t for r in runs for t in r["threads"]}),
            }
        )
    return out


# ----------------------------------------------------------------------------------------------------
# nas bench latency: today's absolute timing against the paired ratio, idle and under load
# ----------------------------------------------------------------------------------------------------

LOAD_SCRIPT = """
import torch, torch.nn as nn
torch.set_num_threads(1)
m = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(m.parameters(), lr=0.01)
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
while True:
    opt.zero_grad(); nn.functional.cross_entropy(m(x), y).backward(); opt.step()
"""


def start_load(n: int) -> list[Any]:
    """``n`` busy processes, each a one-thread training loop, to measure beside."""
    import subprocess
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", LOAD_SCRIPT], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(n)
    ]
    time.sleep(3.0)  # imported and training
    dead = [p for p in procs if p.poll() is not None]
    if dead:
        stop_load(procs)
        raise RuntimeError(f"a load process exited at once (code {dead[0].returncode})")
    return procs


def stop_load(procs: list[Any]) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


def _iqr_pct(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return 100 * (q[2] - q[0]) / statistics.median(values)


STEP_KINDS = ("fused", "per-tensor loop")  # the reference (first) is what fits use


def bench_step(space: Any, rounds: int, steps: int, progress: Callable[[str], None] = lambda s: None) -> list[dict]:
    """One training step of the space's plain network at its batch size and input size on this
    process's device: forward, backward (through ``check.output_sum``) and the space's optimiser
    update, built as fits build it (``fit.make_optimizer``) with the update fused and as torch's
    per-tensor loop. Every round runs ``steps`` steps of each kind, alternating which goes first (a
    slow phase hits both alike), each on its own copy of the network. Per kind: the median ms of a
    step and of its update, their spread (IQR / median), and the median over rounds of the step's
    ratio to the fused one."""
    import copy

    from nas.check import output_sum
    from nas.tasks.classify.fit import make_optimizer, parameter_groups

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    plain = space.task.build(space, space.baseline(), space.num_classes or 10).to(device).train()
    x = torch.randn(space.training.batch_size, space.in_chans, *space.input_size, device=device)
    runs = {}
    for kind in STEP_KINDS:
        model = copy.deepcopy(plain)
        runs[kind] = (model, make_optimizer(parameter_groups(model, space.training), space.training, kind == "fused"))

    def step(kind: str) -> tuple[float, float]:
        model, opt = runs[kind]
        device_sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        output_sum(model(x)).backward()
        device_sync(device)
        t1 = time.perf_counter()
        opt.step()
        device_sync(device)
        t2 = time.perf_counter()
        return (t2 - t0) * 1e3, (t2 - t1) * 1e3

    for kind in STEP_KINDS:  # warm-up: allocator, caches, the optimiser's state
        for _ in range(3):
            step(kind)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in STEP_KINDS}
    for i in range(rounds):
        progress(f"round {i + 1} of {rounds}")
        for kind in STEP_KINDS if i % 2 == 0 else STEP_KINDS[::-1]:
            per = [step(kind) for _ in range(steps)]
            times[kind].append((statistics.median(t for t, _ in per), statistics.median(u for _, u in per)))
    ref = [t for t, _ in times[STEP_KINDS[0]]]
    return [
        {
            "update": kind,
            "step_ms": round(statistics.median(t for t, _ in v), 2),
            "step_spread_pct": round(_iqr_pct([t for t, _ in v]), 1),
            "update_ms": round(statistics.median(u for _, u in v), 2),
            "update_spread_pct": round(_iqr_pct([u for _, u in v]), 1),
            "step_ratio": round(statistics.median(t / r for (t, _), r in zip(v, ref, strict=True)), 3),
            "step_ratio_spread_pct": round(_iqr_pct([t / r for (t, _), r in zip(v, ref, strict=True)]), 1),
            "fused": bool(runs[kind][1].defaults.get("fused")),
        }
        for kind, v in times.items()
    ]


def bench_latency(
    space: Any, archs: list[Any], times: int, load: int, progress: Callable[[str], None] = lambda s: None
) -> dict[str, Any]:
    """``times`` re-measurements of every architecture by both methods, idle and (``load`` > 0) with
    ``load`` busy processes beside: the absolute method (quiet blocks of ``LatencyMeter``, each
    architecture on its own) and the paired ratio (all architectures and the plain backbone in one
    interleaved run, ``PairedMeter``). Per phase and architecture: the median and IQR/median of each
    method over the re-measurements, and in how many re-measurements each method ranked the
    architectures in the order given (fastest first: the baseline, then ``archs`` as listed; the
    expected order comes from outside the measurement being scored)."""
    import statistics

    from nas.measure.cost import LatencyMeter, LatencyTarget, PairedMeter
    from nas.tasks.classify.model import build

    target = LatencyTarget.from_space(space.latency)
    classes = space.num_classes or 10
    make = lambda a: build(a, classes, space.in_chans, init_seed=0)  # noqa: E731
    expected = list(range(len(archs)))  # the order given: fastest first
    paired = PairedMeter(target, make(space.baseline()), space.in_chans)
    progress("measuring the reference's quiet latency")
    ref_ms = paired.reference_ms
    absolute = LatencyMeter(target)
    phases = [("idle", 0)] + ([(f"load {load}", load)] if load else [])
    out: dict[str, Any] = {"target": target.key(), "reference_ms": ref_ms, "times": times, "phases": []}
    for phase, n in phases:
        procs = start_load(n) if n else []
        try:
            abs_ms: list[list[float]] = [[] for _ in archs]
            ratios: list[list[float]] = [[] for _ in archs]
            for i in range(times):
                progress(f"{phase}: re-measurement {i + 1} of {times}")
                for k, a in enumerate(archs):
                    abs_ms[k].append(absolute.measure(make(a), space.in_chans).ms)
                for k, r in enumerate(paired.ratios([make(a) for a in archs])):
                    ratios[k].append(r.median)
        finally:
            stop_load(procs)

        def right(values: list[list[float]]) -> int:
            return sum(sorted(range(len(archs)), key=lambda j, i=i: values[j][i]) == expected for i in range(times))

        out["phases"].append(
            {
                "phase": phase,
                "load": n,
                "order_right_absolute": right(abs_ms),
                "order_right_ratio": right(ratios),
                "rows": [
                    {
                        "architecture": str(a),
                        "absolute_ms": statistics.median(abs_ms[k]),
                        "absolute_iqr_pct": _iqr_pct(abs_ms[k]),
                        "ratio": statistics.median(ratios[k]),
                        "ratio_iqr_pct": _iqr_pct(ratios[k]),
                        "paired_ms": statistics.median(ratios[k]) * ref_ms,
                        "absolute_all": abs_ms[k],
                        "ratio_all": ratios[k],
                    }
                    for k, a in enumerate(archs)
                ],
            }
        )
    out["expected_order"] = [str(a) for a in archs]
    return out


STARTUP = {  # what a user types -> the arguments after the interpreter; the first is the reference
    "python -c 'import torch, timm'": ["-c", "import torch, timm"],
    "nas --help": ["-m", "nas", "--help"],
    "nas search --help": ["-m", "nas", "search", "--help"],
    "nas search --sampler bogus (exit 2)": ["-m", "nas", "search", "--space", "x.yaml", "--sampler", "bogus"],
    "nas mechanisms": ["-m", "nas", "mechanisms"],
}


def bench_startup(times: int, progress: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Wall time from process start to exit of each command in ``STARTUP``, ``times`` rounds with the
    commands interleaved in every round (a slow phase of the machine hits all of them alike). Per
    command: the median, its spread (IQR / median) and the median over rounds of its difference to the
    reference (importing torch and timm, the floor of any command that builds a model)."""
    import subprocess
    import sys

    seconds: dict[str, list[float]] = {label: [] for label in STARTUP}
    for i in range(times):
        progress(f"round {i + 1} of {times}")
        for label, args in STARTUP.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            seconds[label].append(time.perf_counter() - start)
    reference = seconds[next(iter(STARTUP))]
    return [
        {
            "command": label,
            "median_s": round(statistics.median(values), 3),
            "spread_pct": round(_iqr_pct(values), 1),
            "minus_reference_s": round(statistics.median(v - r for v, r in zip(values, reference, strict=True)), 3),
            "all_s": [round(v, 3) for v in values],
        }
        for label, values in seconds.items()
    ]


# -- what each bench prints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tabled:
    """A result as the command line prints it: a title, columns, rows of cells (markup escaped by the
    printer, except cells given in ``styled``: (row, column) -> rich markup), and the columns aligned left."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    left: tuple[str, ...] = ()
    styled: dict[tuple[int, int], str] = field(default_factory=dict)


def pruning_rows(
    curves: Path,
    study: str | None,
    storage: str | None,
    export: Path | None,
    seeds: int,
    eta: int,
    status: Callable[[str], None] = lambda s: None,
) -> tuple[list[Recorded], str, list[str]]:
    """The recorded curves ``nas bench pruning`` replays (``recording``)."""
    if eta < 2:
        raise BadOption("--eta", eta, "an integer >= 2")
    return recording(curves, study, storage, export, seeds, status)


def recording(
    curves: Path,
    study: str | None,
    storage: str | None,
    export: Path | None,
    seeds: int,
    status: Callable[[str], None] = lambda s: None,
) -> tuple[list[Recorded], str, list[str]]:
    """Recorded curves (a file, or a study run with --no-prune, re-trained to ``seeds`` paired seeds
    first), where they come from, and lines to print (what was written)."""
    if not 1 <= seeds <= 20:
        raise BadOption("--seeds", seeds, "an integer from 1 to 20")
    said: list[str] = []
    if study is None:
        rows, source = load_recorded(curves), str(curves)
    else:
        from nas.study.studies import default_storage, load_from, runs_root

        st = load_from(study, storage or default_storage(study))
        if seeds > 1:
            record_seeds(st, seeds, runs_root(st, storage), status)
        rows, meta = recorded_from_study(st)
        if export is not None:
            export_recorded(rows, meta, export)
            said.append(f"written: {export} ({len(rows)} trials)")
        source = f"study {study}"
    if len(rows) < 2:
        raise BadOption("--study" if study else "--curves", study or str(curves), "at least 2 complete trials")
    return rows, source, said


def pruning_table(results: list[dict[str, Any]], ref: tuple[float, float], n: int, source: str) -> Tabled:
    cols = ["method", "completed", "epochs", "epochs saved", "hypervolume", "of unpruned", "front size"]
    cols.append("confirmed front stopped")
    cols.append("planted +1/+2/+3 sd stopped")
    rows = [
        [
            r["method"],
            str(r["completed"]),
            str(r["epochs"]),
            f"{r['epochs_saved_pct']:.1f}%",
            f"{r['hypervolume']:.5f}",
            f"{r['hypervolume_pct']:.1f}%",
            str(r["front"]),
            "-" if r["confirmed_stopped"] is None else f"{r['confirmed_stopped']} of {r['confirmed_front']}",
            "-"
            if r["planted_stopped"] is None
            else " / ".join(f"{100 * v:.0f}%" for v in r["planted_stopped"].values()),
        ]
        for r in results
    ]
    title = (
        f"Pruning replayed on {n} recorded trials ({source}); hypervolume reference "
        f"(accuracy 0, latency {ref[1]:.4g} ms)"
        + (
            f"; planted: {results[0]['planted_worlds']} studies simulated with the recording's noise, winners at "
            "+1, +2, +3 paired sd (nas bench decisions)"
            if results and results[0]["planted_worlds"]
            else ""
        )
    )
    return Tabled(title, cols, rows, left=("method",))


def latency_tables(result: dict[str, Any], times: int) -> list[Tabled]:
    cols = ["architecture", "absolute ms", "spread", "ratio", "spread", "paired ms"]
    return [
        Tabled(
            f"{p['phase']}: order right in {p['order_right_absolute']}/{times} (absolute) and "
            f"{p['order_right_ratio']}/{times} (paired ratio) re-measurements",
            cols,
            [
                [
                    r["architecture"],
                    f"{r['absolute_ms']:.3f}",
                    f"{r['absolute_iqr_pct']:.1f}%",
                    f"{r['ratio']:.4f}",
                    f"{r['ratio_iqr_pct']:.2f}%",
                    f"{r['paired_ms']:.3f}",
                ]
                for r in p["rows"]
            ],
            left=tuple(cols),
        )
        for p in result["phases"]
    ]


def workers_table(rows: list[dict[str, Any]], trials: int, space: Path) -> Tabled:
    cols = ["workers", "threads each", "wall s", "trials/min", "trained/min", "epochs/min", "epochs/min ratio"]
    keys = ("trials_per_min", "trained_per_min", "epochs_per_min", "epochs_per_min_ratio")
    cells = [
        [str(r["workers"]), str(r["threads_per_worker"]), f"{r['wall_s']:.1f}", *(f"{r[k]:.2f}" for k in keys)]
        for r in rows
    ]
    return Tabled(f"nas search throughput, {trials} trials, {space}", cols, cells, left=tuple(cols))


def contention_table(summary: list[dict[str, Any]], trials: int, space: Path, workers: int) -> Tabled:
    cols = ["policy", "busy processes", "runs", "wall s (median)", "range", "x own idle", "x auto idle", "threads"]
    cells = []
    for r in summary:
        bound = ">" if r["timed_out"] else ""  # killed at the limit: at least this long
        cells.append(
            [
                r["policy"],
                str(r["busy"]),
                str(r["runs"]),
                f"{bound}{r['wall_s']:.0f}",
                f"{r['min_s']:.0f}-{bound}{r['max_s']:.0f}",
                f"{bound}{r['vs_own_idle']:.2f}" if r["vs_own_idle"] else "-",
                f"{bound}{r['vs_auto_idle']:.2f}" if r["vs_auto_idle"] else "-",
                ",".join(map(str, r["threads"])) or "-",
            ]
        )
    who = f", --workers {workers}" if workers > 1 else ""
    return Tabled(f"nas search beside busy processes, {trials} trials{who}, {space}", cols, cells, left=(cols[0],))


def modules_table(rows: list[dict[str, Any]], meta: dict[str, Any]) -> Tabled:
    b, c, h, w = meta["shape"]
    cols = ["mechanism", "params", "GFLOPs", "fwd", "fwd+bwd", "timm fwd", "timm fwd+bwd", "ratio fwd", "ratio f+b"]

    def cell(ms: float, spread: float) -> str:
        return f"{ms:.2f} ±{spread:.0f}%"

    cells, styled = [], {}
    for i, r in enumerate(rows):
        if "error" in r:
            cells.append([r["mechanism"], r["error"], *[""] * 7])
            continue
        timm_cols = ["-"] * 4
        if "timm_fwd_ms" in r:
            timm_cols = [
                cell(r["timm_fwd_ms"], r["timm_fwd_spread"]),
                cell(r["timm_fb_ms"], r["timm_fb_spread"]),
                f"{r['fwd_ratio']:.2f}",
                f"{r['fb_ratio']:.2f}",
            ]
            colour = "green" if r["fb_ratio"] <= 1.05 else "red"
            styled[(i, 8)] = f"[{colour}]{r['fb_ratio']:.2f}[/{colour}]"
        cells.append(
            [
                r["mechanism"],
                f"{r['params']:,}",
                f"{r['flops'] / 1e9:.3f}",
                cell(r["fwd_ms"], r["fwd_spread"]),
                cell(r["fb_ms"], r["fb_spread"]),
                *timm_cols,
            ]
        )
    title = (
        f"Attention modules at ({b}, {c}, {h}, {w}) on {meta['device']}, {meta['threads']} threads: median ms of "
        f"{meta['repeats']} (± IQR/median); ratio = ours / timm"
    )
    return Tabled(title, cols, cells, left=("mechanism",), styled=styled)


def startup_table(rows: list[dict[str, Any]], times: int) -> Tabled:
    cells = [
        [r["command"], f"{r['median_s']:.2f}", f"{r['spread_pct']:.0f}%", f"{r['minus_reference_s']:+.2f}"]
        for r in rows
    ]
    title = f"Start-up to exit, median of {times} rounds (± IQR/median); reference: {rows[0]['command']}"
    return Tabled(title, ["command", "median s", "spread", "minus reference s"], cells, left=("command",))


def step_table(rows: list[dict[str, Any]], space: Any, rounds: int, steps: int) -> Tabled:
    cells = [
        [
            r["update"] + ("" if r["fused"] or r["update"] != STEP_KINDS[0] else " (not available: loop)"),
            f"{r['step_ms']:.1f} ± {r['step_spread_pct']:.0f}%",
            f"{r['update_ms']:.1f} ± {r['update_spread_pct']:.0f}%",
            f"{r['step_ratio']:.2f} ± {r['step_ratio_spread_pct']:.0f}%",
        ]
        for r in rows
    ]
    title = (
        f"One training step of {space.baseline()} at batch {space.training.batch_size}, "
        f"{space.training.optimizer}: median of {rounds} rounds x {steps} steps (± IQR/median)"
    )
    columns = ["optimiser update", "step ms", "update ms", "step / fused"]
    return Tabled(title, columns, cells, left=("optimiser update",))


def startup_meta(times: int) -> dict[str, Any]:
    import sys

    return {
        "command": "nas bench startup",
        "times": times,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def modules_options(device: str, batch: int, channels: int, size: int, repeats: int, warmup: int,
                    threads: int | None, only: str | None) -> tuple[torch.device, list[str] | None]:  # fmt: skip
    """``nas bench modules``' options checked; the device and the mechanisms to time (None: all)."""
    from nas.core.errors import MAX_THREADS
    from nas.measure.cost import resolve_device

    check_module_input(batch, channels, size, repeats)
    if warmup < 0:
        raise BadOption("--warmup", warmup, "an integer >= 0")
    if threads is not None:
        torch.set_num_threads(check_range("--threads", threads, 1, MAX_THREADS))
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    for n in names or []:
        if n.lower() not in {a.lower() for a in attention.known_names()}:
            raise BadOption("--only", n, f"comma-separated mechanism names: {', '.join(attention.MECHANISMS)}")
    return resolve_device(device), names


def latency_options(space: Path, arch: list[str] | None, times: int, load: int) -> tuple[Any, list[Any]]:
    """``nas bench latency``'s options checked: the space, and its baseline first, then the architectures."""
    from nas.core.architecture import Architecture
    from nas.tasks.spacefile import load_space

    if times < 2:
        raise BadOption("--times", times, "an integer >= 2")
    if not 0 <= load <= 64:
        raise BadOption("--load", load, "an integer from 0 to 64 (busy processes)")
    s = load_space(space)
    archs = [Architecture.parse(a) for a in arch or []]
    return s, [s.baseline()] + [a for a in archs if a != s.baseline()]


def variance_of(rows: list[Recorded]) -> Any:
    """The variance table (``nas.core.stats.variance_table``) of a recording with paired seeds: each
    architecture's final figure at the search's seed and at every recorded further seed."""
    from nas.core.stats import variance_table

    counts = {len(r.seed_curves) for r in rows}
    if len(counts) != 1 or counts == {0}:
        raise BadOption(
            "--curves",
            "a recording",
            f"every architecture at the same seeds, 2 or more (seeds recorded: {sorted(c + 1 for c in counts)}); "
            "record with nas bench variance --study NAME --seeds 3",
        )
    base = [i for i, r in enumerate(rows) if r.baseline]
    if not base:
        raise BadOption("--curves", "a recording", "the baseline among its trials (a space whose stages allow none)")
    return variance_table([[r.curve[-1], *(c[-1] for c in r.seed_curves)] for r in rows], base[0])


def main_effects_of(rows: list[Recorded]) -> list[Any]:
    """Where a recording holds every combination of two or more searched positions' choices (a whole
    small space, every architecture at the same seeds): each position's main effect
    (``nas.core.stats.main_effects``); else [] (one position: the variance table's F is its own). The
    rows as ``variance_of`` accepted them (unequal seeds give [] here)."""
    from nas.core.architecture import Architecture, ArchitectureError
    from nas.core.stats import main_effects

    try:
        choices = [[str(c) for c in Architecture.parse(r.arch).stages] for r in rows]
    except ArchitectureError:  # not a space of this tool's architectures: nothing to split by position
        return []
    found = main_effects([[r.curve[-1], *(c[-1] for c in r.seed_curves)] for r in rows], choices)
    return found if len(found) >= 2 else []


def main_effect_rows(effects: list[tuple[str, list[Any]]]) -> Tabled | None:
    """One row per recording and searched position: F, p, and the choices that move the figure most up
    and down against the reference (the plain choice where there is one), in points. None where no
    recording holds every combination of two or more positions."""
    cols = ["recording", "position", "F (choice)", "p", "against", "best", "worst"]
    rows = []
    for source, found in effects:
        for m in found:
            ranked = sorted((v, k) for k, v in m.effects.items() if k != m.reference)
            rows.append(
                [
                    source,
                    str(m.position),
                    f"{m.f:.2f} ({m.dof[0]}, {m.dof[1]})",
                    f"{m.p:.2g}",
                    m.reference,
                    f"{ranked[-1][1]} {100 * ranked[-1][0]:+.2f}",
                    f"{ranked[0][1]} {100 * ranked[0][0]:+.2f}",
                ]
            )
    if not rows:
        return None
    title = (
        "per searched position (recordings that hold every combination): a choice's mean minus the one it "
        "is against, in points; F of the choices' means per seed, seeds as blocks"
    )
    return Tabled(title, cols, rows, left=("recording", "against", "best", "worst"))


def variance_table_rows(tables: list[tuple[str, Any]]) -> Tabled:
    """One row per recording: the figures of ``variance_of``, in points."""
    cols = ["recording", "archs x seeds", "baseline", "seed sd", "paired diff sd", "F (arch)", "p", "means spread"]
    rows = [
        [
            source,
            f"{v.architectures} x {v.seeds}",
            f"{100 * v.baseline_mean:.2f}",
            f"{100 * v.seed_sd:.2f}",
            f"{100 * v.paired_sd:.2f}",
            f"{v.f:.2f} ({v.dof[0]}, {v.dof[1]})",
            f"{v.p:.2g}",
            f"{100 * v.spread:.2f}",
        ]
        for source, v in tables
    ]
    title = "variance of recordings (points; paired: the same seeds for every architecture; F: seeds as blocks)"
    return Tabled(title, cols, rows, left=("recording",))


def decisions_tables(rows: list[dict[str, Any]], facts: dict[str, Any], source: str, prune: bool) -> list[Any]:
    """The rows of ``nas.decisions.bench_decisions`` as two tables. First, per world and rule: the
    family-wise false "better" rate with its 95% Wilson interval; per planted effect, "better" over all
    replays and, in brackets, among the replays whose confirmation judged it; trainings (mean, and the
    ratio to today's rule in the same world); the regret of the exported best. Second, where the planted
    winners were lost before any confirmation: pruned, or never among the confirmed members."""
    from nas.decisions import PLANTED

    wins = [e for e in PLANTED if e > 0]
    today = {r["world"]: r["trainings"] for r in rows if r["rule"] == "today"}
    first = []
    for r in rows:
        lo, hi = r["false_better_ci"]
        cells = [r["world"], r["rule"], f"{100 * r['false_better']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"]
        for e in wins:
            p, cp = r.get(f"power_{e:+g}"), r.get(f"confirm_power_{e:+g}")
            cells.append("-" if p is None else f"{100 * p:.0f}% ({'-' if cp is None else f'{100 * cp:.0f}%'})")
        ratio = r["trainings"] / today[r["world"]] if today.get(r["world"]) else math.nan
        cells += [f"{r['trainings']:.1f}", f"{ratio:.2f}"]
        cells.append("-" if r["regret"] is None else f"{r['regret']:.2f} ± {r['regret_sd']:.2f}")
        first.append(cells)
    title = (
        f"decisions replayed {rows[0]['replays']} times per world on {source} "
        f"({'pruned within noise, eta 3' if prune else 'no pruning'}); noise: seed sd "
        f"{facts['seed_sd_pts']:.2f}, run sd {facts['run_sd_pts']:.2f}, paired sd {facts['paired_sd_pts']:.2f} "
        f"points ({facts['dof']} df); {facts['seconds_per_100']:.1f} s per 100 replays"
    )
    cols = ["world", "rule", "false better", *(f"{e:+g} sd better (judged)" for e in wins)]
    cols += ["trainings", "x today", "regret pts"]
    main = Tabled(title, cols, first, left=("world", "rule"))
    lost = [
        [
            r["world"],
            r["rule"],
            *(f"{100 * r[f'stopped_{e:+g}']:.0f}% / {100 * r[f'judged_{e:+g}']:.0f}%" for e in wins),
        ]
        for r in rows
        if r.get(f"stopped_{wins[0]:+g}") is not None
    ]
    second = Tabled(
        "planted winners: pruned / judged by the confirmation (today: the front; race: the front"
        + (f" and the trials within {facts['near']:g} paired noise sd of it)" if facts.get("near") else ")"),
        ["world", "rule", *(f"{e:+g} sd" for e in wins)],
        lost,
        left=("world", "rule"),
    )
    return [main, second] if lost else [main]
