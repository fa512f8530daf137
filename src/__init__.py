"""creditcardfraud-sweep, the app: a RandomForest for fraud detection, swept by the optuna_mlflow sweeper.

data/ (the schema, loading and checks, fetch, split, synthetic twin) -> model/ (the forest, its scoring) ->
jobs/ (a trial, the final stage: what each job records) -> lifecycle/ (the gate, registration, the registry command).
Entry points: ``python -m src.train``, ``python -m src.registry``, ``python -m src.data fetch``.
"""
