"""The model: the forest built from its config, its inputs (derived from the file's columns), how it is scored
(cross-validation, the one-time test, money under the cost model, bootstrap intervals, plots), and served.py, the
model's own code as MLflow serves it. Pure functions but served.py: no MLflow, no Optuna."""
