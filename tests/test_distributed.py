"""Several workers, one study: a shared Optuna storage (PostgreSQL in CI) and a real MLflow tracking server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.helpers.cli import ROOT
from tests.helpers.stores import SMALL

pytestmark = pytest.mark.slow


def start_worker(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "src.train", "--multirun", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})


def test_three_workers_finish_exactly_n_trials_under_one_parent(tmp_path, tracking_server, shared_storage):
    tag = uuid.uuid4().hex[:8]
    study, experiment, model = f"dist-{tag}", f"dist-{tag}", f"Dist_{tag}"
    # Credentials in the tracking URI (the server ignores them) must never be printed, tagged or written.
    secret = f"s3cret-{tag}"
    with_password = tracking_server.replace("://", f"://worker:{secret}@", 1)
    args = [*SMALL, "mlflow.log_plots=false", f"mlflow.tracking_uri={with_password}",
            f"mlflow.experiment_name={experiment}", f"registry.model_name={model}",
            f"hydra.sweeper.storage={shared_storage}", f"hydra.sweeper.study_name={study}",
            "hydra.sweeper.n_trials=7", "hydra.sweeper.pruner=none",
            # Its own test rows: the ledger counts every look at a test split on the server, and CI's server is
            # shared by the whole suite (past registry.max_test_uses a first version is rightly not promoted).
            f"split.seed={int(tag, 16)}"]
    workers = [start_worker([*args, f"hydra.sweep.dir={tmp_path / f'w{i}'}"]) for i in range(3)]
    outputs = [w.communicate(timeout=900) for w in workers]
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err[-3000:]
        assert secret not in out + err
    results = list(tmp_path.rglob("optimization_results.yaml"))  # (Hydra's own overrides.yaml keeps the URI)
    assert results and not [p for p in results if secret in p.read_text()]

    trials = optuna.load_study(study_name=study, storage=shared_storage).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 7  # exactly n_trials, no overshoot
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.user_attrs.get("fail_reason") == "surplus" for t in trials if t.state == TrialState.FAIL)
    assert len({t.number for t in trials}) == len(trials)
    assert len({t.system_attrs["sweeper.worker"]["pid"] for t in finished}) >= 2  # the work was shared

    client = MlflowClient(tracking_server)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("run_purpose") == "hyperparameter_sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("run_purpose") == "hyperparameter_tuning"]
    assert {r.info.run_id for r in children} >= {t.user_attrs["mlflow_run_id"] for t in finished}
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    assert all(r.info.status != "RUNNING" for r in runs)
    assert not [r for r in runs if secret in str((r.data.tags, r.data.params))]
    packaged = [r for r in runs if r.info.run_name == "best_model_packaged"]
    assert len(packaged) == 1 and packaged[0].info.status == "FINISHED"
    versions = client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 1
    assert str(client.get_model_version_by_alias(model, "champion").version) == str(versions[0].version)


def test_workers_that_write_the_same_new_tag_on_the_parent_at_once_all_succeed(tracking_server):
    """Each worker writes the sweep's description on the parent run as it ends. MLflow's tag write reads, then
    inserts: two writers of a tag the run does not have yet can both insert, and the second one's unique-key error
    ended a worker with a traceback (seen on CI's PostgreSQL-backed server). Six writers per tag, started together
    on a real server."""
    import threading

    from hydra_plugins.optuna_mlflow_sweeper._runs import GuardedClient

    client = MlflowClient(tracking_server)
    experiment = client.create_experiment(f"tag-race-{uuid.uuid4().hex[:8]}")
    run_id = client.create_run(experiment).info.run_id
    writers, keys = 6, 12
    barriers = [threading.Barrier(writers) for _ in range(keys)]
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        guarded = GuardedClient(tracking_server)
        for key, barrier in enumerate(barriers):
            barrier.wait()
            try:
                guarded.set_tag(run_id, f"note.{key}", f"written by worker {worker}")
            except Exception as exc:  # what the worker would have died of
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:2]
    tags = client.get_run(run_id).data.tags
    assert all(tags[f"note.{key}"].startswith("written by worker ") for key in range(keys))
