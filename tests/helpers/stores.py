"""Temporary MLflow and Optuna stores for one test, and the small settings that keep a run to seconds."""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# Small synthetic data and tiny forests: seconds per run.
SMALL = [
    "dataset=synthetic",
    "dataset.n_rows=6000",
    "dataset.fraud_rate=0.02",
    "model.n_estimators=5",
    "model.n_jobs=1",
    "evaluation.cv_folds=3",
    "evaluation.bootstrap_samples=200",
    "evaluation.row_looks=[]",  # whole folds as the pruner's steps (0, 1, 2); the row looks' own tests set them
]
# ... and no registry, plots or pruner: a sweep's bare bookkeeping.
QUIET = [*SMALL, "registry.enabled=false", "mlflow.log_plots=false", "hydra.sweeper.pruner=none"]


@dataclass
class Stores:
    root: Path
    tracking_uri: str
    storage: str
    sweep_dir: Path

    @classmethod
    def at(cls, root: Path, sweep: str = "sweep") -> Stores:
        """Stores not created yet: the first command creates both (the tests of creation, and of nothing written)."""
        return cls(root, f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}", root / sweep)

    @classmethod
    def ready(cls, root: Path, sweep: str = "sweep") -> Stores:
        """Empty stores whose schemas exist already (copies of ones made once per test process): what every later
        command meets, without each test paying MLflow's ~1 s of schema migrations again."""
        stores = cls.at(root, sweep)
        root.mkdir(parents=True, exist_ok=True)
        for name in ("mlflow.db", "optuna.db"):
            shutil.copyfile(_templates() / name, root / name)
        return stores

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

    def runs(self, purpose: str | None = None, experiment: str = "creditcardfraud-sweep") -> list:
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        found = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
        return [r for r in found if purpose is None or r.data.tags.get("run_purpose") == purpose]

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


@cache
def _templates() -> Path:
    """An empty MLflow store and an empty Optuna storage, made by the libraries themselves, once per process."""
    import optuna
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    folder = Path(tempfile.mkdtemp(prefix="store-templates-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "mlruns")).engine.dispose()
    optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna.db'}").remove_session()
    return folder
