"""What the forest sees of a transaction, and which transactions it refuses to score.

Invariants:
- the model's input is the file's schema (``Time``, ``V1``..``V28``, ``Amount``); what the forest learns from is
  derived from it here, in training, in the gate's re-scoring and inside the served model alike;
- ``Time`` (seconds since the file's first transaction) never reaches the forest raw by default: its time of day
  (``Time mod 86,400``) means the same next week, so shifting every ``Time`` by whole days changes no probability;
- a row with a missing, NaN or infinite value, or a negative ``Amount`` (the cost model multiplies it), is refused
  with one line naming the column and the row, never scored.

Self-contained (numpy and pandas only): the served model carries this file (models-from-code ``code_paths``).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np
import pandas as pd

DAY = 86_400  # seconds
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]  # what skops must be allowed to load for a RandomForest: nothing else


class TimeFeature(StrEnum):
    TIME_OF_DAY = "time_of_day"  # Time mod 86,400
    RAW = "raw"  # Time as it is (seconds since the file began: meaningless for later transactions)
    DROP = "drop"  # no Time at all


class InputError(ValueError):
    """A row the model must not score: the message names the column, the row and the fix."""


def derive(X: np.ndarray, columns: Sequence[str], time: str, time_column: str = "Time") -> np.ndarray:
    """The forest's inputs from rows in the file's schema (``X``'s columns are ``columns``)."""
    mode = TimeFeature(time)
    i = list(columns).index(time_column)
    if mode == TimeFeature.RAW:
        return X
    if mode == TimeFeature.DROP:
        return np.delete(X, i, axis=1)
    out = np.array(X, copy=True)
    # to the millisecond: (t + k days) mod 1 day must equal t mod 1 day, floating-point rounding included
    out[:, i] = np.round(np.mod(out[:, i], DAY), 3)
    return out


def feature_names(columns: Sequence[str], time: str, time_column: str = "Time") -> list[str]:
    """The forest's feature names, as ``derive`` produces them."""
    mode = TimeFeature(time)
    if mode == TimeFeature.RAW:
        return list(columns)
    if mode == TimeFeature.DROP:
        return [c for c in columns if c != time_column]
    return ["time_of_day" if c == time_column else c for c in columns]


def describe(columns: Sequence[str], time: str) -> str:
    """The features in one line, for a model version's lineage: another derivation is another lineage."""
    return ",".join(feature_names(columns, time)).replace(",".join(f"V{i}" for i in range(1, 29)), "V1..V28")


def check_rows(frame: pd.DataFrame, columns: Sequence[str], amount_column: str = "Amount") -> np.ndarray:
    """The rows as float64 in ``columns``' order, or InputError for the first column that cannot be scored."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"column {missing[0]} is missing: send every input column ({', '.join(columns)})")
    try:
        values = frame[list(columns)].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = next(c for c in columns if pd.to_numeric(frame[c], errors="coerce").isna().any())
        raise InputError(f"column {bad} holds text, not a number: send numbers only") from None
    finite = np.isfinite(values)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        kind = "missing (NaN or null)" if np.isnan(values[row, col]) else "infinite"
        raise InputError(f"column {columns[col]} is {kind} in row {row + 1}: send a number (a transaction with a "
                         f"value missing is not scored)")
    amount = values[:, list(columns).index(amount_column)]
    if (amount < 0).any():
        row = int(np.flatnonzero(amount < 0)[0])
        raise InputError(f"column {amount_column} is negative ({amount[row]:g}) in row {row + 1}: an amount is "
                         f">= 0 (the cost model counts it as money)")
    return values
