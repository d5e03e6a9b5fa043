"""The REST API of a running server: rooms, participants, tokens, auth and hostile requests.

Most tests need no media; the ones that do are marked ``webrtc`` and must run inside the
loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q tests/test_rest_api.py
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml

from signaling.auth import TokenAuthority
from signaling.config import Settings
from signaling.messages import MAX_MESSAGE_BYTES
from tools.synthetic_client import SyntheticParticipant

T = 30.0
API_KEY = "test-api-key-0123456789"
SECRET = "rest-test-secret-0123456789abcdef"
OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
ROOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _settings(**overrides: Any) -> Settings:
    return Settings(host="127.0.0.1", port=0, ice_hosts=["127.0.0.1"], **overrides)


SECURED = _settings(api_key=API_KEY, secret=SECRET)
KEY = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    body: Any = None,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, parsed JSON body or raw text)."""
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if body is not None:
        kwargs["json"] = body
    if data is not None:
        kwargs["data"] = data
    async with http.request(method, url, **kwargs) as resp:
        text = await resp.text()
    try:
        return resp.status, json.loads(text) if text else None
    except ValueError:
        return resp.status, text


def assert_error(status: int, body: Any, expected: int | set[int], code: str | None = None) -> None:
    """A 4xx with the contract's envelope {"error": {"code", "message"}}."""
    allowed = {expected} if isinstance(expected, int) else expected
    assert status in allowed, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    assert isinstance(body["error"].get("code"), str) and body["error"]["code"], body
    assert isinstance(body["error"].get("message"), str), body
    if code is not None:
        assert body["error"]["code"] == code, body


def assert_room(room: Any, room_id: str, participants: int, max_participants: int) -> None:
    assert isinstance(room, dict)
    assert set(room) >= {"id", "participants", "maxParticipants", "createdAt"}
    assert room["id"] == room_id
    assert room["participants"] == participants
    assert room["maxParticipants"] == max_participants
    assert isinstance(room["createdAt"], int) and room["createdAt"] > 0


def listener(server: Any, room: str, name: str, **kw: Any) -> SyntheticParticipant:
    """A participant that publishes nothing (no WebRTC unless someone else publishes)."""
    return SyntheticParticipant(
        server.url, room=room, name=name, publish_audio=False, publish_video=False, **kw
    )


# --------------------------------------------------------------------------- health and rooms


async def test_healthz(server: Any, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", server.url + "/healthz")
    assert status == 200
    assert body == {"status": "ok", "rooms": 0, "participants": 0}


async def test_create_get_list_rooms(server: Any, http: aiohttp.ClientSession) -> None:
    status, room = await call(
        http, "POST", server.url + "/api/rooms", body={"id": "ward-7", "maxParticipants": 4}
    )
    assert status == 201
    assert_room(room, "ward-7", 0, 4)

    status, got = await call(http, "GET", server.url + "/api/rooms/ward-7")
    assert status == 200
    assert got == room

    # No body at all: a random, valid id and the server's default size.
    status, anonymous = await call(http, "POST", server.url + "/api/rooms")
    assert status == 201
    assert ROOM_ID.match(anonymous["id"])
    assert anonymous["maxParticipants"] == server.settings.max_participants

    status, listing = await call(http, "GET", server.url + "/api/rooms")
    assert status == 200
    assert sorted(r["id"] for r in listing["rooms"]) == sorted(["ward-7", anonymous["id"]])

    # An explicitly created room survives being empty.
    status, health = await call(http, "GET", server.url + "/healthz")
    assert health["rooms"] == 2


async def test_duplicate_room_is_409(server: Any, http: aiohttp.ClientSession) -> None:
    assert (await call(http, "POST", server.url + "/api/rooms", body={"id": "twice"}))[0] == 201
    status, body = await call(http, "POST", server.url + "/api/rooms", body={"id": "twice"})
    assert_error(status, body, 409)


@pytest.mark.parametrize(
    "room_id",
    ["has space", "x" * 65, "é", "../etc", "a/b", 5, True, ["a"], {"id": "a"}, "", 0],
    ids=repr,
)
async def test_create_room_bad_id_is_400(
    server: Any, http: aiohttp.ClientSession, room_id: Any
) -> None:
    status, body = await call(http, "POST", server.url + "/api/rooms", body={"id": room_id})
    assert_error(status, body, 400, "bad-field")
    assert server.sfu.rooms == {}


@pytest.mark.parametrize("max_participants", [0, -1, "4", True, 2.5, [4], 10**12], ids=repr)
async def test_create_room_bad_max_participants_is_400(
    server: Any, http: aiohttp.ClientSession, max_participants: Any
) -> None:
    status, body = await call(
        http,
        "POST",
        server.url + "/api/rooms",
        body={"id": "r", "maxParticipants": max_participants},
    )
    assert_error(status, body, 400, "bad-field")
    assert server.sfu.rooms == {}


async def test_unknown_room_is_404(server: Any, http: aiohttp.ClientSession) -> None:
    for method, path in [
        ("GET", "/api/rooms/nowhere"),
        ("DELETE", "/api/rooms/nowhere"),
        ("GET", "/api/rooms/nowhere/participants"),
        ("DELETE", "/api/rooms/nowhere/participants/someone"),
    ]:
        status, body = await call(http, method, server.url + path)
        assert_error(status, body, 404, "room-not-found")


# --------------------------------------------------------------------------- participants


@pytest.mark.webrtc
async def test_participants_list_shows_joined_participants(
    server: Any, http: aiohttp.ClientSession
) -> None:
    alice = SyntheticParticipant(
        server.url, room="consult", name="Dr Alice", role="host", video_size=(160, 120)
    )
    watcher = listener(server, "consult", "Student", role="observer")
    try:
        await alice.join()
        await watcher.join()
        status, body = await call(http, "GET", server.url + "/api/rooms/consult/participants")
        assert status == 200
        people = {p["id"]: p for p in body["participants"]}
        assert set(people) == {alice.identity, watcher.identity}
        a = people[alice.identity]
        assert (a["name"], a["role"], sorted(a["publishing"])) == (
            "Dr Alice",
            "host",
            ["audio", "video"],
        )
        assert a["audioMuted"] is False and a["videoMuted"] is False
        assert isinstance(a["joinedAt"], int)
        w = people[watcher.identity]
        assert (w["name"], w["role"], w["publishing"]) == ("Student", "observer", [])

        # Mute state shows up too.
        await alice.send({"type": "mute", "kind": "audio", "muted": True})
        await watcher.next_message("participant-updated", timeout=T)
        status, body = await call(http, "GET", server.url + "/api/rooms/consult/participants")
        people = {p["id"]: p for p in body["participants"]}
        assert people[alice.identity]["audioMuted"] is True

        status, room = await call(http, "GET", server.url + "/api/rooms/consult")
        assert status == 200 and room["participants"] == 2
    finally:
        await alice.leave()
        await watcher.leave()


async def test_delete_participant(server: Any, http: aiohttp.ClientSession) -> None:
    bob = listener(server, "consult", "Bob")
    carol = listener(server, "consult", "Carol")
    try:
        await bob.join()
        await carol.join()
        url = f"{server.url}/api/rooms/consult/participants/{bob.identity}"
        status, _ = await call(http, "DELETE", url)
        assert status == 204

        removed = await bob.next_message("removed", timeout=T)
        assert removed["reason"] == "removed-by-host"
        await bob.wait_for(lambda: not bob.connected, timeout=T)
        left = await carol.next_message("participant-left", timeout=T)
        assert left["participantId"] == bob.identity

        status, body = await call(http, "GET", server.url + "/api/rooms/consult/participants")
        assert [p["id"] for p in body["participants"]] == [carol.identity]

        status, body = await call(http, "DELETE", url)
        assert_error(status, body, 404)
    finally:
        await bob.leave()
        await carol.leave()


async def test_delete_room_removes_everyone(server: Any, http: aiohttp.ClientSession) -> None:
    assert (await call(http, "POST", server.url + "/api/rooms", body={"id": "closing"}))[0] == 201
    people = [listener(server, "closing", n) for n in ("Dan", "Eve")]
    try:
        for p in people:
            await p.join()
        status, _ = await call(http, "DELETE", server.url + "/api/rooms/closing")
        assert status == 204
        for p in people:
            removed = await p.next_message("removed", timeout=T)
            assert removed["reason"] == "room-closed"
            await p.wait_for(lambda p=p: not p.connected, timeout=T)
        status, body = await call(http, "GET", server.url + "/api/rooms/closing")
        assert_error(status, body, 404, "room-not-found")
        status, body = await call(http, "DELETE", server.url + "/api/rooms/closing")
        assert_error(status, body, 404, "room-not-found")
        status, health = await call(http, "GET", server.url + "/healthz")
        assert (health["rooms"], health["participants"]) == (0, 0)
    finally:
        for p in people:
            await p.leave()


# --------------------------------------------------------------------------- tokens


async def test_mint_token_and_join_with_it(server: Any, http: aiohttp.ClientSession) -> None:
    request = {
        "room": "ward",
        "identity": "dr-x",
        "name": "Dr X",
        "role": "specialist",
        "ttlSeconds": 600,
    }
    status, body = await call(http, "POST", server.url + "/api/tokens", body=request)
    assert status == 201
    assert set(body) >= {"token", "identity", "expiresAt", "url"}
    assert body["identity"] == "dr-x"
    assert body["url"] == f"/?token={body['token']}"
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert claims["exp"] == body["expiresAt"]
    assert claims["exp"] - claims["iat"] == 600
    assert (claims["sub"], claims["room"], claims["role"]) == ("dr-x", "ward", "specialist")

    p = listener(server, "ward", "ignored", token=body["token"])
    try:
        joined = await p.join()
        assert joined["self"]["id"] == "dr-x"
        assert joined["self"]["name"] == "Dr X"
        assert joined["room"] == "ward"
    finally:
        await p.leave()


async def test_mint_token_without_identity_picks_one(
    server: Any, http: aiohttp.ClientSession
) -> None:
    request = {"room": "ward", "name": "Nurse", "role": "bedside"}
    status, first = await call(http, "POST", server.url + "/api/tokens", body=request)
    status2, second = await call(http, "POST", server.url + "/api/tokens", body=request)
    assert (status, status2) == (201, 201)
    assert first["identity"] and first["identity"] != second["identity"]


@pytest.mark.parametrize(
    "request_body",
    [
        {"room": "ward", "name": "X", "role": "surgeon"},
        {"room": "ward", "name": "X", "role": "observer", "permissions": ["publish"]},
        {"room": "ward", "name": "X", "role": "observer", "permissions": ["subscribe", "admin"]},
        {"room": "ward", "name": "X", "role": "specialist", "permissions": ["admin"]},
        {"room": "ward", "name": "X", "role": "host", "permissions": "publish"},
        {"room": "ward", "name": "X", "role": "host", "permissions": ["fly"]},
        {"room": "ward", "name": "X", "role": "host", "ttlSeconds": 0},
        {"room": "ward", "name": "X", "role": "host", "ttlSeconds": "60"},
        {"room": "ward", "name": "X", "role": "host", "ttlSeconds": 10**9},
        {"room": "ward", "name": "X", "role": "host", "identity": "i" * 65},
        {"room": "ward", "name": "X", "role": "host", "identity": 7},
        {"room": "bad room", "name": "X", "role": "host"},
        {"name": "X", "role": "host"},
        {"room": "ward", "role": "host"},
        {"room": "ward", "name": "X" * 200, "role": "host"},
    ],
    ids=lambda b: json.dumps(b)[:60],
)
async def test_mint_token_bad_request_is_400(
    server: Any, http: aiohttp.ClientSession, request_body: dict[str, Any]
) -> None:
    status, body = await call(http, "POST", server.url + "/api/tokens", body=request_body)
    assert_error(status, body, 400, "bad-field")


# --------------------------------------------------------------------------- API key and JWT auth


def _admin_token(room: str, role: str = "host", **kw: Any) -> str:
    return TokenAuthority(SECRET).mint(
        room=room, identity=f"{role}-{room}", name="Admin", role=role, now_s=int(time.time()), **kw
    )


@pytest.mark.parametrize("server_settings", [SECURED], ids=["api-key"])
async def test_api_key_is_required(server: Any, http: aiohttp.ClientSession) -> None:
    url = server.url
    for method, path, body in [
        ("GET", "/api/rooms", None),
        ("POST", "/api/rooms", {"id": "x"}),
        ("GET", "/api/rooms/x", None),
        ("DELETE", "/api/rooms/x", None),
        ("GET", "/api/rooms/x/participants", None),
        ("DELETE", "/api/rooms/x/participants/y", None),
        ("POST", "/api/tokens", {"room": "x", "name": "n", "role": "host"}),
    ]:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": API_KEY},
            {"Authorization": f"Basic {API_KEY}"},
        ):
            status, reply = await call(http, method, url + path, body=body, headers=headers)
            assert_error(status, reply, {401, 403})
    assert server.sfu.rooms == {}
    # Health stays open for load balancers.
    assert (await call(http, "GET", url + "/healthz"))[0] == 200


@pytest.mark.parametrize("server_settings", [SECURED], ids=["api-key"])
async def test_api_key_grants_access(server: Any, http: aiohttp.ClientSession) -> None:
    status, room = await call(
        http, "POST", server.url + "/api/rooms", body={"id": "x"}, headers=KEY
    )
    assert status == 201
    status, body = await call(http, "GET", server.url + "/api/rooms", headers=KEY)
    assert status == 200 and [r["id"] for r in body["rooms"]] == ["x"]
    status, body = await call(http, "GET", server.url + "/api/rooms/x/participants", headers=KEY)
    assert status == 200 and body == {"participants": []}
    status, body = await call(
        http,
        "POST",
        server.url + "/api/tokens",
        body={"room": "x", "name": "n", "role": "host"},
        headers=KEY,
    )
    assert status == 201
    # The minted token is signed with the configured secret.
    TokenAuthority(SECRET).verify(body["token"], room="x", now_s=int(time.time()))
    # With a secret configured there are no dev tokens.
    status, body = await call(http, "GET", server.url + "/api/dev-token?room=x&name=n")
    assert_error(status, body, 404)


@pytest.mark.parametrize("server_settings", [SECURED], ids=["api-key"])
async def test_room_admin_jwt_is_limited_to_its_room(
    server: Any, http: aiohttp.ClientSession
) -> None:
    for room_id in ("x", "y"):
        status, _ = await call(
            http, "POST", server.url + "/api/rooms", body={"id": room_id}, headers=KEY
        )
        assert status == 201
    member = listener(server, "x", "Member", token=_admin_token("x", "specialist"))
    try:
        await member.join()
        admin_x = {"Authorization": f"Bearer {_admin_token('x')}"}
        status, body = await call(
            http, "GET", server.url + "/api/rooms/x/participants", headers=admin_x
        )
        assert status == 200
        assert [p["id"] for p in body["participants"]] == [member.identity]

        # Not another room's participants, not the global endpoints, not token minting.
        for method, path, body_ in [
            ("GET", "/api/rooms/y/participants", None),
            ("DELETE", f"/api/rooms/y/participants/{member.identity}", None),
            ("GET", "/api/rooms", None),
            ("POST", "/api/rooms", {"id": "z"}),
            ("DELETE", "/api/rooms/y", None),
            ("POST", "/api/tokens", {"room": "x", "name": "n", "role": "host"}),
        ]:
            status, reply = await call(http, method, server.url + path, body=body_, headers=admin_x)
            assert_error(status, reply, {401, 403})
        assert sorted(server.sfu.rooms) == ["x", "y"]

        # A participant token without admin, or an expired admin token, is refused.
        not_admin = {"Authorization": f"Bearer {_admin_token('x', 'specialist')}"}
        status, reply = await call(
            http, "GET", server.url + "/api/rooms/x/participants", headers=not_admin
        )
        assert_error(status, reply, 403)
        expired = TokenAuthority(SECRET).mint(
            room="x",
            identity="old",
            name="Old",
            role="host",
            ttl_s=60,
            now_s=int(time.time()) - 7200,
        )
        status, reply = await call(
            http,
            "GET",
            server.url + "/api/rooms/x/participants",
            headers={"Authorization": f"Bearer {expired}"},
        )
        assert_error(status, reply, 401)
        forged = TokenAuthority("not-the-server-secret-0123456789ab").mint(
            room="x", identity="f", name="F", role="host", now_s=int(time.time())
        )
        status, reply = await call(
            http,
            "GET",
            server.url + "/api/rooms/x/participants",
            headers={"Authorization": f"Bearer {forged}"},
        )
        assert_error(status, reply, 401)

        # The room's admin may remove someone from it.
        status, _ = await call(
            http,
            "DELETE",
            f"{server.url}/api/rooms/x/participants/{member.identity}",
            headers=admin_x,
        )
        assert status == 204
        assert (await member.next_message("removed", timeout=T))["reason"] == "removed-by-host"
    finally:
        await member.leave()


# --------------------------------------------------------------------------- hostile bodies


@pytest.mark.parametrize("path", ["/api/rooms", "/api/tokens"])
@pytest.mark.parametrize(
    "raw",
    ['{"id": ', "not json", "[1, 2]", '"room"', "null"],
    ids=["truncated", "text", "array", "string", "null"],
)
async def test_malformed_json_body_is_400(
    server: Any, http: aiohttp.ClientSession, path: str, raw: str
) -> None:
    status, body = await call(
        http,
        "POST",
        server.url + path,
        data=raw.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, body, 400, "bad-json")
    assert server.sfu.rooms == {}


async def _chunked_body(size: int) -> AsyncIterator[bytes]:
    yield b'{"id": "x", "pad": "'
    sent = 0
    while sent < size:
        yield b"a" * 8192
        sent += 8192
    yield b'"}'


@pytest.mark.parametrize("path", ["/api/rooms", "/api/tokens"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_is_413(
    server: Any, http: aiohttp.ClientSession, path: str, chunked: bool
) -> None:
    size = 4 * MAX_MESSAGE_BYTES
    data: Any = _chunked_body(size) if chunked else b'{"pad": "' + b"a" * size + b'"}'
    async with http.post(
        server.url + path, data=data, headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
    assert server.sfu.rooms == {}
    # The server is fine afterwards.
    assert (await call(http, "GET", server.url + "/healthz"))[0] == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_oversized_body_error_uses_the_contract_envelope(
    server: Any, http: aiohttp.ClientSession, chunked: bool
) -> None:
    size = 4 * MAX_MESSAGE_BYTES
    data: Any = _chunked_body(size) if chunked else b'{"pad": "' + b"a" * size + b'"}'
    status, body = await call(
        http,
        "POST",
        server.url + "/api/rooms",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    assert_error(status, body, 413)


# --------------------------------------------------------------------------- docs vs router

# Served by the app but not in docs/openapi.yaml yet (the lead was asked to document it).
# Once documented it is in both sets and this allowance is harmless.
UNDOCUMENTED_ALLOWED: set[tuple[str, str]] = set()
NOT_REST = {"/", "/ws"}


def test_openapi_paths_match_the_router(server: Any) -> None:
    doc = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    documented = {
        (method, path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "put", "post", "delete", "patch", "options"}
    }
    routed: set[tuple[str, str]] = set()
    for route in server.app.router.routes():
        method = route.method.lower()
        path = route.resource.canonical if route.resource is not None else ""
        if method in {"head", "*"} or path in NOT_REST or path.startswith("/static"):
            continue
        routed.add((method, path))
    assert documented - routed == set(), "documented but not served"
    assert routed - documented - UNDOCUMENTED_ALLOWED == set(), "served but not documented"
