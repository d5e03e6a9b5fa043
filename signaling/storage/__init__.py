"""Persistence behind small repository interfaces; SQLite is the embedded default.

A networked database can replace it later by implementing the same Protocols.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from signaling.audit_chain import AuditEntry
from signaling.chat import BurnCandidate, ChatDraft, ChatMessage, Receipt, ReceiptUpdate


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


class ChatRepository(Protocol):
    """Room chat: messages in per-room order, read receipts, burn-after-reading."""

    def append(self, draft: ChatDraft, now_ms: int) -> tuple[ChatMessage, bool]:
        """Store with the room's next seq in one transaction; a resend of the same
        (room, sender, clientId) returns the stored message and False."""
        ...

    def page(self, room: str, after: int, limit: int) -> tuple[list[ChatMessage], bool]:
        """Messages with seq > after, oldest first, at most `limit`; True if more follow."""
        ...

    def last_seq(self, room: str) -> int: ...

    def receipts(self, room: str) -> list[Receipt]: ...

    def update_receipt(
        self, room: str, identity: str, delivered: int | None, read: int | None
    ) -> ReceiptUpdate | None:
        """Raise the participant's watermarks; None when nothing moved."""
        ...

    def read_marks(self, room: str) -> dict[str, int]: ...

    def pending_burns(
        self, room: str, reader: str, after: int, up_to: int, limit: int
    ) -> list[BurnCandidate]:
        """Burn-after-reading messages with after < seq <= up_to that `reader` must read."""
        ...

    def expired_burns(self, now_ms: int, limit: int) -> list[BurnCandidate]: ...

    def burn(self, ids: Sequence[str]) -> list[str]:
        """Delete the messages so that no trace of their content stays in storage."""
        ...


class FileRepository(Protocol):
    """Files shared in rooms (signaling.storage.files_sqlite is the SQLite implementation)."""

    def get(self, room: str, file_id: str) -> dict[str, Any] | None:
        """The FileInfo dict of a file shared in that room; None for an unknown id."""
        ...

    def list_room(self, room: str) -> list[dict[str, Any]]:
        """The room's FileInfo dicts, newest last."""
        ...
