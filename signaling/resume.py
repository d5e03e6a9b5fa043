"""Signaling session resume: the decisions for a participant whose WebSocket dropped (pure).

A socket that dies without ``leave`` (bad Wi-Fi, a phone changing networks, a late pong) does
not end the participant's session at once: its peer connections keep carrying media for a
grace period, the server keeps what it would have sent, and a ``join`` that presents the
session's resume token re-attaches a new socket and gets the kept messages in order.

This module holds only the decisions (which closes keep the session, the grace deadline, the
bounded queue, the token check); the aiohttp shell in ``signaling/ws.py`` applies them.
Time is passed in as ``now_ms``.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_GRACE_MS = 20_000
DEFAULT_MAX_MESSAGES = 1000
DEFAULT_MAX_BYTES = 1024 * 1024
# A resume token longer than this is not one of ours (token_urlsafe(32) gives 43 characters).
MAX_TOKEN_CHARS = 128

# Close codes that end the session at once: the client said goodbye (1000), or it broke the
# protocol (bad frame, unsupported data, policy, oversized frame, missing extension). Anything
# else -- no close frame at all (1006), a heartbeat timeout, going away, a client's own 4000 for
# "this socket went silent" -- looks like the network, and the session waits for a resume.
ENDING_CLOSE_CODES = frozenset({1000, 1002, 1003, 1007, 1008, 1009, 1010})

# Not worth keeping for a client that is away: they are outdated by the time it is back.
EPHEMERAL_TYPES = frozenset({"downlink-stats", "pong"})


def new_resume_token() -> str:
    return secrets.token_urlsafe(32)


def keeps_session(close_code: int | None, grace_ms: int) -> bool:
    """Whether a joined socket that closed with this code enters the grace period."""
    return grace_ms > 0 and close_code not in ENDING_CLOSE_CODES


@dataclass(frozen=True, slots=True)
class ResumeLimits:
    grace_ms: int = DEFAULT_GRACE_MS
    max_messages: int = DEFAULT_MAX_MESSAGES
    max_bytes: int = DEFAULT_MAX_BYTES


class LinkState(StrEnum):
    ATTACHED = "attached"  # a socket carries the session's messages
    DETACHED = "detached"  # no socket: messages are kept until the resume or the deadline
    REPLAYING = "replaying"  # a resumed socket is being sent the kept messages
    CLOSED = "closed"  # the session is over; nothing is kept, no resume


class Route(StrEnum):
    SEND = "send"  # send it on the socket now
    QUEUED = "queued"  # kept for the resume
    SKIPPED = "skipped"  # ephemeral, or the session is over: dropped
    OVERFLOW = "overflow"  # the queue is full: the shell ends the grace period now


class ResumeState(Generic[T]):
    """One session's resume bookkeeping. ``T`` is whatever the shell queues (e.g. JSON text)."""

    def __init__(self, limits: ResumeLimits, token: str | None = None) -> None:
        self.limits = limits
        self.token = token if token is not None else new_resume_token()
        self.state = LinkState.ATTACHED
        self.deadline_ms: int | None = None
        self.detached_at_ms: int | None = None
        self.overflowed = False
        self._queue: deque[tuple[str, T, int]] = deque()
        self._queued_bytes = 0
        self._queued_types: set[str] = set()  # since the socket dropped

    # ------------------------------------------------------------------ queueing

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def queued_since_drop(self, message_type: str) -> bool:
        """A message of this type was kept since the socket dropped (it will be replayed)."""
        return message_type in self._queued_types

    def route(self, message_type: str, item: T, size: int, *, socket_open: bool) -> Route:
        """Where a message for this session goes. ``size`` is its encoded length in bytes.

        ``socket_open`` False while attached: the socket died and the shell has not noticed
        the close yet; the message is kept in case the session is resumed.
        """
        if self.state is LinkState.CLOSED:
            return Route.SKIPPED
        if self.state is LinkState.ATTACHED and socket_open:
            return Route.SEND
        if self.limits.grace_ms <= 0 or self.overflowed or message_type in EPHEMERAL_TYPES:
            return Route.SKIPPED
        if (
            len(self._queue) + 1 > self.limits.max_messages
            or self._queued_bytes + size > self.limits.max_bytes
        ):
            # Too much missed to replay faithfully: a fresh join serves the client better.
            self.overflowed = True
            self._clear()
            return Route.OVERFLOW
        self._queue.append((message_type, item, size))
        self._queued_bytes += size
        self._queued_types.add(message_type)
        return Route.QUEUED

    def _clear(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0

    # ------------------------------------------------------------------ the grace period

    def detach(self, now_ms: int) -> int:
        """The socket is gone: start the grace period (once). Returns its deadline."""
        # From REPLAYING too: dropped again while catching up, what is left is still owed.
        if self.state in (LinkState.ATTACHED, LinkState.REPLAYING):
            self.state = LinkState.DETACHED
            self.detached_at_ms = now_ms
            self.deadline_ms = now_ms + self.limits.grace_ms
        return self.deadline_ms if self.deadline_ms is not None else now_ms

    def expired(self, now_ms: int) -> bool:
        """The grace period is over (deadline passed or the queue overflowed)."""
        if self.state is not LinkState.DETACHED:
            return False
        assert self.deadline_ms is not None
        return self.overflowed or now_ms >= self.deadline_ms

    def may_resume(self, token: str, now_ms: int) -> bool:
        """A join presenting ``token`` may take this session over.

        Also while still attached: a phone's old socket can look alive to the server long
        after the phone gave up on it; the new socket then replaces it.
        """
        if self.state is LinkState.CLOSED or self.overflowed:
            return False
        if self.state is LinkState.DETACHED and self.expired(now_ms):
            return False
        if not token or len(token) > MAX_TOKEN_CHARS:
            return False
        return hmac.compare_digest(token.encode(), self.token.encode())

    def begin_replay(self) -> None:
        """A new socket is attached: replay the kept messages (new ones queue behind them)."""
        self.state = LinkState.REPLAYING
        self.deadline_ms = None
        self.detached_at_ms = None

    def next_to_replay(self) -> T | None:
        """The next kept message, oldest first; None when done (the link is attached again)."""
        if self.state is not LinkState.REPLAYING:
            return None
        if not self._queue:
            self.state = LinkState.ATTACHED
            self._queued_types.clear()
            return None
        _, item, size = self._queue.popleft()
        self._queued_bytes -= size
        return item

    def close(self) -> None:
        """The session is over: forget everything; no resume."""
        self.state = LinkState.CLOSED
        self.deadline_ms = None
        self._clear()
        self._queued_types.clear()
