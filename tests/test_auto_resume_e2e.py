"""A synthetic participant whose signaling socket dies mid-call reconnects by itself.

With ``auto_resume`` (as the QA participants run) an unexpected end of the socket starts a
resume within the grace period: the same session comes back and media never stops; when the
server no longer holds the session the client rejoins and publishes again. Leaving or being
removed never reconnects.

WebRTC tests: run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_auto_resume_e2e.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tools.synthetic_client import SyntheticParticipant

pytestmark = pytest.mark.webrtc

T = 60.0


def _bot(server: Any, room: str, name: str, role: str = "specialist", **kw: Any) -> Any:
    kw.setdefault("video_size", (160, 120))
    kw.setdefault("fps", 10)
    return SyntheticParticipant(server.url, room=room, name=name, role=role, **kw)


def _frames(p: Any, pid: str | None) -> int:
    media = p.received.get(pid or "")
    return media.video_frames if media is not None else 0


async def _frames_keep_rising(alice: Any, bob: Any, count: int = 10) -> None:
    """Both directions decode ``count`` more frames from now on."""
    to_alice, to_bob = _frames(alice, bob.identity), _frames(bob, alice.identity)
    await alice.wait_for(lambda: _frames(alice, bob.identity) >= to_alice + count, T)
    await bob.wait_for(lambda: _frames(bob, alice.identity) >= to_bob + count, T)


async def test_dropped_socket_resumes_by_itself_and_media_keeps_flowing(server: Any) -> None:
    room_id = "auto-resume"
    alice = _bot(server, room_id, "Alice", "host")
    bob = _bot(server, room_id, "Bob", auto_resume=True)
    try:
        async with asyncio.timeout(2 * T):
            await alice.join()
            await bob.join()
            await _frames_keep_rising(alice, bob, 5)
            room = server.sfu.rooms[room_id]
            session = room.sessions[bob.identity]
            pcs = (bob.publish_pc, bob.subscribe_pc)

            for outage in (1, 2):  # twice: the second drop hits the resumed socket
                await bob.drop_connection()
                await bob.wait_for(lambda n=outage: bob.resumes == n and bob.connected, T)
                assert bob.rejoins == 0 and bob.reconnect_failures == 0
                entry = bob.reconnects[-1]
                assert entry["outcome"] == "resumed" and entry["attempts"] >= 1, entry
                assert entry["back_ms"] >= entry["dropped_ms"]
                # The same server session and the same peer connections: nothing renegotiated.
                assert room.sessions[bob.identity] is session and not session.closed
                assert (bob.publish_pc, bob.subscribe_pc) == pcs
                await _frames_keep_rising(alice, bob)
            assert len(bob.reconnects) == 2
            # Others never saw Bob leave; signaling works on the new socket.
            assert not [m for m in alice.messages if m.get("type") == "participant-left"]
            await bob.send({"type": "ping"})
            await bob.next_message("pong", timeout=T)

            # Removed by the host: the socket ends, and that is not a reason to come back.
            await alice.send({"type": "remove-participant", "participantId": bob.identity})
            await bob.wait_for(lambda: bob.removed is not None and not bob.connected, T)
            await asyncio.sleep(0.5)  # a reconnect would start at once (first delay 0)
            assert len(bob.reconnects) == 2 and not bob.connected
    finally:
        for p in (alice, bob):
            await p.leave()


async def test_without_the_kept_session_it_rejoins_and_publishes_again(server: Any) -> None:
    server.settings.resume_grace_s = 0.0  # the server removes a dropped session at once
    room_id = "auto-rejoin"
    alice = _bot(server, room_id, "Alice", "host")
    bob = _bot(server, room_id, "Bob", auto_resume=True)
    try:
        async with asyncio.timeout(2 * T):
            await alice.join()
            await bob.join()
            await _frames_keep_rising(alice, bob, 5)
            old_pc = bob.publish_pc

            await bob.drop_connection()
            await bob.wait_for(lambda: bob.rejoins == 1 and bob.connected, T)
            assert bob.resumes == 0 and bob.reconnects[-1]["outcome"] == "rejoined"
            assert bob.publish_pc is not None and bob.publish_pc is not old_pc
            await _frames_keep_rising(alice, bob)

            # Leaving closes the socket on purpose: no reconnect.
            await bob.leave()
            await asyncio.sleep(0.5)
            assert len(bob.reconnects) == 1
    finally:
        for p in (alice, bob):
            await p.leave()
