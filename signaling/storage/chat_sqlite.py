"""Room chat in the SQLite store: messages with per-room seqs, receipts, burn-after-reading.

Calls are synchronous; the signaling shell runs the ones that page or scan in a thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from signaling.chat import (
    AlreadyBurned,
    Author,
    BurnCandidate,
    ChatDraft,
    ChatMessage,
    Receipt,
    ReceiptUpdate,
    advance_receipt,
    burn_expiry_ms,
    next_sent_ms,
)
from signaling.storage.sqlite import SqliteStore

log = logging.getLogger("consilium.chat")

_COLUMNS = (
    "id, room, seq, sender, sender_name, sender_role, client_id, body, sent_ms, "
    "mentions, attachments, burn_expires_ms"
)


def _row_message(row: tuple[Any, ...]) -> ChatMessage:
    (id_, room, seq, sender, name, role, client_id, body, sent_ms, mentions, attachments, burn) = (
        row
    )
    return ChatMessage(
        id=id_,
        room=room,
        seq=seq,
        sender=Author(sender, name, role),
        client_id=client_id,
        text=body,
        sent_ms=sent_ms,
        mentions=tuple(json.loads(mentions)),
        attachments=tuple(json.loads(attachments)),
        burn_expires_ms=burn,
    )


class SqliteChatRepository:
    """:class:`signaling.storage.ChatRepository` on a :class:`SqliteStore`."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        # A checkpoint another process's reader blocked: retried on the next sweep.
        self._wal_dirty = False

    # -- messages ---------------------------------------------------------------------------

    def append(self, draft: ChatDraft, now_ms: int) -> tuple[ChatMessage, bool]:
        """Store the draft with the room's next seq; (message, True).

        A draft whose (room, sender, clientId) is already stored is a resend: the stored
        message comes back with False and nothing is written. A resend of one that was
        burned since raises :class:`AlreadyBurned` (its tombstone remembers it).
        """
        key = (draft.room, draft.sender.id, draft.client_id)
        with self.store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM chat_message "
                "WHERE room = ? AND sender = ? AND client_id = ?",
                key,
            ).fetchone()
            if row is not None:
                return _row_message(row), False
            tomb = conn.execute(
                "SELECT seq FROM chat_burned WHERE room = ? AND sender = ? AND client_id = ?", key
            ).fetchone()
            if tomb is not None:
                raise AlreadyBurned(int(tomb[0]))
            last = conn.execute(
                "SELECT last_seq, last_sent_ms FROM chat_room WHERE room = ?", (draft.room,)
            ).fetchone()
            last_seq, last_sent_ms = last if last is not None else (0, 0)
            sent_ms = next_sent_ms(now_ms, last_sent_ms)
            burn_ms = burn_expiry_ms(sent_ms, draft.burn_ttl_s)
            message = ChatMessage(
                id=draft.id,
                room=draft.room,
                seq=last_seq + 1,
                sender=draft.sender,
                client_id=draft.client_id,
                text=draft.text,
                sent_ms=sent_ms,
                mentions=draft.mentions,
                attachments=draft.attachments,
                burn_expires_ms=burn_ms,
            )
            conn.execute(
                "INSERT INTO chat_room (room, last_seq, last_sent_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (room) DO UPDATE SET "
                "last_seq = excluded.last_seq, last_sent_ms = excluded.last_sent_ms",
                (draft.room, message.seq, sent_ms),
            )
            conn.execute(
                f"INSERT INTO chat_message ({_COLUMNS}) VALUES ({', '.join('?' * 12)})",
                (
                    message.id,
                    message.room,
                    message.seq,
                    message.sender.id,
                    message.sender.name,
                    message.sender.role,
                    message.client_id,
                    message.text,
                    sent_ms,
                    json.dumps(list(message.mentions)),
                    json.dumps(list(message.attachments)),
                    burn_ms,
                ),
            )
            if burn_ms is not None:
                conn.executemany(
                    "INSERT INTO chat_burn_recipient (message_id, identity) VALUES (?, ?)",
                    [(message.id, r) for r in sorted(draft.recipients)],
                )
            return message, True

    def page(self, room: str, after: int, limit: int) -> tuple[list[ChatMessage], bool]:
        """Messages with seq > after, oldest first, at most ``limit``; True if more follow."""
        with self.store.reading() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM chat_message WHERE room = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (room, after, limit + 1),
            ).fetchall()
        return [_row_message(r) for r in rows[:limit]], len(rows) > limit

    def last_seq(self, room: str) -> int:
        with self.store.reading() as conn:
            row = conn.execute("SELECT last_seq FROM chat_room WHERE room = ?", (room,)).fetchone()
        return 0 if row is None else int(row[0])

    # -- receipts ---------------------------------------------------------------------------

    def receipts(self, room: str) -> list[Receipt]:
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT identity, delivered, read FROM chat_receipt WHERE room = ? "
                "ORDER BY identity",
                (room,),
            ).fetchall()
        return [Receipt(*r) for r in rows]

    def update_receipt(
        self, room: str, identity: str, delivered: int | None, read: int | None
    ) -> ReceiptUpdate | None:
        """Advance the watermarks (signaling.chat.advance_receipt); None if nothing moved."""
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT delivered, read FROM chat_receipt WHERE room = ? AND identity = ?",
                (room, identity),
            ).fetchone()
            current = Receipt(identity, *row) if row is not None else Receipt(identity)
            last = conn.execute("SELECT last_seq FROM chat_room WHERE room = ?", (room,)).fetchone()
            updated = advance_receipt(current, delivered, read, 0 if last is None else last[0])
            if updated is None:
                return None
            conn.execute(
                "INSERT INTO chat_receipt (room, identity, delivered, read) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (room, identity) DO UPDATE SET "
                "delivered = excluded.delivered, read = excluded.read",
                (room, identity, updated.delivered, updated.read),
            )
            newly_read = 0
            if updated.read > current.read:
                newly_read = conn.execute(
                    "SELECT COUNT(*) FROM chat_message "
                    "WHERE room = ? AND seq > ? AND seq <= ? AND sender != ?",
                    (room, current.read, updated.read, identity),
                ).fetchone()[0]
            return ReceiptUpdate(updated, current, newly_read)

    def read_marks(self, room: str) -> dict[str, int]:
        with self.store.reading() as conn:
            rows = conn.execute(
                "SELECT identity, read FROM chat_receipt WHERE room = ?", (room,)
            ).fetchall()
        return {identity: read for identity, read in rows}

    # -- burn-after-reading -----------------------------------------------------------------

    def _candidates(
        self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]
    ) -> list[BurnCandidate]:
        rows = conn.execute(
            "SELECT id, room, seq, sender, burn_expires_ms FROM chat_message "
            f"WHERE burn_expires_ms IS NOT NULL AND {where}",
            args,
        ).fetchall()
        candidates = []
        for id_, room, seq, sender, expires in rows:
            recipients = conn.execute(
                "SELECT identity FROM chat_burn_recipient WHERE message_id = ?", (id_,)
            ).fetchall()
            candidates.append(
                BurnCandidate(id_, room, seq, sender, frozenset(r[0] for r in recipients), expires)
            )
        return candidates

    def pending_burns(
        self, room: str, reader: str, after: int, up_to: int, limit: int
    ) -> list[BurnCandidate]:
        """The room's burn-after-reading messages with after < seq <= up_to that ``reader``
        must read, oldest first: the ones a read receipt from them may complete."""
        with self.store.reading() as conn:
            return self._candidates(
                conn,
                "room = ? AND seq > ? AND seq <= ? AND id IN "
                "(SELECT message_id FROM chat_burn_recipient WHERE identity = ?) "
                "ORDER BY seq LIMIT ?",
                (room, after, up_to, reader, limit),
            )

    def expired_burns(self, now_ms: int, limit: int) -> list[BurnCandidate]:
        """Burn-after-reading messages of any room whose time is up, soonest expiry first."""
        if self._wal_dirty:
            self._checkpoint()
        with self.store.reading() as conn:
            return self._candidates(
                conn, "burn_expires_ms <= ? ORDER BY burn_expires_ms LIMIT ?", (now_ms, limit)
            )

    def burn(self, ids: Sequence[str]) -> list[str]:
        """Delete the messages and their recipient lists; returns the ids that were there.

        Each leaves a tombstone without content (room, sender, clientId, seq, when) so a
        resend cannot post it again. The store runs with secure_delete, so freed pages are
        zeroed; the WAL still holds the pages as they were written, so it is checkpointed
        into the database and truncated.
        """
        if not ids:
            return []
        burned_ms = int(time.time() * 1000)
        with self.store.transaction() as conn:
            burned = []
            for id_ in ids:
                key = conn.execute(
                    "SELECT room, sender, client_id, seq FROM chat_message WHERE id = ?", (id_,)
                ).fetchone()
                if key is not None:
                    conn.execute(
                        "INSERT OR IGNORE INTO chat_burned"
                        " (room, sender, client_id, seq, burned_ms) VALUES (?, ?, ?, ?, ?)",
                        (*key, burned_ms),
                    )
                    conn.execute("DELETE FROM chat_message WHERE id = ?", (id_,))
                    burned.append(id_)
                conn.execute("DELETE FROM chat_burn_recipient WHERE message_id = ?", (id_,))
        if burned:
            self._checkpoint()
        return burned

    def _checkpoint(self) -> None:
        with self.store.reading() as conn:
            # Another process reading (e.g. `consilium audit verify`) makes TRUNCATE wait on the
            # busy handler; wait briefly, not the store's 10 s, since the lock is held meanwhile.
            (previous,) = conn.execute("PRAGMA busy_timeout").fetchone()
            conn.execute("PRAGMA busy_timeout = 200")
            try:
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
        self._wal_dirty = bool(busy)
        if busy:
            log.warning("a reader blocked the WAL checkpoint after a burn; retrying on next sweep")
