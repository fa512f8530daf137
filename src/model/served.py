"""The registered model as MLflow serves it (models-from-code): per row, the fraud probability and the decision.

This file is the model's code: ``mlflow.pyfunc.log_model(python_model=<this file>)`` stores it with the model,
MLflow runs it when the model is loaded (``mlflow models serve``, ``mlflow.pyfunc.load_model``), and nothing of the
app imports it. The forest is an artifact stored by skops and loaded with a fixed list of trusted types: loading
the model never unpickles. Its inputs go through src/model/inputs.py, carried with the model (``code_paths``) as
the module ``fraud_model_inputs``: the same derivation as in training, and the same refusal of rows that cannot be
scored (an HTTP 400 naming the column). Each load runs its own version's copy: MLflow has just put that version's
code folder first on sys.path, and a copy an earlier load imported is dropped first. (Only while MLflow logs the
model, in the app, is there no copy yet: the app's module stands in, the same file.)
"""

from __future__ import annotations

import sys
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

sys.modules.pop("fraud_model_inputs", None)
try:
    from fraud_model_inputs import TRUSTED_TYPES, InputError, check_rows, derive
except ModuleNotFoundError:  # MLflow runs this file once while logging it, before the copy exists: the app's own
    from src.model.inputs import TRUSTED_TYPES, InputError, check_rows, derive


class FraudDecision(PythonModel):
    """``predict`` returns one row per input row: ``fraud_probability`` (float) and ``decision`` (1 = stop it, at the
    version's threshold)."""

    def load_context(self, context: Any) -> None:
        import skops.io

        config = context.model_config
        self.inputs = list(config["inputs"])
        self.time = str(config["time_feature"])
        self.threshold = float(config["decision_threshold"])
        self.forest = skops.io.load(context.artifacts["forest"], trusted=TRUSTED_TYPES)
        self.fraud_column = list(self.forest.classes_).index(1)

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        try:
            values = check_rows(pd.DataFrame(model_input), self.inputs)
        except InputError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        features = pd.DataFrame(derive(values, self.inputs, self.time), columns=self.forest.feature_names_in_)
        proba = self.forest.predict_proba(features)[:, self.fraud_column]
        return pd.DataFrame({"fraud_probability": proba.astype(np.float64),
                             "decision": (proba >= self.threshold).astype(np.int64)})


mlflow.models.set_model(FraudDecision())
