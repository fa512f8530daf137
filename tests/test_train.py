"""One training run from the command line, checked through MlflowClient."""

import json

import pytest

from src.data.schema import FEATURES
from tests.helpers.cli import ROOT, run_in_process
from tests.helpers.stores import SMALL

pytestmark = pytest.mark.slow


def test_single_run_logs_a_complete_mlflow_run(stores):
    before = {p.name for p in ROOT.iterdir()}
    out = run_in_process("src.train", *SMALL, *stores.overrides(), "model.max_depth=12")
    assert out.returncode == 0, out.stderr
    assert "val_pr_auc = " in out.stdout and " ± " in out.stdout  # the objective with its uncertainty: a result
    assert "fold 1/3 done" in out.stderr and "val_pr_auc = " not in out.stderr  # progress: stderr
    run_id_line = [line for line in out.stdout.splitlines() if "/#/experiments/" in line]
    assert run_id_line and run_id_line[0].strip().startswith("http://127.0.0.1:5000/#/experiments/")
    client = stores.client()
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["max_depth"] == "12" and params["n_estimators"] == "5"
    assert {"min_samples_split", "min_samples_leaf", "class_weight", "test_size", "cv_folds", "split_seed",
            "random_state"} <= set(params)
    metrics = run.data.metrics
    assert 0 < metrics["val_pr_auc"] <= 1 and metrics["val_pr_auc_std"] > 0
    assert 0 < metrics["val_roc_auc"] <= 1 and metrics["fit_seconds"] > 0
    # money: each fold at the threshold of the other folds, and the operating point chosen on all of them
    assert "val_net_gain" in metrics and metrics["val_net_gain_std"] > 0 and "val_net_gain = " in out.stdout
    assert 0 <= float(params["decision_threshold"]) <= 1 and params["cost_model"] == "anchor"
    assert params["time_feature"] == "time_of_day"
    tags = run.data.tags
    assert tags["run_purpose"] == "hyperparameter_tuning"
    assert tags["mlflow.source.name"].startswith("python -m src.train") and tags["mlflow.user"]  # where it came from
    assert run.info.run_id in run_id_line[0]
    assert tags["model_family"] == "random_forest" and tags["problem_type"] == "fraud_detection"
    assert len(tags["data_sha256"]) == 64 and tags["git_commit"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/confusion_matrix.png", "plots/precision_recall_curve.png", "plots/roc_curve.png",
                         "plots/net_gain.png"}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "config")] == ["config/config.yaml"]
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic" and dataset_input.dataset.digest
    schema = json.loads(dataset_input.dataset.schema)["mlflow_colspec"]
    assert [c["name"] for c in schema] == [*FEATURES, "Class"]
    assert {c["type"] for c in schema} == {"double", "long"} and all(c["required"] for c in schema)
    assert (stores.root / "mlruns").is_dir()  # artifacts beside the temporary store...
    assert {p.name for p in ROOT.iterdir()} == before  # ...and nothing new in the checkout
