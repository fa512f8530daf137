"""Shared fixtures: compose-API configs, temporary MLflow/Optuna stores, and a CLI runner."""

from __future__ import annotations

import contextlib
import os
import sqlite3
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

    def study_names(self) -> list[str]:
        """Studies a running sweep has created, read without Optuna: opening the storage with Optuna while the
        sweep creates its schema makes both create the tables ("table ... already exists")."""
        db = self.root / "optuna.db"
        if not db.exists():
            return []
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
                return [name for (name,) in con.execute("SELECT study_name FROM studies ORDER BY study_id")]
        except sqlite3.OperationalError:  # no tables yet
            return []


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on a loopback port with a SQLite backend; can be stopped and restarted."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = root, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MlflowServer:
        import time
        import urllib.request

        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "-w", "1",
             "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
             "--artifacts-destination", str(self.root / "artifacts")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("mlflow server exited") from None
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """CI's server (TEST_MLFLOW_URI, started by .ci/run), or one started here."""
    if os.environ.get("TEST_MLFLOW_URI"):
        yield os.environ["TEST_MLFLOW_URI"]
        return
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server.uri
    server.stop()


@pytest.fixture
def shared_storage(tmp_path):
    """CI's PostgreSQL database (TEST_POSTGRES_URL, started by .ci/run), or a SQLite file here."""
    return os.environ.get("TEST_POSTGRES_URL") or f"sqlite:///{tmp_path / 'shared-optuna.db'}"
