"""Opus DTX through the SFU: silence is neither loss nor a dead stream.

With DTX a publisher sends a comfort-noise packet about every 400 ms instead of one every
20 ms: sequence numbers stay consecutive, timestamps jump. The real Producer → Consumer path
runs here with stand-ins for the aiortc receiver and sender (no network needed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from media.red import RedEncoder, parse_red
from media.rtp import build_rtp_packet, parse_rtp_header
from sfu.adapters.aiortc_adapter import URI_AUDIO_LEVEL, NegotiatedCodec
from sfu.consumer import Consumer
from sfu.downlink import Downlink
from sfu.producer import Producer
from sfu.vocabulary import MediaKind

LEVEL_ID = 2
SILENT_MS = 2400
PUBLISHER_OPUS, PUBLISHER_RED = 111, 63
SUBSCRIBER_OPUS, SUBSCRIBER_RED = 96, 63


class FakeReceiver:
    extension_ids = {URI_AUDIO_LEVEL: LEVEL_ID}

    def __init__(self) -> None:
        self.keyframe_requests = 0

    async def request_keyframe(self, layer: int = 0) -> bool:
        self.keyframe_requests += 1
        return True


@dataclass
class FakeSender:
    negotiated: NegotiatedCodec
    ssrc: int = 0x1234
    ready: bool = True
    mid: str | None = None
    extension_ids: dict[str, int] = field(default_factory=lambda: {URI_AUDIO_LEVEL: 5})
    sent: list[bytes] = field(default_factory=list)

    async def send_rtp(self, packet: bytes, rtp_timestamp: int, payload_size: int) -> bool:
        self.sent.append(packet)
        return True


def _producer(red: bool) -> Producer:
    codec = NegotiatedCodec(
        "opus", PUBLISHER_OPUS, 48000, 2, red_payload_type=PUBLISHER_RED if red else None
    )
    return Producer("alice:audio:0", "alice", MediaKind.AUDIO, codec, FakeReceiver())  # type: ignore[arg-type]


def _consumer(producer: Producer, red: bool) -> tuple[Consumer, FakeSender]:
    codec = NegotiatedCodec(
        "opus", SUBSCRIBER_OPUS, 48000, 2, red_payload_type=SUBSCRIBER_RED if red else None
    )
    sender = FakeSender(codec)
    consumer = Consumer(producer, "bob", sender)  # type: ignore[arg-type]
    producer.consumers.append(consumer)
    return consumer, sender


def _dtx_schedule(start_seq: int, start_ts: int) -> list[tuple[int, int, int, bool]]:
    """(arrival ms, seq, ts, speech): 1 s of speech, then DTX: three comfort-noise updates
    400 ms apart and 2.4 s of nothing at all, then 1 s of speech."""
    out: list[tuple[int, int, int, bool]] = []
    now, seq, ts = 1000, start_seq, start_ts
    for _ in range(50):
        out.append((now, seq, ts, True))
        now, seq, ts = now + 20, seq + 1, ts + 960
    for step_ms in (400, 400, SILENT_MS):
        out.append((now, seq, ts, False))
        now, seq, ts = now + step_ms, seq + 1, ts + step_ms * 48
    for _ in range(50):
        out.append((now, seq, ts, True))
        now, seq, ts = now + 20, seq + 1, ts + 960
    return [(t, s & 0xFFFF, x & 0xFFFFFFFF, speech) for t, s, x, speech in out]


@pytest.mark.parametrize("start_seq", [0, 65500])
@pytest.mark.parametrize("red", [False, True])
async def test_dtx_silence_passes_through_unchanged(start_seq: int, red: bool) -> None:
    producer = _producer(red)
    levels: list[tuple[str, int, float]] = []
    producer.on_audio_level = lambda who, level, now: levels.append((who, level, now))
    consumer, sender = _consumer(producer, red=True)
    plain_consumer, plain_sender = _consumer(producer, red=False)
    downlink = Downlink(lambda: [consumer])
    schedule = _dtx_schedule(start_seq, 0xFFFF_0000)
    encoder = RedEncoder(1)
    silence_checked = False
    for arrival, seq, ts, speech in schedule:
        if speech and not silence_checked and arrival > schedule[52][0]:
            # 2 s into a silence without a single packet: audio is still allocated and playing.
            now = schedule[52][0] + SILENT_MS - 100
            [allocation] = downlink.allocate(now).allocations
            assert allocation.target_layer == 0 and allocation.pause_reason is None
            assert not producer.layers.is_active(0, now)  # quiet, yet not treated as gone
            assert not consumer.forwarder.paused
            silence_checked = True
        frame = bytes([0xF8 if speech else 0x08]) + seq.to_bytes(2, "big")
        payload = encoder.wrap(PUBLISHER_OPUS, ts, frame) if red else frame
        level = bytes([0x80 | (30 if speech else 127)])
        data = build_rtp_packet(
            payload_type=PUBLISHER_RED if red else PUBLISHER_OPUS,
            marker=False,
            sequence_number=seq,
            timestamp=ts,
            ssrc=0xA11CE,
            extensions=[(LEVEL_ID, level)],
            payload=payload,
        )
        await producer.on_rtp(data, parse_rtp_header(data), arrival, 0)
    assert silence_checked

    for fwd in (consumer, plain_consumer):
        assert fwd.forwarder.forwarded == len(schedule)
        assert not any(fwd.forwarder.drops.values())
        assert not fwd.forwarder.paused
    assert producer.receiver.keyframe_requests == 0  # type: ignore[attr-defined]
    assert producer.keyframe_requests_sent == 0

    for out in (sender.sent, plain_sender.sent):
        headers = [parse_rtp_header(p) for p in out]
        # Consecutive sequence numbers; every timestamp gap exactly the publisher's.
        assert all(
            (b.sequence_number - a.sequence_number) & 0xFFFF == 1
            for a, b in zip(headers, headers[1:], strict=False)
        )
        gaps_out = [
            (b.timestamp - a.timestamp) & 0xFFFFFFFF
            for a, b in zip(headers, headers[1:], strict=False)
        ]
        gaps_in = [(b[2] - a[2]) & 0xFFFFFFFF for a, b in zip(schedule, schedule[1:], strict=False)]
        assert gaps_out == gaps_in
        # The audio level goes through, silence included.
        assert all(h.extensions.get(5) is not None for h in headers)

    plain = [parse_rtp_header(p) for p in plain_sender.sent]
    assert {h.payload_type for h in plain} == {SUBSCRIBER_OPUS}
    assert [
        p[h.payload_offset + 1 : h.payload_end]
        for p, h in zip(plain_sender.sent, plain, strict=True)
    ] == [seq.to_bytes(2, "big") for _, seq, _, _ in schedule]
    with_red = [parse_rtp_header(p) for p in sender.sent]
    if red:
        assert {h.payload_type for h in with_red} == {SUBSCRIBER_RED}
        parsed = [
            parse_red(p[h.payload_offset : h.payload_end])
            for p, h in zip(sender.sent, with_red, strict=True)
        ]
        assert all(r.primary.payload_type == SUBSCRIBER_OPUS for r in parsed)
        assert all(b.payload_type == SUBSCRIBER_OPUS for r in parsed for b in r.redundant)
        # A DTX jump (400 ms = 19 200 ticks) is too far back for a 14-bit offset: no block.
        assert [len(r.redundant) for r in parsed[49:55]] == [1, 1, 0, 0, 0, 1]
    else:
        # A plain-Opus publisher reaches everyone as plain Opus.
        assert {h.payload_type for h in with_red} == {SUBSCRIBER_OPUS}
    assert producer.red_packets == (len(schedule) if red else 0)
    assert {who for who, _, _ in levels} == {"alice"}


async def test_malformed_red_is_counted_and_not_forwarded() -> None:
    producer = _producer(red=True)
    consumer, sender = _consumer(producer, red=True)
    data = build_rtp_packet(
        payload_type=PUBLISHER_RED,
        marker=False,
        sequence_number=1,
        timestamp=960,
        ssrc=1,
        extensions=[],
        payload=b"\x80\x00",
    )
    await producer.on_rtp(data, parse_rtp_header(data), 0, 0)
    assert producer.malformed == 1 and sender.sent == []
    assert consumer.forwarder.forwarded == 0
