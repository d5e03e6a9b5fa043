"""Append-only, tamper-evident audit trail: who did what to which room, and when.

Only identifiers, names of actions and counts go in — never media, never what was said or
shown. Entries are hash-chained (signaling.audit_chain) and kept in the SQLite store, so they
survive restarts and ``consilium audit verify`` can find any edited, removed or moved entry.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from signaling.audit_chain import VerifyResult, verify
from signaling.storage import AuditRepository

log = logging.getLogger("consilium.audit")


def iso_time(seconds: float) -> str:
    """UTC with milliseconds: ordered text that reads the same everywhere."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{int(seconds * 1000) % 1000:03d}Z"


class AuditLog:
    def __init__(self, store: AuditRepository, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def record(self, event: str, room: str, actor: str, **details: Any) -> None:
        """Append one event. A failing store is logged, never raised into the call."""
        try:
            self.store.append(iso_time(self._clock()), event, room, actor, details)
        except Exception:
            log.exception("could not write audit event %s for room %s", event, room)

    def entries(self, room: str | None = None) -> list[dict[str, Any]]:
        """Everything recorded so far, details flattened in (for tests and the operator)."""
        return [
            {**e.details, **e.as_dict()}
            for e in self.store.iter_all()
            if room is None or e.room == room
        ]

    def verify(self) -> VerifyResult:
        return verify(self.store.iter_all())
