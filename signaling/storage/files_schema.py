"""Schema of shared files and uploads (migration 4). Not shipped yet: edit freely until it is."""

from __future__ import annotations

# shared_file: one row per file shared in a room (the bytes live once, content-addressed, in
# <data-dir>/blobs/<sha[:2]>/<sha>; two rooms sharing the same study point at the same blob).
# upload: a tus upload in progress; its bytes are in <data-dir>/uploads/<id>.part.
FILES_SCHEMA = """
CREATE TABLE shared_file (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    uploader_id TEXT NOT NULL,
    uploader_name TEXT NOT NULL,
    uploaded_ms INTEGER NOT NULL,
    dicom TEXT
);
CREATE INDEX shared_file_room ON shared_file (room, uploaded_ms);
CREATE INDEX shared_file_sha256 ON shared_file (sha256);
CREATE TABLE upload (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    uploader_id TEXT NOT NULL,
    uploader_name TEXT NOT NULL,
    length INTEGER NOT NULL,
    received INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    sha256 TEXT,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
CREATE INDEX upload_expires ON upload (expires_ms);
"""
