import subprocess
import sys

import optuna

WORKER = """
import sys, optuna
study = optuna.load_study(study_name="pg", storage=sys.argv[1])
trial = study.ask()
x = trial.suggest_float("x", 0.0, 1.0)
study.tell(trial, [x, float(sys.argv[2])])
"""


def test_two_processes_share_a_postgres_study(fresh_postgres_db):
    study = optuna.create_study(
        study_name="pg", storage=fresh_postgres_db, directions=["maximize", "minimize"]
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, fresh_postgres_db, str(i)])
        for i in (1, 2)
    ]
    assert [w.wait(timeout=60) for w in workers] == [0, 0]
    trials = study.get_trials()
    assert len(trials) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.values[1] for t in trials) == [1.0, 2.0]
    assert len({t.number for t in trials}) == 2
