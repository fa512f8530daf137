"""Launching jobs: Hydra's launcher, with one shortcut for its basic launcher.

The basic launcher runs jobs in this process, and composes each job's whole config again from the defaults list
(~0.2 s a job, most of a small trial's bookkeeping). A trial's config differs from the study's first trial's only by
plain values (its parameters and its context: the search space holds no config group, _space_check makes sure), so
with ``compose_once`` the first config of each set of override keys is composed by Hydra, and the next ones are
copies of it with the new values set as Hydra sets an override (same parser, same update, same override lists and
override_dirname), run by Hydra's own ``run_job``. Any other launcher (joblib, submitit, ...) is used as is.

A config composed for a prefix of a job's overrides serves as well, when the rest are plain: the sweep's pinned
config (``seed``) for the first trial, a trial's for the final stage (which adds its folder, ``hydra.sweep.subdir``:
a value only ``run_job`` reads). Invariant: every job's config, both override lists and override_dirname are the
ones Hydra's own composition of its overrides gives (tests/test_sweeper.py compares them file by file).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write


def override_dirname(overrides: Sequence[Any], rule: Any) -> str:
    """``hydra.job.override_dirname`` as Hydra computes it (hydra.job.config.override_dirname: its rule). Pure."""
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in rule.exclude_keys)
    return rule.item_sep.join(lines).replace("=", rule.kv_sep)


def is_leaf(config: DictConfig, key: str) -> bool:
    """``key`` names an existing leaf of ``config``, found without resolving it (a job's folder interpolates
    ``hydra.job.num``, which a template does not have yet). A group's key (``hydra/launcher``) is none. Pure."""
    parent_key, _, last = key.rpartition(".")
    parent = OmegaConf.select(config, parent_key, default=None) if parent_key else config
    if not isinstance(parent, DictConfig) or last not in parent.keys():
        return False
    if OmegaConf.is_missing(parent, last) or OmegaConf.is_interpolation(parent, last):
        return True
    return not OmegaConf.is_config(parent[last])


BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"  # Hydra's default launcher, by its name


class Jobs:
    def __init__(self, launcher: Any, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig,
                 compose_once: bool) -> None:
        self._launcher, self._context, self._task, self._config = launcher, hydra_context, task_function, config
        self._fast = compose_once and OmegaConf.select(config, "hydra.launcher._target_") == BASIC
        self._parser = OverridesParser.create()
        self._templates: dict[tuple[str, ...], tuple[DictConfig, list[Any]]] = {}
        self._parsed: dict[str, Any] = {}  # override line -> Hydra's parse of it (most lines repeat every trial)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if not self._fast:
            return self._launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        setup_globals()
        Path(str(self._config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        returns = []
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            config = self._job_config(list(overrides))
            with open_dict(config):
                config.hydra.job.id = number
                config.hydra.job.num = number
            returns.append(run_job(hydra_context=self._context, task_function=self._task, config=config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        return returns

    def _parse(self, lines: list[str]) -> list[Any]:
        new = [line for line in dict.fromkeys(lines) if line not in self._parsed]
        if len(self._parsed) + len(new) > 4096:  # each trial adds a few lines of its own (number, run id, values)
            self._parsed.clear()
            new = list(dict.fromkeys(lines))
        if new:
            self._parsed.update(zip(new, self._parser.parse_overrides(new), strict=True))
        return [self._parsed[line] for line in lines]

    def seed(self, config: DictConfig, overrides: Sequence[str]) -> None:
        """``config`` is Hydra's composition of ``overrides`` (load_sweep_config): jobs that add plain values to them
        start from a copy of it instead of composing again."""
        if self._fast:
            parsed = self._parse(list(overrides))
            self._templates.setdefault(tuple(o.get_key_element() for o in parsed), (config.copy(), parsed))

    def _job_config(self, overrides: list[str]) -> DictConfig:
        parsed = self._parse(overrides)
        keys = tuple(o.get_key_element() for o in parsed)
        known = self._templates.get(keys)
        if known is not None and self._reusable(known, parsed):
            # The template itself, not a copy: run_job deep-copies what the task gets, and every plain value is set
            # again here (an earlier trial's values are overwritten; group choices are the template's, unchanged).
            return self._with_values(known[0], parsed)
        prefix = next((t for k, t in sorted(self._templates.items(), key=lambda kt: -len(kt[0]))
                       if len(k) < len(keys) and keys[:len(k)] == k and self._reusable(t, parsed)), None)
        if prefix is not None:  # a copy: the prefix's template still serves the jobs of its own key set
            config = self._with_values(prefix[0].copy(), parsed)
        else:
            config = self._context.config_loader.load_sweep_config(self._config, overrides)
        self._templates.setdefault(keys, (config, parsed))  # (jobs run one at a time: the next sets its values)
        return config

    def _reusable(self, template: tuple[DictConfig, list[Any]], parsed: list[Any]) -> bool:
        """The template's overrides are the first of ``parsed`` (same lines, or plain values), the rest are plain."""
        config, lines = template
        shared = zip(parsed[:len(lines)], lines, strict=True)  # (the caller's keys begin with the template's)
        return all(self._plain(config, new) for new, old in shared if new.input_line != old.input_line) \
            and all(self._plain(config, new) for new in parsed[len(lines):])

    def _with_values(self, config: DictConfig, parsed: list[Any]) -> DictConfig:
        """Every plain value set as Hydra sets an override, and the override lists and dirname Hydra writes."""
        OmegaConf.set_readonly(config.hydra, None)  # (run_job's HydraConfig.set_config made it read-only)
        task = [o for o in parsed if not o.is_hydra_override()]
        with read_write(config), open_dict(config.hydra):
            for override in parsed:
                if self._plain(config, override):
                    OmegaConf.update(config, override.key_or_group, override.value(), merge=True)
            config.hydra.overrides.task = [o.input_line for o in task]
            config.hydra.overrides.hydra = [*self._config.hydra.overrides.hydra,
                                            *(o.input_line for o in parsed if o.is_hydra_override())]
            config.hydra.job.override_dirname = override_dirname(task, config.hydra.job.config.override_dirname)
        OmegaConf.copy_cache(from_config=self._config, to_config=config)
        return config

    @staticmethod
    def _plain(template: DictConfig, override: Any) -> bool:
        """A value the copy can take as Hydra would set it: a plain change of an existing leaf of the task config,
        or of Hydra's ``hydra.sweep`` (the job's folder, read by run_job only, after composition)."""
        key = override.key_or_group
        if override.type != OverrideType.CHANGE or override.package or override.is_sweep_override():
            return False
        if override.is_hydra_override() and not key.startswith("hydra.sweep."):
            return False
        return is_leaf(template, key)
