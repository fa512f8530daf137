"""The model: the forest built from its config, and how it is scored (cross-validation, the one-time test, bootstrap
intervals, plots). Pure functions: no MLflow, no Optuna."""
