"""What a job works on, prepared once per process: the split and folds, and the forest's inputs (a sweep's trials
share the sweeper's process: ~60 ms for the split of the real data, a large share of a trial pruned at its first
row look)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from src.config import Config
from src.data.schema import AMOUNT, FEATURES, Dataset
from src.data.split import Split, split
from src.model.inputs import derive, feature_names

_SPLITS: dict[str, Split] = {}
_INPUTS: dict[tuple[str, str], np.ndarray] = {}


def split_of(cfg: Config, data: Dataset) -> Split:
    key = json.dumps([data.sha256, dataclasses.asdict(cfg.split), cfg.evaluation.cv_folds,
                      cfg.evaluation.validation_size], sort_keys=True, default=str)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = split(data, cfg.split, cfg.evaluation)
    return _SPLITS[key]


def inputs_of(cfg: Config, data: Dataset) -> np.ndarray:
    """Every row's inputs to the forest (features.time applied), as float32 like the data."""
    key = (data.sha256, cfg.features.time)
    if key not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[key] = np.ascontiguousarray(derive(data.X, FEATURES, cfg.features.time))
    return _INPUTS[key]


def names_of(cfg: Config) -> list[str]:
    return feature_names(FEATURES, cfg.features.time)


def amounts(data: Dataset) -> np.ndarray:
    """What each transaction is worth to the cost model (its Amount, as money: float64)."""
    return data.X[:, AMOUNT].astype(np.float64)
