"""Audio protection: Opus FEC/DTX and RED negotiation at the aiortc seam, RED through the SFU."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from media.red import parse_red
from media.synthetic import ToneAudioTrack
from sfu.adapters import aiortc_adapter as adapter
from tools.synthetic_client import SyntheticParticipant


def _audio_section(sdp: str) -> list[str]:
    lines = sdp.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("m=audio"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("m=")), len(lines))
    return lines[start:end]


def _payload_types(section: list[str]) -> list[int]:
    return [int(x) for x in section[0].split()[3:]]


def _fmtp(section: list[str], pt: int) -> str | None:
    prefix = f"a=fmtp:{pt} "
    return next((line[len(prefix) :] for line in section if line.startswith(prefix)), None)


def _pt_of(section: list[str], name: str) -> int:
    pattern = re.compile(rf"a=rtpmap:(\d+) {name}/", re.IGNORECASE)
    return next(int(m.group(1)) for line in section if (m := pattern.match(line)))


def _as_chromium(sdp: str) -> str:
    """An aiortc RED offer renumbered the way Chromium 156 writes it (Opus 111, RED 63)."""
    sdp = sdp.replace("a=rtpmap:96 opus/", "a=rtpmap:111 opus/")
    sdp = sdp.replace("a=fmtp:96 ", "a=fmtp:111 ").replace("a=fmtp:63 96/96", "a=fmtp:63 111/111")
    return re.sub(r"(m=audio \d+ \S+) 96 63", r"\1 111 63", sdp)


def test_the_negotiation_functions_the_adapter_wraps_are_aiortcs() -> None:
    import aiortc.rtcpeerconnection as pcmod

    # aiortc looks both up as module globals at call time; a rename would silently bypass us.
    assert pcmod.find_common_codecs is adapter._find_common_codecs
    assert pcmod.filter_preferred_codecs is adapter._filter_preferred_codecs
    assert adapter._stock_find_common_codecs.__module__ == "aiortc.rtcpeerconnection"


async def test_a_stock_aiortc_connection_does_not_offer_red_and_keeps_opus_fec_dtx() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(ToneAudioTrack(frequency=440), direction="sendonly")
        section = _audio_section((await pc.createOffer()).sdp)
        assert not any("red/48000" in line for line in section)
        opus = _pt_of(section, "opus")
        assert _payload_types(section)[0] == opus
        fmtp = _fmtp(section, opus) or ""
        assert {"useinbandfec=1", "usedtx=1", "minptime=10"} <= set(fmtp.split(";"))
    finally:
        await pc.close()


async def test_an_opted_in_client_offers_red_after_opus() -> None:
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(ToneAudioTrack(frequency=440), direction="sendonly")
        adapter.enable_red_audio(pc, distance=2)
        section = _audio_section((await pc.createOffer()).sdp)
        opus, red = _pt_of(section, "opus"), _pt_of(section, "red")
        assert _payload_types(section)[:2] == [opus, red]
        assert _fmtp(section, red) == f"{opus}/{opus}"
        with pytest.raises(ValueError):
            adapter.enable_red_audio(pc, distance=3)
    finally:
        await pc.close()


async def _sfu_answer(offer_sdp: str) -> tuple[str, adapter.NegotiatedCodec | None]:
    """The SFU's publish path up to its answer: adopt, restrict to one codec, answer."""
    pc = adapter.new_peer_connection([])
    try:
        adopted: list[adapter.ForwardingReceiver] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    adopted.append(adapter.adopt_receiver(t.receiver))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        [receiver] = adopted
        codec = adapter.restrict_answer_codec(adapter.transceiver_of_receiver(pc, receiver))
        answer = await pc.createAnswer()
        return answer.sdp, codec
    finally:
        await pc.close()


async def test_the_sfu_answers_chromium_red_first_with_chromium_payload_types() -> None:
    client = RTCPeerConnection()
    try:
        client.addTransceiver(ToneAudioTrack(frequency=440), direction="sendonly")
        adapter.enable_red_audio(client)
        offer = _as_chromium((await client.createOffer()).sdp)
    finally:
        await client.close()
    answer, codec = await _sfu_answer(offer)
    section = _audio_section(answer)
    # RED first (Chromium then wraps its Opus in RED), fmtp naming the publisher's Opus type.
    assert _payload_types(section) == [63, 111]
    assert _fmtp(section, 63) == "111/111"
    assert {"useinbandfec=1", "usedtx=1"} <= set((_fmtp(section, 111) or "").split(";"))
    assert codec is not None
    assert (codec.name, codec.payload_type, codec.red_payload_type) == ("opus", 111, 63)


async def test_the_sfu_answers_plain_opus_to_a_publisher_without_red() -> None:
    client = RTCPeerConnection()
    try:
        client.addTransceiver(ToneAudioTrack(frequency=440), direction="sendonly")
        offer = (await client.createOffer()).sdp
    finally:
        await client.close()
    answer, codec = await _sfu_answer(offer)
    section = _audio_section(answer)
    assert not any("red/48000" in line for line in section)
    assert codec is not None and codec.name == "opus" and codec.red_payload_type is None


async def test_a_red_fmtp_that_names_no_accepted_codec_is_refused() -> None:
    client = RTCPeerConnection()
    try:
        client.addTransceiver(ToneAudioTrack(frequency=440), direction="sendonly")
        adapter.enable_red_audio(client)
        offer = (await client.createOffer()).sdp.replace("a=fmtp:63 96/96", "a=fmtp:63 9/96")
    finally:
        await client.close()
    answer, codec = await _sfu_answer(offer)
    assert not any("red/48000" in line for line in _audio_section(answer))
    assert codec is not None and codec.red_payload_type is None


async def test_subscriber_offers_carry_red_for_opus() -> None:
    pc = adapter.new_peer_connection([])
    try:
        opus = adapter.NegotiatedCodec("opus", 111, 48000, 2, red_payload_type=63)
        adapter.add_forwarding_transceiver(pc, "audio", opus, None, stream_id="s", track_id="t")
        section = _audio_section((await pc.createOffer()).sdp)
        opus_pt, red_pt = _pt_of(section, "opus"), _pt_of(section, "red")
        assert _payload_types(section) == [opus_pt, red_pt]
        assert _fmtp(section, red_pt) == f"{opus_pt}/{opus_pt}"
    finally:
        await pc.close()


# --------------------------------------------------------------------------- through the SFU


def _hears(p: SyntheticParticipant, other: SyntheticParticipant, tone_hz: float) -> bool:
    media = p.received.get(other.identity or "")
    return (
        media is not None
        and media.audio_frames > 100
        and media.audio_freq_hz is not None
        and abs(media.audio_freq_hz - tone_hz) <= 60
    )


@pytest.mark.webrtc
async def test_red_reaches_red_subscribers_as_red_and_others_as_plain_opus(server: Any) -> None:
    room = "red"
    alice = SyntheticParticipant(
        server.url, room=room, name="Alice", publish_video=False, red_distance=2
    )
    bob = SyntheticParticipant(
        server.url, room=room, name="Bob", publish_audio=False, publish_video=False, red_distance=1
    )
    carol = SyntheticParticipant(
        server.url, room=room, name="Carol", publish_audio=False, publish_video=False
    )
    try:
        await alice.join()
        await bob.join()
        await carol.join()
        tone = alice.tone_hz
        await bob.wait_for(lambda: _hears(bob, alice, tone), timeout=40)
        await carol.wait_for(lambda: _hears(carol, alice, tone), timeout=40)

        sessions = server.sfu.rooms[room].sessions
        [producer] = sessions[alice.identity].producers.values()
        assert producer.codec.red_payload_type is not None
        assert producer.red_packets > 0 and producer.malformed == 0
        bob_consumer = sessions[bob.identity].consumers[producer.id]
        carol_consumer = sessions[carol.identity].consumers[producer.id]
        assert bob_consumer.sender.negotiated.red_payload_type is not None
        assert carol_consumer.sender.negotiated.red_payload_type is None
        assert alice.red_stats()["sent"] > 0
        assert bob.red_stats()["received"] > 0 and bob.red_stats()["malformed"] == 0
        assert carol.red_stats() == dict.fromkeys(carol.red_stats(), 0)

        # Bob loses every 5th audio packet on the way in; the redundancy fills the holes.
        assert bob.subscribe_pc is not None
        [receiver] = [t.receiver for t in bob.subscribe_pc.getTransceivers() if t.kind == "audio"]
        assert isinstance(receiver, adapter._RedAudioReceiver)
        red_pt = receiver.red_payload_type
        carried: list[int] = []
        stock = receiver._handle_rtp_packet
        seen = 0

        async def lossy(packet: Any, arrival_time_ms: int) -> None:
            nonlocal seen
            if packet.payload_type == red_pt:
                seen += 1
                carried.append(len(parse_red(packet.payload).redundant))
                if seen % 5 == 0:
                    return
            await stock(packet, arrival_time_ms)

        receiver._handle_rtp_packet = lossy  # type: ignore[method-assign]
        before = bob.red_stats()["recovered"]
        frames_before = bob.received[alice.identity].audio_frames
        await bob.wait_for(lambda: bob.red_stats()["recovered"] - before >= 10, timeout=30)
        # The SFU forwarded Alice's two redundant frames per packet untouched.
        assert carried and max(carried) == 2
        await bob.wait_for(
            lambda: bob.received[alice.identity].audio_frames > frames_before + 50, timeout=20
        )
        assert _hears(bob, alice, tone)
    finally:
        for p in (alice, bob, carol):
            await p.leave()
        await asyncio.sleep(0)
