"""``nas report``: the Pareto front as a table, its hypervolume and a plot."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from .errors import BadOption, UserError
from .pruning import hypervolume
from .search import front


@dataclass
class FrontRow:
    number: int
    arch: str
    accuracy: float
    latency: float
    spread: float
    params: int
    flops: int
    d_accuracy: float | None
    d_latency: float | None
    remeasured: float | None = None


def load_study(study_name: str | None, storage: str) -> optuna.Study:
    from .storage import open_storage

    try:
        store = open_storage(storage)
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    except Exception as e:
        raise UserError(f"cannot open storage {storage!r}: {e.__class__.__name__}: {e}") from None
    if study_name is None:
        if len(names) != 1:
            raise UserError(f"{storage} holds {len(names)} studies ({', '.join(names) or 'none'}); name one with --study")
        study_name = names[0]
    if study_name not in names:
        raise UserError(f"no study {study_name!r} in {storage}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=store)


def open_study(study_name: str | None, storage: str | None) -> optuna.Study:
    """The study named on the command line: in ``storage``, or in its default SQLite file under runs/."""
    from .search import default_storage

    if storage is None:
        if study_name is None:
            raise BadOption("--study", None, "a study name (or give --storage)")
        storage = default_storage(study_name)
        path = storage[len("sqlite:///"):]
        if not Path(path).exists():
            raise BadOption("--study", study_name, f"no study database at {path}; run nas search first")
    return load_study(study_name, storage)


def space_of(study: optuna.Study) -> Any:
    """The SearchSpace the study was run with (its YAML text is stored in the study), or None."""
    import tempfile

    from .space import load_space

    text = study.user_attrs.get("space")
    if not text:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(text)
        return load_space(path)


def num_classes_of(study: optuna.Study, space: Any) -> int:
    """Classes of the study's models: as the search found them in the data, else the space's, else 10."""
    return int(study.user_attrs.get("num_classes") or (space.num_classes if space else None) or 10)


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    return next((t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                 if t.user_attrs.get("baseline")), None)


def reference_point(study: optuna.Study) -> tuple[float, float]:
    """(accuracy 0, 1.1 x the largest latency of a complete feasible trial)."""
    lats = [t.values[1] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not lats:
        raise UserError(f"study {study.study_name!r} has no complete trial yet")
    return 0.0, 1.1 * max(lats)


def front_rows(study: optuna.Study, remeasure: Any = None) -> list[FrontRow]:
    """``remeasure``: a callable(arch string) -> latency ms, to re-measure the front at report time."""
    base = baseline_trial(study)
    rows = []
    for t in front(study):
        a = t.user_attrs
        rows.append(FrontRow(
            t.number, a.get("arch", "?"), t.values[0], t.values[1], a.get("latency_spread_pct", 0.0),
            a.get("params", 0), a.get("flops", 0),
            t.values[0] - base.values[0] if base else None, t.values[1] - base.values[1] if base else None,
            remeasure(a["arch"]) if remeasure and "arch" in a else None))
    return rows


def plot(study: optuna.Study, path: Path) -> Path:
    """Accuracy against the second objective: all complete trials dimmed, the front highlighted, the
    baseline marked. Writes PNG and an HTML page around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = study.metric_names or ["accuracy", "latency_ms"]
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = front(study)
    base = baseline_trial(study)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([t.values[1] for t in trials], [t.values[0] for t in trials], s=18, c="#bbbbbb", label="trials")
    xs, ys = [t.values[1] for t in best], [t.values[0] for t in best]
    ax.step(xs, ys, where="post", c="#1f77b4", lw=1)
    ax.scatter(xs, ys, s=40, c="#1f77b4", label="Pareto front", zorder=3)
    if base:
        ax.scatter([base.values[1]], [base.values[0]], marker="*", s=180, c="#d62728", label="baseline (no attention)",
                   zorder=4)
    ax.set_xlabel(names[1])
    ax.set_ylabel(names[0])
    ax.set_title(f"{study.study_name}: {len(trials)} complete trials")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_html(study: optuna.Study, rows: list[FrontRow], png: Path, hv: float, ref: tuple[float, float],
               path: Path) -> Path:
    img = base64.b64encode(png.read_bytes()).decode()
    cells = "".join(
        f"<tr><td>{r.number}</td><td><code>{html.escape(r.arch)}</code></td><td>{r.accuracy:.4f}</td>"
        f"<td>{r.latency:.3f}</td><td>{r.params:,}</td><td>{r.flops / 1e6:.1f}</td></tr>" for r in rows)
    path.write_text(
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(study.study_name)}</title>"
        f"<h1>{html.escape(study.study_name)}</h1><img src='data:image/png;base64,{img}'>"
        f"<p>hypervolume {hv:.5f} (reference: accuracy {ref[0]}, latency {ref[1]:.3f} ms)</p>"
        "<table border=1 cellpadding=4><tr><th>trial</th><th>architecture</th><th>accuracy</th><th>latency ms</th>"
        f"<th>params</th><th>MFLOPs</th></tr>{cells}</table>")
    return path


def summary(study: optuna.Study) -> dict[str, Any]:
    ref = reference_point(study)
    pts = [(t.values[0], t.values[1]) for t in front(study)]
    return {"reference": ref, "hypervolume": hypervolume(pts, ref), **timing_summary(study)}


def timing_summary(study: optuna.Study) -> dict[str, Any]:
    """Wall time from the first trial's start to the last one's end; epochs trained; and the per-trial
    overhead: the share of trained trials' time spent outside training and validation batches (model
    build, latency, Trainer setup, storage writes), pooled over trials."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return {"wall_s": 0.0, "epochs": 0, "overhead_pct": None}
    wall = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    trained = [t for t in trials if "seconds_train_val" in t.user_attrs]
    total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trained)
    inside = sum(t.user_attrs["seconds_train_val"] for t in trained)
    epochs = sum(len(t.user_attrs.get("val_acc_curve", [])) for t in trained)
    return {"wall_s": wall, "epochs": epochs, "overhead_pct": 100 * (1 - inside / total) if total else None}


def remeasurer(study: optuna.Study) -> Any:
    """A function arch string -> latency re-measured now on the study's latency target (or None when
    the study does not record its space)."""
    from .cost import LatencyMeter, LatencyTarget
    from .model import build
    from .space import Architecture

    space = space_of(study)
    if space is None:
        return None
    meter = LatencyMeter(LatencyTarget.from_space(space.latency))
    classes = num_classes_of(study, space)

    def run(arch: str) -> float:
        return meter.measure(build(Architecture.parse(arch), classes, space.in_chans), space.in_chans).ms

    return run
