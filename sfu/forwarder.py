"""Per-subscriber, per-track forwarding decisions (pure; the I/O shell executes them).

Ingress parses each packet once into an `IngressPacket`; every subscriber's `Forwarder`
turns it into a `ForwardDecision` value: drop (with a reason) or send with these
outgoing seq / ts / PictureID / TL0PICIDX. A simulcast forwarder also selects one
spatial layer of the incoming streams and switches layers on keyframes.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.codecs import codec_name, supports_keyframe_detection
from media.h264 import is_h264_keyframe
from media.rtp import RtpHeader, parse_rtp_header
from media.vp8 import Vp8Descriptor, parse_vp8_descriptor
from sfu.rewriter import SeqTsRewriter, Vp8PictureIdRewriter
from sfu.vocabulary import DropReason, ForwardDecision, LayerSelection, MediaKind, drop

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
    layer: int = 0  # spatial simulcast layer (0 = lowest); 0 for a non-simulcast track


def make_ingress_packet(
    data: bytes, codec: str, arrival_ms: int, *, layer: int = 0
) -> IngressPacket:
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
        layer=layer,
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

    With `simulcast=True` the packets of all spatial layers arrive here and one layer is
    forwarded: `current` (None until the first keyframe). `set_target_layer` picks the
    layer wanted next (initially 0, the lowest); the forwarder switches to it on its next
    keyframe (simulcast layers are independent streams, so up- and downswitches alike)
    and keeps forwarding `current` until then. Packets of other layers are dropped as
    LAYER_NOT_SELECTED, with request_keyframe while a switch is pending (the shell asks the
    publisher for a keyframe of `target_layer`). Target None pauses.
    """

    __slots__ = (
        "_current",
        "_last_layer",
        "_layer_newest",
        "_needs_keyframe",
        "_paused",
        "_pic",
        "_retired",
        "_seq_ts",
        "_simulcast",
        "_ssrc",
        "_target",
        "_waiting",
        "clock_rate",
        "codec",
        "drops",
        "forwarded",
        "kind",
        "switches",
    )

    def __init__(
        self,
        kind: MediaKind,
        codec: str,
        clock_rate: int,
        initial_seq: int,
        initial_ts: int,
        *,
        simulcast: bool = False,
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
        self._simulcast = simulcast
        self._target: int | None = 0
        self._current: int | None = None
        self._last_layer: int | None = None  # the layer forwarded last (survives pauses)
        # Per layer: (SSRC, newest 16-bit seq) seen, to tell a fresh keyframe from a late one.
        self._layer_newest: dict[int, tuple[int, int]] = {}
        self.forwarded = 0
        self.switches = 0  # simulcast: how often forwarding moved to a different layer
        self.drops: dict[DropReason, int] = dict.fromkeys(DropReason, 0)

    @property
    def simulcast(self) -> bool:
        return self._simulcast

    @property
    def paused(self) -> bool:
        return self._paused or (self._simulcast and self._target is None)

    @property
    def waiting_for_keyframe(self) -> bool:
        if not self._simulcast:
            return self._waiting
        return (
            self._needs_keyframe
            and self._target is not None
            and not self._paused
            and (self._target != self._current or self._waiting)
        )

    @property
    def current_ssrc(self) -> int | None:
        return self._ssrc

    @property
    def rewriter(self) -> SeqTsRewriter:
        """The seq/ts mapping (the shell needs its timestamp offset for sender reports)."""
        return self._seq_ts

    # --- layers -------------------------------------------------------------------------

    @property
    def target_layer(self) -> int | None:
        """The layer wanted (None = paused). A non-simulcast track has the one layer 0."""
        if not self._simulcast:
            return None if self._paused else 0
        return self._target

    @property
    def current_layer(self) -> int | None:
        """The layer being forwarded (None = nothing yet, paused, or waiting to start)."""
        if not self._simulcast:
            forwarding = not (self._paused or self._waiting) and self._ssrc is not None
            return 0 if forwarding else None
        return self._current

    def selection(self, preferred: int | None) -> LayerSelection:
        return LayerSelection(preferred, self.target_layer, self.current_layer)

    def set_target_layer(self, layer: int | None) -> bool:
        """Choose the layer to forward (None = pause); True when that needs a keyframe.

        A non-simulcast forwarder accepts 0 (unpause) and None (pause) only.
        """
        if layer is not None and layer < 0:
            raise ValueError(f"layer must be >= 0 or None, got {layer}")
        if not self._simulcast:
            if layer not in (None, 0):
                raise ValueError(f"not a simulcast track: no layer {layer}")
            self.set_paused(layer is None)
            return layer is not None and self._waiting
        self._target = layer
        if layer is None:
            # Resuming waits for a keyframe of whatever layer is then the target.
            self._current = None
            return False
        if self._paused:
            return False
        return self._needs_keyframe and (layer != self._current or self._waiting)

    # --- pause --------------------------------------------------------------------------

    def set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        self._paused = paused
        if self._simulcast:
            if paused:
                self._current = None
            return
        if not paused:
            # Continue the sequence after the hole; video needs a fresh keyframe.
            self._seq_ts.resume()
            self._waiting = self._needs_keyframe

    # --- per packet ---------------------------------------------------------------------

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
        if self._simulcast:
            return self._forward_layer(pkt, now_ms)
        return self._forward_stream(pkt, now_ms)

    def _forward_stream(self, pkt: IngressPacket, now_ms: int) -> ForwardDecision:
        """One stream (a non-simulcast track, or the current simulcast layer)."""
        ssrc = pkt.source_ssrc
        if ssrc != self._ssrc:
            retired_at = self._retired.get(ssrc)
            if retired_at is not None and now_ms - retired_at < RETIRED_SSRC_HOLD_MS:
                return self._drop(DropReason.TOO_OLD)
            self._switch_to(ssrc, now_ms)
        if pkt.payload_size == 0:
            self._seq_ts.drop(pkt.header.sequence_number)
            return self._drop(DropReason.PADDING_ONLY)
        if self._waiting:
            if not pkt.is_keyframe:
                return self._drop(DropReason.WAITING_FOR_KEYFRAME, True)
            self._waiting = False
        return self._rewrite(pkt, now_ms)

    def _rewrite(self, pkt: IngressPacket, now_ms: int) -> ForwardDecision:
        header = pkt.header
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

    def _is_newest_of_layer(self, pkt: IngressPacket) -> bool:
        """Track each layer's newest packet; False for a late (reordered/retransmitted) one."""
        ssrc = pkt.source_ssrc
        seq = pkt.header.sequence_number
        seen = self._layer_newest.get(pkt.layer)
        if seen is not None and seen[0] == ssrc and not 0 < (seq - seen[1]) & 0xFFFF < 0x8000:
            return False
        self._layer_newest[pkt.layer] = (ssrc, seq)
        return True

    def _forward_layer(self, pkt: IngressPacket, now_ms: int) -> ForwardDecision:
        target = self._target
        if target is None:
            return self._drop(DropReason.PAUSED)
        layer = pkt.layer
        newest = self._is_newest_of_layer(pkt)
        current = self._current
        if layer == current:
            return self._forward_stream(pkt, now_ms)
        if pkt.payload_size == 0:
            # Padding of a layer we do not forward: not in the outgoing sequence at all.
            return self._drop(DropReason.PADDING_ONLY)
        if layer == target:
            # Only a keyframe that is new (not a late copy of an old one) starts a layer:
            # what follows it in the layer must be forwardable without a gap.
            if newest and (pkt.is_keyframe or not self._needs_keyframe):
                retired_at = self._retired.get(pkt.source_ssrc)
                if retired_at is not None and now_ms - retired_at < RETIRED_SSRC_HOLD_MS:
                    return self._drop(DropReason.TOO_OLD)
                self._start_layer(layer, pkt.source_ssrc)
                return self._rewrite(pkt, now_ms)
        return self._drop(DropReason.LAYER_NOT_SELECTED, target != current)

    def _start_layer(self, layer: int, ssrc: int) -> None:
        if ssrc == self._ssrc and layer == self._last_layer:
            # The same stream after a pause: keep its timestamp mapping (media clock).
            self._seq_ts.resume()
        else:
            self._seq_ts.switch_source()
        # PictureID / TL0PICIDX continue at last + 1 even after a pause (no phantom loss).
        self._pic.switch_source()
        self._retired.pop(ssrc, None)
        if self._last_layer is not None and layer != self._last_layer:
            self.switches += 1
        self._ssrc = ssrc
        self._current = layer
        self._last_layer = layer
        self._waiting = False
