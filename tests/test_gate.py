"""A promotion decision to trust: the gate fails closed, compares one lineage only, spends the test split as a
budget, loads a champion only with the project's trusted types; the time-ordered holdout; the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers import sweeps
from tests.helpers.cli import assert_ends_in_one_line_error, assert_one_line_error, run_in_process
from tests.helpers.proxy import FaultProxy
from tests.helpers.stores import SMALL, Stores
from tests.helpers.sweeps import own_corner

NAME = "Gate_RF"
GOOD = ["model.max_depth=8"]
WEAK = ["model.max_depth=1", "model.n_estimators=1", "model.class_weight=null"]  # about as good as a constant


def package(stores: Stores, sweep_dir: str, *overrides: str, env: dict | None = None, tracking: str | None = None):
    """A 1-trial sweep and its final stage (refit, test, register, gate)."""
    return sweeps.package(stores, sweep_dir, *overrides, name=NAME, tracking=tracking, env=env)


def version(client: MlflowClient, number: int, name: str = NAME):
    return client.get_model_version(name, str(number))


def champion(client: MlflowClient, name: str = NAME) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


@pytest.mark.slow
def test_a_registry_that_fails_during_the_gate_moves_no_alias_and_decide_finishes_later(stores, tracking_server):
    name, own = own_corner("Gate_RF")
    with FaultProxy(tracking_server) as proxy:
        first = sweeps.package(stores, "s1", *GOOD, *own, name=name, tracking=proxy.uri)
        assert first.returncode == 0, first.stderr
        proxy.fail("/registered-models/alias", status=503, method="GET")  # the champion look-up
        fast = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        second = sweeps.package(stores, "s2", *WEAK, *own, "hydra.sweeper.study_name=weak", name=name,
                                tracking=proxy.uri, env=fast)
        assert_ends_in_one_line_error(second, "python -m src.registry decide 2")
        client = MlflowClient(tracking_server)
        assert champion(client, name) == "1"  # a constant-ish challenger was not promoted over a good champion
        v2 = version(client, 2, name)
        assert v2.tags["decision"] == "undecided" and "503" in v2.tags["decision_reason"]
        assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"
        proxy.clear()  # the registry is back: decide as the message said
        decided = run_in_process("src.registry", "--tracking-uri", proxy.uri, "--name", name, "decide", "2")
        assert decided.returncode == 0, decided.stderr
        v2 = version(client, 2, name)
        assert v2.tags["decision"] == "kept_champion" and "re-scored on the same" in v2.tags["decision_reason"]
        assert champion(client, name) == "1" and "kept_champion" in decided.stdout


@pytest.mark.slow
def test_a_champion_of_another_lineage_is_never_replaced_automatically(stores):
    first = package(stores, "s1", *WEAK, "dataset.seed=0")
    assert first.returncode == 0, first.stderr
    better_other_data = package(stores, "s2", *GOOD, "dataset.seed=1")
    assert better_other_data.returncode == 0, better_other_data.stderr
    client = stores.client()
    assert champion(client) == "1"
    v2 = version(client, 2)
    assert v2.tags["decision"] == "kept_champion"
    assert "another lineage (data " in v2.tags["decision_reason"] and v2.tags["lineage"] != version(client, 1).tags[
        "lineage"]
    promoted = run_in_process("src.registry", "--tracking-uri", stores.tracking_uri, "--name", NAME, "promote", "2",
                          "--reason", "checked on the new data by hand")
    assert promoted.returncode == 0 and champion(client) == "2"  # the explicit override stays


@pytest.mark.slow
def test_past_the_test_split_budget_a_better_model_is_not_promoted_automatically(stores):
    first = package(stores, "s1", *WEAK, "registry.max_test_uses=1")
    assert first.returncode == 0, first.stderr
    second = package(stores, "s2", *GOOD, "registry.max_test_uses=1")
    assert second.returncode == 0, second.stderr
    client = stores.client()
    v2 = version(client, 2)
    assert champion(client) == "1" and v2.tags["decision"] == "kept_champion" and v2.tags["test_split_uses"] == "2"
    assert "better, but not promoted automatically" in v2.tags["decision_reason"]
    assert "split.seed=43" in v2.tags["decision_reason"]
    listed = run_in_process("src.registry", "--tracking-uri", stores.tracking_uri, "--name", NAME, "list")
    assert listed.returncode == 0 and "test uses" in listed.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args", [["sweep.stage=final"], ["sweep.stage=package"], ["sweep.trial_number=3"],
                                  ["--multirun", "sweep.stage=final"]])
def test_only_the_sweeper_sets_the_jobs_context(new_stores, args):
    flags = [a for a in args if a.startswith("--")]
    out = run_in_process("src.train", *flags, *SMALL, *new_stores.overrides(), *[a for a in args if a not in flags])
    assert_one_line_error(out, f"{args[-1].split('=')[0]} is set by the sweeper")
    assert not (new_stores.root / "mlflow.db").exists()


@pytest.mark.slow
def test_a_champion_whose_model_file_was_tampered_with_is_refused(stores):
    first = package(stores, "s1", *WEAK)
    assert first.returncode == 0, first.stderr
    # Tamper with the champion's files: an untrusted type planted in its forest (whatever the model's own files say,
    # the gate loads with this project's list of trusted types).
    import collections

    import skops.io

    (mlmodel,) = list((stores.root / "mlruns").rglob("MLmodel"))
    spec = yaml.safe_load(mlmodel.read_text())
    model_file = mlmodel.parent / spec["flavors"]["python_function"]["artifacts"]["forest"]["path"]
    model = skops.io.load(model_file, trusted=["sklearn.tree._tree.Tree"])
    model.planted_ = collections.Counter(owned=1)
    skops.io.dump(model, model_file)
    second = package(stores, "s2", *GOOD)
    assert_ends_in_one_line_error(second, "outside the trusted list")
    assert "collections.Counter" in second.stderr.strip().splitlines()[-1]
    assert champion(stores.client()) == "1"


def test_synthetic_data_registers_under_its_own_name(compose_cfg):
    from src.config import validate

    assert validate(compose_cfg(["dataset=synthetic"])).registry.model_name == "CreditCardFraud_RF_synthetic"
    assert validate(compose_cfg([])).registry.model_name == "CreditCardFraud_RF"


def test_a_time_split_tests_on_the_latest_rows_and_folds_only_the_earlier_ones(compose_cfg):
    from src.config import validate
    from src.data.loading import load
    from src.data.split import split

    cfg = validate(compose_cfg(["dataset=synthetic", "dataset.n_rows=6000", "dataset.fraud_rate=0.02",
                                "split.method=time"]))
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    time_ = data.X[:, 0]
    assert time_[parts.test].min() >= time_[parts.train].max()
    assert len(parts.test) == round(len(data.y) * 0.2) and data.y[parts.test].sum() >= 2
    for fit, val in parts.folds:
        assert np.isin(fit, parts.train).all() and np.isin(val, parts.train).all()
    assert cfg.split.describe() == "time,test_size=0.2"
    other_seed = split(data, validate(compose_cfg(["dataset=synthetic", "dataset.n_rows=6000",
                                                   "dataset.fraud_rate=0.02", "split.method=time",
                                                   "split.seed=7"])).split, cfg.evaluation)
    assert (other_seed.test == parts.test).all()  # the seed only shuffles the folds


def test_the_paired_bootstrap_resamples_both_models_on_the_same_rows():
    """A challenger a little better than the champion on every fraud: paired, the difference's lower bound is above
    zero; resampling the two models' rows independently would bury the same difference in noise."""
    from src.model.evaluation import paired_bootstrap

    rng = np.random.default_rng(0)
    y = np.zeros(4000, dtype=int)
    y[:60] = 1
    champion = np.clip(rng.normal(0.2, 0.15, len(y)) + 0.35 * y, 0, 1)
    challenger = np.clip(champion + 0.01 * y, 0, 1)  # the same ranking, frauds a little higher
    cmp = paired_bootstrap(y, challenger, champion, n_boot=400, seed=0, confidence=0.95)
    assert cmp.diff > 0 and cmp.diff_lower > 0
    # what independent resampling gives for the same two models (the spread a wrong implementation would see)
    from sklearn.metrics import average_precision_score

    diffs = []
    for _ in range(400):
        a, b = rng.integers(0, len(y), len(y)), rng.integers(0, len(y), len(y))
        diffs.append(average_precision_score(y[a], challenger[a]) - average_precision_score(y[b], champion[b]))
    assert np.quantile(diffs, 0.05) < 0 < cmp.diff_lower


def test_the_lineage_names_what_differs():
    from src.lifecycle.lineage import Lineage

    common = {"split": "random,test_size=0.2,seed=42", "test_rows": "c" * 64, "features": "time_of_day,V1",
              "cost_model": "caught_fraud_gain=50"}
    a = Lineage(data_sha256="a" * 64, **common)
    b = Lineage(data_sha256="b" * 64, **common)
    assert a.key != b.key and Lineage.from_tags(a.tags()) == a
    (difference,) = b.differences(a)
    assert difference.startswith("data aaaa") and a.differences(None) == ["its lineage is not recorded in full"]
    other_rows = Lineage(data_sha256="a" * 64, **{**common, "test_rows": "d" * 64})
    assert [d.split(" ")[0:2] for d in other_rows.differences(a)] == [["test", "rows"]]
