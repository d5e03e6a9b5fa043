"""Room chat end to end over the signaling WebSocket of a real server: order, server times,
idempotent resends, history and catch-up, receipts, mentions, permissions, limits, restarts,
burn-after-reading (the text is gone from the database files) and the audit trail.

Sockets on loopback: run inside the namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_chat_e2e.py
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer

from signaling.app import create_app
from signaling.appkeys import AUDIT, AUTHORITY, CHAT
from signaling.chat_service import unix_ms
from signaling.config import Settings
from signaling.messages import PROTOCOL_VERSION

T = 10.0  # per wait
TEST_BUDGET_S = 60.0
ROOM = "ward"


class Client:
    """One participant's signaling socket; every server message lands in ``inbox``."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.inbox: list[dict[str, Any]] = []
        self.id = ""
        self._arrived = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    async def join(self) -> dict[str, Any]:
        self._ws = await self.http.ws_connect(self.url.replace("http", "ws", 1) + "/ws")
        self._reader = asyncio.create_task(self._read())
        await self.send({"type": "join", "token": self.token, "version": PROTOCOL_VERSION})
        joined = await self.next("joined")
        self.id = joined["self"]["id"]
        return joined

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.inbox.append(json.loads(msg.data))
                self._arrived.set()

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def next(self, type_: str, wait_s: float = T) -> dict[str, Any]:
        """The oldest unread message of that type (consumed), waiting for it if need be."""
        async with asyncio.timeout(wait_s):
            while True:
                for i, message in enumerate(self.inbox):
                    if message["type"] == type_:
                        return self.inbox.pop(i)
                if self._ws is not None and self._ws.closed and not self.inbox:
                    raise AssertionError(f"socket closed while waiting for {type_}")
                self._arrived.clear()
                await self._arrived.wait()

    def take(self, type_: str) -> list[dict[str, Any]]:
        """Every unread message of that type, consumed, without waiting."""
        taken = [m for m in self.inbox if m["type"] == type_]
        self.inbox = [m for m in self.inbox if m["type"] != type_]
        return taken

    async def roundtrip(self) -> None:
        """Wait until the server has handled everything sent before (it answers in order)."""
        await self.send({"type": "ping"})
        await self.next("pong")

    async def post(self, client_id: str, text: str, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "chat-send", "clientId": client_id, "text": text, **extra})
        while True:
            message = (await self.next("chat-message"))["message"]
            if message["clientId"] == client_id and message["from"]["id"] == self.id:
                return message

    async def error(self) -> dict[str, Any]:
        error = await self.next("error")
        assert error["fatal"] is False
        return error

    async def history(self, after: int) -> list[dict[str, Any]]:
        """All pages after ``after``, following ``more``; checks each page's bound."""
        messages: list[dict[str, Any]] = []
        while True:
            await self.send({"type": "chat-sync", "after": after})
            page = await self.next("chat-history")
            assert len(page["messages"]) <= 200
            messages += page["messages"]
            if not page["more"]:
                return messages
            after = page["messages"][-1]["seq"]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader


def _token(app: Any, identity: str, role: str, room_id: str = ROOM) -> str:
    token: str = app[AUTHORITY].mint(
        room=room_id,
        identity=identity,
        name=identity.title(),
        role=role,
        ttl_s=600,
        now_s=int(time.time()),
    )
    return token


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[str, Any]]:
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


@asynccontextmanager
async def room(
    settings: Settings, *people: tuple[str, str]
) -> AsyncIterator[tuple[Any, aiohttp.ClientSession, list[Client]]]:
    """A running server with these (identity, role) participants joined, in that order."""
    async with (
        asyncio.timeout(TEST_BUDGET_S),
        serving(settings) as (url, app),
        aiohttp.ClientSession() as http,
    ):
        clients = [Client(http, url, _token(app, who, role)) for who, role in people]
        try:
            for client in clients:
                await client.join()
            yield app, http, clients
        finally:
            for client in clients:
                await client.close()


def _audit(app: Any, *events: str) -> list[dict[str, Any]]:
    return [e for e in app[AUDIT].entries(ROOM) if e["event"] in events]


def _on_disk(data_dir: Path) -> bytes:
    return b"".join(
        p.read_bytes()
        for p in (data_dir / "consilium.db", data_dir / "consilium.db-wal")
        if p.exists()
    )


# -- order, time, idempotency, history --------------------------------------------------------


async def test_order_server_time_resend_and_history(server_settings: Settings) -> None:
    people = [("host", "host"), ("spec", "specialist"), ("bed", "bedside")]
    async with room(server_settings, *people) as (app, http, clients):
        per_sender = 12

        async def chatter(client: Client) -> None:
            for n in range(per_sender):
                await client.send(
                    {"type": "chat-send", "clientId": f"{client.id}-{n}", "text": f"n={n}"}
                )

        await asyncio.gather(*(chatter(c) for c in clients))
        total = per_sender * len(clients)
        for client in clients:
            seen = [(await client.next("chat-message"))["message"] for _ in range(total)]
            # Everyone sees every message once, in one order, with no gaps.
            assert [m["seq"] for m in seen] == list(range(1, total + 1))
            times = [m["sentAt"] for m in seen]
            assert times == sorted(times)
            assert abs(times[-1] - unix_ms()) < 600_000  # unix ms, not a monotonic clock
            for sender in clients:  # each sender's messages keep their own order
                mine = [m["clientId"] for m in seen if m["from"]["id"] == sender.id]
                assert mine == [f"{sender.id}-{n}" for n in range(per_sender)]
            assert {m["from"]["role"] for m in seen} == {"host", "specialist", "bedside"}
            assert all(m["burn"] is None and m["attachments"] == [] for m in seen)

        # A resend of a stored clientId returns the stored message to the sender only.
        host, spec, _ = clients
        original = next(m for m in seen if m["clientId"] == f"{host.id}-3")
        again = await host.post(f"{host.id}-3", "a different text")
        assert again == original
        after = await host.post("after-resend", "next")
        assert after["seq"] == total + 1
        assert (await spec.next("chat-message"))["message"] == after  # no copy of the resend

        # History on join: a latecomer gets the same messages from seq 1.
        late = Client(http, clients[0].url, _token(app, "late", "specialist"))
        await late.join()
        try:
            history = await late.history(after=0)
        finally:
            await late.close()
        assert history == seen + [after]
        sent = _audit(app, "message-sent")
        assert [e["details"]["seq"] for e in sent] == list(range(1, total + 2))
        assert all(e["burn"] is False and e["attachments"] == [] for e in sent)


async def test_catch_up_after_reconnect_has_no_gaps_or_duplicates(
    server_settings: Settings,
) -> None:
    async with room(server_settings, ("host", "host"), ("bed", "bedside")) as (app, http, c):
        host, bed = c
        for n in range(3):
            await host.post(f"a{n}", f"before {n}")
        seen = [(await bed.next("chat-message"))["message"]["seq"] for _ in range(3)]
        last_seen = seen[-1]
        await bed.close()

        # While the bedside is away 230 messages arrive: more than one history page.
        missed = 230
        for n in range(missed):
            await host.send({"type": "chat-send", "clientId": f"b{n}", "text": f"away {n}"})
        for _ in range(missed):
            await host.next("chat-message")

        back = Client(http, host.url, _token(app, "bed", "bedside"))
        c.append(back)
        await back.join()
        await back.send({"type": "chat-sync", "after": last_seen})
        first = await back.next("chat-history")
        assert first["more"] is True and len(first["messages"]) == 200
        rest = await back.history(after=first["messages"][-1]["seq"])
        got = [m["seq"] for m in first["messages"] + rest]
        assert got == list(range(last_seen + 1, last_seen + missed + 1))
        assert [m["text"] for m in rest][-1] == f"away {missed - 1}"
        assert await back.history(after=got[-1]) == []


# -- receipts and mentions ----------------------------------------------------------------


async def test_receipts_are_broadcast_and_mentions_kept(server_settings: Settings) -> None:
    async with room(server_settings, ("host", "host"), ("spec", "specialist")) as (app, _, c):
        host, spec = c
        message = await host.post("m1", "@Spec please look", mentions=[spec.id, spec.id, " x"])
        assert message["mentions"] == [spec.id]
        assert (await spec.next("chat-message"))["message"]["mentions"] == [spec.id]
        await host.post("m2", "second")

        await spec.send({"type": "chat-receipt", "delivered": 2})
        expected = {"participantId": spec.id, "delivered": 2, "read": 0}
        for client in (host, spec):
            assert (await client.next("chat-receipt"))["receipt"] == expected
        await spec.send({"type": "chat-receipt", "read": 1})
        expected = {"participantId": spec.id, "delivered": 2, "read": 1}
        for client in (host, spec):
            assert (await client.next("chat-receipt"))["receipt"] == expected

        # Lower or equal watermarks and marks past the last message change nothing.
        await spec.send({"type": "chat-receipt", "delivered": 1, "read": 1})
        await spec.send({"type": "chat-receipt", "read": 0})
        await spec.roundtrip()
        assert spec.take("chat-receipt") == []
        await spec.send({"type": "chat-receipt", "read": 999})
        capped = {"participantId": spec.id, "delivered": 2, "read": 2}
        assert (await host.next("chat-receipt"))["receipt"] == capped

        await host.send({"type": "chat-sync", "after": 0})
        history = await host.next("chat-history")
        assert history["receipts"] == [capped]
        reads = _audit(app, "message-read")
        assert [(e["actor"], e["upTo"], e["count"]) for e in reads] == [
            (spec.id, 1, 1),
            (spec.id, 2, 1),
        ]


# -- permissions and bad input --------------------------------------------------------------


async def test_observer_reads_but_cannot_post_and_bad_input_is_refused(
    server_settings: Settings,
) -> None:
    async with room(server_settings, ("host", "host"), ("obs", "observer")) as (app, _, c):
        host, observer = c
        await host.post("h1", "for everyone")
        await observer.send({"type": "chat-send", "clientId": "o1", "text": "may I?"})
        error = await observer.error()
        assert error["code"] == "forbidden"
        [refused] = _audit(app, "chat-refused")
        assert refused["actor"] == observer.id and refused["role"] == "observer"
        [seen] = await observer.history(after=0)
        assert seen["text"] == "for everyone"
        await observer.send({"type": "chat-receipt", "read": 1})
        assert (await host.next("chat-receipt"))["receipt"]["read"] == 1

        # Too long: a clear, non-fatal error; the socket goes on working.
        await host.send({"type": "chat-send", "clientId": "big", "text": "x" * 4001})
        error = await host.error()
        assert error["code"] == "too-large" and "4000" in error["message"]
        for bad in (
            {"type": "chat-send", "text": "no client id"},
            {"type": "chat-send", "clientId": "c", "text": "   "},
            {"type": "chat-send", "clientId": "c", "text": "x", "mentions": "all"},
            {"type": "chat-send", "clientId": "c", "text": "x", "burn": {"ttlSeconds": 5}},
            {"type": "chat-sync", "after": "latest"},
            {"type": "chat-receipt"},
        ):
            await host.send(bad)
            assert (await host.error())["code"] == "bad-field", bad
        # Attachments must name a file shared in this room.
        await host.send({"type": "chat-send", "clientId": "f", "text": "", "attachments": ["f1"]})
        error = await host.error()
        assert error["code"] == "bad-field" and "no such file" in error["message"]
        assert (await host.post("h2", "still here"))["seq"] == 2
        assert len(_audit(app, "message-sent")) == 2


async def _upload(http: aiohttp.ClientSession, url: str, token: str, room_id: str) -> str:
    """A small file shared with tus in that room; returns its file id."""
    name = base64.b64encode(b"echo report.txt").decode()
    kind = base64.b64encode(b"text/plain").decode()
    headers = {"Tus-Resumable": "1.0.0", "Authorization": f"Bearer {token}"}
    async with http.post(
        f"{url}/api/rooms/{room_id}/uploads",
        headers={
            **headers,
            "Upload-Length": "5",
            "Upload-Metadata": f"filename {name},filetype {kind}",
        },
    ) as created:
        assert created.status == 201, await created.text()
        location = created.headers["Location"]
    async with http.patch(
        url + location,
        data=b"hello",
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
        },
    ) as done:
        assert done.status == 204, await done.text()
        return done.headers["Consilium-File-Id"]


async def test_attachments_are_files_shared_in_the_room(server_settings: Settings) -> None:
    async with room(server_settings, ("host", "host"), ("spec", "specialist")) as (app, http, c):
        host, spec = c
        file_id = await _upload(http, host.url, host.token, ROOM)
        message = await host.post("f1", "", attachments=[file_id, file_id])
        [info] = message["attachments"]
        assert info["id"] == file_id and info["name"] == "echo report.txt"
        assert info["size"] == 5 and info["sha256"] == hashlib.sha256(b"hello").hexdigest()
        assert message["text"] == ""
        assert (await spec.next("chat-message"))["message"]["attachments"] == [info]
        [sent] = _audit(app, "message-sent")
        assert sent["attachments"] == [file_id]
        assert "echo report" not in json.dumps(_audit(app, "message-sent"))

        # A file of another room is not this room's to attach.
        other = _token(app, "host", "host", room_id="icu")
        elsewhere = await _upload(http, host.url, other, "icu")
        await host.send(
            {"type": "chat-send", "clientId": "f2", "text": "x", "attachments": [elsewhere]}
        )
        error = await host.error()
        assert error["code"] == "bad-field" and "no such file" in error["message"]

        # The file is deleted: the message keeps the entry, marked removed, in history.
        async with http.delete(
            f"{host.url}/api/rooms/{ROOM}/files/{file_id}",
            headers={"Authorization": f"Bearer {host.token}"},
        ) as deleted:
            assert deleted.status == 204
        assert (await spec.next("file-removed"))["fileId"] == file_id
        [kept] = await spec.history(after=message["seq"] - 1)
        assert kept["attachments"] == [{**info, "removed": True}]


# -- persistence ----------------------------------------------------------------------------


async def test_history_and_receipts_survive_a_restart(server_settings: Settings) -> None:
    settings = dataclasses.replace(server_settings, secret="chat-restart-secret-0123456789abcd")
    async with room(settings, ("host", "host"), ("spec", "specialist")) as (_, _h, c):
        host, spec = c
        before = [await host.post(f"m{n}", f"kept {n}") for n in range(3)]
        await spec.send({"type": "chat-receipt", "read": 2})
        await host.next("chat-receipt")
    async with room(settings, ("spec", "specialist"), ("host", "host")) as (_, _h, c):
        spec, host = c
        await spec.send({"type": "chat-sync", "after": 0})
        history = await spec.next("chat-history")
        assert history["messages"] == before and history["more"] is False
        assert history["receipts"] == [{"participantId": "spec", "delivered": 2, "read": 2}]
        after = await host.post("m0", "a resend after the restart")
        assert after == before[0]  # idempotent across restarts too
        assert (await host.post("m3", "new"))["seq"] == 4


# -- burn-after-reading ---------------------------------------------------------------------


async def test_burns_once_every_recipient_has_read_and_no_trace_stays(
    server_settings: Settings,
) -> None:
    data_dir = Path(server_settings.data_dir)
    marker = "BURN-MARKER-5f2a91-hypertension-patient"
    people = [("host", "host"), ("spec", "specialist"), ("bed", "bedside")]
    async with room(server_settings, *people) as (app, _, c):
        host, spec, bed = c
        await host.post("plain", "an ordinary message")
        secret = await host.post("s", f"{marker} results attached", burn={"afterReading": True})
        assert secret["burn"]["afterReading"] is True
        assert secret["burn"]["expiresAt"] == secret["sentAt"] + 600_000
        await host.post("later", "after the secret")
        assert marker.encode() in _on_disk(data_dir)  # the check below can fail

        # The sender's own read and one of two recipients' reads do not burn it.
        await host.send({"type": "chat-receipt", "read": 3})
        await spec.send({"type": "chat-receipt", "read": 3})
        for client in (host, spec):
            await client.roundtrip()
        assert [m["seq"] for m in await bed.history(after=0)] == [1, 2, 3]
        assert host.take("chat-burned") == []

        await bed.send({"type": "chat-receipt", "read": 2})
        for client in (host, spec, bed):
            assert (await client.next("chat-burned"))["ids"] == [secret["id"]]
        assert [m["seq"] for m in await spec.history(after=0)] == [1, 3]
        assert marker.encode() not in _on_disk(data_dir)

        # A resend of the burned message (a lost ack, a reconnect) is refused, not reposted.
        spec.take("chat-message")
        resend = {"type": "chat-send", "clientId": "s", "text": f"{marker} results attached"}
        await host.send({**resend, "burn": {"afterReading": True}})
        refused = await host.error()
        assert refused["code"] == "bad-field" and "already sent and burned" in refused["message"]
        await spec.roundtrip()
        assert spec.take("chat-message") == []
        assert [m["seq"] for m in await spec.history(after=0)] == [1, 3]
        assert marker.encode() not in _on_disk(data_dir)

        [burned] = _audit(app, "message-burned")
        assert (burned["id"], burned["sender"], burned["reason"]) == (secret["id"], host.id, "read")
        sent = {e["id"]: e["burn"] for e in _audit(app, "message-sent")}
        assert sent[secret["id"]] is True and list(sent.values()).count(True) == 1
        reads = {e["actor"] for e in _audit(app, "message-read")}
        assert reads == {spec.id, bed.id}
        trail = json.dumps(app[AUDIT].entries())
        assert marker not in trail and "ordinary message" not in trail
        assert app[AUDIT].verify().ok


async def test_burns_on_expiry(server_settings: Settings) -> None:
    async with room(server_settings, ("host", "host"), ("spec", "specialist")) as (app, _, c):
        host, spec = c
        offset = [0]
        chat = app[CHAT]
        chat.clock = lambda: unix_ms() + offset[0]
        short = await host.post(
            "short", "gone in a second", burn={"afterReading": True, "ttlSeconds": 1}
        )
        default = await host.post("default", "ten minutes", burn={"afterReading": True})
        # Nobody reads: the sweeper burns the short one once its second is over.
        burned = await spec.next("chat-burned", wait_s=15)
        assert burned["ids"] == [short["id"]]
        assert [m["id"] for m in await spec.history(after=0)] == [default["id"]]

        assert (await host.next("chat-burned"))["ids"] == [short["id"]]
        offset[0] = 600_000  # ten minutes later, as the server sees it
        assert (await host.next("chat-burned", wait_s=15))["ids"] == [default["id"]]
        assert await spec.history(after=0) == []
        reasons = [(e["id"], e["reason"]) for e in _audit(app, "message-burned")]
        assert reasons == [(short["id"], "expired"), (default["id"], "expired")]
