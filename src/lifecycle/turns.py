"""One decision at a time per registered model: promotions that hold when packagings finish together.

MLflow moves an alias without checking what it pointed at (no compare-and-set), so two gates deciding at once
would each compare with the same champion and the last writer would win. Decisions therefore take turns, and the
turns are kept in the registry itself (any backend: SQLite, PostgreSQL, a tracking server), as tags of the versions:

- a version being decided carries a *flag* (tag ``gate.turn``), a heartbeat (``gate.heartbeat``, refreshed every few
  seconds) and its holder (host, process, invocation); a flag whose heartbeat is older than the grace period, or
  whose process is gone from this host, is dead and ignored (its version stays ``undecided``: fail closed);
- a new version is registered with its flag already up (``ordered``): version numbers are assigned atomically, so
  every packaging that registers later sees it; an ordered turn waits until no lower version and no exclusive turn
  holds a live flag: packagings decide in version order;
- a decision on an existing version (``decide N``, promote, rollback, a resumed packaging) raises an ``exclusive``
  flag and then looks: if any other live flag is up, it lowers its own and tries again later; if none, it goes.

Each side raises its flag before it looks at the others' (Dekker's protocol): of two deciders, at least one sees the
other, so no two decide at once. The holder checks that its lease held (its heartbeats went through) before it
moves an alias; a holder stalled for longer than the grace period gives up instead (its version stays undecided).
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
import uuid
from enum import StrEnum
from typing import Any, Optional

from mlflow.tracking import MlflowClient

from src.lifecycle.ledger import RegistryUnavailable

TURN_TAG, HEARTBEAT_TAG, HOLDER_TAG = "gate.turn", "gate.heartbeat", "gate.holder"


class Kind(StrEnum):
    ORDERED = "ordered"  # a new version: decided after every lower one
    EXCLUSIVE = "exclusive"  # an existing version: decided when nobody else is


class TurnLost(RegistryUnavailable):
    """This process could not hold its turn (it stalled past the grace period, or waited too long)."""


def holder() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "invocation": uuid.uuid4().hex}


def flag_tags(kind: Kind, who: dict[str, Any]) -> dict[str, str]:
    """The tags that raise a flag (a new version is registered with them)."""
    return {TURN_TAG: kind.value, HEARTBEAT_TAG: f"{time.time():.3f}", HOLDER_TAG: json.dumps(who)}


def is_live(tags: dict[str, str], grace: float, now: Optional[float] = None) -> bool:
    """A flag that is up and whose holder is alive (pure, but for a process check on this host)."""
    if tags.get(TURN_TAG) not in tuple(Kind):
        return False
    try:
        beat = float(tags.get(HEARTBEAT_TAG, "0"))
        who = json.loads(tags.get(HOLDER_TAG, "{}"))
    except ValueError:
        return False
    if (now if now is not None else time.time()) - beat > grace:
        return False
    if who.get("host") == socket.gethostname() and isinstance(who.get("pid"), int) and who["pid"] != os.getpid():
        try:
            os.kill(who["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def blockers(versions: list[Any], own: str, kind: Kind, grace: float) -> list[str]:
    """The versions whose live flag this turn must wait for (pure): an ordered turn waits for lower versions and for
    exclusive turns, an exclusive one for anybody."""
    found = []
    for mv in versions:
        if str(mv.version) == own or not is_live(mv.tags, grace):
            continue
        if kind == Kind.EXCLUSIVE or int(mv.version) < int(own) or mv.tags.get(TURN_TAG) == Kind.EXCLUSIVE:
            found.append(str(mv.version))
    return sorted(found, key=int)


class Turn:
    """``with Turn(...) as turn:`` holds this version's turn; ``turn.check()`` before any alias moves."""

    def __init__(self, client: MlflowClient, name: str, version: str, kind: Kind, *, who: Optional[dict] = None,
                 raised: bool = False, grace: float = 60.0, interval: float = 2.0, wait: float = 1800.0) -> None:
        self.client, self.name, self.version, self.kind = client, name, str(version), kind
        self.who = who or holder()
        self.raised, self.grace, self.interval, self.wait = raised, grace, interval, wait
        self._stop = threading.Event()
        self._last_beat = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name="gate-turn", daemon=True)
        self.waited_for: list[str] = []

    def __enter__(self) -> Turn:
        if not self.raised:
            self._raise()
        self._thread.start()
        deadline = time.monotonic() + self.wait
        while True:
            waiting = blockers(self._versions(), self.version, self.kind, self.grace)
            if not waiting:
                return self
            self.waited_for = sorted({*self.waited_for, *waiting}, key=int)
            if time.monotonic() > deadline:
                self._lower()
                raise TurnLost(f"waited {self.wait:.0f} s for the gate's decision on version(s) "
                               f"{', '.join(waiting)} of {self.name}")
            if self.kind == Kind.EXCLUSIVE:  # yield to the others, then raise the flag and look again
                self._lower()
                time.sleep(random.uniform(0.5, 2.0))
                self._raise()
            else:
                time.sleep(random.uniform(0.2, 0.6))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._lower()

    def check(self) -> None:
        """The lease held: every heartbeat went through within the grace period (else another decider may have
        taken this version's flag for dead and gone ahead)."""
        if time.monotonic() - self._last_beat > self.grace / 2:
            raise TurnLost(f"this process's turn at the gate for {self.name} version {self.version} lapsed (no "
                           f"heartbeat for {time.monotonic() - self._last_beat:.0f} s)")

    def _versions(self) -> list[Any]:
        try:
            return list(self.client.search_model_versions(f"name = '{self.name}'"))
        except Exception as exc:
            raise RegistryUnavailable(f"cannot read the versions of {self.name} to take a turn at the gate "
                                      f"({type(exc).__name__})") from None

    def _raise(self) -> None:
        for key, value in flag_tags(self.kind, self.who).items():
            self.client.set_model_version_tag(self.name, self.version, key, value)
        self._last_beat = time.monotonic()

    def _lower(self) -> None:
        try:
            self.client.delete_model_version_tag(self.name, self.version, TURN_TAG)
        except Exception:  # noqa: BLE001 (a lowered flag is only an optimisation: a dead one is ignored anyway)
            pass

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.client.set_model_version_tag(self.name, self.version, HEARTBEAT_TAG, f"{time.time():.3f}")
                self._last_beat = time.monotonic()
            except Exception:  # noqa: BLE001 (check() notices a lapsed lease)
                pass
