"""Schema of room chat (migration 3). Not shipped yet: edit freely until it is."""

from __future__ import annotations

CHAT_SCHEMA = """
CREATE TABLE chat_message (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
);
"""
