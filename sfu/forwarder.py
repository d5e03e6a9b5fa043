"""Per-subscriber, per-track forwarding decisions (pure; the I/O shell executes them).

Ingress parses each packet once into an `IngressPacket`; every subscriber's `Forwarder`
turns it into a `ForwardDecision` value: drop (with a reason) or send with these
outgoing seq / ts / PictureID / TL0PICIDX.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.codecs import codec_name, supports_keyframe_detection
from media.h264 import is_h264_keyframe
from media.rtp import RtpHeader, parse_rtp_header
from media.vp8 import Vp8Descriptor, parse_vp8_descriptor
from sfu.rewriter import SeqTsRewriter, Vp8PictureIdRewriter
from sfu.vocabulary import DropReason, ForwardDecision, MediaKind, drop

# After an SSRC change, stray packets of the replaced SSRC (reordered, in flight) are
# dropped as too old for this long instead of flipping the forwarder back to them.
RETIRED_SSRC_HOLD_MS = 2000
_MAX_RETIRED_SSRCS = 8


@dataclass(slots=True)
class IngressPacket:
    """One incoming RTP packet, parsed once and shared by all subscribers' forwarders."""

    header: RtpHeader
    source_ssrc: int
    is_keyframe: bool
    vp8: Vp8Descriptor | None
    arrival_ms: int
    payload_size: int  # 0 => padding only


def make_ingress_packet(data: bytes, codec: str, arrival_ms: int) -> IngressPacket:
    """Parse header, VP8 descriptor (for VP8) and keyframe flag; raises RtpParseError."""
    header = parse_rtp_header(data)
    size = header.payload_end - header.payload_offset
    vp8: Vp8Descriptor | None = None
    keyframe = False
    if size:
        name = codec_name(codec)
        if name == "vp8":
            vp8 = parse_vp8_descriptor(memoryview(data)[header.payload_offset : header.payload_end])
            keyframe = vp8.is_keyframe
        elif name == "h264":
            keyframe = is_h264_keyframe(
                memoryview(data)[header.payload_offset : header.payload_end]
            )
    return IngressPacket(
        header=header,
        source_ssrc=header.ssrc,
        is_keyframe=keyframe,
        vp8=vp8,
        arrival_ms=arrival_ms,
        payload_size=size,
    )


class Forwarder:
    """Decides, packet by packet, what one subscriber receives of one published track.

    - video waits for a keyframe before its first packet, after an SSRC change and after
      a pause (drops say WAITING_FOR_KEYFRAME and set request_keyframe; the publisher's
      KeyframeRequester debounces);
    - a new incoming SSRC continues the outgoing seq/ts/PictureID spaces seamlessly;
    - padding-only packets are dropped without leaving a sequence gap;
    - paused: everything is dropped.
    Video codecs whose keyframes we cannot recognise are forwarded without waiting.
    """

    __slots__ = (
        "_needs_keyframe",
        "_paused",
        "_pic",
        "_retired",
        "_seq_ts",
        "_ssrc",
        "_waiting",
        "clock_rate",
        "codec",
        "drops",
        "forwarded",
        "kind",
    )

    def __init__(
        self, kind: MediaKind, codec: str, clock_rate: int, initial_seq: int, initial_ts: int
    ) -> None:
        self.kind = kind
        self.codec = codec_name(codec)
        self.clock_rate = clock_rate
        self._needs_keyframe = kind is MediaKind.VIDEO and supports_keyframe_detection(codec)
        self._seq_ts = SeqTsRewriter(clock_rate, initial_seq, initial_ts)
        self._pic = Vp8PictureIdRewriter()
        self._ssrc: int | None = None
        self._retired: dict[int, int] = {}  # replaced SSRC -> when it was replaced
        self._waiting = self._needs_keyframe
        self._paused = False
        self.forwarded = 0
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def waiting_for_keyframe(self) -> bool:
        return self._waiting

    @property
    def current_ssrc(self) -> int | None:
        return self._ssrc

    @property
    def rewriter(self) -> SeqTsRewriter:
        """The seq/ts mapping (the shell needs its timestamp offset for sender reports)."""
        return self._seq_ts

    def set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        if not paused:
            # Continue the sequence after the hole; video needs a fresh keyframe.
            self._seq_ts.resume()
            self._waiting = self._needs_keyframe

    def _drop(self, reason: DropReason, request_keyframe: bool = False) -> ForwardDecision:
        self.drops[reason] += 1
        return drop(reason, request_keyframe)

    def _switch_to(self, ssrc: int, now_ms: int) -> None:
        old = self._ssrc
        if old is not None:
            retired = self._retired
            retired[old] = now_ms
            if len(retired) > _MAX_RETIRED_SSRCS:
                del retired[next(iter(retired))]
            self._seq_ts.switch_source()
            self._pic.switch_source()
            self._waiting = self._needs_keyframe
        self._retired.pop(ssrc, None)
        self._ssrc = ssrc

    def forward(self, pkt: IngressPacket, now_ms: int) -> ForwardDecision:
        if self._paused:
            return self._drop(DropReason.PAUSED)
        ssrc = pkt.source_ssrc
        if ssrc != self._ssrc:
            retired_at = self._retired.get(ssrc)
            if retired_at is not None and now_ms - retired_at < RETIRED_SSRC_HOLD_MS:
                return self._drop(DropReason.TOO_OLD)
            self._switch_to(ssrc, now_ms)
        header = pkt.header
        if pkt.payload_size == 0:
            self._seq_ts.drop(header.sequence_number)
            return self._drop(DropReason.PADDING_ONLY)
        if self._waiting:
            if not pkt.is_keyframe:
                return self._drop(DropReason.WAITING_FOR_KEYFRAME, True)
            self._waiting = False
        mapped = self._seq_ts.rewrite(header.sequence_number, header.timestamp, now_ms)
        if mapped is None:
            return self._drop(DropReason.TOO_OLD)
        picture_id: int | None = None
        tl0picidx: int | None = None
        vp8 = pkt.vp8
        if vp8 is not None:
            picture_id, tl0picidx = self._pic.rewrite(
                vp8.picture_id, vp8.tl0picidx, vp8.picture_id_bits or 15
            )
        self.forwarded += 1
        return ForwardDecision(None, mapped[0], mapped[1], picture_id, tl0picidx, False)
