"""Room chat: limits, validation, read receipts and burn-after-reading decisions.

Pure: no I/O. The signaling shell (signaling.chat_service) parses nothing and decides nothing
itself; it stores what this module accepts and burns what :func:`due_burns` names. Times are
server unix milliseconds (``sentAt`` and ``expiresAt`` outlive the process, unlike the
monotonic media clock), always passed in as ``now_ms``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

MAX_TEXT_CHARS: Final = 4000
MAX_ATTACHMENTS: Final = 10
MAX_MENTIONS: Final = 20
MAX_CLIENT_ID_CHARS: Final = 64
MAX_ID_CHARS: Final = 64  # participant ids (signaling.auth) and file ids
DEFAULT_BURN_TTL_S: Final = 600
MAX_BURN_TTL_S: Final = 7 * 24 * 3600
HISTORY_PAGE: Final = 200

BurnReason = Literal["read", "expired"]


class ChatRejected(ValueError):
    """A chat message broke a rule; ``code`` is a signaling error code."""

    def __init__(self, code: Literal["bad-field", "too-large"], message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: Literal["bad-field", "too-large"] = code
        self.message = message


class AlreadyBurned(Exception):
    """A resend of a burn-after-reading message that was burned since: not posted again."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"message {seq} was already sent and burned")
        self.seq = seq


class FileLookup(Protocol):
    """Where attachment ids are resolved: a shared file of the room, or None."""

    def get(self, room: str, file_id: str) -> dict[str, Any] | None: ...

    def absent(self, room: str, file_ids: Collection[str]) -> set[str]:
        """The ids among these that name no file of the room (any more: deleted)."""
        ...


class NoFiles:
    """A lookup that knows no files: every attachment is refused."""

    def get(self, room: str, file_id: str) -> dict[str, Any] | None:
        return None

    def absent(self, room: str, file_ids: Collection[str]) -> set[str]:
        return set(file_ids)


# -- validation -----------------------------------------------------------------------------


# Unicode categories Cc (C0, DEL, C1: fixed forever by Unicode's stability policy) and Cs
# (surrogates). One regex scan instead of a category look-up per character: a 4000-character
# message was checked in ~0.3 ms, more than the rest of storing and broadcasting it.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# The same without tab, line feed and carriage return: part of writing, allowed in text.
_CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(value: str) -> bool:
    """Any character of category Cc or Cs (control characters, lone surrogates)."""
    return _CONTROL.search(value) is not None


def normalise_text(text: str, *, has_attachments: bool) -> str:
    """The text as stored: trimmed; empty only when files are attached."""
    trimmed = text.strip()
    if len(trimmed) > MAX_TEXT_CHARS:
        raise ChatRejected(
            "too-large",
            f"a chat message may have at most {MAX_TEXT_CHARS} characters "
            f"(this one has {len(trimmed)}); split it or share it as a file",
        )
    if not trimmed and not has_attachments:
        raise ChatRejected("bad-field", "a chat message needs text or an attachment")
    # Line breaks and tabs are part of writing; other control characters only garble a view.
    if _CONTROL_IN_TEXT.search(trimmed) is not None:
        raise ChatRejected("bad-field", "field 'text' contains control characters")
    return trimmed


def check_client_id(client_id: str) -> str:
    if not 1 <= len(client_id) <= MAX_CLIENT_ID_CHARS:
        raise ChatRejected(
            "bad-field", f"field 'clientId' must have 1..{MAX_CLIENT_ID_CHARS} chars"
        )
    if has_control(client_id):
        raise ChatRejected("bad-field", "field 'clientId' contains control characters")
    return client_id


def is_well_formed_id(value: str) -> bool:
    """Shaped like a participant or file id: 1..64 chars, no controls, no outer whitespace."""
    return 1 <= len(value) <= MAX_ID_CHARS and value == value.strip() and not has_control(value)


def _dedupe(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def normalise_mentions(ids: Sequence[str]) -> tuple[str, ...]:
    """Distinct, well-formed participant ids in the order given; malformed ones are dropped."""
    mentions = _dedupe(i for i in ids if is_well_formed_id(i))
    if len(mentions) > MAX_MENTIONS:
        raise ChatRejected("bad-field", f"at most {MAX_MENTIONS} participants may be mentioned")
    return mentions


def normalise_attachments(ids: Sequence[str]) -> tuple[str, ...]:
    """Distinct file ids in the order given; a malformed one is an error (it names no file)."""
    for file_id in ids:
        if not is_well_formed_id(file_id):
            raise ChatRejected("bad-field", "field 'attachments' holds a malformed file id")
    attachments = _dedupe(ids)
    if len(attachments) > MAX_ATTACHMENTS:
        raise ChatRejected("bad-field", f"at most {MAX_ATTACHMENTS} files may be attached")
    return attachments


def burn_ttl_s(ttl_s: int | None) -> int:
    if ttl_s is None:
        return DEFAULT_BURN_TTL_S
    if not 1 <= ttl_s <= MAX_BURN_TTL_S:
        raise ChatRejected("bad-field", f"field 'ttlSeconds' must be 1..{MAX_BURN_TTL_S}")
    return ttl_s


# -- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Author:
    id: str
    name: str
    role: str

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class ChatDraft:
    """A message accepted for storing; the store gives it a seq and the server time."""

    id: str
    room: str
    sender: Author
    client_id: str
    text: str
    mentions: tuple[str, ...] = ()
    attachments: tuple[dict[str, Any], ...] = ()  # FileInfo objects, as the lookup gave them
    burn_ttl_s: int | None = None  # None: an ordinary message
    recipients: frozenset[str] = field(default_factory=frozenset)  # burn-after-reading only


@dataclass(frozen=True, slots=True)
class ChatMessage:
    id: str
    room: str
    seq: int
    sender: Author
    client_id: str
    text: str
    sent_ms: int
    mentions: tuple[str, ...] = ()
    attachments: tuple[dict[str, Any], ...] = ()
    burn_expires_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        """The protocol's Message object."""
        return {
            "id": self.id,
            "seq": self.seq,
            "from": self.sender.as_dict(),
            "text": self.text,
            "sentAt": self.sent_ms,
            "mentions": list(self.mentions),
            "attachments": list(self.attachments),
            "clientId": self.client_id,
            "burn": (
                None
                if self.burn_expires_ms is None
                else {"afterReading": True, "expiresAt": self.burn_expires_ms}
            ),
        }


def attachment_ids(wires: Iterable[Mapping[str, Any]]) -> set[str]:
    """The file ids attached to these wire messages."""
    return {a["id"] for w in wires for a in w["attachments"] if isinstance(a.get("id"), str)}


def mark_removed(wire: dict[str, Any], gone: Collection[str]) -> dict[str, Any]:
    """The wire message with attachments of deleted files flagged ``removed: true``.

    The entry stays (the message said it attached a file) so the page can show it as removed.
    """
    if not any(a.get("id") in gone for a in wire["attachments"]):
        return wire
    attachments = [
        {**a, "removed": True} if a.get("id") in gone else a for a in wire["attachments"]
    ]
    return {**wire, "attachments": attachments}


def next_sent_ms(now_ms: int, last_sent_ms: int) -> int:
    """Server time of the next message in a room: never before the previous one.

    The wall clock can step back (NTP); the room's order must not appear to.
    """
    return max(now_ms, last_sent_ms)


def burn_expiry_ms(sent_ms: int, ttl_s: int | None) -> int | None:
    return None if ttl_s is None else sent_ms + ttl_s * 1000


def burn_recipients(sender: str, present: Iterable[str]) -> frozenset[str]:
    """Who must read a burn-after-reading message: everyone in the room but the sender."""
    return frozenset(p for p in present if p != sender)


# -- receipts -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Receipt:
    """A participant's watermarks: every message up to ``delivered`` / ``read`` arrived / seen."""

    participant_id: str
    delivered: int = 0
    read: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "participantId": self.participant_id,
            "delivered": self.delivered,
            "read": self.read,
        }


@dataclass(frozen=True, slots=True)
class ReceiptUpdate:
    receipt: Receipt
    previous: Receipt
    newly_read: int  # messages of others between the old and the new read watermark


def advance_receipt(
    current: Receipt, delivered: int | None, read: int | None, last_seq: int
) -> Receipt | None:
    """The receipt after a client's report, or None when nothing moved forward.

    Watermarks only rise (a late or repeated report is ignored), never pass the room's last
    message (a read mark "ahead" would burn messages nobody has seen yet), and reading a
    message implies having received it.
    """
    new_read = max(current.read, min(read if read is not None else 0, last_seq))
    new_delivered = max(
        current.delivered, min(delivered if delivered is not None else 0, last_seq), new_read
    )
    if new_read == current.read and new_delivered == current.delivered:
        return None
    return Receipt(current.participant_id, new_delivered, new_read)


# -- burn-after-reading ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BurnCandidate:
    id: str
    room: str
    seq: int
    sender: str
    recipients: frozenset[str]
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Burn:
    id: str
    room: str
    seq: int
    sender: str
    reason: BurnReason


def burn_reason(
    candidate: BurnCandidate, read_marks: Mapping[str, int], now_ms: int
) -> BurnReason | None:
    """Why the message must go now, or None while it may stay.

    With nobody to read it (the sender was alone) only the time limit removes it: "all of
    nobody has read it" would burn it the moment it was sent.
    """
    if now_ms >= candidate.expires_ms:
        return "expired"
    if candidate.recipients and all(
        read_marks.get(r, 0) >= candidate.seq for r in candidate.recipients
    ):
        return "read"
    return None


def due_burns(
    candidates: Iterable[BurnCandidate], read_marks: Mapping[str, int], now_ms: int
) -> list[Burn]:
    """The candidates that burn at ``now_ms``; ``read_marks`` are their room's read watermarks."""
    burns: list[Burn] = []
    for c in candidates:
        reason = burn_reason(c, read_marks, now_ms)
        if reason is not None:
            burns.append(Burn(c.id, c.room, c.seq, c.sender, reason))
    return burns
