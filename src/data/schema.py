"""The real data's schema (the Kaggle credit-card file) and what a loaded dataset is. Every other module takes the
column names from here: the loader checks them, the twin generates them, the model's signature declares them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from src.errors import UserError

FEATURES = ["Time", *[f"V{i}" for i in range(1, 29)], "Amount"]  # the model's inputs, in the file's order
TARGET = "Class"  # 1 = fraud
COLUMNS = [*FEATURES, TARGET]
V_COLUMNS = FEATURES[1:-1]
TIME, AMOUNT = FEATURES.index("Time"), FEATURES.index("Amount")  # column positions in Dataset.X


class DataError(UserError):
    """The data cannot be used as it is: the message names the file, the column and the row."""


@dataclass(frozen=True)
class Dataset:
    """Deduplicated rows: features as float32 (what the trees use) and labels as int8."""

    name: str
    source: str  # a file path, or a description of the generator's settings
    sha256: str  # of the file's bytes (or of the generated table)
    X: np.ndarray
    y: np.ndarray
    n_rows_read: int
    n_duplicates_dropped: int

    @property
    def n_frauds(self) -> int:
        return int(self.y.sum())

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame in the file's schema (for MLflow's dataset record)."""
        frame = pd.DataFrame(self.X.astype(np.float64), columns=FEATURES)
        frame[TARGET] = self.y.astype(np.int64)
        return frame
