"""What a version's test score rests on: two versions are compared only when all of it is equal.

The lineage pins the test rows themselves (a content hash of their features and labels), not only the settings that
drew them: a data cache made under other rules, or a change in how duplicates are dropped, can no longer put other
rows under the same lineage. It also holds the features the forest learns from and the cost model that prices its
decisions: another derivation or another price list is another lineage, with its own test-split budget.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from src.config import Config
from src.data.schema import FEATURES, Dataset
from src.data.split import Split
from src.model.inputs import describe

PROTOCOL = ("test average precision and net gain, each model at its own threshold; one-sided paired bootstrap of "
            "the difference on the same test rows")


def test_rows_digest(data: Dataset, parts: Split) -> str:
    """sha256 of the test rows' features and labels, in the order the split lists them."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.X[parts.test]).tobytes())
    digest.update(np.ascontiguousarray(data.y[parts.test]).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True)
class Lineage:
    data_sha256: str
    split: str
    test_rows: str
    features: str
    cost_model: str
    protocol: str = PROTOCOL

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        return {"lineage": self.key, **{f"lineage.{k}": v for k, v in asdict(self).items()}}

    @classmethod
    def of(cls, cfg: Config, data: Dataset, parts: Split) -> Lineage:
        return cls(data_sha256=data.sha256, split=cfg.split.describe(), test_rows=test_rows_digest(data, parts),
                   features=describe(FEATURES, cfg.features.time), cost_model=cfg.decision.summary())

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Optional[Lineage]:
        try:
            return cls(**{k: tags[f"lineage.{k}"] for k in cls.__dataclass_fields__})
        except KeyError:
            return None  # registered before lineages held all of this: never comparable

    def differences(self, other: Optional[Lineage]) -> list[str]:
        if other is None:
            return ["its lineage is not recorded in full"]
        names = {"data_sha256": "data", "split": "split", "test_rows": "test rows", "features": "features",
                 "cost_model": "cost model", "protocol": "protocol"}
        return [f"{names[k]} {getattr(other, k)[:24]} vs {v[:24]}" for k, v in asdict(self).items()
                if getattr(other, k) != v]
