"""The audit trail of a running server: joins, leaves and refused tokens are recorded, and
`GET /api/rooms/{room}/audit` pages through a room's entries for admins only.

Uses sockets on loopback: run inside the namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q tests/test_audit_api.py
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from signaling.app import create_app
from signaling.appkeys import AUDIT
from signaling.auth import TokenAuthority
from signaling.config import Settings
from signaling.messages import PROTOCOL_VERSION

T = 20.0
API_KEY = "audit-api-key-0123456789"
SECRET = "audit-test-secret-0123456789abcdef01"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Any]]:
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
        yield str(server.make_url("")).rstrip("/"), app
    finally:
        await server.close()


def _token(room: str, identity: str, role: str) -> str:
    return TokenAuthority(SECRET).mint(
        room=room, identity=identity, name=identity, role=role, ttl_s=600, now_s=int(time.time())
    )


async def _join_and_leave(http: aiohttp.ClientSession, url: str, token: str) -> dict[str, Any]:
    async with http.ws_connect(url.replace("http", "ws", 1) + "/ws") as ws:
        join = {"type": "join", "token": token, "version": PROTOCOL_VERSION, "room": "ward"}
        await ws.send_str(json.dumps(join))
        first = json.loads((await ws.receive(timeout=T)).data)
        if first["type"] == "joined":
            await ws.send_str(json.dumps({"type": "leave"}))
            while not ws.closed:
                msg = await ws.receive(timeout=T)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
        result: dict[str, Any] = first
        return result


async def test_joins_leaves_and_refusals_are_audited_and_paged(served: tuple[str, Any]) -> None:
    url, app = served
    key = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as http:
        joined = await _join_and_leave(http, url, _token("ward", "dr-a", "specialist"))
        assert joined["type"] == "joined"
        # Forged tokens (signature altered) on the socket and on REST: refused and recorded.
        forged = _token("ward", "x", "host")[:-4] + "AAAA"
        refused = await _join_and_leave(http, url, forged)
        assert refused["type"] == "error" and refused["fatal"] is True
        forged_header = {"Authorization": f"Bearer {forged}"}
        async with http.get(f"{url}/api/rooms/ward/audit", headers=forged_header) as resp:
            assert resp.status == 401

        # A non-admin token may not read the trail; a host token of the room may.
        nurse = {"Authorization": f"Bearer {_token('ward', 'n-1', 'bedside')}"}
        async with http.get(f"{url}/api/rooms/ward/audit", headers=nurse) as resp:
            assert resp.status == 403
        async with http.get(f"{url}/api/rooms/ward/audit") as resp:
            assert resp.status == 401
        host = {"Authorization": f"Bearer {_token('ward', 'h-1', 'host')}"}
        async with http.get(f"{url}/api/rooms/ward/audit", headers=host) as resp:
            assert resp.status == 200
            body = await resp.json()
        events = [(e["event"], e["actor"]) for e in body["entries"]]
        assert events[:2] == [("participant-joined", "dr-a"), ("participant-left", "dr-a")]
        assert body["entries"][0]["details"] == {"role": "specialist"}
        refusals = [e for e in body["entries"] if e["event"] == "token-refused"]
        assert len(refusals) == 2 and all(e["actor"] == "unknown" for e in refusals)
        assert body["next"] is None
        assert all(len(e["hash"]) == 64 for e in body["entries"])

        # Paging: one at a time, following `next`, yields the same entries in order.
        seqs: list[int] = []
        after = 0
        while True:
            async with http.get(
                f"{url}/api/rooms/ward/audit?after={after}&limit=1", headers=key
            ) as resp:
                assert resp.status == 200
                page = await resp.json()
            seqs += [e["seq"] for e in page["entries"]]
            if page["next"] is None:
                break
            after = page["next"]
        assert seqs == [e["seq"] for e in body["entries"]]
        for bad in ("limit=0", "limit=501", "after=-1", "after=x"):
            async with http.get(f"{url}/api/rooms/ward/audit?{bad}", headers=key) as resp:
                assert resp.status == 400, bad
        async with http.get(f"{url}/api/rooms/elsewhere/audit", headers=key) as resp:
            assert (await resp.json())["entries"] == []
    assert app[AUDIT].verify().ok
