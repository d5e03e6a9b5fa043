"""One subscriber's copy of one producer: asks the pure Forwarder, then builds and sends bytes."""

from __future__ import annotations

import random
from typing import Protocol

from media.red import RedPacketView
from media.rtp import abs_send_time_value, build_rtp_packet, wrap_rtx_payload
from media.vp8 import rewrite_vp8_descriptor
from sfu.adapters.aiortc_adapter import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_TRANSPORT_CC,
    ForwardingSender,
)
from sfu.clock import now_ms as clock_ms
from sfu.forwarder import Forwarder, IngressPacket
from sfu.producer import Producer
from sfu.retransmit import Miss, RetransmitCache
from sfu.vocabulary import DropReason, LayerSelection, MediaKind, PauseReason

# Retransmissions wait behind a backlog like everything else; past this much backlog they would
# only add to the congestion that lost the packets (the receiver asks for a keyframe instead).
RETRANSMIT_MAX_BACKLOG_MS = 150.0
# RTP padding is at most 255 bytes (its length is one byte).
PROBE_PADDING_BYTES = 255


class DownlinkTransport(Protocol):
    """The subscriber connection's shared sending side: pacing, transport-wide sequence
    numbers (stamped when a packet leaves), and the bandwidth feedback."""

    async def send(
        self,
        sender: ForwardingSender,
        packet: bytes,
        timestamp: int,
        payload_size: int,
        twcc_id: int | None,
        probe_cluster: int | None,
        audio: bool,
        abs_send_time_id: int | None = None,
    ) -> bool: ...

    def on_remb(self, bitrate_bps: int) -> None: ...

    @property
    def backlog_ms(self) -> float: ...


class Consumer:
    """Forwards one producer to one subscriber connection."""

    def __init__(
        self,
        producer: Producer,
        subscriber_id: str,
        sender: ForwardingSender,
        transport: DownlinkTransport | None = None,
        retransmit: bool = True,
    ) -> None:
        self.producer = producer
        self.retransmit = retransmit
        self.subscriber_id = subscriber_id
        self.sender = sender
        self.transport = transport
        self.mid: str | None = None
        self.forwarder = Forwarder(
            kind=producer.kind,
            codec=producer.codec.name,
            clock_rate=producer.codec.clock_rate,
            initial_seq=random.randrange(0, 1 << 15),
            initial_ts=random.randrange(0, 1 << 32),
            simulcast=producer.simulcast is not None,
        )
        if producer.simulcast is not None:
            # Start on the lowest layer; the allocator raises it as the estimate allows.
            self.forwarder.set_target_layer(0)
        # What the subscriber's page asked for (None = the tile is hidden: pause).
        self.preferred_layer: int | None = producer.layer_count - 1
        self.pinned = False
        self.pause_reason: PauseReason | None = None
        self.pauses = 0
        self.not_negotiated = 0
        self.retransmitted = 0
        self.retransmits_skipped = 0
        self.nacks_held = 0
        self.nacks_unrepairable = 0
        self.nacks_ignored = 0
        self.probe_packets = 0
        self.remb_bps: int | None = None
        self.fraction_lost = 0
        self._cache = RetransmitCache()
        self._probe_cursor = 0
        self._rtx_seq = random.randrange(0, 1 << 15)
        self._last_timestamp = 0  # of the newest packet sent: padding probes reuse it
        self._now_ms = 0
        self.closed = False

    # ------------------------------------------------------------------ layer state

    @property
    def kind(self) -> MediaKind:
        return self.producer.kind

    def selection(self) -> LayerSelection:
        return self.forwarder.selection(self.preferred_layer)

    def apply_target(
        self, layer: int | None, pause_reason: PauseReason | None, now_ms: int
    ) -> None:
        """The allocator's verdict: switch (on the next keyframe of `layer`) or pause."""
        # A pause counts when it interrupts video (not the wait for a publisher's first packets).
        if pause_reason is not None and self.pause_reason is None and self.forwarder.forwarded:
            self.pauses += 1
        self.pause_reason = pause_reason
        if self.producer.kind is MediaKind.AUDIO:
            self.forwarder.set_paused(layer is None)
            return
        if self.producer.simulcast is None:
            self.forwarder.set_paused(layer is None)
            if layer is not None and self.forwarder.waiting_for_keyframe:
                self.producer.request_keyframe(now_ms, 0)
            return
        if self.forwarder.set_target_layer(layer) and layer is not None:
            self.producer.request_keyframe(now_ms, layer)

    # ------------------------------------------------------------------ media path

    async def forward(
        self, packet: IngressPacket, data: bytes, now_ms: int, red: RedPacketView | None = None
    ) -> None:
        """``red``: the packet is audio RED; sent as RED if this subscriber negotiated it,
        else stripped to its primary Opus frame."""
        self._now_ms = now_ms
        if self.closed:
            return
        codec = self.sender.negotiated
        if not self.sender.ready or codec is None:
            self.not_negotiated += 1
            return
        decision = self.forwarder.forward(packet, now_ms)
        if decision.drop_reason is not None:
            if decision.request_keyframe:
                target = self.forwarder.target_layer
                self.producer.request_keyframe(now_ms, target if target is not None else 0)
            return
        header = packet.header
        payload: bytes | bytearray = data[header.payload_offset : header.payload_end]
        if packet.vp8 is not None and decision.picture_id is not None:
            payload = bytearray(payload)
            rewrite_vp8_descriptor(
                payload, packet.vp8, picture_id=decision.picture_id, tl0picidx=decision.tl0picidx
            )
        payload_type = codec.payload_type
        if red is not None:
            if codec.red_payload_type is not None:
                payload = red.with_payload_type(codec.payload_type)
                payload_type = codec.red_payload_type
            else:
                payload = red.primary_data
        payload = bytes(payload)
        extensions, twcc_id = self._extensions(header.extensions, now_ms)
        out = build_rtp_packet(
            payload_type=payload_type,
            marker=header.marker,
            sequence_number=decision.sequence_number,
            timestamp=decision.timestamp,
            ssrc=self.sender.ssrc,
            extensions=extensions,
            payload=payload,
        )
        self._last_timestamp = decision.timestamp
        if self.producer.kind is MediaKind.VIDEO:
            self._cache.store(
                decision.sequence_number, header.marker, decision.timestamp, payload, now_ms
            )
        abs_id = self.sender.extension_ids.get(URI_ABS_SEND_TIME)
        await self._send(out, decision.timestamp, len(payload), twcc_id, None, abs_id)

    async def _send(
        self,
        packet: bytes,
        timestamp: int,
        payload_size: int,
        twcc_id: int | None,
        probe_cluster: int | None,
        abs_send_time_id: int | None = None,
    ) -> bool:
        if self.transport is None:
            return await self.sender.send_rtp(packet, timestamp, payload_size)
        audio = self.producer.kind is MediaKind.AUDIO
        return await self.transport.send(
            self.sender,
            packet,
            timestamp,
            payload_size,
            twcc_id,
            probe_cluster,
            audio,
            abs_send_time_id,
        )

    def _transport_extension(self) -> tuple[list[tuple[int, bytes]], int | None]:
        """A placeholder transport-wide sequence number, first among the extensions; the
        downlink writes the real one when the packet leaves (after pacing)."""
        twcc_id = self.sender.extension_ids.get(URI_TRANSPORT_CC)
        if twcc_id is None or self.transport is None:
            return [], None
        return [(twcc_id, b"\x00\x00")], twcc_id

    def _extensions(
        self, incoming: dict[int, bytes], now_ms: int
    ) -> tuple[list[tuple[int, bytes]], int | None]:
        ids = self.sender.extension_ids
        out, twcc_id = self._transport_extension()
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
        return out, twcc_id

    def _rtx_packet(
        self, marker: bool, timestamp: int, payload: bytes, padding_size: int = 0
    ) -> tuple[bytes, int | None] | None:
        """An RTX packet (a wrapped retransmission, or padding); None without RTX."""
        codec = self.sender.negotiated
        if codec is None or codec.rtx_payload_type is None:
            return None
        extensions, twcc_id = self._transport_extension()
        # The MID lets a bundled receiver route it: with several video m-lines the RTX payload
        # type alone is ambiguous, and an unroutable retransmission repairs nothing.
        mid_id = self.sender.extension_ids.get(URI_MID)
        if mid_id is not None and self.sender.mid:
            extensions.append((mid_id, self.sender.mid.encode()))
        packet = build_rtp_packet(
            payload_type=codec.rtx_payload_type,
            marker=marker,
            sequence_number=self._rtx_seq,
            timestamp=timestamp,
            ssrc=self.sender.rtx_ssrc,
            extensions=extensions,
            payload=payload,
            padding_size=padding_size,
        )
        self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        return packet, twcc_id

    async def send_probe(self, cluster_id: int, now_ms: int) -> int:
        """Send one recent packet again over RTX as bandwidth-probe filler; bytes sent (0: none).

        Real media as filler (like libwebrtc's redundant payloads) costs the receiver nothing:
        a duplicate is discarded after the jitter buffer has it.
        """
        if self.closed or not self.sender.ready:
            return 0
        recent = self._cache.recent(32)
        if recent:
            seq, sent = recent[self._probe_cursor % len(recent)]
            self._probe_cursor += 1
            payload = wrap_rtx_payload(seq, sent.payload)
            built = self._rtx_packet(sent.marker, sent.timestamp, payload)
            timestamp = sent.timestamp
        else:
            # Nothing sent lately (the video is paused, typically for bandwidth: exactly when a
            # probe matters most): padding-only RTX packets carry the probe instead.
            timestamp = self._last_timestamp
            built = self._rtx_packet(False, timestamp, b"", PROBE_PADDING_BYTES)
        if built is None:
            return 0
        packet, twcc_id = built
        if not await self._send(packet, timestamp, 0, twcc_id, cluster_id):
            return 0
        self.probe_packets += 1
        return len(packet)

    # ------------------------------------------------------------------ subscriber RTCP

    def on_keyframe_request(self) -> None:
        target = self.forwarder.current_layer if self.producer.simulcast is not None else 0
        self.producer.request_keyframe(self._now_ms, target if target is not None else 0)

    async def on_nack(self, sequence_numbers: list[int]) -> None:
        codec = self.sender.negotiated
        if codec is None:
            return
        if not self.retransmit:
            self.nacks_ignored += len(sequence_numbers)
            return
        if self.transport is not None and self.transport.backlog_ms > RETRANSMIT_MAX_BACKLOG_MS:
            self.retransmits_skipped += len(sequence_numbers)
            return
        now = clock_ms()
        for seq in sequence_numbers:
            sent = self._cache.resend(seq, now)
            if sent is Miss.HELD:
                # Lost upstream as well: the SFU is already asking the publisher for it, and
                # forwards it when it comes.
                self.nacks_held += 1
                continue
            if sent is Miss.UNAVAILABLE:
                self.nacks_unrepairable += 1
                self.on_keyframe_request()  # debounced per layer by the producer
                continue
            if sent is Miss.THROTTLED:
                continue
            built = self._rtx_packet(
                sent.marker, sent.timestamp, wrap_rtx_payload(seq, sent.payload)
            )
            if built is None:
                extensions, twcc_id = self._transport_extension()
                packet = build_rtp_packet(
                    payload_type=codec.payload_type,
                    marker=sent.marker,
                    sequence_number=seq,
                    timestamp=sent.timestamp,
                    ssrc=self.sender.ssrc,
                    extensions=extensions,
                    payload=sent.payload,
                )
            else:
                packet, twcc_id = built
            if await self._send(packet, sent.timestamp, 0, twcc_id, None):
                self.retransmitted += 1

    def on_remb(self, bitrate_bps: int) -> None:
        self.remb_bps = bitrate_bps
        if self.transport is not None:
            self.transport.on_remb(bitrate_bps)

    def on_receiver_report(self, fraction_lost: int, packets_lost: int, jitter: int) -> None:
        self.fraction_lost = fraction_lost

    # ------------------------------------------------------------------ lifecycle

    def set_paused(self, paused: bool) -> None:
        self.forwarder.set_paused(paused)

    def stats(self) -> dict[str, object]:
        drops = {str(k): v for k, v in self.forwarder.drops.items() if v}
        selection = self.selection()
        return {
            "producerId": self.producer.id,
            "participantId": self.producer.owner_id,
            "kind": str(self.producer.kind),
            "mid": self.mid,
            "forwarded": self.forwarder.forwarded,
            "drops": drops,
            "notNegotiated": self.not_negotiated,
            # Audio goes out as RED (RFC 2198) when RED arrives and the subscriber took it.
            "red": self.sender.negotiated is not None
            and self.sender.negotiated.red_payload_type is not None,
            "retransmitted": self.retransmitted,
            "retransmitsSkipped": self.retransmits_skipped,
            "nacksHeld": self.nacks_held,
            "nacksHeldAnswered": self._cache.held_answered,
            "nacksUnrepairable": self.nacks_unrepairable,
            "nacksIgnored": self.nacks_ignored,
            "probePackets": self.probe_packets,
            "rembBps": self.remb_bps,
            "fractionLost": self.fraction_lost,
            "layers": {
                "simulcast": self.producer.simulcast is not None,
                "preferred": selection.preferred,
                "target": selection.target,
                "current": selection.current,
                "switches": self.forwarder.switches,
                "pauses": self.pauses,
                "pauseReason": str(self.pause_reason) if self.pause_reason else None,
            },
        }


__all__ = ["Consumer", "DropReason"]
