"""Defects of issue 13, each shown by a real run (written against the code before the fix)."""

from __future__ import annotations

import os
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers.cli import assert_ends_in_one_line_error, run_module
from tests.helpers.proxy import FaultProxy
from tests.helpers.servers import MlflowServer
from tests.helpers.stores import SMALL

pytestmark = pytest.mark.slow
QUIET = [*SMALL, "registry.enabled=false", "mlflow.log_plots=false", "hydra.sweeper.pruner=none"]


def sweep(stores, *overrides, module="src.train", env=None):
    return run_module(module, "--multirun", *QUIET, *stores.overrides(), *overrides, env=env)


def test_force_add_pins_the_key(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=2", "++model.max_depth=7", "hydra.sweeper.study_name=pin")
    assert out.returncode == 0, out.stderr
    study = optuna.load_study(study_name="pin", storage=stores.storage)
    assert all("model.max_depth" not in t.params and "++model.max_depth" not in t.params for t in study.trials)
    client = stores.client()
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    trial_runs = client.search_runs([exp.experiment_id], "tags.run_purpose = 'hyperparameter_tuning'")
    assert {r.data.params["max_depth"] for r in trial_runs} == {"7"}


def test_failure_budget_counts_this_invocation_only(stores):
    common = ["hydra.sweeper.n_trials=2", "hydra.sweeper.max_failures=2", "hydra.sweeper.study_name=budget"]
    first = sweep(stores, *common, module="tests.apps.flaky_app", env={"FLAKY_RAISE_SHARE": "1"})
    assert first.returncode == 2 and "failure budget spent" in first.stderr
    fixed = sweep(stores, *common, module="tests.apps.flaky_app")  # the cause fixed: the rerun goes on
    assert fixed.returncode == 0, fixed.stderr
    study = optuna.load_study(study_name="budget", storage=stores.storage)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2


def test_late_resume_keeps_a_finished_trial_whose_worker_died(stores):
    common = ["hydra.sweeper.study_name=late", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]
    first = sweep(stores, "hydra.sweeper.n_trials=1", *common)
    assert first.returncode == 0, first.stderr
    # A worker that died after its trial's job finished and before telling Optuna, long ago: its run is FINISHED
    # with the objective, its trial RUNNING with a heartbeat older than the grace period.
    study = optuna.load_study(study_name="late", storage=stores.storage)
    client = stores.client()
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    run = client.create_run(exp.experiment_id, run_name="trial-001", tags={
        "mlflow.parentRunId": parent_id, "optuna.study_name": "late", "optuna.trial_number": "1",
        "run_purpose": "hyperparameter_tuning"})
    client.log_metric(run.info.run_id, "val_pr_auc", 0.4321)
    client.set_terminated(run.info.run_id, "FINISHED")
    storage = optuna.storages.RDBStorage(stores.storage, heartbeat_interval=1, grace_period=2)
    trial_id = storage.create_new_trial(study._study_id)
    storage.set_trial_user_attr(trial_id, "mlflow_run_id", run.info.run_id)
    storage.set_trial_system_attr(trial_id, "sweeper.worker", {"host": os.uname().nodename, "pid": 2**22 + 7,
                                                                "invocation": "dead"})
    storage.record_heartbeat(trial_id)
    storage.remove_session()
    time.sleep(3)  # older than the grace period
    second = sweep(stores, "hydra.sweeper.n_trials=2", *common)
    assert second.returncode == 0, second.stderr
    trial = optuna.load_study(study_name="late", storage=stores.storage).trials[1]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.4321)


def test_a_transient_tracking_error_never_makes_a_second_parent(stores, tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    try:
        with FaultProxy(server.uri) as proxy:
            args = ["hydra.sweeper.study_name=oneparent", f"mlflow.tracking_uri={proxy.uri}"]
            first = sweep(stores, "hydra.sweeper.n_trials=1", *args)
            assert first.returncode == 0, first.stderr
            proxy.fail("/runs/get", status=403, body={"error_code": "PERMISSION_DENIED", "message": "try later"},
                       times=1)
            second = sweep(stores, "hydra.sweeper.n_trials=2", *args)
            assert_ends_in_one_line_error(second, "cannot read the parent run")
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("creditcardfraud-sweep")
        parents = client.search_runs([exp.experiment_id], "tags.run_purpose = 'hyperparameter_sweep'")
        assert len(parents) == 1
    finally:
        server.stop()


def test_objective_is_named_in_the_study(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=named")
    assert out.returncode == 0, out.stderr
    assert optuna.load_study(study_name="named", storage=stores.storage).metric_names == ["val_pr_auc"]


def test_packaging_leaves_only_the_users_study(stores):
    out = run_module("src.train", "--multirun", *SMALL, *stores.overrides(), "mlflow.log_plots=false",
                     "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=alone")
    assert out.returncode == 0, out.stderr
    assert optuna.get_all_study_names(stores.storage) == ["alone"]


def test_packaged_plots_keep_the_default_style(stores, tmp_path):
    import matplotlib.image

    out = run_module("src.train", "--multirun", *SMALL, *stores.overrides(), "hydra.sweeper.pruner=none",
                     "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=style")
    assert out.returncode == 0, out.stderr
    client = stores.client()
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    (packaged,) = client.search_runs([exp.experiment_id], "tags.run_purpose = 'model_packaging'")
    path = client.download_artifacts(packaged.info.run_id, "test_plots/precision_recall_curve.png", str(tmp_path))
    pixels = (matplotlib.image.imread(path)[..., :3] * 255).round()
    ggplot_grey = ((pixels == 229).all(axis=-1)).mean()  # ggplot's axes background, #E5E5E5
    assert ggplot_grey < 0.01, f"{ggplot_grey:.0%} of the figure is ggplot's grey"
