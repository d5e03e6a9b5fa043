"""A publisher's track inside the SFU: parses each packet once and fans it out to consumers."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from media.codecs import is_keyframe
from media.rtp import RtpHeader, RtpParseError
from media.vp8 import Vp8Descriptor, parse_vp8_descriptor
from sfu.adapters.aiortc_adapter import ForwardingReceiver, NegotiatedCodec
from sfu.forwarder import IngressPacket
from sfu.keyframe import KeyframeRequester
from sfu.vocabulary import MediaKind

if TYPE_CHECKING:
    from sfu.consumer import Consumer


class Producer:
    """One published track (audio or video) of one participant."""

    def __init__(
        self,
        producer_id: str,
        owner_id: str,
        kind: MediaKind,
        codec: NegotiatedCodec,
        receiver: ForwardingReceiver,
    ) -> None:
        self.id = producer_id
        self.owner_id = owner_id
        self.kind = kind
        self.codec = codec
        self.receiver = receiver
        self.consumers: list[Consumer] = []
        self.keyframes = KeyframeRequester()
        self.packets = 0
        self.malformed = 0
        self.keyframes_seen = 0
        self._last_ssrc: int | None = None
        self._pli_tasks: set[asyncio.Task[None]] = set()

    @property
    def receiver_extension_ids(self) -> dict[str, int]:
        return self.receiver.extension_ids

    async def on_rtp(self, data: bytes, header: RtpHeader, arrival_ms: int) -> None:
        payload = data[header.payload_offset : header.payload_end]
        vp8: Vp8Descriptor | None = None
        try:
            if self.codec.name == "vp8" and payload:
                vp8 = parse_vp8_descriptor(payload)
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
        )
        self.packets += 1
        self._last_ssrc = header.ssrc
        if self.kind is MediaKind.VIDEO:
            if keyframe:
                self.keyframes_seen += 1
                self.keyframes.on_keyframe(arrival_ms)
            elif self.keyframes.poll(arrival_ms):
                self._send_pli()
        for consumer in tuple(self.consumers):
            await consumer.forward(packet, data, arrival_ms)

    def request_keyframe(self, now_ms: int) -> None:
        """A subscriber needs a keyframe; the requester debounces to about one PLI a second."""
        if self.kind is MediaKind.VIDEO and self.keyframes.request(now_ms):
            self._send_pli()

    def _send_pli(self) -> None:
        if self._last_ssrc is None:
            return
        task = asyncio.ensure_future(self.receiver.request_keyframe(self._last_ssrc))
        self._pli_tasks.add(task)
        task.add_done_callback(self._pli_tasks.discard)
