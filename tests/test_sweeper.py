"""The sweeper end to end: real CLI runs into temporary SQLite stores (Optuna and MLflow)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from src.jobs.reuse import FOREST_ATTR, TWIN_ATTR
from tests.helpers.cli import (
    ROOT,
    assert_ends_in_one_line_error,
    assert_one_line_error,
    run_in_process,
)
from tests.helpers.stores import QUIET, Stores

pytestmark = pytest.mark.slow



def sweep(stores, *overrides, module="src.train", env=None):
    """A sweep in this process (with ``env`` set for the run only)."""
    args = ["--multirun", *QUIET, *stores.overrides(), *[o for o in overrides if o]]
    return run_in_process(module, *args, env=env)  # the flaky app reads its variables as each trial runs


def only_study(stores) -> optuna.Study:
    names = optuna.get_all_study_names(stores.storage)
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=stores.storage)


def runs(stores, purpose=None):
    return stores.runs(purpose)


def results(stores) -> dict:
    return yaml.safe_load((stores.sweep_dir / "optimization_results.yaml").read_text())


def test_every_complete_trial_scores_money_and_keeps_its_threshold_and_money_can_be_the_objective(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=4", "hydra.sweeper.pruner=median",
                "hydra.sweeper.pruner_options={n_startup_trials:1,n_warmup_steps:0}")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    by_id = {r.info.run_id: r for r in runs(stores, "hyperparameter_tuning")}
    for t in complete:
        assert {"val_net_gain", "val_net_gain_std", "decision_threshold", "net_gain_curve"} <= set(t.user_attrs)
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.metrics["val_net_gain"] == pytest.approx(t.user_attrs["val_net_gain"], abs=1e-4)
        assert float(run.data.params["decision_threshold"]) == pytest.approx(t.user_attrs["decision_threshold"],
                                                                             rel=1e-5)
    for t in study.trials:
        if t.state == TrialState.PRUNED:  # pruned on AP before its folds were done: no money, no threshold
            assert "val_net_gain" not in t.user_attrs and "decision_threshold" not in t.user_attrs
    money = StoresAt(stores, "money")
    out = sweep(money, "hydra.sweeper.n_trials=3", "hydra.sweeper.objective.name=val_net_gain")
    assert out.returncode == 0, out.stderr
    study = only_study(money)
    assert study.metric_names == ["val_net_gain"]
    assert all(t.value == t.user_attrs["val_net_gain"] and "val_pr_auc" in t.user_attrs for t in study.trials)
    assert results(money)["best_value_spread"] == study.best_trial.user_attrs["val_net_gain_std"]
    assert "val_net_gain ± spread" in out.stdout


def StoresAt(stores, name):  # noqa: N802 (a second set of stores beside the first)
    from tests.helpers.stores import Stores

    (stores.root / name).mkdir()
    return Stores.ready(stores.root / name)


def test_trials_are_nested_runs_linked_both_ways(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=4", "mlflow.log_plots=true")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    (parent,) = runs(stores, "hyperparameter_sweep")
    trials = runs(stores, "hyperparameter_tuning")
    assert parent.info.run_name == study.study_name and parent.info.status == "FINISHED"
    assert parent.data.tags["optuna.study_name"] == study.study_name
    assert {"optuna.storage", "optuna.sampler", "search_space", "pinned"} <= set(parent.data.tags)
    by_id = {r.info.run_id: r for r in trials}
    assert len(by_id) == 4
    for t in study.trials:
        run = by_id[t.user_attrs["mlflow_run_id"]]  # Optuna -> MLflow
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["optuna.trial_number"] == str(t.number)  # MLflow -> Optuna
        assert run.data.tags["optuna.study_name"] == study.study_name
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial_state"] == "COMPLETE"
        assert run.data.metrics["val_pr_auc"] == pytest.approx(t.value, abs=5e-5)  # shown to 4 decimals
        assert {"val_pr_auc_std", "val_roc_auc", "fit_seconds"} <= set(run.data.metrics)
        assert run.data.tags["mlflow.source.name"] == "python -m src.train" and run.data.tags["mlflow.user"]
        assert run.data.params["max_depth"] == str(t.params["model.max_depth"])
        assert run.data.params["n_estimators"] == "5"  # pinned on the command line
    best = max(study.trials, key=lambda t: t.value)
    assert parent.data.tags["best_trial_run_id"] == best.user_attrs["mlflow_run_id"]
    # the parent summarises the study: a description, the best params under bare names, the best value under the
    # trials' own metric name, the search space in full
    note = parent.data.tags["mlflow.note.content"]
    assert f"**Best**: trial {best.number}" in note and best.user_attrs["mlflow_run_id"] in note
    assert f"{best.value:.4f} ± {best.user_attrs['val_pr_auc_std']:.4f}" in note and "model.n_estimators=5" in note
    assert {k: parent.data.params[k] for k in ("max_depth", "min_samples_split", "min_samples_leaf")} == {
        k.rsplit(".", 1)[-1]: str(v) for k, v in best.params.items()}
    assert parent.data.params["n_estimators"] == "5"  # pinned: the parent names the whole winning model
    assert parent.data.metrics["val_pr_auc"] == pytest.approx(best.value, abs=5e-5)
    assert parent.data.tags["mlflow.source.name"] == "python -m src.train"
    space = stores.client().download_artifacts(parent.info.run_id, "study/search_space.yaml", str(stores.root))
    assert "model.max_depth" in yaml.safe_load(open(space))["search_space"]
    history = stores.client().get_metric_history(parent.info.run_id, "best_val_pr_auc")
    assert [m.step for m in history] == [0, 1, 2, 3] and history[-1].value == pytest.approx(best.value, abs=5e-5)
    artifacts = {a.path for a in stores.client().list_artifacts(parent.info.run_id, "optuna")}
    assert artifacts == {"optuna/optimization_history.png", "optuna/param_importances.png",
                         "optuna/parallel_coordinate.png"}
    res = results(stores)
    assert res["best_value"] == pytest.approx(best.value) and res["parent_run_id"] == parent.info.run_id
    assert res["best_params"] == best.params and res["study_name"] == study.study_name
    assert res["storage"] == stores.storage and res["best_value_spread"] > 0
    # results on stdout, progress on stderr; where to look: the mlflow ui command, then the parent run's page
    assert "mlflow ui -w 1 --backend-store-uri" in out.stdout and "best: trial" in out.stdout
    url = next(line.strip() for line in reversed(out.stdout.splitlines()) if "/#/experiments/" in line)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
                   f"?workflowType=machine_learning")
    experiment = stores.client().get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # newer UIs: Model training
    last = out.stdout.strip().splitlines()[-1]  # the sweep's last word: did the search beat the configured model?
    assert "over the configured model" in last or "no trial beat the configured model" in last
    assert "COMPLETE value" not in out.stdout and "INFO mlflow" not in out.stderr + out.stdout
    assert sum("COMPLETE value" in line for line in out.stderr.splitlines()) == 4  # one progress line each
    # the first trial is the configured model (conf/model: unlimited depth, split 2, leaf 1), then the sampler's
    assert study.trials[0].params == {"model.max_depth": "none", "model.min_samples_split": 2,
                                      "model.min_samples_leaf": 1}
    assert "first trial: the configured values" in out.stderr


def test_a_trial_growing_the_same_forests_as_an_earlier_one_takes_its_result(stores):
    # with leaf 2, split 2, 3 and 4 grow the same trees (scikit-learn raises split to 2 * leaf)
    same = ["hydra.sweeper.study_name=twins", "model.min_samples_split=choice(2,3,4)", "model.min_samples_leaf=2",
            "model.max_depth=6"]
    out = sweep(stores, "hydra.sweeper.n_trials=3", *same)
    assert out.returncode == 0, out.stderr
    first, *later = only_study(stores).trials
    assert TWIN_ATTR not in first.user_attrs and first.user_attrs["fit_seconds"] > 0
    by_id = {r.info.run_id: r for r in runs(stores, "hyperparameter_tuning")}
    for t in later:
        assert t.state == TrialState.COMPLETE and t.value == first.value and t.user_attrs[TWIN_ATTR] == 0
        assert t.user_attrs[FOREST_ATTR] == first.user_attrs[FOREST_ATTR]
        run = by_id[t.user_attrs["mlflow_run_id"]]
        assert run.data.tags["same_forest_as_trial"] == "0"
        assert run.data.tags["same_forest_as_run"] == first.user_attrs["mlflow_run_id"]
        assert run.data.metrics["fit_seconds"] == 0
        assert run.data.metrics["val_pr_auc"] == pytest.approx(first.value, abs=5e-5)
        assert run.data.metrics["val_pr_auc_std"] == pytest.approx(first.user_attrs["val_pr_auc_std"], abs=5e-5)
    assert out.stderr.count("[the same forests as trial 0: its result, not refitted]") == 2
    # the same study on other data is refused (its identity holds the data's sha256): nothing mixes
    out = sweep(stores, "hydra.sweeper.n_trials=4", *same, "dataset.seed=1")
    assert_ends_in_one_line_error(out, "study 'twins' was created for other trials than this run's")
    assert "another data_sha256" in out.stderr and len(only_study(stores).trials) == 3


def test_pinned_value_is_never_sampled(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=3", "model.max_depth=3", "hydra.sweeper.start_from_config=false")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    assert all("model.max_depth" not in t.params for t in study.trials)
    assert "first trial:" not in out.stderr and "fixed_params" not in study.trials[0].system_attrs
    # No configured trial in this study, not one yet to finish: the progress line says which (2026-12-03).
    assert "this study has no trial of the configured values: no paired evidence" in out.stderr
    assert "the configured trial had not finished" not in out.stderr
    assert {r.data.params["max_depth"] for r in runs(stores, "hyperparameter_tuning")} == {"3"}
    (parent,) = runs(stores, "hyperparameter_sweep")
    assert '"model.max_depth": 3' in parent.data.tags["pinned"]
    assert "model.max_depth" not in parent.data.tags["search_space"]
    assert results(stores)["pinned_params"]["model.max_depth"] == 3


def test_command_line_range_is_exclusive_and_replaces_the_space(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=6", "hydra.sweeper.sampler=random",
                "model.min_samples_leaf=range(10,30,step=10)")
    assert out.returncode == 0, out.stderr
    leaves = {t.params["model.min_samples_leaf"] for t in only_study(stores).trials}
    assert leaves <= {10, 20} and leaves  # never 30


def test_resume_continues_to_the_exact_total_with_one_parent(stores):
    first = sweep(stores, "hydra.sweeper.n_trials=3")
    assert first.returncode == 0, first.stderr
    second = sweep(stores, "hydra.sweeper.n_trials=5")
    assert second.returncode == 0, second.stderr
    study = only_study(stores)
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(runs(stores, "hyperparameter_sweep")) == 1
    assert len(runs(stores, "hyperparameter_tuning")) == 5
    # A resumed seeded sampler must not replay the first proposals.
    proposals = [tuple(sorted(t.params.items())) for t in study.trials]
    assert proposals[3:5] != proposals[0:2]
    third = sweep(stores, "hydra.sweeper.n_trials=5")  # already complete: nothing new
    assert third.returncode == 0 and len(only_study(stores).trials) == 5
    # A timeout stops new trials, never the first one (as with Optuna's timeout): one more trial, then a stop.
    fourth = sweep(stores, "hydra.sweeper.n_trials=8", "hydra.sweeper.timeout=0.001")
    assert fourth.returncode == 0, fourth.stderr
    assert "timeout of 0.001 s reached: 6/8 trials finished; rerun the same command to continue" in fourth.stderr
    assert len(only_study(stores).trials) == 6 and results(stores)["status"] == "timeout"


def test_failures_and_nan_are_fail_and_failed_and_the_sweep_goes_on(stores):
    env = {"FLAKY_RAISE": "1", "FLAKY_NAN": "2"}
    out = sweep(stores, "hydra.sweeper.n_trials=3", module="tests.apps.flaky_app", env=env)
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    states = {t.number: t.state for t in study.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.FAIL, 2: TrialState.FAIL, 3: TrialState.COMPLETE,
                      4: TrialState.COMPLETE}
    assert study.trials[1].user_attrs["fail_reason"] == "error"
    assert study.trials[2].user_attrs["fail_reason"] == "nan"
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs(stores, "hyperparameter_tuning")}
    assert by_number[1].info.status == "FAILED" and "injected failure" in by_number[1].data.tags["error"]
    assert by_number[2].info.status == "FAILED" and "not a number" in by_number[2].data.tags["error"]
    assert all(r.info.status != "RUNNING" for r in runs(stores))


def test_failure_budget_stops_the_sweep_with_one_line(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=5", "hydra.sweeper.max_failures=2", module="tests.apps.flaky_app",
                env={"FLAKY_RAISE_SHARE": "1"})
    assert_ends_in_one_line_error(out, "failure budget spent: 2 trials")
    study = only_study(stores)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]
    (parent,) = runs(stores, "hyperparameter_sweep")
    assert parent.info.status == "FAILED"
    assert all(r.info.status == "FAILED" for r in runs(stores, "hyperparameter_tuning"))


def test_pruned_trials_are_pruned_and_visible_and_nothing_is_packaged(stores):
    # 20 trees, the first 5 of fold 1 scored: an impossible threshold prunes every trial at that first look.
    out = sweep(stores, "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=threshold", "model.n_estimators=20",
                "evaluation.first_look_trees=5", "hydra.sweeper.pruner_options={lower:2.0,n_warmup_steps:0}",
                "registry.enabled=true", "hydra.sweeper.start_from_config=false")  # (the configured trial: never)
    assert_ends_in_one_line_error(out, "has no COMPLETE trial")
    study = only_study(stores)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(t.intermediate_values == {0: pytest.approx(t.intermediate_values[0])} for t in study.trials)
    trials = runs(stores, "hyperparameter_tuning")
    assert all(r.info.status == "KILLED" and r.data.tags["optuna.trial_state"] == "PRUNED" for r in trials)
    assert all("pruned after the first 5 trees of fold 1" in r.data.tags["pruned"] for r in trials)
    assert all(r.data.metrics["fit_seconds"] > 0 and "val_pr_auc_first_look" in r.data.metrics for r in trials)
    assert runs(stores, "model_packaging") == []
    assert stores.client().search_registered_models() == []


def test_the_configured_trial_is_never_pruned_even_below_an_impossible_bar(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=threshold", "model.n_estimators=20",
                "evaluation.first_look_trees=5", "hydra.sweeper.pruner_options={lower:2.0,n_warmup_steps:0}")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.PRUNED]
    assert study.trials[0].user_attrs["sweeper.start_point"] is True and len(study.trials[0].intermediate_values) == 4


def test_row_looks_are_the_pruners_row_budget_and_successive_halving_prunes_on_them(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=5", "evaluation.row_looks=[0.1111,0.3333]",
                "hydra.sweeper.pruner=successive_halving",
                "hydra.sweeper.pruner_options={min_resource:1,reduction_factor:3}")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    first = study.trials[0]  # the configured model: the best so far at every rung, so it runs to the end
    assert first.state == TrialState.COMPLETE and sorted(first.intermediate_values) == [1, 3, 9, 18, 27]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and all(max(t.intermediate_values) in (1, 3, 9) for t in pruned)  # pruned on a rung
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in runs(stores, "hyperparameter_tuning")}
    assert set(by_number[0].data.metrics) >= {"val_pr_auc_row_look", "val_pr_auc", "val_pr_auc_sem"}
    # MLflow shows a metric's value at its highest step: the whole fit's seconds must be logged at the last step
    history = stores.client().get_metric_history(by_number[0].info.run_id, "fit_seconds")
    assert by_number[0].data.metrics["fit_seconds"] == max(m.value for m in history)
    assert max(history, key=lambda m: m.step).step == 27
    assert all(" rows (value so far " in by_number[t.number].data.tags["pruned"] for t in pruned
               if max(t.intermediate_values) < 9)


def test_scaled_looks_are_what_the_command_line_asks_and_change_only_the_looks(tmp_path):
    """evaluation.scale_looks reaches the trial: the same configuration (leaves of 60 rows) looked at as is and
    scaled gives other look values and the same folds."""
    looked = {}
    for scale in ("false", "true"):
        own = Stores.ready(tmp_path / scale)
        out = sweep(own, "hydra.sweeper.n_trials=1", "evaluation.row_looks=[0.1111,0.3333]",
                    "model.min_samples_leaf=60", "model.min_samples_split=90", f"evaluation.scale_looks={scale}")
        assert out.returncode == 0, out.stderr
        looked[scale] = only_study(own).trials[0].intermediate_values
    assert looked["false"][1] != looked["true"][1] and looked["false"][3] != looked["true"][3]
    assert [looked["false"][k] for k in (9, 18, 27)] == [looked["true"][k] for k in (9, 18, 27)]


def test_the_last_fold_is_never_pruned(stores):
    # A threshold nobody reaches, checked from the last fold on (steps 0 and 1 are warm-up): the trials are
    # complete by then, and pruning them would throw their whole result away.
    out = sweep(stores, "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=threshold",
                "hydra.sweeper.pruner_options={lower:2.0,n_warmup_steps:2}")
    assert out.returncode == 0, out.stderr
    assert [t.state for t in only_study(stores).trials] == [TrialState.COMPLETE] * 2


def test_median_pruner_stops_some_trials_early(stores):
    # A deliberately bad option (leaves of 1000 rows cannot isolate the ~90 frauds) so that poor trials fall below
    # the median.
    out = sweep(stores, "hydra.sweeper.n_trials=8", "hydra.sweeper.pruner=median", "hydra.sweeper.sampler=random",
                "hydra.sweeper.pruner_options={n_startup_trials:2,n_warmup_steps:0}",
                "model.min_samples_leaf=choice(1,1000)", "evaluation.cv_folds=4")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(study.trials) == 8 and pruned and complete
    for t in pruned:
        # steps: without a first look (the default) fold k is step k - 1; stopped before the last fold
        assert min(t.intermediate_values) == 0 and max(t.intermediate_values) < 3
    # pruned is not failed: its run's name says so; the table keeps its partial value out of the value column
    names = {r.info.run_id: r.info.run_name for r in runs(stores, "hyperparameter_tuning")}
    assert {names[t.user_attrs["mlflow_run_id"]] for t in pruned} == {f"trial-{t.number:03d} pruned" for t in pruned}
    rows = {int(line.split()[0]): line for line in out.stdout.splitlines() if line.split()[:2][-1:] == ["PRUNED"]}
    assert set(rows) == {t.number for t in pruned}
    for t in pruned:
        where, value = t.user_attrs["sweeper.partial"]
        assert f"{value:.4f} after {where}" in rows[t.number] and where.startswith("fold ")


def test_joblib_launcher_runs_trials_in_parallel_and_nests_them(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=4", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    (parent,) = runs(stores, "hyperparameter_sweep")
    trials = runs(stores, "hyperparameter_tuning")
    assert {r.info.run_id for r in trials} == {t.user_attrs["mlflow_run_id"] for t in study.trials}
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in trials)
    workers = {t.system_attrs["sweeper.worker"]["pid"] for t in study.trials}
    assert len(workers) == 1  # one sweeper; the trials ran in joblib's worker processes
    # Two trials were in flight together: their start/end intervals overlap.
    spans = sorted((r.info.start_time, r.info.end_time) for r in trials)
    assert any(a_end > b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))


def start_and_signal(stores, sig, *overrides) -> subprocess.CompletedProcess:
    """Start a sweep, wait until trial 1 runs, send it a signal; returns the finished process."""
    args = [sys.executable, "-m", "src.train", "--multirun", *QUIET, *stores.overrides(), *overrides]
    # SIGINT restored: a shell starts background jobs with it ignored, and Python then keeps ignoring it
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            names = stores.study_names()
            trials = optuna.load_study(study_name=names[0], storage=stores.storage).trials if names else []
            if any(t.number == 1 and t.state == TrialState.RUNNING and "mlflow_run_id" in t.user_attrs for t in trials):
                break
            time.sleep(0.2)
        else:
            pytest.fail("trial 1 never started")
        time.sleep(0.5)  # inside trial 1's launch or fit (callers make a trial last over a second)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_ctrl_c_leaves_no_trial_and_no_run_running(stores):
    done = start_and_signal(stores, signal.SIGINT, "hydra.sweeper.n_trials=4", "model.n_estimators=200")
    assert done.returncode == 130 and "interrupted: rerun the same command to resume" in done.stderr
    study = only_study(stores)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in study.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in interrupted] == ["interrupted"]
    statuses = {r.info.run_name: r.info.status for r in runs(stores)}
    assert statuses[study.study_name] == "KILLED" and statuses["trial-001"] == "KILLED"
    assert "RUNNING" not in statuses.values()


def test_sigkill_mid_sweep_then_resume_leaves_nothing_running(stores):
    start_and_signal(stores, signal.SIGKILL, "hydra.sweeper.n_trials=4", "model.n_estimators=200",
                     "hydra.sweeper.study_name=killme")
    assert any(t.state == TrialState.RUNNING for t in only_study(stores).trials)
    out = sweep(stores, "hydra.sweeper.n_trials=4", "model.n_estimators=200", "hydra.sweeper.study_name=killme")
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    killed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(killed) == 1 and killed[0].user_attrs["fail_reason"].startswith("stale")
    assert len({t.number for t in study.trials}) == len(study.trials)
    assert len(runs(stores, "hyperparameter_sweep")) == 1
    statuses = {r.info.run_id: r.info.status for r in runs(stores)}
    assert "RUNNING" not in statuses.values()
    assert statuses[killed[0].user_attrs["mlflow_run_id"]] == "KILLED"


@pytest.mark.parametrize(
    "overrides, fragment",
    [  # more rows in test_bad_inputs.py
        (["hydra.sweeper.pruner=sometimes"], "hydra.sweeper.pruner=sometimes: unknown pruner"),
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials must be >= 1"),
        (["model.max_depth=-3"], "the pinned values: model.max_depth must be an integer >= 1"),
    ],
)
def test_bad_sweep_settings_fail_in_one_line_before_any_trial(new_stores, overrides, fragment):
    out = sweep(new_stores, *overrides)
    assert_one_line_error(out, fragment)
    assert "secret" not in out.stderr
    assert not (new_stores.root / "mlflow.db").exists()


@pytest.mark.parametrize("sampler", ["random", "cmaes", "gp", "qmc"])
def test_other_samplers_run_a_study(stores, sampler):
    import importlib.util

    out = sweep(stores, "hydra.sweeper.n_trials=3", f"hydra.sweeper.sampler={sampler}",
                "hydra.sweeper.sampler_options={n_startup_trials:2}" if sampler in ("gp", "cmaes") else "")
    if sampler == "gp" and importlib.util.find_spec("torch") is None:
        assert_one_line_error(out, "hydra.sweeper.sampler=gp needs PyTorch")
        return
    assert out.returncode == 0, out.stderr
    study = only_study(stores)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    (parent,) = runs(stores, "hyperparameter_sweep")
    assert parent.data.tags["optuna.sampler"].startswith(sampler)


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


def test_objective_is_named_in_the_study_and_log_plots_false_draws_no_plot(stores):
    out = sweep(stores, "hydra.sweeper.n_trials=2", "hydra.sweeper.study_name=named")  # QUIET: mlflow.log_plots=false
    assert out.returncode == 0, out.stderr
    assert optuna.load_study(study_name="named", storage=stores.storage).metric_names == ["val_pr_auc"]
    (parent,) = runs(stores, "hyperparameter_sweep")
    assert stores.client().list_artifacts(parent.info.run_id, "optuna") == []  # nor Optuna's, on the parent


@pytest.mark.parametrize("n_trials", [1, 3])
def test_composing_once_gives_each_job_the_config_hydra_composes(tmp_path, n_trials):
    """hydra.sweeper.compose_once (the default) starts each job from a config composed already (the pinned config,
    the first trial's) instead of composing it again: every job's config, overrides and Hydra config are the ones
    Hydra's own composition gives. One trial: the final stage starts from a trial that never ran a second time."""
    from tests.helpers.stores import Stores

    for mode in ("true", "false"):
        (tmp_path / mode).mkdir()
        out = sweep(Stores.at(tmp_path / mode), f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.study_name=same",
                    f"hydra.sweeper.compose_once={mode}", "registry.enabled=true")
        assert out.returncode == 0, out.stderr
    for job in (*map(str, range(n_trials)), "final"):
        for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
            fast, full = ((tmp_path / m / "sweep" / job / ".hydra" / name).read_text().replace(str(tmp_path / m), "X")
                          for m in ("true", "false"))
            keep = [line for line in fast.splitlines() if "run_id" not in line and "compose_once" not in line]
            assert keep == [line for line in full.splitlines() if "run_id" not in line and "compose_once" not in line]
