"""The estimator, built from the model config."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from src.config import RandomForestConfig


def build_model(cfg: RandomForestConfig) -> RandomForestClassifier:
    return RandomForestClassifier(
        n_estimators=cfg.n_estimators,
        max_depth=cfg.depth,
        min_samples_split=cfg.min_samples_split,
        min_samples_leaf=cfg.min_samples_leaf,
        class_weight=cfg.class_weight,
        n_jobs=cfg.n_jobs,
        random_state=cfg.random_state,
    )


def hyperparameters(cfg: RandomForestConfig) -> dict[str, object]:
    """The tuned values as they are logged: bare names, unlimited depth as the string "none"."""
    return {
        "n_estimators": cfg.n_estimators,
        "max_depth": "none" if cfg.depth is None else cfg.depth,
        "min_samples_split": cfg.min_samples_split,
        "min_samples_leaf": cfg.min_samples_leaf,
        "class_weight": "none" if cfg.class_weight is None else cfg.class_weight,
    }


def forest_key(cfg: RandomForestConfig) -> dict[str, object]:
    """What decides the trees: two configs with the same key grow the same forest on the same data. scikit-learn
    raises min_samples_split to 2 * min_samples_leaf (a smaller node cannot be split into two big-enough leaves),
    and n_jobs changes only the speed."""
    return {
        "n_estimators": cfg.n_estimators,
        "max_depth": cfg.depth,
        "min_samples_split": max(cfg.min_samples_split, 2 * cfg.min_samples_leaf),
        "min_samples_leaf": cfg.min_samples_leaf,
        "class_weight": cfg.class_weight,
        "random_state": cfg.random_state,
    }
