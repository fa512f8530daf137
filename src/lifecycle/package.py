"""The model as it is logged, registered and served, and how the gate reads a version back.

Logged with MLflow's models-from-code: the code is src/model/served.py (with src/model/inputs.py as its
``code_paths``, carried as the top-level module ``fraud_model_inputs``), the forest an artifact stored by skops, the
version's operating point in ``model_config`` (threshold, the features' derivation, the cost model), the signature
of 30 named double inputs and two outputs (``fraud_probability`` double, ``decision`` long), an input example and
pinned requirements.

Invariant: the gate never runs a version's code and never unpickles: it loads the forest with skops and this
project's own list of trusted types (never the list a model's files carry), and derives the inputs with this
project's own code.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config import Config
from src.data.schema import FEATURES
from src.errors import UserError, one_line
from src.model import inputs as model_inputs
from src.model.inputs import TRUSTED_TYPES

MODEL_NAME_IN_RUN = "fraud_model"
# The model's code, passed to MLflow by path (never imported here: it registers the model with MLflow when run).
SERVED_CODE = Path(__file__).resolve().parent.parent / "model" / "served.py"
INPUTS_CODE = Path(model_inputs.__file__).resolve()
# The name the served code imports its inputs by. Not src.model.inputs: MLflow puts a loaded model's code folder
# first on sys.path, and a carried `src` package would shadow the loading process's own `src` (this app's in a
# joblib worker, a fraud team's service), or be shadowed by it (the version then runs someone else's code).
CARRIED_INPUTS = "fraud_model_inputs"


class ModelRefused(UserError):
    """A version's model file is not one this project loads (another format, or a type outside the trusted list)."""


def features_frame(X: np.ndarray) -> pd.DataFrame:
    """The model's input: the 30 named columns as doubles (what the signature promises)."""
    return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=FEATURES)


def model_config(cfg: Config, threshold: float) -> dict[str, Any]:
    return {"inputs": list(FEATURES), "time_feature": cfg.features.time, "decision_threshold": float(threshold),
            "cost_model": cfg.decision.name, "cost": cfg.decision.summary()}


def decide_rows(forest: Any, X: np.ndarray, time: str, threshold: float) -> pd.DataFrame:
    """What the served model answers for these rows, computed here (the signature's example output)."""
    features = pd.DataFrame(model_inputs.derive(np.asarray(X, dtype=np.float64), FEATURES, time),
                            columns=forest.feature_names_in_)
    proba = forest.predict_proba(features)[:, list(forest.classes_).index(1)]
    return pd.DataFrame({"fraud_probability": proba.astype(np.float64),
                         "decision": (proba >= threshold).astype(np.int64)})


def log_model(forest: Any, cfg: Config, threshold: float, example_rows: np.ndarray) -> Any:
    """Log the model in the active run; returns MLflow's ModelInfo."""
    import mlflow
    import skops.io

    example = features_frame(example_rows)
    config = model_config(cfg, threshold)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        skops.io.dump(forest, folder / "forest.skops")
        carried = folder / f"{CARRIED_INPUTS}.py"  # the one module the served code imports
        shutil.copy(INPUTS_CODE, carried)
        with warnings.catch_warnings():  # MLflow's hint that `decision` is an integer column: it is, on purpose
            warnings.simplefilter("ignore", category=UserWarning)
            signature = mlflow.models.infer_signature(example, decide_rows(forest, example_rows, cfg.features.time,
                                                                           threshold))
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN, python_model=str(SERVED_CODE),
                artifacts={"forest": str(folder / "forest.skops")}, code_paths=[str(carried)], model_config=config,
                signature=signature, input_example=example, pip_requirements=requirements())


def requirements() -> list[str]:
    """Pinned to what trained the model (MLflow's inference would run the model in a subprocess to guess)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")]


def load_version(tracking_uri: str, version: Any) -> tuple[Any, dict[str, Any]]:
    """A registered version's forest (skops, this project's trusted types) and its model_config; its code is never
    run."""
    import mlflow
    import skops.io
    import yaml

    mlflow.set_tracking_uri(tracking_uri)  # models:/ sources resolve through the current tracking store
    local = Path(mlflow.artifacts.download_artifacts(version.source, tracking_uri=tracking_uri))
    flavor = (yaml.safe_load((local / "MLmodel").read_text()).get("flavors") or {}).get("python_function") or {}
    forest_file = ((flavor.get("artifacts") or {}).get("forest") or {}).get("path")
    if not forest_file or not str(forest_file).endswith(".skops"):
        raise ModelRefused(f"version {version.version} does not hold a forest stored by skops (models-from-code, "
                           f"artifact 'forest'): refused (only skops files are loaded, with a fixed list of trusted "
                           f"types)")
    try:
        forest = skops.io.load(local / forest_file, trusted=TRUSTED_TYPES)
    except skops.io.exceptions.UntrustedTypesFoundException as exc:
        raise ModelRefused(f"version {version.version}'s model file holds types outside the trusted list "
                           f"({one_line(exc)}): refused") from None
    return forest, dict(flavor.get("config") or {})  # (MLflow keeps model_config under the flavor's "config")
