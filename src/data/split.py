"""The held-out test split and the folds of the training split, as row indices into a Dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit, train_test_split

from src.config import EvaluationConfig, SplitConfig
from src.data.schema import FEATURES, DataError, Dataset

TIME_COLUMN = FEATURES.index("Time")


@dataclass(frozen=True)
class Split:
    """Row indices into a Dataset: the held-out test split and the folds of the training split."""

    train: np.ndarray
    test: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]  # (fit, validate) indices into the dataset


def split(data: Dataset, split_cfg: SplitConfig, eval_cfg: EvaluationConfig) -> Split:
    """The test split (random: stratified and seeded; time: the latest rows by Time), then stratified folds (or one
    validation split) inside the training part. With a time split the folds are drawn from the earlier rows only:
    stratified and shuffled there, so that every fold sees frauds of both days' earlier hours, while the test split
    alone answers how the model does on later transactions."""
    y = data.y
    # An average precision from one fraud is a coin flip: ask for at least two in every scored part.
    per_part = 2
    folds_needed = per_part * max(eval_cfg.cv_folds, 2)
    index = np.arange(len(y))
    if split_cfg.method == "time":
        order = np.argsort(data.X[:, TIME_COLUMN], kind="stable")  # ties keep the file's order
        n_test = max(1, int(round(len(y) * split_cfg.test_size)))
        train, test = np.sort(order[:-n_test]), np.sort(order[-n_test:])
    else:
        train, test = _stratified_or_none(index, y, split_cfg)
    test_pos = int(y[test].sum()) if test is not None else 0
    train_pos = int(y[train].sum()) if train is not None else 0
    if test is None or train is None or test_pos < per_part or train_pos < folds_needed:
        need = int(np.ceil(folds_needed / (1 - split_cfg.test_size))) + int(np.ceil(per_part / split_cfg.test_size))
        where = f" ({test_pos} in the latest {split_cfg.test_size:g} by Time)" if split_cfg.method == "time" else ""
        raise DataError(
            f"{data.source}: only {data.n_frauds} frauds{where}; a {split_cfg.test_size:g} test split and "
            f"{eval_cfg.cv_folds} fold(s) need at least about {need}: use more data or lower evaluation.cv_folds")
    if eval_cfg.cv_folds == 1:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=eval_cfg.validation_size, random_state=split_cfg.seed)
    else:
        splitter = StratifiedKFold(n_splits=eval_cfg.cv_folds, shuffle=True, random_state=split_cfg.seed)
    try:
        folds = tuple((train[fit], train[val]) for fit, val in splitter.split(train, y[train]))
    except ValueError as exc:  # scikit-learn's own check: e.g. a validation split that leaves no training rows
        raise DataError(f"evaluation.cv_folds={eval_cfg.cv_folds}, evaluation.validation_size="
                        f"{eval_cfg.validation_size:g}: {' '.join(str(exc).split())}") from None
    for fit, val in folds:
        if y[fit].sum() < per_part or y[val].sum() < 1 or len(fit) < 2 * per_part:
            raise DataError(f"evaluation.cv_folds={eval_cfg.cv_folds}, evaluation.validation_size="
                            f"{eval_cfg.validation_size:g} leave a fold with {int(y[fit].sum())} frauds to fit on and "
                            f"{int(y[val].sum())} to validate: choose fewer folds or a validation_size nearer 0.25")
    return Split(train=train, test=test, folds=folds)


def _stratified_or_none(index: np.ndarray, y: np.ndarray, cfg: SplitConfig) -> tuple:
    n_pos = int(y.sum())
    test_pos = int(round(n_pos * cfg.test_size))
    if test_pos < 2 or n_pos - test_pos < 4:
        return None, None  # too few frauds: the caller says how many are needed
    train, test = train_test_split(index, test_size=cfg.test_size, stratify=y, random_state=cfg.seed)
    return np.sort(train), np.sort(test)
