"""A publisher's track inside the SFU: parses each packet once and fans it out to consumers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from media.codecs import is_keyframe
from media.red import RedPacketView
from media.rtp import RtpHeader, RtpParseError, parse_audio_level
from media.sdp_simulcast import SimulcastOffer
from media.vp8 import Vp8Descriptor, parse_vp8_descriptor
from sfu.adapters.aiortc_adapter import URI_AUDIO_LEVEL, ForwardingReceiver, NegotiatedCodec
from sfu.dynacast import DynacastController
from sfu.forwarder import IngressPacket
from sfu.keyframe import KeyframeRequester
from sfu.layers import LayerActivityTracker
from sfu.vocabulary import MediaKind

if TYPE_CHECKING:
    from sfu.consumer import Consumer

# Nominal height of each simulcast layer when the top one is 720p and each step halves it
# (the web client's 1/4, 1/2, full encodings); used to map a tile's size to a layer.
TOP_LAYER_HEIGHT = 720


class PacketSink(Protocol):
    def on_packet(self, packet: IngressPacket, data: bytes, arrival_ms: int) -> None: ...


class Producer:
    """One published track (audio or video) of one participant."""

    def __init__(
        self,
        producer_id: str,
        owner_id: str,
        kind: MediaKind,
        codec: NegotiatedCodec,
        receiver: ForwardingReceiver,
        simulcast: SimulcastOffer | None = None,
    ) -> None:
        self.id = producer_id
        self.owner_id = owner_id
        self.kind = kind
        self.codec = codec
        self.receiver = receiver
        self.simulcast = simulcast
        self.mid: str | None = None
        self.layer_count = len(simulcast.rids) if simulcast is not None else 1
        self.consumers: list[Consumer] = []
        # Local consumers that send nothing (the recorder): called with every ingress packet.
        self.sinks: list[PacketSink] = []
        self.keyframes = [KeyframeRequester() for _ in range(self.layer_count)]
        # A 2 s window: keyframes make 1 s bitrates jump, and the allocator prices layers by it.
        self.layers = LayerActivityTracker(self.layer_count, window_ms=2000)
        self.dynacast = DynacastController(self.layer_count) if simulcast is not None else None
        # Told which rids to encode when dynacast changes them (the signaling layer sends it).
        self.on_active_layers: Callable[[Producer, tuple[str, ...]], None] | None = None
        # (participant, -dBov level, now_ms) for active-speaker detection.
        self.on_audio_level: Callable[[str, int, float], None] | None = None
        self.packets = 0
        self.malformed = 0
        self.red_packets = 0  # audio that arrived as RED (RFC 2198)
        self.keyframes_seen = 0
        self.unrepairable = 0  # packets lost on the publisher leg for good
        # Muted by the host: nothing reaches subscribers or recording until the owner unmutes.
        self.paused = False
        self._pli_tasks: set[asyncio.Task[None]] = set()

    @property
    def receiver_extension_ids(self) -> dict[str, int]:
        return self.receiver.extension_ids

    @property
    def layer_heights(self) -> tuple[int, ...]:
        n = self.layer_count
        return tuple(TOP_LAYER_HEIGHT >> (n - 1 - i) for i in range(n))

    @property
    def rids(self) -> tuple[str, ...]:
        return self.simulcast.rids if self.simulcast is not None else ()

    async def on_rtp(self, data: bytes, header: RtpHeader, arrival_ms: int, layer: int) -> None:
        payload = data[header.payload_offset : header.payload_end]
        vp8: Vp8Descriptor | None = None
        red: RedPacketView | None = None
        try:
            if self.codec.name == "vp8" and payload:
                vp8 = parse_vp8_descriptor(payload)
            elif header.payload_type == self.codec.red_payload_type:
                # Parsed once here; each subscriber takes it whole (retyped) or stripped.
                red = RedPacketView(payload)
                self.red_packets += 1
        except RtpParseError:
            self.malformed += 1
            return
        keyframe = (
            self.kind is MediaKind.VIDEO
            and bool(payload)
            and (vp8.is_keyframe if vp8 is not None else is_keyframe(self.codec.name, payload))
        )
        packet = IngressPacket(
            header=header,
            source_ssrc=header.ssrc,
            is_keyframe=keyframe,
            vp8=vp8,
            arrival_ms=arrival_ms,
            payload_size=len(payload),
            layer=layer,
        )
        self.packets += 1
        if layer >= self.layer_count:
            self.malformed += 1
            return
        self.layers.on_packet(layer, header.payload_end + header.padding_size, arrival_ms)
        if self.kind is MediaKind.AUDIO and self.on_audio_level is not None:
            level_id = self.receiver.extension_ids.get(URI_AUDIO_LEVEL)
            value = header.extensions.get(level_id) if level_id is not None else None
            if value:
                self.on_audio_level(self.owner_id, parse_audio_level(value)[1], arrival_ms)
        elif self.kind is MediaKind.VIDEO:
            requester = self.keyframes[layer]
            if keyframe:
                self.keyframes_seen += 1
                requester.on_keyframe(arrival_ms)
            elif requester.poll(arrival_ms):
                self._send_pli(layer)
        if self.paused:
            # Muted by the host: what was said is not part of the consultation, so neither the
            # subscribers nor the recording get it.
            return
        for sink in tuple(self.sinks):
            sink.on_packet(packet, data, arrival_ms)
        for consumer in tuple(self.consumers):
            await consumer.forward(packet, data, arrival_ms, red)

    def on_unrepairable(self, layer: int, now_ms: int) -> None:
        """Retransmission gave up on a lost packet: only a keyframe repairs the picture now."""
        self.unrepairable += 1
        self.request_keyframe(now_ms, layer)

    def update_dynacast(self, now_ms: int) -> None:
        """Re-decide which layers the publisher encodes from what its subscribers prefer."""
        dynacast = self.dynacast
        if dynacast is None or self.simulcast is None:
            return
        preferred = [c.preferred_layer for c in self.consumers if not c.closed]
        if dynacast.update(preferred, now_ms) and self.on_active_layers is not None:
            rids = self.simulcast.rids
            active = tuple(rid for rid, on in zip(rids, dynacast.active(), strict=True) if on)
            self.on_active_layers(self, active)

    def request_keyframe(self, now_ms: int, layer: int = 0) -> None:
        """A subscriber needs a keyframe of `layer`; debounced to about one PLI a second."""
        if self.kind is not MediaKind.VIDEO or not 0 <= layer < self.layer_count:
            return
        if self.keyframes[layer].request(now_ms):
            self._send_pli(layer)

    @property
    def keyframe_requests_sent(self) -> int:
        return sum(k.sent for k in self.keyframes)

    def _send_pli(self, layer: int) -> None:
        task = asyncio.ensure_future(self._pli(layer))
        self._pli_tasks.add(task)
        task.add_done_callback(self._pli_tasks.discard)

    async def _pli(self, layer: int) -> None:
        await self.receiver.request_keyframe(layer)
