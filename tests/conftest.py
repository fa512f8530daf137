"""Fixtures: compose-API configs, temporary MLflow/Optuna stores, real servers. Helpers live in tests/helpers/."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.cli import ROOT
from tests.helpers.servers import MlflowServer
from tests.helpers.stores import Stores

CONF = ROOT / "conf"


@pytest.fixture
def compose_cfg():
    """The project's config as Hydra composes it, with overrides."""
    from src.config import register_configs

    register_configs()

    def _compose(overrides=(), hydra_config=False):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=hydra_config)

    return _compose


@pytest.fixture
def stores(tmp_path) -> Stores:
    return Stores.at(tmp_path)


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
