"""Faults: SIGKILL at seeded moments (during a fit, during logging, during packaging) and resume; injected
failures; a tracking server that is down at the start or goes away mid-sweep."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers.cli import ROOT, assert_ends_in_one_line_error, assert_one_line_error, run_in_process, run_module
from tests.helpers.proxy import FaultProxy
from tests.helpers.servers import MlflowServer, free_port
from tests.helpers.stores import QUIET, SMALL
from tests.helpers.sweeps import own_corner

pytestmark = pytest.mark.slow

N_TRIALS = 4


def sweep_args(stores, *extra):
    return ["--multirun", *SMALL, *stores.overrides(), "model.n_estimators=30", "hydra.sweeper.pruner=none",
            f"hydra.sweeper.n_trials={N_TRIALS}", "hydra.sweeper.study_name=faults", *extra]


def quiet_sweep(stores, *overrides):
    return run_in_process("src.train", "--multirun", *QUIET, *stores.overrides(), *overrides)


def trials(stores, study="faults"):
    if study not in stores.study_names():  # not created yet: see Stores.study_names
        return []
    return optuna.load_study(study_name=study, storage=stores.storage).trials


def runs(stores):
    return stores.runs()


def in_fit(stores) -> bool:
    return any(t.state == TrialState.RUNNING and not t.intermediate_values for t in trials(stores))


def in_logging(stores) -> bool:  # every fold scored: the trial is writing its metrics and plots
    return any(t.state == TrialState.RUNNING and len(t.intermediate_values) == 3 for t in trials(stores))


def in_packaging(stores) -> bool:
    # Read MLflow only once the sweep has set its store up (two processes creating it at once would collide).
    if sum(t.state == TrialState.COMPLETE for t in trials(stores)) < N_TRIALS:
        return False
    return any(r.info.run_name == "best_model_packaged" and r.info.status == "RUNNING" for r in runs(stores))


MOMENTS = {"fit": in_fit, "logging": in_logging, "packaging": in_packaging}


@pytest.mark.parametrize("moment, seed", [("fit", 0), ("logging", 1), ("packaging", 2)])
def test_sigkill_at_a_seeded_moment_then_resume(stores, moment, seed):
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *sweep_args(stores)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if MOMENTS[moment](stores):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"never saw the {moment} moment (exit {proc.poll()})")
        time.sleep(rng.uniform(0.0, 0.4 if moment != "packaging" else 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()

    resumed = run_in_process("src.train", *sweep_args(stores))  # the killed one was a process of its own
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    all_trials = trials(stores)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in all_trials) == N_TRIALS
    assert not [t for t in all_trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in all_trials}) == len(all_trials)
    all_runs = runs(stores)
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    assert len([r for r in all_runs if r.data.tags.get("run_purpose") == "hyperparameter_sweep"]) == 1
    packaged = [r for r in all_runs if r.info.run_name == "best_model_packaged" and r.info.status == "FINISHED"]
    assert len(packaged) == 1
    versions = MlflowClient(stores.tracking_uri).search_model_versions("name = 'CreditCardFraud_RF_synthetic'")
    assert len(versions) == 1  # a packaging job killed after registering is not registered twice
    # The configured values (queued as the first trial) were scored, even when their first run was killed.
    configured = all_trials[0].system_attrs["fixed_params"]
    assert configured in [t.params for t in all_trials if t.state == TrialState.COMPLETE]
    assert {t.number for t in all_trials if t.state == TrialState.FAIL} == {
        t.number for t in all_trials if t.user_attrs.get("fail_reason", "stale").startswith("stale")
        and t.state == TrialState.FAIL}


def test_thirty_percent_failing_trials_stay_within_the_budget(stores):
    out = run_in_process("tests.apps.flaky_app", "--multirun", *SMALL, *stores.overrides(), "registry.enabled=false",
                     "mlflow.log_plots=false", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=10",
                     "hydra.sweeper.max_failures=8", env={"FLAKY_RAISE_SHARE": "0.3"})
    assert out.returncode == 0, out.stderr[-3000:]
    study = optuna.load_study(study_name=optuna.get_all_study_names(stores.storage)[0], storage=stores.storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 10
    assert [t.number for t in failed] == [0, 1, 2, 10, 11, 12]  # 30 % of the trial numbers
    assert all(t.user_attrs["fail_reason"] == "error" for t in failed)
    assert all("injected failure" in t.user_attrs["error"] for t in failed)
    progress = [line for line in out.stderr.splitlines() if line.startswith("trial ") and " FAIL " in line]
    assert len(progress) == len(failed)  # reported, one line each


def test_tracking_server_down_at_start_is_one_line_before_training(new_stores):
    out = run_module("src.train", "--multirun", *SMALL, *new_stores.overrides(),
                     f"mlflow.tracking_uri=http://127.0.0.1:{free_port()}")
    assert_one_line_error(out, "tracking server unreachable")
    assert not (new_stores.root / "optuna.db").exists()


def test_tracking_server_gone_mid_sweep_loses_nothing(stores, tmp_path):
    server = MlflowServer(tmp_path / "server").start()
    args = ["--multirun", *SMALL, *stores.overrides(), f"mlflow.tracking_uri={server.uri}", "registry.enabled=false",
            "mlflow.log_plots=false", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=6",
            "hydra.sweeper.study_name=outage", "model.n_estimators=30"]
    # Give up on the server after one retry (about 2 s) rather than the default 30 s: same path, shorter test.
    fast = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **fast}
    proc = subprocess.Popen([sys.executable, "-m", "src.train", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # let two trials finish, then take the server away
            done = [t for t in trials(stores, "outage") if t.state == TrialState.COMPLETE]
            if len(done) >= 2:
                break
            time.sleep(0.2)
        server.stop()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
    study = optuna.load_study(study_name="outage", storage=stores.storage)
    # Optuna kept every result it got; the sweep said what happened in one line.
    assert proc.returncode != 0 and "Traceback" not in err
    assert "tracking server" in err.strip().splitlines()[-1]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    server.start()  # back: the next run of the same command repairs MLflow and finishes the study
    try:
        again = run_in_process("src.train", *args, env=fast)
        assert again.returncode == 0, again.stderr[-3000:]
        study = optuna.load_study(study_name="outage", storage=stores.storage)
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(complete) == 6
        client = MlflowClient(server.uri)
        exp = client.get_experiment_by_name("creditcardfraud-sweep")
        by_id = {r.info.run_id: r for r in client.search_runs([exp.experiment_id], max_results=1000)}
        for t in complete:  # every finished trial has a finished MLflow run with its objective
            run = by_id[t.user_attrs["mlflow_run_id"]]
            assert run.info.status == "FINISHED" and run.data.metrics["val_pr_auc"] == pytest.approx(t.value, abs=5e-5)
        assert not [r for r in by_id.values() if r.info.status == "RUNNING"]
    finally:
        server.stop()


def test_late_resume_keeps_a_finished_trial_whose_worker_died(stores):
    common = ["hydra.sweeper.study_name=late", "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"]
    first = quiet_sweep(stores, "hydra.sweeper.n_trials=1", *common)
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
    second = quiet_sweep(stores, "hydra.sweeper.n_trials=2", *common)
    assert second.returncode == 0, second.stderr
    trial = optuna.load_study(study_name="late", storage=stores.storage).trials[1]
    assert trial.state == TrialState.COMPLETE and trial.value == pytest.approx(0.4321)


def test_a_transient_tracking_error_never_makes_a_second_parent(stores, tracking_server):
    name, own = own_corner("OneParent")
    with FaultProxy(tracking_server) as proxy:
        args = ["hydra.sweeper.study_name=oneparent", f"mlflow.tracking_uri={proxy.uri}", *own]
        first = quiet_sweep(stores, "hydra.sweeper.n_trials=1", *args)
        assert first.returncode == 0, first.stderr
        proxy.fail("/runs/get", status=403, body={"error_code": "PERMISSION_DENIED", "message": "try later"},
                   times=1)
        second = quiet_sweep(stores, "hydra.sweeper.n_trials=2", *args)
        assert_ends_in_one_line_error(second, "cannot read the parent run")
    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name(name)
    parents = client.search_runs([exp.experiment_id], "tags.run_purpose = 'hyperparameter_sweep'")
    assert len(parents) == 1


def in_namespace_with_a_small_disk(tmp_path, body: str) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace where $M is a tmpfs of 600 KiB (a real full disk: no root
    needed, nothing mounted outside the namespace)."""
    script = f"set -u\nM={tmp_path / 'disk'}\nmkdir -p $M\nmount -t tmpfs -o size=600k tmpfs $M\ncd {ROOT}\n{body}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_a_full_disk_is_one_line_and_the_store_is_usable_once_space_is_freed(tmp_path):
    run = (f"{sys.executable} -m src.train {' '.join(SMALL)} mlflow.tracking_uri=sqlite:///$M/mlflow.db "
           f"hydra.run.dir={tmp_path / 'run'}")
    done = in_namespace_with_a_small_disk(tmp_path, f"""
{run} 2> {tmp_path}/create.err; echo $? > {tmp_path}/create.rc; ls -a $M > {tmp_path}/create.ls
mount -o remount,size=64m $M
{run} 2> /dev/null; echo $? > {tmp_path}/first.rc
avail=$(df -k --output=avail $M | tail -1); head -c $(( (avail - 40) * 1024 )) /dev/zero > $M/filler 2> /dev/null
{run} 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
rm $M/filler
{run} 2> /dev/null; echo $? > {tmp_path}/freed.rc
for leave in 110 130 150 170; do  # the disk fills as the run logs its plots: it cannot even end itself
  avail=$(df -k --output=avail $M | tail -1); head -c $(( (avail - leave) * 1024 )) /dev/zero > $M/filler 2> /dev/null
  {run} > /dev/null 2>&1; rm $M/filler
  # the newest run's status, read from MLflow's own table (sqlite3 alone: no MLflow import per look)
  status=$({sys.executable} -c "import sqlite3; print(sqlite3.connect('$M/mlflow.db').execute(\
'SELECT r.status FROM runs r JOIN experiments e USING (experiment_id) WHERE e.name = ? \
ORDER BY r.start_time DESC LIMIT 1', ('creditcardfraud-sweep',)).fetchone()[0])")
  echo $status >> {tmp_path}/cut.txt
  [ "$status" = RUNNING ] && break  # one run cut short is the case under test
done
{run} 2> /dev/null; echo $? > {tmp_path}/after.rc
{sys.executable} -c "from mlflow.tracking import MlflowClient as C; c = C('sqlite:///'+'$M/mlflow.db'); \\
e = c.get_experiment_by_name('creditcardfraud-sweep'); \\
print(sorted(r.info.status for r in c.search_runs([e.experiment_id])))" > {tmp_path}/runs.txt
""")
    assert done.returncode == 0, done.stderr
    read = lambda name: (tmp_path / name).read_text().strip()  # noqa: E731
    # 1. the disk is full while the store is created: one line, and no half-created store left behind
    assert read("create.rc") == "2" and "Traceback" not in read("create.err")
    assert read("create.err").splitlines()[-1].startswith("error: mlflow.tracking_uri=sqlite:///")
    assert "the disk is full" in read("create.err") and "mlflow.db" not in read("create.ls").split()
    # 2. with space, the same command works; 3. full again mid-run: one line; 4. freed: works, store intact
    assert read("first.rc") == "0" and read("full.rc") == "2" and read("freed.rc") == "0"
    assert read("full.err").splitlines()[-1].startswith("error: the disk is full")
    assert "Traceback" not in read("full.err")
    # 5. a run the full disk cut short while it logged its plots stays RUNNING (it could not even end itself)...
    cut = read("cut.txt").split()
    assert "RUNNING" in cut, cut
    # ... until the next run on the store ends it KILLED: no run is left RUNNING
    statuses = read("runs.txt").strip("[]").replace("'", "").split(", ")
    assert read("after.rc") == "0" and "RUNNING" not in statuses and statuses.count("KILLED") == cut.count("RUNNING")


def test_sigterm_is_handled_like_ctrl_c(stores):
    from tests.test_sweeper import only_study, start_and_signal

    done = start_and_signal(stores, signal.SIGTERM, "hydra.sweeper.n_trials=4", "model.n_estimators=200")
    assert done.returncode == 143, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "terminated (SIGTERM): rerun the same command to resume"
    assert "Traceback" not in done.stderr
    study = only_study(stores)
    assert [t.user_attrs.get("fail_reason") for t in study.trials if t.state == TrialState.FAIL] == ["interrupted"]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    statuses = {r.info.run_name: r.info.status for r in runs(stores)}
    assert statuses[study.study_name] == "KILLED" and statuses["trial-001"] == "KILLED"


def test_a_missing_database_driver_names_the_extra_and_hides_the_password(tmp_path):
    shim = tmp_path / "shim" / "psycopg"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'psycopg'\")\n")
    out = run_module("src.train", *SMALL, "mlflow.tracking_uri=postgresql://user:s3cret@127.0.0.1:9/db",
                     f"hydra.run.dir={tmp_path / 'run'}", env={"PYTHONPATH": str(tmp_path / "shim")})
    assert_one_line_error(out, "the PostgreSQL driver cannot be imported", "pip install -e '.[postgres]'")
    assert "s3cret" not in out.stderr + out.stdout and "user:***@" in out.stderr
