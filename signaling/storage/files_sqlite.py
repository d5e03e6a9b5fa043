"""Shared files and tus uploads in the SQLite store (migration 4: storage.files_schema)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from signaling.storage.sqlite import SqliteStore
from signaling.tus import UploadState


@dataclass(frozen=True, slots=True)
class SharedFile:
    """One file shared in one room (the FileInfo of the contract, before JSON)."""

    id: str
    room: str
    sha256: str
    size: int
    name: str
    type: str
    uploader_id: str
    uploader_name: str
    uploaded_ms: int
    dicom: dict[str, Any] | None

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "type": self.type,
            "sha256": self.sha256,
            "uploadedBy": {"id": self.uploader_id, "name": self.uploader_name},
            "uploadedAt": self.uploaded_ms,
            "dicom": self.dicom,
        }


_FILE_COLUMNS = "id, room, sha256, size, name, type, uploader_id, uploader_name, uploaded_ms, dicom"
_UPLOAD_COLUMNS = (
    "id, room, uploader_id, uploader_name, length, received, name, type, sha256,"
    " created_ms, expires_ms"
)


def _file(row: tuple[Any, ...]) -> SharedFile:
    file_id, room, sha256, size, name, type_, uploader_id, uploader_name, uploaded_ms, dicom = row
    return SharedFile(
        file_id,
        room,
        sha256,
        size,
        name,
        type_,
        uploader_id,
        uploader_name,
        uploaded_ms,
        None if dicom is None else json.loads(dicom),
    )


def _referenced(conn: sqlite3.Connection, sha256: str) -> bool:
    found = conn.execute("SELECT 1 FROM shared_file WHERE sha256 = ? LIMIT 1", (sha256,))
    return found.fetchone() is not None


def _upload(row: tuple[Any, ...]) -> UploadState:
    return UploadState(*row)


class SqliteFileRepository:
    def __init__(self, store: SqliteStore) -> None:
        self.store = store

    # -- shared files ---------------------------------------------------------------------

    def get(self, room: str, file_id: str) -> dict[str, Any] | None:
        """The FileInfo of a file shared in that room, or None (unknown id, other room)."""
        found = self.get_file(room, file_id)
        return None if found is None else found.info()

    def get_file(self, room: str, file_id: str) -> SharedFile | None:
        with self.store.reading() as conn:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM shared_file WHERE room = ? AND id = ?",
                (room, file_id),
            ).fetchone()
        return None if row is None else _file(row)

    def absent(self, room: str, file_ids: Collection[str]) -> set[str]:
        """The ids among these that name no file of that room (any more): chat attachments
        of files since deleted."""
        if not file_ids:
            return set()
        with self.store.reading() as conn:
            present = {
                r[0]
                for r in conn.execute(
                    "SELECT id FROM shared_file WHERE room = ? AND id IN"
                    f" ({', '.join('?' * len(file_ids))})",
                    (room, *file_ids),
                )
            }
        return set(file_ids) - present

    def list_room(self, room: str) -> list[dict[str, Any]]:
        """The room's files, newest last."""
        with self.store.reading() as conn:
            rows = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM shared_file WHERE room = ?"
                " ORDER BY uploaded_ms, rowid",
                (room,),
            ).fetchall()
        return [_file(r).info() for r in rows]

    def find_by_sha256(self, sha256: str) -> SharedFile | None:
        """Any earlier record of these bytes (to reuse its DICOM summary)."""
        with self.store.reading() as conn:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM shared_file WHERE sha256 = ? LIMIT 1", (sha256,)
            ).fetchone()
        return None if row is None else _file(row)

    def may_claim(self, room: str, identity: str, sha256: str) -> bool:
        """Whether an instant upload of these bytes may skip sending them: they are shared in
        this room already, or this identity uploaded them before (any room).

        Knowing a hash is not the same as having the file: without this, anyone who learnt a
        study's sha256 (an audit reader, a former member of another room) could pull a copy
        into a room of their own.
        """
        with self.store.reading() as conn:
            row = conn.execute(
                "SELECT 1 FROM shared_file WHERE sha256 = ? AND (room = ? OR uploader_id = ?)"
                " LIMIT 1",
                (sha256, room, identity),
            ).fetchone()
        return row is not None

    def add(
        self,
        shared: SharedFile,
        finished_upload: str | None = None,
        place_blob: Callable[[], None] | None = None,
    ) -> None:
        """Record a shared file; the tus upload it came from goes in the same transaction.

        ``place_blob`` runs inside the transaction, after the inserts, and may raise to undo
        them: it puts the bytes in place (or checks they are there) while no delete can
        retire that blob, so a record never points at bytes a concurrent delete removed.
        """
        with self.store.transaction() as conn:
            conn.execute(
                f"INSERT INTO shared_file ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    shared.id,
                    shared.room,
                    shared.sha256,
                    shared.size,
                    shared.name,
                    shared.type,
                    shared.uploader_id,
                    shared.uploader_name,
                    shared.uploaded_ms,
                    None if shared.dicom is None else json.dumps(shared.dicom, sort_keys=True),
                ),
            )
            if finished_upload is not None:
                conn.execute("DELETE FROM upload WHERE id = ?", (finished_upload,))
            if place_blob is not None:
                place_blob()

    def delete(
        self, room: str, file_id: str, retire_blob: Callable[[str], None]
    ) -> tuple[SharedFile | None, bool]:
        """Remove a room's record: (the record or None, whether it was the blob's last one).

        When no record of any room references the sha256 any more, ``retire_blob(sha256)``
        runs inside the same transaction (it moves the blob aside; the caller deletes it
        after the commit). Adding a record takes the same write lock, so either the new
        record is counted here or its ``place_blob`` sees the blob gone and acts on that.
        """
        with self.store.transaction() as conn:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM shared_file WHERE room = ? AND id = ?",
                (room, file_id),
            ).fetchone()
            if row is None:
                return None, False
            shared = _file(row)
            conn.execute("DELETE FROM shared_file WHERE id = ?", (file_id,))
            last = not _referenced(conn, shared.sha256)
            if last:
                retire_blob(shared.sha256)
            return shared, last

    def settle_blob(self, sha256: str, action: Callable[[bool], None]) -> None:
        """Run ``action(referenced)`` inside a write transaction: whether any record of any
        room references these bytes cannot change until it returns."""
        with self.store.transaction() as conn:
            action(_referenced(conn, sha256))

    def referenced(self, sha256: str) -> bool:
        with self.store.reading() as conn:
            return _referenced(conn, sha256)

    # -- uploads in progress --------------------------------------------------------------

    def create_upload(self, upload: UploadState) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                f"INSERT INTO upload ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    upload.id,
                    upload.room,
                    upload.uploader_id,
                    upload.uploader_name,
                    upload.length,
                    upload.offset,
                    upload.name,
                    upload.type,
                    upload.sha256,
                    upload.created_ms,
                    upload.expires_ms,
                ),
            )

    def get_upload(self, room: str, upload_id: str) -> UploadState | None:
        with self.store.reading() as conn:
            row = conn.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE room = ? AND id = ?",
                (room, upload_id),
            ).fetchone()
        return None if row is None else _upload(row)

    def save_progress(self, upload: UploadState) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "UPDATE upload SET received = ?, expires_ms = ? WHERE id = ?",
                (upload.offset, upload.expires_ms, upload.id),
            )

    def delete_upload(self, upload_id: str) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM upload WHERE id = ?", (upload_id,))

    def has_upload(self, upload_id: str) -> bool:
        with self.store.reading() as conn:
            row = conn.execute("SELECT 1 FROM upload WHERE id = ?", (upload_id,)).fetchone()
        return row is not None

    def expired_uploads(self, now_ms: int, limit: int = 100) -> list[UploadState]:
        with self.store.reading() as conn:
            rows = conn.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM upload WHERE expires_ms <= ? LIMIT ?",
                (now_ms, limit),
            ).fetchall()
        return [_upload(r) for r in rows]
