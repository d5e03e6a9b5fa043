"""A host-muted participant's audio reaches neither subscribers nor the recording."""

from __future__ import annotations

from dataclasses import dataclass, field

from media.rtp import build_rtp_packet, parse_rtp_header
from sfu.adapters.aiortc_adapter import NegotiatedCodec
from sfu.consumer import Consumer
from sfu.producer import Producer
from sfu.vocabulary import MediaKind

OPUS = 111


class StubReceiver:
    extension_ids: dict[str, int] = {}

    async def request_keyframe(self, layer: int = 0) -> bool:
        return True


@dataclass
class CapturingSender:
    negotiated: NegotiatedCodec
    ssrc: int = 0x1234
    ready: bool = True
    mid: str | None = None
    extension_ids: dict[str, int] = field(default_factory=dict)
    sent: list[bytes] = field(default_factory=list)

    async def send_rtp(self, packet: bytes, rtp_timestamp: int, payload_size: int) -> bool:
        self.sent.append(packet)
        return True


class RecordingSink:
    def __init__(self) -> None:
        self.seqs: list[int] = []

    def on_packet(self, packet: object, data: bytes, arrival_ms: int) -> None:
        self.seqs.append(parse_rtp_header(data).sequence_number)


async def _send(producer: Producer, seq: int) -> None:
    data = build_rtp_packet(
        payload_type=OPUS,
        marker=False,
        sequence_number=seq,
        timestamp=seq * 960,
        ssrc=0xA11CE,
        extensions=[],
        payload=b"\xf8\x01\x02",
    )
    await producer.on_rtp(data, parse_rtp_header(data), seq * 20, 0)


async def test_paused_audio_is_neither_forwarded_nor_recorded() -> None:
    codec = NegotiatedCodec("opus", OPUS, 48000, 2)
    producer = Producer("alice:audio:0", "alice", MediaKind.AUDIO, codec, StubReceiver())  # type: ignore[arg-type]
    sender = CapturingSender(codec)
    producer.consumers.append(Consumer(producer, "bob", sender))  # type: ignore[arg-type]
    sink = RecordingSink()
    producer.sinks.append(sink)

    for seq in range(1, 6):
        await _send(producer, seq)
    producer.paused = True  # what Room.mute_by_host does
    for seq in range(6, 11):
        await _send(producer, seq)
    producer.paused = False  # the participant unmuted themselves
    for seq in range(11, 16):
        await _send(producer, seq)

    expected = [*range(1, 6), *range(11, 16)]
    assert sink.seqs == expected
    assert len(sender.sent) == len(expected)
