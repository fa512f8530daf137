"""Two or three first runs at once on a fresh folder: all succeed and leave stores that every later command opens.

Without care both MLflow and Optuna race to create a fresh SQLite file's schema ("table _alembic_tmp_... already
exists"), and a process interrupted half-way can leave a store every later command refuses. The processes are forked
together from a forkserver (tests/helpers/sweeps.py: together), so they reach the stores within milliseconds of each
other: with the creation care removed (``create_whole`` returning at once) every round of both tests failed, 7 of 7
(2026-12-03), so two rounds each, of two and of three processes, are kept.
"""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.helpers.stores import QUIET, Stores
from tests.helpers.sweeps import sweep, together

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("round_, processes", [(1, 2), (2, 3)])
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


def at_fold_one(client: MlflowClient, trial: optuna.trial.FrozenTrial) -> int:
    """When the trial's job logged fold 1 (step 9): MLflow's own timestamp of the metric."""
    history = client.get_metric_history(trial.user_attrs["mlflow_run_id"], "val_pr_auc_running_mean")
    return next(m.timestamp for m in history if m.step == 9)


def test_with_two_workers_the_configured_trial_is_never_pruned_when_the_other_sets_the_bar(tmp_path):
    """Two trials at once (Hydra's joblib launcher, one process each): the configured model (600 stumps: slow) and a
    candidate (50 trees of depth 12: fast) that beats it at every rung, so it is never pruned whichever process reaches
    a rung first, and reaches fold 1 (step 9) first, where successive halving, with two trials at the rung, keeps only
    the outright best. The configured trial runs to the end anyway: it is the sweep's reference (seed 1: the candidate's
    values are the sampler's, the same in every run). Which process is at fold 1 first is the host's doing: a run in
    which the candidate was not first proves nothing and is tried again, at most three times."""
    for attempt in range(3):
        (tmp_path / f"try{attempt}").mkdir()
        stores = Stores.at(tmp_path / f"try{attempt}")
        out = sweep(stores, "hydra.sweeper.n_trials=2", "hydra.sweeper.seed=1",
                    "hydra.sweeper.pruner=successive_halving", "evaluation.row_looks=[0.1111,0.3333]",
                    "model.max_depth=1", "model.n_estimators=600", "model.class_weight=null",
                    "model.max_depth=choice(1,8,12)", "model.n_estimators=choice(50,600)",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
        assert out.returncode == 0, out.stderr
        (name,) = optuna.get_all_study_names(stores.storage)
        start, other = optuna.load_study(study_name=name, storage=stores.storage).trials
        assert start.user_attrs["sweeper.start_point"] is True and other.params["model.n_estimators"] == 50
        assert start.state == optuna.trial.TrialState.COMPLETE
        assert sorted(start.intermediate_values) == [1, 3, 9, 18, 27]
        assert all(other.intermediate_values[s] > start.intermediate_values[s] for s in (1, 3, 9))  # a higher bar
        client = MlflowClient(stores.tracking_uri)
        if at_fold_one(client, other) < at_fold_one(client, start):  # the candidate set the bar there first
            return
    pytest.fail("in three runs the candidate never reached fold 1 before the configured trial: nothing was tested")
