"""Shared fixtures: compose-API configs, temporary MLflow/Optuna stores, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"

# Small synthetic data and tiny forests: seconds per run.
SMALL = [
    "dataset=synthetic",
    "dataset.n_rows=6000",
    "dataset.fraud_rate=0.02",
    "model.n_estimators=5",
    "model.n_jobs=1",
    "evaluation.cv_folds=3",
    "evaluation.bootstrap_samples=200",
]


@pytest.fixture
def compose_cfg():
    """The project's config as Hydra composes it, with overrides."""
    from src.config import register_configs

    register_configs()

    def _compose(overrides=(), hydra_config=False):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)

    return _compose


@dataclass
class Stores:
    root: Path
    tracking_uri: str
    storage: str
    sweep_dir: Path

    def overrides(self) -> list[str]:
        return [
            f"mlflow.tracking_uri={self.tracking_uri}",
            f"hydra.sweeper.storage={self.storage}",
            f"hydra.sweep.dir={self.sweep_dir}",
            f"hydra.run.dir={self.root / 'run'}",
        ]

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.tracking_uri)


@pytest.fixture
def stores(tmp_path) -> Stores:
    return Stores(
        root=tmp_path,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        sweep_dir=tmp_path / "sweep",
    )


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_module(module: str, *args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None) -> Result:
    """Run ``python -m module args`` as a user would, in a fresh process."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=full_env,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
