"""The sweeper is its own distribution: installed alone into a fresh virtual environment (no app, no checkout on the
path), it sweeps the quadratic test app there with nested runs, pruning and its final stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers.cli import ROOT

pytestmark = pytest.mark.slow
DISTRIBUTION = ROOT / "plugins" / "optuna_mlflow_sweeper"


def test_the_plugin_installs_alone_and_sweeps_the_quadratic_app_with_nested_runs(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # a copy of the distribution: the checkout itself stays untouched by the build (build/, *.egg-info)
    source = tmp_path / "source"
    shutil.copytree(DISTRIBUTION, source, symlinks=False, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                                        "*.egg-info"))
    # --no-compile: pip would otherwise byte-compile every module of MLflow's dependency tree (most of the install's
    # time); the sweep below compiles only what it imports.
    # ... with this suite's MLflow, which reads the stores afterwards (a newer MLflow writes a schema an older refuses)
    pins = tmp_path / "constraints.txt"
    pins.write_text(f"mlflow-skinny=={version('mlflow-skinny')}\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-compile", "--constraint",
                                str(pins), str(source)], capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                            timeout=120).stdout
    assert "hydra-optuna-mlflow-sweeper==0.2.0" in listed and "creditcardfraud" not in listed.lower()
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert "mlflow-skinny" in names and "mlflow" not in names  # MLflow's client: no UI, server or model flavours

    app = tmp_path / "app"
    shutil.copytree(ROOT / "tests" / "apps" / "quadratic", app, ignore=shutil.ignore_patterns("__pycache__"))
    store = tmp_path / "stores"
    store.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    done = subprocess.run(
        [str(python), str(app / "app.py"), "--multirun", "hydra.sweeper.n_trials=6",
         f"tracking_uri=sqlite:///{store / 'mlflow.db'}", f"hydra.sweeper.storage=sqlite:///{store / 'optuna.db'}",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr

    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["n_complete"] + results["n_pruned"] == 6
    assert results["final"]["fraud_app_imported"] is False  # the app's own modules were never imported
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quadratic")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parent = client.get_run(results["parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trials = [r for r in children if r.data.tags.get("run_purpose") == "hyperparameter_tuning"]
    assert len(trials) == 6 and {r.data.tags["optuna.trial_number"] for r in trials} == {str(n) for n in range(6)}
    assert [r.info.run_name for r in children if r.data.tags.get("run_purpose") == "refit"] == ["refit"]
    assert parent.info.status == "FINISHED" and parent.data.tags["app"] == "quadratic"
