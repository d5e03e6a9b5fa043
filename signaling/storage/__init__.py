"""Persistence behind small repository interfaces; SQLite is the embedded default.

A networked database can replace it later by implementing the same Protocols.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from signaling.audit_chain import AuditEntry


class AuditRepository(Protocol):
    def append(
        self, time: str, event: str, room: str, actor: str, details: Mapping[str, Any]
    ) -> AuditEntry:
        """Chain and store one entry atomically; returns it with its seq and hash."""
        ...

    def list_room(self, room: str, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """A room's entries with seq > after, oldest first, at most `limit`."""
        ...

    def iter_all(self) -> Iterator[AuditEntry]:
        """Every entry in sequence order (for verification)."""
        ...

    def close(self) -> None: ...
