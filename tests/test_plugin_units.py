"""The plugin's steps in-process against a temporary SQLite storage and MLflow store: storage opening, study
naming, crash repair, the final-stage claim and the heartbeat."""

from __future__ import annotations

import os
import threading
import time

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from hydra_plugins.optuna_mlflow_sweeper import _claim, _final, _study
from hydra_plugins.optuna_mlflow_sweeper._errors import SweeperError
from hydra_plugins.optuna_mlflow_sweeper._heartbeat import Periodic
from hydra_plugins.optuna_mlflow_sweeper._repair import repair
from hydra_plugins.optuna_mlflow_sweeper._runs import GuardedClient, Runs
from hydra_plugins.optuna_mlflow_sweeper._search_space import SearchSpace
from hydra_plugins.optuna_mlflow_sweeper._state import SweepState
from hydra_plugins.optuna_mlflow_sweeper._worker import WORKER_ATTR, Worker
from hydra_plugins.optuna_mlflow_sweeper.config import ObjectiveConf, OptunaMlflowSweeperConf
from hydra_plugins.optuna_mlflow_sweeper.job import (
    PRUNER_ATTR,
    RUN_ATTR,
    START_ATTR,
    JobContext,
    TrialLink,
    open_experiment,
)

DEAD = {"host": os.uname().nodename, "pid": 2**22 + 11, "invocation": "long-gone"}  # no such process


def test_a_relative_sqlite_storage_is_made_absolute_and_the_default_lives_in_multirun_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _study.storage_url("sqlite:///o.db") == f"sqlite:///{tmp_path / 'o.db'}"
    assert _study.storage_url("sqlite:////abs/o.db") == "sqlite:////abs/o.db"
    assert _study.storage_url(None) == f"sqlite:///{tmp_path / 'multirun_outputs' / 'optuna.db'}"
    assert _study.storage_url("postgresql://u:p@h/db") == "postgresql://u:p@h/db"


def test_a_storage_in_a_missing_folder_is_one_line_and_no_password_is_shown(tmp_path):
    with pytest.raises(SweeperError, match="folder .* does not exist"):
        _study.open_storage(f"sqlite:///{tmp_path}/nope/o.db", 5, 20)
    with pytest.raises(SweeperError) as info:
        _study.open_storage("postgresql://me:s3cret@127.0.0.1:9/o", 5, 20)
    assert "s3cret" not in str(info.value) and "me:***@" in str(info.value)


def test_two_threads_opening_one_fresh_sqlite_storage_both_succeed(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    errors, barrier = [], threading.Barrier(4)

    def open_it():
        barrier.wait()
        try:
            _study.open_storage(url, 5, 20)
        except Exception as exc:  # collected, asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


SPACE = {"model.max_depth": IntDistribution(2, 8)}


@pytest.mark.parametrize("change, same", [
    ({"mlflow": {"tracking_uri": "sqlite:///other.db"}}, True),  # ignored: stores do not change the objective
    ({"model": {"n_jobs": 8, "max_depth": 3}}, True),  # cores are ignored, and a swept key's configured value too
    ({"split": {"seed": 7}}, False),
    ({"model": {"n_estimators": 50}}, False),
])
def test_the_derived_name_changes_exactly_when_the_objective_could(change, same):
    base = {"model": {"n_estimators": 100, "max_depth": 5, "n_jobs": 1}, "split": {"seed": 42},
            "mlflow": {"tracking_uri": "sqlite:///m.db"}}
    merged = {k: {**base.get(k, {}), **change.get(k, {})} for k in {*base, *change}}
    ignore = ["mlflow", "model.n_jobs"]

    def name(config, space=SPACE, extras=None):
        return _study.derived_name("rf", _study.identity(config, space, ignore, extras))

    first = name(base)
    assert first.startswith("rf-") and len(first) == len("rf-") + 8
    assert (name(merged) == first) is same
    assert name(base, {"model.max_depth": IntDistribution(2, 9)}) != first
    assert name(base, extras={"data_sha256": "ab"}) != name(base, extras={"data_sha256": "cd"})  # other data


def test_a_study_keeps_the_identity_it_was_created_with(tmp_path):
    storage = _study.open_storage(f"sqlite:///{tmp_path / 'o.db'}", 5, 20)
    study, _ = _study.open_study("named", storage, "maximize", "auc")
    _study.check_identity(study, {"config": "c1", "data_sha256": "aaaa"})
    _study.check_identity(study, {"config": "c1", "data_sha256": "aaaa"})  # the same: accepted
    with pytest.raises(SweeperError, match="another data_sha256"):
        _study.check_identity(study, {"config": "c1", "data_sha256": "bbbb"})


def test_a_study_is_created_once_and_refused_for_another_direction_or_objective(tmp_path):
    storage = _study.open_storage(f"sqlite:///{tmp_path / 'o.db'}", 5, 20)
    study, created = _study.open_study("s", storage, "maximize", "auc")
    assert created and study.metric_names == ["auc"]
    again, created = _study.open_study("s", storage, "maximize", "auc")
    assert not created and again._study_id == study._study_id
    with pytest.raises(SweeperError, match="maximizes its objective"):
        _study.open_study("s", storage, "minimize", "auc")
    with pytest.raises(SweeperError, match="records the objective 'auc', this sweep's is 'loss'"):
        _study.open_study("s", storage, "maximize", "loss")


@pytest.fixture
def state(tmp_path):
    """A sweep's state on fresh stores: a study with a parent run, ready for repair."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    storage = _study.open_storage(url, 1, 2)
    study, _ = _study.open_study("repair", storage, "maximize", "auc")
    client = GuardedClient(uri)
    experiment = open_experiment(uri, "units")
    parent = client.create_run(experiment, run_name="repair").info.run_id
    settings = OptunaMlflowSweeperConf(objective=ObjectiveConf(name="auc", spread="auc_std"), grace_period=2,
                                       heartbeat_interval=1)
    return SweepState(settings=settings, study=study, storage=storage, storage_url=url, study_id=study._study_id,
                      runs=Runs(client=client, experiment_id=experiment, parent_id=parent), space=SearchSpace(),
                      worker=Worker(), started=time.monotonic(), out_dir=tmp_path / "sweep")


def _running_trial(state, worker, run_status=None, metrics=None):
    trial_id = state.storage.create_new_trial(state.study_id)
    number = state.storage.get_trial_number_from_id(trial_id)
    state.storage.set_trial_system_attr(trial_id, WORKER_ATTR, worker)
    run_id = state.runs.create_child(f"trial-{number}", "hyperparameter_tuning", "repair", number)
    state.storage.set_trial_user_attr(trial_id, RUN_ATTR, run_id)
    for key, value in (metrics or {}).items():
        state.runs.client.log_metric(run_id, key, value)
    if run_status:
        state.runs.client.set_terminated(run_id, run_status)
    state.storage.record_heartbeat(trial_id)
    return number, run_id


def test_repair_keeps_the_result_of_a_dead_workers_finished_trial_even_after_the_grace_period(state):
    kept, _ = _running_trial(state, DEAD, "FINISHED", {"auc": 0.75, "auc_std": 0.02})
    lost, lost_run = _running_trial(state, DEAD)
    time.sleep(2.5)  # both heartbeats are now older than the grace period
    repair(state)
    trials = {t.number: t for t in state.study.get_trials()}
    assert trials[kept].state == TrialState.COMPLETE and trials[kept].value == 0.75
    assert trials[kept].user_attrs["auc_std"] == 0.02
    assert trials[lost].state == TrialState.FAIL
    assert state.runs.client.get_run(lost_run).info.status == "KILLED"


def test_repair_leaves_a_live_workers_trial_alone(state):
    live = {"host": os.uname().nodename, "pid": os.getppid(), "invocation": "another-live-sweep"}  # alive
    number, run_id = _running_trial(state, live)
    repair(state)
    assert state.study.get_trials()[number].state == TrialState.RUNNING
    assert state.runs.client.get_run(run_id).info.status == "RUNNING"


def test_only_one_worker_holds_the_final_stage_claim_and_the_markers_go_when_it_is_done(tmp_path):
    storage = _study.open_storage(f"sqlite:///{tmp_path / 'o.db'}", 1, 2)
    optuna.create_study(study_name="s", storage=storage)
    a, b = Worker(pid=os.getppid()), Worker()  # two live processes of this host
    marker = _claim.acquire(storage, "s", 3, a, grace_period=2)
    assert marker is not None and marker.study_name == "s::final-trial-3::attempt-0"
    assert _claim.acquire(storage, "s", 3, b, grace_period=2) is None  # a holds it (fresh keep-alive)
    marker.set_user_attr("failed", "RuntimeError: boom")
    retry = _claim.acquire(storage, "s", 3, b, grace_period=2)  # a failed: b takes the next attempt
    assert retry is not None and retry.study_name == "s::final-trial-3::attempt-1"
    time.sleep(2.5)  # b's keep-alive is now older than the grace period: a third worker supersedes it
    third = _claim.acquire(storage, "s", 3, Worker(), grace_period=2)
    assert third is not None and third.study_name.endswith("attempt-2")
    _claim.release(storage, "s", 3)
    assert optuna.get_all_study_names(storage) == ["s"]


def test_a_claim_read_while_its_holder_writes_it_is_not_taken_over(tmp_path):
    """Three workers on one study (2026-12-03): one read the holder's new marker between its two writes (worker,
    then heartbeat), took the missing heartbeat for a stale claim, took the next attempt and ran the final stage
    beside the holder: two packaged runs of one trial, started 66 ms apart."""
    storage = _study.open_storage(f"sqlite:///{tmp_path / 'o.db'}", 1, 2)
    optuna.create_study(study_name="s", storage=storage)
    holder = Worker(pid=os.getppid())  # a live process of this host
    marker = optuna.create_study(study_name=_claim.marker_name("s", 3, 0), storage=storage)
    marker.set_user_attr("worker", holder.as_attr())  # the holder's first write; its heartbeat follows
    beat = threading.Timer(0.5, lambda: marker.set_user_attr("heartbeat", time.time()))
    beat.start()
    assert _claim.acquire(storage, "s", 3, Worker(), grace_period=2) is None
    beat.join()
    assert optuna.get_all_study_names(storage) == ["s", "s::final-trial-3::attempt-0"]
    # A holder of another host that died between its two writes: once the grace period is over, the claim is free.
    optuna.delete_study(study_name=marker.study_name, storage=storage)
    gone = optuna.create_study(study_name=_claim.marker_name("s", 3, 0), storage=storage)
    gone.set_user_attr("worker", {"host": "another-host", "pid": 1, "invocation": "died-writing"})
    taken = _claim.acquire(storage, "s", 3, Worker(), grace_period=2)
    assert taken is not None and taken.study_name == "s::final-trial-3::attempt-1"


def test_the_final_stage_is_recorded_done_when_another_worker_removed_its_marker_first(state):
    """Three workers on one study (CI, 2026-12-03): as the holder of the final stage's claim ended its run FINISHED,
    another worker saw that run, recorded the stage as done and removed the markers; the holder's own write to its
    marker then failed with "Record does not exist" and the worker ended in a traceback."""
    marker = _claim.acquire(state.storage, "repair", 3, Worker(), grace_period=60)
    run_id = state.runs.create_child("best_model_packaged", "model_packaging", "repair", 3)
    _claim.release(state.storage, "repair", 3)  # what the other worker does once it sees the FINISHED run
    _final.record_done(state, marker, 3, run_id)
    assert state.study.user_attrs[_final.FINAL_ATTR] == {"trial_number": 3, "run_id": run_id}
    assert state.runs.client.get_run(run_id).info.status == "FINISHED"
    assert optuna.get_all_study_names(state.storage) == ["repair"]  # no marker left behind


def test_the_heartbeat_thread_is_joined_when_its_block_ends():
    beats = []
    with Periodic(0.05, lambda: beats.append(time.monotonic())) as periodic:
        time.sleep(0.3)
    after = len(beats)
    time.sleep(0.2)
    assert after >= 2 and len(beats) == after and not periodic._thread.is_alive()


KILLED_MID_WRITE = """
import os, signal, sqlite3, sys
db, tables = sys.argv[1], sys.argv[2].split(",")
con = sqlite3.connect(db)
for table in tables:
    con.execute(f"CREATE TABLE {table} (x)")
con.commit()
con.execute("PRAGMA cache_size=1")  # so that the uncommitted pages spill into the file (the journal is hot)
con.execute("BEGIN IMMEDIATE")
for _ in range(200):
    con.execute(f"INSERT INTO {tables[0]} VALUES (?)", ("z" * 4000,))
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("tool, tables", [("mlflow", "experiments,runs"), ("optuna", "studies,trials,version_info")])
def test_a_store_left_with_a_hot_journal_by_a_killed_process_is_still_recognised(tmp_path, tool, tables):
    """A process killed in the middle of a write leaves a hot journal beside the SQLite file: the next open rolls
    it back, which a read-only connection cannot do. The store must still be recognised as the tool's own."""
    import subprocess
    import sys

    from hydra_plugins.optuna_mlflow_sweeper._stores import check_sqlite

    db = tmp_path / f"{tool}.db"
    subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(db), tables], check=False)
    assert (tmp_path / f"{tool}.db-journal").exists()  # the killed transaction's hot journal
    check_sqlite(f"sqlite:///{db}", "key", tool)  # recognised, no error


def test_the_configured_trial_sets_the_bar_at_each_rung_and_is_never_pruned_below_another(tmp_path):
    """Successive halving counts at a rung only the trials that asked the pruner there: the configured trial asks
    too. A later trial worse than it at the first rung is pruned there (it was promoted, as alone at the rung, and
    ran to the end); and a configured trial that reaches a rung below another trial's value goes on."""
    storage = f"sqlite:///{tmp_path / 'o.db'}"

    def study_with(start_values, other_values, start_first):
        name = f"s{len(optuna.get_all_study_names(storage))}"
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        study.set_user_attr(PRUNER_ATTR, {"name": "successive_halving",
                                          "options": {"min_resource": 1, "reduction_factor": 3}})
        outcome = {}
        order = [("start", start_values), ("other", other_values)]
        for who, values in order if start_first else order[::-1]:
            trial = study.ask()
            if who == "start":
                trial.set_user_attr(START_ATTR, True)
            link = TrialLink(JobContext(study_name=name, storage=storage, trial_number=trial.number))
            try:
                for step, value in zip((1, 3, 9), values, strict=True):
                    link.report(step, value)
                study.tell(trial, values[-1])
                outcome[who] = "complete"
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
                outcome[who] = f"pruned at {max(study.trials[trial.number].intermediate_values)}"
        return outcome

    assert study_with([0.8, 0.85, 0.9], [0.5, 0.95, 0.99], start_first=True) == {"start": "complete",
                                                                                "other": "pruned at 1"}
    assert study_with([0.8, 0.85, 0.9], [0.9, 0.95, 0.99], start_first=True) == {"start": "complete",
                                                                                "other": "complete"}
    assert study_with([0.8, 0.85, 0.9], [0.9, 0.95, 0.99], start_first=False) == {"other": "complete",
                                                                                 "start": "complete"}
