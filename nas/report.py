"""``nas report``: the front as ``nas.study.analysis`` judges it (after training the confirmation runs it
is asked for), as a table, its hypervolume and a plot (PNG and a self-contained HTML page)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from nas import search
from nas.core.errors import BadOption, UserError
from nas.core.names import replacing, write_text_atomic
from nas.core.stats import BETTER, EQUIVALENT, INCONCLUSIVE, WORSE
from nas.study import analysis
from nas.study import confirmation as cf
from nas.study.analysis import Analysis, points_text, shown_trials, summary, verdict_text
from nas.study.confirmation import NOT_PAIRED, Member
from nas.study.record import TrialInfo, study_attr
from nas.study.studies import num_classes_of, space_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.text import Text

__all__ = [
    "Report",
    "analyse",
    "closing_lines",
    "count",
    "figure",
    "fitter",
    "make",
    "member_lines",
    "plot",
    "summary",
    "table_rows",
    "verdict_text",
    "write_html",
]


@dataclass(frozen=True)
class Report:
    """What ``nas report`` shows: the study, its analysis, the summary figures, the objectives' names and
    the plot's two files."""

    study: optuna.Study
    analysis: Analysis
    info: dict[str, Any]
    names: list[str]
    png: Path
    html: Path


def make(
    study_name: str | None,
    storage: str | None,
    out: Path | None,
    *,
    remeasure: bool = True,
    confirm: int = 0,
    include: str | None = None,
    force: bool = False,
    status: Callable[[str], None] = lambda s: None,
) -> Report:
    """``nas report``: the options checked before any work, the confirmation runs asked for trained, the
    front analysed and drawn (front.png, front.html in ``out``, default runs/<study>/report)."""
    from nas.core.config import confirm_allowed
    from nas.core.names import check_out, folder_of
    from nas.study import studies

    allowed = confirm_allowed(confirm)
    if allowed:
        raise BadOption("--confirm", confirm, allowed)
    numbers = trial_numbers(include, "--include")
    st = studies.open_existing(study_name, storage)
    space = space_of(st)
    if confirm:
        cf.race_of(st, space.training if space is not None else None, confirm)  # a ceiling off its batch: refused now
    folder = out or folder_of(Path("runs"), st.study_name) / "report"  # checked before any work
    check_out(folder, force=force, ours=lambda f: {p.name for p in f.iterdir()} <= {"front.png", "front.html"})
    fit = fitter(st, status, studies.runs_root(st, storage)) if confirm else None
    a = analyse(st, confirm=confirm, measure_again=remeasure, fit=fit, status=status, include=numbers)
    info = summary(st)
    names = st.metric_names or ["accuracy", "latency_ms"]
    png = plot(st, a, folder / "front.png")
    html = write_html(st, a, names, info["hypervolume"], info["reference"], folder / "front.html")
    return Report(st, a, info, names, png, html)


def trial_numbers(text: str | None, option: str) -> list[int]:
    """``12,15`` as [12, 15]; a BadOption naming ``option`` otherwise."""
    parts = [p.strip() for p in (text or "").split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise BadOption(option, text, "trial numbers separated by commas, e.g. 12,15")
    return [int(p) for p in parts]


def member_lines(a: Analysis) -> list[str]:
    """One line per shown architecture, in full: its trial, verdict, size and the whole string; then each
    of their re-runs that failed, with why (the next nas report --confirm or resumed search tries again)."""
    lines = [
        f"trial {m.number}, {'baseline' if m.baseline else verdict_text(m)}, {count(m.params)} params, "
        f"{m.flops / 1e6:.1f} MFLOPs: {m.arch}"
        for m in a.members
    ]
    return lines + [
        f"trial {number}: its re-run from seed {seed} failed ({why}); not counted, and tried again by the next "
        "nas report --confirm or resumed search"
        for number, _, seed, why in a.failed
    ]


def closing_lines(rep: Report) -> list[str]:
    """What the latency figures mean, the hypervolume, and the search's cost."""
    from nas.study.studies import count_states

    st, info, names = rep.study, rep.info, rep.names
    lines = []
    ref_ms = study_attr(st, "latency_reference", dict, {}).get("ms")
    if ref_ms:
        lines.append(
            f"latency = ratio to the plain backbone timed interleaved with it x its quiet latency "
            f"{ref_ms:.3f} ms on this target; intervals: 95% of the median ratio"
        )
    lines.append(
        f"hypervolume {info['hypervolume']:.5f} against the reference point "
        f"({names[0]} {info['reference'][0]}, {names[1]} {info['reference'][1]:.4g}) "
        f"= (0, 1.1 x the largest {names[1]} of a complete trial)"
    )
    counts = count_states(st)
    evaluated = counts["complete"] + counts["pruned"] + counts["infeasible"]
    if info["overhead_pct"] is not None:
        copies = (
            f" (and {counts['copies']} proposal(s) of evaluated ones, recorded as copies)" if counts["copies"] else ""
        )
        lines.append(
            f"{evaluated} architectures evaluated{copies} in {info['wall_s']:.0f} s, {info['epochs']} epochs trained; "
            f"overhead (time outside training and validation batches): {info['overhead_pct']:.1f}%"
        )
    if info["slow"]:
        lines.append(analysis.slow_line(info["slow"]))
    return lines


def analyse(
    study: optuna.Study,
    *,
    confirm: int = 0,
    measure_again: bool = True,
    fit: search.Fit | None = None,
    status: Callable[[str], None] = lambda s: None,
    include: Sequence[int] = (),
) -> Analysis:
    """``nas.study.analysis.analyse``, after training with ``fit`` the confirmation race of the shown
    members up to ``confirm`` fresh seeds (runs already stored are reused; an earlier race goes on from
    where it stood, its looks counted)."""
    if confirm and fit is not None:
        space = space_of(study)
        race = cf.race_of(study, space.training if space is not None else None, confirm)
        if race is not None:
            archs = [TrialInfo.of(t).arch for t in shown_trials(study, include)]
            search.run_race(study, archs, race, fit)
    return analysis.analyse(study, confirm=confirm, measure_again=measure_again, status=status, include=include)


def fitter(
    study: optuna.Study, status: Callable[[str], None] = lambda s: None, root: Path = Path("runs")
) -> search.Fit:
    """Re-runs for ``nas report --confirm``: the study's space, data, seed and starting network, as its
    trials trained."""
    space = space_of(study)
    if space is None:
        raise UserError(f"study {study.study_name!r} does not record its search space; it cannot be re-trained")
    data = space.task.data(space, root, cf.study_seed(study))
    bounds = space.training.schema["epochs"].bounds
    epochs = study_attr(study, "epochs", int, space.training.epochs, bounds)  # as the trials trained
    from nas.study.start import study_start

    run_dir = root / study.study_name
    start = study_start(study, space.training.warm, run_dir)
    return search.make_fit(space, data, num_classes_of(study, space), epochs, run_dir, status, start=start)


def count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


_SHORT_VERDICT = {
    BETTER: "better",
    WORSE: "worse",
    EQUIVALENT: "equivalent",
    INCONCLUSIVE: "inconclusive",
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
        "latency_ms\n(95%)",  # the table's and the plot's x: latency, whichever the second objective is
        "Δ latency_ms\n(95%)",
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
        diff = "-" if m.baseline else points_text(m.difference if m.difference is not None else m.unconfirmed)
        if not m.baseline and m.difference is None and m.unconfirmed is not None:
            diff += "\n(1 run)"
        elif not m.baseline and m.difference is not None and not math.isnan(m.p_positive):
            diff += f"\nP(>0) {m.p_positive:.2f}"
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
    label: str = ""  # its trial, and where confirmed its verdict (``point_label``)


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


def point_label(m: Member) -> str:
    """What the plot says of a front member or the baseline: its trial, and where confirmed its verdict
    and paired difference to the baseline (in the legend). Its bars are its own interval, which takes in
    the seeds' shared luck, so they overlap the baseline's even where the paired difference is clear."""
    if m.baseline or m.difference is None or not m.verdict:
        return str(m.number)
    return f"{m.number}: {_SHORT_VERDICT.get(m.verdict, m.verdict)} {points_text(m.difference)}"


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
        x_low, x_high = m.latency - m.latency_low, m.latency_high - m.latency
        points.append(Point(m, m.latency, y, low, high, x_low, x_high, group, point_label(m)))
    line = sorted((p.x, p.y) for p in points if p.member.on_front)
    what = (
        f"confirmed over {a.seeds_text} fresh seeds on the {a.split} split (the others: validation); bars: "
        "each one's own 95% interval; verdicts: paired differences to the baseline"
        if a.confirmed
        else (
            f"one run each; bars: ±1 noise sd ({100 * sd:.1f} pts)" if a.noise else "one run each; noise not measured"
        )
    )
    return PlotData((names[0], names[1]), pruned, complete, points, line, what, any(m.remeasured for m in a.members))


COLOURS = {"front": "#1f77b4", "off": "#7f7f7f", "baseline": "#d62728"}
LABELS = {"front": "front", "off": "shown, off the confirmed front", "baseline": "baseline (no attention)"}


def _mpl(text: str) -> str:
    """Text as matplotlib draws it literally (``$`` would start its math mode)."""
    return text.replace("$", r"\$")


def _xlabel(d: PlotData) -> str:
    return "latency_ms (re-measured, 95% interval)" if d.remeasured else "latency_ms"


PLOT_SIZE = (8, 5)  # inches


def fit_title(fig: Figure, text: str, fontsize: float = 9) -> Text:
    """``text`` as the figure's title (centred on the figure, not on the axes, which the y label moves
    off centre), wrapped at spaces (or inside a word too long for a line) until its widest line, as the
    renderer measures it, fits the figure: a study name alone may be 100 wide characters."""
    import textwrap

    renderer = fig.canvas.get_renderer()
    room = fig.bbox.width * 0.96
    chars = len(text)
    while True:
        title = fig.suptitle(textwrap.fill(text, chars, break_long_words=True), fontsize=fontsize)
        width = title.get_window_extent(renderer).width
        if width <= room or chars <= 10:
            return title
        chars = max(10, min(chars - 1, int(chars * room / width)))


LABEL_OFFSET = (6.0, 4.0)  # points, from a marker to its label's lower left corner


def place_labels(
    anchors: Sequence[tuple[float, float]], sizes: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Offsets (in points) of labels beside their markers, so that no two labels' boxes overlap: each,
    from the leftmost marker on, takes the first of up right, down right, then further up and down by
    a label's height at a time, that clears every label placed before it. ``anchors``: the markers in
    points; ``sizes``: each label's width and height in points."""
    placed: list[tuple[float, float, float, float]] = []
    offsets: list[tuple[float, float]] = [LABEL_OFFSET] * len(anchors)
    dx, dy = LABEL_OFFSET
    for i in sorted(range(len(anchors)), key=lambda k: anchors[k]):
        (x, y), (w, h) = anchors[i], sizes[i]
        steps = range(1, 2 * len(anchors) + 2)
        tries = [dy] + [v for k in steps for v in (dy + k * (h + 1), -dy - h - (k - 1) * (h + 1))]
        for oy in tries:
            box = (x + dx, y + oy, x + dx + w, y + oy + h)
            if all(box[2] <= b[0] or b[2] <= box[0] or box[3] <= b[1] or b[3] <= box[1] for b in placed):
                break
        placed.append(box)
        offsets[i] = (dx, oy)
    return offsets


def _annotate(fig: Figure, ax: Any, points: Sequence[Any], fontsize: float = 8) -> None:
    """Each front member's trial number beside it, no two numbers over each other (``place_labels``),
    once the axes have their final size."""
    texts = [str(p.member.number) for p in points]
    ax.get_xlim(), ax.get_ylim()  # reading the limits applies pending autoscaling: the limits as drawn
    renderer = fig.canvas.get_renderer()
    to_pt = 72.0 / fig.dpi
    sizes = []
    for t in texts:
        probe = ax.text(0, 0, t, fontsize=fontsize)
        box = probe.get_window_extent(renderer)
        sizes.append((box.width * to_pt, box.height * to_pt))
        probe.remove()
    anchors = [tuple(v * to_pt for v in ax.transData.transform((p.x, p.y))) for p in points]
    for p, t, off in zip(points, texts, place_labels(anchors, sizes), strict=True):
        ax.annotate(t, (p.x, p.y), textcoords="offset points", xytext=off, fontsize=fontsize, zorder=5)


def plot(study: optuna.Study, a: Analysis, path: Path) -> Path:
    """``plot_data`` as a PNG: pruned trials faint at their last rung, the other complete trials grey,
    the front and the baseline with error bars (accuracy: confirmed 95% interval, else ±1 noise sd of
    one run; latency: the ratio's 95% interval) and trial numbers beside the points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = plot_data(study, a)
    fig, ax = plt.subplots(figsize=PLOT_SIZE, dpi=110)
    if d.pruned:
        ax.scatter(
            [_x(i) for i in d.pruned],
            [i.curve[-1] for i in d.pruned],
            s=10,
            c="#dddddd",
            zorder=1,
            label=_mpl(f"pruned ({d.names[0]} at its last rung)"),
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
    for p in d.points:  # the verdicts in the legend, where no label covers another
        if p.label != str(p.member.number):
            ax.plot([], [], " ", label=_mpl(p.label))
    ax.set_xlabel(_mpl(_xlabel(d)))
    ax.set_ylabel(_mpl(d.names[0]))
    fit_title(
        fig,
        f"{study.study_name}: {len(d.complete) + len(d.points)} complete, {len(d.pruned)} pruned trials; "
        f"front {d.what}",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    _annotate(fig, ax, d.points)
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
        (f"pruned ({html.escape(d.names[0])} at its last rung)", d.pruned, "#cccccc", 6),
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
        xaxis_title=html.escape(_xlabel(d)),  # a study's metric names are its text: Plotly renders some HTML
        yaxis_title=html.escape(names[0]),
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
