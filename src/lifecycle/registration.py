"""Registering the final stage's model and deciding it: the version first (with its flag up and ``undecided``),
then the gate in its turn.

Invariants:
- a version is registered once per study and trial: a final stage that resumes after a crash finds the version its
  first attempt registered (and finishes what that attempt's recorded decision called for); a registry that cannot
  be searched is never taken for one without that version (fail closed: nothing is registered, one line says to
  rerun);
- the version exists before its decision: a crash at any point leaves it ``undecided`` (and ``decide N`` decides
  it), never promoted by half;
- every automatic decision is made in the version's turn (src.lifecycle.turns): against the champion of that moment.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any, Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src.config import Config
from src.errors import one_line
from src.lifecycle import gate, turns
from src.lifecycle.ledger import RegistryError, RegistryUnavailable, Rule
from src.lifecycle.lineage import Lineage

SEARCH_ATTEMPTS = 3


def for_trial(client: MlflowClient, cfg: Config) -> Any:
    """The version already registered for this study's trial (a final stage that died after registering it), or
    None. A search that keeps failing raises: it never means "not registered"."""
    if not cfg.sweep.study_name or cfg.sweep.trial_number is None:
        return None
    query = (f"name = '{cfg.registry.model_name}' and tags.`optuna.study_name` = '{cfg.sweep.study_name}' "
             f"and tags.`optuna.trial_number` = '{cfg.sweep.trial_number}'")
    for attempt in range(SEARCH_ATTEMPTS):
        try:
            found = client.search_model_versions(query)
            return min(found, key=lambda v: int(v.version)) if found else None
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # no such registered model yet
            error = exc
        time.sleep(0.5 * (attempt + 1))
    raise RegistryUnavailable(f"cannot search {cfg.registry.model_name} for a version of this trial "
                              f"({one_line(error)}): nothing was registered; rerun the same command once the "
                              f"registry answers")


def register(client: MlflowClient, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """The version, created with its lineage, scores, operating point and flag already written."""
    import mlflow

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Successfully registered ..." chatter
            mv = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise RegistryError(f"registry.model_name={name!r}: {one_line(exc)}") from None
    return str(mv.version)


def fresh_split_hint(cfg: Config) -> str:
    if cfg.split.method == "time":
        return "the time holdout cannot be redrawn: test on newer data (a new data file is a new lineage)"
    return f"draw a fresh split (split.seed={cfg.split.seed + 1} or any unused seed: a new lineage)"


def decide_in_turn(client: MlflowClient, cfg: Config, version: str, turn: turns.Turn, lineage: Lineage, rule: Rule,
                   rows: gate.TestRows, challenger: gate.Scored, uses: int, decided_by: str) -> gate.Decision:
    """Gather, decide, apply: inside ``turn``. A failure to apply leaves the version undecided, with the reason."""
    name = cfg.registry.model_name
    evidence = gate.gather(client, cfg.mlflow.tracking_uri, name, lineage, rule, rows, challenger, uses, version,
                           n_boot=cfg.evaluation.bootstrap_samples, seed=cfg.split.seed)
    decision = gate.decide(evidence, rule, fresh_split_hint(cfg))
    try:
        gate.apply(client, name, version, decision, turn, decided_by)
    except (RegistryUnavailable, MlflowException) as exc:
        decision = gate.Decision(verdict=gate.UNDECIDED, reason=f"{one_line(exc)}: no alias moved", uses=uses,
                                 champion_version=decision.champion_version)
        with contextlib.suppress(Exception):
            for key, value in gate.decision_tags(decision, decided_by).items():
                client.set_model_version_tag(name, version, key, value)
    return decision


def register_and_decide(client: MlflowClient, cfg: Config, *, lineage: Lineage, rule: Rule, uses: int,
                        rows: gate.TestRows, challenger: gate.Scored, existing: Any, log_model: Any,
                        tags: dict[str, str]) -> tuple[str, gate.Verdict]:
    """Register (or find) this trial's version and decide it in its turn; returns (version, verdict)."""
    name = cfg.registry.model_name
    if existing is not None and existing.tags.get("decision") in (gate.PROMOTED, gate.KEPT):
        return _finish_recorded(client, name, existing)
    who = turns.holder()
    if existing is None:
        flag = turns.flag_tags(turns.Kind.ORDERED, who)
        version = register(client, name, log_model().model_uri, {
            **tags, "decision": gate.UNDECIDED.value, "decision_reason": "registered; the gate decides in its turn",
            "test_split_uses": str(uses), **flag})
        kind, raised = turns.Kind.ORDERED, True
    else:  # its first attempt registered it and died before deciding
        version, kind, raised = str(existing.version), turns.Kind.EXCLUSIVE, False
        print(f"{name} version {version} was already registered for this trial: reused, decided now",
              file=sys.stderr)
    try:
        with turns.Turn(client, name, version, kind, who=who, raised=raised) as turn:
            if turn.waited_for:
                print(f"{name} version {version}: waited for the gate's decision on version(s) "
                      f"{', '.join(turn.waited_for)}", file=sys.stderr)
            decision = decide_in_turn(client, cfg, version, turn, lineage, rule, rows, challenger, uses,
                                      "automatic gate")
    except turns.TurnLost as exc:
        decision = gate.Decision(verdict=gate.UNDECIDED, reason=f"{exc}: no alias moved", uses=uses)
        with contextlib.suppress(Exception):
            for key, value in gate.decision_tags(decision).items():
                client.set_model_version_tag(name, version, key, value)
    where = {gate.PROMOTED: "champion", gate.KEPT: "challenger (champion unchanged)",
             gate.UNDECIDED: "challenger, undecided"}[decision.verdict]
    print(f"registered {name} version {version} as {where}: {decision.reason}")  # the decision: stdout
    return version, decision.verdict


def _finish_recorded(client: MlflowClient, name: str, mv: Any) -> tuple[str, gate.Verdict]:
    """A resumed final stage whose first attempt decided: the aliases its recorded decision called for (only if
    nothing newer was registered since, and the champion is still the one it was compared with)."""
    version, verdict = str(mv.version), gate.Verdict(mv.tags["decision"])
    with turns.Turn(client, name, version, turns.Kind.EXCLUSIVE) as turn:
        newer = [v for v in client.search_model_versions(f"name = '{name}'") if int(v.version) > int(version)]
        if not newer:
            turn.check()
            current = gate.champion_version(client, name)
            compared: Optional[str] = mv.tags.get("compared_with_version") or None
            now = str(current.version) if current is not None else None
            if verdict == gate.PROMOTED and now != version and now == compared:
                client.set_registered_model_alias(name, gate.CHAMPION, version)
            client.set_registered_model_alias(name, gate.CHALLENGER, version)
    print(f"{name} version {version} was already registered for this trial: reused ({verdict.value})",
          file=sys.stderr)
    return version, verdict
