"""TrialInfo: what the search stored on a trial, read by name; old studies (fields missing) read as
empty, never as a KeyError."""

from optuna.trial import FrozenTrial, TrialState

from nas.core.architecture import Architecture
from nas.search._pruning import rung_values
from nas.study import record as r
from nas.study.record import TrialInfo


def frozen(number=0, state=TrialState.COMPLETE, values=(0.9, 3.0), **attrs):
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=list(values) if state == TrialState.COMPLETE else None,
        datetime_start=None,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs=attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def test_every_field_reads_typed_from_what_a_trial_stores():
    t = frozen(
        3,
        **{
            r.ARCH: "resnet10t|none|none|none|se(r=16)",
            r.WORKER: "host:12",
            r.BASELINE: False,
            r.STOP_REASON: "completed 3 epochs",
            r.CURVE: [0.5, 0.75, 0.875],
            r.LATENCY: 3.25,
            r.LATENCY_CI: [3.0, 3.5],
            r.LATENCY_TARGET: "cpu/b1/32px/t1",
            r.LATENCY_SPREAD: 1.5,
            r.PARAMS: 4_920_000,
            r.FLOPS: 123_000,
            r.SEED: 5,
            r.WEIGHTS: "runs/x/weights/trial_3.safetensors",
            r.SECONDS_TRAIN_VAL: 1.5,
            r.rung_key(1): "kept within noise",
        },
    )
    info = TrialInfo.of(t)
    assert (info.number, info.state, info.values) == (3, TrialState.COMPLETE, (0.9, 3.0))
    assert info.arch == "resnet10t|none|none|none|se(r=16)"
    assert info.architecture == Architecture.parse(info.arch)
    assert info.worker == "host:12" and not info.baseline and not info.is_copy and info.duplicate_of is None
    assert info.curve == (0.5, 0.75, 0.875) and info.stop_reason == "completed 3 epochs"
    assert info.latency_ms == 3.25 and info.latency_ci_ms == (3.0, 3.5) and info.latency_target == "cpu/b1/32px/t1"
    assert info.latency_spread_pct == 1.5
    assert (info.params, info.flops, info.seed) == (4_920_000, 123_000, 5)
    assert info.weights.endswith("trial_3.safetensors") and info.seconds_train_val == 1.5
    assert info.rung_decision(1) == "kept within noise" and info.rung_decision(3) == ""


def test_a_trial_of_an_older_study_reads_as_empty_not_as_an_error():
    info = TrialInfo.of(frozen(0, TrialState.FAIL))
    assert info.arch == "" and info.stop_reason == "" and info.curve == ()
    assert info.latency_ms is None and info.latency_ci_ms is None and info.params is None
    assert info.latency_spread_pct is None
    assert info.seed is None and info.weights is None and info.pruned_at is None and info.worker is None
    assert not info.baseline and not info.infeasible and not info.is_copy
    # a seed that is not an integer (studies before every trial recorded its own) is no seed
    assert TrialInfo.of(frozen(1, **{r.SEED: True})).seed is None
    assert TrialInfo.of(frozen(1, **{r.SEED: "5"})).seed is None


def test_a_copy_is_known_by_its_source_and_left_out_of_rung_decisions():
    trained = frozen(1, **{r.CURVE: [0.5], r.LATENCY: 3.0, r.LATENCY_CI: [2.9, 3.1]})
    copy = frozen(2, **{r.CURVE: [0.5], r.LATENCY: 3.0, r.DUPLICATE_OF: 1})
    infeasible = frozen(3, **{r.CURVE: [0.4], r.LATENCY: 9.0, r.INFEASIBLE: True})
    short = frozen(4, **{r.CURVE: [], r.LATENCY: 2.0})
    assert TrialInfo.of(copy).is_copy and TrialInfo.of(copy).duplicate_of == 1
    assert rung_values([trained, copy, infeasible, short], 1) == [(1, 0.5, 3.0, 2.9, 3.1)]
