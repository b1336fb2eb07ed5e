"""Command line: parse, call, print. No logic lives here."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

import attention

from .console import console, err_console
from .errors import BadOption, UserError
from .viz_cmd import viz_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Neural architecture search over attention placement in timm backbones.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks; results are printed and written under runs/.")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress to stderr.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command("mechanisms")
def mechanisms_cmd(channels: Optional[int] = typer.Option(
        None, help="Also show, per integer hyperparameter, the values valid at this channel count.")) -> None:
    """List the attention mechanisms: hyperparameters with defaults, paper and placement."""
    table = Table(title="Attention mechanisms", show_lines=True, expand=True)
    for col, ratio in (("name", 1), ("mechanism", 2), ("hyperparameters (default)", 5), ("paper", 2), ("placement", 3)):
        table.add_column(col, overflow="fold", ratio=ratio)
    for spec in attention.MECHANISMS.values():
        hps = []
        for h in spec.hparams:
            text = f"{h.name} [{h.short}] = {h.default!r}: {h.describe()}"
            if channels is not None and h.kind is int and h.choices is None:
                text += f"\n  valid at {channels}: {_compact(spec.valid_values(h.name, channels))}"
            hps.append(text)
        if channels is not None and spec.problems(channels):
            hps.append(f"defaults invalid at {channels} channels: {spec.problems(channels)[0]}")
        paper = f"arXiv:{spec.arxiv}" if spec.arxiv else spec.reference.split(";")[0]
        table.add_row(spec.name, spec.title, escape("\n".join(hps)) or "-", paper,
                      f"{spec.placement}\n{spec.placement_note}")
    console.print(table)


def _compact(values: list) -> str:
    return ", ".join(map(str, values)) if len(values) <= 12 else ", ".join(map(str, values[:12])) + ", ..."


@app.command("search")
def search_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file"),
    trials: int = typer.Option(50, help="Finished trials to reach (those of an earlier run count)"),
    timeout: Optional[float] = typer.Option(None, help="Stop starting trials after this many seconds"),
    study: Optional[str] = typer.Option(None, help="Study name (default: the space's name)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///runs/<study>/study.db; "
                                                     "several machines: postgresql+psycopg2://user@host/db)"),
    seed: int = typer.Option(0, help="Sampler and training seed"),
    sampler: str = typer.Option("tpe", help="tpe | nsga2 | random | gp | bruteforce"),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Multi-objective successive halving"),
    eta: int = typer.Option(3, help="Pruning: keep the best 1/eta at each rung (epochs 1, eta, eta^2, ...)"),
    workers: str = typer.Option("1", help="Worker processes on this machine: N, or auto (one per visible GPU, "
                                          "one on a CPU-only machine)"),
    threads: Optional[int] = typer.Option(None, help="CPU threads per worker (default: CPU cores / workers)"),
    heartbeat: int = typer.Option(10, help="Seconds between a running trial's heartbeats; a trial silent for 3 "
                                           "is failed and its architecture retried once"),
    worker_index: Optional[int] = typer.Option(None, hidden=True, help="Set by --workers for its worker processes"),
) -> None:
    """Search a space: each trial trains an architecture; the front of accuracy against latency is kept."""
    import time

    import optuna
    import torch

    from .display import LineReporter, LiveReporter, front_table
    from .search import SAMPLERS, Search, count_states, default_storage, make_sampler, open_study
    from .space import load_space

    if sampler not in SAMPLERS:
        raise BadOption("--sampler", sampler, f"one of {', '.join(SAMPLERS)}")
    if eta < 2:
        raise BadOption("--eta", eta, "an integer >= 2")
    if heartbeat < 1:  # checked here: with --workers the study is opened before any Search checks it
        raise BadOption("--heartbeat", heartbeat, "a positive whole number of seconds")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = load_space(space)
    name = study or s.name
    url = storage or default_storage(name)

    def search(index: int, reporter) -> "object":
        return Search(s, name, url, trials, timeout, seed, sampler, prune, eta, reporter=reporter,
                      worker_index=index, heartbeat_s=heartbeat).run()

    if worker_index is not None:  # one of the processes of --workers: plain lines for the parent to show
        from .workers import die_with_parent

        die_with_parent()
        if threads:
            torch.set_num_threads(threads)
        result = search(worker_index, LineReporter())
        print(f"done: {result.stopped}", flush=True)
        return

    from .workers import plan, run_workers

    p = plan(workers, threads, s.training["devices"])
    console.print(f"study [bold]{name}[/bold] in {url}\ninspect it with:  optuna-dashboard {url}")
    if p.workers == 1:
        if threads:
            torch.set_num_threads(threads)
        with LiveReporter() as reporter:
            result = search(0, reporter)
        st, c, stopped, wall = result.study, result.counts, result.stopped, result.wall_s
    else:
        from .locks import StudyLock

        console.print(p.describe())
        start = time.monotonic()
        st = open_study(s, name, url, make_sampler(sampler, seed), heartbeat, seed)
        args = ["--space", str(space), "--trials", str(trials), "--study", name, "--storage", url, "--seed", str(seed),
                "--sampler", sampler, "--prune" if prune else "--no-prune", "--eta", str(eta),
                "--heartbeat", str(heartbeat)] + (["--timeout", str(timeout)] if timeout is not None else [])
        with LiveReporter() as reporter:
            reporter.search_start(st, trials)
            stopped = run_workers(p, args, st, StudyLock(url, name, st._storage.engine), heartbeat,
                                  on_line=reporter.print, on_poll=reporter.poll)
        c, wall = count_states(st), time.monotonic() - start
    console.print(f"{stopped}: complete {c['complete']}, pruned {c['pruned']}, infeasible {c['infeasible']}, "
                  f"failed {c['failed']} in {wall:.0f} s")
    console.print(front_table(st, title="Pareto front of the search's runs (one run each)"))
    from . import report

    # the verdict from what the search stored (the baseline's noise seeds, the confirmation runs)
    console.print(f"[bold]{escape(report.analyse(st, measure_again=False).headline())}[/bold]", highlight=False)
    console.print(f"nas report --study {escape(name)}" + (f" --storage {escape(url)}" if storage else "")
                  + "  (the front and the baseline re-measured, with intervals)",
                  highlight=False)
    console.print(f"optuna-dashboard {url}")


@app.command("report")
def report_cmd(
    study: Optional[str] = typer.Option(None, help="Study name (default: the only study in the storage)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///runs/<study>/study.db)"),
    out: Optional[Path] = typer.Option(None, help="Folder for front.png and front.html (default: runs/<study>/report)"),
    remeasure: bool = typer.Option(True, "--remeasure/--no-remeasure",
                                   help="Time the front and the baseline again now, interleaved in one run"),
    confirm: int = typer.Option(0, help="Re-train the front and the baseline from this many fresh seeds (paired) "
                                        "before judging them; runs already stored are reused (default: the "
                                        "space's training.confirm)"),
    include: Optional[str] = typer.Option(None, help="Also show and judge these complete trials, e.g. 12,15"),
) -> None:
    """The Pareto front: every figure with its uncertainty, each member judged against the baseline
    (better only when its paired interval excludes 0), hypervolume, and a plot (PNG + HTML)."""
    from . import report

    if confirm < 0 or confirm == 1:
        raise BadOption("--confirm", confirm, "0 or an integer >= 2 (one seed gives no interval; 3 or more give "
                                              "intervals worth reading)")
    extra = [p.strip() for p in (include or "").split(",") if p.strip()]
    if not all(p.isdigit() for p in extra):
        raise BadOption("--include", include, "trial numbers separated by commas, e.g. 12,15")
    st = report.open_study(study, storage)
    names = st.metric_names or ["accuracy", "latency_ms"]
    with console.status("reading the study") as status:
        say = lambda text: status.update(escape(text))  # noqa: E731
        root = report.runs_root(st, storage)
        fit = report.fitter(st, say, root) if confirm else None
        analysis = report.analyse(st, confirm=confirm, measure_again=remeasure, fit=fit, status=say,
                                  include=[int(p) for p in extra])
    info = report.summary(st)
    console.print(f"[bold]{escape(analysis.headline())}[/bold]", highlight=False)
    console.print(escape(str(analysis.noise) if analysis.noise else "noise: not measured (no baseline re-runs)"))
    cols, rows = report.table_rows(analysis, names, short=True)
    table = Table(title=f"Pareto front of {escape(st.study_name)} and the baseline ({len(rows)} architectures)",
                  box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    for j, col in enumerate(cols):  # no column narrower than its longest word: 80 columns break lines, not words
        table.add_column(col, overflow="fold", min_width=max(len(w) for c in [col, *(r[j] for r in rows)] for w in c.split()))
    for r in rows:
        table.add_row(*map(escape, r))
    console.print(table)
    for m in analysis.members:  # never truncated, whatever the terminal's width
        say = "baseline" if m.baseline else report.verdict_text(m)
        console.print(f"trial {m.number}, {escape(say)}, {report.count(m.params)} params, {m.flops / 1e6:.1f} MFLOPs: "
                      f"{escape(m.arch)}", soft_wrap=True, highlight=False)
    ref_ms = st.user_attrs.get("latency_reference", {}).get("ms")
    if ref_ms:
        console.print(f"latency = ratio to the plain backbone timed interleaved with it x its quiet latency "
                      f"{ref_ms:.3f} ms on this target; intervals: 95% of the median ratio")
    console.print(f"hypervolume {info['hypervolume']:.5f} against the reference point "
                  f"({names[0]} {info['reference'][0]}, {names[1]} {info['reference'][1]:.4g}) "
                  f"= (0, 1.1 x the largest {names[1]} of a complete trial)")
    if info["overhead_pct"] is not None:
        console.print(f"{len(st.trials)} trials in {info['wall_s']:.0f} s, {info['epochs']} epochs trained; "
                      f"overhead (time outside training and validation batches): {info['overhead_pct']:.1f}%")
    folder = out or Path("runs") / st.study_name / "report"
    png = report.plot(st, analysis, folder / "front.png")
    page = report.write_html(st, analysis, names, png, info["hypervolume"], info["reference"], folder / "front.html")
    console.print(f"written: {png}  {page}")


@app.command("export")
def export_cmd(
    which: str = typer.Argument(..., help="best, or a trial number"),
    study: Optional[str] = typer.Option(None, help="Study name (default: the only study in the storage)"),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: sqlite:///runs/<study>/study.db)"),
    max_latency_ms: Optional[float] = typer.Option(None, help="best: the most accurate front member within this latency"),
    min_accuracy: Optional[float] = typer.Option(None, help="best: the fastest front member reaching this accuracy"),
    out: Optional[Path] = typer.Option(None, help="Folder to write (default: runs/<study>/export/trial_<n>)"),
    onnx: bool = typer.Option(False, "--onnx", help="Also write model.onnx, checked in onnxruntime"),
    torchscript: bool = typer.Option(False, "--torchscript", help="Also write model.torchscript.pt, checked"),
    weights: bool = typer.Option(True, "--weights/--no-weights", help="Copy the trial's trained weights"),
    name: Optional[str] = typer.Option(None, help="timm model name to register (default: nas_<study>_t<trial>)"),
) -> None:
    """Write a trial as a folder: model.py (timm + attention only), architecture.yaml, metrics.json and
    the trained weights (safetensors); optionally ONNX and TorchScript."""
    from . import export, report

    st = report.open_study(study, storage)
    if which == "best":
        trial, why = export.pick_best(st, max_latency_ms, min_accuracy)
        console.print(f"trial {trial.number}: {escape(trial.user_attrs['arch'])}, {why}")
    elif which.isdigit():
        if max_latency_ms is not None or min_accuracy is not None:
            raise BadOption("--max-latency-ms/--min-accuracy", "given", "only with 'nas export best'")
        trial = export.get_trial(st, int(which))
        console.print(f"trial {trial.number}: {escape(trial.user_attrs['arch'])}")
    else:
        raise BadOption("WHICH", which, "best or a trial number, e.g. nas export best or nas export 12")
    folder = out or Path("runs") / st.study_name / "export" / f"trial_{trial.number}"
    result = export.export_trial(st, trial, folder, weights=weights, onnx=onnx, torchscript=torchscript, name=name)
    console.print(f"accuracy {trial.values[0]:.4f}, latency {trial.values[1]:.3f} ms "
                  f"({trial.user_attrs.get('latency_target', '?')})")
    for what, diff in result.checks.items():
        console.print(f"checked {what} against PyTorch: largest difference {diff:.2e}")
    console.print(f"written: {', '.join(str(f) for f in result.files)}")


@app.command("train")
def train_cmd(
    source: Path = typer.Argument(..., help="An export folder (nas export) or an architecture.yaml"),
    epochs: Optional[int] = typer.Option(None, help="Epochs to train (default: the trial's: with the default seed "
                                                   "this reproduces the trial's curve exactly)"),
    data: Optional[str] = typer.Option(None, help="digits, cifar10, cifar100 or a folder of images "
                                                  "(default: the data the search used)"),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the search's)"),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate (default: the search's)"),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: <export>/train)"),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue from out/checkpoints/last.ckpt if there"),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, data order and training (default: the trial's)"),
) -> None:
    """Train an architecture with a longer schedule than the search's proxy; checkpoints, resume, and
    weights that the export's model.py loads."""
    from . import retrain

    result = retrain.train(source, epochs=epochs, data=data, batch_size=batch_size, lr=lr, out=out, resume=resume,
                           seed=seed, report=lambda e, n, acc: console.print(f"epoch {e}/{n}: val accuracy {acc:.4f}"))
    if result.resumed_from:
        console.print(f"resumed after epoch {result.resumed_from}")
    if result.curve:
        console.print(f"final val accuracy {result.curve[-1]:.4f} (best {max(result.curve):.4f})")
    console.print(f"written: {result.weights}; load with build_model(weights={str(result.weights)!r}) from model.py")


app.command("viz")(viz_cmd)


@app.command("check")
def check_cmd(
    space: Optional[Path] = typer.Option(None, "--space", help="Validate a search-space YAML file"),
    arch: Optional[str] = typer.Option(None, "--arch", help="An architecture string, e.g. 'resnet18|se(r=16)|none|none|eca(k=3)'"),
    input_size: int = typer.Option(224, help="Input size for --arch (H = W)"),
    in_chans: int = typer.Option(3, help="Input channels for --arch"),
    num_classes: int = typer.Option(1000, help="Classes for --arch"),
) -> None:
    """Validate a space (every problem, with file, key path and line) and print its stages and size;
    or print the parameters and FLOPs of an architecture."""
    from . import check
    from .space import load_space

    if (space is None) == (arch is None):
        raise BadOption("nas check", "", "give exactly one of --space FILE or --arch STRING")
    if arch is not None:
        for opt, value in (("--input-size", input_size), ("--in-chans", in_chans), ("--num-classes", num_classes)):
            if value < 1:
                raise BadOption(opt, value, "a positive integer")
        a = check.parse_arch(arch)
        cost = check.model_cost(a, num_classes, (input_size, input_size), in_chans)
        console.print(f"[bold]{a}[/bold]")
        console.print(f"params: {cost.params:,}   FLOPs: {cost.flops / 1e9:.3f} G at {in_chans}x{input_size}x{input_size} "
                      f"(torch FlopCounterMode; {num_classes} classes)")
        return
    s = load_space(space)
    table = Table(title=f"{space}: {s.backbone} at {s.input_size[0]}x{s.input_size[1]}, {s.in_chans} input channel(s)")
    for col in ("stage", "module", "blocks", "channels by placement", "output", "built-in", "searched"):
        table.add_column(col)
    for r in check.stage_table(s):
        chans = ", ".join(f"{p} {'/'.join(map(str, c))}" for p, c in r["channels"].items())
        table.add_row(str(r["stage"]), r["module"], str(r["blocks"]), chans,
                      f"{r['out_channels']} x {r['spatial'][0]}x{r['spatial'][1]}", ", ".join(r["builtin"]) or "-",
                      f"{r['choices']}: {', '.join(r['mechanisms'])}")
    console.print(table)
    base = check.model_cost(s.baseline(), s.num_classes or 10, s.input_size, s.in_chans)
    console.print(f"{s.count():,} distinct architectures; baseline {s.baseline()}: {base.params:,} params, "
                  f"{base.flops / 1e9:.3f} GFLOPs")
    console.print("[green]ok[/green]")


@bench_app.command("build")
def bench_build_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file"),
    samples: int = typer.Option(20, help="Random architectures to build"),
    batch: int = typer.Option(2, help="Batch of the forward+backward pass"),
    seed: int = typer.Option(0, help="Sampling seed"),
) -> None:
    """Time building random architectures of a space and one forward+backward at its input size."""
    import statistics

    from . import check
    from .space import load_space

    rows = check.time_builds(load_space(space), samples, batch, seed)
    table = Table(title=f"build + one forward/backward at batch {batch}, {len(rows)} random architectures of {space}")
    for col in ("", "build s", "fwd+bwd s", "total s"):
        table.add_column(col, justify="right")
    for label, fn in (("median", statistics.median), ("max", max)):
        table.add_row(label, *(f"{fn(r[k] for r in rows):.3f}" for k in ("build_s", "step_s", "total_s")))
    console.print(table)
    slowest = max(rows, key=lambda r: r["total_s"])
    console.print(f"slowest: {slowest['arch']} ({slowest['total_s']:.3f} s)")


@bench_app.command("pruning")
def bench_pruning_cmd(
    curves: Path = typer.Option(Path("spaces/recorded/small-noprune.json"), help="Recorded curves (JSON)"),
    study: Optional[str] = typer.Option(None, help="Read the curves from this study (run with --no-prune) instead"),
    storage: Optional[str] = typer.Option(None, help="Storage of --study (default: sqlite:///runs/<study>/study.db)"),
    export: Optional[Path] = typer.Option(None, help="With --study: write its curves to this JSON file"),
    seeds: int = typer.Option(1, help="With --study: first re-train every trial so each has this many paired seeds "
                                      "(stored in the study; an interrupted recording resumes)"),
    eta: int = typer.Option(3, help="Reduction factor of both pruners"),
) -> None:
    """Replay learning curves recorded without pruning through: no pruning, our multi-objective
    successive halving (with and, where the recording has the baseline's seeds, without regard to
    noise), and Optuna's single-objective successive halving on accuracy; print epochs spent against
    the hypervolume of the resulting front, and how many members of the confirmed front (mean
    accuracy over the recorded seeds) each method stopped."""
    from . import bench
    from .search import default_storage

    if eta < 2:
        raise BadOption("--eta", eta, "an integer >= 2")
    if not 1 <= seeds <= 20:
        raise BadOption("--seeds", seeds, "an integer from 1 to 20")
    if study is not None:
        from . import report
        from .report import load_study

        st = load_study(study, storage or default_storage(study))
        if seeds > 1:
            with console.status("recording") as status:
                bench.record_seeds(st, seeds, report.runs_root(st, storage), lambda t: status.update(escape(t)))
        rows, meta = bench.recorded_from_study(st)
        if export is not None:
            bench.export_recorded(rows, meta, export)
            console.print(f"written: {export} ({len(rows)} trials)")
        source = f"study {study}"
    else:
        rows, source = bench.load_recorded(curves), str(curves)
    if len(rows) < 2:
        raise BadOption("--study" if study else "--curves", study or str(curves), "at least 2 complete trials")
    results, ref = bench.bench_pruning(rows, eta)
    table = Table(title=f"Pruning replayed on {len(rows)} recorded trials ({source}); hypervolume reference "
                        f"(accuracy 0, latency {ref[1]:.4g} ms)")
    for col in ("method", "completed", "epochs", "epochs saved", "hypervolume", "of unpruned", "front size",
                "confirmed front stopped"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in results:
        stopped = "-" if r["confirmed_stopped"] is None else f"{r['confirmed_stopped']} of {r['confirmed_front']}"
        table.add_row(r["method"], str(r["completed"]), str(r["epochs"]), f"{r['epochs_saved_pct']:.1f}%",
                      f"{r['hypervolume']:.5f}", f"{r['hypervolume_pct']:.1f}%", str(r["front"]), stopped)
    console.print(table)
    if all(r["confirmed_stopped"] is None for r in results):
        console.print("the recording has one seed per architecture: no confirmed front to check against "
                      "(record with --study ... --seeds 3)")


@bench_app.command("latency")
def bench_latency_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file (its latency target is used)"),
    arch: Optional[list[str]] = typer.Option(None, "--arch", help="Architecture string; repeat for several, "
                                                                  "fastest first (the space's baseline is always "
                                                                  "measured, first): the expected order"),
    times: int = typer.Option(10, help="Re-measurements of every architecture by each method"),
    load: int = typer.Option(0, help="Also measure with this many busy processes (one-thread training loops) beside"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for latency.json"),
) -> None:
    """How far latency measurements agree: today's absolute method (each architecture timed alone,
    quiet blocks) beside the paired ratio the search uses (every architecture timed interleaved with
    the plain backbone), over repeated re-measurements, idle and with --load busy processes."""
    import json

    from . import bench
    from .space import Architecture, load_space

    if times < 2:
        raise BadOption("--times", times, "an integer >= 2")
    if not 0 <= load <= 64:
        raise BadOption("--load", load, "an integer from 0 to 64 (busy processes)")
    s = load_space(space)
    archs = [s.baseline()] + [Architecture.parse(a) for a in arch or [] if Architecture.parse(a) != s.baseline()]
    with console.status("timing") as status:
        result = bench.bench_latency(s, archs, times, load, progress=lambda t: status.update(escape(t)))
    console.print(f"target {result['target']}; reference (plain backbone) quiet latency {result['reference_ms']:.3f} ms; "
                  f"{times} re-measurements per method and phase; spread = IQR / median over them")
    for p in result["phases"]:
        table = Table(title=f"{p['phase']}: order right in {p['order_right_absolute']}/{times} (absolute) and "
                            f"{p['order_right_ratio']}/{times} (paired ratio) re-measurements")
        for col in ("architecture", "absolute ms", "spread", "ratio", "spread", "paired ms"):
            table.add_column(col, overflow="fold")
        for r in p["rows"]:
            table.add_row(escape(r["architecture"]), f"{r['absolute_ms']:.3f}", f"{r['absolute_iqr_pct']:.1f}%",
                          f"{r['ratio']:.4f}", f"{r['ratio_iqr_pct']:.2f}%", f"{r['paired_ms']:.3f}")
        console.print(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps({**result, **bench.environment(torch_device())}, indent=1))
    console.print(f"written: {out / 'latency.json'}")


@bench_app.command("workers")
def bench_workers_cmd(
    space: Path = typer.Option(..., "--space", help="Search-space YAML file"),
    trials: int = typer.Option(12, help="Finished trials per run"),
    workers: str = typer.Option("1,2", help="Worker counts to compare, comma-separated; the first is the reference"),
    threads: Optional[int] = typer.Option(None, help="Threads per worker (default: CPU cores / workers)"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for the studies and workers.json / workers.csv"),
) -> None:
    """Search throughput with 1, 2, ... worker processes: the same space and trial count in a fresh study
    each (random sampler, no pruning), the real command, wall time from start to finish."""
    from . import bench
    from .space import load_space

    bench.check_positive("--trials", trials)
    counts = [c.strip() for c in workers.split(",") if c.strip()]
    if not counts or not all(c.isdigit() and int(c) >= 1 for c in counts):
        raise BadOption("--workers", workers, "positive integers separated by commas, e.g. 1,2,4")
    load_space(space)  # a bad space is reported here, not from inside a worker
    table = Table(title=f"nas search throughput, {trials} trials, {space}")
    for col in ("workers", "threads each", "wall s", "trials/min", "trained/min", "epochs/min", "epochs/min ratio"):
        table.add_column(col)
    rows = bench.bench_workers(space, trials, [int(c) for c in counts], threads, out,
                               on_row=lambda r: console.print(f"{r['workers']} worker(s): {r['wall_s']} s"))
    for r in rows:
        table.add_row(str(r["workers"]), str(r["threads_per_worker"]), f"{r['wall_s']:.1f}", f"{r['trials_per_min']:.2f}",
                      f"{r['trained_per_min']:.2f}", f"{r['epochs_per_min']:.2f}", f"{r['epochs_per_min_ratio']:.2f}")
    console.print(table)
    json_path, csv_path = bench.write_results(rows, {"space": str(space), "trials": trials,
                                                     **bench.environment(torch_device())}, out, "workers")
    console.print(f"written: {json_path}  {csv_path}")


def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@bench_app.command("modules")
def bench_modules_cmd(
    device: str = typer.Option("cpu", help="cpu, cuda or cuda:N"),
    batch: int = typer.Option(8, help="Batch size B"),
    channels: int = typer.Option(256, help="Channels C"),
    size: int = typer.Option(28, help="Spatial size H = W"),
    repeats: int = typer.Option(20, help="Timed runs per measurement (round-robin with timm's version)"),
    warmup: int = typer.Option(3, help="Untimed runs before timing"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice)"),
    only: Optional[str] = typer.Option(None, help="Comma-separated mechanism names, e.g. se,eca,cbam"),
    out: Path = typer.Option(Path("runs/bench"), help="Folder for modules.json and modules.csv"),
) -> None:
    """Time forward and forward+backward of every mechanism; beside it timm's version where timm ships
    one (SE, ECA, CBAM, Coordinate Attention, Selective Kernel) and the ratio ours/timm."""
    import torch

    from . import bench
    from .cost import resolve_device

    for opt, value in (("--batch", batch), ("--channels", channels), ("--size", size), ("--repeats", repeats)):
        bench.check_positive(opt, value)
    if warmup < 0:
        raise BadOption("--warmup", warmup, "an integer >= 0")
    if threads is not None:
        torch.set_num_threads(bench.check_positive("--threads", threads))
    dev = resolve_device(device)
    names = [n.strip() for n in only.split(",") if n.strip()] if only else None
    for n in names or []:
        if n.lower() not in {a.lower() for a in attention.known_names()}:
            raise BadOption("--only", n, f"comma-separated mechanism names: {', '.join(attention.MECHANISMS)}")
    with console.status("timing") as status:
        rows = bench.bench_modules(device=dev, batch=batch, channels=channels, size=size, repeats=repeats,
                                   warmup=warmup, only=names, progress=lambda n: status.update(f"timing {n}"))
    meta = {"command": "nas bench modules", "shape": [batch, channels, size, size], "repeats": repeats,
            "warmup": warmup, **bench.environment(dev)}
    table = Table(title=f"Attention modules at ({batch}, {channels}, {size}, {size}) on {dev}, {meta['threads']} "
                        f"threads: median ms of {repeats} (± IQR/median); ratio = ours / timm")
    for col in ("mechanism", "params", "GFLOPs", "fwd", "fwd+bwd", "timm fwd", "timm fwd+bwd", "ratio fwd",
                "ratio f+b"):
        table.add_column(col, justify="left" if col == "mechanism" else "right")
    cell = lambda ms, spread: f"{ms:.2f} ±{spread:.0f}%"  # noqa: E731
    for r in rows:
        if "error" in r:
            table.add_row(r["mechanism"], f"[red]{r['error']}[/red]", *[""] * 7)
            continue
        timm_cols = ["-"] * 4
        if "timm_fwd_ms" in r:
            timm_cols = [cell(r["timm_fwd_ms"], r["timm_fwd_spread"]), cell(r["timm_fb_ms"], r["timm_fb_spread"]),
                         f"{r['fwd_ratio']:.2f}", _ratio(r["fb_ratio"])]
        table.add_row(r["mechanism"], f"{r['params']:,}", f"{r['flops'] / 1e9:.3f}", cell(r["fwd_ms"], r["fwd_spread"]),
                      cell(r["fb_ms"], r["fb_spread"]), *timm_cols)
    console.print(table)
    json_path, csv_path = bench.write_results(rows, meta, out, "modules")
    console.print(f"written: {json_path}  {csv_path}")


def _ratio(value: float) -> str:
    colour = "green" if value <= 1.05 else "red"
    return f"[{colour}]{value:.2f}[/{colour}]"


def main() -> None:
    from . import signals
    from .workers import WorkerFailed

    signals.install()
    try:
        app()
    except (UserError, attention.HyperparameterError, attention.UnknownMechanismError) as e:
        err_console.print(f"[bold red]error:[/bold red] {e}", highlight=False)
        sys.exit(2)
    except (KeyboardInterrupt, signals.Interrupted):
        err_console.print(f"interrupted ({signals.cause()})")
        sys.exit(signals.exit_code())
    except WorkerFailed as e:
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
