"""Operator counters at GET /metrics move with what happens: chat messages sent, burned (read,
expired) and refused; files uploaded (tus and instant), bytes received, downloaded and deleted;
signaling sessions resumed and grace periods that ran out (timeout, overflow).

Plain WebSocket participants without media and REST calls against a real server on loopback:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_service_metrics.py
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from test_chat_e2e import Client

import signaling.ws
from signaling.app import create_app
from signaling.appkeys import AUTHORITY, CHAT, SETTINGS
from signaling.chat_service import unix_ms
from signaling.config import Settings
from signaling.messages import PROTOCOL_VERSION
from signaling.resume import ResumeLimits

T = 10.0
BUDGET_S = 60.0
ROOM = "ward"
SECRET = "metrics-counters-secret-0123456789abcdef"
API_KEY = "metrics-counters-api-key-0123456789"
ZEROED = {
    "consilium_chat_messages_sent_total": [{}],
    "consilium_chat_messages_burned_total": [{"reason": r} for r in ("read", "expired")],
    "consilium_chat_refusals_total": [
        {"reason": r} for r in ("forbidden", "too-large", "bad-field")
    ],
    "consilium_file_uploads_completed_total": [{"instant": i} for i in ("false", "true")],
    "consilium_tus_received_bytes_total": [{}],
    "consilium_file_downloads_total": [{"kind": k} for k in ("download", "view")],
    "consilium_files_deleted_total": [{}],
    "consilium_sessions_resumed_total": [{}],
    "consilium_resume_grace_expired_total": [{"reason": r} for r in ("timeout", "overflow")],
}


@asynccontextmanager
async def serving(tmp_path: Path) -> AsyncIterator[tuple[str, Any, aiohttp.ClientSession]]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        ice_hosts=["127.0.0.1"],
        secret=SECRET,
        api_key=API_KEY,
        recordings_dir=str(tmp_path / "rec"),
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            asyncio.timeout(BUDGET_S),
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http,
        ):
            yield str(server.make_url("")).rstrip("/"), app, http
    finally:
        await server.close()


def token(app: Any, identity: str, role: str = "specialist") -> str:
    minted: str = app[AUTHORITY].mint(
        room=ROOM, identity=identity, name=identity.title(), role=role, ttl_s=600,
        now_s=int(time.time()),
    )  # fmt: skip
    return minted


def bearer(app: Any, identity: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {token(app, identity)}"}


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, list[tuple[dict, float]]]:
    async with http.get(url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status == 200
        text = await r.text()
    found: dict[str, list[tuple[dict, float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, list[tuple[dict, float]]], name: str, **labels: str) -> float:
    [match] = [v for lbl, v in found.get(name, []) if lbl == labels]
    return match


async def joined(http: aiohttp.ClientSession, url: str, app: Any, who: str, role: str) -> Client:
    client = Client(http, url, token(app, who, role))
    await client.join()
    return client


# --------------------------------------------------------------------------- chat and files


async def test_chat_and_file_counters_move(tmp_path: Path) -> None:
    async with serving(tmp_path) as (url, app, http):
        # Every series is there from the start, at 0.
        found = await scrape(http, url)
        for name, label_sets in ZEROED.items():
            for labels in label_sets:
                assert value(found, name, **labels) == 0, (name, labels)

        alice = await joined(http, url, app, "alice", "specialist")
        bob = await joined(http, url, app, "bob", "bedside")
        olga = await joined(http, url, app, "olga", "observer")
        try:
            await alice.post("c1", "hello")
            await bob.next("chat-message")
            # A resend (same clientId) posts nothing new and counts nothing.
            await alice.send({"type": "chat-send", "clientId": "c1", "text": "hello"})
            await alice.roundtrip()
            # Refusals, by code: an observer posting, an over-long text.
            await olga.send({"type": "chat-send", "clientId": "o1", "text": "may I?"})
            assert (await olga.error())["code"] == "forbidden"
            await alice.send({"type": "chat-send", "clientId": "c2", "text": "x" * 4001})
            assert (await alice.error())["code"] == "too-large"
            found = await scrape(http, url)
            assert value(found, "consilium_chat_messages_sent_total") == 1
            assert value(found, "consilium_chat_refusals_total", reason="forbidden") == 1
            assert value(found, "consilium_chat_refusals_total", reason="too-large") == 1
            assert value(found, "consilium_chat_refusals_total", reason="bad-field") == 0

            # Burned once both recipients read it; its resend is refused (bad-field).
            secret = await alice.post("s1", "burn me", burn={"afterReading": True})
            for reader in (bob, olga):
                await reader.send({"type": "chat-receipt", "read": secret["seq"]})
            assert (await alice.next("chat-burned"))["ids"] == [secret["id"]]
            await alice.send(
                {"type": "chat-send", "clientId": "s1", "text": "burn me",
                 "burn": {"afterReading": True}}
            )  # fmt: skip
            assert (await alice.error())["code"] == "bad-field"
            # And one that nobody reads burns when its time is up.
            short = await alice.post(
                "s2", "short-lived", burn={"afterReading": True, "ttlSeconds": 1}
            )
            app[CHAT].clock = lambda: unix_ms() + 5_000
            await app[CHAT].sweep_once()
            assert short["id"] in (await alice.next("chat-burned"))["ids"]
            found = await scrape(http, url)
            assert value(found, "consilium_chat_messages_sent_total") == 3
            assert value(found, "consilium_chat_messages_burned_total", reason="read") == 1
            assert value(found, "consilium_chat_messages_burned_total", reason="expired") == 1
            assert value(found, "consilium_chat_refusals_total", reason="bad-field") == 1
        finally:
            for client in (alice, bob, olga):
                await client.close()

        # Files: a tus upload, an instant upload of the same bytes, reads, a delete.
        data = bytes(range(256)) * 40 + b"tail"
        meta = "filename " + base64.b64encode(b"scan.bin").decode()
        tus = {"Tus-Resumable": "1.0.0", **bearer(app)}
        async with http.post(
            f"{url}/api/rooms/{ROOM}/uploads",
            headers={**tus, "Upload-Length": str(len(data)), "Upload-Metadata": meta},
        ) as resp:
            assert resp.status == 201
            location = resp.headers["Location"]
        async with http.patch(
            url + location,
            data=data,
            headers={
                **tus,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
        ) as resp:
            assert resp.status == 204
            file_id = resp.headers["Consilium-File-Id"]
        body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "name": "again"}
        async with http.post(
            f"{url}/api/rooms/{ROOM}/files/instant", json=body, headers=bearer(app)
        ) as resp:
            assert resp.status == 201
        for query, headers in (("", {}), ("?inline=1", {}), ("", {"Range": "bytes=100-"})):
            async with http.post(
                f"{url}/api/rooms/{ROOM}/files/{file_id}/link{query}", headers=bearer(app)
            ) as resp:
                link = (await resp.json())["url"]
            async with http.get(url + link, headers=headers) as resp:
                assert resp.status in (200, 206)
                await resp.read()
        async with http.delete(
            f"{url}/api/rooms/{ROOM}/files/{file_id}", headers=bearer(app)
        ) as resp:
            assert resp.status == 204
        found = await scrape(http, url)
        assert value(found, "consilium_file_uploads_completed_total", instant="false") == 1
        assert value(found, "consilium_file_uploads_completed_total", instant="true") == 1
        assert value(found, "consilium_tus_received_bytes_total") == len(data)
        # Reads from the first byte count; a ranged re-read (seeking, resuming) does not.
        assert value(found, "consilium_file_downloads_total", kind="download") == 1
        assert value(found, "consilium_file_downloads_total", kind="view") == 1
        assert value(found, "consilium_files_deleted_total") == 1


# --------------------------------------------------------------------------- resume


def drop(client: Client) -> None:
    """Lose the socket abruptly: no close frame, as on a dead Wi-Fi."""
    assert client._ws is not None
    client._ws._response.close()


async def rejoin(
    http: aiohttp.ClientSession, url: str, app: Any, who: str, resume_token: str
) -> dict[str, Any]:
    async with http.ws_connect(url.replace("http", "ws", 1) + "/ws") as ws:
        await ws.send_str(
            json.dumps(
                {"type": "join", "token": token(app, who), "version": PROTOCOL_VERSION,
                 "resume": resume_token}
            )
        )  # fmt: skip
        async with asyncio.timeout(T):
            while True:
                reply = json.loads((await ws.receive()).data)
                if reply["type"] == "joined":
                    await ws.send_str(json.dumps({"type": "leave"}))
                    return reply


async def test_resume_counters_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serving(tmp_path) as (url, app, http):
        alice = await joined(http, url, app, "alice", "host")
        bob = Client(http, url, token(app, "bob"))
        joined_bob = await bob.join()
        try:
            drop(bob)
            await alice.next("participant-updated")  # bob: reconnecting
            reply = await rejoin(http, url, app, "bob", joined_bob["resumeToken"])
            assert reply["resumed"] is True
            assert value(await scrape(http, url), "consilium_sessions_resumed_total") == 1

            # A short grace period that runs out.
            app[SETTINGS].resume_grace_s = 0.3
            carol = Client(http, url, token(app, "carol"))
            await carol.join()
            drop(carol)
            while (await alice.next("participant-left"))["participantId"] != carol.id:
                pass
            # A session whose kept messages overflow ends before its (long) grace period.
            monkeypatch.setattr(
                signaling.ws,
                "_resume_limits",
                lambda _: ResumeLimits(grace_ms=60_000, max_messages=1),
            )
            dave = Client(http, url, token(app, "dave"))
            await dave.join()
            drop(dave)
            for n in range(3):
                await alice.post(f"a{n}", "while dave is away")
            while (await alice.next("participant-left"))["participantId"] != dave.id:
                pass
            found = await scrape(http, url)
            assert value(found, "consilium_resume_grace_expired_total", reason="timeout") == 1
            assert value(found, "consilium_resume_grace_expired_total", reason="overflow") == 1
            assert value(found, "consilium_sessions_resumed_total") == 1
        finally:
            await alice.close()
