"""The search space, built from the settings and the command line, and checked before any trial runs.

Every extreme of every distribution is put into the composed config and the task's structured schema instantiated
(its ``__post_init__`` checks run), so that a value the task would reject fails the sweep in one line before any
store is written, instead of failing trial after trial.
"""

from __future__ import annotations

import importlib
from typing import Any, Optional

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.distributions import BaseDistribution, CategoricalDistribution

from . import _search_space
from ._errors import SweeperError, one_line

_ABSENT = object()


def build(params: dict[str, str], arguments: list[str], reserved: str) -> _search_space.SearchSpace:
    try:
        space = _search_space.build(params, arguments)
    except _search_space.SearchSpaceError as exc:
        raise SweeperError(f"search space: {exc}") from None
    own = [k for k in [*space.distributions, *space.pinned] if k == reserved or k.startswith(f"{reserved}.")]
    if own:
        raise SweeperError(f"{own[0]} is set by the sweeper for each job, not on the command line")
    if not space.distributions:
        raise SweeperError("the search space is empty: set hydra.sweeper.params or give sweep expressions such as "
                           "model.max_depth=range(4,31)")
    return space


def task_part(cfg: DictConfig) -> DictConfig:
    """The job's own config, without Hydra's node (which only resolves inside a running job)."""
    task = cfg.copy()
    with read_write(task), open_dict(task):
        task.pop("hydra", None)
    return task


def _check_schema(task: DictConfig, what: str) -> None:
    """Instantiate the task config's structured schema (``task``: no Hydra node): its range checks run here."""
    try:
        OmegaConf.to_object(task)
    except Exception as exc:
        raise SweeperError(f"{what}: {' '.join(str(exc).split())}") from None


def _extremes(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]  # type: ignore[attr-defined]


def pinned_config(config_loader: Any, config: DictConfig, space: _search_space.SearchSpace) -> DictConfig:
    """Compose the config with the pinned values, and check it and the search space's extremes against the schema."""
    try:
        base = config_loader.load_sweep_config(config, list(space.pinned_overrides))
    except HydraException as exc:
        cause = f" - {exc.__cause__}" if exc.__cause__ else ""
        raise SweeperError(" ".join(f"{exc}{cause}".split())) from None
    task = task_part(base)  # copied once: each probe copies the task's part only, not Hydra's node (most of it)
    _check_schema(task, "the pinned values")
    for key, dist in space.distributions.items():
        if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
            raise SweeperError(f"search space: {key} is not a key of the config (check the spelling)")
        if OmegaConf.is_config(OmegaConf.select(base, key)):
            raise SweeperError(f"search space: {key} is a config group or section, not a single value")
        for value in _extremes(dist):
            within_task = key.split(".", 1)[0] in task
            probe = (task if within_task else base).copy()
            try:
                with read_write(probe):
                    OmegaConf.update(probe, key, value, merge=False)
            except Exception as exc:
                raise SweeperError(f"search space: {key}={value!r} does not fit the config: {one_line(exc)}") from None
            _check_schema(probe if within_task else task_part(probe), f"search space value {key}={value!r}")
    return base


def preflight(dotpath: Optional[str], base: DictConfig, space: _search_space.SearchSpace) -> dict[str, Any]:
    """The app's own checks (settings.preflight) on the pinned config and on every extreme of the space; returns
    what the pinned config's check adds to the study's identity."""
    if not dotpath:
        return {}
    module, _, name = dotpath.replace(":", ".").rpartition(".")
    try:
        check = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise SweeperError(f"hydra.sweeper.preflight={dotpath}: cannot import it ({one_line(exc)})") from None
    task = task_part(base)
    extras = _run(check, task.copy(), "the pinned values")
    for key, dist in space.distributions.items():
        for value in _extremes(dist):
            probe = task.copy()
            with read_write(probe):
                OmegaConf.update(probe, key, value, merge=False)
            _run(check, probe, f"search space value {key}={value!r}")
    return dict(extras or {})


def check_final(dotpath: Optional[str], config_loader: Any, config: DictConfig, space: _search_space.SearchSpace,
                overrides: list[str], extras: dict[str, Any]) -> None:
    """The final stage runs the trials' configuration: the app's preflight must return for it (the pinned values
    and ``final.overrides``) what it returned for the trials, or the sweep is refused before its first trial."""
    if not dotpath or not overrides:
        return
    shown = f"hydra.sweeper.final.overrides=[{','.join(overrides)}]"
    try:
        final = config_loader.load_sweep_config(config, [*space.pinned_overrides, *overrides])
    except HydraException as exc:
        raise SweeperError(f"{shown}: {' '.join(str(exc).split())}") from None
    module, _, name = dotpath.replace(":", ".").rpartition(".")
    got = dict(_run(getattr(importlib.import_module(module), name), task_part(final), shown) or {})
    differs = sorted(k for k in {*got, *extras} if got.get(k) != extras.get(k))
    if differs:
        raise SweeperError(f"{shown} would change what the trials were scored on ({', '.join(differs)}): the final "
                           f"stage runs the trials' configuration; drop those overrides")


def _run(check: Any, cfg: DictConfig, what: str) -> Any:
    try:
        return check(cfg)
    except Exception as exc:
        raise SweeperError(f"{what}: {one_line(exc)}") from None
