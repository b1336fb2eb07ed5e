"""A study records the space it was run with once, as parsed data: commands read it without parsing the
YAML again, from any folder; settings a resume may change (``noise_seeds``, ``confirm``) are recorded on
the study when they change, and the noise floor and the report follow them."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.core.config import LATENCY_SCHEMA
from nas.search._samplers import make_sampler
from nas.search._study import create_or_resume, space_fingerprint
from nas.study import analysis
from nas.study import confirmation as cf
from nas.study.confirmation import noise_seed_list
from nas.study.studies import CHANGES_ATTR, stored_space
from nas.tasks import space_from_data, spacefile
from nas.tasks.spacefile import load_space

from _helpers import run_nas, space_file

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(space, url):
    return create_or_resume(space, space.name, url, make_sampler("random", 0), None, 0)


def _baseline_done(study, space):
    """A complete baseline trial, as the search records one (no training: its figures are made up)."""
    trial = study.ask()
    trial.set_user_attr("arch", str(space.baseline()))
    trial.set_user_attr("baseline", True)
    trial.set_user_attr("val_acc_curve", [0.5, 0.6, 0.7])
    study.tell(trial, [0.7, 1.0])


@pytest.mark.parametrize(
    "path", ["spaces/small.yaml", "spaces/resnet.yaml", "spaces/mobilenetv3.yaml", "spaces/yolo.yaml"]
)
def test_a_parsed_space_round_trips_through_the_study_as_data(path):
    s = load_space(Path(__file__).resolve().parents[1] / path)
    again = space_from_data(json.loads(json.dumps(s.to_data())))
    assert again == s and space_fingerprint(again) == space_fingerprint(s)
    assert again.training.as_dict() == s.training.as_dict() and again.task is s.task


def test_resuming_with_more_noise_seeds_and_a_confirmation_is_recorded_and_followed(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = load_space(space_file(tmp_path, training={"noise_seeds": 2, "confirm": 0}))
    study = _study(first, url)
    _baseline_done(study, first)
    assert noise_seed_list(study) == [0, 1]
    assert analysis.analyse(study, measure_again=False).confirm == 0

    later = load_space(space_file(tmp_path, training={"noise_seeds": 4, "confirm": 3}))
    assert space_fingerprint(later) == space_fingerprint(first), "what the trials trained is the same"
    with caplog.at_level("WARNING"):
        study = _study(later, url)
    assert "training.noise_seeds: 2 -> 4" in caplog.text and "training.confirm: 0 -> 3" in caplog.text
    changes = study.user_attrs[CHANGES_ATTR]
    assert [(c["key"], c["from"], c["to"]) for c in changes] == [
        ("training.noise_seeds", 2, 4),
        ("training.confirm", 0, 3),
    ]
    reopened = optuna.load_study(study_name=first.name, storage=url)  # another command, another process
    assert noise_seed_list(reopened) == [0, 1, 2, 3], "the noise floor trains the new seeds"
    assert stored_space(reopened).training.confirm == 3
    assert analysis.analyse(reopened, measure_again=False).confirm == 6, "the report races the new K, up to 2K"

    other = load_space(space_file(tmp_path, training={"noise_seeds": 4, "confirm": 3, "epochs": 5}))
    with pytest.raises(Exception, match="was created from a different search space"):
        _study(other, url)


def test_a_study_fingerprinted_with_80_latency_rounds_resumes_with_today_s_default_and_records_it(tmp_path, caplog):
    """Earlier versions hashed latency.rounds into a study's fingerprint (80 by default then), though a
    resume may change it (how latency is timed, not what the trials trained): such a study resumes with
    today's default and records the change; a space that measures another target is still refused."""
    from nas.search._study import _fingerprint

    url = f"sqlite:///{tmp_path / 'study.db'}"
    old = load_space(space_file(tmp_path, latency={"input_size": 32, "rounds": 80}))
    study = _study(old, url)
    as_then = _fingerprint(old, sorted(old.latency.as_dict().items()))  # the whole latency section
    assert as_then != space_fingerprint(old)
    study.set_user_attr("space_fingerprint", as_then)
    now = load_space(space_file(tmp_path, latency={"input_size": 32}))
    today = LATENCY_SCHEMA["rounds"].default
    assert now.latency.rounds == today == 12
    with caplog.at_level("WARNING"):
        _study(now, url)
    assert f"latency.rounds: 80 -> {today}" in caplog.text
    reopened = optuna.load_study(study_name=now.name, storage=url)
    assert stored_space(reopened).latency.rounds == today
    changes = reopened.user_attrs[CHANGES_ATTR]
    assert [(c["key"], c["from"], c["to"]) for c in changes] == [("latency.rounds", 80, today)]
    assert reopened.user_attrs["space_fingerprint"] == space_fingerprint(now), "stored in today's form"
    _study(now, url)  # resumed again: the record now says today's rounds
    assert len(optuna.load_study(study_name=now.name, storage=url).user_attrs[CHANGES_ATTR]) == 1

    reopened.set_user_attr("space_fingerprint", as_then)
    reopened.set_user_attr("space_data", None)  # older still: no record of its space to read the rounds from
    _study(now, url)
    other = load_space(space_file(tmp_path, latency={"input_size": 64}))
    with pytest.raises(Exception, match="was created from a different search space"):
        _study(other, url)


def test_a_study_made_before_it_recorded_its_epochs_reads_them_from_its_space(tmp_path):
    """Which stored re-runs were validated every epoch is told by the study's epochs: a study that does
    not record them (made before the record, never resumed) takes its recorded space's, as ``nas report
    --confirm`` trains them; a one-figure confirmation run is then not read as a per-epoch curve."""
    space = load_space(space_file(tmp_path, training={"epochs": 3}))
    study = _study(space, f"sqlite:///{tmp_path / 'study.db'}")
    assert "epochs" not in study.user_attrs and cf.epochs_of(study) == 3
    study.set_user_attr(cf.key(4, str(space.baseline())), [0.5])
    assert cf.per_epoch_reruns(study) == {str(space.baseline()): {}}
    study.set_user_attr("epochs", 1)
    assert cf.epochs_of(study) == 1 and cf.per_epoch_reruns(study) == {str(space.baseline()): {4: [0.5]}}


def test_commands_parse_a_space_once_and_read_the_study_s_record_from_anywhere(tmp_path, monkeypatch):
    parses = []
    real = spacefile._parse
    monkeypatch.setattr(spacefile, "_parse", lambda *a, **k: parses.append(a[2]) or real(*a, **k))
    space_file(tmp_path, training={"noise_seeds": 2, "epochs": 1, "confirm": 0})
    r = run_nas("search", "--space", "tiny.yaml", "--trials", 2, "--sampler", "random", cwd=tmp_path)
    assert r.returncode == 0, r
    assert len(parses) == 1, parses
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    url = f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}"
    for command in (("report", "--no-remeasure"), ("export", "best", "--no-weights", "--out", elsewhere / "x")):
        parses.clear()
        r = run_nas(*command, "--study", "tiny", "--storage", url, cwd=elsewhere)
        assert r.returncode == 0, r
        assert parses == [], (command, parses)
    study = optuna.load_study(study_name="tiny", storage=url)
    assert study.user_attrs["space_path"] == str((tmp_path / "tiny.yaml").resolve()), "stored resolved"
    assert study.user_attrs["space_data"]["path"] == str((tmp_path / "tiny.yaml").resolve())
    assert [t.state for t in study.get_trials()][:1] == [TrialState.COMPLETE]


def test_a_study_made_before_it_recorded_its_parsed_space_is_read_from_its_yaml_once(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    space = load_space(space_file(tmp_path))
    study = _study(space, url)
    study.set_user_attr("space_data", None)  # as studies made before it was recorded
    parses = []
    real = spacefile._parse
    monkeypatch.setattr(spacefile, "_parse", lambda *a, **k: parses.append(a[2]) or real(*a, **k))
    reopened = optuna.load_study(study_name=space.name, storage=url)
    assert stored_space(reopened) == stored_space(reopened)
    assert stored_space(reopened).stages == space.stages and len(parses) == 1


@pytest.mark.parametrize(
    "per_epoch, figures, words",
    [(True, [0.5], "stopped after 1 of 2 epochs"), (False, [], "stopped before its last validation")],
)
def test_a_rerun_that_stops_short_says_how_far_it_got(tmp_path, per_epoch, figures, words):
    """A re-run validated every epoch names the epochs it reached; one validated after its last epoch
    only (a confirmation's) has no figure to count, and says that it stopped before that validation."""
    import dataclasses

    from nas.core.task import FitResult
    from nas.search._reruns import make_fit

    space = load_space(space_file(tmp_path))

    class Stops:  # the space's task, but its fits stop before the end
        def __getattr__(self, name):
            return getattr(space.task, name)

        def fit(self, *args, **kwargs):
            return FitResult(curve=list(figures))

    fit = make_fit(dataclasses.replace(space, task=Stops()), None, 10, 2, tmp_path)
    with pytest.raises(RuntimeError, match=words):
        fit(str(space.baseline()), 0, "confirming", per_epoch)
