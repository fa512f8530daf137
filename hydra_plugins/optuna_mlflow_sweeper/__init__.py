"""A Hydra sweeper that runs an Optuna study whose trials are nested MLflow runs under one parent run."""

__version__ = "0.2.0"
