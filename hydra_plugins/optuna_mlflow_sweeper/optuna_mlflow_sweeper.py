"""The public sweeper class: thin, so that Hydra's plugin scan does not import optuna or mlflow."""

from typing import Any, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import OptunaMlflowSweeperConf  # noqa: F401  (registers the config)


class OptunaMlflowSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from ._impl import OptunaMlflowSweeperImpl

        self.sweeper = OptunaMlflowSweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Optional[Any]:
        return self.sweeper.sweep(arguments)
