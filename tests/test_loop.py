"""The scheduling rule of a search worker (``decide``), without a study: stop, wait or start."""

from __future__ import annotations

import random

from nas.search._loop import MAX_FAILURES, Progress, Start, Stop, Wait, decide


def progress(**kw) -> Progress:
    base = dict(target=10, done=0, running=0, distinct_done=0, distinct_started=0, space_size=81)
    return Progress(**{**base, **kw})


def test_a_fresh_study_starts_and_a_reached_target_stops():
    assert decide(progress()) == Start()
    assert decide(progress(done=10, distinct_done=10, distinct_started=10)) == Stop("trials")
    assert decide(progress(done=12, distinct_done=9, distinct_started=9)) == Stop("trials")  # resumed with fewer


def test_trials_running_elsewhere_are_waited_for_not_doubled():
    assert decide(progress(done=8, running=2, distinct_done=8, distinct_started=10)) == Wait()
    assert decide(progress(done=8, running=1, distinct_done=8, distinct_started=9)) == Start()


def test_timeout_stops_only_once_passed():
    assert decide(progress(elapsed_s=59.9, timeout_s=60)) == Start()
    assert decide(progress(elapsed_s=60.1, timeout_s=60)) == Stop("timeout")
    assert decide(progress(elapsed_s=1e9)) == Start()  # no timeout given


def test_a_space_done_stops_and_its_last_architectures_running_elsewhere_wait():
    assert decide(progress(target=200, done=81, distinct_done=81, distinct_started=81, space_size=81)) == Stop(
        "space exhausted: all 81 architectures evaluated, fewer than the 200 asked"
    )
    assert (
        decide(progress(target=200, done=79, running=2, distinct_done=79, distinct_started=81, space_size=81)) == Wait()
    )
    # two evaluations of one architecture (a study of an older version) are not two architectures
    assert decide(progress(target=200, done=90, distinct_done=80, distinct_started=80, space_size=81)) == Start()


def test_failing_trials_stop_the_run_with_the_last_reason():
    step = decide(progress(failed=MAX_FAILURES, last_failure="failed: out of memory"))
    assert isinstance(step, Stop) and step.reason.startswith(f"{MAX_FAILURES} trials failed")
    assert step.reason.endswith("(last: failed: out of memory)")
    assert decide(progress(failed=MAX_FAILURES - 1)) == Start()
    assert decide(progress(target=50, failed=MAX_FAILURES)) == Start(), "the limit grows with --trials"
    assert isinstance(decide(progress(target=50, failed=50)), Stop)


def test_workers_sharing_a_study_end_with_exactly_the_target():
    """Simulated workers asking in random order while trials finish in random order: the finished
    trials reach the target and never pass it, however many workers there are."""
    rng = random.Random(0)
    for workers in (1, 2, 3, 8):
        for target in (1, 5, 13):
            done, running, idle = 0, 0, list(range(workers))
            busy: list[int] = []
            for _ in range(10_000):
                if idle and (not busy or rng.random() < 0.5):
                    w = idle.pop(rng.randrange(len(idle)))
                    step = decide(
                        progress(
                            target=target,
                            done=done,
                            running=running,
                            distinct_done=done,
                            distinct_started=done + running,
                            space_size=1000,
                        )
                    )
                    if isinstance(step, Start):
                        running += 1
                        busy.append(w)
                    elif isinstance(step, Wait):
                        idle.append(w)
                    else:
                        assert step == Stop("trials")
                else:
                    if not busy:
                        break
                    idle.append(busy.pop(rng.randrange(len(busy))))
                    running, done = running - 1, done + 1
                assert done + running <= target
            assert done == target and running == 0, (workers, target)
