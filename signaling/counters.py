"""Operator counters of the signaling services: chat, shared files and session resume.

The services call one method when something happens (a message sent, an upload finished, a
session resumed); ``signaling.metrics`` reads the totals when Prometheus scrapes. Plain ints
on the event loop's thread: no locks, nothing on the hot path but an addition. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Final

# Label values exported even while still 0, so dashboards and alerts see every series at once.
BURN_REASONS: Final = ("read", "expired")
# The error codes a refused chat-send gets (signaling/messages.py, signaling/chat_service.py).
CHAT_REFUSAL_REASONS: Final = ("forbidden", "too-large", "bad-field")
DOWNLOAD_KINDS: Final = ("download", "view")
RESUME_EXPIRY_REASONS: Final = ("timeout", "overflow")


@dataclass
class ServiceCounters:
    chat_sent: int = 0
    chat_burned: Counter[str] = field(default_factory=Counter)  # by reason
    chat_refused: Counter[str] = field(default_factory=Counter)  # by error code
    uploads_completed: Counter[bool] = field(default_factory=Counter)  # by instant
    tus_received_bytes: int = 0
    downloads: Counter[str] = field(default_factory=Counter)  # download / view
    files_deleted: int = 0
    sessions_resumed: int = 0
    resume_expired: Counter[str] = field(default_factory=Counter)  # timeout / overflow

    # -- chat

    def message_sent(self) -> None:
        self.chat_sent += 1

    def message_burned(self, reason: str) -> None:
        self.chat_burned[reason] += 1

    def chat_refusal(self, code: str) -> None:
        self.chat_refused[code] += 1

    # -- files

    def upload_completed(self, *, instant: bool) -> None:
        self.uploads_completed[instant] += 1

    def tus_received(self, size: int) -> None:
        self.tus_received_bytes += max(0, size)

    def download(self, *, inline: bool) -> None:
        self.downloads["view" if inline else "download"] += 1

    def file_deleted(self) -> None:
        self.files_deleted += 1

    # -- signaling sessions

    def session_resumed(self) -> None:
        self.sessions_resumed += 1

    def resume_grace_expired(self, *, overflow: bool) -> None:
        self.resume_expired["overflow" if overflow else "timeout"] += 1


def with_known(counts: Counter[str], known: tuple[str, ...]) -> list[tuple[str, int]]:
    """The counts per label value: every known value (0 if none yet), then any others."""
    return [(k, counts.get(k, 0)) for k in known] + sorted(
        (k, v) for k, v in counts.items() if k not in known
    )
