"""The noise floor, confirmation and the report's verdicts end to end on a small learnable space
(CPU): a test-only mechanism that destroys most of its input is confirmed worse than the baseline, one
that changes nothing that matters is a tie, every trial trains from the study's seed with its learning
curve in the storage, and nas train of an export reproduces the trial's curve exactly."""

import optuna
import pytest
import torch

import attention
from attention import Attention, mechanism
from nas import export, report
from nas import train as nas_train
from nas.core.stats import BETTER, WORSE
from nas.search._loop import Search
from nas.study import confirmation as cf
from nas.tasks.spacefile import load_space

from _helpers import run_nas, space_file

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _test_mechanisms():
    """Registered for this module only (other tests iterate over the twelve)."""

    @mechanism(
        name="keep1",
        title="test only: keeps one channel in 64",
        arxiv=None,
        reference="test",
        placement="stage_output",
        placement_note="test",
        hparams=(),
    )
    class Keep1(Attention):
        def __init__(self, channels, *, device=None, dtype=None):
            super().__init__(channels)
            self.register_buffer("mask", (torch.arange(channels) % 64 == 0).float().view(1, -1, 1, 1))

        def forward(self, x):
            return x * self.mask

    @mechanism(
        name="nudge",
        title="test only: scales by 1.0001",
        arxiv=None,
        reference="test",
        placement="stage_output",
        placement_note="test",
        hparams=(),
    )
    class Nudge(Attention):
        def __init__(self, channels, *, device=None, dtype=None):
            super().__init__(channels)

        def forward(self, x):
            return x * 1.0001

    return ("keep1", "nudge")


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    names = _test_mechanisms()
    try:
        root = tmp_path_factory.mktemp("runs")
        path = space_file(
            root,
            "trust",
            data={"train": 800, "val": 200, "clutter": 0},
            stages={1: {"none": None, "keep1": None}, 4: {"none": None, "nudge": None}},
            training={"epochs": 2, "batch_size": 16, "lr": 0.003, "schedule": "cosine", "noise_seeds": 2, "confirm": 2},
        )
        storage = f"sqlite:///{root / 'trust' / 'study.db'}"
        result = Search(
            load_space(path), "trust", storage, 4, sampler="bruteforce", prune=False, root=root, seed=5
        ).run()
        yield result.study, root, storage
    finally:
        for n in names:
            attention.unregister(n)
    assert "keep1" not in attention.MECHANISMS


def _trial(study, arch):
    return next(t for t in study.trials if t.user_attrs.get("arch") == arch and "duplicate_of" not in t.user_attrs)


def test_every_trial_trains_from_the_studys_seed_with_its_curve_in_the_storage(searched):
    study, _, _ = searched
    assert study.user_attrs["seed"] == 5
    for t in study.trials:
        assert t.user_attrs["seed"] == 5
        curve = t.user_attrs["val_acc_curve"]
        assert t.intermediate_values == {i + 1: pytest.approx(v) for i, v in enumerate(curve)}, (
            "optuna-dashboard's intermediate-values chart shows every learning curve"
        )
        lo, hi = t.user_attrs["latency_ci_ms"]
        assert lo <= t.user_attrs["latency_ms"] <= hi


def test_the_noise_floor_is_the_baselines_spread_over_its_seeds(searched):
    study, _, _ = searched
    noise = cf.noise_of(study)
    base = cf.baseline_trial(study)
    rerun = study.user_attrs[f"rerun:6:{base.user_attrs['arch']}"]
    assert noise.seeds == (5, 6)
    expected = abs(base.user_attrs["val_acc_curve"][-1] - rerun[-1]) / 2**0.5
    assert noise.final == pytest.approx(expected, abs=1e-6)
    assert str(noise).startswith("noise: sd ") and "over 2 seeds" in str(noise)


def test_a_destructive_choice_is_confirmed_worse_and_a_harmless_one_tied(searched):
    study, root, _ = searched
    hurt = _trial(study, "resnet10t|keep1|none|none|none")
    same = _trial(study, "resnet10t|none|none|none|nudge")
    confirmed_by_search = {arch for arch, runs in cf.reruns(study).items() if {6, 7} <= set(runs)}
    from nas.study.studies import front

    members = {t.user_attrs["arch"] for t in front(study)} - {cf.baseline_trial(study).user_attrs["arch"]}
    assert members <= confirmed_by_search, "the search confirmed its front (nothing to race when the baseline is alone)"
    stored = {(arch, seed) for arch, runs in cf.reruns(study).items() for seed in runs}  # before the report
    fit, fitted = report.fitter(study, root=root), []
    a = report.analyse(
        study,
        confirm=4,
        measure_again=False,
        include=[hurt.number, same.number],
        fit=lambda arch, seed, why, every: fitted.append((arch, seed, every)) or fit(arch, seed, why, every),
    )
    assert not {(arch, seed) for arch, seed, _ in fitted} & stored, "stored re-runs are reused, not trained again"
    assert not any(every for _, _, every in fitted), "a confirmation validates after its last epoch only"
    epochs = cf.epochs_of(study)
    runs = cf.reruns(study)
    for arch in ("resnet10t|keep1|none|none|none", "resnet10t|none|none|none|nudge"):
        assert {6, 7} <= set(runs[arch]), f"{arch} confirmed (by the search or the report) at the fresh seeds"
        assert not any(cf.every_epoch(c, epochs) for c in runs[arch].values()), (
            "a confirmation, the search's or the report's, validates after its last epoch only"
        )
    fitted = [(arch, seed) for arch, seed, _ in fitted]
    new = ("resnet10t|keep1|none|none|none", "resnet10t|none|none|none|nudge")
    first = {(a, s) for a in new for s in (6, 7) if a not in confirmed_by_search}
    base = cf.baseline_trial(study).user_attrs["arch"]
    assert first <= set(fitted) <= {(a, s) for a in (*new, base) for s in (6, 7, 8, 9)}, (
        "what the search left unconfirmed is trained at the fresh seeds, the second batch only where a member "
        "was still inconclusive"
    )
    by = {m.number: m for m in a.members}
    assert by[hurt.number].verdict == WORSE and by[hurt.number].difference.high < 0
    assert by[same.number].verdict != BETTER
    d = by[same.number].difference
    assert d.low <= 0 <= d.high
    assert by[same.number].seeds in ((6, 7), (6, 7, 8, 9)) and a.seeds == [6, 7, 8, 9], "fresh seeds only"
    assert len(by[same.number].accuracies) == by[same.number].trainings == len(by[same.number].seeds)
    assert a.headline().startswith("No front member is better than the baseline")
    assert "Dunnett-adjusted" in a.headline() and "pooled noise sd" in a.headline()
    base_member = next(m for m in a.members if m.baseline)
    assert base_member.accuracy.n == max(m.trainings for m in a.members if not m.baseline)


def test_report_cli_leads_with_the_verdict_and_prints_whole_architectures(searched, tmp_path, monkeypatch):
    """In process (the test mechanisms are registered here only), on an 80-column console."""
    _, root, storage = searched
    r = run_nas(
        "report",
        "--study",
        "trust",
        "--storage",
        storage,
        "--no-remeasure",
        "--include",
        "1,2,3",
        "--out",
        tmp_path / "rep",
        cwd=root,
        width=80,
    )
    assert r.returncode == 0, r
    text = r.stdout
    lines = text.splitlines()
    assert lines[0].startswith("No front member is better than the baseline")
    assert "noise: sd" in text
    for arch in ("resnet10t|keep1|none|none|none", "resnet10t|none|none|none|nudge"):
        assert any(line.endswith(arch) for line in lines), f"{arch} printed whole at 80 columns"
    assert "worse" in text and ("equivalent" in text or "inconclusive" in text)
    assert (tmp_path / "rep" / "front.png").stat().st_size > 10_000


def test_nas_train_of_an_export_reproduces_the_trials_curve_exactly(searched, tmp_path):
    study, root, _ = searched
    trial = _trial(study, "resnet10t|none|none|none|nudge")
    export.export_trial(study, trial, tmp_path / "exp", weights=False, root=root)
    result = nas_train.train(tmp_path / "exp")
    assert result.curve == trial.user_attrs["val_acc_curve"]


def test_a_confirmation_run_validates_after_its_last_epoch_only_and_ends_where_a_full_run_ends(searched):
    """A confirmation's re-run is judged on its final figure (the held-out split's, else the last
    validation), so it validates after its last epoch only: one validation pass less per epoch before
    the last, and the same final validation and held-out figure as the same run validated every epoch."""
    study, root, _ = searched
    fit = report.fitter(study, root=root)
    arch = "resnet10t|none|none|none|nudge"
    full, last = fit(arch, 20, "test", True), fit(arch, 20, "test", False)
    assert len(full.curve) == 2 and last.curve == full.curve[-1:], (full.curve, last.curve)
    assert last.heldout is not None and last.heldout == full.heldout and last.heldout_size == full.heldout_size


def test_a_run_a_confirmation_stored_is_trained_again_where_every_epoch_is_needed():
    """The noise floor and recordings read a re-run's validation after every epoch; a run a confirmation
    stored (its last validation only) counts for the confirmation, and is trained again, validated every
    epoch, when the noise floor or a recording asks for that architecture and seed."""
    from nas.search._reruns import Rerun, run_reruns

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("epochs", 3)
    arch = "resnet10t|none|none|none|none"
    study.set_user_attr(cf.key(4, arch), [0.5])
    asked = []

    def fit(a, seed, why, every):
        asked.append(every)
        return Rerun([0.3, 0.4, 0.5] if every else [0.5])

    assert run_reruns(study, [(arch, 4)], fit, "confirming the front", per_epoch=False) == 0 and asked == []
    assert cf.reruns(study) == {arch: {4: [0.5]}} and cf.per_epoch_reruns(study) == {arch: {}}
    assert run_reruns(study, [(arch, 4)], fit, "noise floor") == 1 and asked == [True]
    assert cf.per_epoch_reruns(study) == {arch: {4: [0.3, 0.4, 0.5]}}
    assert run_reruns(study, [(arch, 4)], fit, "noise floor") == 0 and asked == [True]


def test_report_confirm_continues_the_race_and_times_each_member_beside_the_baseline(searched, tmp_path):
    """``nas report --confirm 6`` from the command line (in process: the test mechanisms are registered
    here only), with latency re-measured (no --no-remeasure). The search raced in batches of 2 seeds up
    to 4: the race goes on to 6 seeds for the shown members still inconclusive (any run a member lacks at
    the earlier seeds trained first), the stored runs reused; a ceiling off the batch is refused before
    any work. The Δ latency column gives each member's paired difference to the baseline, timed now in
    the same rounds, with its interval."""
    import re

    from nas.study.analysis import shown_trials

    study, root, storage = searched
    same = _trial(study, "resnet10t|none|none|none|nudge")
    shown = {t.user_attrs["arch"] for t in shown_trials(study, [same.number])}
    before = {k: v for k, v in study.user_attrs.items() if k.startswith("rerun:")}
    out = tmp_path / "rep"
    refused = run_nas("report", "--study", "trust", "--storage", storage, "--confirm", 3, cwd=root)
    assert refused.returncode == 2 and "--confirm" in refused.stderr and "a multiple of 2" in refused.stderr
    args = ("report", "--study", "trust", "--storage", storage, "--confirm", 6, "--include", same.number)
    r = run_nas(*args, "--out", out, cwd=root)
    assert r.returncode == 0, r
    attrs = optuna.load_study(study_name="trust", storage=storage).user_attrs
    after = {k: v for k, v in attrs.items() if k.startswith("rerun:")}
    assert {k: after[k] for k in before} == before, "stored runs are reused, not trained again"
    assert {f"rerun:{s}:{arch}" for arch in shown for s in (6, 7)} <= set(after), sorted(after)
    assert set(after) - set(before) <= {f"rerun:{s}:{arch}" for arch in shown for s in range(6, 12)}
    base = cf.baseline_trial(study).user_attrs["arch"]
    noise = {f"rerun:{s}:{base}" for s in cf.noise_seed_list(study)}
    assert all(len(v) == (2 if k in noise else 1) for k, v in after.items()), (
        "the noise floor's runs validated after each of the search's 2 epochs, the confirmation's after the last only"
    )
    assert attrs["confirm_race"] == {"batch": 2, "ceiling": 6, "horizon": 4}, "futility still looks to 4 seeds"
    lines = r.stdout.splitlines()
    assert lines[0].startswith("No front member is better than the baseline in accuracy. Confirmed over"), lines[0]

    # latency timed now: no cell says "stored"; each member's difference to the baseline has its interval
    others = len(shown) - 1
    assert "stored" not in r.stdout and len(re.findall(r"\[[+-]\d+\.\d{3},", r.stdout)) == others, r.stdout
    page = (out / "front.html").read_text()
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(<td>.*?)</tr>", page)]
    assert len(rows) == len(shown)
    for row in rows:
        number, lat, dlat = int(row[0]), row[5], row[6]
        assert "stored" not in lat and re.fullmatch(r"\d+\.\d{3}<br>\[\d+\.\d{3},<br>\d+\.\d{3}\]", lat), row
        if row[-1] == cf.baseline_trial(study).user_attrs["arch"]:
            assert dlat == "-", row
            continue
        match = re.fullmatch(r"([+-]\d+\.\d{3})<br>\[([+-]\d+\.\d{3}),<br>([+-]\d+\.\d{3})\]", dlat)
        assert match, (number, dlat)
        low, median, high = float(match[2]), float(match[1]), float(match[3])
        assert low <= median <= high, (number, dlat)
