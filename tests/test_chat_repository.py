"""Room chat in SQLite: per-room seqs, idempotent resends, paging, receipts, burning, restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from signaling.chat import AlreadyBurned, Author, ChatDraft, Receipt
from signaling.storage import ChatRepository
from signaling.storage.chat_sqlite import SqliteChatRepository
from signaling.storage.sqlite import SqliteStore

A = Author("a", "Dr A", "host")
B = Author("b", "Nurse B", "bedside")


def _draft(n: int, sender: Author = A, room: str = "ward", **kw: object) -> ChatDraft:
    fields: dict[str, object] = {
        "id": f"{room}-{sender.id}-{n}",
        "room": room,
        "sender": sender,
        "client_id": f"c{n}",
        "text": f"message {n}",
    }
    fields.update(kw)
    return ChatDraft(**fields)  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path) -> SqliteChatRepository:
    return SqliteChatRepository(SqliteStore.in_dir(tmp_path))


def test_seqs_are_per_room_and_resends_are_idempotent(repo: SqliteChatRepository) -> None:
    typed: ChatRepository = repo  # the SQLite class satisfies the Protocol
    m1, new1 = typed.append(_draft(1), now_ms=1000)
    m2, _ = typed.append(_draft(1, sender=B), now_ms=1001)  # same clientId, other sender
    other, _ = typed.append(_draft(1, room="icu"), now_ms=1002)
    again, new_again = typed.append(_draft(1, id="fresh-id", text="changed"), now_ms=5000)
    assert new1 and not new_again
    assert (m1.seq, m2.seq, other.seq) == (1, 2, 1)
    assert again == m1  # the stored message, not the resend's new id or text
    assert typed.last_seq("ward") == 2 and typed.last_seq("nowhere") == 0


def test_server_time_never_goes_back_within_a_room(repo: SqliteChatRepository) -> None:
    first, _ = repo.append(_draft(1), now_ms=5000)
    second, _ = repo.append(_draft(2), now_ms=4000)  # clock stepped back
    assert (first.sent_ms, second.sent_ms) == (5000, 5000)


def test_paging_and_stored_fields(repo: SqliteChatRepository) -> None:
    file_info = {"id": "f1", "name": "ct.zip", "size": 10}
    repo.append(_draft(0, mentions=("b", "c"), attachments=(file_info,)), now_ms=1)
    for n in range(1, 7):
        repo.append(_draft(n), now_ms=1 + n)
    page, more = repo.page("ward", after=0, limit=3)
    assert [m.seq for m in page] == [1, 2, 3] and more
    assert page[0].mentions == ("b", "c") and page[0].attachments == (file_info,)
    assert page[0].sender == A and page[0].text == "message 0"
    page, more = repo.page("ward", after=3, limit=4)
    assert [m.seq for m in page] == [4, 5, 6, 7] and not more
    assert repo.page("ward", after=7, limit=4) == ([], False)


def test_receipts_rise_and_count_what_was_newly_read(repo: SqliteChatRepository) -> None:
    for n in range(1, 4):
        repo.append(_draft(n), now_ms=n)
    repo.append(_draft(4, sender=B), now_ms=4)
    update = repo.update_receipt("ward", "b", delivered=4, read=None)
    assert update is not None and update.receipt == Receipt("b", 4, 0) and update.newly_read == 0
    update = repo.update_receipt("ward", "b", delivered=None, read=4)
    # B's own message 4 is not counted as read by B.
    assert update is not None and update.receipt == Receipt("b", 4, 4) and update.newly_read == 3
    assert update.previous == Receipt("b", 4, 0)
    assert repo.update_receipt("ward", "b", delivered=2, read=1) is None
    assert repo.update_receipt("ward", "b", delivered=None, read=50) is None  # held at seq 4
    assert repo.receipts("ward") == [Receipt("b", 4, 4)]
    assert repo.read_marks("ward") == {"b": 4}


def test_burn_candidates_and_burning(repo: SqliteChatRepository) -> None:
    repo.append(_draft(1), now_ms=1000)
    burner, _ = repo.append(_draft(2, burn_ttl_s=10, recipients=frozenset({"b", "c"})), now_ms=2000)
    assert burner.burn_expires_ms == 12_000
    [pending] = repo.pending_burns("ward", "b", after=0, up_to=2, limit=10)
    assert pending.recipients == {"b", "c"} and pending.sender == "a" and pending.seq == 2
    assert repo.pending_burns("ward", "b", after=0, up_to=1, limit=10) == []
    assert repo.pending_burns("ward", "b", after=2, up_to=5, limit=10) == []
    assert repo.pending_burns("ward", "a", after=0, up_to=2, limit=10) == []  # the sender
    assert repo.expired_burns(now_ms=11_999, limit=10) == []
    assert [c.id for c in repo.expired_burns(now_ms=12_000, limit=10)] == [burner.id]
    assert repo.burn([burner.id, "unknown"]) == [burner.id]
    assert repo.burn([burner.id]) == []
    assert [m.seq for m in repo.page("ward", 0, 10)[0]] == [1]
    assert repo.pending_burns("ward", "b", after=0, up_to=9, limit=10) == []
    # The seq is not reused: the next message is 3, the gap marks the burned one.
    assert repo.append(_draft(3), now_ms=3000)[0].seq == 3


def test_a_burned_message_leaves_a_content_free_tombstone(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    repo = SqliteChatRepository(store)
    burner, _ = repo.append(_draft(1, burn_ttl_s=10), now_ms=1000)
    assert repo.append(_draft(1, burn_ttl_s=10), now_ms=1500) == (burner, False)
    assert repo.burn([burner.id]) == [burner.id]
    # The same (room, sender, clientId) again: refused, not posted as a new message.
    with pytest.raises(AlreadyBurned) as refused:
        repo.append(_draft(1, burn_ttl_s=10), now_ms=2000)
    assert refused.value.seq == 1
    assert repo.page("ward", 0, 10) == ([], False)
    # Another room, or a new clientId, is a new message; the tombstone holds only keys.
    assert repo.append(_draft(1, room="icu"), now_ms=2000)[1] is True
    assert repo.append(_draft(2), now_ms=2000)[0].seq == 2
    with store.reading() as conn:
        (tomb,) = conn.execute("SELECT room, sender, client_id, seq FROM chat_burned").fetchall()
    assert tomb == ("ward", "a", "c1", 1)
    store.close()
    # A restart remembers it too.
    with pytest.raises(AlreadyBurned):
        SqliteChatRepository(SqliteStore.in_dir(tmp_path)).append(_draft(1), now_ms=3000)


def test_chat_survives_a_restart(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    repo = SqliteChatRepository(store)
    repo.append(_draft(1), now_ms=1)
    repo.update_receipt("ward", "b", delivered=1, read=1)
    store.close()
    reopened = SqliteChatRepository(SqliteStore.in_dir(tmp_path))
    assert [m.text for m in reopened.page("ward", 0, 10)[0]] == ["message 1"]
    assert reopened.receipts("ward") == [Receipt("b", 1, 1)]
    assert reopened.append(_draft(2), now_ms=2)[0].seq == 2


def test_burned_text_leaves_no_bytes_in_the_files(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    repo = SqliteChatRepository(store)
    marker = "MARKER-7c1e9f-secret-diagnosis"
    # Long enough to spill into overflow pages as well.
    text = f"{marker} " + "lorem ipsum " * 600 + marker
    repo.append(_draft(1), now_ms=1)
    burner, _ = repo.append(_draft(2, text=text, burn_ttl_s=60), now_ms=2)
    repo.append(_draft(3), now_ms=3)

    def on_disk() -> bytes:
        return b"".join(
            p.read_bytes()
            for p in (tmp_path / "consilium.db", tmp_path / "consilium.db-wal")
            if p.exists()
        )

    assert marker.encode() in on_disk()
    repo.burn([burner.id])
    assert marker.encode() not in on_disk()
    assert [m.seq for m in repo.page("ward", 0, 10)[0]] == [1, 3]


def test_a_blocked_checkpoint_is_retried_by_the_next_sweep(tmp_path: Path) -> None:
    store = SqliteStore.in_dir(tmp_path)
    repo = SqliteChatRepository(store)
    marker = "MARKER-a41d-blocked-checkpoint"
    repo.append(_draft(1), now_ms=1)
    burner, _ = repo.append(_draft(2, text=marker, burn_ttl_s=60), now_ms=2)
    wal = tmp_path / "consilium.db-wal"
    # Another process holds a read snapshot that still contains the message.
    reader = sqlite3.connect(tmp_path / "consilium.db", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM chat_message").fetchone()[0] == 2
    assert repo.burn([burner.id]) == [burner.id]
    assert marker.encode() in wal.read_bytes()  # could not be truncated yet
    reader.execute("COMMIT")
    reader.close()
    assert repo.expired_burns(now_ms=0, limit=10) == []
    on_disk = (tmp_path / "consilium.db").read_bytes() + wal.read_bytes()
    assert marker.encode() not in on_disk
