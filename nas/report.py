"""``nas report``: the Pareto front as a table, its hypervolume and a plot."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.core.errors import BadOption, UserError
from nas.core.names import replacing, write_text_atomic
from nas.core.pareto import hypervolume
from nas.core.stats import BETTER, TIED, WORSE
from nas.search import confirm as cf
from nas.search.confirm import NOT_PAIRED, Member, Noise
from nas.study.record import TrialInfo, study_attr
from nas.study.studies import front, num_classes_of, space_of

baseline_trial = cf.baseline_trial


def reference_point(study: optuna.Study) -> tuple[float, float]:
    """(accuracy 0, 1.1 x the largest latency of a complete feasible trial)."""
    lats = [t.values[1] for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not lats:
        raise UserError(f"study {study.study_name!r} has no complete trial yet")
    return 0.0, 1.1 * max(lats)


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
    trained = [(t, info) for t in trials if (info := TrialInfo.of(t)).seconds_train_val is not None]
    total = sum((t.datetime_complete - t.datetime_start).total_seconds() for t, _ in trained)
    inside = sum(info.seconds_train_val or 0.0 for _, info in trained)
    epochs = sum(len(info.curve) for _, info in trained)
    return {"wall_s": wall, "epochs": epochs, "overhead_pct": 100 * (1 - inside / total) if total else None}


# ----------------------------------------------------------------------------------------------------
# The front as the report shows it: every figure with its uncertainty
# ----------------------------------------------------------------------------------------------------


def _member(t: optuna.trial.FrozenTrial) -> Member:
    info = TrialInfo.of(t)
    lat = info.latency_ms if info.latency_ms is not None else float(t.values[1])
    lo, hi = info.latency_ci_ms or (lat, lat)
    return Member(
        t.number,
        info.arch or "?",
        float(t.values[0]),
        lat,
        lo,
        hi,
        info.params or 0,
        info.flops or 0,
        info.baseline,
        second=float(t.values[1]),
    )


def _latency_objective(study: optuna.Study) -> bool:
    return list(study_attr(study, "objectives", list, ["accuracy", "latency"]))[1:] == ["latency"]


def shown_trials(study: optuna.Study, include: Sequence[int] = ()) -> list[optuna.trial.FrozenTrial]:
    """The front's trials, the baseline (every figure is read against it) and the complete trials
    numbered in ``include``, each once."""
    trials = list(front(study))
    base = baseline_trial(study)
    extra = ([base] if base is not None else []) + [get_complete(study, n) for n in include]
    for t in extra:
        if all(t.number != s.number for s in trials):
            trials.append(t)
    return trials


def get_complete(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise BadOption("--include", number, f"a trial number of study {study.study_name!r} (0 to {len(trials) - 1})")
    t = trials[number]
    copy = TrialInfo.of(t).is_copy
    if t.state != TrialState.COMPLETE or copy:
        raise BadOption(
            "--include",
            number,
            f"a complete trial (trial {number} is {t.state.name.lower()}"
            + (", a copy of another" if copy else "")
            + ")",
        )
    return t


def remeasure(study: optuna.Study, members: Sequence[Member], space: Any) -> list[Member]:
    """Every shown architecture and the baseline timed again now, all in one interleaved run against
    the plain backbone, x the study's reference latency: figures that share the machine's state, and
    each member's difference to the baseline from ratios taken in the same rounds."""
    from nas.core.architecture import Architecture
    from nas.core.stats import median_interval
    from nas.measure.cost import LatencyTarget, PairedMeter
    from nas.study.latency import reference_latency_ms

    target = LatencyTarget.from_space(space.latency)
    classes = num_classes_of(study, space)
    reference = space.task.build(space, space.baseline(), classes, init_seed=0)
    meter = PairedMeter(target, reference, space.in_chans)
    ref_ms = reference_latency_ms(study, target, str(space.baseline()), lambda: meter.reference_ms)
    objective = _latency_objective(study)
    ratios = meter.ratios([space.task.build(space, Architecture.parse(m.arch), classes, init_seed=0) for m in members])
    base_i = next((i for i, m in enumerate(members) if m.baseline), None)
    out = []
    for m, r in zip(members, ratios, strict=True):
        lo, hi = r.interval
        diff = None
        if base_i is not None and not m.baseline:
            d = [(x - y) * ref_ms for x, y in zip(r.samples, ratios[base_i].samples, strict=True)]
            import statistics

            dlo, dhi = median_interval(d)
            diff = (statistics.median(d), dlo, dhi)
        out.append(
            replace(
                m,
                latency=r.median * ref_ms,
                latency_low=lo * ref_ms,
                latency_high=hi * ref_ms,
                latency_diff=diff,
                remeasured=True,
                second=r.median * ref_ms if objective else m.second,
            )
        )
    return out


@dataclass(frozen=True)
class Analysis:
    members: list[Member]  # the front's members and the baseline, fastest first
    noise: Noise | None
    confirm: int  # seeds of the confirmation (0: not confirmed)
    seeds: list[int]
    metric: str = "accuracy"  # the quality objective's name (a detector's: mAP50-95)

    @property
    def baseline(self) -> Member | None:
        return next((m for m in self.members if m.baseline), None)

    @property
    def confirmed(self) -> bool:
        """Some member other than the baseline has a paired difference (the baseline's noise-floor
        runs alone confirm nothing)."""
        return any(m.difference is not None for m in self.members if not m.baseline)

    @property
    def used_seeds(self) -> int:
        return max((m.difference.n for m in self.members if m.difference is not None), default=0)

    def headline(self) -> str:
        """The report's first line: the verdict, never stronger than the evidence."""
        if self.baseline is None:
            return "No baseline trial: the differences cannot be judged (a stage of the space has no 'none')."
        others = [m for m in self.members if not m.baseline]
        if not others:
            return "The front holds the baseline alone: no attention placement found that is faster or more accurate."
        if not self.confirmed:
            noise = str(self.noise) if self.noise else "noise not measured"
            return (
                f"Not confirmed: every {self.metric} is one training run ({noise}); no member is called better than "
                "the baseline before 'nas report --confirm 3' re-trains the front from fresh seeds."
            )
        better = [m for m in others if m.verdict == BETTER]
        n, judged = self.used_seeds, sum(1 for m in others if m.difference is not None)
        level = (
            f"paired 95% intervals, Bonferroni-adjusted for {judged} comparisons"
            if judged > 1
            else "paired 95% interval"
        )
        pending = [m.number for m in others if m.difference is None]
        tail = f" Not confirmed yet: trial(s) {', '.join(map(str, pending))}." if pending else ""
        if not better:
            return (
                f"No front member is better than the baseline in {self.metric}: confirmed over {n} fresh seeds, no "
                f"interval of the difference lies above 0 ({level}).{tail}"
            )
        names = ", ".join(f"trial {m.number} ({_points(m.difference)})" for m in better)
        return f"Better than the baseline in {self.metric}, confirmed over {n} fresh seeds ({level}): {names}.{tail}"


def _points(e: Any) -> str:
    if e is None:
        return "-"
    if e.n < 2 or math.isnan(e.half_width):
        return f"{100 * e.mean:+.1f} pts"
    return f"{100 * e.mean:+.1f} ± {100 * e.half_width:.1f} pts"


def analyse(
    study: optuna.Study,
    *,
    confirm: int = 0,
    measure_again: bool = True,
    fit: cf.Fit | None = None,
    status: Callable[[str], None] = lambda s: None,
    include: Sequence[int] = (),
) -> Analysis:
    """The front and the baseline (and the trials in ``include``), re-measured (``measure_again``),
    confirmed from ``confirm`` fresh seeds (training what is missing with ``fit``; runs already
    stored are reused) and judged."""
    space = space_of(study)
    trials = shown_trials(study, include)
    members = [_member(t) for t in trials]
    noise = cf.noise_of(study)
    k = confirm or _stored_confirm(study)
    if confirm and fit is not None:
        cf.run_reruns(study, cf.confirm_jobs(study, [m.arch for m in members], confirm), fit, "confirming the front")
    base = next((m for m in members if m.baseline), None)
    if base is not None:
        members = [
            m
            if m.baseline
            else replace(
                m,
                unconfirmed=cf.unconfirmed_difference(
                    m.search_accuracy, base.search_accuracy, noise, cf.resolution(study)
                ),
            )
            for m in members
        ]
    if measure_again and space is not None:
        status("re-measuring latency of the front and the baseline, interleaved")
        members = remeasure(study, members, space)
    if k:
        members = cf.judge(study, members, k)  # the front recomputed on mean accuracy and latency now
    members.sort(key=lambda m: m.latency)
    metric = (study.metric_names or ["accuracy"])[0]
    return Analysis(members, noise, k, cf.fresh_seeds(study, k) if k else [], metric)


def _stored_confirm(study: optuna.Study) -> int:
    """The confirmation the search ran (its space's ``training.confirm``; 0: none)."""
    space = space_of(study)
    return space.training.confirm if space is not None else 0


def fitter(study: optuna.Study, status: Callable[[str], None] = lambda s: None, root: Path = Path("runs")) -> cf.Fit:
    """Re-runs for ``nas report --confirm``: the study's space, data and seed, as its trials trained."""
    space = space_of(study)
    if space is None:
        raise UserError(f"study {study.study_name!r} does not record its search space; it cannot be re-trained")
    data = space.task.data(space, root, cf.study_seed(study))
    epochs = study_attr(study, "epochs", int, space.training.epochs)  # as the trials trained
    return cf.make_fit(space, data, num_classes_of(study, space), epochs, root / study.study_name, status)


def verdict_text(m: Member) -> str:
    if m.baseline:
        return "baseline"
    if m.verdict:
        return m.verdict
    u = m.unconfirmed
    if u is None:
        return "not confirmed; noise not measured"
    if u.low <= 0 <= u.high:
        return "tie: within noise (not confirmed)"
    return ("ahead" if u.low > 0 else "behind") + " beyond noise, not confirmed"


def count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


_SHORT_VERDICT = {
    BETTER: "better",
    TIED: "tied",
    WORSE: "worse",
    NOT_PAIRED: "not paired",
    "tie: within noise (not confirmed)": "tie? (1 run)",
    "ahead beyond noise, not confirmed": "ahead? (1 run)",
    "behind beyond noise, not confirmed": "behind? (1 run)",
    "not confirmed; noise not measured": "? (1 run)",
}


def table_rows(a: Analysis, names: Sequence[str], short: bool = False) -> tuple[list[str], list[list[str]]]:
    """Columns and cells of the report's table (terminal and HTML alike). Line breaks ("\n") split
    headers and cells where a narrow terminal may break them; ``short`` (the terminal) gives one-word
    verdicts and leaves out params and MFLOPs, which the lines below the table carry with the verdict in
    full and the whole architecture."""
    cols = [
        "trial",
        f"{names[0]}\nsearch run",
        f"{names[0]}\nconfirmed\n(95%)",
        f"Δ {names[0]}\nvs baseline\n(paired)",
        "verdict",
        f"{names[1]}\n(95%)",
        f"Δ {names[1]}\n(95%)",
        "params",
        "MFLOPs",
    ][: 7 if short else None]
    rows = []
    for m in a.members:
        conf = (
            "-"
            if m.accuracy is None
            else (
                f"{m.accuracy.mean:.4f}\n± {m.accuracy.half_width:.4f}\n(n={m.accuracy.n})"
                if m.accuracy.n > 1
                else f"{m.accuracy.mean:.4f}\n(n=1)"
            )
        )
        diff = "-" if m.baseline else _points(m.difference if m.difference is not None else m.unconfirmed)
        if not m.baseline and m.difference is None and m.unconfirmed is not None:
            diff += "\n(1 run)"
        lat = f"{m.latency:.3f}\n[{m.latency_low:.3f},\n{m.latency_high:.3f}]" + ("" if m.remeasured else "\nstored")
        dl = (
            "-"
            if m.latency_diff is None
            else f"{m.latency_diff[0]:+.3f}\n[{m.latency_diff[1]:+.3f},\n{m.latency_diff[2]:+.3f}]"
        )
        verdict = verdict_text(m)
        verdict = _SHORT_VERDICT.get(verdict, verdict) if short else verdict
        row = [
            str(m.number),
            f"{m.search_accuracy:.4f}",
            conf,
            diff,
            verdict + ("" if m.on_front else "\n(off front)"),
            lat,
            dl,
            count(m.params),
            f"{m.flops / 1e6:.1f}",
        ]
        rows.append(row[: len(cols)])
    return cols, rows


@dataclass(frozen=True)
class Point:
    """A front member or the baseline as drawn: where, its intervals (as distances below and above), and
    which group it belongs to (``front``, ``off`` the confirmed front, or ``baseline``)."""

    member: Member
    x: float
    y: float
    y_low: float
    y_high: float
    x_low: float
    x_high: float
    group: str


@dataclass(frozen=True)
class PlotData:
    """What the report's plot shows, decided once for the PNG and the interactive page: pruned trials
    at their last rung, the other complete trials (one run each), the front and the baseline with
    their intervals, and the front's line."""

    names: tuple[str, str]
    pruned: list[TrialInfo]
    complete: list[TrialInfo]
    points: list[Point]
    line: list[tuple[float, float]]
    what: str  # how the front's figures were obtained, for titles and legends
    remeasured: bool


def _x(info: TrialInfo) -> float:
    """A trial's place on the x axis: its latency (the second objective when latency is not one)."""
    return info.latency_ms if info.latency_ms is not None else float(info.values[1]) if info.values else math.nan


def plot_data(study: optuna.Study, a: Analysis) -> PlotData:
    names = study.metric_names or ["accuracy", "latency_ms"]
    infos = [i for i in map(TrialInfo.of, study.get_trials(deepcopy=False)) if not i.is_copy]
    shown_numbers = {m.number for m in a.members}
    pruned = [i for i in infos if i.state == TrialState.PRUNED and i.curve and i.latency_ms is not None]
    complete = [i for i in infos if i.state == TrialState.COMPLETE and i.number not in shown_numbers]
    sd = a.noise.final if a.noise else 0.0
    points = []
    for m in a.members:
        y = m.shown_accuracy if a.confirmed else m.search_accuracy
        ci = a.confirmed and m.accuracy is not None and m.accuracy.n > 1
        low, high = (y - m.accuracy.low, m.accuracy.high - y) if ci else (sd, sd)
        group = "baseline" if m.baseline else ("front" if m.on_front else "off")
        points.append(Point(m, m.latency, y, low, high, m.latency - m.latency_low, m.latency_high - m.latency, group))
    line = sorted((p.x, p.y) for p in points if p.member.on_front)
    what = (
        f"confirmed over {len(a.seeds)} seeds, 95% intervals"
        if a.confirmed
        else (
            f"one run each; bars: ±1 noise sd ({100 * sd:.1f} pts)" if a.noise else "one run each; noise not measured"
        )
    )
    return PlotData((names[0], names[1]), pruned, complete, points, line, what, any(m.remeasured for m in a.members))


COLOURS = {"front": "#1f77b4", "off": "#7f7f7f", "baseline": "#d62728"}
LABELS = {"front": "front", "off": "shown, off the confirmed front", "baseline": "baseline (no attention)"}


def _xlabel(d: PlotData) -> str:
    return f"{d.names[1]} (re-measured, 95% interval)" if d.remeasured else d.names[1]


def plot(study: optuna.Study, a: Analysis, path: Path) -> Path:
    """``plot_data`` as a PNG: pruned trials faint at their last rung, the other complete trials grey,
    the front and the baseline with error bars (accuracy: confirmed 95% interval, else ±1 noise sd of
    one run; latency: the ratio's 95% interval) and trial numbers beside the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = plot_data(study, a)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    if d.pruned:
        ax.scatter(
            [_x(i) for i in d.pruned],
            [i.curve[-1] for i in d.pruned],
            s=10,
            c="#dddddd",
            zorder=1,
            label=f"pruned ({d.names[0]} at its last rung)",
        )
    if d.complete:
        ax.scatter(
            [_x(i) for i in d.complete],
            [i.curve[-1] if i.curve else i.values[0] for i in d.complete],
            s=16,
            c="#999999",
            zorder=2,
            label="complete trials (stored, one run)",
        )
    for p in d.points:
        ax.errorbar(
            [p.x],
            [p.y],
            xerr=[[p.x_low], [p.x_high]],
            yerr=[[p.y_low], [p.y_high]],
            fmt="*" if p.group == "baseline" else "o",
            ms=12 if p.group == "baseline" else 6,
            c=COLOURS[p.group],
            ecolor=COLOURS[p.group],
            elinewidth=1,
            capsize=3,
            zorder=4,
            mfc="none" if p.group == "off" else COLOURS[p.group],
        )
        ax.annotate(f"{p.member.number}", (p.x, p.y), textcoords="offset points", xytext=(6, 4), fontsize=8, zorder=5)
    if d.line:
        ax.step([x for x, _ in d.line], [y for _, y in d.line], where="post", c=COLOURS["front"], lw=1, zorder=3)
    for group in ("front", "off", "baseline"):
        if any(p.group == group for p in d.points):
            marker = "*" if group == "baseline" else "o"
            ax.plot(
                [],
                [],
                marker,
                c=COLOURS[group],
                ms=10 if group == "baseline" else 6,
                label=LABELS[group],
                mfc="none" if group == "off" else COLOURS[group],
            )
    ax.set_xlabel(_xlabel(d))
    ax.set_ylabel(d.names[0])
    ax.set_title(
        f"{study.study_name}: {len(d.complete) + len(d.points)} complete, {len(d.pruned)} pruned trials; "
        f"front {d.what}",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with replacing(path) as tmp:  # an interrupted command leaves the old plot or the new one
        fig.savefig(tmp)
    plt.close(fig)
    return path


def _hover(lines: Sequence[str]) -> str:
    """Hover text for a point: study text escaped (Plotly renders a little HTML), lines joined."""
    return "<br>".join(html.escape(line) for line in lines)


def _trial_hover(info: TrialInfo, accuracy: float, names: Sequence[str]) -> str:
    return _hover(
        [
            f"trial {info.number}: {info.arch}",
            f"{names[0]} {accuracy:.4f}" + ("" if info.state == TrialState.COMPLETE else " (at its last rung)"),
            f"latency {info.latency_ms:.3f} ms" if info.latency_ms is not None else "latency -",
            f"params {count(info.params or 0)}, {(info.flops or 0) / 1e6:.1f} MFLOPs",
            f"stopped: {info.stop_reason}",
        ]
    )


def _member_hover(m: Member, names: Sequence[str]) -> str:
    conf = (
        f"{names[0]} {m.accuracy.mean:.4f} ± {m.accuracy.half_width:.4f} (n={m.accuracy.n}, confirmed)"
        if m.accuracy is not None and m.accuracy.n > 1
        else f"{names[0]} {m.search_accuracy:.4f} (search run)"
    )
    lines = [
        f"trial {m.number}: {m.arch}",
        "baseline (no attention)" if m.baseline else verdict_text(m),
        conf,
        f"latency {m.latency:.3f} ms [{m.latency_low:.3f}, {m.latency_high:.3f}]"
        + (" re-measured" if m.remeasured else " stored"),
    ]
    if m.latency_diff is not None:
        lines.append(f"Δ latency {m.latency_diff[0]:+.3f} ms [{m.latency_diff[1]:+.3f}, {m.latency_diff[2]:+.3f}]")
    lines.append(f"params {count(m.params)}, {m.flops / 1e6:.1f} MFLOPs")
    return _hover(lines)


def figure(study: optuna.Study, a: Analysis) -> Any:
    """``plot_data`` as a Plotly figure, each point's hover naming its trial, architecture, accuracy,
    latency, params, FLOPs and why it stopped (or its verdict)."""
    import plotly.graph_objects as go

    d = plot_data(study, a)
    names = d.names
    fig = go.Figure()
    for label, group, colour, size in (
        (f"pruned ({d.names[0]} at its last rung)", d.pruned, "#cccccc", 6),
        ("complete trials (stored, one run)", d.complete, "#888888", 8),
    ):
        ys = [i.curve[-1] if i.curve else i.values[0] for i in group]
        fig.add_trace(
            go.Scatter(
                x=[_x(i) for i in group],
                y=ys,
                mode="markers",
                name=label,
                marker={"color": colour, "size": size},
                text=[_trial_hover(i, y, names) for i, y in zip(group, ys, strict=True)],
                hoverinfo="text",
            )
        )
    for group, symbol in (("front", "circle"), ("off", "circle-open"), ("baseline", "star")):
        points = [p for p in d.points if p.group == group]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.x for p in points],
                y=[p.y for p in points],
                mode="markers+text",
                name=LABELS[group] + (f" ({d.what})" if group == "front" else ""),
                marker={"color": COLOURS[group], "size": 14 if group == "baseline" else 10, "symbol": symbol},
                error_y={
                    "type": "data",
                    "array": [p.y_high for p in points],
                    "arrayminus": [p.y_low for p in points],
                    "thickness": 1,
                },
                error_x={
                    "type": "data",
                    "array": [p.x_high for p in points],
                    "arrayminus": [p.x_low for p in points],
                    "thickness": 1,
                },
                text=[str(p.member.number) for p in points],
                textposition="top right",
                hovertext=[_member_hover(p.member, names) for p in points],
                hoverinfo="text",
            )
        )
    if d.line:
        fig.add_trace(
            go.Scatter(
                x=[x for x, _ in d.line],
                y=[y for _, y in d.line],
                mode="lines",
                line={"shape": "hv", "color": COLOURS["front"], "width": 1},
                name="front",
                hoverinfo="skip",
                showlegend=False,
            )
        )
    fig.update_layout(
        xaxis_title=_xlabel(d),
        yaxis_title=names[0],
        hovermode="closest",
        template="plotly_white",
        height=560,
        legend={"orientation": "h", "y": -0.18},
        margin={"t": 30},
    )
    return fig


def write_html(
    study: optuna.Study, a: Analysis, names: Sequence[str], hv: float, ref: tuple[float, float], path: Path
) -> Path:
    """``front.html``: one self-contained page (Plotly's script inside, nothing fetched) with the
    verdict, the noise floor, the interactive plot (``figure``), the table the terminal shows with
    every column, and each shown architecture in full."""
    import plotly.io as pio

    plot = pio.to_html(figure(study, a), include_plotlyjs=True, full_html=False, div_id="front")
    cols, rows = table_rows(a, names)
    cols = [*cols, "architecture"]
    rows = [[*r, m.arch] for r, m in zip(rows, a.members, strict=True)]

    def cell(tag: str, text: str) -> str:
        return f"<{tag}>{html.escape(text).replace(chr(10), '<br>')}</{tag}>"

    head = "".join(cell("th", c) for c in cols)
    body = "".join("<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in rows)
    noise = html.escape(str(a.noise) if a.noise else "noise: not measured")
    name = html.escape(study.study_name)
    write_text_atomic(
        path,
        f"<!doctype html><html><head><meta charset='utf-8'><title>{name}: Pareto front</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}td:last-child{font-family:monospace;"
        "word-break:break-all}</style></head><body>"
        f"<h1>{name}</h1><p><b>{html.escape(a.headline())}</b></p><p>{noise}</p>{plot}"
        f"<p>hypervolume {hv:.5f} (reference: {html.escape(names[0])} {ref[0]}, {html.escape(names[1])} "
        f"{ref[1]:.4g}); hover a point for its trial, architecture, figures and why it stopped</p>"
        f"<table><tr>{head}</tr>{body}</table></body></html>",
    )
    return path
