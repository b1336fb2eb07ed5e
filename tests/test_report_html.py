"""front.html: one self-contained Plotly page whose points name their trial, architecture and figures
on hover, with the terminal table's columns. Checked in headless Chromium when the machine has it
(Debian's chromium package), and always by reading the figure data embedded in the page."""

import json
import re
import shutil
import subprocess

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState, create_trial

from nas import report

HOSTILE = "resnet10t|se(r=16)</script><img src=x onerror=alert(1)>|none|none|none"


def trial(number, state, values, arch, latency, **attrs):
    base = {
        "arch": arch,
        "latency_ms": latency,
        "latency_ci_ms": [latency * 0.98, latency * 1.02],
        "params": 4_900_000 + number,
        "flops": 45_000_000 + number,
        "stop_reason": "completed 3 epochs" if state == TrialState.COMPLETE else "pruned at epoch 1: place 3 of 3",
        "val_acc_curve": [0.5, 0.7, values[0]] if values else [0.42],
    }
    return create_trial(
        state=state,
        values=values,
        params={"stage4.mechanism": "none"},
        distributions={"stage4.mechanism": CategoricalDistribution(["none", "se"])},
        user_attrs={**base, **attrs},
        intermediate_values={},
    )


@pytest.fixture
def study():
    st = optuna.create_study(directions=["maximize", "minimize"], study_name="html")
    st.set_metric_names(["accuracy", "latency_ms"])
    st.add_trial(trial(0, TrialState.COMPLETE, [0.90, 3.7], "resnet10t|none|none|none|none", 3.7, baseline=True))
    st.add_trial(trial(1, TrialState.COMPLETE, [0.93, 4.1], "resnet10t|none|none|none|se(r=16)", 4.1))
    st.add_trial(trial(2, TrialState.COMPLETE, [0.89, 4.5], "resnet10t|none|none|cbam(r=16,k=3)|none", 4.5))
    st.add_trial(trial(3, TrialState.PRUNED, None, "resnet10t|none|none|simam|simam", 3.9))
    st.add_trial(trial(4, TrialState.COMPLETE, [0.95, 4.3], HOSTILE, 4.3))
    copy = trial(5, TrialState.PRUNED, None, "resnet10t|none|none|none|se(r=16)", 4.1, duplicate_of=1)
    st.add_trial(copy)
    return st


def embedded(page: str) -> list[dict]:
    """The figure's traces as Plotly.newPlot receives them in the page."""
    call = page[page.index("Plotly.newPlot(") :]
    call = call[call.index('"front",') + len('"front",') :].lstrip()
    return json.JSONDecoder().raw_decode(call)[0]


def test_front_html_is_self_contained_and_every_point_says_what_it_is(study, tmp_path):
    a = report.analyse(study, measure_again=False)
    path = report.write_html(study, a, ["accuracy", "latency_ms"], 1.23, (0.0, 5.0), tmp_path / "front.html")
    page = path.read_text()
    assert page.startswith("<!doctype html>") and "<script src=" not in page, "Plotly inside, nothing fetched"
    assert "<img src=x" not in page, "study text escaped everywhere, in the table and in the embedded data"
    traces = {t["name"]: t for t in embedded(page)}
    pruned = traces["pruned (accuracy at its last rung)"]
    assert pruned["y"] == [0.42] and "trial 3: resnet10t|none|none|simam|simam" in pruned["text"][0]
    assert "stopped: pruned at epoch 1" in pruned["text"][0], "a copy (trial 5) is not drawn"
    complete = traces["complete trials (stored, one run)"]
    assert [t.split(":")[0] for t in complete["text"]] == ["trial 2"]
    front = next(t for name, t in traces.items() if name.startswith("front (") and t.get("mode") == "markers+text")
    hover = dict(zip(front["text"], front["hovertext"], strict=True))
    assert set(hover) == {"1", "4"}
    assert "trial 1: resnet10t|none|none|none|se(r=16)" in hover["1"] and "params 4.90M" in hover["1"]
    assert "latency 4.100 ms [4.018, 4.182]" in hover["1"] and "45.0 MFLOPs" in hover["1"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in hover["4"]
    assert traces["baseline (no attention)"]["text"] == ["0"]
    # the table: the terminal's columns, and the whole architecture
    headers = [h.replace("<br>", "\n") for h in re.findall(r"<th>(.*?)</th>", page)]
    terminal, rows = report.table_rows(a, ["accuracy", "latency_ms"])  # every column, not the short form
    assert headers == [*terminal, "architecture"] and "verdict" in headers and "MFLOPs" in headers
    assert "resnet10t|none|none|none|se(r=16)</td>" in page


def test_hover_in_headless_chromium_shows_the_architecture(study, tmp_path):
    """The page in a real browser: hovering the front member shows its trial and architecture (.ci/run
    installs Debian's chromium, so CI always runs this; elsewhere the test above checks the page's data)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    a = report.analyse(study, measure_again=False)
    path = report.write_html(study, a, ["accuracy", "latency_ms"], 1.23, (0.0, 5.0), tmp_path / "front.html")
    if browser is None:
        pytest.skip("no chromium here (apt-get install chromium); the page's data is checked by the test above")
    probe = tmp_path / "probe.html"
    trace = next(i for i, t in enumerate(embedded(path.read_text())) if t["name"].startswith("front ("))
    probe.write_text(
        path.read_text().replace(
            "</body>",
            "<script>window.addEventListener('load', () => {"
            "const gd = document.getElementById('front');"
            f"Plotly.Fx.hover(gd, [{{curveNumber: {trace}, pointNumber: 0}}]);"
            "document.title = 'HOVER:' + Array.from(document.querySelectorAll('.hoverlayer .hovertext'))"
            ".map(e => e.textContent).join('|');});</script></body>",
        )
    )
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    run = subprocess.run(
        [
            browser,
            *flags,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    title = re.search(r"<title>(.*?)</title>", run.stdout, re.S)
    assert title and title.group(1).startswith("HOVER:"), run.stderr[-2000:]
    assert "trial 1: resnet10t|none|none|none|se(r=16)" in title.group(1), title.group(1)


def test_the_plots_title_is_wrapped_inside_the_figure_for_the_longest_study_name(study, tmp_path):
    """A study name may be 100 characters; with the longest account of the front's intervals the title
    was cut at both sides of front.png. Every line now fits between the figure's edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = "m" * 100  # the widest letter, as many as a name may have
    what = "confirmed over 6 fresh seeds on the held-out test split (the others: validation), 95% intervals"
    for text in (
        f"resnet-digits: 109 complete, 79 pruned trials; front {what}",  # cut at the right before
        f"{name}: 109 complete, 79 pruned trials; front {what}",
        f"short: 3 complete, 1 pruned trials; front {what}",
    ):
        fig, ax = plt.subplots(figsize=report.PLOT_SIZE, dpi=110)
        ax.set_ylabel("accuracy")  # moves the axes off the figure's centre, as in front.png
        title = report.fit_title(fig, text)
        fig.tight_layout()
        fig.canvas.draw()
        box, axes = title.get_window_extent(), ax.get_window_extent()
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
        assert box.y0 >= axes.y1, "above the axes, not over them"
        assert title.get_text().replace("\n", " ").replace(" ", "") == text.replace(" ", ""), "nothing lost"
        plt.close(fig)
    long = optuna.create_study(directions=["maximize", "minimize"], study_name=name)
    long.set_metric_names(["accuracy", "latency_ms"])
    for t in study.get_trials():
        long.add_trial(t)
    path = report.plot(long, report.analyse(long, measure_again=False), tmp_path / "front.png")
    assert path.stat().st_size > 10_000


def test_the_plot_names_each_confirmed_members_verdict_and_paired_difference(study, tmp_path):
    """Each member's bars are its own interval over the seeds, which takes in their shared luck: a member
    better than the baseline by +0.4 ± 0.3 points (paired) has bars that overlap the baseline's. The
    plot's legend says the verdict and the paired difference, and its title what the bars are."""
    from matplotlib.image import imread

    from nas.core.stats import BETTER, EQUIVALENT, Estimate
    from nas.study.analysis import Analysis
    from nas.study.confirmation import Member

    def est(mean, half):
        return Estimate(mean, mean - half, mean + half, 3, 0.01)

    def member(number, baseline=False, **kw):
        x = 3.5 + number / 10
        return Member(number, f"resnet10t|none|none|none|m{number}", 0.93, x, x - 0.05, x + 0.05, 1, 1,
                      baseline, accuracy=est(0.936 + number / 1000, 0.009), **kw)  # fmt: skip

    a = Analysis(
        [
            member(0, baseline=True),
            member(1, difference=est(0.004, 0.003), verdict=BETTER),
            member(2, difference=est(0.002, 0.003), verdict=EQUIVALENT),
            member(3),  # not confirmed
        ],
        None,
        3,
        [1, 2, 3],
    )
    d = report.plot_data(study, a)
    assert [p.label for p in d.points] == ["0", "1: better +0.4 ± 0.3 pts", "2: equivalent +0.2 ± 0.3 pts", "3"]
    assert "own 95% interval" in d.what and "paired differences to the baseline" in d.what
    shown = [(p.y - p.y_low, p.y + p.y_high) for p in d.points[:2]]
    assert shown[0][1] > shown[1][0], "the bars overlap although the paired verdict is 'better'"
    path = report.plot(study, a, tmp_path / "front.png")
    assert imread(path).shape[:2] == (550, 880)


def _overlap(a, b):
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def test_front_numbers_in_the_png_never_cover_one_another_and_a_lone_one_sits_up_right():
    """Members that land on (almost) the same spot, as a tied front does: every trial number readable."""
    import random

    rng = random.Random(3)
    for case in range(200):
        n = rng.randint(1, 8)
        anchors = [(rng.uniform(100, 130), rng.uniform(100, 115)) for _ in range(n)]
        sizes = [(rng.choice((6.0, 12.0, 18.0)), 8.0) for _ in range(n)]
        offsets = report.place_labels(anchors, sizes)
        boxes = [
            (x + dx, y + dy, x + dx + w, y + dy + h)
            for (x, y), (dx, dy), (w, h) in zip(anchors, offsets, sizes, strict=True)
        ]
        assert not any(_overlap(boxes[i], boxes[j]) for i in range(n) for j in range(i)), (case, boxes)
    far = report.place_labels([(0.0, 0.0), (500.0, 500.0)], [(12.0, 8.0)] * 2)
    assert far == [report.LABEL_OFFSET] * 2, "labels far apart stay where they always were"
