"""The bad-input catalogue: every row is a real command a user could type, and must end in one line on stderr,
exit code 2, no traceback, and nothing written (no MLflow store, no Optuna study, no registered model).

The README's "Bad inputs" table lists the same rows (tests/test_bad_inputs.py keeps the two in step). The rows are
run by two test files, so that two pytest-xdist workers share them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from src.data.synthetic import generate
from tests.helpers.cli import assert_one_line_error, run_in_process, run_module
from tests.helpers.stores import SMALL


def _csv(folder: Path, kind: str) -> Path:
    frame = generate(3000, 0.02, 0)
    path = folder / f"{kind}.csv"
    if kind == "empty":
        path.write_text("")
        return path
    if kind == "wrong_columns":
        frame = frame.drop(columns=["V7"]).rename(columns={"Amount": "amount"})
    elif kind == "text":
        frame = frame.astype(object)
        frame.loc[41, "V12"] = "n/a?"
    elif kind == "nan":
        frame.loc[9, "V3"] = float("nan")
    elif kind == "inf":
        frame.loc[12, "V5"] = float("inf")
    elif kind == "negative_amount":
        frame.loc[20, "Amount"] = -4.5
    elif kind == "class_2":
        frame.loc[7, "Class"] = 2
    elif kind == "one_class":
        frame = frame[frame.Class == 0]
    elif kind == "few_frauds":
        frame = pd.concat([frame[frame.Class == 0], frame[frame.Class == 1].head(4)])
    elif kind == "twice_named":
        frame = frame.rename(columns={"V2": "V1"})
    frame.to_csv(path, index=False)
    if kind == "extra_field":
        lines = path.read_text().splitlines()
        lines[5] += ",1.0"
        path.write_text("\n".join(lines) + "\n")
    elif kind == "header_only":
        path.write_text(path.read_text().splitlines()[0] + "\n")
    elif kind == "latin1":
        path.write_bytes(path.read_bytes().replace(b"\n1", b"\n1\xe9", 1))
    elif kind == "gzip":
        import gzip

        path.write_bytes(gzip.compress(path.read_bytes()))
    return path


def _store(folder: Path, kind: str) -> Path:
    """A store of one tool (to hand to the other), a file that is not a database, or a folder."""
    if kind == "folder":
        (folder / "a_folder").mkdir(exist_ok=True)
        return folder / "a_folder"
    path = folder / f"{kind}.db"
    if kind == "optuna":
        import optuna

        optuna.create_study(study_name="someone-elses", storage=f"sqlite:///{path}")
    elif kind == "mlflow":
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{path}").search_experiments()
    else:
        path.write_text("these are my notes, not a database\n")
    return path


REAL_DATA = [o for o in SMALL if not o.startswith("dataset")]

# (what, command-line arguments ({tmp} is a temporary folder), the message the user sees)
INPUTS = [
    ("data file missing", ["dataset=creditcard", "dataset.path={tmp}/nope.csv"],
     "dataset.path={tmp}/nope.csv: no such file"),
    ("data file is a folder", ["dataset=creditcard", "dataset.path={tmp}"], "is a folder, not a CSV file"),
    ("data file empty", ["dataset=creditcard", "dataset.path={csv:empty}"], "is empty"),
    ("wrong columns", ["dataset=creditcard", "dataset.path={csv:wrong_columns}"],
     "wrong columns (missing V7, Amount; unexpected amount)"),
    ("text in a number column", ["dataset=creditcard", "dataset.path={csv:text}"],
     "column V12 holds text, not a number: 'n/a?' in data row 42"),
    ("NaN in the data", ["dataset=creditcard", "dataset.path={csv:nan}"], "column V3 is missing (NaN) in data row 10"),
    ("one class only", ["dataset=creditcard", "dataset.path={csv:one_class}"], "column Class holds only 0s"),
    ("too few frauds for the folds", ["dataset=creditcard", "dataset.path={csv:few_frauds}"],
     "only 4 frauds; a 0.2 test split and 3 fold(s) need at least about"),
    ("negative depth", ["model.max_depth=-3"], "model.max_depth must be an integer >= 1 or none (unlimited), got -3"),
    ("min_samples_split of 1", ["model.min_samples_split=1"], "model.min_samples_split must be an integer >= 2"),
    ("no trees", ["model.n_estimators=0"], "model.n_estimators must be an integer >= 1, got 0"),
    ("first look at no trees", ["evaluation.first_look_trees=0"],
     "evaluation.first_look_trees must be an integer >= 1, or null to prune on whole folds only, got 0"),
    ("row looks not increasing", ["evaluation.row_looks=[0.5,0.25]"],
     "evaluation.row_looks must be increasing fractions in (0, 1)"),
    ("row looks and a first look", ["evaluation.row_looks=[0.1]", "evaluation.first_look_trees=5"],
     "evaluation.row_looks must be [] when evaluation.first_look_trees is set"),
    ("test split over 1", ["split.test_size=1.5"], "split.test_size must be a fraction in (0, 1), got 1.5"),
    ("text for a number", ["model.n_estimators=many"], "Value 'many' of type 'str' could not be converted to Integer"),
    ("unknown dataset", ["dataset=kaggle"], "unknown dataset 'kaggle': choose one of creditcard, synthetic"),
    ("misspelled key", ["model.max_dept=4"], "Could not override 'model.max_dept'"),
    ("empty range in the search space", ["--multirun", "model.max_depth=range(30,4)"],
     "search space: model.max_depth: range(30, 4, step=1) is empty (the stop is excluded)"),
    ("search space value out of bounds", ["--multirun", "model.min_samples_leaf=range(0,5)"],
     "model.min_samples_leaf must be an integer >= 1, got 0"),
    ("search space key that does not exist", ["--multirun", "model.depth=range(4,30)"],
     "search space: model.depth is not a key of the config"),
    ("log scale on a choice", ["--multirun", "model.max_depth=tag(log,choice(4,8))"],
     "tag(log, ...) applies to range or interval, not choice"),
    ("unknown sampler", ["--multirun", "hydra.sweeper.sampler=bayes"],
     "hydra.sweeper.sampler=bayes: unknown sampler; choose one of tpe, random, gp, cmaes, qmc"),
    ("storage folder missing", ["--multirun", "hydra.sweeper.storage=sqlite:////no/such/dir/optuna.db"],
     "hydra.sweeper.storage=sqlite:////no/such/dir/optuna.db: folder /no/such/dir does not exist"),
    ("storage unreachable (password hidden)", ["--multirun", "hydra.sweeper.storage=postgresql://me:pw@127.0.0.1:9/o"],
     "hydra.sweeper.storage=postgresql://me:***@127.0.0.1:9/o: cannot connect to the database"),
    ("tracking store folder missing", ["mlflow.tracking_uri=sqlite:////no/such/dir/mlflow.db"],
     "mlflow.tracking_uri=sqlite:////no/such/dir/mlflow.db: folder /no/such/dir does not exist"),
    ("tracking server unreachable", ["mlflow.tracking_uri=http://127.0.0.1:9"],
     "mlflow.tracking_uri=http://127.0.0.1:9: tracking server unreachable"),
    ("file tracking store", ["mlflow.tracking_uri=file:///tmp/mlruns"], "file stores are not supported"),
    ("invalid registry name", ["registry.model_name='fraud/model'"],
     "registry.model_name must be letters, digits, '_', '-', '.' or spaces"),
    # Data files
    ("a row with one field too many", ["dataset=creditcard", "dataset.path={csv:extra_field}"],
     "malformed CSV (Error tokenizing data. C error: Expected 31 fields in line 6, saw 32)"),
    ("a header with no rows", ["dataset=creditcard", "dataset.path={csv:header_only}"], "has a header but no rows"),
    ("a byte that is not UTF-8", ["dataset=creditcard", "dataset.path={csv:latin1}"], "not UTF-8 text (a byte 0xe9"),
    ("a gzipped file", ["dataset=creditcard", "dataset.path={csv:gzip}"], "not a readable CSV file"),
    ("an infinite value", ["dataset=creditcard", "dataset.path={csv:inf}"], "column V5 is infinite in data row 13"),
    ("a Class of 2", ["dataset=creditcard", "dataset.path={csv:class_2}"], "column Class must be 0 or 1, got 2"),
    ("a negative Amount", ["dataset=creditcard", "dataset.path={csv:negative_amount}"],
     "column Amount is negative (-4.5) in data row 21"),
    ("a column named twice", ["dataset=creditcard", "dataset.path={csv:twice_named}"], "wrong columns (missing V2"),
    ("data file under a missing home folder", ["dataset=creditcard", "dataset.path='~nobody_here/creditcard.csv'"],
     "dataset.path=~nobody_here/creditcard.csv: no such file"),
    # Values the schema lets through and a library rejects later
    ("negative forest seed", ["model.random_state=-1"], "model.random_state must be an integer from 0 to 4294967295"),
    ("negative split seed", ["split.seed=-1"], "split.seed must be an integer from 0 to 4294967295"),
    ("negative synthetic seed", ["dataset.seed=-1"], "dataset.seed must be an integer from 0 to 4294967295"),
    ("seed too large", ["model.random_state=4294967296"], "model.random_state must be an integer from 0 to 4294967295"),
    ("a validation split that leaves no training rows",
     ["evaluation.cv_folds=1", "evaluation.validation_size=0.999"], "leave a fold with 0 frauds to fit on"),
    ("more folds than frauds", ["evaluation.cv_folds=500"], "need at least about"),
    ("validation size over 1", ["evaluation.validation_size=1.5"], "evaluation.validation_size must be a fraction"),
    ("threshold of 0", ["evaluation.threshold=0"], "evaluation.threshold must be in (0, 1), got 0"),
    # The cost model and the decision
    ("a cost that is not a number", ["decision.false_alarm_cost=abc"],
     "decision.false_alarm_cost=abc - Value 'abc' of type 'str' could not be converted to Float: give a number"),
    ("a negative cost", ["decision.missed_fraud_cost_per_amount=-1"],
     "decision.missed_fraud_cost_per_amount must be a number >= 0"),
    ("a threshold outside [0, 1]", ["decision.threshold=1.5"], "decision.threshold must be a probability in [0, 1]"),
    ("an unknown cost model", ["decision=generous"], "unknown decision 'generous': choose one of anchor, chargeback"),
    ("a criterion that does not exist", ["registry.criterion=profit"],
     "registry.criterion must be pr_auc or net_gain, got 'profit'"),
    ("an unknown Time feature", ["features.time=hour"], "features.time must be time_of_day or raw or drop"),
    ("too few bootstrap samples", ["evaluation.bootstrap_samples=10"], "evaluation.bootstrap_samples must be >= 100"),
    ("unknown class weight", ["model.class_weight=heavy"], "model.class_weight must be balanced"),
    ("unknown split method", ["split.method=future"], "split.method must be random or time, got 'future'"),
    ("no test split uses", ["registry.max_test_uses=0"], "registry.max_test_uses must be an integer >= 1"),
    ("experiment name of spaces", ["mlflow.experiment_name='   '"], "mlflow.experiment_name must be a name with a"),
    ("the job's context set by hand", ["sweep.stage=final"], "sweep.stage is set by the sweeper for each job"),
]



SETTINGS = [
    # Sweep settings, checked before any store is written
    ("job context in a sweep", ["--multirun", "sweep.trial_number=3"], "sweep.trial_number is set by the sweeper"),
    ("no trials", ["--multirun", "hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials must be >= 1, got 0"),
    ("no failure budget", ["--multirun", "hydra.sweeper.max_failures=0"], "hydra.sweeper.max_failures must be >= 1"),
    ("negative timeout", ["--multirun", "hydra.sweeper.timeout=-5"], "hydra.sweeper.timeout must be > 0 seconds"),
    ("grace period below the heartbeat", ["--multirun", "hydra.sweeper.grace_period=1"],
     "hydra.sweeper.grace_period must exceed hydra.sweeper.heartbeat_interval"),
    ("unknown pruner", ["--multirun", "hydra.sweeper.pruner=sometimes"],
     "hydra.sweeper.pruner=sometimes: unknown pruner"),
    ("unknown objective direction", ["--multirun", "hydra.sweeper.objective.direction=up"],
     "hydra.sweeper.objective.direction must be maximize or minimize, got 'up'"),
    ("sampler option of the wrong type", ["--multirun", "hydra.sweeper.sampler_options={n_startup_trials:abc}"],
     "hydra.sweeper.sampler_options for tpe: TypeError"),
    ("pruner option of the wrong type", ["--multirun", "hydra.sweeper.pruner_options={reduction_factor:abc}"],
     "hydra.sweeper.pruner=successive_halving: '<' not supported between instances of 'str' and 'int' "
     "(hydra.sweeper.pruner_options={reduction_factor:abc})"),
    ("sampler options that are not a mapping", ["--multirun", "hydra.sweeper.sampler_options=abc"],
     "hydra.sweeper.sampler_options must be a mapping of constructor arguments"),
    ("pruner options that are not a mapping", ["--multirun", "hydra.sweeper.pruner_options=[1,2]"],
     "hydra.sweeper.pruner_options must be a mapping of constructor arguments"),
    ("unknown sampler option", ["--multirun", "hydra.sweeper.sampler_options={warp:1}"],
     "hydra.sweeper.sampler=tpe: TPESampler.__init__() got an unexpected keyword argument 'warp'"),
    ("log scale from 0", ["--multirun", "model.n_estimators=tag(log,range(0,100))"],
     "search space: model.n_estimators=tag(log,range(0,100)): `low >= 1` must hold for `log=True`"),
    ("glob in the search space", ["--multirun", "model.max_depth=glob(*)"], "glob(...) is not supported"),
    ("search space split of 1", ["--multirun", "model.min_samples_split=range(1,4)"],
     "model.min_samples_split must be an integer >= 2, got 1"),
    ("a bad data file in a sweep", ["--multirun", "dataset=creditcard", "dataset.path={csv:extra_field}"],
     "the pinned values: "),
    ("a search space the folds cannot take", ["--multirun", "evaluation.cv_folds=500"], "need at least about"),
    # Stores
    ("tracking URI malformed", ["mlflow.tracking_uri='http://[::1'"], "not a valid URI (Invalid IPv6 URL)"),
    ("tracking store is a folder", ["mlflow.tracking_uri=sqlite:///{store:folder}"], "a_folder is a folder"),
    ("tracking store is not a database", ["mlflow.tracking_uri=sqlite:///{store:notes}"],
     "notes.db is not a SQLite database"),
    ("tracking store is the Optuna database", ["mlflow.tracking_uri=sqlite:///{store:optuna}"],
     "optuna.db is an Optuna storage; give mlflow its own database"),
    ("tracking database unreachable (password hidden)", ["mlflow.tracking_uri=postgresql://me:pw@127.0.0.1:9/m"],
     "mlflow.tracking_uri=postgresql://me:***@127.0.0.1:9/m: cannot connect to the database"),
    ("tracking URI with a token (hidden)", ["mlflow.tracking_uri='https://127.0.0.1:9/?token=s3cret'"],
     "mlflow.tracking_uri=https://127.0.0.1:9/?token=***: tracking server unreachable"),
    ("unknown tracking scheme", ["mlflow.tracking_uri=ftp://example.org/x"], "unknown scheme 'ftp'"),
    ("storage is a folder", ["--multirun", "hydra.sweeper.storage=sqlite:///{store:folder}"], "a_folder is a folder"),
    ("storage is not a database", ["--multirun", "hydra.sweeper.storage=sqlite:///{store:notes}"],
     "notes.db is not a SQLite database"),
    ("storage is the MLflow database", ["--multirun", "hydra.sweeper.storage=sqlite:///{store:mlflow}"],
     "mlflow.db is an MLflow tracking store; give optuna its own database"),
    ("storage with an unknown scheme", ["--multirun", "hydra.sweeper.storage=mongodb://127.0.0.1/o"],
     "hydra.sweeper.storage=mongodb://127.0.0.1/o: cannot open the Optuna storage"),
]
CATALOGUE = [*INPUTS, *SETTINGS]


def _render(arg: str, tmp: Path) -> str:
    arg = arg.replace("{tmp}", str(tmp))
    arg = re.sub(r"\{store:(\w+)\}", lambda m: str(_store(tmp, m.group(1))), arg)
    return re.sub(r"\{csv:(\w+)\}", lambda m: str(_csv(tmp, m.group(1))), arg)


# One row per error family runs as a real command line in a fresh process (what a user types); the others run the
# same entry point in-process (tests.helpers.cli.run_in_process): the same one line, exit code and nothing written.
COMMAND_LINE = {"data file missing", "negative depth", "empty range in the search space", "no trials",
                "tracking server unreachable", "a negative cost", "storage unreachable (password hidden)",
                "tracking URI with a token (hidden)"}


def run_row(tmp_path: Path, what: str, args: list[str], message: str) -> None:
    data_dir = tmp_path / "in"
    data_dir.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rendered = [_render(a, data_dir) for a in args]
    base = SMALL if not any(a.startswith("dataset=creditcard") for a in args) else REAL_DATA
    stores = [f"mlflow.tracking_uri=sqlite:///{out_dir / 'mlflow.db'}",
              f"hydra.sweeper.storage=sqlite:///{out_dir / 'optuna.db'}",
              f"hydra.sweep.dir={out_dir / 'sweep'}", f"hydra.run.dir={out_dir / 'run'}"]
    stores = [s for s in stores if s.split("=")[0] not in {a.split("=")[0] for a in rendered}]
    flags = [a for a in rendered if a.startswith("--")]
    rest = [a for a in rendered if not a.startswith("--")]
    runner = run_module if what in COMMAND_LINE else run_in_process
    result = runner("src.train", *flags, *base, *stores, *rest)
    assert_one_line_error(result, message.replace("{tmp}", str(data_dir)))
    assert not any(p.name in ("mlflow.db", "optuna.db", "mlruns") for p in out_dir.rglob("*")), what
    assert "s3cret" not in result.stderr and ":pw@" not in result.stderr
