"""``python -m src.train`` trains and scores one model; ``python -m src.train --multirun`` runs an Optuna study.

Every job is one MLflow run. Under the sweeper a job is a trial (src.jobs.trial: cross-validation on the training
split) or the final stage (src.jobs.final: refit, test once, register through the gate).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from hydra_plugins.optuna_mlflow_sweeper.job import FINAL, Terminated, sigterm_as_interrupt
from src.config import register_configs, validate
from src.console import quiet_libraries, redacted_output
from src.errors import UserError, disk_full, one_line
from src.jobs import final, trial

register_configs()  # Hydra composes the config before main() runs: the schema must be known first.


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    """Hydra's task function: returns the objective and its companions, which the sweeper keeps."""
    try:
        if HydraConfig.get().mode == RunMode.RUN:
            _refuse_job_context(HydraConfig.get().overrides.task)
        typed = validate(cfg)
        return (final.run if typed.sweep.stage == FINAL else trial.run)(typed, cfg)
    except Exception as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial
        expected = one_line(exc) if isinstance(exc, UserError) else disk_full(exc)
        if expected is None:
            raise  # a bug: Hydra prints it (through the redacting stream)
        print(f"error: {expected}", file=sys.stderr)
        sys.exit(2)


def _refuse_job_context(overrides: Any) -> None:
    """The job context (``sweep.*``: which study, trial and stage) is the sweeper's to set: a person setting it
    could, among other things, run the final stage and test on the held-out split outside any sweep."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if override.key_or_group == "sweep" or override.key_or_group.startswith("sweep."):
            raise UserError(f"{override.key_or_group} is set by the sweeper for each job, not on the command line")


def cli(entry: Callable[[], Any] | None = None) -> None:
    """Expected errors (bad config, bad data, unreachable stores, a full disk) end in one line and exit code 2;
    Ctrl-C and SIGTERM in one line saying how to resume; nothing printed shows a secret."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach this handler instead of Hydra's printer
    quiet_libraries()
    with redacted_output(), sigterm_as_interrupt():
        try:
            (entry or main)()
        except (UserError, HydraException, OmegaConfBaseException) as exc:
            print(f"error: {one_line(exc)}", file=sys.stderr)
            sys.exit(2)
        except Terminated:
            print("terminated (SIGTERM): rerun the same command to resume", file=sys.stderr)
            sys.exit(143)
        except KeyboardInterrupt:
            print("interrupted: rerun the same command to resume", file=sys.stderr)
            sys.exit(130)
        except Exception as exc:
            full = disk_full(exc)
            if full is None:
                raise  # a bug: its traceback is worth reading (redacted like everything printed)
            print(f"error: {full}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    cli()
