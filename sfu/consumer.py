"""One subscriber's copy of one producer: asks the pure Forwarder, then builds and sends bytes."""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from media.rtp import abs_send_time_value, build_rtp_packet, wrap_rtx_payload
from media.vp8 import rewrite_vp8_descriptor
from sfu.adapters.aiortc_adapter import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    ForwardingSender,
)
from sfu.forwarder import Forwarder, IngressPacket
from sfu.producer import Producer
from sfu.vocabulary import DropReason, MediaKind

# Enough for ~1 s of 720p video; issue 4 replaces this with a time-sized cache.
RETRANSMIT_CACHE_PACKETS = 512
RETRANSMIT_MIN_INTERVAL_MS = 100


@dataclass(slots=True)
class _SentPacket:
    marker: bool
    timestamp: int
    payload: bytes
    last_retransmit_ms: int


class Consumer:
    """Forwards one producer to one subscriber connection."""

    def __init__(self, producer: Producer, subscriber_id: str, sender: ForwardingSender) -> None:
        self.producer = producer
        self.subscriber_id = subscriber_id
        self.sender = sender
        self.mid: str | None = None
        self.forwarder = Forwarder(
            kind=producer.kind,
            codec=producer.codec.name,
            clock_rate=producer.codec.clock_rate,
            initial_seq=random.randrange(0, 1 << 15),
            initial_ts=random.randrange(0, 1 << 32),
        )
        self.not_negotiated = 0
        self.retransmitted = 0
        self.remb_bps: int | None = None
        self.fraction_lost = 0
        self._cache: OrderedDict[int, _SentPacket] = OrderedDict()
        self._rtx_seq = random.randrange(0, 1 << 15)
        self._now_ms = 0
        self.closed = False

    # ------------------------------------------------------------------ media path

    async def forward(self, packet: IngressPacket, data: bytes, now_ms: int) -> None:
        self._now_ms = now_ms
        if self.closed:
            return
        if not self.sender.ready or self.sender.negotiated is None:
            self.not_negotiated += 1
            return
        decision = self.forwarder.forward(packet, now_ms)
        if decision.drop_reason is not None:
            if decision.request_keyframe:
                self.producer.request_keyframe(now_ms)
            return
        header = packet.header
        payload: bytes | bytearray = data[header.payload_offset : header.payload_end]
        if packet.vp8 is not None and decision.picture_id is not None:
            payload = bytearray(payload)
            rewrite_vp8_descriptor(
                payload, packet.vp8, picture_id=decision.picture_id, tl0picidx=decision.tl0picidx
            )
        payload = bytes(payload)
        out = build_rtp_packet(
            payload_type=self.sender.negotiated.payload_type,
            marker=header.marker,
            sequence_number=decision.sequence_number,
            timestamp=decision.timestamp,
            ssrc=self.sender._ssrc,
            extensions=self._extensions(header.extensions, now_ms),
            payload=payload,
        )
        if self.producer.kind is MediaKind.VIDEO:
            self._remember(decision.sequence_number, header.marker, decision.timestamp, payload)
        await self.sender.send_rtp(out, decision.timestamp, len(payload))

    def _extensions(self, incoming: dict[int, bytes], now_ms: int) -> list[tuple[int, bytes]]:
        ids = self.sender.extension_ids
        out: list[tuple[int, bytes]] = []
        mid_id = ids.get(URI_MID)
        if mid_id is not None and self.sender.mid:
            out.append((mid_id, self.sender.mid.encode()))
        abs_id = ids.get(URI_ABS_SEND_TIME)
        if abs_id is not None:
            out.append((abs_id, abs_send_time_value(now_ms)))
        level_id = ids.get(URI_AUDIO_LEVEL)
        source_level_id = self.producer.receiver_extension_ids.get(URI_AUDIO_LEVEL)
        if level_id is not None and source_level_id is not None:
            level = incoming.get(source_level_id)
            if level is not None:
                out.append((level_id, level))
        return out

    def _remember(self, seq: int, marker: bool, timestamp: int, payload: bytes) -> None:
        self._cache[seq] = _SentPacket(marker, timestamp, payload, -RETRANSMIT_MIN_INTERVAL_MS)
        if len(self._cache) > RETRANSMIT_CACHE_PACKETS:
            self._cache.popitem(last=False)

    # ------------------------------------------------------------------ subscriber RTCP

    def on_keyframe_request(self) -> None:
        self.producer.request_keyframe(self._now_ms)

    async def on_nack(self, sequence_numbers: list[int]) -> None:
        codec = self.sender.negotiated
        if codec is None:
            return
        for seq in sequence_numbers:
            sent = self._cache.get(seq)
            if sent is None or self._now_ms - sent.last_retransmit_ms < RETRANSMIT_MIN_INTERVAL_MS:
                continue
            sent.last_retransmit_ms = self._now_ms
            if codec.rtx_payload_type is not None:
                packet = build_rtp_packet(
                    payload_type=codec.rtx_payload_type,
                    marker=sent.marker,
                    sequence_number=self._rtx_seq,
                    timestamp=sent.timestamp,
                    ssrc=self.sender._rtx_ssrc,
                    extensions=(),
                    payload=wrap_rtx_payload(seq, sent.payload),
                )
                self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            else:
                packet = build_rtp_packet(
                    payload_type=codec.payload_type,
                    marker=sent.marker,
                    sequence_number=seq,
                    timestamp=sent.timestamp,
                    ssrc=self.sender._ssrc,
                    extensions=(),
                    payload=sent.payload,
                )
            if await self.sender.send_rtp(packet, sent.timestamp, 0):
                self.retransmitted += 1

    def on_remb(self, bitrate_bps: int) -> None:
        self.remb_bps = bitrate_bps

    def on_receiver_report(self, fraction_lost: int, packets_lost: int, jitter: int) -> None:
        self.fraction_lost = fraction_lost

    # ------------------------------------------------------------------ lifecycle

    def set_paused(self, paused: bool) -> None:
        self.forwarder.set_paused(paused)

    def stats(self) -> dict[str, object]:
        drops = {str(k): v for k, v in self.forwarder.drops.items() if v}
        return {
            "producerId": self.producer.id,
            "mid": self.mid,
            "forwarded": self.forwarder.forwarded,
            "drops": drops,
            "notNegotiated": self.not_negotiated,
            "retransmitted": self.retransmitted,
            "rembBps": self.remb_bps,
            "fractionLost": self.fraction_lost,
        }


__all__ = ["Consumer", "DropReason"]
