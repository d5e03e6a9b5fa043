"""Three in-process aiortc participants meet through the SFU, which decodes nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from sfu.adapters.aiortc_adapter import ForwardingReceiver, threads_decoding
from sfu.clock import now_ms
from signaling.config import Settings
from tools.synthetic_client import SyntheticParticipant

pytestmark = pytest.mark.webrtc


def _counters_advance(p: SyntheticParticipant, other: str, minimum: int = 10) -> bool:
    media = p.received.get(other)
    return (
        media is not None
        and len(media.counters) >= minimum
        and media.counters[-1] > media.counters[0]
        and media.audio_frames > 20
    )


async def _eventually(predicate: Callable[[], bool], timeout_s: float = 30) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if predicate():
            return
        await asyncio.sleep(0.2)
    assert predicate()


async def test_three_participants_see_and_hear_each_other(server) -> None:
    started = time.monotonic()
    names = ["Alice", "Bob", "Carol"]
    people = [SyntheticParticipant(server.url, room="ward7", name=n) for n in names]
    try:
        for p in people:
            await p.join()
        ids = {p.name: p.identity for p in people}
        for p in people:
            for other in people:
                if other is p:
                    continue
                await p.wait_for(lambda p=p, o=other: _counters_advance(p, ids[o.name]), timeout=60)

        # The server forwarded bytes: every publisher receiver is a forwarding one, no aiortc
        # decoder thread ran on the server side of any connection.
        room = server.sfu.rooms["ward7"]
        assert len(room.sessions) == 3
        for session in room.sessions.values():
            assert {str(p.kind) for p in session.producers.values()} == {"audio", "video"}
            for producer in session.producers.values():
                assert isinstance(producer.receiver, ForwardingReceiver)
                assert producer.receiver._RTCRtpReceiver__decoder_thread is None
                assert producer.receiver.track._queue.qsize() == 0
                assert len(producer.consumers) == 2
            for consumer in session.consumers.values():
                assert consumer.forwarder.forwarded > 0
            video = [p for p in session.producers.values() if str(p.kind) == "video"][0]
            # Publishers hear from us: REMB from the abs-send-time estimator (its first
            # estimate takes a few seconds) ...
            await _eventually(lambda v=video: v.receiver.remb_sent > 0)
            # ... and keyframe requests are debounced to about one a second per track, however
            # many subscribers ask.
            elapsed_s = time.monotonic() - started
            assert 1 <= video.keyframe_requests_sent <= elapsed_s + 2
            # Arrival times are on the SFU's one (monotonic) clock, the one everything that
            # reads them uses: the layer tracker sees the video as arriving now.
            last_keyframe = video.keyframes[0].last_keyframe_ms
            assert last_keyframe is not None and abs(now_ms() - last_keyframe) < 60_000
            assert video.layers.is_active(0, now_ms())
        # Receiver reports reach each publisher's aiortc sender.
        for p in people:
            for sender in p.publish_pc.getSenders():
                for _ in range(100):
                    stats = (await sender.getStats()).values()
                    if any(s.type == "remote-inbound-rtp" for s in stats):
                        break
                    await asyncio.sleep(0.2)
                else:
                    raise AssertionError(f"no receiver report reached {p.name}'s {sender.kind}")
        # Client-side decoders are threads too; the SFU's share is what we check above, and the
        # number of live decoder threads equals what the 3 clients need (2 remote × 2 kinds each).
        assert len(threads_decoding()) <= 3 * 2 * 2
    finally:
        for p in people:
            await p.leave()


async def test_renegotiation_when_people_leave_and_join(server) -> None:
    alice = SyntheticParticipant(server.url, room="reneg", name="Alice")
    bob = SyntheticParticipant(server.url, room="reneg", name="Bob")
    carol = SyntheticParticipant(server.url, room="reneg", name="Carol")
    try:
        await alice.join()
        await bob.join()
        await alice.wait_for(lambda: _counters_advance(alice, bob.identity), timeout=60)
        await bob.leave()
        left = await alice.next_message("participant-left", timeout=10)
        assert left["participantId"] == bob.identity
        # The renegotiated offer no longer lists Bob's tracks.
        offer = await alice.next_message("subscribe-offer", timeout=10)
        assert all(t["participantId"] != bob.identity for t in offer["tracks"])
        await carol.join()
        await alice.wait_for(lambda: _counters_advance(alice, carol.identity), timeout=60)
        await carol.wait_for(lambda: _counters_advance(carol, alice.identity), timeout=60)
        assert bob.identity not in server.sfu.rooms["reneg"].sessions
    finally:
        for p in (alice, bob, carol):
            await p.leave()
        await asyncio.sleep(0)


async def test_h264_is_forwarded(server) -> None:
    alice = SyntheticParticipant(server.url, room="h264", name="Alice", video_codec="H264")
    bob = SyntheticParticipant(server.url, room="h264", name="Bob", video_codec="H264")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_for(lambda: _counters_advance(bob, alice.identity), timeout=60)
        session = server.sfu.rooms["h264"].sessions[alice.identity]
        video = [p for p in session.producers.values() if str(p.kind) == "video"]
        assert video and video[0].codec.name == "h264"
    finally:
        await alice.leave()
        await bob.leave()


async def test_nacks_are_answered_from_the_time_sized_cache(server) -> None:
    alice = SyntheticParticipant(server.url, room="nack", name="Alice")
    bob = SyntheticParticipant(server.url, room="nack", name="Bob")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_for(lambda: _counters_advance(bob, alice.identity), timeout=60)
        session = server.sfu.rooms["nack"].sessions[bob.identity]
        [video] = [c for c in session.consumers.values() if str(c.producer.kind) == "video"]
        [(seq, _)] = video._cache.recent(1)
        await video.on_nack([seq, (seq + 30000) & 0xFFFF])  # one we sent, one we never did
        assert video.retransmitted == 1
        await video.on_nack([seq])  # a repeated NACK within 100 ms is not resent again
        assert video.retransmitted == 1
        assert (video._cache.resends, video._cache.throttled, video._cache.unknown) == (1, 1, 1)
    finally:
        await alice.leave()
        await bob.leave()


async def test_loss_on_the_publisher_leg_is_nacked_and_repaired_by_the_sfu(server) -> None:
    alice = SyntheticParticipant(server.url, room="upstream-loss", name="Alice")
    bob = SyntheticParticipant(server.url, room="upstream-loss", name="Bob")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_for(lambda: _counters_advance(bob, alice.identity), timeout=60)
        session = server.sfu.rooms["upstream-loss"].sessions[alice.identity]
        [producer] = [p for p in session.producers.values() if str(p.kind) == "video"]
        receiver = producer.receiver
        consume = receiver.consume
        dropped: list[int] = []

        async def lossy_consume(data: bytes, arrival_ms: int) -> None:
            # The network loses every 12th original packet; retransmissions (RTX) get through.
            seq = int.from_bytes(data[2:4], "big")
            is_rtx = (data[1] & 0x7F) in receiver._rtx_payload_types
            if not is_rtx and seq % 12 == 0 and seq not in dropped:
                dropped.append(seq)
                return
            await consume(data, arrival_ms)

        receiver.consume = lossy_consume  # type: ignore[method-assign]
        frames_before = len(bob.received[alice.identity].counters)
        await _eventually(lambda: receiver.nack_stats().get("recovered", 0) >= 10, timeout_s=40)
        stats = receiver.nack_stats()
        # The SFU asked alice's aiortc sender for the lost packets and got them back over RTX.
        assert len(dropped) >= 10 and stats["nacksSent"] >= stats["recovered"] >= 10
        assert stats["rttMs"] < 1000
        await _eventually(
            lambda: len(bob.received[alice.identity].counters) > frames_before + 20, timeout_s=30
        )
    finally:
        await alice.leave()
        await bob.leave()


@pytest.mark.parametrize(
    "server_settings", [Settings(host="127.0.0.1", port=0, ice_hosts=["127.0.0.1"], nack=False)]
)
async def test_nack_off_leaves_loss_unrepaired(server) -> None:
    """The comparison switch really switches: no publisher-leg NACKs, subscriber NACKs ignored."""
    alice = SyntheticParticipant(server.url, room="no-nack", name="Alice")
    bob = SyntheticParticipant(server.url, room="no-nack", name="Bob")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_for(lambda: _counters_advance(bob, alice.identity), timeout=60)
        room = server.sfu.rooms["no-nack"]
        [producer] = [
            p for p in room.sessions[alice.identity].producers.values() if str(p.kind) == "video"
        ]
        assert producer.receiver.nack_stats() == {}
        [video] = [
            c for c in room.sessions[bob.identity].consumers.values() if str(c.kind) == "video"
        ]
        [(seq, _)] = video._cache.recent(1)
        await video.on_nack([seq])
        assert video.retransmitted == 0 and video.nacks_ignored == 1
    finally:
        await alice.leave()
        await bob.leave()


async def test_probes_fall_back_to_padding_when_nothing_was_sent_lately(server) -> None:
    """A video paused for bandwidth has no recent packets to repeat; a probe must still go."""
    from sfu.retransmit import RetransmitCache  # noqa: PLC0415

    alice = SyntheticParticipant(server.url, room="padding", name="Alice")
    bob = SyntheticParticipant(server.url, room="padding", name="Bob")
    try:
        await alice.join()
        await bob.join()
        await bob.wait_for(lambda: _counters_advance(bob, alice.identity), timeout=60)
        session = server.sfu.rooms["padding"].sessions[bob.identity]
        [video] = [c for c in session.consumers.values() if str(c.kind) == "video"]
        video._cache = RetransmitCache()  # as after a second or more of pause
        before = video.probe_packets
        size = await video.send_probe(7, now_ms())
        assert size > 255 and video.probe_packets == before + 1
    finally:
        await alice.leave()
        await bob.leave()


async def test_aiortc_clients_route_retransmissions_of_every_bundled_video(server) -> None:
    """Two remote videos share one RTX payload type; each RTX SSRC must reach its receiver."""
    people = [SyntheticParticipant(server.url, room="rtx", name=n) for n in ("A", "B", "C")]
    try:
        for p in people:
            await p.join()
        for p in people:
            for other in people:
                if other is not p:
                    await p.wait_for(
                        lambda p=p, o=other: _counters_advance(p, o.identity), timeout=60
                    )
        a = people[0]
        assert a.subscribe_pc is not None
        video = [t.receiver for t in a.subscribe_pc.getTransceivers() if t.kind == "video"]
        assert len(video) == 2
        session = server.sfu.rooms["rtx"].sessions[a.identity]
        rtx_ssrcs = {
            c.sender.rtx_ssrc for c in session.consumers.values() if c.kind.value == "video"
        }
        table = video[0].transport._rtp_router.ssrc_table
        assert rtx_ssrcs <= set(table)
        assert {table[s] for s in rtx_ssrcs} == set(video)
    finally:
        for p in people:
            await p.leave()
