"""``python -m src.registry list|decide|promote|rollback``: look at the registered versions, run the gate again for a
version it could not decide, and override it by hand.

Every decision, automatic (src.lifecycle.gate) or manual, is written on the model version (tags and description).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path
from typing import Any, Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hydra_plugins.optuna_mlflow_sweeper.job import StoreError, check_tracking_uri
from src.config import MlflowConfig, RegistryConfig, config_from_logged
from src.console import quiet_libraries, redacted_output
from src.errors import UserError, one_line
from src.lifecycle import gate, turns
from src.lifecycle.ledger import Ledger, RegistryError, RegistryUnavailable
from src.lifecycle.lineage import Lineage
from src.lifecycle.registration import decide_in_turn


def _version_arg(text: str) -> str:
    """A version number as the registry writes it: ``01`` is version 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a version number (1, 2, ...)")
    return str(int(text))


def _get_version(client: MlflowClient, name: str, version: str) -> Any:
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r} (see: python -m src.registry list)") from None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"{name} has no version {version} (see: python -m src.registry list)") from None


def _record(client: MlflowClient, name: str, version: str, decision: str, reason: str, previous: Optional[str]) -> None:
    tags = {"decision": decision, "decision_reason": reason, "decided_at": gate.now(),
            "decided_by": f"{getpass.getuser()} (manual)"}
    if previous:
        tags["previous_champion"] = previous
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    mv = client.get_model_version(name, version)
    text = f"{mv.description or ''}\n{gate.decision_text(version, {**mv.tags, **tags})}".strip()
    client.update_model_version(name, version, description=text)


def cmd_list(client: MlflowClient, name: str) -> None:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
        aliases: dict[str, list[str]] = {}
        if versions:
            for alias, version in client.get_registered_model(name).aliases.items():
                aliases.setdefault(str(version), []).append(alias)
    except MlflowException as exc:
        raise RegistryError(f"cannot list {name!r}: {one_line(exc)}") from None
    if not versions:
        raise RegistryError(f"no registered model named {name!r} yet: run a sweep first (python -m src.train "
                            f"--multirun)")
    print(f"{'version':>7}  {'aliases':20}  {'test_pr_auc':>11}  {'95% CI':16}  {'net gain':>12}  {'threshold':>9}  "
          f"{'lineage':16}  {'test uses':>9}  {'decision':16}  reason")
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags
        ap = tags.get("test_pr_auc", "-")
        ap = f"{float(ap):.4f}" if ap.replace(".", "", 1).isdigit() else ap
        gain = tags.get("test_net_gain")
        gain = f"{float(gain):,.0f}" if gain is not None else "-"
        print(f"{mv.version:>7}  {','.join(sorted(aliases.get(str(mv.version), []))):20}  {ap:>11}  "
              f"{tags.get('test_pr_auc_ci', '-'):16}  {gain:>12}  {tags.get('decision_threshold', '-'):>9}  "
              f"{tags.get('lineage', '-'):16}  {tags.get('test_split_uses', '-'):>9}  {tags.get('decision', '-'):16}  "
              f"{tags.get('decision_reason', '')[:120]}")


def cmd_promote(client: MlflowClient, name: str, version: str, reason: str) -> None:
    _get_version(client, name, version)
    with turns.Turn(client, name, version, turns.Kind.EXCLUSIVE, wait=120) as turn:
        current = gate.champion_version(client, name)
        previous = str(current.version) if current is not None and str(current.version) != version else None
        turn.check()
        _record(client, name, version, "manual_promotion", reason, previous)
        client.set_registered_model_alias(name, gate.CHAMPION, version)
    print(f"{name} version {version} is champion (was {current.version if current else 'none'}): {reason}")


def cmd_rollback(client: MlflowClient, name: str, to: Optional[str], reason: str) -> None:
    current = gate.champion_version(client, name)
    if current is None:
        _get_version(client, name, to or "1")  # a clearer error if the model itself is missing
        raise RegistryError(f"{name} has no champion to roll back")
    target = to or current.tags.get("previous_champion")
    if not target:
        raise RegistryError(f"{name} v{current.version} records no previous champion: name the version with --to")
    if str(target) == str(current.version):
        raise RegistryError(f"version {target} is already the champion")
    _get_version(client, name, target)
    with turns.Turn(client, name, str(target), turns.Kind.EXCLUSIVE, wait=120) as turn:
        now = gate.champion_version(client, name)
        if now is None or str(now.version) != str(current.version):
            raise RegistryError(f"the champion of {name} changed while rolling back (now "
                                f"{now.version if now else 'none'}): look again (python -m src.registry list)")
        turn.check()
        _record(client, name, str(target), "rollback", reason, None)
        client.set_model_version_tag(name, str(current.version), "rolled_back_at", gate.now())
        client.set_registered_model_alias(name, gate.CHAMPION, str(target))
    print(f"{name} champion rolled back from version {current.version} to {target}: {reason}")


def cmd_decide(client: MlflowClient, tracking_uri: str, name: str, version: str) -> None:
    """The gate again for one undecided version: its own test rows (rebuilt from its run's config, checked against
    its lineage, test rows included), its lineage's rule, and the test-split use counted when it was tested."""
    from src.data.loading import load
    from src.jobs.prepared import amounts, split_of

    mv = _get_version(client, name, version)
    decided = mv.tags.get("decision")
    if decided != gate.UNDECIDED:
        raise RegistryError(f"{name} version {version} is decided already ({decided or 'no decision recorded'}): "
                            f"decide runs the gate only for an undecided version; to change the champion by hand use "
                            f"python -m src.registry promote {version} --reason ... or rollback --reason ...")
    lineage = Lineage.from_tags(mv.tags)
    if lineage is None or not mv.run_id:
        raise RegistryError(f"{name} version {version} records no full lineage or run: it cannot be re-decided "
                            f"(promote it by hand if it should be champion)")
    try:
        logged = client.download_artifacts(mv.run_id, "config/config.yaml")
    except Exception as exc:
        raise RegistryError(f"cannot read the config of version {version}'s run ({one_line(exc)})") from None
    cfg = config_from_logged(Path(logged), tracking_uri=tracking_uri, model_name=name)
    data = load(cfg.dataset)
    parts = split_of(cfg, data)
    now = Lineage.of(cfg, data, parts)
    if now != lineage:
        raise RegistryError(f"the data, split or test rows of version {version} changed since it was tested "
                            f"({'; '.join(now.differences(lineage))}): it cannot be decided on the same test rows")
    rule = Ledger(client, tracking_uri, lineage).open(None)  # the lineage's own rule, whatever the command line says
    uses = int(mv.tags.get("test_split_uses", "0") or 0)  # the use counted at its look, not today's count
    rows = gate.TestRows.of(data.X[parts.test], data.y[parts.test], amounts(data)[parts.test], cfg.decision)
    challenger, _ = gate.rescore(tracking_uri, mv, rows)
    with turns.Turn(client, name, version, turns.Kind.EXCLUSIVE, wait=300) as turn:
        if client.get_model_version(name, version).tags.get("decision") != gate.UNDECIDED:
            raise RegistryError(f"{name} version {version} was decided meanwhile: see python -m src.registry list")
        decision = decide_in_turn(client, cfg, version, turn, lineage, rule, rows, challenger, uses,
                                  f"automatic gate, rerun by {getpass.getuser()}")
    if decision.verdict == gate.UNDECIDED:
        raise RegistryUnavailable(f"{gate.later_hint(name, version)} ({decision.reason})")
    print(f"{name} version {version}: {decision.verdict.value}: {decision.reason}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.registry", description=__doc__)
    parser.add_argument("--tracking-uri", default=MlflowConfig().tracking_uri)
    parser.add_argument("--name", default=RegistryConfig().model_name, help="registered model name")
    parser.add_argument("-v", "--verbose", action="store_true", help="show MLflow's own log lines")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with their aliases, test scores, lineages and decisions")
    decide = sub.add_parser("decide", help="run the gate again for a version it left undecided")
    decide.add_argument("version", type=_version_arg)
    promote = sub.add_parser("promote", help="make a version the champion by hand")
    promote.add_argument("version", type=_version_arg)
    promote.add_argument("--reason", required=True, help="why (recorded on the version)")
    rollback = sub.add_parser("rollback", help="give the champion alias back to an earlier version")
    rollback.add_argument("--to", default=None, type=_version_arg,
                          help="version (default: the champion's previous champion)")
    rollback.add_argument("--reason", required=True, help="why (recorded on the version)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not args.verbose:
        quiet_libraries()
    with redacted_output():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command in ("promote", "rollback") and not args.reason.strip():
            raise RegistryError("--reason must say why (it is recorded on the model version)")
        try:
            check_tracking_uri(args.tracking_uri, key="--tracking-uri", writable=args.command != "list")
        except StoreError as exc:
            raise RegistryError(str(exc)) from None
        if args.tracking_uri.startswith("sqlite:///") and not Path(args.tracking_uri[len("sqlite:///"):]).exists():
            raise RegistryError(f"no MLflow store at {args.tracking_uri}: run a sweep first, or pass "
                                     f"--tracking-uri")
        client = MlflowClient(args.tracking_uri)
        if args.command == "list":
            cmd_list(client, args.name)
        elif args.command == "decide":
            cmd_decide(client, args.tracking_uri, args.name, args.version)
        elif args.command == "promote":
            cmd_promote(client, args.name, args.version, args.reason)
        else:
            cmd_rollback(client, args.name, args.to, args.reason)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
