"""Schema of shared files and uploads (migration 4). Not shipped yet: edit freely until it is."""

from __future__ import annotations

FILES_SCHEMA = """
CREATE TABLE shared_file (
    id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    name TEXT NOT NULL,
    uploaded_ms INTEGER NOT NULL
);
"""
