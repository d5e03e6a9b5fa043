"""Room chat over the signaling WebSocket: the asyncio shell around signaling.chat.

It stores what the pure core accepted, broadcasts to the room's sessions, audits (ids and
counts, never text) and burns burn-after-reading messages when their recipients have read them
(on the receipt that completes it) or when they expire (a background sweeper).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sfu.room import Session, Sfu
from signaling.audit import AuditLog
from signaling.auth import Grant, Permission
from signaling.chat import (
    HISTORY_PAGE,
    AlreadyBurned,
    Author,
    Burn,
    ChatDraft,
    ChatMessage,
    FileLookup,
    NoFiles,
    attachment_ids,
    burn_recipients,
    due_burns,
    mark_removed,
)
from signaling.counters import ServiceCounters
from signaling.messages import ChatReceipt, ChatRefused, ChatSend, ChatSync
from signaling.storage import ChatRepository

log = logging.getLogger("consilium.chat")

ChatCommand = ChatSend | ChatSync | ChatReceipt
CHAT_COMMANDS = (ChatSend, ChatSync, ChatReceipt)

SWEEP_INTERVAL_S = 1.0
SWEEP_BATCH = 100  # burns per sweep: a backlog drains over several ticks, never in one stall
BURN_SCAN_BATCH = 200


def unix_ms() -> int:
    return int(time.time() * 1000)


class ChatService:
    def __init__(
        self,
        repo: ChatRepository,
        audit: AuditLog,
        sfu: Sfu,
        files: FileLookup | None = None,
        clock: Callable[[], int] = unix_ms,
        counters: ServiceCounters | None = None,
    ) -> None:
        self.repo = repo
        self.audit = audit
        self.sfu = sfu
        self.files: FileLookup = files if files is not None else NoFiles()
        self.clock = clock  # server unix ms; tests may move it forward
        self.counters = counters if counters is not None else ServiceCounters()
        self.sweep_interval_s = SWEEP_INTERVAL_S
        # One lock per room: store-then-broadcast in seq order, so nobody sees 5 before 4.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, room: str) -> asyncio.Lock:
        lock = self._locks.get(room)
        if lock is None:
            lock = self._locks[room] = asyncio.Lock()
        return lock

    async def handle(self, session: Session, message: ChatCommand, grant: Grant | None) -> None:
        if isinstance(message, ChatSend):
            await self.send(session, message, grant)
        elif isinstance(message, ChatSync):
            await self.sync(session, message.after)
        else:
            await self.receipt(session, message)

    # -- chat-send --------------------------------------------------------------------------

    async def send(self, session: Session, message: ChatSend, grant: Grant | None) -> None:
        room = session.room
        if grant is None or not grant.can(Permission.CHAT):
            self.audit.record(
                "chat-refused", room.id, session.identity, action="send", role=session.role
            )
            raise ChatRefused("forbidden", "your role may read the chat but not post in it")
        attachments = []
        for file_id in message.attachments:
            info = await asyncio.to_thread(self.files.get, room.id, file_id)
            if info is None:
                raise ChatRefused("bad-field", f"no such file in this room: {file_id!r}")
            attachments.append(info)
        burning = message.burn_ttl_s is not None
        draft = ChatDraft(
            id=uuid.uuid4().hex,
            room=room.id,
            sender=Author(session.identity, session.name, session.role),
            client_id=message.client_id,
            text=message.text,
            mentions=message.mentions,
            attachments=tuple(attachments),
            burn_ttl_s=message.burn_ttl_s,
            recipients=burn_recipients(session.identity, room.sessions) if burning else frozenset(),
        )
        async with self._lock(room.id):
            # One indexed lookup and one insert: short enough for the event loop.
            try:
                stored, created = self.repo.append(draft, self.clock())
            except AlreadyBurned as exc:
                # Its tombstone: the message existed and everyone read it; never post it again.
                raise ChatRefused("bad-field", "that message was already sent and burned") from exc
            if not created:
                # A resend (lost ack, reconnect): only the sender needs the stored copy again,
                # as it is now (a file it attached may have been deleted since).
                (again,) = await self._wires(room.id, [stored])
                await session.link.send({"type": "chat-message", "message": again})
                return
            wire = {"type": "chat-message", "message": stored.to_wire()}
            self.counters.message_sent()
            self.audit.record(
                "message-sent",
                room.id,
                session.identity,
                id=stored.id,
                seq=stored.seq,
                attachments=[a.get("id") for a in stored.attachments],
                burn=stored.burn_expires_ms is not None,
            )
            await _broadcast(room.sessions.values(), wire)

    # -- chat-sync --------------------------------------------------------------------------

    async def sync(self, session: Session, after: int) -> None:
        """One page of history after ``after``; the client asks again while ``more`` is true."""
        room_id = session.room.id
        messages, more = await asyncio.to_thread(self.repo.page, room_id, after, HISTORY_PAGE)
        receipts = await asyncio.to_thread(self.repo.receipts, room_id)
        await session.link.send(
            {
                "type": "chat-history",
                "messages": await self._wires(room_id, messages),
                "receipts": [r.as_dict() for r in receipts],
                "more": more,
            }
        )

    async def _wires(self, room_id: str, messages: list[ChatMessage]) -> list[dict[str, Any]]:
        """Messages as sent to a page: attachments of files deleted since are marked removed
        (the message stores the FileInfo as it was when it was sent)."""
        wires = [m.to_wire() for m in messages]
        ids = attachment_ids(wires)
        gone = await asyncio.to_thread(self.files.absent, room_id, ids) if ids else set()
        return [mark_removed(w, gone) for w in wires] if gone else wires

    # -- chat-receipt -----------------------------------------------------------------------

    async def receipt(self, session: Session, message: ChatReceipt) -> None:
        room = session.room
        update = await asyncio.to_thread(
            self.repo.update_receipt, room.id, session.identity, message.delivered, message.read
        )
        if update is None:
            return
        await _broadcast(
            room.sessions.values(), {"type": "chat-receipt", "receipt": update.receipt.as_dict()}
        )
        if update.receipt.read <= update.previous.read:
            return
        if update.newly_read:
            self.audit.record(
                "message-read",
                room.id,
                session.identity,
                upTo=update.receipt.read,
                count=update.newly_read,
            )
        await self._burn_read(room.id, session.identity, update.previous.read, update.receipt.read)

    async def _burn_read(self, room: str, reader: str, after: int, up_to: int) -> None:
        """Burn what this reader was the last recipient to read (seqs after..up_to)."""
        while after < up_to:
            candidates = await asyncio.to_thread(
                self.repo.pending_burns, room, reader, after, up_to, BURN_SCAN_BATCH
            )
            if not candidates:
                return
            marks = await asyncio.to_thread(self.repo.read_marks, room)
            await self._burn(due_burns(candidates, marks, self.clock()))
            if len(candidates) < BURN_SCAN_BATCH:
                return
            after = candidates[-1].seq

    # -- burning ----------------------------------------------------------------------------

    async def sweep_once(self) -> int:
        """Burn expired messages (at most one batch); returns how many went."""
        now = self.clock()
        candidates = await asyncio.to_thread(self.repo.expired_burns, now, SWEEP_BATCH)
        return await self._burn(due_burns(candidates, {}, now))

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("chat burn sweep failed")

    async def _burn(self, burns: list[Burn]) -> int:
        if not burns:
            return 0
        gone = set(await asyncio.to_thread(self.repo.burn, [b.id for b in burns]))
        by_room: dict[str, list[str]] = {}
        for burn in burns:
            if burn.id not in gone:  # burned meanwhile by the other path
                continue
            self.counters.message_burned(burn.reason)
            self.audit.record(
                "message-burned",
                burn.room,
                "system",
                id=burn.id,
                seq=burn.seq,
                sender=burn.sender,
                reason=burn.reason,
            )
            by_room.setdefault(burn.room, []).append(burn.id)
        for room_id, ids in by_room.items():
            room = self.sfu.rooms.get(room_id)
            if room is not None:
                await _broadcast(room.sessions.values(), {"type": "chat-burned", "ids": ids})
        return len(gone)


async def _broadcast(sessions: Iterable[Session], message: dict[str, Any]) -> None:
    for session in list(sessions):
        with contextlib.suppress(Exception):
            await session.link.send(message)
