"""The plugin on its own: a test app that is not about fraud (tests/apps/quadratic) swept through it, with nested
runs, pruning, failures, a final stage and a resume; and the plugin's one-way boundary."""

from __future__ import annotations

import ast
import sys

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests.helpers.cli import ROOT, Result, run_module
from tests.helpers.stores import Stores

pytestmark = pytest.mark.slow
APP = "tests.apps.quadratic.app"
PLUGIN = ROOT / "hydra_plugins" / "optuna_mlflow_sweeper"


def sweep(stores: Stores, *overrides: str) -> Result:
    return run_module(APP, "--multirun", f"tracking_uri={stores.tracking_uri}",
                      f"hydra.sweeper.storage={stores.storage}", f"hydra.sweep.dir={stores.sweep_dir}", *overrides)


def test_a_quadratic_is_minimised_with_nested_runs_pruning_failures_a_final_stage_and_a_resume(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=6", "fail_above=2.0")
    assert out.returncode == 0, out.stderr
    (name,) = optuna.get_all_study_names(stores.storage)  # the final stage's claim markers are gone
    study = optuna.load_study(study_name=name, storage=stores.storage)
    assert name.startswith("quad-") and study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.metric_names == ["loss"]
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["fail_reason"] == "error" and "is above 2.0" in t.user_attrs["error"]
                          for t in failed)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert all(t.user_attrs["loss_spread"] == 0.01 and t.user_attrs["steps_run"] == 4 for t in complete)
    assert all(line.endswith("steps_run 4") for line in out.stderr.splitlines() if " COMPLETE value " in line)

    runs = stores.runs(experiment="quadratic")
    (parent,) = [r for r in runs if r.data.tags.get("run_purpose") == "hyperparameter_sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["app"] == "quadratic"
    assert parent.data.tags["optuna.objective"] == "minimize loss"
    children = {int(r.data.tags["optuna.trial_number"]): r for r in runs
                if r.data.tags.get("run_purpose") == "hyperparameter_tuning"}
    expected = {TrialState.COMPLETE: "FINISHED", TrialState.PRUNED: "KILLED", TrialState.FAIL: "FAILED"}
    for t in study.trials:
        run = children[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.tags["app"] == "quadratic"
        assert run.info.status == expected[t.state], (t.number, t.state)
    best = min(complete, key=lambda t: t.value)
    assert parent.data.tags["best_trial_run_id"] == best.user_attrs["mlflow_run_id"]

    results = yaml.safe_load((stores.sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best.value) and results["best_value_spread"] == 0.01
    (refit,) = [r for r in runs if r.data.tags.get("run_purpose") == "refit"]
    assert refit.info.run_name == "refit" and refit.info.status == "FINISHED"
    assert results["final_run_id"] == refit.info.run_id
    x, y = best.params["x"], best.params["y"]
    assert results["final"]["refit_loss"] == pytest.approx((x - 1) ** 2 + (y + 2) ** 2 + 1)  # its override: steps=1
    assert results["final"]["fraud_app_imported"] is False

    again = sweep(stores, "hydra.sweeper.n_trials=8", "fail_above=2.0")  # the same study, continued
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name=name, storage=stores.storage)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 8
    assert len([r for r in stores.runs(experiment="quadratic")
                if r.data.tags.get("run_purpose") == "hyperparameter_sweep"]) == 1


ALLOWED = {"hydra", "omegaconf", "optuna", "mlflow", "matplotlib", "scipy"}  # matplotlib: Optuna's own
# plots need it; scipy (a dependency of mlflow): Student's t for the stopping rule


def test_the_plugin_imports_only_the_standard_library_hydra_omegaconf_optuna_and_mlflow():
    found = {}
    for path in PLUGIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - ALLOWED - set(sys.stdlib_module_names) - {"__future__"}:
                found.setdefault(top, []).append(path.name)
    assert not found, f"the plugin imports {found}"


def test_hydra_discovers_the_sweeper():
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [f"{p.__module__}.{p.__name__}" for p in Plugins.instance().discover(Sweeper)]
    assert "hydra_plugins.optuna_mlflow_sweeper.optuna_mlflow_sweeper.OptunaMlflowSweeper" in names
