"""Two or three first runs at once on a fresh folder: all succeed and leave stores that every later command opens.

Without care both MLflow and Optuna race to create a fresh SQLite file's schema ("table _alembic_tmp_... already
exists"), and a process interrupted half-way can leave a store every later command refuses.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.cli import ROOT
from tests.helpers.stores import QUIET, Stores

pytestmark = pytest.mark.slow


def together(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Start every command at the same moment and wait for all of them."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-m", *cmd], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for cmd in commands]
    done = []
    for cmd, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return done


@pytest.mark.parametrize("round_, processes", [(1, 2), (2, 2), (3, 2), (4, 3), (5, 3)])
def test_first_single_runs_started_together_all_succeed(tmp_path, round_, processes):
    stores = Stores.at(tmp_path)
    runs = together([["src.train", *QUIET, *stores.overrides(), f"hydra.run.dir={tmp_path / f'run{i}'}"]
                     for i in range(processes)])
    for done in runs:
        assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    assert len(client.search_runs([exp.experiment_id])) == processes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".creating")]  # no temporary store left behind


@pytest.mark.parametrize("round_, processes", [(1, 2), (2, 3)])
def test_first_sweeps_on_one_study_started_together_all_succeed(tmp_path, round_, processes):
    stores = Stores.at(tmp_path)
    sweeps = together([["src.train", "--multirun", *QUIET, *stores.overrides(), "hydra.sweeper.n_trials=4",
                        "hydra.sweeper.study_name=together", f"hydra.sweep.dir={tmp_path / f'sweep{i}'}"]
                       for i in range(processes)])
    for done in sweeps:
        assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="together", storage=stores.storage)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 4
    client = MlflowClient(stores.tracking_uri)
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    parents = client.search_runs([exp.experiment_id], "tags.run_purpose = 'hyperparameter_sweep'")
    assert len(parents) == 1


def test_with_two_workers_the_configured_trial_is_never_pruned_when_the_other_sets_the_bar(tmp_path):
    """The configured model is slow and weak (300 stumps) beside fast, better candidates: the other worker's trials
    reach each rung first and set the bar, and successive halving would prune it; it runs to the end (the sweep's
    reference: a sweep never ends on less evidence than a single run)."""
    from tests.helpers.sweeps import together as started_together

    stores = Stores.at(tmp_path)
    common = [*QUIET, *stores.overrides(), "hydra.sweeper.n_trials=8", "hydra.sweeper.study_name=bar",
              "hydra.sweeper.pruner=successive_halving", "evaluation.row_looks=[0.1111,0.3333]",
              "model.max_depth=1", "model.n_estimators=300", "model.class_weight=null",
              "model.max_depth=choice(1,8,12)", "model.n_estimators=choice(5,300)"]
    done = started_together([["src.train", "--multirun", *common, f"hydra.sweep.dir={tmp_path / f'w{i}'}"]
                             for i in range(2)])
    for result in done:
        assert result.returncode == 0, result.stderr[-2000:]
    study = optuna.load_study(study_name="bar", storage=stores.storage)
    (start,) = [t for t in study.trials if t.user_attrs.get("sweeper.start_point")]
    assert start.state == optuna.trial.TrialState.COMPLETE and sorted(start.intermediate_values) == [1, 3, 9, 18, 27]
    earlier = [t for t in study.trials if t.number != start.number and t.datetime_complete is not None
               and t.datetime_complete < start.datetime_complete]
    assert earlier, "no other trial reached a rung before the configured one finished"
    # the bar it would have been pruned against: an earlier trial better at one of successive halving's rungs
    bar = [(t.number, step) for t in earlier for step in (1, 3, 9)
           if step in t.intermediate_values and t.intermediate_values[step] > start.intermediate_values[step]]
    assert bar, [(t.number, t.intermediate_values) for t in earlier]
