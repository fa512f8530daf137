"""``python -m src.registry list|promote|rollback``: inspect the registered versions and override the gate by hand.

Every decision, automatic (src.gate) or manual, is written on the model version (tags and description).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any, Optional

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hydra_plugins.optuna_mlflow_sweeper.job import StoreError, check_tracking_uri
from src.config import MlflowConfig, RegistryConfig
from src.errors import UserError, one_line
from src.gate import CHAMPION, RegistryError, alias_version, decision_text, now


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
    tags = {"decision": decision, "decision_reason": reason, "decided_at": now(),
            "decided_by": f"{getpass.getuser()} (manual)"}
    if previous:
        tags["previous_champion"] = previous
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    mv = client.get_model_version(name, version)
    text = f"{mv.description or ''}\n{decision_text(version, {**mv.tags, **tags})}".strip()
    client.update_model_version(name, version, description=text)


def cmd_list(client: MlflowClient, name: str) -> None:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise RegistryError(f"cannot list {name!r}: {one_line(exc)}") from None
    if not versions:
        raise RegistryError(f"no registered model named {name!r} yet: run a sweep first (python -m src.train "
                            f"--multirun)")
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    print(f"{'version':>7}  {'aliases':20}  {'test_pr_auc':>11}  {'95% CI':17}  {'decision':14}  reason")
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags
        names = ",".join(sorted(aliases.get(str(mv.version), [])))
        print(f"{mv.version:>7}  {names:20}  {tags.get('test_pr_auc', '-')[:8]:>11}  "
              f"{tags.get('test_pr_auc_ci', '-'):17}  {tags.get('decision', '-'):14}  "
              f"{tags.get('decision_reason', '')[:120]}")


def cmd_promote(client: MlflowClient, name: str, version: str, reason: str) -> None:
    _get_version(client, name, version)
    current = alias_version(client, name, CHAMPION)
    previous = str(current.version) if current is not None and str(current.version) != str(version) else None
    _record(client, name, str(version), "manual_promotion", reason, previous)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    print(f"{name} version {version} is champion (was {current.version if current else 'none'}): {reason}")


def cmd_rollback(client: MlflowClient, name: str, to: Optional[str], reason: str) -> None:
    current = alias_version(client, name, CHAMPION)
    if current is None:
        _get_version(client, name, to or "1")  # a clearer error if the model itself is missing
        raise RegistryError(f"{name} has no champion to roll back")
    target = to or current.tags.get("previous_champion")
    if not target:
        raise RegistryError(f"{name} v{current.version} records no previous champion: name the version with --to")
    if str(target) == str(current.version):
        raise RegistryError(f"version {target} is already the champion")
    _get_version(client, name, target)
    _record(client, name, str(target), "rollback", reason, None)
    client.set_model_version_tag(name, str(current.version), "rolled_back_at", now())
    client.set_registered_model_alias(name, CHAMPION, str(target))
    print(f"{name} champion rolled back from version {current.version} to {target}: {reason}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.registry", description=__doc__)
    parser.add_argument("--tracking-uri", default=MlflowConfig().tracking_uri)
    parser.add_argument("--name", default=RegistryConfig().model_name, help="registered model name")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with their aliases, test scores and decisions")
    promote = sub.add_parser("promote", help="make a version the champion by hand")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True, help="why (recorded on the version)")
    rollback = sub.add_parser("rollback", help="give the champion alias back to an earlier version")
    rollback.add_argument("--to", default=None, help="version (default: the champion's previous champion)")
    rollback.add_argument("--reason", required=True, help="why (recorded on the version)")
    args = parser.parse_args(argv)
    try:
        if args.command in ("promote", "rollback") and not args.reason.strip():
            raise RegistryError("--reason must say why (it is recorded on the model version)")
        try:
            check_tracking_uri(args.tracking_uri, key="--tracking-uri")
        except StoreError as exc:
            raise RegistryError(str(exc)) from None
        if args.tracking_uri.startswith("sqlite:///") and not Path(args.tracking_uri[len("sqlite:///"):]).exists():
            raise RegistryError(f"no MLflow store at {args.tracking_uri}: run a sweep first, or pass --tracking-uri")
        client = MlflowClient(args.tracking_uri)
        if args.command == "list":
            cmd_list(client, args.name)
        elif args.command == "promote":
            cmd_promote(client, args.name, args.version, args.reason)
        else:
            cmd_rollback(client, args.name, args.to, args.reason)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
