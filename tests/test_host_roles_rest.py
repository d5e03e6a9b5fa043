"""Host role changes (WebSocket and REST), REST mute/end, and ended rooms surviving a restart.

Signaling only (no media), so these run without the loopback namespace too.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from signaling.app import create_app
from signaling.appkeys import AUDIT, SFU
from signaling.auth import TokenAuthority
from signaling.config import Settings
from signaling.messages import PROTOCOL_VERSION, ProtocolError, SetRole, parse_client_message

T = 20.0
API_KEY = "roles-api-key-0123456789"
SECRET = "roles-test-secret-0123456789abcdef01"
KEY = {"Authorization": f"Bearer {API_KEY}"}


@asynccontextmanager
async def _serve(data_dir: Path) -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        ice_hosts=["127.0.0.1"],
        secret=SECRET,
        api_key=API_KEY,
        recordings_dir=str(data_dir / "rec"),
        data_dir=str(data_dir),
    )
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


def _token(room: str, identity: str, role: str) -> str:
    return TokenAuthority(SECRET).mint(
        room=room, identity=identity, name=identity, role=role, ttl_s=600, now_s=int(time.time())
    )


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def next(self, type_: str) -> dict[str, Any]:
        """The next message of this type; others are skipped."""
        while True:
            msg = await self.ws.receive(timeout=T)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket closed while waiting for {type_}: {msg}")
            data: dict[str, Any] = json.loads(msg.data)
            if data["type"] == type_:
                return data


@asynccontextmanager
async def _joined(
    http: aiohttp.ClientSession, url: str, room: str, identity: str, role: str
) -> AsyncIterator[tuple[Client, dict[str, Any]]]:
    async with http.ws_connect(url.replace("http", "ws", 1) + "/ws") as ws:
        client = Client(ws)
        token = _token(room, identity, role)
        await client.send({"type": "join", "token": token, "version": PROTOCOL_VERSION})
        first = json.loads((await ws.receive(timeout=T)).data)
        yield client, first


def test_set_role_parses_and_refuses_unknown_roles() -> None:
    assert parse_client_message('{"type":"set-role","participantId":"a","role":"observer"}') == (
        SetRole("a", "observer")
    )
    for bad in (
        '{"type":"set-role","participantId":"a","role":"admin"}',
        '{"type":"set-role","participantId":"a"}',
        '{"type":"set-role","role":"host"}',
    ):
        with pytest.raises(ProtocolError) as err:
            parse_client_message(bad)
        assert err.value.code == "bad-field"


async def test_host_changes_a_role_and_it_outlasts_a_reconnect(tmp_path: Path) -> None:
    async with (
        _serve(tmp_path) as (url, app),
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http,
        _joined(http, url, "ward", "dr-h", "host") as (host, _),
    ):
        async with _joined(http, url, "ward", "dr-s", "specialist") as (spec, joined):
            assert "chat" in joined["self"]["permissions"]
            # A specialist may not change roles.
            await spec.send({"type": "set-role", "participantId": "dr-h", "role": "observer"})
            assert (await spec.next("error"))["code"] == "forbidden"

            await host.send({"type": "set-role", "participantId": "dr-s", "role": "observer"})
            changed = await spec.next("role-changed")
            assert changed == {
                "type": "role-changed",
                "role": "observer",
                "permissions": ["subscribe"],
            }
            update = await host.next("participant-updated")
            assert update["participant"]["id"] == "dr-s"
            assert update["participant"]["role"] == "observer"
            session = app[SFU].rooms["ward"].sessions["dr-s"]
            assert session.role == "observer" and not session.can_publish
            await spec.send({"type": "leave"})

        # Rejoining with the old specialist token keeps the role the host gave.
        async with _joined(http, url, "ward", "dr-s", "specialist") as (spec, joined):
            assert joined["self"]["role"] == "observer"
            assert joined["self"]["permissions"] == ["subscribe"]

            # REST (API key): back to specialist.
            async with http.put(
                f"{url}/api/rooms/ward/participants/dr-s/role",
                json={"role": "specialist"},
                headers=KEY,
            ) as resp:
                assert resp.status == 200
                assert (await resp.json())["participant"]["role"] == "specialist"
            changed = await spec.next("role-changed")
            assert changed["permissions"] == ["chat", "publish", "subscribe"]
            async with http.put(
                f"{url}/api/rooms/ward/participants/dr-s/role", json={"role": "root"}, headers=KEY
            ) as resp:
                assert resp.status == 400
            async with http.put(
                f"{url}/api/rooms/ward/participants/nobody/role",
                json={"role": "host"},
                headers=KEY,
            ) as resp:
                assert resp.status == 404

        changes = [
            (e["actor"], e["target"], e["previous"], e["role"])
            for e in app[AUDIT].entries("ward")
            if e["event"] == "role-changed"
        ]
        assert changes == [
            ("dr-h", "dr-s", "specialist", "observer"),
            ("api-key", "dr-s", "observer", "specialist"),
        ]
        refused = [e for e in app[AUDIT].entries("ward") if e["event"] == "host-control-refused"]
        assert [e["action"] for e in refused] == ["set-role"]


async def test_rest_mute_and_end_and_the_end_survives_a_restart(tmp_path: Path) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
        async with _serve(tmp_path) as (url, app):
            async with (
                _joined(http, url, "icu", "dr-h", "host") as (host, _),
                _joined(http, url, "icu", "nurse", "bedside") as (nurse, _),
            ):
                bedside = {"Authorization": f"Bearer {_token('icu', 'nurse', 'bedside')}"}
                async with http.post(
                    f"{url}/api/rooms/icu/participants/dr-h/mute", headers=bedside
                ) as resp:
                    assert resp.status == 403
                async with http.post(
                    f"{url}/api/rooms/icu/participants/nurse/mute", headers=KEY
                ) as resp:
                    assert resp.status == 204
                assert (await nurse.next("muted-by-host"))["kind"] == "audio"
                assert app[SFU].rooms["icu"].sessions["nurse"].muted_by_host

                async with http.post(f"{url}/api/rooms/icu/end", headers=bedside) as resp:
                    assert resp.status == 403
                host_token = {"Authorization": f"Bearer {_token('icu', 'dr-h', 'host')}"}
                async with http.post(f"{url}/api/rooms/icu/end", headers=host_token) as resp:
                    assert resp.status == 204
                assert (await nurse.next("consultation-ended"))["by"] == "dr-h"
                assert (await host.next("consultation-ended"))["by"] == "dr-h"
            async with _joined(http, url, "icu", "late", "specialist") as (_, first):
                assert first["type"] == "error" and first["code"] == "room-ended"
            async with http.post(f"{url}/api/rooms/other/end", headers=KEY) as resp:
                assert resp.status == 404

        # A new process on the same database still refuses the ended room, and only it.
        async with _serve(tmp_path) as (url, app):
            async with _joined(http, url, "icu", "late", "specialist") as (_, first):
                assert first["type"] == "error" and first["code"] == "room-ended"
            async with _joined(http, url, "other", "late", "specialist") as (_, first):
                assert first["type"] == "joined"
            async with http.post(f"{url}/api/rooms", json={"id": "icu"}, headers=KEY) as resp:
                assert resp.status in (409, 410)
