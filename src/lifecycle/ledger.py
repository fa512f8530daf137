"""The test-split ledger: every look at a lineage's test rows, and the rule its promotions are decided by.

Invariants:
- a look is recorded before its score exists (write-ahead): a final stage that dies after testing has still
  counted; a resumed final stage of the same study and trial finds its look again and does not count twice;
- the count is the number of looks recorded, whatever became of them: deleting model versions (or runs) does not
  shrink it, and another ``registry.model_name`` on the same lineage shares it;
- the rule (criterion, confidence, margin, max_test_uses) is fixed at the lineage's first use, atomically: the ledger
  is an MLflow experiment created with the rule in its tags (experiment names are unique), and a later command with
  other values is refused in one line, never decided under a looser rule.

The ledger of a lineage is the MLflow experiment ``test-split-ledger-<lineage key>``; each look is one run in it
(tags: the study, the trial, the model name), so the UI lists every look at a test split.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hydra_plugins.optuna_mlflow_sweeper.job import artifact_location
from src.config import RegistryConfig
from src.errors import UserError, one_line
from src.lifecycle.lineage import Lineage

PREFIX = "test-split-ledger-"
RULE_TAG = "gate.rule"


class RegistryError(UserError):
    """The registry or the ledger cannot be used as asked: one line, nothing promoted."""


class RegistryUnavailable(RegistryError):
    """The registry or the tracking store did not answer: nothing was promoted (fail closed)."""


class RuleChanged(RegistryError):
    """A setting of the gate differs from the rule its lineage was first decided by."""


@dataclass(frozen=True, kw_only=True)
class Rule:
    """How the gate decides within one lineage."""

    criterion: str
    confidence: float
    margin: float
    max_test_uses: int

    @classmethod
    def of(cls, registry: RegistryConfig) -> Rule:
        return cls(criterion=registry.criterion, confidence=float(registry.confidence),
                   margin=float(registry.margin), max_test_uses=int(registry.max_test_uses))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Rule:
        return cls(**json.loads(text))

    def differences(self, recorded: Rule) -> list[str]:
        return [f"registry.{k}={getattr(self, k)!r} (the lineage's: {getattr(recorded, k)!r})"
                for k in asdict(self) if getattr(self, k) != getattr(recorded, k)]

    def describe(self) -> str:
        return (f"criterion {self.criterion}, one-sided {self.confidence:.0%} lower bound above margin "
                f"{self.margin:g}, at most {self.max_test_uses} test-split uses")


class Ledger:
    def __init__(self, client: MlflowClient, tracking_uri: str, lineage: Lineage) -> None:
        self.client, self.tracking_uri, self.lineage = client, tracking_uri, lineage
        self.name = f"{PREFIX}{lineage.key}"
        self.experiment_id: str = ""
        self.rule: Rule | None = None

    def open(self, wanted: Rule | None) -> Rule:
        """The lineage's rule: the recorded one (``wanted`` must equal it), or ``wanted``, recorded now as the first
        use. ``wanted=None`` reads the recorded rule (a lineage that has none yet is an error)."""
        try:
            experiment = self.client.get_experiment_by_name(self.name)
            if experiment is None and wanted is not None:
                experiment = self._create(wanted)
        except MlflowException as exc:
            raise RegistryUnavailable(f"cannot read the test-split ledger of lineage {self.lineage.key} "
                                      f"({one_line(exc)}): nothing was tested") from None
        if experiment is None:
            raise RegistryError(f"lineage {self.lineage.key} has no test-split ledger: it was never tested")
        if experiment.lifecycle_stage == "deleted":
            raise RegistryError(f"the test-split ledger of lineage {self.lineage.key} ({self.name}) is deleted: "
                                f"restore it (mlflow experiments restore --experiment-id {experiment.experiment_id}); "
                                f"its looks still count")
        recorded = Rule.from_json(experiment.tags[RULE_TAG])
        if wanted is not None and wanted.differences(recorded):
            raise RuleChanged(f"{'; '.join(wanted.differences(recorded))}: lineage {self.lineage.key} is decided by "
                              f"the rule of its first use ({recorded.describe()}); drop the setting, or draw a fresh "
                              f"split (split.seed=...) for a new lineage")
        self.experiment_id, self.rule = experiment.experiment_id, recorded
        return recorded

    def _create(self, rule: Rule) -> Any:
        tags = {RULE_TAG: rule.to_json(), "mlflow.note.content": (
            f"Every look at the test rows of lineage {self.lineage.key}, one run per look, and the rule its "
            f"promotions are decided by: {rule.describe()}."), **self.lineage.tags()}
        try:
            self.client.create_experiment(self.name, artifact_location=artifact_location(self.tracking_uri),
                                          tags=tags)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process recorded the first use: its rule holds
                raise
        return self.client.get_experiment_by_name(self.name)

    def looks(self) -> list[Any]:
        """Every look, deleted runs included, in the order they were recorded."""
        runs = self.client.search_runs([self.experiment_id], run_view_type=ViewType.ALL, max_results=50000)
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def record_look(self, *, study: str, trial: int, model_name: str) -> str:
        """The run that records this look, created now unless this study's trial looked already (a resumed final
        stage): its id."""
        try:
            for run in self.looks():
                tags = run.data.tags
                if tags.get("optuna.study_name") == study and tags.get("optuna.trial_number") == str(trial):
                    return run.info.run_id
            run = self.client.create_run(self.experiment_id, run_name=f"look: {study} trial {trial}", tags={
                "optuna.study_name": study, "optuna.trial_number": str(trial), "registry.model_name": model_name,
                "lineage": self.lineage.key, "looked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            self.client.set_terminated(run.info.run_id, "FINISHED")
            return run.info.run_id
        except MlflowException as exc:
            raise RegistryUnavailable(f"cannot record the look at lineage {self.lineage.key}'s test rows "
                                      f"({one_line(exc)}): nothing was tested; rerun once the store answers") from None

    def position(self, look_id: str) -> int:
        """A look's place among the lineage's looks (1 = the first), in the order they were recorded: read after the
        test, when looks recorded at the same moment by other processes are visible too."""
        try:
            return 1 + [r.info.run_id for r in self.looks()].index(look_id)
        except MlflowException as exc:
            raise RegistryUnavailable(f"cannot read the test-split ledger ({one_line(exc)})") from None

    def uses(self) -> int:
        try:
            return len(self.looks())
        except MlflowException as exc:
            raise RegistryUnavailable(f"cannot read the test-split ledger ({one_line(exc)})") from None
