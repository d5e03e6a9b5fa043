"""Room ids whose consultation a host ended, kept in SQLite so a restart does not reopen them."""

from __future__ import annotations

import time

from signaling.storage.sqlite import SqliteStore


class SqliteEndedRooms:
    """A set of room ids (``in``, ``add``) that writes through to the store.

    Read on first use; after that membership checks are in memory, so a join costs no query.
    """

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self._rooms: set[str] | None = None

    def _loaded(self) -> set[str]:
        if self._rooms is None:
            with self._store.reading() as conn:
                self._rooms = {row[0] for row in conn.execute("SELECT room FROM ended_room")}
        return self._rooms

    def __contains__(self, room: object) -> bool:
        return room in self._loaded()

    def add(self, room: str) -> None:
        rooms = self._loaded()
        if room in rooms:
            return
        with self._store.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO ended_room (room, ended_ms) VALUES (?, ?)",
                (room, int(time.time() * 1000)),
            )
        rooms.add(room)
