"""Signaling session resume end to end, with aiortc participants on loopback.

A participant whose WebSocket drops keeps its session for the grace period: media keeps
flowing both ways, the others see ``connection: reconnecting`` (never participant-left), and a
``join`` with ``resume`` re-attaches the same session and replays what was missed, in order.

WebRTC tests: run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_resume_e2e.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import signaling.ws
from signaling.appkeys import AUDIT
from signaling.resume import LinkState, ResumeLimits
from signaling.ws import WsLink
from tools.synthetic_client import SyntheticClientError, SyntheticParticipant

pytestmark = pytest.mark.webrtc

T = 60.0


def _bot(server: Any, room: str, name: str, role: str = "specialist", **kw: Any) -> Any:
    kw.setdefault("video_size", (160, 120))
    kw.setdefault("fps", 10)
    return SyntheticParticipant(server.url, room=room, name=name, role=role, **kw)


def _listener(server: Any, room: str, name: str, role: str = "specialist") -> Any:
    """No media: for checks that only need signaling (cheap on two busy cores)."""
    return _bot(server, room, name, role, publish_audio=False, publish_video=False)


async def _eventually(predicate: Callable[[], bool], what: str, timeout: float = T) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            # Server internals have no event to wait on; polling is the honest option.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


def _connection_updates(p: Any, pid: str) -> list[str]:
    return [
        m["participant"].get("connection")
        for m in p.messages
        if m.get("type") == "participant-updated" and m["participant"]["id"] == pid
    ]


def _left(p: Any, pid: str) -> list[dict[str, Any]]:
    return [
        m for m in p.messages if m.get("type") == "participant-left" and m["participantId"] == pid
    ]


def _audit(server: Any, room: str, *events: str) -> list[tuple[str, str]]:
    return [
        (e["event"], e["actor"])
        for e in server.app[AUDIT].entries()
        if e["room"] == room and e["event"] in events
    ]


def _frames(p: Any, pid: str | None) -> int:
    media = p.received.get(pid or "")
    return media.video_frames if media is not None else 0


async def test_resume_keeps_the_session_media_and_missed_messages(server: Any) -> None:
    room_id = "resume-ok"
    alice = _bot(server, room_id, "Alice", "host")
    bob = _bot(server, room_id, "Bob")
    carol = _bot(server, room_id, "Carol")
    try:
        await alice.join()
        await bob.join()
        assert alice.identity and bob.identity
        await alice.wait_for(lambda: _frames(alice, bob.identity) >= 5, timeout=T)
        await bob.wait_for(lambda: _frames(bob, alice.identity) >= 5, timeout=T)
        room = server.sfu.rooms[room_id]
        session = room.sessions[bob.identity]
        pcs = (session.publisher_pc, session.subscriber_pc)
        assert bob.joined is not None and len(bob.joined["resumeToken"]) >= 40
        assert bob.joined["resumed"] is False
        assert bob.joined["self"]["connection"] == "connected"

        await bob.drop_connection()
        await alice.wait_for(lambda: "reconnecting" in _connection_updates(alice, bob.identity), T)
        assert session.connection == "reconnecting"
        # Media keeps flowing both ways while Bob's signaling is away.
        seen_by_alice, seen_by_bob = _frames(alice, bob.identity), _frames(bob, alice.identity)
        await alice.wait_for(lambda: _frames(alice, bob.identity) >= seen_by_alice + 10, T)
        await bob.wait_for(lambda: _frames(bob, alice.identity) >= seen_by_bob + 10, T)

        # Meanwhile Carol joins and publishes, and Alice posts in the chat.
        await carol.join()
        assert carol.identity
        await alice.send({"type": "chat-send", "clientId": "c-1", "text": "while you were away"})
        posted = await alice.next_message("chat-message", timeout=T)
        link = session.link
        assert isinstance(link, WsLink)
        await _eventually(
            lambda: (
                link.resume.queued_since_drop("subscribe-offer")
                and link.resume.queued_since_drop("chat-message")
            ),
            "the offer for Carol's media and the chat message wait for Bob",
        )

        start = len(bob.messages)
        reply = await bob.resume()
        assert reply["resumed"] is True
        assert reply["resumeToken"] == bob.joined["resumeToken"]
        assert reply["self"]["id"] == bob.identity
        assert {p["id"] for p in reply["participants"]} == {alice.identity, carol.identity}
        # The same session, the same peer connections: nothing was renegotiated from scratch.
        assert room.sessions[bob.identity] is session and not session.closed
        assert (session.publisher_pc, session.subscriber_pc) == pcs
        await alice.wait_for(
            lambda: _connection_updates(alice, bob.identity)[-1:] == ["connected"], T
        )
        assert session.connection == "connected"

        # What Bob missed arrives after `joined`, in the order it happened.
        await bob.wait_for(lambda: _frames(bob, carol.identity) >= 5, timeout=T)
        after = [m for m in bob.messages[start:]]
        kinds = [m["type"] for m in after]
        assert kinds[0] == "joined"
        joined_at = kinds.index("participant-joined")
        chat_at = kinds.index("chat-message")
        assert after[joined_at]["participant"]["id"] == carol.identity
        assert joined_at < chat_at
        assert after[chat_at]["message"]["seq"] == posted["message"]["seq"]
        assert "subscribe-offer" in kinds[1:]
        # Others never saw Bob leave; his media to Alice never stopped.
        assert _left(alice, bob.identity) == [] and _left(carol, bob.identity) == []
        before = _frames(alice, bob.identity)
        await alice.wait_for(lambda: _frames(alice, bob.identity) >= before + 5, timeout=T)
        assert _audit(server, room_id, "participant-reconnecting", "participant-resumed") == [
            ("participant-reconnecting", bob.identity),
            ("participant-resumed", bob.identity),
        ]
        assert not [e for e in _audit(server, room_id, "participant-left") if e[1] == bob.identity]
        # Signaling works on the new socket.
        await bob.send({"type": "ping"})
        await bob.next_message("pong", timeout=T)
    finally:
        for p in (alice, bob, carol):
            await p.leave()


async def test_grace_period_expiry_removes_the_session_and_frees_it(server: Any) -> None:
    server.settings.resume_grace_s = 1.0
    room_id = "resume-expire"
    alice = _listener(server, room_id, "Alice")
    bob = _bot(server, room_id, "Bob", publish_video=False)
    try:
        await alice.join()
        await bob.join()
        assert bob.identity
        room = server.sfu.rooms[room_id]
        session = room.sessions[bob.identity]
        await _eventually(lambda: session.publisher_pc is not None, "Bob publishes")
        link = session.link
        assert isinstance(link, WsLink)

        await bob.drop_connection()
        await alice.wait_for(lambda: "reconnecting" in _connection_updates(alice, bob.identity), T)
        left = await alice.next_message("participant-left", timeout=T)
        assert left == {
            "type": "participant-left",
            "participantId": bob.identity,
            "reason": "disconnected",
        }
        assert bob.identity not in room.sessions and session.closed
        assert session.publisher_pc is None and session.subscriber_pc is None
        # Nothing kept for a resume that can no longer happen.
        assert link.resume.state is LinkState.CLOSED and link.resume.queued == 0
        assert link._grace is not None
        await _eventually(lambda: link._grace is not None and link._grace.done(), "timer ends")
        assert ("participant-left", bob.identity) in _audit(server, room_id, "participant-left")

        # The old resume token is worth nothing now: a full join, a new session.
        reply = await bob.resume()
        assert reply["resumed"] is False
        assert room.sessions[bob.identity] is not session
    finally:
        for p in (alice, bob):
            await p.leave()


async def test_wrong_resume_token_is_a_full_join(server: Any) -> None:
    room_id = "resume-wrong"
    alice = _listener(server, room_id, "Alice")
    bob = _listener(server, room_id, "Bob")
    try:
        await alice.join()
        await bob.join()
        assert bob.identity and bob.joined
        room = server.sfu.rooms[room_id]
        session = room.sessions[bob.identity]
        await bob.drop_connection()
        await alice.wait_for(lambda: "reconnecting" in _connection_updates(alice, bob.identity), T)

        old_token = bob.joined["resumeToken"]
        reply = await bob.resume("not-" + old_token)
        assert reply["resumed"] is False and reply["resumeToken"] != old_token
        fresh = room.sessions[bob.identity]
        assert fresh is not session and session.closed
        left = await alice.next_message("participant-left", timeout=T)
        assert left["reason"] == "duplicate-identity"
        # A second resume with the fresh session's token works.
        await bob.drop_connection()
        assert (await bob.resume())["resumed"] is True
        assert room.sessions[bob.identity] is fresh
    finally:
        for p in (alice, bob):
            await p.leave()


async def test_host_removal_during_the_grace_period_prevents_resume(server: Any) -> None:
    room_id = "resume-removed"
    host = _listener(server, room_id, "Host", "host")
    bob = _listener(server, room_id, "Bob")
    try:
        await host.join()
        await bob.join()
        assert bob.identity
        room = server.sfu.rooms[room_id]
        session = room.sessions[bob.identity]
        link = session.link
        assert isinstance(link, WsLink)
        await bob.drop_connection()
        await host.wait_for(lambda: "reconnecting" in _connection_updates(host, bob.identity), T)

        await host.send({"type": "remove-participant", "participantId": bob.identity})
        left = await host.next_message("participant-left", timeout=T)
        assert left["reason"] == "removed-by-host"
        assert session.closed and link.resume.state is LinkState.CLOSED
        await _eventually(lambda: link._grace is None or link._grace.done(), "timer cancelled")

        with pytest.raises(SyntheticClientError) as refused:
            await bob.resume()
        assert refused.value.error is not None and refused.value.error["code"] == "forbidden"
        assert bob.identity not in room.sessions
    finally:
        for p in (host, bob):
            await p.leave()


async def test_overflowing_queue_ends_the_grace_period_early(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        signaling.ws, "_resume_limits", lambda _: ResumeLimits(grace_ms=60_000, max_messages=3)
    )
    room_id = "resume-overflow"
    alice = _listener(server, room_id, "Alice")
    bob = _listener(server, room_id, "Bob")
    try:
        await alice.join()
        await bob.join()
        assert bob.identity
        await bob.drop_connection()
        await alice.wait_for(lambda: "reconnecting" in _connection_updates(alice, bob.identity), T)
        for i in range(4):
            await alice.send({"type": "chat-send", "clientId": f"c-{i}", "text": f"m{i}"})
        # Long before the 60 s grace period: the fourth kept message was one too many.
        left = await alice.next_message("participant-left", timeout=T)
        assert left["participantId"] == bob.identity and left["reason"] == "disconnected"
        assert (await bob.resume())["resumed"] is False
    finally:
        for p in (alice, bob):
            await p.leave()


async def test_resume_takes_over_a_socket_that_still_looks_alive(server: Any) -> None:
    """A phone on a new network comes back before the server noticed its old socket die."""
    room_id = "resume-takeover"
    alice = _listener(server, room_id, "Alice")
    bob = _listener(server, room_id, "Bob")
    try:
        await alice.join()
        await bob.join()
        assert bob.identity and bob.joined and bob._session is not None
        room = server.sfu.rooms[room_id]
        session = room.sessions[bob.identity]
        url = server.url.replace("http", "ws", 1) + "/ws"
        async with bob._session.ws_connect(url) as fresh:
            await fresh.send_json(
                {
                    "type": "join",
                    "version": 1,
                    "token": bob._token,
                    "resume": bob.joined["resumeToken"],
                }
            )
            reply = await fresh.receive_json(timeout=T)
            assert reply["type"] == "joined" and reply["resumed"] is True
            # The old socket is retired without ending the session.
            await bob.wait_for(lambda: not bob.connected, timeout=T)
            assert room.sessions[bob.identity] is session and not session.closed
            assert _left(alice, bob.identity) == []
            await fresh.send_json({"type": "ping"})
            assert (await fresh.receive_json(timeout=T))["type"] == "pong"
            await fresh.send_json({"type": "leave"})
            left = await alice.next_message("participant-left", timeout=T)
            assert left["participantId"] == bob.identity and left["reason"] == "left"
    finally:
        for p in (alice, bob):
            await p.leave()
