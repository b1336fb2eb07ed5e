"""Benchmarks (``nas bench ...``): measured, printed as a table, written under runs/."""

from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import timm
import torch
from timm.layers import SelectiveKernel as TimmSelectiveKernel
from timm.layers import create_attn
from torch import nn

import attention

from .cost import (count_flops, count_params, forward_fn, paired_ratio, steady_allocator, time_interleaved,
                   train_step_fn)
from .errors import BadOption


def _timm_sk(channels: int, device: torch.device) -> nn.Module:
    # timm's SelectiveKernel configured as the SKNet paper (and our default): two grouped 3x3 paths
    # (the second dilated), groups 32, full input to every path, d = max(C/16, 32).
    return TimmSelectiveKernel(channels, channels, groups=32, split_input=False,
                               rd_channels=max(channels // 16, 32), device=device)


# Mechanisms that timm also ships, with how timm's version is built for the side-by-side timing.
TIMM_COUNTERPARTS: dict[str, tuple[str, Callable[[int, torch.device], nn.Module]]] = {
    "se": ("create_attn('se')", lambda c, d: create_attn("se", c, device=d)),
    "eca": ("create_attn('eca')", lambda c, d: create_attn("eca", c, device=d)),
    "cbam": ("create_attn('cbam')", lambda c, d: create_attn("cbam", c, device=d)),
    "ca": ("create_attn('coord')", lambda c, d: create_attn("coord", c, device=d)),
    "sk": ("SelectiveKernel(groups=32, split_input=False)", _timm_sk),
}


def bench_modules(*, device: torch.device, batch: int, channels: int, size: int, repeats: int, warmup: int,
                  only: list[str] | None = None, progress: Callable[[str], None] = lambda s: None
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
            row.update(timm_params=count_params(modules[1]), timm_fwd_ms=fwd[1].median, timm_fwd_spread=fwd[1].spread,
                       timm_fb_ms=step[1].median, timm_fb_spread=step[1].spread,
                       fwd_ratio=paired_ratio(fwd[0], fwd[1]), fb_ratio=paired_ratio(step[0], step[1]))
        rows.append(row)
    return rows


def environment(device: torch.device) -> dict[str, Any]:
    env = {"torch": torch.__version__, "timm": timm.__version__, "device": str(device),
           "threads": torch.get_num_threads(), "machine": platform.machine(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
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


def check_positive(option: str, value: int) -> int:
    if value < 1:
        raise BadOption(option, value, "a positive integer")
    return value


def load_recorded(path: Path) -> list["Recorded"]:
    from .pruning import Recorded

    try:
        data = json.loads(path.read_text())
        return [Recorded(d["number"], d["arch"], tuple(d["curve"]), d["latency_ms"], d.get("baseline", False))
                for d in data["trials"]]
    except FileNotFoundError:
        raise BadOption("--curves", str(path), "a JSON file written by 'nas bench pruning --study ... --export'") from None
    except (ValueError, KeyError, TypeError) as e:
        raise BadOption("--curves", str(path), f"a JSON file of recorded curves ({e.__class__.__name__}: {e})") from None


def recorded_from_study(study: Any) -> tuple[list["Recorded"], dict[str, Any]]:
    """Complete, non-duplicate trials of a study run without pruning."""
    from optuna.trial import TrialState

    from .pruning import Recorded

    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if "duplicate_of" in a or not a.get("val_acc_curve"):
            continue
        rows.append(Recorded(t.number, a["arch"], tuple(a["val_acc_curve"]), a["latency_ms"], bool(a.get("baseline"))))
    lengths = {len(r.curve) for r in rows}
    if len(lengths) > 1:
        raise BadOption("--study", study.study_name, f"a study run with --no-prune (curves have lengths {sorted(lengths)})")
    meta = {"study": study.study_name, "space": study.user_attrs.get("space_path"), "trials": len(rows)}
    return rows, meta


def export_recorded(rows: list["Recorded"], meta: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "trials": [
        {"number": r.number, "arch": r.arch, "curve": [round(c, 6) for c in r.curve], "latency_ms": r.latency,
         "baseline": r.baseline} for r in rows]}, indent=1))


def bench_pruning(rows: list["Recorded"], eta: int) -> tuple[list[dict[str, Any]], tuple[float, float]]:
    from .pruning import hypervolume, pareto_front, replay_moasha, replay_none, replay_optuna_sh

    ref = (0.0, 1.1 * max(r.latency for r in rows))
    results = [replay_none(rows), replay_moasha(rows, eta), replay_optuna_sh(rows, eta)]
    full_epochs, full_hv = results[0].epochs, None
    out = []
    for res in results:
        pts = res.points()
        hv = hypervolume(pts, ref)
        full_hv = hv if full_hv is None else full_hv
        out.append({"method": res.method, "completed": len(res.completed), "epochs": res.epochs,
                    "epochs_saved_pct": 100 * (1 - res.epochs / full_epochs), "hypervolume": hv,
                    "hypervolume_pct": 100 * hv / full_hv if full_hv else 0.0, "front": len(pareto_front(pts))})
    return out, ref


def bench_workers(space: Path, trials: int, workers: list[int], threads: int | None, out_dir: Path,
                  on_row: Callable[[dict[str, Any]], None] = lambda r: None) -> list[dict[str, Any]]:
    """Trials per minute of ``nas search --workers N`` for each N, each in a fresh study (random
    sampler, seed 0, no pruning, so every trained trial does the same epochs). Each run is the real
    command in a subprocess; its wall time includes starting the workers."""
    import subprocess
    import sys

    import optuna
    from optuna.trial import TrialState

    from .workers import cpu_count

    rows: list[dict[str, Any]] = []
    for n in workers:
        per = threads or max(1, cpu_count() // n)
        name = f"bench-workers-{n}x{per}"
        folder = out_dir / name
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        url = f"sqlite:///{folder / 'study.db'}"
        cmd = [sys.executable, "-m", "nas", "search", "--space", str(space), "--trials", str(trials), "--study", name,
               "--storage", url, "--workers", str(n), "--threads", str(per), "--sampler", "random", "--no-prune"]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
        study = optuna.load_study(study_name=name, storage=url)
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        trained = [t for t in finished if "duplicate_of" not in t.user_attrs and not t.user_attrs.get("infeasible")]
        epochs = sum(len(t.user_attrs.get("val_acc_curve", [])) for t in trained)
        row = {"workers": n, "threads_per_worker": per, "wall_s": round(wall, 1), "trials": len(finished),
               "trained": len(trained), "epochs": epochs, "trials_per_min": round(60 * len(finished) / wall, 2),
               "trained_per_min": round(60 * len(trained) / wall, 2), "epochs_per_min": round(60 * epochs / wall, 2)}
        if rows:
            row["epochs_per_min_ratio"] = round(row["epochs_per_min"] / rows[0]["epochs_per_min"], 3)
        else:
            row["epochs_per_min_ratio"] = 1.0
        rows.append(row)
        on_row(row)
    return rows
