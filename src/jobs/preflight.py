"""What a sweep checks before its first trial (``hydra.sweeper.preflight``): what a single run would check, for the
pinned values and every extreme of the search space. A bad data file or a value the model rejects then fails the
sweep in one line, instead of failing every trial until the failure budget is spent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from omegaconf import DictConfig

from src.config import Config, validate
from src.data.loading import load
from src.data.split import split
from src.model.forest import build_model

_CHECKED: dict[str, str] = {}  # a config's data, split and model, checked once per process -> the data's sha256


def _check(typed: Config) -> str:
    data = load(typed.dataset)
    parts = split(data, typed.split, typed.evaluation)
    # scikit-learn checks a forest's settings when it fits: one tree on a few rows of each class does it.
    train = parts.train
    rows = [*train[data.y[train] == 1][:5], *train[data.y[train] == 0][:15]]
    build_model(typed.model).set_params(n_estimators=1, n_jobs=1).fit(data.X[rows], data.y[rows])
    return data.sha256


def test_protocol(cfg: Config) -> str:
    """What a test score depends on beside the data: the test rows (the split), the features and the cost model. The
    sweeper refuses a final stage whose config would change it (hydra.sweeper.final.overrides), and the final job
    checks its trial's whole result key again itself."""
    return digest({"split": dataclasses.asdict(cfg.split), "features": dataclasses.asdict(cfg.features),
                   "decision": dataclasses.asdict(cfg.decision)})


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check(cfg: DictConfig) -> dict[str, str]:
    """Raises on what a trial with this config would fail on; returns the data's identity (its sha256) and the test
    protocol, which become part of the study's: fixing a file gives a fresh study, other data never continues one,
    and the final stage may not change either."""
    typed = validate(cfg)
    key = repr((typed.dataset, typed.split, typed.evaluation, typed.model))
    if key not in _CHECKED:
        _CHECKED[key] = _check(typed)
    return {"data_sha256": _CHECKED[key], "test_protocol": test_protocol(typed)}
