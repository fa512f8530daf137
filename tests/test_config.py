"""Bad config values fail before any work, in one line (the command-line side: test_bad_inputs.py)."""

import pytest

from src.config import ConfigError, validate


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.max_depth=-3", "model.max_depth must be an integer >= 1 or none"),
        ("model.max_depth=1.5", "model.max_depth must be an integer >= 1 or none"),
        ("model.min_samples_split=1", "model.min_samples_split must be an integer >= 2"),
        ("model.min_samples_leaf=0", "model.min_samples_leaf must be an integer >= 1"),
        ("model.n_estimators=0", "model.n_estimators must be an integer >= 1"),
        ("model.class_weight=heavy", "model.class_weight must be balanced"),
        ("split.test_size=1.5", "split.test_size must be a fraction in (0, 1)"),
        ("evaluation.cv_folds=0", "evaluation.cv_folds must be an integer >= 1"),
        ("registry.model_name='bad/name'", "registry.model_name must be letters"),
    ],
)
def test_range_checks(compose_cfg, override, message):
    with pytest.raises(ConfigError, match=None) as info:
        validate(compose_cfg([override]))
    assert message in str(info.value)


@pytest.mark.parametrize("depth, expected", [("12", 12), ("none", None), ("null", None)])
def test_unlimited_depth_spellings(compose_cfg, depth, expected):
    assert validate(compose_cfg([f"model.max_depth={depth}"])).model.depth == expected


def test_defaults_compose_and_validate(compose_cfg):
    cfg = validate(compose_cfg())
    assert cfg.dataset.path == "data/creditcard.csv"
    assert cfg.mlflow.experiment_name == "creditcardfraud-sweep"
    assert cfg.registry.model_name == "CreditCardFraud_RF"
    assert cfg.split.test_size == 0.2
