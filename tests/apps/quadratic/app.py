"""A test app that is not about fraud: minimise a quadratic, swept through the plugin (tests/test_plugin_app.py).

Each trial is a nested MLflow run that reports its value after each step (so the pruner can stop it), fails on
purpose when x is above ``fail_above``, and returns the loss with two companions. The final stage (stage
``final``) refits the best point once and returns its loss.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import hydra
import mlflow
import optuna
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.optuna_mlflow_sweeper.job import FINAL, JobContext, TrialLink


@dataclass
class AppConfig:
    x: float = 0.0
    y: float = 0.0
    steps: int = 4
    fail_above: Optional[float] = None
    tracking_uri: str = "sqlite:///mlflow.db"
    trial: JobContext = field(default_factory=JobContext)


ConfigStore.instance().store(name="quadratic_schema", node=AppConfig)


def loss(x: float, y: float, step: int) -> float:
    """Better with every step, and best at (1, -2)."""
    return (x - 1.0) ** 2 + (y + 2.0) ** 2 + 1.0 / (step + 1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> Any:
    app = OmegaConf.to_object(cfg)
    assert isinstance(app, AppConfig)
    if app.fail_above is not None and app.x > app.fail_above:
        raise RuntimeError(f"x={app.x:.3f} is above {app.fail_above}")
    mlflow.set_tracking_uri(app.tracking_uri)
    link = TrialLink(app.trial) if app.trial.in_sweep and app.trial.stage != FINAL else None
    with mlflow.start_run(run_id=app.trial.run_id) if app.trial.run_id else mlflow.start_run():
        value = float("nan")
        for step in range(app.steps):
            value = loss(app.x, app.y, step)
            mlflow.log_metric("loss_so_far", value, step=step)
            if link is not None:
                try:
                    link.report(step, value, f"step {step + 1}")
                except optuna.TrialPruned:
                    mlflow.end_run("KILLED")
                    raise
        mlflow.log_metric("loss", value)
    if app.trial.stage == FINAL:
        fraud_app = any(m == "src" or m.startswith("src.") for m in sys.modules)
        return {"refit_loss": value, "fraud_app_imported": fraud_app}
    return {"loss": value, "loss_spread": 0.01, "steps_run": app.steps}


if __name__ == "__main__":
    main()
