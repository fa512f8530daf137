"""Typed schema for the Hydra config, so that bad values fail before any work starts.

OmegaConf checks types when overrides are merged; the range checks live in ``__post_init__`` and run when
``validate`` turns the composed config into these dataclasses.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.optuna_mlflow_sweeper.job import JobContext
from src.errors import UserError

UNLIMITED_DEPTH = "none"  # Hydra cannot parse null inside choice(...): this string stands for "no limit".


class ConfigError(UserError, ValueError):
    pass


def _check(condition: bool, key: str, requirement: str, value: Any) -> None:
    if not condition:
        raise ConfigError(f"{key} must be {requirement}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


SEED = "an integer from 0 to 4294967295 (numpy and scikit-learn take no other seeds)"


def _is_seed(value: Any) -> bool:
    return _is_int(value) and 0 <= value < 2**32


@dataclass
class CreditCardDatasetConfig:
    name: str = "creditcard"
    path: str = "data/creditcard.csv"
    # The registered model's default name follows the dataset (registry.model_name: ${dataset.registry_name}).
    registry_name: str = "CreditCardFraud_RF"

    def __post_init__(self) -> None:
        _check(bool(self.path), "dataset.path", "a path to the Kaggle creditcard.csv", self.path)


@dataclass
class SyntheticDatasetConfig:
    name: str = "synthetic"
    n_rows: int = 284_807
    fraud_rate: float = 0.00172
    seed: int = 0
    registry_name: str = "CreditCardFraud_RF_synthetic"  # never the real data's model name

    def __post_init__(self) -> None:
        _check(self.n_rows >= 200, "dataset.n_rows", "at least 200", self.n_rows)
        _check(_is_seed(self.seed), "dataset.seed", SEED, self.seed)
        _check(0.0 < self.fraud_rate < 0.5, "dataset.fraud_rate", "in (0, 0.5)", self.fraud_rate)


@dataclass
class RandomForestConfig:
    n_estimators: int = 100
    # int >= 1, or null / "none" for unlimited depth (a string because choice(...) cannot hold null).
    max_depth: Any = None
    min_samples_split: int = 2
    min_samples_leaf: int = 1
    class_weight: Optional[str] = "balanced"
    n_jobs: int = -1
    random_state: int = 42

    def __post_init__(self) -> None:
        _check(self.n_estimators >= 1, "model.n_estimators", "an integer >= 1", self.n_estimators)
        depth = self.max_depth
        ok_depth = depth is None or depth == UNLIMITED_DEPTH or (_is_int(depth) and depth >= 1)
        _check(ok_depth, "model.max_depth", f"an integer >= 1 or {UNLIMITED_DEPTH} (unlimited)", depth)
        _check(self.min_samples_split >= 2, "model.min_samples_split", "an integer >= 2", self.min_samples_split)
        _check(self.min_samples_leaf >= 1, "model.min_samples_leaf", "an integer >= 1", self.min_samples_leaf)
        _check(
            self.class_weight in (None, "balanced", "balanced_subsample"),
            "model.class_weight",
            "balanced, balanced_subsample or null",
            self.class_weight,
        )
        _check(self.n_jobs != 0, "model.n_jobs", "a non-zero integer (-1 = all cores)", self.n_jobs)
        _check(_is_seed(self.random_state), "model.random_state", SEED, self.random_state)

    @property
    def depth(self) -> Optional[int]:
        """max_depth as scikit-learn wants it."""
        return None if self.max_depth in (None, UNLIMITED_DEPTH) else int(self.max_depth)


@dataclass
class SplitConfig:
    # random: a stratified random test split (seeded); time: the last test_size of the rows by Time, the
    # transactions a model meets after it was trained (cross-validation then runs on the earlier rows only).
    method: str = "random"
    test_size: float = 0.2
    seed: int = 42

    def __post_init__(self) -> None:
        _check(self.method in ("random", "time"), "split.method", "random or time", self.method)
        _check(0.0 < self.test_size < 1.0, "split.test_size", "a fraction in (0, 1)", self.test_size)
        _check(_is_seed(self.seed), "split.seed", SEED, self.seed)

    def describe(self) -> str:
        """The test rows' identity: a time holdout does not depend on the seed (it only shuffles the folds)."""
        if self.method == "time":
            return f"time,test_size={self.test_size:g}"
        return f"random,test_size={self.test_size:g},seed={self.seed}"


@dataclass
class EvaluationConfig:
    # Stratified folds on the training split; 1 selects a single stratified validation split of
    # validation_size instead (cheaper, noisier).
    cv_folds: int = 3
    validation_size: float = 0.25
    # Decision threshold on the fraud probability, used only for the confusion matrix.
    threshold: float = 0.5
    bootstrap_samples: int = 1000
    # In a sweep, the first fold's forest can also be scored after this many trees (pruner step 0; the finished
    # forest is the same). Off by default: on the real data the 50-tree look did not rank the trials (BENCHMARKS.md,
    # run 4), while fold 1 did; null = the pruner sees whole folds only.
    first_look_trees: Optional[int] = None
    # In a sweep, forests grown first on these fractions of fold 1's fitting rows (increasing, each in (0, 1)) and
    # scored on the whole validation fold: cheap looks for the pruner, as successive halving over rows. Pruner
    # steps then count rows in units of the first look (looks at 1/9 and 1/3: steps 1, 3; folds: 9, 18, 27), so
    # that SuccessiveHalvingPruner's rungs (min_resource 1, reduction factor 3) fall on the looks and on fold 1.
    row_looks: list[float] = field(default_factory=list)
    # A row look's forest with its leaf and split sizes scaled to the look's share of the rows (at least 1 and 2):
    # its trees then have the shape they will have on all rows. For spaces with large leaves (the looks ranked a
    # wide space only scaled); off by default: in the default space (leaves of 1-4 rows) every scaled look grows
    # the same trees, successive halving keeps the ties, and the study took 2.1x as long (BENCHMARKS.md).
    scale_looks: bool = False

    def __post_init__(self) -> None:
        looks = list(self.row_looks)
        _check(all(isinstance(f, (int, float)) and 0.0 < f < 1.0 for f in looks)
               and all(a < b for a, b in zip(looks, looks[1:], strict=False)), "evaluation.row_looks",
               "increasing fractions in (0, 1), e.g. [0.1111,0.3333], or [] for none", self.row_looks)
        _check(not (looks and self.first_look_trees is not None), "evaluation.row_looks",
               "[] when evaluation.first_look_trees is set (one kind of look at a time)", self.row_looks)
        _check(self.first_look_trees is None or (_is_int(self.first_look_trees) and self.first_look_trees >= 1),
               "evaluation.first_look_trees", "an integer >= 1, or null to prune on whole folds only",
               self.first_look_trees)
        _check(self.cv_folds >= 1, "evaluation.cv_folds", "an integer >= 1 (1 = one validation split)", self.cv_folds)
        _check(
            0.0 < self.validation_size < 1.0,
            "evaluation.validation_size",
            "a fraction in (0, 1)",
            self.validation_size,
        )
        _check(0.0 < self.threshold < 1.0, "evaluation.threshold", "in (0, 1)", self.threshold)
        _check(self.bootstrap_samples >= 100, "evaluation.bootstrap_samples", ">= 100", self.bootstrap_samples)


# Every value of the cost model is a non-negative amount of money; its sign is in its name (a gain adds, a cost
# subtracts), so that "a negative cost" is always a typing mistake, refused before any work.
COST_KEYS = ("caught_fraud_gain", "caught_fraud_gain_per_amount", "false_alarm_cost", "false_alarm_cost_per_amount",
             "missed_fraud_cost", "missed_fraud_cost_per_amount", "passed_legit_gain", "passed_legit_gain_per_amount")


@dataclass
class DecisionConfig:
    """The cost model (the ``decision`` group): what each outcome of a decision earns, per transaction, as a fixed sum
    plus a share of its Amount. The default is the business metric of scikit-learn's example "Post-tuning the decision
    threshold for cost-sensitive learning" on this data: a fraud stopped earns 50, a legitimate transaction stopped
    costs 5, a fraud let through costs its Amount, a legitimate one let through earns 2 % of its Amount."""

    name: str = "anchor"
    caught_fraud_gain: float = 50.0  # a fraud flagged
    caught_fraud_gain_per_amount: float = 0.0
    false_alarm_cost: float = 5.0  # a legitimate transaction flagged
    false_alarm_cost_per_amount: float = 0.0
    missed_fraud_cost: float = 0.0  # a fraud let through
    missed_fraud_cost_per_amount: float = 1.0
    passed_legit_gain: float = 0.0  # a legitimate transaction let through
    passed_legit_gain_per_amount: float = 0.02
    # The operating point: null = the threshold that maximises the net gain of the trial's out-of-fold predictions
    # (never the test split's); a number in [0, 1] pins it (flag when the fraud probability is at least this).
    threshold: Optional[float] = None

    def __post_init__(self) -> None:
        _check(bool(str(self.name).strip()), "decision.name", "a name for the cost model", self.name)
        for key in COST_KEYS:
            value = getattr(self, key)
            _check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                   and value >= 0, f"decision.{key}", "a number >= 0 (an amount of money: whether it is a gain or a "
                   "cost is in its name)", value)
        _check(self.threshold is None or 0.0 <= self.threshold <= 1.0, "decision.threshold",
               "a probability in [0, 1], or null to choose it from the out-of-fold predictions", self.threshold)

    def summary(self) -> str:
        """The cost model in one line, as it is recorded on a model version."""
        return ", ".join(f"{k}={getattr(self, k):g}" for k in COST_KEYS)


TIME_FEATURES = ("time_of_day", "raw", "drop")


@dataclass
class FeaturesConfig:
    # What the forest learns from the Time column (seconds since the file's first transaction, meaningless for next
    # week's): time_of_day = Time mod 86,400 (what a deployed model can compute), raw = as it is, drop = not at all.
    # Derived inside the logged model: the input schema stays Time, V1..V28, Amount.
    time: str = "time_of_day"

    def __post_init__(self) -> None:
        _check(self.time in TIME_FEATURES, "features.time", " or ".join(TIME_FEATURES), self.time)


@dataclass
class MlflowConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "creditcardfraud-sweep"
    # Plots cost ~0.3 s per run; sweeps of tiny models may turn them off.
    log_plots: bool = True
    # Tags on every run (the sweeper's runs too: hydra.sweeper.run_tags).
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(bool(self.tracking_uri), "mlflow.tracking_uri", "a tracking URI", self.tracking_uri)
        _check(bool(self.experiment_name.strip()), "mlflow.experiment_name", "a name with a visible character",
               self.experiment_name)


CRITERIA = ("pr_auc", "net_gain")


@dataclass
class RegistryConfig:
    enabled: bool = True
    model_name: str = "CreditCardFraud_RF"
    # The challenger replaces the champion only if its criterion is higher by more than `margin` with this one-sided
    # paired-bootstrap confidence. 0.99, not 0.95: with ~95 test frauds the percentile bootstrap is anti-conservative;
    # measured over 200 independent test samples (BENCHMARKS.md, gate), a challenger no better than the champion was
    # promoted 9.5 % of the time at 0.95 and 2.5 % [1.4 %, 4.5 %] at 0.99 (criterion pr_auc).
    margin: float = 0.0
    confidence: float = 0.99
    # Each test of a model on the held-out split is a look at it; past this many looks per lineage (same data, split,
    # features, protocol) the gate stops promoting automatically: choosing among many candidates on the same test
    # rows makes the winner's test score optimistic. Draw a fresh split (split.seed=...) for a new lineage.
    max_test_uses: int = 3
    # What the gate compares, each model at its own threshold on the same test rows: pr_auc (average precision) or
    # net_gain (money, under the cost model). BENCHMARKS.md: false-promotion rate and power of each.
    criterion: str = "pr_auc"

    def __post_init__(self) -> None:
        _check(self.criterion in CRITERIA, "registry.criterion", " or ".join(CRITERIA), self.criterion)
        _check(_is_int(self.max_test_uses) and self.max_test_uses >= 1, "registry.max_test_uses", "an integer >= 1",
               self.max_test_uses)
        _check(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\- ]{0,255}", self.model_name or "")),
               "registry.model_name", "letters, digits, '_', '-', '.' or spaces, starting with a letter or digit",
               self.model_name)
        _check(isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 0
               and (self.criterion != "pr_auc" or self.margin < 1.0), "registry.margin",
               "in [0, 1) for registry.criterion=pr_auc (an AP difference), >= 0 for net_gain (money)", self.margin)
        _check(0.5 <= self.confidence < 1.0, "registry.confidence", "in [0.5, 1)", self.confidence)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    split: SplitConfig = field(default_factory=SplitConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    # Set by the sweeper for each job it launches (the study, the trial, its run, the stage); empty in a single run.
    sweep: JobContext = field(default_factory=JobContext)


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; the YAML files in conf/ extend them."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)
    cs.store(group="schema/dataset", name="creditcard", node=CreditCardDatasetConfig)
    cs.store(group="schema/dataset", name="synthetic", node=SyntheticDatasetConfig)
    cs.store(group="schema/model", name="random_forest", node=RandomForestConfig)


def validate(cfg: DictConfig) -> Config:
    """Instantiate the schema (running every range check) and return the typed config."""
    task_cfg = cfg
    if "hydra" in cfg:  # the sweeper's view of the config carries Hydra's own node
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
    try:
        typed = OmegaConf.to_object(task_cfg)
    except ConfigError:
        raise
    except ValueError as exc:  # omegaconf's own conversion errors
        raise ConfigError(" ".join(str(exc).split())) from None
    if not isinstance(typed, Config):
        raise ConfigError("the config does not follow the schema: start it from base_config")
    if not isinstance(typed.dataset, (CreditCardDatasetConfig, SyntheticDatasetConfig)):
        raise ConfigError("dataset must be chosen from the dataset group: dataset=creditcard or dataset=synthetic")
    if not isinstance(typed.model, RandomForestConfig):
        raise ConfigError("model must be chosen from the model group: model=random_forest")
    return typed


def config_from_logged(path: Any, **overrides: str) -> Config:
    """The typed config a run logged (``config/config.yaml``), with the schemas its groups were composed from;
    ``tracking_uri`` and ``model_name`` replace the logged ones (the store as the caller reaches it)."""
    tree = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(tree, dict)
    dataset = tree.get("dataset") or {}
    schema = SyntheticDatasetConfig if dataset.get("name") == "synthetic" else CreditCardDatasetConfig
    merged = OmegaConf.merge(OmegaConf.structured(Config), {"dataset": OmegaConf.structured(schema),
                                                            "model": OmegaConf.structured(RandomForestConfig)}, tree)
    if "tracking_uri" in overrides:
        merged.mlflow.tracking_uri = overrides["tracking_uri"]
    if "model_name" in overrides:
        merged.registry.model_name = overrides["model_name"]
    return validate(merged)
