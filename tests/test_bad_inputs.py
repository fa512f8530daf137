"""The bad-input catalogue: every row is a real command a user could type, and must end in one line on stderr,
a non-zero exit, no traceback, and nothing written (no MLflow store, no Optuna study, no registered model).

The README's "Bad inputs" table lists the same rows; test_readme_lists_every_row keeps the two in step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from src.synthetic import generate
from tests.helpers.cli import ROOT, assert_one_line_error, run_module
from tests.helpers.stores import SMALL

pytestmark = pytest.mark.slow


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
    elif kind == "one_class":
        frame = frame[frame.Class == 0]
    elif kind == "few_frauds":
        frame = pd.concat([frame[frame.Class == 0], frame[frame.Class == 1].head(4)])
    frame.to_csv(path, index=False)
    return path


REAL_DATA = [o for o in SMALL if not o.startswith("dataset")]

# (what, command-line arguments ({tmp} is a temporary folder), the message the user sees)
CATALOGUE = [
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
]


def _render(arg: str, tmp: Path) -> str:
    arg = arg.replace("{tmp}", str(tmp))
    return re.sub(r"\{csv:(\w+)\}", lambda m: str(_csv(tmp, m.group(1))), arg)


@pytest.mark.parametrize("what, args, message", CATALOGUE, ids=[row[0] for row in CATALOGUE])
def test_bad_input(tmp_path, what, args, message):
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
    result = run_module("src.train", *flags, *base, *stores, *rest)
    assert_one_line_error(result, message.replace("{tmp}", str(data_dir)))
    assert not any(p.name in ("mlflow.db", "optuna.db", "mlruns") for p in out_dir.rglob("*")), what


def test_readme_lists_every_row():
    readme = (ROOT / "README.md").read_text()
    missing = [what for what, _, _ in CATALOGUE if f"| {what} |" not in readme]
    assert not missing, f"README's bad-input table lacks: {missing}"
    assert len(CATALOGUE) >= 20
