"""Append-only audit trail: one JSON object per line, who did what to which room, and when.

Only identifiers, names of actions and counts go in — never media, never what was said or
shown. A later issue replaces this with a tamper-evident store behind the same `record()`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()

    def record(self, event: str, room: str, actor: str, **details: Any) -> None:
        """Append one event. The file (and its directory) is created on first use."""
        now = self._clock()
        entry = {
            "ts": round(now, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "event": event,
            "room": room,
            "actor": actor,
            **details,
        }
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_APPEND: each line lands whole at the end, even with other writers.
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)

    def entries(self) -> list[dict[str, Any]]:
        """Everything recorded so far (for tests and the operator)."""
        if not self.path.exists():
            return []
        with self.path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
