"""Hostile and broken WebSocket input: every case gets the contract's error code, and afterwards
the server still serves this socket (when the error is not fatal), the health check and other
rooms' media.

Run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q tests/test_signaling_bad_input.py
"""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

import sfu.room
import signaling.ws
from media.synthetic import CounterVideoTrack, ToneAudioTrack
from sfu.room import Session, Sfu
from signaling.appkeys import AUTHORITY
from signaling.auth import TokenAuthority
from signaling.config import Settings
from signaling.messages import MAX_MESSAGE_BYTES
from tools.synthetic_client import SyntheticParticipant

pytestmark = pytest.mark.webrtc

T = 30.0  # generous timeout for anything the server should do "soon"
SECRET = "bad-input-test-secret-0123456789abcdef"
# Messages the server sends on its own (room events, renegotiation); skipped when a test waits
# for the answer to what it just sent.
NOISE = {"participant-joined", "participant-updated", "participant-left", "subscribe-offer"}


def _settings(**overrides: Any) -> Settings:
    return Settings(host="127.0.0.1", port=0, ice_hosts=["127.0.0.1"], **overrides)


# --------------------------------------------------------------------------- helpers


class WsClient:
    """A bare protocol-v1 WebSocket client that does exactly what the test says."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, label: str) -> None:
        self.ws = ws
        self.label = label
        self.messages: list[dict[str, Any]] = []
        self.identity: str | None = None

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def send_raw(self, payload: str | bytes) -> None:
        if isinstance(payload, bytes):
            await self.ws.send_bytes(payload)
        else:
            await self.ws.send_str(payload)

    async def recv(self, timeout: float = T) -> dict[str, Any] | None:  # noqa: ASYNC109
        """The next JSON message, or None once the server closed the socket."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            assert isinstance(data, dict), f"{self.label}: server sent non-object {data!r}"
            self.messages.append(data)
            return data
        if msg.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.ERROR,
        ):
            return None
        raise AssertionError(f"{self.label}: unexpected frame {msg.type} {msg.data!r:.100}")

    async def expect(self, *types: str, timeout: float = T) -> dict[str, Any]:  # noqa: ASYNC109
        """The next message of one of ``types``, skipping room noise; anything else fails."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv()
                if message is None:
                    raise AssertionError(
                        f"{self.label}: socket closed (code {self.ws.close_code}) while waiting "
                        f"for {types}; got {self.messages[-5:]}"
                    )
                if message["type"] in types:
                    return message
                if message["type"] not in NOISE:
                    raise AssertionError(f"{self.label}: expected {types}, got {message}")

    async def expect_error(self, code: str, *, fatal: bool | None = None) -> dict[str, Any]:
        message = await self.expect("error")
        assert message["code"] == code, f"{self.label}: expected {code}, got {message}"
        assert isinstance(message.get("message"), str) and message["message"]
        assert isinstance(message.get("fatal"), bool)
        if fatal is not None:
            assert message["fatal"] is fatal, message
        return message

    async def expect_closed(self, timeout: float = T) -> int | None:  # noqa: ASYNC109
        """Wait until the server closes the socket; returns the close code."""
        try:
            async with asyncio.timeout(timeout):
                while await self.recv() is not None:
                    pass
        except TimeoutError:
            raise AssertionError(
                f"{self.label}: the server did not close the socket within {timeout}s; "
                f"last messages {self.messages[-3:]}"
            ) from None
        return self.ws.close_code

    async def ping_pong(self) -> None:
        await self.send({"type": "ping"})
        await self.expect("pong")

    async def join(self, token: str, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "join", "version": 1, "token": token, **extra})
        joined = await self.expect("joined")
        self.identity = joined["self"]["id"]
        return joined


Connect = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def connect(server: Any) -> AsyncIterator[Connect]:
    http = aiohttp.ClientSession()
    clients: list[WsClient] = []

    async def _connect(label: str = "client") -> WsClient:
        ws = await http.ws_connect(
            server.url + "/ws", timeout=aiohttp.ClientWSTimeout(ws_close=5.0)
        )
        client = WsClient(ws, label)
        clients.append(client)
        return client

    try:
        yield _connect
    finally:
        for client in clients:
            if not client.ws.closed:
                await client.ws.close()
        await http.close()


def mint(
    server: Any,
    room: str,
    name: str,
    role: str = "specialist",
    *,
    identity: str | None = None,
    authority: TokenAuthority | None = None,
    now_s: int | None = None,
    ttl_s: int | None = None,
) -> str:
    auth = authority or server.app[AUTHORITY]
    return auth.mint(
        room=room,
        identity=identity or f"{name.lower()}-{time.monotonic_ns()}",
        name=name,
        role=role,
        ttl_s=ttl_s,
        now_s=int(time.time()) if now_s is None else now_s,
    )


async def joined_client(
    server: Any, connect: Connect, room: str, name: str, role: str = "specialist"
) -> WsClient:
    client = await connect(name)
    await client.join(mint(server, room, name, role))
    return client


async def assert_healthy(server: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body["status"] == "ok"
    return body


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = T) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            # Server internals have no event to wait on; polling is the honest option.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


class ServerPcs:
    """Every RTCPeerConnection the SFU creates (weakly held), counted through gc."""

    def __init__(self) -> None:
        self.created: weakref.WeakSet[RTCPeerConnection] = weakref.WeakSet()

    def open(self) -> list[RTCPeerConnection]:
        gc.collect()
        return [
            o
            for o in gc.get_objects()
            if isinstance(o, RTCPeerConnection)
            and o in self.created
            and o.connectionState != "closed"
        ]


@pytest.fixture
def server_pcs(monkeypatch: pytest.MonkeyPatch) -> ServerPcs:
    pcs = ServerPcs()
    stock = Sfu.new_peer_connection

    def recording(self: Sfu) -> RTCPeerConnection:
        pc = stock(self)
        pcs.created.add(pc)
        return pc

    monkeypatch.setattr(Sfu, "new_peer_connection", recording)
    return pcs


@pytest.fixture
async def client_pcs() -> AsyncIterator[list[RTCPeerConnection]]:
    pcs: list[RTCPeerConnection] = []
    yield pcs
    for pc in pcs:
        await pc.close()


async def real_offer(pcs: list[RTCPeerConnection], name: str = "probe") -> str:
    """A complete aiortc publish offer (sendonly audio + video, candidates gathered)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pcs.append(pc)
    pc.addTransceiver(ToneAudioTrack(frequency=440.0), direction="sendonly")
    pc.addTransceiver(CounterVideoTrack(name, 160, 120, 10), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


def session_of(server: Any, room: str, identity: str | None) -> Any:
    assert identity is not None
    return server.sfu.rooms[room].sessions[identity]


# --------------------------------------------------------------------------- other-room media


def _media_progress(p: SyntheticParticipant, other: str) -> tuple[int, int]:
    media = p.received.get(other)
    if media is None or media.last_counter is None:
        return (-1, 0)
    return (media.last_counter, media.audio_frames)


@pytest.fixture
async def other_room(server: Any) -> AsyncIterator[tuple[SyntheticParticipant, ...]]:
    """Two participants streaming to each other in room "other" for the whole test."""
    a = SyntheticParticipant(server.url, room="other", name="OtherA", video_size=(160, 120))
    b = SyntheticParticipant(server.url, room="other", name="OtherB", video_size=(160, 120))
    try:
        await a.join()
        await b.join()
        for p, q in ((a, b), (b, a)):
            assert q.identity is not None
            await p.wait_for(lambda p=p, q=q: _media_progress(p, q.identity)[0] >= 0, timeout=60)
        yield a, b
    finally:
        await a.leave()
        await b.leave()


async def assert_other_room_still_streaming(pair: tuple[SyntheticParticipant, ...]) -> None:
    a, b = pair
    for p, q in ((a, b), (b, a)):
        assert q.identity is not None
        pid = q.identity
        counter0, audio0 = _media_progress(p, pid)
        await p.wait_for(
            lambda p=p, pid=pid, c=counter0, n=audio0: (
                _media_progress(p, pid)[0] >= c + 10 and _media_progress(p, pid)[1] >= n + 20
            ),
            timeout=60,
        )


# --------------------------------------------------------------------------- non-fatal errors


TOO_LARGE_TEXT = json.dumps({"type": "ping", "pad": "x" * (MAX_MESSAGE_BYTES + 10)})
# Under 64 Ki characters but over 64 KiB once UTF-8 encoded (2 bytes per "é").
TOO_LARGE_UTF8 = json.dumps({"type": "ping", "pad": "é" * 40000}, ensure_ascii=False)
VALID_LOOKING_SDP = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
)

# (id, payload, expected code) — sent by a joined participant; none of them is fatal.
NON_FATAL_AFTER_JOIN: list[tuple[str, str | bytes, str]] = [
    ("truncated-json", '{"type": "ping"', "bad-json"),
    ("not-json", "hello server", "bad-json"),
    ("invalid-utf8-binary", b"\xff\xfe\xfd", "bad-json"),
    ("array", '[{"type": "ping"}]', "bad-json"),
    ("string", '"ping"', "bad-json"),
    ("number", "42", "bad-json"),
    ("null", "null", "bad-json"),
    ("duplicate-keys", '{"type": "ping", "type": "leave"}', "bad-json"),
    ("nan", '{"type": "ping", "x": NaN}', "bad-json"),
    ("deep-nesting", "[" * 60000, "bad-json"),
    ("unknown-type", '{"type": "shutdown-server"}', "unknown-type"),
    ("long-unknown-type", json.dumps({"type": "x" * 5000}), "unknown-type"),
    ("no-type", "{}", "bad-field"),
    ("type-not-string", '{"type": 7}', "bad-field"),
    ("mute-no-muted", '{"type": "mute", "kind": "audio"}', "bad-field"),
    ("mute-bad-kind", '{"type": "mute", "kind": "screen", "muted": true}', "bad-field"),
    ("mute-muted-string", '{"type": "mute", "kind": "video", "muted": "yes"}', "bad-field"),
    ("publish-no-sdp", '{"type": "publish"}', "bad-field"),
    ("publish-sdp-number", '{"type": "publish", "sdp": 42}', "bad-field"),
    ("answer-sdp-null", '{"type": "subscribe-answer", "sdp": null}', "bad-field"),
    ("too-large-text", TOO_LARGE_TEXT, "too-large"),
    ("too-large-utf8", TOO_LARGE_UTF8, "too-large"),
    ("too-large-binary", b"{" + b" " * (MAX_MESSAGE_BYTES + 10) + b"}", "too-large"),
    (
        "answer-without-offer",
        json.dumps({"type": "subscribe-answer", "sdp": VALID_LOOKING_SDP}),
        "negotiation-failed",
    ),
]


@pytest.mark.parametrize(
    ("payload", "code"),
    [pytest.param(p, c, id=i) for i, p, c in NON_FATAL_AFTER_JOIN],
)
async def test_non_fatal_error_after_join(
    server: Any, connect: Connect, payload: str | bytes, code: str
) -> None:
    client = await joined_client(server, connect, "bad", "Mallory")
    await client.send_raw(payload)
    await client.expect_error(code, fatal=False)
    # Same socket, same session: still served.
    await client.ping_pong()
    assert client.identity in server.sfu.rooms["bad"].sessions
    assert not client.ws.closed
    await assert_healthy(server)


async def test_second_join_is_already_joined(server: Any, connect: Connect) -> None:
    token = mint(server, "bad", "Twice")
    client = await connect("twice")
    await client.join(token)
    first_identity = client.identity
    await client.send({"type": "join", "version": 1, "token": token})
    await client.expect_error("already-joined", fatal=False)
    # A different valid token must not switch this socket to another identity either.
    await client.send({"type": "join", "version": 1, "token": mint(server, "bad", "Other")})
    await client.expect_error("already-joined", fatal=False)
    await client.ping_pong()
    assert list(server.sfu.rooms["bad"].sessions) == [first_identity]


# (id, message, expected code) — sent before any join.
BEFORE_JOIN: list[tuple[str, str, str]] = [
    ("ping-first", '{"type": "ping"}', "not-joined"),
    ("publish-first", json.dumps({"type": "publish", "sdp": VALID_LOOKING_SDP}), "not-joined"),
    ("mute-first", '{"type": "mute", "kind": "audio", "muted": true}', "not-joined"),
    ("leave-first", '{"type": "leave"}', "not-joined"),
    ("garbage-first", "{{{", "bad-json"),
    ("version-2", '{"type": "join", "version": 2, "token": "x"}', "unsupported-version"),
    ("version-0", '{"type": "join", "version": 0, "token": "x"}', "unsupported-version"),
    ("version-string", '{"type": "join", "version": "1", "token": "x"}', "bad-field"),
    ("version-missing", '{"type": "join", "token": "x"}', "bad-field"),
    ("version-bool", '{"type": "join", "version": true, "token": "x"}', "bad-field"),
    ("token-number", '{"type": "join", "version": 1, "token": 5}', "bad-field"),
    ("bad-room-field", '{"type": "join", "version": 1, "token": "x", "room": "a b"}', "bad-field"),
]


@pytest.mark.parametrize(("payload", "code"), [pytest.param(p, c, id=i) for i, p, c in BEFORE_JOIN])
async def test_error_before_join_then_join_works(
    server: Any, connect: Connect, payload: str, code: str
) -> None:
    client = await connect("early")
    await client.send_raw(payload)
    await client.expect_error(code, fatal=False)
    assert server.sfu.participant_count() == 0
    # The socket is still usable: a proper join succeeds on it.
    await client.join(mint(server, "late", "Late"))
    await client.ping_pong()
    assert client.identity in server.sfu.rooms["late"].sessions


async def test_join_without_token_is_token_missing(server: Any, connect: Connect) -> None:
    for join in (
        {"type": "join", "version": 1},
        {"type": "join", "version": 1, "token": ""},
        {"type": "join", "version": 1, "token": "   "},
    ):
        client = await connect("tokenless")
        await client.send(join)
        error = await client.expect_error("token-missing")
        # Either way is allowed by the contract, but "fatal" must tell the truth.
        if error["fatal"]:
            await client.expect_closed()
        else:
            await client.send({"type": "ping"})
            await client.expect_error("not-joined", fatal=False)
    assert server.sfu.participant_count() == 0
    assert server.sfu.rooms == {}


# --------------------------------------------------------------------------- frame limits


async def test_frame_over_hard_limit_closes_socket_but_not_server(
    server: Any, connect: Connect, other_room: tuple[SyntheticParticipant, ...]
) -> None:
    victim_room = "bad"
    witness = await joined_client(server, connect, victim_room, "Witness")
    attacker = await joined_client(server, connect, victim_room, "Attacker")
    await witness.expect("participant-joined")

    await attacker.send_raw("x" * (4 * MAX_MESSAGE_BYTES + 1))
    code = await attacker.expect_closed()
    assert code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG

    left = await witness.expect("participant-left")
    assert left["participantId"] == attacker.identity
    await eventually(
        lambda: attacker.identity not in server.sfu.rooms[victim_room].sessions,
        "the attacker's session is removed",
    )
    await witness.ping_pong()
    await assert_healthy(server)
    # New sockets are still served.
    await joined_client(server, connect, victim_room, "Newcomer")
    await assert_other_room_still_streaming(other_room)


async def test_bad_input_barrage_does_not_disturb_another_room(
    server: Any,
    connect: Connect,
    client_pcs: list[RTCPeerConnection],
    other_room: tuple[SyntheticParticipant, ...],
) -> None:
    attacker = await joined_client(server, connect, "bad", "Barrage")
    for _, payload, code in NON_FATAL_AFTER_JOIN:
        await attacker.send_raw(payload)
        await attacker.expect_error(code, fatal=False)
    offer = await real_offer(client_pcs)
    for hostile in (HOSTILE_SDP["garbage"], HOSTILE_SDP["made-up-codecs-only"]):
        await attacker.send({"type": "publish", "sdp": hostile(offer)})
        await attacker.expect_error("bad-sdp", fatal=False)
    await attacker.ping_pong()

    forged = await connect("forged")
    await forged.send({"type": "join", "version": 1, "token": "not.a.jwt"})
    await forged.expect_error("token-invalid", fatal=True)
    await forged.expect_closed()

    huge = await joined_client(server, connect, "bad", "Huge")
    await huge.send_raw(b"\x00" * (4 * MAX_MESSAGE_BYTES + 1))
    await huge.expect_closed()

    await assert_healthy(server)
    await assert_other_room_still_streaming(other_room)


# --------------------------------------------------------------------------- tokens


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(room: str, role: str = "specialist", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "consilium",
        "sub": f"id-{time.monotonic_ns()}",
        "room": room,
        "name": "Eve",
        "role": role,
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def _bad_token(kind: str, server: Any) -> tuple[str, dict[str, Any]]:
    """(token, extra join fields) for one kind of bad token."""
    authority: TokenAuthority = server.app[AUTHORITY]
    now = int(time.time())
    if kind == "garbage":
        return "definitely-not-a-token", {}
    if kind == "forged":
        return mint(
            server,
            "roomA",
            "Eve",
            authority=TokenAuthority("someone-elses-secret-0123456789abcdef"),
        ), {}
    if kind == "expired":
        return mint(server, "roomA", "Eve", authority=authority, now_s=now - 7200, ttl_s=60), {}
    if kind == "wrong-room":
        return mint(server, "roomA", "Eve", authority=authority), {"room": "roomB"}
    if kind == "alg-none":
        return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims('roomA', 'host'))}.", {}
    if kind == "tampered":
        header, _, signature = mint(server, "roomA", "Eve", "observer").split(".")
        return f"{header}.{_b64(_claims('roomA', 'host'))}.{signature}", {}
    if kind == "huge":
        return "a" * 5000, {}
    raise AssertionError(kind)


TOKEN_CODES = {
    "garbage": "token-invalid",
    "forged": "token-invalid",
    "expired": "token-expired",
    "wrong-room": "token-wrong-room",
    "alg-none": "token-invalid",
    "tampered": "token-invalid",
    "huge": "token-invalid",
}


@pytest.mark.parametrize(
    "server_settings",
    [pytest.param(_settings(), id="dev-mode"), pytest.param(_settings(secret=SECRET), id="secret")],
)
@pytest.mark.parametrize("kind", sorted(TOKEN_CODES))
async def test_bad_token_is_fatal(server: Any, connect: Connect, kind: str) -> None:
    token, extra = _bad_token(kind, server)
    client = await connect(kind)
    await client.send({"type": "join", "version": 1, "token": token, **extra})
    await client.expect_error(TOKEN_CODES[kind], fatal=True)
    await client.expect_closed()
    # Refused before anything was allocated: no session, not even an empty room.
    assert server.sfu.participant_count() == 0
    assert server.sfu.rooms == {}
    await assert_healthy(server)


@pytest.mark.parametrize("server_settings", [_settings(secret=SECRET)], ids=["secret"])
@pytest.mark.parametrize(
    ("role", "permissions"),
    [
        ("host", ["admin", "chat", "publish", "record", "subscribe"]),
        ("specialist", ["chat", "publish", "subscribe"]),
        ("bedside", ["chat", "publish", "subscribe"]),
        ("observer", ["subscribe"]),
    ],
)
async def test_valid_token_joins_with_role_permissions(
    server: Any, connect: Connect, role: str, permissions: list[str]
) -> None:
    authority = TokenAuthority(SECRET)
    token = mint(server, "roomA", "Dr Who", role, identity=f"{role}-1", authority=authority)
    client = await connect(role)
    joined = await client.join(token, room="roomA")
    assert joined["version"] == 1
    assert joined["room"] == "roomA"
    assert joined["self"]["id"] == f"{role}-1"
    assert joined["self"]["name"] == "Dr Who"
    assert joined["self"]["role"] == role
    assert sorted(joined["self"]["permissions"]) == permissions
    assert joined["maxMessageBytes"] == MAX_MESSAGE_BYTES
    await client.ping_pong()


@pytest.mark.parametrize("server_settings", [_settings(secret=SECRET)], ids=["secret"])
@pytest.mark.parametrize("claimed", [None, ["publish", "subscribe"], ["publish"]])
async def test_observer_cannot_publish(
    server: Any,
    connect: Connect,
    server_pcs: ServerPcs,
    client_pcs: list[RTCPeerConnection],
    claimed: list[str] | None,
) -> None:
    # A hand-signed token may claim more than the role allows; the server must intersect.
    claims = _claims("ward", "observer")
    if claimed is not None:
        claims["permissions"] = claimed
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    client = await connect("observer")
    joined = await client.join(token)
    assert "publish" not in joined["self"]["permissions"]

    await client.send({"type": "publish", "sdp": await real_offer(client_pcs)})
    await client.expect_error("forbidden", fatal=False)
    session = session_of(server, "ward", client.identity)
    assert session.publisher_pc is None
    assert session.producers == {}
    assert server_pcs.open() == []
    await client.ping_pong()


@pytest.mark.parametrize("server_settings", [_settings(secret=SECRET)], ids=["secret"])
async def test_specialist_token_without_publish_permission_is_forbidden(
    server: Any, connect: Connect, client_pcs: list[RTCPeerConnection]
) -> None:
    token = TokenAuthority(SECRET).mint(
        room="ward",
        identity="listener",
        name="Listener",
        role="specialist",
        permissions=["subscribe"],
        now_s=int(time.time()),
    )
    client = await connect("listener")
    joined = await client.join(token)
    assert joined["self"]["permissions"] == ["subscribe"]
    await client.send({"type": "publish", "sdp": await real_offer(client_pcs)})
    await client.expect_error("forbidden", fatal=False)
    assert session_of(server, "ward", "listener").publisher_pc is None


@pytest.mark.parametrize("server_settings", [_settings(secret=SECRET)], ids=["secret"])
async def test_dev_token_is_404_when_a_secret_is_set(server: Any) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/api/dev-token", params={"room": "r", "name": "n"}) as resp,
    ):
        assert resp.status == 404
        body = await resp.json()
    assert isinstance(body["error"]["code"], str)
    assert "token" not in body


async def test_dev_token_in_dev_mode_joins(server: Any, connect: Connect) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            server.url + "/api/dev-token", params={"room": "devroom", "name": "Dev", "role": "host"}
        ) as resp,
    ):
        assert resp.status in (200, 201)
        body = await resp.json()
    assert isinstance(body["token"], str) and isinstance(body["identity"], str)
    client = await connect("dev")
    joined = await client.join(body["token"])
    assert joined["self"]["id"] == body["identity"]
    assert joined["self"]["role"] == "host"
    assert "admin" in joined["self"]["permissions"]


# --------------------------------------------------------------------------- bad SDP


def _replace_codecs(sdp: str) -> str:
    """Every m-section offers only an invented codec."""
    out: list[str] = []
    for line in sdp.split("\r\n"):
        if line.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:")):
            continue
        if line.startswith("m="):
            out.append(" ".join(line.split(" ")[:3] + ["120"]))
            out.append("a=rtpmap:120 FANTASYCODEC/90000")
            continue
        out.append(line)
    return "\r\n".join(out)


def _thirty_m_lines(_: str) -> str:
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    section = (
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\n"
        "a=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    return head + "".join(section.format(i=i) for i in range(30))


def _video_section(sdp: str) -> str:
    start = sdp.index("m=video")
    end = sdp.find("\r\nm=", start)
    return sdp[start:] if end < 0 else sdp[start : end + 2]


HOSTILE_SDP: dict[str, Callable[[str], str]] = {
    "garbage": lambda _: "this is not a session description",
    "no-media": lambda _: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
    "thirty-m-lines": _thirty_m_lines,
    "application-section": lambda sdp: (
        sdp
        + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
        + "a=mid:9\r\na=sctp-port:5000\r\n"
    ),
    "two-video-sections": lambda sdp: sdp + _video_section(sdp).replace("a=mid:1", "a=mid:7"),
    "made-up-codecs-only": _replace_codecs,
    "no-ice-credentials": lambda sdp: re.sub(r"a=ice-(ufrag|pwd):\S+\r\n", "", sdp),
    "no-dtls-fingerprint": lambda sdp: re.sub(r"a=fingerprint:\S+ \S+\r\n", "", sdp),
    "long-attribute-line": lambda sdp: sdp.replace(
        "a=sendonly", "a=sendonly\r\na=x-junk:" + "y" * 40000, 1
    ),
    "long-ice-ufrag": lambda sdp: re.sub(
        r"a=ice-ufrag:\S+", "a=ice-ufrag:" + "u" * 40000, sdp, count=1
    ),
    "long-m-line": lambda sdp: re.sub(
        r"(m=video \d+ UDP/TLS/RTP/SAVPF)", r"\1" + " 97" * 12000, sdp, count=1
    ),
}


@pytest.mark.parametrize("hostile", sorted(HOSTILE_SDP))
async def test_bad_sdp_allocates_nothing(
    server: Any,
    connect: Connect,
    server_pcs: ServerPcs,
    client_pcs: list[RTCPeerConnection],
    hostile: str,
) -> None:
    offer = await real_offer(client_pcs)
    sdp = HOSTILE_SDP[hostile](offer)
    assert sdp != offer
    message = json.dumps({"type": "publish", "sdp": sdp})
    assert len(message.encode()) <= MAX_MESSAGE_BYTES, "the case must test SDP, not size"

    client = await joined_client(server, connect, "sdp", "Hostile")
    await client.send_raw(message)
    await client.expect_error("bad-sdp", fatal=False)
    session = session_of(server, "sdp", client.identity)
    assert session.publisher_pc is None
    assert session.producers == {}
    assert server_pcs.open() == [], "a refused first publish must not leave a peer connection"

    # Not fatal, and nothing half-built in the way: a proper offer is then accepted.
    await client.send({"type": "publish", "sdp": offer})
    answer = await client.expect("publish-answer")
    assert answer["sdp"].startswith("v=0")
    assert session.publisher_pc is not None


# --------------------------------------------------------------------------- room rules


@pytest.mark.parametrize("server_settings", [_settings(max_participants=2)], ids=["max2"])
async def test_third_join_is_room_full(server: Any, connect: Connect) -> None:
    first = await joined_client(server, connect, "small", "First")
    second = await joined_client(server, connect, "small", "Second")
    third = await connect("third")
    await third.send({"type": "join", "version": 1, "token": mint(server, "small", "Third")})
    await third.expect_error("room-full", fatal=True)
    await third.expect_closed()
    room = server.sfu.rooms["small"]
    assert set(room.sessions) == {first.identity, second.identity}
    await first.ping_pong()
    await second.ping_pong()
    # The same person reconnecting is not a newcomer: a full room still lets them back in.
    assert first.identity is not None
    again = await connect("first-again")
    await again.join(mint(server, "small", "First", identity=first.identity))
    assert set(room.sessions) == {first.identity, second.identity}


async def test_duplicate_identity_replaces_first_socket(server: Any, connect: Connect) -> None:
    token = mint(server, "dup", "Dana", identity="dana")
    first = await connect("first")
    await first.join(token)
    second = await connect("second")
    await second.join(token)

    removed = await first.expect("removed")
    assert removed["reason"] == "duplicate-identity"
    await first.expect_closed()

    await second.ping_pong()
    await asyncio.sleep(0.2)  # let the first socket's handler finish its cleanup
    assert "dup" in server.sfu.rooms, "the room left the registry when its only member reconnected"
    room = server.sfu.rooms["dup"]
    assert list(room.sessions) == ["dana"]
    await second.ping_pong()
    # Someone joining afterwards meets the reconnected Dana in the same room.
    third = await connect("third")
    joined = await third.join(mint(server, "dup", "Tom"))
    assert [p["id"] for p in joined["participants"]] == ["dana"]
    assert (await second.expect("participant-joined"))["participant"]["id"] == third.identity


async def test_duplicate_identity_with_others_in_the_room(server: Any, connect: Connect) -> None:
    other = await joined_client(server, connect, "dup2", "Other")
    token = mint(server, "dup2", "Dana", identity="dana")
    first = await connect("first")
    await first.join(token)
    second = await connect("second")
    await second.join(token)
    assert (await first.expect("removed"))["reason"] == "duplicate-identity"
    await first.expect_closed()
    await asyncio.sleep(0.2)
    room = server.sfu.rooms["dup2"]
    assert sorted(room.sessions) == sorted(["dana", other.identity])
    assert server.sfu.participant_count() == 2
    await second.ping_pong()
    await other.ping_pong()


# --------------------------------------------------------------------------- vanishing clients


@pytest.mark.parametrize("how", ["close-frame", "connection-drop"])
async def test_client_vanishing_mid_publish_is_cleaned_up(
    server: Any,
    connect: Connect,
    server_pcs: ServerPcs,
    client_pcs: list[RTCPeerConnection],
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    # Hold the server inside publish() until the client is gone, so the publish-answer is
    # always sent to a socket that has vanished (not a race the test may or may not win).
    inside_publish = asyncio.Event()
    client_gone = asyncio.Event()
    stock_publish = Session.publish

    async def publish_after_vanish(self: Session, offer_sdp: str) -> str:
        if self.name != "Vanisher":
            return await stock_publish(self, offer_sdp)
        inside_publish.set()
        await asyncio.wait_for(client_gone.wait(), T)
        await asyncio.sleep(0.2)  # let the close / connection loss reach the server
        return await stock_publish(self, offer_sdp)

    monkeypatch.setattr(Session, "publish", publish_after_vanish)
    # The vanisher never answers its subscribe-offer; that timeout must not be what cleans up.
    monkeypatch.setattr(sfu.room, "ANSWER_TIMEOUT_S", 3600.0)
    # A dropped connection is first kept for a resume: keep that grace period short here.
    server.settings.resume_grace_s = 0.5
    witness = SyntheticParticipant(server.url, room="vanish", name="Witness", video_size=(160, 120))
    try:
        # The witness publishes, so the vanisher also has a server-side subscriber PC.
        await witness.join()
        vanisher = await connect("vanisher")
        await vanisher.join(mint(server, "vanish", "Vanisher"))
        await witness.next_message("participant-joined", timeout=T)
        await vanisher.send({"type": "publish", "sdp": await real_offer(client_pcs, "vanisher")})
        await asyncio.wait_for(inside_publish.wait(), T)
        if how == "close-frame":
            close = asyncio.create_task(vanisher.ws.close())
        else:
            # Drop the TCP connection without a close frame (laptop lid shut, network gone).
            vanisher.ws._response.close()
            close = None
        client_gone.set()

        left = await witness.next_message("participant-left", timeout=T)
        assert left["participantId"] == vanisher.identity
        room = server.sfu.rooms["vanish"]
        await eventually(lambda: vanisher.identity not in room.sessions, "session removed")
        assert witness.identity is not None
        staying = room.sessions[witness.identity]

        def only_witness_pcs() -> bool:
            allowed = {id(staying.publisher_pc), id(staying.subscriber_pc)}
            return all(id(pc) in allowed for pc in server_pcs.open())

        await eventually(only_witness_pcs, "the vanished client's server PCs are closed")
        assert server.sfu.participant_count() == 1
        if close is not None:
            await close
    finally:
        await witness.leave()


async def test_client_that_never_answers_subscribe_offer_is_removed(
    server: Any, connect: Connect, server_pcs: ServerPcs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sfu.room, "ANSWER_TIMEOUT_S", 2.0)
    silent = await joined_client(server, connect, "quiet", "Silent")
    publisher = SyntheticParticipant(server.url, room="quiet", name="Pub", video_size=(160, 120))
    try:
        await publisher.join()
        offer = await silent.expect("subscribe-offer")
        assert {t["participantId"] for t in offer["tracks"]} == {publisher.identity}
        # ... and never answered.
        await silent.expect_error("negotiation-failed", fatal=True)
        await silent.expect_closed()
        left = await publisher.next_message("participant-left", timeout=T)
        assert left["participantId"] == silent.identity
        room = server.sfu.rooms["quiet"]
        assert list(room.sessions) == [publisher.identity]
        staying = room.sessions[publisher.identity]
        allowed = {id(staying.publisher_pc), id(staying.subscriber_pc)}
        await eventually(
            lambda: all(id(pc) in allowed for pc in server_pcs.open()),
            "the silent client's subscriber PC is closed",
        )
    finally:
        await publisher.leave()


@pytest.mark.parametrize("chatter", ["silent", "one-message", "keeps-pinging"])
async def test_socket_that_never_joins_is_closed(
    server: Any, connect: Connect, monkeypatch: pytest.MonkeyPatch, chatter: str
) -> None:
    monkeypatch.setattr(signaling.ws, "JOIN_TIMEOUT_S", 1.0)
    client = await connect(chatter)
    if chatter == "one-message":
        await client.send({"type": "ping"})
        await client.expect_error("not-joined", fatal=False)

    async def keep_pinging() -> None:
        while not client.ws.closed:
            await client.send({"type": "ping"})
            await asyncio.sleep(0.3)

    pinger = asyncio.create_task(keep_pinging()) if chatter == "keeps-pinging" else None
    try:
        # Generous: many times the 1 s join timeout, still far below the 30 s heartbeat.
        await client.expect_closed(timeout=15)
    finally:
        if pinger is not None:
            pinger.cancel()
            await asyncio.gather(pinger, return_exceptions=True)
    errors = [m for m in client.messages if m["type"] == "error"]
    assert errors and errors[-1]["code"] == "not-joined" and errors[-1]["fatal"] is True
    await assert_healthy(server)
