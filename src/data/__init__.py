"""The data: its schema, loading and checks (the real file, fetched on first use, or the synthetic twin), the test
split and the folds. Nothing here knows of models or MLflow."""
