"""The held-out test split and the folds of the training split, as row indices into a Dataset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit, train_test_split

from src.config import EvaluationConfig, SplitConfig
from src.data import DataError, Dataset


@dataclass(frozen=True)
class Split:
    """Row indices into a Dataset: the held-out test split and the folds of the training split."""

    train: np.ndarray
    test: np.ndarray
    folds: tuple[tuple[np.ndarray, np.ndarray], ...]  # (fit, validate) indices into the dataset


def split(data: Dataset, split_cfg: SplitConfig, eval_cfg: EvaluationConfig) -> Split:
    """Stratified train/test split, then stratified folds (or one validation split) inside the training part."""
    y = data.y
    # An average precision from one fraud is a coin flip: ask for at least two in every scored part.
    per_part = 2
    folds_needed = per_part * max(eval_cfg.cv_folds, 2)
    n_pos = data.n_frauds
    test_pos = int(round(n_pos * split_cfg.test_size))
    train_pos = n_pos - test_pos
    if test_pos < per_part or train_pos < folds_needed:
        need = int(np.ceil(folds_needed / (1 - split_cfg.test_size))) + int(np.ceil(per_part / split_cfg.test_size))
        raise DataError(
            f"{data.source}: only {n_pos} frauds; a {split_cfg.test_size:g} test split and "
            f"{eval_cfg.cv_folds} fold(s) need at least about {need}: use more data or lower evaluation.cv_folds")
    index = np.arange(len(y))
    train, test = train_test_split(index, test_size=split_cfg.test_size, stratify=y, random_state=split_cfg.seed)
    train, test = np.sort(train), np.sort(test)
    if eval_cfg.cv_folds == 1:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=eval_cfg.validation_size, random_state=split_cfg.seed)
    else:
        splitter = StratifiedKFold(n_splits=eval_cfg.cv_folds, shuffle=True, random_state=split_cfg.seed)
    folds = tuple((train[fit], train[val]) for fit, val in splitter.split(train, y[train]))
    return Split(train=train, test=test, folds=folds)
