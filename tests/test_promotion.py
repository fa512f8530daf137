"""Promotion guarantees that hold under concurrency and cannot be talked around: packagings that finish together
decide in turn, the rule belongs to the lineage, every look at the test split is counted, ``decide`` decides only
undecided versions, the lineage pins the test rows, and a transient registry error never registers a trial twice."""

from __future__ import annotations

import uuid

import numpy as np
import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.helpers.cli import assert_ends_in_one_line_error, assert_one_line_error, run_in_process
from tests.helpers.proxy import FaultProxy
from tests.helpers.sweeps import GOOD, WEAK, own_corner, package, package_args, sweep, together

pytestmark = pytest.mark.slow


def versions(client: MlflowClient, name: str) -> list:
    return sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))


def champion(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


def ledger_looks(client: MlflowClient, lineage: str) -> int:
    experiment = client.get_experiment_by_name(f"test-split-ledger-{lineage}")
    return len(client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)) if experiment else 0


def replay(client: MlflowClient, name: str) -> None:
    """Every automatic decision was made against the champion of its moment: replaying them in version order (the
    order of the turns) gives each one's compared version, and ends on the champion alias."""
    current = None
    for mv in versions(client, name):
        tags = mv.tags
        assert tags["decision"] in ("promoted", "kept_champion"), (mv.version, tags["decision_reason"])
        assert tags.get("compared_with_version") == current, (mv.version, tags.get("compared_with_version"), current,
                                                              tags["decision_reason"])
        if tags["decision"] == "promoted":
            current = str(mv.version)
    assert champion(client, name) == current


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_packagings_that_finish_together_decide_in_turn(stores, tracking_server, store):
    """Three packagings at once, twice, against one registry: each compares with the champion of its turn, so the
    champion always beat the one it replaced (without turns all three compared with the same one and the last
    writer won)."""
    name = f"Race_{store}_{uuid.uuid4().hex[:8]}"
    tracking = tracking_server if store == "server" else None
    # Its own test rows (CI's server is shared by the suite, and the ledger counts every look at a split there), and
    # a budget that keeps all seven decisions real comparisons rather than refusals past it.
    own = [f"split.seed={uuid.uuid4().int % 2**32}", "registry.max_test_uses=20"]
    first = package(stores, "seed", *WEAK, *own, name=name, tracking=tracking)
    assert first.returncode == 0, first.stderr
    for round_ in range(2):
        depths = [6, 8, 10] if round_ == 0 else [12, 7, 9]
        done = together([["src.train", *package_args(stores, f"r{round_}-{i}", f"model.max_depth={d}",
                                                     f"model.random_state={round_ * 10 + i}",
                                                     f"hydra.sweeper.study_name={store}-r{round_}-{i}", *own, name=name,
                                                     tracking=tracking)] for i, d in enumerate(depths)])
        for result in done:
            assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(tracking or stores.tracking_uri)
        assert len(versions(client, name)) == 1 + 3 * (round_ + 1)
        replay(client, name)
    assert all("gate.turn" not in mv.tags for mv in versions(client, name))  # every flag lowered


def test_the_rule_belongs_to_the_lineage_and_a_looser_one_is_refused(stores):
    first = package(stores, "s1", *WEAK, name="Rule_RF")
    assert first.returncode == 0, first.stderr
    client = stores.client()
    lineage = versions(client, "Rule_RF")[0].tags["lineage"]
    for looser in (["registry.confidence=0.5"], ["registry.max_test_uses=1000"], ["registry.criterion=net_gain"],
                   ["registry.margin=0.0001"]):
        out = package(stores, f"loose-{looser[0].split('=')[0]}", *GOOD, *looser, name="Rule_RF")
        key = looser[0].split("=")[0]
        assert_ends_in_one_line_error(out, f"{key}=")
        assert f"lineage {lineage} is decided by the rule of its first use" in out.stderr
        assert "test_pr_auc =" not in out.stdout  # refused before the test split was looked at
    assert len(versions(client, "Rule_RF")) == 1 and ledger_looks(client, lineage) == 1


def test_two_first_uses_at_once_with_different_rules_leave_one_rule(stores):
    done = together([["src.train", *package_args(stores, f"first{i}", *GOOD, f"registry.confidence={c}",
                                                 f"hydra.sweeper.study_name=first{i}", name="Twice_RF")]
                     for i, c in enumerate((0.95, 0.9))])
    ok = [r for r in done if r.returncode == 0]
    refused = [r for r in done if r.returncode != 0]
    assert len(ok) == 1 and len(refused) == 1, [r.stderr[-500:] for r in done]
    assert "registry.confidence=" in refused[0].stderr.strip().splitlines()[-1]
    assert len(versions(stores.client(), "Twice_RF")) == 1


def test_every_look_at_the_test_split_is_counted_or_refused(stores):
    # the final stage without the registry: refused before any refit or test score, and nothing counted
    out = sweep(stores, "hydra.sweeper.n_trials=1", "hydra.sweeper.final.enabled=true", "registry.enabled=false",
                "hydra.sweeper.study_name=looks", "registry.model_name=Looks_RF")
    assert_ends_in_one_line_error(out, "registry.enabled=false that look would be neither counted nor registered")
    assert "test_pr_auc =" not in out.stdout
    client = stores.client()
    assert not [e for e in client.search_experiments(view_type=ViewType.ALL) if e.name.startswith("test-split")]
    # ... and a later run of the same study does package it: it was never "ran already"
    out = sweep(stores, "hydra.sweeper.n_trials=1", "registry.enabled=true", "hydra.sweeper.study_name=looks",
                "registry.model_name=Looks_RF")
    assert out.returncode == 0, out.stderr
    (v1,) = versions(client, "Looks_RF")
    lineage = v1.tags["lineage"]
    assert v1.tags["test_split_uses"] == "1" and ledger_looks(client, lineage) == 1
    # the split of the one job that touches the test rows cannot be changed for it
    out = sweep(stores, "hydra.sweeper.n_trials=1", "registry.enabled=true", "hydra.sweeper.study_name=looks2",
                'hydra.sweeper.final.overrides=["split.seed=7"]')
    assert_one_line_error(out, "would change what the trials were scored on (test_protocol)")
    # deleting a version does not give its look back, and another model name on the lineage inherits the count
    client.delete_model_version("Looks_RF", "1")
    again = package(stores, "again", *GOOD, name="Looks_RF")
    assert again.returncode == 0, again.stderr
    other = package(stores, "other", *GOOD, "model.random_state=1", name="Other_Name_RF")
    assert other.returncode == 0, other.stderr
    assert versions(client, "Looks_RF")[-1].tags["test_split_uses"] == "2"
    assert versions(client, "Other_Name_RF")[0].tags["test_split_uses"] == "3"
    assert ledger_looks(client, lineage) == 3


def test_decide_decides_only_undecided_versions_with_the_use_count_of_their_look(stores, tracking_server):
    name, own = own_corner("Decide_RF")
    with FaultProxy(tracking_server) as proxy:
        assert package(stores, "s1", *WEAK, *own, name=name, tracking=proxy.uri).returncode == 0
        proxy.fail("/registered-models/alias", status=503, method="GET")  # the champion look-up
        fast = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        second = package(stores, "s2", *GOOD, *own, name=name, tracking=proxy.uri, env=fast)
        assert_ends_in_one_line_error(second, "python -m src.registry decide 2")
        proxy.clear()
        third = package(stores, "s3", *GOOD, "model.random_state=3", *own, name=name, tracking=proxy.uri)
        assert third.returncode == 0, third.stderr
        cli = ["--tracking-uri", proxy.uri, "--name", name]
        refused = run_in_process("src.registry", *cli, "decide", "1")
        assert_one_line_error(refused, "version 1 is decided already (promoted)", "promote 1 --reason",
                              "rollback --reason")
        client = MlflowClient(tracking_server)
        before = champion(client, name)
        decided = run_in_process("src.registry", *cli, "decide", "2")
        assert decided.returncode == 0, decided.stderr
        v2 = client.get_model_version(name, "2")
        assert v2.tags["decision"] in ("promoted", "kept_champion")
        assert v2.tags["test_split_uses"] == "2"  # its look's count, though v3 has looked since
        assert v2.tags["compared_with_version"] == before  # against the champion of its (late) turn
        again = run_in_process("src.registry", *cli, "decide", "2")  # decided now: it cannot be run twice
        assert_one_line_error(again, "version 2 is decided already")


def test_the_lineage_pins_the_test_rows_and_the_champion_must_reproduce_its_score(stores, tmp_path):
    from src.data.synthetic import generate

    csv = tmp_path / "fraud.csv"
    generate(6000, 0.02, 0).to_csv(csv, index=False)
    data = ["dataset=creditcard", f"dataset.path={csv}"]
    assert package(stores, "s1", *WEAK, *data, name="Pinned_RF").returncode == 0
    # a parsed-data cache made under other rules (here: one test row's value changed): other rows, same file bytes
    (cache,) = tmp_path.glob(".fraud.csv.*.parsed.npz")
    with np.load(cache) as npz:
        X, y, counts = npz["X"].copy(), npz["y"], npz["counts"]
    from src.config import CreditCardDatasetConfig, EvaluationConfig, SplitConfig
    from src.data.loading import load
    from src.data.split import split

    parts = split(load(CreditCardDatasetConfig(path=str(csv))), SplitConfig(), EvaluationConfig())
    X[parts.test[0], 5] += 1.0
    np.savez(cache, X=X, y=y, counts=counts)
    other = package(stores, "s2", *GOOD, *data, name="Pinned_RF", fresh=True)  # a fresh process reads the cache
    assert other.returncode == 0, other.stderr
    client = stores.client()
    v1, v2 = versions(client, "Pinned_RF")
    assert v1.tags["lineage.data_sha256"] == v2.tags["lineage.data_sha256"] and v1.tags["lineage"] != v2.tags["lineage"]
    assert v2.tags["decision"] == "kept_champion" and "test rows" in v2.tags["decision_reason"]
    # the champion's forest replaced by another (trusted types, same lineage): its re-score no longer reproduces
    cache.unlink()
    assert package(stores, "s3", *GOOD, *data, name="Pinned_RF").returncode == 0  # v3: v1's lineage again
    v3 = versions(client, "Pinned_RF")[-1]
    assert v3.tags["lineage"] == v1.tags["lineage"]
    import skops.io

    champ = client.get_model_version_by_alias("Pinned_RF", "champion")
    (forest_file,) = [p for p in (stores.root / "mlruns").rglob("forest.skops")
                      if champ.source.split("/")[-1] in str(p)]
    forest = skops.io.load(forest_file, trusted=["sklearn.tree._tree.Tree"])
    forest.estimators_ = forest.estimators_[: max(1, len(forest.estimators_) // 2)]
    skops.io.dump(forest, forest_file)
    fourth = package(stores, "s4", *GOOD, "model.random_state=5", *data, name="Pinned_RF")
    assert_ends_in_one_line_error(fourth, "python -m src.registry decide")
    v4 = versions(client, "Pinned_RF")[-1]
    assert v4.tags["decision"] == "undecided" and "not its recorded" in v4.tags["decision_reason"]


def test_a_search_that_fails_once_while_packaging_resumes_registers_nothing_twice(stores, tracking_server):
    name, own = own_corner("Once_RF")
    with FaultProxy(tracking_server) as proxy:
        first = package(stores, "resume", *GOOD, *own, name=name, tracking=proxy.uri)
        assert first.returncode == 0, first.stderr
        # as if the packaging died after registering: its study forgets the final stage, its run is KILLED
        client = MlflowClient(tracking_server)
        study = optuna.load_study(study_name="resume", storage=stores.storage)
        study.set_user_attr("sweeper.final", {"trial_number": -1, "run_id": ""})
        (final_run,) = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                          "tags.run_purpose = 'model_packaging'")
        client.set_terminated(final_run.info.run_id, "KILLED")
        fault = proxy.fail("/model-versions/search", status=503, times=1)
        again = package(stores, "resume", *GOOD, *own, name=name, tracking=proxy.uri,
                        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
        assert again.returncode == 0, again.stderr
        assert fault.hits == 1  # the search did fail once
        assert len(versions(client, name)) == 1
        assert "already registered for this trial: reused" in again.stderr
