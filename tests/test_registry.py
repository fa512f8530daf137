"""Packaging, registration, the champion/challenger gate, the registry commands and REST serving."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from tests.helpers.cli import ROOT, assert_one_line_error, run_in_process
from tests.helpers.stores import SMALL, Stores

pytestmark = pytest.mark.slow  # one worker runs the whole module (tests/conftest.py: WHOLE_MODULES)
NAME = "CreditCardFraud_RF_synthetic"  # the default name follows the dataset


def sweep(stores: Stores, *overrides: str):
    return run_in_process("src.train", "--multirun", *SMALL, *stores.overrides(), "mlflow.log_plots=false",
                      "hydra.sweeper.pruner=none", *overrides)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two sweeps into one store: a decent model (with plots), then a worse one pinned to a single stump."""
    root = tmp_path_factory.mktemp("registry")
    stores = Stores(root, f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}", root / "sweep1")
    first = sweep(stores, "hydra.sweeper.n_trials=2", "model.max_depth=8", "mlflow.log_plots=true")
    assert first.returncode == 0, first.stderr
    second_stores = Stores(root, stores.tracking_uri, stores.storage, root / "sweep2")
    second = sweep(second_stores, "hydra.sweeper.n_trials=2", "model.max_depth=1", "model.n_estimators=1",
                   "model.class_weight=null")
    assert second.returncode == 0, second.stderr
    return stores, first, second


def test_best_trial_is_packaged_under_the_parent(registry):
    stores, first, _ = registry
    client = stores.client()
    res = yaml.safe_load((stores.root / "sweep1" / "optimization_results.yaml").read_text())
    packaged = client.get_run(res["final_run_id"])
    assert packaged.info.run_name == "best_model_packaged" and packaged.info.status == "FINISHED"
    assert packaged.data.tags["mlflow.parentRunId"] == res["parent_run_id"]
    assert packaged.data.tags["run_purpose"] == "model_packaging"
    m = packaged.data.metrics
    assert m["test_pr_auc_ci_low"] <= m["test_pr_auc"] <= m["test_pr_auc_ci_high"]
    assert 0 < m["test_roc_auc"] <= 1
    assert packaged.data.params["max_depth"] == "8"
    # the packaged trial: the best that beat the configured model with confidence, else the configured model
    study = optuna.load_study(study_name=res["study_name"], storage=stores.storage)
    final = study.trials[res["final_trial_number"]]
    assert packaged.data.tags["optuna.trial_number"] == str(final.number)
    for key, value in final.params.items():
        assert packaged.data.params[key.split(".")[-1]] == str(value)
    assert packaged.data.params["decision_threshold"] == f"{final.user_attrs['decision_threshold']:.6g}"
    if final.number != res["best_trial_number"]:
        assert res["best_vs_configured"]["ci_low"] <= 0 and "it is the one packaged" in first.stdout
    plots = {a.path for a in client.list_artifacts(packaged.info.run_id, "test_plots")}
    assert {"test_plots/confusion_matrix.png", "test_plots/precision_recall_curve.png"} <= plots
    assert "test_pr_auc = " in first.stdout and "95% bootstrap interval" in first.stdout  # a result: stdout


def test_mlflow_log_plots_false_holds_for_the_packaged_run_too(registry):
    stores, _, _ = registry  # the second sweep ran with mlflow.log_plots=false
    res = yaml.safe_load((stores.root / "sweep2" / "optimization_results.yaml").read_text())
    client = stores.client()
    assert client.get_run(res["final_run_id"]).info.status == "FINISHED"
    assert client.list_artifacts(res["final_run_id"], "test_plots") == []


def test_first_model_becomes_champion_and_loads_from_its_alias(registry):
    stores, _, _ = registry
    client = stores.client()
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert str(champion.version) == "1"
    assert champion.tags["decision"] == "promoted" and "no champion yet" in champion.tags["decision_reason"]
    assert len(champion.tags["lineage.data_sha256"]) == 64 and champion.tags["test_split_uses"] == "1"
    mlflow.set_tracking_uri(stores.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    schema = model.metadata.get_input_schema()
    assert schema.input_names() == ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]
    assert {t.name for t in schema.input_types()} == {"double"}
    outputs = model.metadata.get_output_schema()
    assert outputs.input_names() == ["fraud_probability", "decision"]
    assert [t.name for t in outputs.input_types()] == ["double", "long"]
    local = mlflow.artifacts.download_artifacts(champion.source)
    example = json.loads((Path(local) / "serving_input_example.json").read_text())
    answer = model.predict(model.input_example)
    assert list(answer.columns) == ["fraud_probability", "decision"] and len(answer) == 5
    threshold = float(champion.tags["decision_threshold"])
    assert ((answer.fraud_probability >= threshold).astype(int) == answer.decision).all()
    assert example["dataframe_split"]["columns"][0] == "Time"
    flavor = yaml.safe_load((Path(local) / "MLmodel").read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models-from-code: no pickle to load
    assert flavor["artifacts"]["forest"]["path"].endswith(".skops")
    assert flavor["config"]["decision_threshold"] == pytest.approx(threshold)
    assert champion.tags["cost_model"] == "anchor" and "missed_fraud_cost_per_amount=1" in champion.tags[
        "cost_model.values"]


def test_the_champion_loads_in_a_process_with_its_own_package_named_src(registry, tmp_path):
    """A fraud team's service often has its own ``src`` package: the version's carried code must neither be
    shadowed by it nor shadow it (a fresh process: the point is a process that is not this app)."""
    stores, _, _ = registry
    service = tmp_path / "service"
    (service / "src" / "model").mkdir(parents=True)
    (service / "src" / "__init__.py").write_text("WHOSE = 'the service'\n")
    (service / "src" / "model" / "__init__.py").write_text("")
    script = ("import mlflow, src\n"
              f"model = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
              "answer = model.predict(model.input_example)\n"
              "import src\n"
              "print(len(answer), src.WHOSE)\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": stores.tracking_uri, "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, "-c", script], cwd=service, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["5", "the", "service"]


def test_two_copies_of_a_version_loaded_in_one_process_each_run_their_own_carried_code(registry, tmp_path):
    """MLflow puts each loaded model's code folder first on the path: a second model must not silently run the
    first one's input code (here the second copy's refuses every row)."""
    stores, _, _ = registry
    source = stores.client().get_model_version_by_alias(NAME, "champion").source
    first = Path(mlflow.artifacts.download_artifacts(source, dst_path=str(tmp_path / "first"),
                                                     tracking_uri=stores.tracking_uri))
    second = Path(shutil.copytree(first, tmp_path / "second"))
    (carried,) = [p for p in (second / "code").rglob("*.py") if "inputs" in p.name]
    carried.write_text(carried.read_text() + "\n\ndef check_rows(*args, **kwargs):\n"
                       "    raise InputError('the second copy refuses every row')\n")
    one, two = mlflow.pyfunc.load_model(str(first)), mlflow.pyfunc.load_model(str(second))
    assert len(one.predict(one.input_example)) == 5
    with pytest.raises(mlflow.exceptions.MlflowException, match="the second copy refuses every row"):
        two.predict(two.input_example)
    assert len(one.predict(one.input_example)) == 5  # the first still runs its own


def test_shifting_every_time_by_whole_days_leaves_every_served_probability_unchanged(registry):
    """The forest learns the time of day, not seconds since the file began: next week's transactions are scored
    as today's."""
    stores, _, _ = registry
    mlflow.set_tracking_uri(stores.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    from src.config import SyntheticDatasetConfig
    from src.data.loading import load

    data = load(SyntheticDatasetConfig(n_rows=6000, fraud_rate=0.02))
    frame = pd.DataFrame(data.X[:2000].astype(np.float64), columns=model.metadata.get_input_schema().input_names())
    before = model.predict(frame)
    for days in (1, 7, 365):
        later = frame.assign(Time=frame.Time + days * 86_400)
        assert (model.predict(later).fraud_probability.to_numpy() == before.fraud_probability.to_numpy()).all()
    assert before.fraud_probability.nunique() > 10  # a real model, not a constant


def test_worse_challenger_does_not_replace_the_champion(registry):
    stores, _, second = registry
    client = stores.client()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    assert str(challenger.version) == "2"
    tags = challenger.tags
    assert tags["decision"] == "kept_champion"
    assert "re-scored on the same" in tags["decision_reason"] and "champion kept" in tags["decision_reason"]
    assert float(tags["champion_test_pr_auc"]) > float(tags["test_pr_auc"])
    assert tags["compared_with_version"] == "1" and tags["lineage"] == client.get_model_version(NAME, "1").tags[
        "lineage"] and tags["test_split_uses"] == "2"
    assert "kept_champion" in challenger.description
    assert "champion unchanged" in second.stdout  # the gate's decision: stdout


def test_registry_commands_promote_and_roll_back(registry):
    stores, _, _ = registry
    cli = ["--tracking-uri", stores.tracking_uri, "--name", NAME]
    listed = run_in_process("src.registry", *cli, "list")
    assert listed.returncode == 0 and "champion" in listed.stdout and "challenger" in listed.stdout
    promoted = run_in_process("src.registry", *cli, "promote", "2", "--reason", "shadow test passed")
    assert promoted.returncode == 0, promoted.stderr
    client = stores.client()
    v2 = client.get_model_version(NAME, "2")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert v2.tags["decision"] == "manual_promotion" and v2.tags["decision_reason"] == "shadow test passed"
    assert v2.tags["previous_champion"] == "1"
    back = run_in_process("src.registry", *cli, "rollback", "--reason", "worse in production")
    assert back.returncode == 0, back.stderr
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_model_version(NAME, "1").tags["decision"] == "rollback"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["promote", "9", "--reason", "x"], "has no version 9"),
        (["--name", "NoSuchModel", "promote", "1", "--reason", "x"], "no registered model named 'NoSuchModel'"),
        (["promote", "1", "--reason", " "], "--reason must say why"),
        (["rollback", "--to", "1", "--reason", "x"], "version 1 is already the champion"),
    ],
)
def test_registry_command_errors_are_one_line(registry, args, fragment):
    stores, _, _ = registry
    name = [] if "--name" in args else ["--name", NAME]
    out = run_in_process("src.registry", "--tracking-uri", stores.tracking_uri, *name, *args)
    assert_one_line_error(out, fragment)


def test_invalid_registry_name_fails_before_training(tmp_path):
    stores = Stores(tmp_path, f"sqlite:///{tmp_path / 'm.db'}", f"sqlite:///{tmp_path / 'o.db'}", tmp_path / "s")
    out = sweep(stores, "registry.model_name='bad/name'")
    assert_one_line_error(out, "registry.model_name must be")
    assert not (tmp_path / "m.db").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_champion_is_served_over_rest(registry):
    stores, _, _ = registry
    client = stores.client()
    local = mlflow.artifacts.download_artifacts(client.get_model_version_by_alias(NAME, "champion").source,
                                                tracking_uri=stores.tracking_uri)
    example = json.loads((Path(local) / "serving_input_example.json").read_text())
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": stores.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion", "--env-manager",
         "local", "-h", "127.0.0.1", "-p", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(0.5)
        else:
            pytest.fail("the model server did not start")
        url = f"http://127.0.0.1:{port}/invocations"
        status, body = _post(url, example)
        assert status == 200, body
        predictions = json.loads(body)["predictions"]
        assert len(predictions) == 5 and all(set(p) == {"fraud_probability", "decision"} for p in predictions)
        threshold = float(client.get_model_version_by_alias(NAME, "champion").tags["decision_threshold"])
        assert all(p["decision"] == int(p["fraud_probability"] >= threshold) for p in predictions)
        split = example["dataframe_split"]
        week_later = {"dataframe_split": {"columns": split["columns"],
                                          "data": [[r[0] + 7 * 86_400, *r[1:]] for r in split["data"]]}}
        status, body = _post(url, week_later)
        assert status == 200 and json.loads(body)["predictions"] == predictions  # the same answer next week
        missing = {"dataframe_split": {"columns": split["columns"][:-1], "data": [r[:-1] for r in split["data"]]}}
        status, body = _post(url, missing)
        assert 400 <= status < 500 and "Amount" in body
        text = {"dataframe_split": {"columns": split["columns"], "data": [["x", *split["data"][0][1:]]]}}
        status, body = _post(url, text)
        assert 400 <= status < 500 and "Time" in body
        negative = {"dataframe_split": {"columns": split["columns"], "data": [[*split["data"][0][:-1], -12.5]]}}
        status, body = _post(url, negative)
        assert status == 400 and "column Amount is negative (-12.5) in row 1" in json.loads(body)["message"]
        nan = {"dataframe_split": {"columns": split["columns"], "data": [[split["data"][0][0], None,
                                                                          *split["data"][0][2:]]]}}
        status, body = _post(url, nan)
        assert status == 400 and "column V1 is missing (NaN or null) in row 1" in json.loads(body)["message"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def test_packaging_leaves_only_the_users_studies(registry):
    stores, _, _ = registry  # the final stage's claim markers are removed once it is done
    names = optuna.get_all_study_names(stores.storage)
    assert len(names) == 2 and not [n for n in names if "::" in n]


def test_packaged_plots_keep_the_default_style(registry, tmp_path):
    """Optuna's plots (drawn just before, in the same process) switch matplotlib to ggplot: not for these."""
    import matplotlib.image

    stores, _, _ = registry
    client = stores.client()
    res = yaml.safe_load((stores.root / "sweep1" / "optimization_results.yaml").read_text())
    path = client.download_artifacts(res["final_run_id"], "test_plots/precision_recall_curve.png", str(tmp_path))
    pixels = (matplotlib.image.imread(path)[..., :3] * 255).round()
    ggplot_grey = ((pixels == 229).all(axis=-1)).mean()  # ggplot's axes background, #E5E5E5
    assert ggplot_grey < 0.01, f"{ggplot_grey:.0%} of the figure is ggplot's grey"


def test_a_version_number_with_a_leading_zero_is_that_version(registry):
    stores, _, _ = registry
    client = stores.client()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    out = run_in_process("src.registry", "--tracking-uri", stores.tracking_uri, "--name", NAME, "promote", "01",
                     "--reason", "confirmed")
    assert out.returncode == 0, out.stderr
    assert client.get_model_version(NAME, "1").tags.get("previous_champion") != "1"  # not its own predecessor


def test_list_reads_a_store_on_a_read_only_file_system(registry, tmp_path):
    stores, _, _ = registry
    copy = tmp_path / "ro"
    shutil.copytree(stores.root, copy, ignore=shutil.ignore_patterns("sweep*", "*.lock"))
    script = (f"mount --bind {copy} {copy} && mount -o remount,ro,bind {copy} && cd {ROOT} && "
              f"{sys.executable} -m src.registry --tracking-uri sqlite:///{copy / 'mlflow.db'} --name {NAME} list")
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "champion" in done.stdout and "Traceback" not in done.stderr


def test_the_registry_refuses_another_tools_database(registry):
    stores, _, _ = registry
    out = run_in_process("src.registry", "--tracking-uri", stores.storage, "--name", NAME, "list")
    assert_one_line_error(out, "is not an MLflow tracking store")


def test_the_threshold_is_the_trials_own_whatever_the_test_labels_say(tmp_path):
    """Two files that differ only in the labels of the test rows (the latest 20 % by Time): the trials never see those
    rows, so the packaged model's threshold is the same, while its test net gain is not."""
    from src.data.synthetic import generate
    from tests.helpers.sweeps import package

    frame = generate(6000, 0.02, 0)  # sorted by Time: the test split of split.method=time is its last 1200 rows
    test = np.arange(len(frame) - 1200, len(frame))
    permuted = frame.copy()
    permuted.loc[test, "Class"] = np.random.default_rng(0).permutation(frame.loc[test, "Class"].to_numpy())
    stores = Stores.ready(tmp_path)
    tags = {}
    for label, data in (("as_is", frame), ("permuted", permuted)):
        csv = tmp_path / f"{label}.csv"
        data.to_csv(csv, index=False)
        out = package(stores, label, "dataset=creditcard", f"dataset.path={csv}", "split.method=time",
                      name=f"Labels_{label}")
        assert out.returncode == 0, out.stderr
        (mv,) = stores.client().search_model_versions(f"name = 'Labels_{label}'")
        tags[label] = mv.tags
    assert tags["as_is"]["decision_threshold"] == tags["permuted"]["decision_threshold"]
    assert tags["as_is"]["test_net_gain"] != tags["permuted"]["test_net_gain"]
    assert tags["as_is"]["lineage.test_rows"] != tags["permuted"]["lineage.test_rows"]


def test_the_gate_judges_money_when_the_lineage_says_so(tmp_path):
    from tests.helpers.sweeps import GOOD, WEAK, package

    stores = Stores.ready(tmp_path)
    first = package(stores, "weak", *WEAK, "registry.criterion=net_gain", name="Money_RF")
    assert first.returncode == 0, first.stderr
    second = package(stores, "good", *GOOD, "registry.criterion=net_gain", name="Money_RF")
    assert second.returncode == 0, second.stderr
    client = stores.client()
    v2 = client.get_model_version("Money_RF", "2")
    reason = v2.tags["decision_reason"]
    assert "criterion net_gain" in reason and "net gain difference +" in reason and "AP difference" in reason
    assert v2.tags["decision"] == "promoted"
    assert str(client.get_model_version_by_alias("Money_RF", "champion").version) == "2"
