"""Schema of room chat (migration 3). Not shipped yet: edit freely until it is."""

from __future__ import annotations

CHAT_SCHEMA = """
-- One row per room: the last seq handed out (burned messages leave gaps, never reused seqs)
-- and the last server time, so a wall clock stepping back cannot reorder sentAt.
CREATE TABLE chat_room (
    room TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    last_sent_ms INTEGER NOT NULL
);
CREATE TABLE chat_message (
    room TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    sender_role TEXT NOT NULL,
    client_id TEXT NOT NULL,
    body TEXT NOT NULL,
    mentions TEXT NOT NULL,
    attachments TEXT NOT NULL,
    sent_ms INTEGER NOT NULL,
    burn_expires_ms INTEGER,
    PRIMARY KEY (room, seq),
    UNIQUE (room, sender, client_id)
);
CREATE INDEX chat_message_burn ON chat_message (burn_expires_ms)
    WHERE burn_expires_ms IS NOT NULL;
-- Who must read a burn-after-reading message before it goes (present when it was sent).
CREATE TABLE chat_burn_recipient (
    message_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    PRIMARY KEY (message_id, identity)
);
CREATE TABLE chat_receipt (
    room TEXT NOT NULL,
    identity TEXT NOT NULL,
    delivered INTEGER NOT NULL,
    read INTEGER NOT NULL,
    PRIMARY KEY (room, identity)
);
"""
