"""SQLite store (stdlib sqlite3, WAL) with numbered schema migrations.

Calls are synchronous and short (one indexed insert or select); aiohttp handlers that read
pages of entries run them through ``asyncio.to_thread``. One connection, guarded by a lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from signaling.audit_chain import AuditEntry, next_entry
from signaling.storage.chat_schema import CHAT_SCHEMA
from signaling.storage.files_schema import FILES_SCHEMA

DB_FILE = "consilium.db"

# Migration N (1-based) brings the schema from version N-1 to N. Append only: never edit a
# script that has shipped, add a new one. PRAGMA user_version records the version reached.
MIGRATIONS: list[str] = [
    # 1: the audit trail. seq is the chain order; hash covers prev_hash + canonical entry.
    """
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        event TEXT NOT NULL,
        room TEXT NOT NULL,
        actor TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    """,
    # 2: paging a room's trail without scanning everything.
    "CREATE INDEX audit_room_seq ON audit (room, seq);",
    # 3: room chat, receipts and burn-after-reading (signaling.storage.chat_schema).
    CHAT_SCHEMA,
    # 4: shared files, content-addressed blobs and tus uploads (signaling.storage.files_schema).
    FILES_SCHEMA,
    # 5: consultations a host ended: their room ids refuse joins, across restarts too.
    """
    CREATE TABLE ended_room (
        room TEXT PRIMARY KEY, ended_ms INTEGER NOT NULL
    );
    """,
    # 6: tombstones of burned chat messages, without content: a resend of one (same room,
    # sender and clientId) is refused instead of posted again.
    """
    CREATE TABLE chat_burned (
        room TEXT NOT NULL,
        sender TEXT NOT NULL,
        client_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        burned_ms INTEGER NOT NULL,
        PRIMARY KEY (room, sender, client_id)
    );
    """,
]


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Apply the scripts past the database's version, each in its own transaction."""
    version = schema_version(conn)
    for number, script in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read inside the lock: another process may have migrated meanwhile.
            if schema_version(conn) >= number:
                conn.execute("COMMIT")
                continue
            for statement in (s.strip() for s in script.split(";")):
                if statement:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


def _row_entry(row: tuple[Any, ...]) -> AuditEntry:
    seq, time, event, room, actor, details, prev_hash, digest = row
    return AuditEntry(seq, time, event, room, actor, json.loads(details), prev_hash, digest)


_COLUMNS = "seq, time, event, room, actor, details, prev_hash, hash"


class SqliteStore:
    """The embedded default store: ``<data-dir>/consilium.db``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    def in_dir(cls, data_dir: str | Path) -> SqliteStore:
        return cls(Path(data_dir) / DB_FILE)

    def _connection(self) -> sqlite3.Connection:
        # Opened on first use, so a server that never audits anything creates no file.
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are zeroed on disk, not just unlinked: a burned chat message must
            # not be recoverable from the file's free pages.
            conn.execute("PRAGMA secure_delete=ON")
            migrate(conn)
            self._conn = conn
        return self._conn

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held under the store's lock, for selects."""
        with self._lock:
            yield self._connection()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; rolled back if the block raises."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def append(
        self, time: str, event: str, room: str, actor: str, details: Mapping[str, Any]
    ) -> AuditEntry:
        with self._lock:
            conn = self._connection()
            # IMMEDIATE: the last entry cannot change under us, even from another process.
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                entry = next_entry(
                    None if row is None else _row_entry(row), time, event, room, actor, details
                )
                conn.execute(
                    f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.seq,
                        entry.time,
                        entry.event,
                        entry.room,
                        entry.actor,
                        json.dumps(entry.details, sort_keys=True),
                        entry.prev_hash,
                        entry.hash,
                    ),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return entry

    def list_room(self, room: str, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        with self._lock:
            rows = (
                self._connection()
                .execute(
                    f"SELECT {_COLUMNS} FROM audit WHERE room = ? AND seq > ? ORDER BY seq LIMIT ?",
                    (room, after, limit),
                )
                .fetchall()
            )
        return [_row_entry(r) for r in rows]

    def iter_all(self) -> Iterator[AuditEntry]:
        # Pages, not one big fetch: a long trail stays in bounded memory.
        after = 0
        while True:
            with self._lock:
                rows = (
                    self._connection()
                    .execute(
                        f"SELECT {_COLUMNS} FROM audit WHERE seq > ? ORDER BY seq LIMIT 500",
                        (after,),
                    )
                    .fetchall()
                )
            if not rows:
                return
            for row in rows:
                yield _row_entry(row)
            after = rows[-1][0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
