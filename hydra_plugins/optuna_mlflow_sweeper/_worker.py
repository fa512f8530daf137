"""Who runs a trial, and whether that process is gone.

A worker is one invocation of the sweeper: host, process id and a random invocation id (one process may sweep twice,
e.g. in tests). On its own host a dead process is seen at once; on another host only a missing heartbeat tells.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

WORKER_ATTR = "sweeper.worker"  # trial system attribute: which worker runs it


@dataclass(frozen=True)
class Worker:
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    invocation: str = field(default_factory=lambda: uuid.uuid4().hex)

    def as_attr(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "invocation": self.invocation}

    def owns(self, record: Any) -> bool:
        return isinstance(record, dict) and record.get("invocation") == self.invocation

    def sees_gone(self, record: Any) -> bool:
        """True when the worker ``record`` describes is certainly dead: an older invocation of this very process,
        or a process of this host that no longer exists. Another host's worker is never declared gone here."""
        if not isinstance(record, dict) or self.owns(record) or record.get("host") != self.host:
            return False
        pid = record.get("pid")
        if not isinstance(pid, int) or pid == self.pid:
            return True  # our own pid but an older invocation (same process, earlier sweep)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def seed_entropy(self) -> int:
        return int(self.invocation[:8], 16)
