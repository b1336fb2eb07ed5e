import subprocess
import sys
import textwrap
import time

import optuna

WORKER = """
import sys, optuna
study = optuna.load_study(study_name="pg", storage=sys.argv[1])
trial = study.ask()
x = trial.suggest_float("x", 0.0, 1.0)
study.tell(trial, [x, float(sys.argv[2])])
"""


def test_two_processes_share_a_postgres_study(fresh_postgres_db):
    study = optuna.create_study(study_name="pg", storage=fresh_postgres_db, directions=["maximize", "minimize"])
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, fresh_postgres_db, str(i)]) for i in (1, 2)]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    trials = study.get_trials()
    assert len(trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.values[1] for t in trials) == [1.0, 2.0]
    assert len({t.number for t in trials}) == 2


def test_machines_opening_an_empty_database_at_the_same_moment_all_succeed(fresh_postgres_db):
    """Every machine of a search starts together: all of them find the database empty and create
    Optuna's tables at once. The losers of that race retry and find the tables."""
    code = textwrap.dedent(f"""
        import sys, time
        from nas.study.storage import open_storage
        time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
        open_storage({fresh_postgres_db!r})
        print("opened")
    """)
    start = str(time.time() + 4)  # every process past its imports, then all at once
    procs = [
        subprocess.Popen([sys.executable, "-c", code, start], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "opened" in out, err[-2000:]
