"""The pure hash chain: every kind of tampering is found, at the entry where it happened."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from signaling.audit_chain import GENESIS_HASH, AuditEntry, canonical, next_entry, verify


def _chain(n: int) -> list[AuditEntry]:
    entries: list[AuditEntry] = []
    for i in range(n):
        prev = entries[-1] if entries else None
        entries.append(
            next_entry(
                prev,
                f"2026-01-01T00:00:0{i}.000Z",
                "participant-joined",
                "r1",
                f"u{i}",
                {"role": "specialist", "n": i},
            )
        )
    return entries


def _edit(entries: list[AuditEntry]) -> list[AuditEntry]:
    out = list(entries)
    out[2] = dataclasses.replace(out[2], details={"role": "host", "n": 2})
    return out


def _edit_actor(entries: list[AuditEntry]) -> list[AuditEntry]:
    out = list(entries)
    out[2] = dataclasses.replace(out[2], actor="someone-else")
    return out


def _remove(entries: list[AuditEntry]) -> list[AuditEntry]:
    return entries[:2] + entries[3:]


def _swap(entries: list[AuditEntry]) -> list[AuditEntry]:
    out = list(entries)
    out[2], out[3] = out[3], out[2]
    return out


def _swap_keep_seq(entries: list[AuditEntry]) -> list[AuditEntry]:
    # Rows moved but their seq numbers rewritten to look in order.
    a, b = entries[2], entries[3]
    out = list(entries)
    out[2] = dataclasses.replace(b, seq=3)
    out[3] = dataclasses.replace(a, seq=4)
    return out


def _insert(entries: list[AuditEntry]) -> list[AuditEntry]:
    # A forged entry chained properly onto entry 2, later entries renumbered.
    forged = next_entry(entries[1], "2026-01-01T00:00:09.000Z", "participant-left", "r1", "x", {})
    renumbered = [dataclasses.replace(e, seq=e.seq + 1) for e in entries[2:]]
    return entries[:2] + [forged] + renumbered


def _rehash_one(entries: list[AuditEntry]) -> list[AuditEntry]:
    # An edit whose own hash is recomputed still breaks the link to the next entry.
    out = list(entries)
    edited = next_entry(out[1], out[2].time, out[2].event, out[2].room, "forger", out[2].details)
    out[2] = edited
    return out


CASES: list[tuple[str, Callable[[list[AuditEntry]], list[AuditEntry]], int]] = [
    ("edited details", _edit, 3),
    ("edited actor", _edit_actor, 3),
    ("removed", _remove, 3),
    ("swapped", _swap, 3),
    ("swapped, seq rewritten", _swap_keep_seq, 3),
    ("inserted", _insert, 4),
    ("edited and rehashed", _rehash_one, 4),
]


def test_intact_chain_verifies() -> None:
    entries = _chain(6)
    assert entries[0].seq == 1 and entries[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(entries, entries[1:], strict=False))
    result = verify(entries)
    assert result.ok and result.count == 6 and result.first_bad_seq is None


def test_empty_chain_is_ok() -> None:
    assert verify([]).ok and verify([]).count == 0


@pytest.mark.parametrize(("name", "tamper", "bad_seq"), CASES, ids=[c[0] for c in CASES])
def test_tampering_is_found_at_the_entry(
    name: str, tamper: Callable[[list[AuditEntry]], list[AuditEntry]], bad_seq: int
) -> None:
    result = verify(tamper(_chain(6)))
    assert not result.ok, name
    assert result.first_bad_seq == bad_seq, (name, result)
    assert result.count == bad_seq - 1
    assert result.reason


def test_canonical_form_is_stable() -> None:
    a = canonical(1, "t", "e", "r", "a", {"b": 1, "a": [1, 2]})
    b = canonical(1, "t", "e", "r", "a", {"a": [1, 2], "b": 1})
    assert a == b and " " not in a


def test_details_normalised_before_hashing() -> None:
    # A tuple would read back from JSON as a list; the entry stores the JSON form so a store
    # round trip does not change the hash.
    entry = next_entry(None, "t", "e", "r", "a", {"files": ("x", "y")})
    assert entry.details == {"files": ["x", "y"]}
    assert verify([entry]).ok
