"""The search end to end on a tiny space (CPU): pruning, resume, infeasible candidates, storage
contents as optuna-dashboard shows them, the CLI with Ctrl-C."""

import gc
import json
import os
import signal
import sys
import time
from io import BytesIO
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna.trial import TrialState

from nas.search._loop import Reporter, Search
from nas.study.studies import count_states, front
from nas.tasks.spacefile import load_space

from _helpers import Polled, from_terminal, run_nas, space_file

pytestmark = pytest.mark.slow
optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_space(tmp_path, **overrides):
    return load_space(space_file(tmp_path, **overrides))


def run_search(tmp_path, space, trials, **kw):
    storage = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}"
    return Search(space, "tiny", storage, trials, root=tmp_path / "runs", **kw).run()


def test_search_prunes_records_everything_and_resumes(tmp_path):
    from nas.search._pruning import MOASHA

    # one noise seed: no noise floor, so no trial is kept "within noise" and the rung's quota alone
    # decides. A constant learning rate of 0.01 (not one-cycle's warm-up) so the first epoch already
    # tells the trials apart: with the default schedule every trial predicts one class after it, and a
    # rung of equal accuracies prunes nobody. The accuracies are the seeded training's, every run alike.
    space = tiny_space(tmp_path, training={"noise_seeds": 1, "schedule": "constant", "lr": 0.01})
    first = run_search(tmp_path, space, 5, sampler="random")
    assert gc.get_freeze_count() == 0, "the search handed its objects back to the collector"
    study = first.study
    trials = study.get_trials()
    assert study.metric_names == ["accuracy", "latency_ms"]
    base = trials[0]
    assert base.user_attrs["baseline"] and base.user_attrs["arch"] == "resnet10t|none|none|none|none"
    assert base.state == TrialState.COMPLETE and len(base.user_attrs["val_acc_curve"]) == 3, "baseline is never pruned"
    for t in trials:
        for key in ("arch", "params", "flops", "latency_ms", "latency_spread_pct", "latency_target", "stop_reason"):
            assert key in t.user_attrs, (t.number, key)
        assert t.user_attrs["latency_target"] == "cpu/b1/32px/t1"
    # eta=3 at rung 1 (epoch 1 of 3): of the n <= 5 trials at the rung only the best max(1, n // 3) = 1
    # goes on, and the best by non-dominated sorting of (accuracy, latency) is the most accurate. So a
    # trial whose epoch-1 accuracy is below an earlier trial's is pruned whatever the latencies; the
    # rule replayed on the stored curves and latencies gives every decision, ties included
    evaluated = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in evaluated)
    first_epoch = {t.number: t.user_attrs["val_acc_curve"][0] for t in evaluated}
    entry = lambda x: (x.number, first_epoch[x.number], x.user_attrs["latency_ms"])  # noqa: E731
    implied, surely = {}, set()
    for k, t in enumerate(evaluated[1:], start=1):
        earlier = evaluated[:k]
        decision = MOASHA(eta=3).decide(entry(t), [entry(x) for x in earlier], 1)
        if not decision.keep:
            implied[t.number] = str(decision)
        if first_epoch[t.number] < max(first_epoch[x.number] for x in earlier):
            surely.add(t.number)
    assert surely, f"no trial fell behind an earlier one at epoch 1: {first_epoch}"
    assert surely <= set(implied), (surely, implied)
    pruned = {t.number: t for t in evaluated if t.state == TrialState.PRUNED}
    reasons = {n: t.user_attrs["stop_reason"] for n, t in pruned.items()}
    assert set(pruned) == set(implied), (first_epoch, implied, reasons)
    for number, t in pruned.items():
        assert t.user_attrs["stop_reason"] == t.user_attrs["pruned_at"] == implied[number], t.user_attrs
        assert implied[number].startswith("pruned at epoch 1: place ") and implied[number].endswith(
            "by non-dominated sorting (accuracy, latency); the best 1 continue"
        )
        assert len(t.user_attrs["val_acc_curve"]) == 1 and not any(k.startswith("rung_") for k in t.user_attrs)
    for t in evaluated:
        if t.number not in pruned:
            assert len(t.user_attrs["val_acc_curve"]) == 3 and t.user_attrs["stop_reason"] == "completed 3 epochs"
    assert count_states(study)["running"] == 0
    header = (tmp_path / "runs" / "tiny" / "trials" / "0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"epoch", "train_loss", "lr", "val_acc"} <= set(header), header  # per-epoch logs of every trial
    assert list((tmp_path / "runs" / "tiny" / "trials" / "0").glob("events.out.tfevents.*")), "TensorBoard too"

    assert space.count() == 6
    second = run_search(tmp_path, space, 6, sampler="random")
    assert second.stopped == "trials"
    trials = second.study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    evaluated = [t for t in finished if "duplicate_of" not in t.user_attrs]
    assert len(evaluated) == 6, "the earlier run's trials count toward --trials, copies do not"
    trained = [t.user_attrs["arch"] for t in trials if "duplicate_of" not in t.user_attrs]
    assert len(trained) == len(set(trained)), "no architecture is trained twice"
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            assert (
                "val_acc_curve" in t.user_attrs
                and t.user_attrs["arch"] == trials[t.user_attrs["duplicate_of"]].user_attrs["arch"]
            )
    assert front(second.study), "a front exists"


class Recording(Reporter):
    """What the search told its display."""

    def __init__(self):
        self.steps, self.statuses, self.ended = [], [], []

    def step(self, number, epoch, epochs, step, steps, samples_per_s):
        self.steps.append((number, epoch, epochs, step, steps, samples_per_s))

    def status(self, text):
        self.statuses.append(text)

    def trial_end(self, trial):
        self.ended.append(trial.user_attrs.get("stop_reason"))


class StuckSampler(optuna.samplers.BaseSampler):
    """Proposes the first value of every parameter, whatever it has seen: always the baseline."""

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, name, distribution):
        return distribution.choices[0]


def test_copies_do_not_count_and_a_stuck_sampler_cannot_loop(tmp_path, monkeypatch):
    """--trials counts distinct architectures: a proposal of one already evaluated is recorded as a
    PRUNED copy (its twin's curve as intermediate values, not among optuna-dashboard's best trials),
    a sampler that only repeats itself gets an unseen architecture after MAX_COPIES copies, and a
    space smaller than --trials ends exhausted and says so."""
    from nas.search import _loop as loop

    monkeypatch.setattr(loop, "make_sampler", lambda name, seed: StuckSampler())
    seen = Recording()
    # 3 architectures: none, se, simam at stage 4
    space = load_space(
        space_file(
            tmp_path,
            stages={4: {"none": None, "se": {"reduction": [16]}, "simam": None}},
            training={"epochs": 1, "noise_seeds": 1},
        )
    )
    assert space.count() == 3
    result = run_search(tmp_path, space, 5, reporter=seen)
    study, trials = result.study, result.study.get_trials()
    assert result.stopped == "space exhausted: all 3 architectures evaluated, fewer than the 5 asked"
    evaluated = [t for t in trials if "duplicate_of" not in t.user_attrs]
    copies = [t for t in trials if "duplicate_of" in t.user_attrs]
    assert sorted(t.user_attrs["arch"] for t in evaluated) == sorted(str(a) for a in space.architectures())
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in evaluated)
    assert [t.user_attrs.get("drawn") is not None for t in evaluated] == [False, True, True], "drawn after the cap"
    assert len(copies) == 2 * loop.MAX_COPIES, "each unseen architecture came after MAX_COPIES copies, no more"
    base = evaluated[0]
    for t in copies:
        assert t.state == TrialState.PRUNED and t.user_attrs["duplicate_of"] == base.number
        assert t.user_attrs["stop_reason"] == f"copy of trial {base.number}: evaluated once, not counted"
        assert t.user_attrs["val_acc_curve"] == base.user_attrs["val_acc_curve"]
        assert t.intermediate_values == base.intermediate_values and t.intermediate_values
    best = {t.number for t in study.best_trials}  # what optuna-dashboard marks as best
    assert best and not best & {t.number for t in copies}
    counts = count_states(study)
    assert counts["copies"] == len(copies) and counts["complete"] + counts["pruned"] == 3
    # the live display was told each trained trial's steps (256 images / batch 64 = 4 per epoch) and
    # when it validated; a copy was shown as such
    for t in evaluated:
        steps = [c for c in seen.steps if c[0] == t.number]
        assert steps and steps[-1][1:5] == (1, 1, 4, 4) and all(c[5] > 0 for c in steps), seen.steps
    assert "validating" in seen.statuses
    assert seen.ended.count(f"copy of trial {base.number}: evaluated once, not counted") == len(copies)


def test_infeasible_candidates_stop_before_training_and_the_sampler_sees_it(tmp_path):
    space = tiny_space(tmp_path, limits={"max_params": 4.95e6})  # baseline resnet10t has 4.92M
    result = run_search(tmp_path, space, 4, sampler="random")
    trials = result.study.get_trials()
    infeasible = [t for t in trials if t.user_attrs.get("infeasible")]
    assert infeasible, [t.user_attrs for t in trials]
    for t in infeasible:
        assert t.state == TrialState.PRUNED and "val_acc_curve" not in t.user_attrs
        if "duplicate_of" not in t.user_attrs:
            assert t.user_attrs["stop_reason"].startswith("infeasible: params")
        assert t.constraints["params"] > 0 and t.system_attrs["constraints"] == [t.constraints["params"]], (
            "named (optuna 5) and list (optuna-dashboard) forms agree"
        )
    assert result.counts["infeasible"] == len([t for t in infeasible if "duplicate_of" not in t.user_attrs])


def test_optuna_dashboard_lists_the_study_with_objective_names_and_attributes(tmp_path):
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    space = tiny_space(tmp_path)
    result = run_search(tmp_path, space, 2, sampler="random")
    store = result.study.user_attrs["artifact_store"]  # as `optuna-dashboard URL --artifact-dir STORE` opens it
    app = wsgi(result.study._storage, artifact_store=FileSystemArtifactStore(store))

    def get(path, raw=False):
        env = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
        setup_testing_defaults(env)
        status = []
        body = b"".join(app(env, lambda s, h, exc=None: status.append(s)))
        assert status[0].startswith("200"), (path, status)
        return body if raw else json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["tiny"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert detail["objective_names"] == ["accuracy", "latency_ms"]
    keys = {a["key"] for a in detail["union_user_attrs"]}
    assert {"arch", "params", "flops", "latency_ms", "val_acc_curve", "stop_reason"} <= keys
    assert len(detail["trials"]) == 2
    # a front trial's weights are listed and download from the store
    member = front(result.study)[0]
    shown = next(t for t in detail["trials"] if t["number"] == member.number)
    (artifact,) = shown["artifacts"]
    assert artifact["filename"] == f"trial_{member.number}.safetensors"
    assert artifact["artifact_id"] == member.user_attrs["weights_artifact"]
    body = get(f"/artifacts/{studies[0]['study_id']}/{shown['trial_id']}/{artifact['artifact_id']}", raw=True)
    assert body == (Path(store) / artifact["artifact_id"]).read_bytes() and body[:8]


def test_cli_search_then_report_and_ctrl_c_leaves_nothing_running(tmp_path):
    space_file(tmp_path)
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "nas", "search", "--space", "tiny.yaml", "--trials", "3", "--sampler", "random"]
    r = run_nas(*cmd[3:], cwd=tmp_path, width=200)  # in process; the interruption below runs the real command
    assert r.returncode == 0, r
    assert "optuna-dashboard sqlite:///runs/tiny/study.db" in r.stdout
    assert f"--artifact-dir {tmp_path.resolve() / 'runs' / 'tiny' / 'artifacts'}" in r.stdout.replace("\n", "")
    assert "Pareto front of the search's runs" in r.stdout and "complete" in r.stdout
    assert "nas report --study tiny  (the front and the baseline re-measured" in r.stdout  # and the verdict above it
    r = run_nas("report", "--study", "tiny", "--no-remeasure", cwd=tmp_path, width=200)
    assert r.returncode == 0, r.stderr
    assert "hypervolume" in r.stdout and "Δ accuracy" in r.stdout and "resnet10t|none|none|none|" in r.stdout
    assert (tmp_path / "runs/tiny/report/front.png").stat().st_size > 1000
    assert (tmp_path / "runs/tiny/report/front.html").read_text().startswith("<!doctype html>")

    # Ctrl-C in the middle of a trial's training: the trial is marked failed, the command exits 130.
    interrupt_mid_trial(tmp_path, cmd, env, "ctrlc", signal.SIGINT, 130, "interrupted (Ctrl-C)")


def interrupt_mid_trial(tmp_path, cmd, env, study_name, signum, code, reason):
    proc = from_terminal(cmd[:-4] + ["--trials", "50", "--no-prune", "--study", study_name], cwd=tmp_path, env=env)
    url = "sqlite:///" + str(tmp_path / "runs" / study_name / "study.db")
    deadline, polled = time.monotonic() + 180, Polled(study_name, url)
    while time.monotonic() < deadline:
        time.sleep(1)
        if any(t.state == TrialState.RUNNING and t.user_attrs.get("val_acc_curve") for t in polled.trials() or []):
            break
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in err, err
    assert reason in err
    trials = optuna.load_study(study_name=study_name, storage=url).get_trials()
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[-1].state == TrialState.FAIL and trials[-1].user_attrs["stop_reason"] == reason
    return trials


def test_bad_search_options_exit_2(tmp_path):
    space_file(tmp_path)
    for args, words in [
        (("--trials", "0"), "--trials"),
        (("--sampler", "cmaes"), "--sampler"),
        (("--eta", "1"), "--eta"),
    ]:
        r = run_nas("search", "--space", "tiny.yaml", *args, cwd=tmp_path)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bruteforce_visits_every_architecture_once_and_stops_cleanly(tmp_path):
    space = tiny_space(tmp_path)
    result = run_search(tmp_path, space, space.count(), sampler="bruteforce", prune=False, max_epochs=1)
    archs = [t.user_attrs["arch"] for t in result.study.get_trials()]
    assert len(archs) == space.count() == len(set(archs)), "each architecture exactly once"
    assert count_states(result.study)["complete"] == space.count()


def test_a_trial_trains_the_very_model_its_latency_was_timed_on(tmp_path, monkeypatch):
    """Each architecture is built once per trial: the model the paired meter timed is the one the fit
    trains (a second build would cost its weight initialisation again)."""
    from nas.measure import cost
    from nas.tasks.classify import fit as classify_fit

    timed, trained = [], []
    real_ratios, real_seeded = cost.PairedMeter.ratios, classify_fit.seeded_classifier

    def ratios(self, models):
        timed.extend(models)
        return real_ratios(self, models)

    def seeded(*args, **kwargs):
        module = real_seeded(*args, **kwargs)
        trained.append(module.model)
        return module

    monkeypatch.setattr(cost.PairedMeter, "ratios", ratios)
    monkeypatch.setattr(classify_fit, "seeded_classifier", seeded)
    space = load_space(space_file(tmp_path, training={"epochs": 1, "noise_seeds": 1}, data={"train": 64, "val": 32}))
    Search(space, "once", f"sqlite:///{tmp_path / 'once.db'}", 2, sampler="random", prune=False, root=tmp_path).run()
    assert len(trained) == 2 and all(any(m is t for m in timed) for t in trained), (len(timed), len(trained))
