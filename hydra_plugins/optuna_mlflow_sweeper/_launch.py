"""Launching jobs: Hydra's launcher, with one shortcut for its basic launcher.

The basic launcher runs jobs in this process, and composes each job's whole config again from the defaults list
(~0.2 s a job, most of a small trial's bookkeeping). A trial's config differs from the study's first trial's only by
plain values (its parameters and its context: the search space holds no config group, _space_check makes sure), so
with ``compose_once`` the first config of each set of override keys is composed by Hydra, and the next ones are
copies of it with the new values set as Hydra sets an override (same parser, same update, same task-override list
and override_dirname), run by Hydra's own ``run_job``. Any other launcher (joblib, submitit, ...) is used as is.
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

    def _job_config(self, overrides: list[str]) -> DictConfig:
        parsed = self._parse(overrides)
        keys = tuple(o.get_key_element() for o in parsed)
        known = self._templates.get(keys)
        changed = [new for new, old in zip(parsed, known[1], strict=True) if new.input_line != old.input_line] \
            if known is not None else None
        if changed is None or not all(self._plain(known[0], o) for o in changed):
            config = self._context.config_loader.load_sweep_config(self._config, overrides)
            self._templates.setdefault(keys, (config.copy(), parsed))
            return config
        # The template itself, not a copy: run_job deep-copies what the task gets, and every plain value is set
        # again here (an earlier trial's values are overwritten; group choices are the template's, unchanged).
        config = known[0]
        OmegaConf.set_readonly(config.hydra, None)  # (run_job's HydraConfig.set_config made it read-only)
        with read_write(config), open_dict(config.hydra):
            for override in parsed:
                if self._plain(config, override):
                    OmegaConf.update(config, override.key_or_group, override.value(), merge=True)
            config.hydra.overrides.task = [o.input_line for o in parsed]
            config.hydra.job.override_dirname = override_dirname(parsed, config.hydra.job.config.override_dirname)
        OmegaConf.copy_cache(from_config=self._config, to_config=config)
        return config

    @staticmethod
    def _plain(template: DictConfig, override: Any) -> bool:
        """A value the copy can take as Hydra would set it: a plain change of an existing leaf of the task config."""
        if override.is_hydra_override() or override.type != OverrideType.CHANGE or override.package:
            return False
        current = OmegaConf.select(template, override.key_or_group, default=None, throw_on_missing=False)
        return not OmegaConf.is_config(current) and not override.is_sweep_override()
