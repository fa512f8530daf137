"""Where runs go: tracking URIs are checked before any work, secrets never reach logs."""

from omegaconf import OmegaConf

from src.jobs.tracking import connect, loggable_config


def test_experiment_is_created_once_with_artifacts_beside_the_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = connect(uri, "exp")
    assert connect(uri, "exp") == first
    from mlflow.tracking import MlflowClient

    assert MlflowClient(uri).get_experiment(first).artifact_location == (tmp_path / "mlruns").as_uri()


def test_logged_config_hides_the_storage_password():
    cfg = OmegaConf.create({"sweep": {"storage": "postgresql://u:pw@h/db"}, "mlflow": {"tracking_uri": "http://h"}})
    assert loggable_config(cfg)["sweep"]["storage"] == "postgresql://u:***@h/db"


def test_dataset_schema_is_what_mlflow_infers_from_every_row():
    import mlflow

    from src.config import SyntheticDatasetConfig
    from src.data.loading import load
    from src.jobs.tracking import _mlflow_dataset

    data = load(SyntheticDatasetConfig(n_rows=3000, fraud_rate=0.02, seed=5))
    full = mlflow.data.from_pandas(data.frame(), name=data.name, targets="Class").schema  # cell by cell
    assert _mlflow_dataset(data).schema == full and len(full.inputs) == 31


def test_every_figure_is_closed_even_when_logging_one_fails(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import pytest

    from src.jobs.tracking import log_figures

    plt.close("all")
    figures = {"ok.png": plt.figure(), "broken.png": plt.figure(), "after.png": plt.figure()}
    figures["broken.png"].text(0.5, 0.5, r"$\notacommand$")  # mathtext cannot draw it: saving the figure raises
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with mlflow.start_run(), pytest.raises(ValueError, match="notacommand"):
        log_figures(figures)
    assert plt.get_fignums() == []
