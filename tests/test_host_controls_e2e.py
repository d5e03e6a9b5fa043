"""Host controls end to end: remove, mute, end the consultation; refusals and the audit trail.

WebRTC tests: run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_host_controls_e2e.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sfu.vocabulary import MediaKind
from signaling.appkeys import AUDIT
from signaling.messages import (
    EndConsultation,
    MuteParticipant,
    ProtocolError,
    RemoveParticipant,
    parse_client_message,
)
from tools.synthetic_client import SyntheticClientError, SyntheticParticipant

T = 60.0


def _bot(server: Any, room: str, name: str, role: str, token: str | None = None) -> Any:
    return SyntheticParticipant(
        server.url, room=room, name=name, role=role, token=token, video_size=(160, 120), fps=10
    )


def _events(server: Any, *names: str) -> list[tuple[str, str, Any]]:
    return [
        (e["event"], e["actor"], e.get("target"))
        for e in server.app[AUDIT].entries()
        if e["event"] in names
    ]


def test_host_control_messages_parse() -> None:
    assert parse_client_message('{"type":"remove-participant","participantId":"a"}') == (
        RemoveParticipant("a")
    )
    assert parse_client_message('{"type":"mute-participant","participantId":"b"}') == (
        MuteParticipant("b")
    )
    assert parse_client_message('{"type":"end-consultation"}') == EndConsultation()
    for bad in ('{"type":"remove-participant"}', '{"type":"mute-participant","participantId":""}'):
        with pytest.raises(ProtocolError) as err:
            parse_client_message(bad)
        assert err.value.code == "bad-field"


@pytest.mark.webrtc
async def test_host_mutes_and_removes_a_participant(server: Any) -> None:
    room_id = "hostward"
    host = _bot(server, room_id, "Dr Host", "host")
    alice = _bot(server, room_id, "Alice", "specialist")
    rejoin: Any = None
    try:
        await host.join()
        await alice.join()
        await host.wait_for(
            lambda: (host.received.get(alice.identity or "") or _none()).audio_frames >= 10,
            timeout=T,
        )
        room = server.sfu.rooms[room_id]
        assert alice.identity is not None and host.identity is not None

        # Not the host: refused with forbidden, nothing changes, audited.
        await alice.send({"type": "mute-participant", "participantId": host.identity})
        error = await alice.next_message("error", timeout=10)
        assert error["code"] == "forbidden" and "host" in error["message"]
        await alice.send({"type": "end-consultation"})
        error = await alice.next_message("error", timeout=10)
        assert error["code"] == "forbidden"
        assert room_id in server.sfu.rooms and not room.sessions[host.identity].muted_by_host

        # Mute: Alice is told, everyone sees audioMuted, her audio stops reaching the host.
        await host.send({"type": "mute-participant", "participantId": alice.identity})
        told = await alice.next_message("muted-by-host", timeout=10)
        assert told["kind"] == "audio"
        update = await host.next_message("participant-updated", timeout=10)
        while not update["participant"]["audioMuted"]:  # skip earlier "now publishing" updates
            update = await host.next_message("participant-updated", timeout=10)
        assert update["participant"]["id"] == alice.identity
        alice_session = room.sessions[alice.identity]
        audio = [p for p in alice_session.producers.values() if p.kind is MediaKind.AUDIO]
        assert audio and all(p.paused for p in audio)
        forwarded = [c.forwarder.forwarded for p in audio for c in p.consumers]
        received = audio[0].packets
        await host.wait_for(lambda: audio[0].packets >= received + 25, timeout=T)
        assert [c.forwarder.forwarded for p in audio for c in p.consumers] == forwarded

        # She may unmute herself: forwarding resumes.
        await alice.send({"type": "mute", "kind": "audio", "muted": False})
        await host.wait_for(
            lambda: [c.forwarder.forwarded for p in audio for c in p.consumers] != forwarded,
            timeout=T,
        )
        assert not alice_session.muted_by_host and not audio[0].paused

        # Remove: Alice gets removed, the host sees her leave, her rejoin is refused.
        await host.send({"type": "remove-participant", "participantId": alice.identity})
        await alice.wait_for(lambda: alice.removed is not None, timeout=10)
        assert alice.removed == {"type": "removed", "reason": "removed-by-host"}
        left = await host.next_message("participant-left", timeout=10)
        assert left["participantId"] == alice.identity and left["reason"] == "removed-by-host"
        assert alice.identity not in room.sessions and alice_session.closed
        assert alice_session.publisher_pc is None and alice_session.subscriber_pc is None
        assert all(not p.consumers for p in room.sessions[host.identity].producers.values())

        rejoin = SyntheticParticipant(server.url, room=room_id, name="Alice", role="specialist")
        rejoin._token = await _token_for(server, room_id, alice.identity)
        with pytest.raises(SyntheticClientError) as refused:
            await rejoin.join()
        assert refused.value.error is not None and refused.value.error["code"] == "forbidden"

        assert _events(
            server, "host-control-refused", "participant-muted", "participant-removed"
        ) == [
            ("host-control-refused", alice.identity, host.identity),
            ("host-control-refused", alice.identity, None),
            ("participant-muted", host.identity, alice.identity),
            ("participant-removed", host.identity, alice.identity),
        ]
    finally:
        for p in (host, alice, rejoin):
            if p is not None:
                await p.leave()


class _NoMedia:
    audio_frames = 0


def _none() -> Any:
    return _NoMedia()


async def _token_for(server: Any, room: str, identity: str) -> str:
    from signaling.appkeys import AUTHORITY, unix_now_s

    return str(
        server.app[AUTHORITY].mint(
            room=room, identity=identity, name="Alice", role="specialist", now_s=unix_now_s()
        )
    )


@pytest.mark.webrtc
async def test_host_ends_the_consultation(server: Any) -> None:
    room_id = "endward"
    host = _bot(server, room_id, "Dr Host", "host")
    bob = _bot(server, room_id, "Bob", "bedside")
    late: Any = None
    try:
        await host.join()
        await bob.join()
        await host.send({"type": "start-recording"})
        await bob.next_message("recording", timeout=10)
        room = server.sfu.rooms[room_id]
        recording = room.recording
        assert recording is not None

        await host.send({"type": "end-consultation"})
        for p in (host, bob):
            ended = await p.next_message("consultation-ended", timeout=10)
            assert ended["by"] == host.identity
            await p.wait_for(lambda p=p: not p.connected, timeout=10)
        # The clients can notice the disconnect before the server has finished closing.
        for _ in range(100):
            if room_id not in server.sfu.rooms and not room.sessions:
                break
            await asyncio.sleep(0.1)
        assert room_id not in server.sfu.rooms and not room.sessions
        assert not recording.active
        assert server.sfu.participant_count() == 0

        late = _bot(server, room_id, "Late", "specialist")
        with pytest.raises(SyntheticClientError) as refused:
            await late.join()
        assert refused.value.error is not None
        assert refused.value.error["code"] == "room-ended"
        assert room_id not in server.sfu.rooms

        [entry] = [e for e in server.app[AUDIT].entries() if e["event"] == "consultation-ended"]
        assert entry["actor"] == host.identity
        assert sorted(entry["participants"]) == sorted([host.identity, bob.identity])
    finally:
        for p in (host, bob, late):
            if p is not None:
                await p.leave()
