"""Tamper-evident audit chain: each entry's hash covers the previous entry's hash.

Pure: no I/O. The store keeps entries with their hashes; `verify` recomputes the chain in
sequence order and names the first entry that does not fit (edited, removed, inserted or
moved). Cutting entries off the end is not detectable from the chain alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The hash that the first entry chains from.
GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str
    event: str
    room: str
    actor: str
    details: Mapping[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS_HASH
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "time": self.time,
            "event": self.event,
            "room": self.room,
            "actor": self.actor,
            "details": dict(self.details),
            "hash": self.hash,
        }


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""


def canonical(
    seq: int, time: str, event: str, room: str, actor: str, details: Mapping[str, Any]
) -> str:
    """One fixed text per entry: sorted keys, no spaces, non-JSON values as strings."""
    body = {
        "seq": seq,
        "time": time,
        "event": event,
        "room": room,
        "actor": actor,
        "details": details,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def canonical_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details as they will read back from JSON, so the hash survives a store round trip."""
    loaded: dict[str, Any] = json.loads(json.dumps(dict(details), default=str))
    return loaded


def chain_hash(prev_hash: str, canonical_text: str) -> str:
    return hashlib.sha256((prev_hash + canonical_text).encode("utf-8")).hexdigest()


def next_entry(
    prev: AuditEntry | None,
    time: str,
    event: str,
    room: str,
    actor: str,
    details: Mapping[str, Any],
) -> AuditEntry:
    """The entry that follows `prev` (None: the first entry)."""
    seq = 1 if prev is None else prev.seq + 1
    prev_hash = GENESIS_HASH if prev is None else prev.hash
    clean = canonical_details(details)
    digest = chain_hash(prev_hash, canonical(seq, time, event, room, actor, clean))
    return AuditEntry(seq, time, event, room, actor, clean, prev_hash, digest)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A (seq, hash) pair of the chain kept outside the database, e.g. printed daily to a ticket.

    The chain alone cannot tell a trail cut short from one that simply ended there; an anchor
    taken earlier can: the entry it names must still be there with the same hash.
    """

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        seq_text, sep, digest = text.strip().partition(":")
        if not sep or not seq_text.isdigit() or int(seq_text) < 1:
            raise ValueError("an anchor is SEQ:HASH, e.g. 1042:9f86d0...")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("the anchor's hash must be 64 lowercase hex digits")
        return cls(int(seq_text), digest)

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


def verify(entries: Iterable[AuditEntry], anchor: Anchor | None = None) -> VerifyResult:
    """Walk the entries in the order given (the store's sequence order)."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    for entry in entries:
        if entry.seq != expected_seq:
            if entry.seq > expected_seq:
                reason = f"entry {expected_seq} is missing (next stored entry is {entry.seq})"
            else:
                reason = f"entry {entry.seq} is out of order (expected {expected_seq})"
            return VerifyResult(False, count, expected_seq, reason)
        if entry.prev_hash != prev_hash:
            return VerifyResult(
                False, count, entry.seq, "previous-hash link does not match the entry before"
            )
        text = canonical(entry.seq, entry.time, entry.event, entry.room, entry.actor, entry.details)
        if chain_hash(prev_hash, text) != entry.hash:
            return VerifyResult(False, count, entry.seq, "content does not match its hash")
        if anchor is not None and entry.seq == anchor.seq and entry.hash != anchor.hash:
            return VerifyResult(False, count, entry.seq, "hash differs from the anchor's")
        prev_hash = entry.hash
        expected_seq += 1
        count += 1
    if anchor is not None and anchor.seq >= expected_seq:
        return VerifyResult(
            False,
            count,
            expected_seq,
            f"entries {expected_seq}..{anchor.seq} are missing (the anchor names entry "
            f"{anchor.seq}; the trail was cut short)",
        )
    return VerifyResult(True, count)
