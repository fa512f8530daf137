"""Samplers and pruners by short name, shared by the sweeper and the trials it launches."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import optuna

SAMPLERS = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "qmc": optuna.samplers.QMCSampler,
}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
# Step 0 is fold 1 (or, with evaluation.first_look_trees, a look at a small forest on fold 1): decisions start
# there. Three finished trials give the first median to compare with.
# Successive halving: rungs at steps 1, 3, 9, 27 (a task whose steps count its budget, e.g. rows, in units of its
# first look puts its looks there), keeping the top third at each.
PRUNER_DEFAULTS: dict[str, dict[str, Any]] = {
    "median": {"n_startup_trials": 3, "n_warmup_steps": 0},
    "percentile": {"percentile": 25.0, "n_startup_trials": 3, "n_warmup_steps": 0},
    "successive_halving": {"min_resource": 1, "reduction_factor": 3},
}


class FactoryError(ValueError):
    pass


def make_sampler(name: str, options: Mapping[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:
        raise FactoryError(f"hydra.sweeper.sampler={name}: unknown sampler; choose one of {', '.join(SAMPLERS)}")
    if name == "gp" and importlib.util.find_spec("torch") is None:
        raise FactoryError("hydra.sweeper.sampler=gp needs PyTorch: pip install -e '.[gp]' (or choose tpe)")
    if name == "cmaes" and importlib.util.find_spec("cmaes") is None:
        raise FactoryError("hydra.sweeper.sampler=cmaes needs the cmaes package: pip install cmaes")
    kwargs = dict(options)
    if name == "tpe":
        kwargs.setdefault("multivariate", True)
        kwargs.setdefault("constant_liar", True)  # parallel workers do not all propose the same point
    if name == "qmc":
        kwargs.setdefault("warn_independent_sampling", False)
    try:
        return SAMPLERS[name](seed=seed, **kwargs)
    except (TypeError, ValueError, ImportError) as exc:
        raise FactoryError(f"hydra.sweeper.sampler={name}: {' '.join(str(exc).split())}") from None


def make_pruner(name: str, options: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise FactoryError(f"hydra.sweeper.pruner={name}: unknown pruner; choose one of {', '.join(PRUNERS)}")
    kwargs = {**PRUNER_DEFAULTS.get(name, {}), **dict(options)}
    try:
        return PRUNERS[name](**kwargs)
    except (TypeError, ValueError) as exc:
        given = f" (hydra.sweeper.pruner_options={_shown(dict(options))})" if options else ""
        raise FactoryError(f"hydra.sweeper.pruner={name}: {' '.join(str(exc).split())}{given}") from None


def _shown(options: dict[str, Any]) -> str:
    """Options as they are typed on the command line: {key:value,...}. Pure."""
    return "{" + ",".join(f"{k}:{v}" for k, v in options.items()) + "}"


def dry_run(sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
            distributions: Mapping[str, Any], sampler_name: str, pruner_name: str) -> None:
    """Ask, report, prune and tell a few times in an in-memory study: options of the wrong type (a text where a
    number belongs) fail here, in one line, instead of in the first trial of the real study."""
    import warnings

    study = optuna.create_study(sampler=sampler, pruner=pruner)
    for value in (0.1, 0.2, 0.3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                trial = study.ask(dict(distributions))
            except Exception as exc:
                raise FactoryError(f"hydra.sweeper.sampler_options for {sampler_name}: {_one_line(exc)}") from None
            try:
                trial.report(value, 0)
                trial.should_prune()
            except Exception as exc:
                raise FactoryError(f"hydra.sweeper.pruner_options for {pruner_name}: {_one_line(exc)}") from None
            study.tell(trial, value)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
