"""Fixtures: compose-API configs, temporary MLflow/Optuna stores, real servers. Helpers live in tests/helpers/."""

from __future__ import annotations

import os

import pytest
from hydra import compose, initialize_config_dir

from tests.helpers.cli import ROOT
from tests.helpers.servers import MlflowServer
from tests.helpers.stores import Stores

CONF = ROOT / "conf"
# Modules one pytest-xdist worker runs whole: their module fixture (the registry's two sweeps) is built once. (xdist
# 3.8's xdist_group marks do nothing under pytest 9: it renames a node id attribute pytest no longer reads.)
WHOLE_MODULES = {"tests/test_registry.py", "tests/test_evaluation.py"}


def pytest_xdist_make_scheduler(config, log):
    """Tests shared out one by one, but for WHOLE_MODULES (pytest-xdist's own hook and scheduler)."""
    from xdist.scheduler import LoadScopeScheduling

    class OneByOne(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in WHOLE_MODULES else nodeid

    return OneByOne(config, log)


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
    """Empty stores whose schemas exist (what every command after the first meets)."""
    return Stores.ready(tmp_path)


@pytest.fixture
def new_stores(tmp_path) -> Stores:
    """Stores not created yet: for the tests of what the first command creates, or must not create."""
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
