# aiortc keeps its receiver state in name-mangled attributes that mypy cannot see; this module
# is where we accept that, once.
# mypy: disable-error-code="attr-defined,has-type"
"""The one module that touches aiortc and aioice internals.

aiortc has no public API for forwarding RTP, so this module bends it at a few seams, all measured
against aiortc 1.16.0 / aioice 0.13.0 (pinned in pyproject.toml; tests/test_adapter_seam.py fails
loudly if a seam moves):

* ICE host addresses: ``aioice.ice.get_host_addresses`` skips 127.0.0.1; we replace it so the
  operator chooses the addresses (loopback included).
* Ingress: a publisher transceiver's receiver becomes a :class:`ForwardingReceiver` inside the
  ``track`` event, before aiortc starts it. It never starts the decoder thread and never fills
  the jitter buffer; it keeps aiortc's receive statistics (RTCP RR), its NACK generator and its
  abs-send-time REMB estimator so the publisher still gets feedback. The DTLS transport's RTP
  handler is replaced so packets of known SSRCs skip ``RtpPacket.parse`` entirely.
* Egress: a subscriber transceiver's sender becomes a :class:`ForwardingSender`: no encoder, no
  20 ms polling task; it sends RTP bytes built by the SFU and hands subscriber RTCP (PLI, FIR,
  NACK, REMB, RR) to a callback object.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aioice.ice
import aiortc.rtcpeerconnection
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc import clock as aiortc_clock
from aiortc.codecs import CODECS, HEADER_EXTENSIONS, get_capabilities, is_rtx
from aiortc.codecs.opus import OpusEncoder
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtcpFeedback,
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpByePacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
    pack_remb_fci,
    unpack_remb_fci,
)

from media.codecs import is_keyframe
from media.red import RedEncoder, RedParseError, RedReceiver
from media.rtp import RtpHeader, RtpParseError, is_rtcp, parse_rtp_header, unwrap_rtx_payload
from media.sdp_simulcast import URI_REPAIRED_RID as URI_REPAIRED_RID
from media.sdp_simulcast import URI_RID as URI_RID
from media.sdp_simulcast import SimulcastOffer
from sfu.clock import now_ms
from sfu.nack import NackScheduler
from sfu.twcc import (
    TWCC_URI,
    TwccFeedback,
    TwccParseError,
    TwccRecorder,
    parse_twcc,
    split_rtcp_compound,
)

PINNED_AIORTC = "1.16.0"

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_TRANSPORT_CC = TWCC_URI

# How often a publisher gets transport-wide feedback from us (libwebrtc receivers use 50-250 ms).
TWCC_FEEDBACK_INTERVAL_S = 0.1


def _negotiate_more_than_aiortc() -> None:
    """Offer/answer the header extensions and feedback an SFU needs, which aiortc leaves out.

    - rid / repaired-rid: without them Chrome sends only its first simulcast encoding;
    - transport-wide-cc (+ ``a=rtcp-fb:* transport-cc``): send-side bandwidth estimation on
      both legs (publishers ramp up on our feedback; we estimate each subscriber's downlink).
    IDs are shared across kinds under BUNDLE, so each URI gets one id in both lists.
    """
    wanted = {
        "audio": [(4, URI_TRANSPORT_CC)],
        "video": [(4, URI_TRANSPORT_CC), (10, URI_RID), (11, URI_REPAIRED_RID)],
    }
    for kind, extensions in wanted.items():
        have = {e.uri for e in HEADER_EXTENSIONS[kind]}
        for ext_id, uri in extensions:
            if uri not in have:
                HEADER_EXTENSIONS[kind].append(RTCRtpHeaderExtensionParameters(id=ext_id, uri=uri))
    for kind in ("audio", "video"):
        for codec in CODECS[kind]:
            if codec.mimeType.lower().endswith("/rtx"):
                continue
            feedback = RTCRtcpFeedback(type="transport-cc")
            if feedback not in codec.rtcpFeedback:
                codec.rtcpFeedback.append(feedback)


_negotiate_more_than_aiortc()

# --------------------------------------------------------------------------- audio RED / Opus

# Chromium's own choice for red/48000/2; any free number works, the answer keeps the offer's.
RED_PAYLOAD_TYPE = 63
# In-band FEC and DTX: in an answer they ask the publisher's encoder for them; minptime=10 is
# what browsers offer. (stereo is left out: one voice, mono.)
OPUS_PARAMETERS: dict[str, int | str] = {"minptime": 10, "useinbandfec": 1, "usedtx": "1"}

# RED is offered/accepted only where someone will handle it: a connection whose negotiation
# runs with this flag set (the SFU's, and clients that called enable_red_audio), or a
# transceiver whose codec preferences name it. Stock aiortc would hand RED to its decoder.
_red_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "consilium_red_allowed", default=False
)


def is_red(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> bool:
    return codec.mimeType.lower() == "audio/red"


def red_target(codec: RTCRtpCodecParameters | RTCRtpCodecCapability) -> int | None:
    """The payload type a RED fmtp (``111/111``) protects, if it names one type only."""
    fmtp = next(iter(codec.parameters), None)
    if not isinstance(fmtp, str):
        return None
    parts = fmtp.split("/")
    if not all(p.isdigit() for p in parts) or len(set(parts)) != 1:
        return None
    return int(parts[0])


def _add_red_and_opus_parameters() -> None:
    audio = CODECS["audio"]
    opus = next(c for c in audio if c.mimeType.lower() == "audio/opus")
    opus.parameters.update(OPUS_PARAMETERS)
    if not any(is_red(c) for c in audio):
        audio.insert(
            audio.index(opus) + 1,
            RTCRtpCodecParameters(
                mimeType="audio/red",
                clockRate=48000,
                channels=2,
                payloadType=RED_PAYLOAD_TYPE,
                parameters={f"{opus.payloadType}/{opus.payloadType}": None},
            ),
        )


_add_red_and_opus_parameters()

_stock_find_common_codecs = aiortc.rtcpeerconnection.find_common_codecs
_stock_filter_preferred_codecs = aiortc.rtcpeerconnection.filter_preferred_codecs


def _find_common_codecs(
    local_codecs: list[RTCRtpCodecParameters], remote_codecs: list[RTCRtpCodecParameters]
) -> list[RTCRtpCodecParameters]:
    """aiortc's negotiation, plus RED taken as the remote wrote it.

    aiortc would copy our own fmtp (which names our Opus payload type) into the result; a RED
    fmtp must name the remote's. A remote RED whose fmtp names no accepted codec is dropped.
    """
    if not any(is_red(c) for c in local_codecs):
        return _stock_find_common_codecs(local_codecs, remote_codecs)
    common = _stock_find_common_codecs(local_codecs, [c for c in remote_codecs if not is_red(c)])
    media_pts = {c.payloadType for c in common if not is_rtx(c)}
    for codec in remote_codecs:
        if is_red(codec) and codec.clockRate == 48000 and red_target(codec) in media_pts:
            common.append(
                RTCRtpCodecParameters(
                    mimeType="audio/red",
                    clockRate=48000,
                    channels=codec.channels,
                    payloadType=codec.payloadType,
                    parameters=dict(codec.parameters),
                )
            )
    return common


def _filter_preferred_codecs(
    codecs: list[RTCRtpCodecParameters], preferred: list[RTCRtpCodecCapability]
) -> list[RTCRtpCodecParameters]:
    """aiortc's preference filter; RED stays only where it was asked for (see _red_allowed).

    RED is matched by name (its fmtp differs per connection) and placed after the codec it
    protects, or before it when the preferences list RED first.
    """
    reds = [c for c in codecs if is_red(c)]
    others = [c for c in codecs if not is_red(c)]
    wanted = [p for p in preferred if not is_red(p)]
    red_rank = next((i for i, p in enumerate(preferred) if is_red(p)), None)
    out = _stock_filter_preferred_codecs(others, wanted)
    if red_rank is None and (preferred or not _red_allowed.get()):
        return out
    for red in reds:
        target = next(
            (i for i, c in enumerate(out) if c.payloadType == red_target(red) and not is_red(c)),
            None,
        )
        if target is None:
            continue
        target_rank = next(
            (
                i
                for i, p in enumerate(preferred)
                if p.mimeType.lower() == out[target].mimeType.lower()
            ),
            None,
        )
        first = red_rank is not None and target_rank is not None and red_rank < target_rank
        out.insert(target if first else target + 1, red)
    return out


aiortc.rtcpeerconnection.find_common_codecs = _find_common_codecs
aiortc.rtcpeerconnection.filter_preferred_codecs = _filter_preferred_codecs


def allow_red(pc: RTCPeerConnection) -> None:
    """Let this connection offer and accept audio RED (its negotiation runs with the flag)."""
    if getattr(pc, "_consilium_red", False):
        return
    pc._consilium_red = True
    stock_offer = pc.createOffer
    stock_answer = pc.createAnswer
    stock_remote = pc.setRemoteDescription

    async def create_offer() -> RTCSessionDescription:
        token = _red_allowed.set(True)
        try:
            return await stock_offer()
        finally:
            _red_allowed.reset(token)

    async def create_answer() -> RTCSessionDescription:
        token = _red_allowed.set(True)
        try:
            return await stock_answer()
        finally:
            _red_allowed.reset(token)

    async def set_remote_description(description: RTCSessionDescription) -> None:
        token = _red_allowed.set(True)
        try:
            await stock_remote(description)
        finally:
            _red_allowed.reset(token)

    pc.createOffer = create_offer  # type: ignore[method-assign]
    pc.createAnswer = create_answer  # type: ignore[method-assign]
    pc.setRemoteDescription = set_remote_description  # type: ignore[method-assign,assignment]


# --------------------------------------------------------------------------- stock receivers


_stock_receiver_receive = RTCRtpReceiver.receive


async def _receive_and_route_rtx(self: RTCRtpReceiver, parameters: RTCRtpReceiveParameters) -> None:
    """Stock ``receive``, then route the stream's RTX SSRCs to this receiver.

    aiortc's bundle router knows media SSRCs only and falls back to the payload type, so
    with two video m-lines (one per remote participant) sharing an RTX payload type every
    retransmission is discarded and a lost packet stalls that video for good. Browsers route
    by SSRC group; this makes our aiortc clients (tests, QA tool) do the same.
    """
    await _stock_receiver_receive(self, parameters)
    router = self.transport._rtp_router
    for encoding in parameters.encodings:
        if encoding.rtx is not None:
            router.ssrc_table[encoding.rtx.ssrc] = self


RTCRtpReceiver.receive = _receive_and_route_rtx  # type: ignore[method-assign]


# --------------------------------------------------------------------------- client Opus bitrate

# None: aiortc's own 96 kbit/s (stereo). Browsers send speech at about 32 kbit/s.
_client_opus_bitrate: int | None = None
_stock_opus_encoder_init = OpusEncoder.__init__


def _opus_encoder_init(self: OpusEncoder) -> None:
    _stock_opus_encoder_init(self)
    if _client_opus_bitrate is not None:
        self.codec.bit_rate = _client_opus_bitrate  # the codec opens on the first frame


OpusEncoder.__init__ = _opus_encoder_init  # type: ignore[method-assign]


def set_client_opus_bitrate(bps: int | None) -> None:
    """Opus bitrate for audio our aiortc clients encode from now on (None: aiortc's 96 kbit/s).

    The QA clients send speech like a browser does; at 96 kbit/s, RED with two redundant
    frames alone would take 400 kbit/s and fill a 3G uplink by itself.
    """
    global _client_opus_bitrate
    if bps is not None and not 6000 <= bps <= 510_000:
        raise ValueError("Opus bitrates run from 6 to 510 kbit/s")
    _client_opus_bitrate = bps


# --------------------------------------------------------------------------- ICE configuration

_ice_hosts: list[str] | None = None
_stock_get_host_addresses = aioice.ice.get_host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ice_hosts is None:
        # Every interface address, loopback included (aioice leaves 127.0.0.1 out).
        addresses = _stock_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses
    return [a for a in _ice_hosts if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


_stock_query_consent = aioice.ice.Connection.query_consent


async def _query_consent(self: aioice.ice.Connection) -> None:
    # aioice 0.13.0 race: close() during connect()'s last pacing sleep finds no consent task to
    # cancel, then connect() starts one on the closed connection that never ends (a task leak
    # per participant who leaves while ICE is finishing).
    if self._closing:
        return
    await _stock_query_consent(self)


aioice.ice.Connection.query_consent = _query_consent  # type: ignore[method-assign]


def configure_ice_hosts(addresses: Iterable[str] | None) -> None:
    """Choose the host addresses ICE gathers on, for every peer connection of this process.

    ``None`` means every interface address plus 127.0.0.1.
    """
    global _ice_hosts
    _ice_hosts = list(addresses) if addresses is not None else None
    aioice.ice.get_host_addresses = _host_addresses


def tap_jitter_buffer(receiver: RTCRtpReceiver, callback: Callable[[int, int], None]) -> None:
    """Call ``callback(sequence_number, timestamp)`` for each packet entering the receiver's
    jitter buffer (after RTX unwrapping and RED recovery), for QA clients.

    That is what a browser's jitter buffer would get. aiortc's own audio buffer then loses
    more: when a hole overflows its 16 packets it drops the good frames before the hole too.
    """
    buffer = receiver._RTCRtpReceiver__jitter_buffer
    stock_add = buffer.add

    def add(packet: RtpPacket) -> Any:
        callback(packet.sequence_number, packet.timestamp)
        return stock_add(packet)

    buffer.add = add


def missing_packets(receiver: RTCRtpReceiver) -> set[int]:
    """Sequence numbers a stock video receiver still misses (its NACK generator's list)."""
    generator = receiver._RTCRtpReceiver__nack_generator
    return set(generator.missing) if generator is not None else set()


async def send_nack(receiver: RTCRtpReceiver, sequence_numbers: Iterable[int]) -> None:
    """NACK these packets of a stock receiver's media stream (again), for QA clients.

    aiortc NACKs a hole once, when it appears; browsers ask again every round trip. Without
    retries one lost retransmission stalls aiortc's video jitter buffer for ~512 packets.
    """
    wanted = sorted(sequence_numbers)
    rtx: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc
    active: dict[int, Any] = receiver._RTCRtpReceiver__active_ssrc
    media = [ssrc for ssrc in active if ssrc not in rtx]
    if wanted and media:
        await receiver._send_rtcp_nack(max(media, key=lambda s: active[s]), wanted)


async def send_pli(receiver: RTCRtpReceiver) -> bool:
    """Ask the sender of a stock receiver's video for a keyframe (PLI), for QA clients.

    aiortc asks only when its 512-packet jitter buffer overflows; a browser asks as soon as its
    decoder starves. False while no media SSRC has been seen.
    """
    rtx: dict[int, int] = receiver._RTCRtpReceiver__rtx_ssrc
    active: dict[int, Any] = receiver._RTCRtpReceiver__active_ssrc
    media = [ssrc for ssrc in active if ssrc not in rtx]
    if not media:
        return False
    await receiver._send_rtcp_pli(max(media, key=lambda s: active[s]))
    return True


def skip_to_keyframe(receiver: RTCRtpReceiver) -> bool:
    """Let a stock receiver's video jitter buffer give up a hole and go on from the next
    keyframe it already holds (as a browser's frame buffer does); False if it holds none."""
    buffer = receiver._RTCRtpReceiver__jitter_buffer
    codecs: dict[int, Any] = receiver._RTCRtpReceiver__codecs
    if buffer is None or buffer._origin is None:
        return False
    for offset in range(1, buffer.capacity):
        packet = buffer._packets[(buffer._origin + offset) % buffer.capacity]
        codec = codecs.get(packet.payload_type) if packet is not None else None
        if codec is not None and is_keyframe(codec.mimeType, packet.payload):
            buffer.remove(offset)  # the next packet to arrive releases the keyframe
            return True
    return False


@dataclass(frozen=True)
class IceServer:
    urls: list[str]
    username: str | None = None
    credential: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"urls": self.urls}
        if self.username is not None:
            out["username"] = self.username
            out["credential"] = self.credential or ""
        return out


def new_peer_connection(ice_servers: Iterable[IceServer]) -> RTCPeerConnection:
    """A peer connection whose ICE servers are ours: never aiortc's public STUN default."""
    servers = [
        RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in ice_servers
    ]
    # max-bundle: aiortc's default "balanced" policy gives the first m-line of each kind its
    # own transport, and transceivers added in one offer then end up on a transport that the
    # BUNDLE answer never connects.
    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )
    # The SFU forwards RED to whoever negotiated it and strips it for the others.
    allow_red(pc)
    return pc


# --------------------------------------------------------------------------- negotiated facts


@dataclass(frozen=True)
class NegotiatedCodec:
    """What one side of a forwarded track agreed on, in plain values."""

    name: str  # lower-case mime subtype: "vp8", "h264", "opus"
    payload_type: int
    clock_rate: int
    channels: int | None
    parameters: dict[str, Any] = field(default_factory=dict)
    rtx_payload_type: int | None = None
    red_payload_type: int | None = None  # audio RED (RFC 2198) carrying this codec


def _codec_from_parameters(parameters: RTCRtpParameters) -> NegotiatedCodec | None:
    media = [c for c in parameters.codecs if not is_rtx(c) and not is_red(c)]
    if not media:
        return None
    primary = media[0]
    assert primary.payloadType is not None
    red = next(
        (
            c.payloadType
            for c in parameters.codecs
            if is_red(c) and red_target(c) == primary.payloadType
        ),
        None,
    )
    rtx = next(
        (
            c.payloadType
            for c in parameters.codecs
            if c.mimeType.lower().endswith("/rtx")
            and c.parameters.get("apt") == primary.payloadType
        ),
        None,
    )
    return NegotiatedCodec(
        name=primary.mimeType.split("/", 1)[1].lower(),
        payload_type=primary.payloadType,
        clock_rate=primary.clockRate,
        channels=primary.channels,
        parameters=dict(primary.parameters),
        rtx_payload_type=rtx,
        red_payload_type=red,
    )


def _extension_ids(parameters: RTCRtpParameters) -> dict[str, int]:
    return {ext.uri: ext.id for ext in parameters.headerExtensions}


def restrict_answer_codec(transceiver: RTCRtpTransceiver) -> NegotiatedCodec | None:
    """Keep only the remote's favourite codec (and its RTX) before answering a publisher.

    The SFU forwards without transcoding, so a publisher must send exactly one codec that every
    subscriber connection can then be offered.
    """
    codecs: list[RTCRtpCodecParameters] = list(transceiver._codecs)
    media = [c for c in codecs if not is_rtx(c) and not is_red(c)]
    if not media:
        return None
    primary = media[0]
    # RED first: that is what makes Chromium wrap its Opus frames in RED.
    kept = [c for c in codecs if is_red(c) and red_target(c) == primary.payloadType][:1]
    kept += [primary] + [
        c for c in codecs if is_rtx(c) and c.parameters.get("apt") == primary.payloadType
    ]
    transceiver._codecs = kept
    return _codec_from_parameters(RTCRtpParameters(codecs=kept))


def prefer_codec(transceiver: RTCRtpTransceiver, codec: NegotiatedCodec) -> None:
    """Offer a subscriber exactly the publisher's codec (plus RTX)."""
    capabilities = get_capabilities(transceiver.kind).codecs
    wanted = f"{transceiver.kind}/{codec.name}"

    def score(cap: RTCRtpCodecCapability) -> int:
        # For H264 prefer the capability whose fmtp matches the publisher's profile.
        same = sum(1 for k, v in cap.parameters.items() if codec.parameters.get(k) == v)
        return same

    candidates = [c for c in capabilities if c.mimeType.lower() == wanted]
    if not candidates:
        raise ValueError(f"codec {codec.name} cannot be offered")
    best = max(candidates, key=score)
    chosen = [best] + [c for c in capabilities if c.mimeType.lower().endswith("/rtx")]
    if codec.name == "opus":
        # Offered to every subscriber: RED is sent to those who accept it, when it arrives.
        chosen += [c for c in capabilities if is_red(c)]
    transceiver.setCodecPreferences(chosen)


def transceiver_of_receiver(pc: RTCPeerConnection, receiver: RTCRtpReceiver) -> RTCRtpTransceiver:
    for t in pc.getTransceivers():
        if t.receiver is receiver:
            return t
    raise LookupError("receiver does not belong to this connection")


# --------------------------------------------------------------------------- ingress


class IngressSink(Protocol):
    """Receives every RTP packet of one publisher track, RTX already unwrapped.

    ``layer`` is the simulcast layer (0 = lowest; always 0 without simulcast).
    """

    async def on_rtp(self, data: bytes, header: RtpHeader, arrival_ms: int, layer: int) -> None: ...

    def on_unrepairable(self, layer: int, now_ms: int) -> None:
        """A packet of `layer` lost on the publisher leg will not be resent: needs a keyframe."""
        ...


class _TransportState:
    """What we keep per DTLS transport (one per peer connection under max-bundle)."""

    def __init__(self) -> None:
        self.twcc_recorder: TwccRecorder | None = None
        self.twcc_task: asyncio.Task[None] | None = None
        self.twcc_sink: Callable[[TwccFeedback], None] | None = None
        self.twcc_malformed = 0
        self.ingress_tapped = False
        self.rtcp_tapped = False


def _transport_state(dtls: RTCDtlsTransport) -> _TransportState:
    state: _TransportState | None = getattr(dtls, "_consilium_state", None)
    if state is None:
        state = _TransportState()
        dtls._consilium_state = state
    return state


class ForwardingReceiver(RTCRtpReceiver):
    """An aiortc receiver that forwards bytes instead of decoding.

    Installed with :func:`adopt_receiver`; never constructed directly.
    """

    _sink: IngressSink | None
    _rtx_original: dict[int, int]
    _rtx_payload_types: dict[int, int]
    _codec_by_pt: dict[int, RTCRtpCodecParameters]
    _stats: dict[int, StreamStatistics]
    _nacks: dict[int, NackScheduler] | None
    _abs_send_time_id: int | None
    _twcc_id: int | None
    _rid_id: int | None
    _repaired_rid_id: int | None
    _twcc: TwccRecorder | None
    simulcast: SimulcastOffer | None
    layer_by_ssrc: dict[int, int]
    ssrc_by_layer: dict[int, int]
    negotiated: NegotiatedCodec | None
    extension_ids: dict[str, int]
    packets_received: int
    packets_malformed: int
    packets_unmapped: int
    remb_sent: int

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        # Mirrors RTCRtpReceiver.receive minus the decoder thread.
        if self._RTCRtpReceiver__started:
            return
        self._codec_by_pt = {
            c.payloadType: c for c in parameters.codecs if c.payloadType is not None
        }
        self._rtx_payload_types = {}
        for c in parameters.codecs:
            apt = c.parameters.get("apt")
            if c.mimeType.lower().endswith("/rtx") and isinstance(apt, int) and c.payloadType:
                self._rtx_payload_types[c.payloadType] = apt
        self._rtx_original = {e.rtx.ssrc: e.ssrc for e in parameters.encodings if e.rtx is not None}
        self.negotiated = _codec_from_parameters(parameters)
        self.extension_ids = _extension_ids(parameters)
        self._twcc_id = self.extension_ids.get(URI_TRANSPORT_CC)
        self._rid_id = self.extension_ids.get(URI_RID)
        self._repaired_rid_id = self.extension_ids.get(URI_REPAIRED_RID)
        self._abs_send_time_id = self.extension_ids.get(URI_ABS_SEND_TIME)
        transport: RTCDtlsTransport = self.transport
        transport._register_rtp_receiver(self, parameters)
        _install_ingress_tap(transport)
        if self._twcc_id is not None:
            self._twcc = _start_twcc_feedback(transport, self)
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True

    def _layer_of(self, header: RtpHeader, rid_ext: int | None) -> int | None:
        """Simulcast layer of a packet's SSRC, learnt from the rid extension on first sight."""
        ssrc = header.ssrc
        layer = self.layer_by_ssrc.get(ssrc)
        if layer is not None:
            return layer
        offer = self.simulcast
        if offer is None:
            return 0
        if rid_ext is None:
            return None
        value = header.extensions.get(rid_ext)
        if value is None:
            return None
        layer = offer.layer_of(value.decode("ascii", "replace"))
        if layer is not None:
            self.layer_by_ssrc[ssrc] = layer
        return layer

    async def consume(self, data: bytes, arrival_ms: int) -> None:
        """Fast path for one decrypted RTP packet routed to this receiver."""
        try:
            header = parse_rtp_header(data)
        except RtpParseError:
            self.packets_malformed += 1
            return
        self.packets_received += 1
        ssrc = header.ssrc
        self._RTCRtpReceiver__active_ssrc[ssrc] = aiortc_clock.current_datetime()
        has_transport_seq = False
        if self._twcc is not None and self._twcc_id is not None:
            value = header.extensions.get(self._twcc_id)
            if value is not None and len(value) == 2:
                self._twcc.on_packet(int.from_bytes(value, "big"), arrival_ms, ssrc)
                has_transport_seq = True
        codec = self._codec_by_pt.get(header.payload_type)
        if codec is None:
            return
        stats = self._stats.get(ssrc)
        if stats is None:
            stats = self._stats[ssrc] = StreamStatistics(codec.clockRate)
        stats.add(header)  # type: ignore[arg-type]  # duck-typed: seq and timestamp only

        # A sender that stamps transport-wide sequence numbers estimates its own uplink from
        # our feedback; REMB from aiortc's cruder receive-side estimator would only cap it.
        if self._abs_send_time_id is not None and not has_transport_seq:
            await self._feed_remb(header, arrival_ms)

        apt = self._rtx_payload_types.get(header.payload_type)
        if apt is not None:
            layer = self._layer_of(header, self._repaired_rid_id)
            original_ssrc = self._rtx_original.get(ssrc)
            if original_ssrc is None and layer is not None:
                original_ssrc = self.ssrc_by_layer.get(layer)
            if original_ssrc is None:
                self.packets_unmapped += 1
                return
            try:
                data, header = _unwrap_rtx(data, header, apt, original_ssrc)
            except RtpParseError:
                self.packets_malformed += 1
                return
        layer = self._layer_of(header, self._rid_id)
        if layer is None:
            # A simulcast SSRC we have not yet seen with its rid: nothing to map it to.
            self.packets_unmapped += 1
            return
        if self.ssrc_by_layer.get(layer) != header.ssrc:
            self.ssrc_by_layer[layer] = header.ssrc
            self.layer_by_ssrc[header.ssrc] = layer

        if self._sink is not None:
            await self._sink.on_rtp(data, header, arrival_ms, layer)
        nacks = self._nacks
        if nacks is not None:
            scheduler = nacks.get(header.ssrc)
            if scheduler is None:
                scheduler = nacks[header.ssrc] = NackScheduler()
            scheduler.on_packet(header.sequence_number, arrival_ms)
            poll = scheduler.poll(arrival_ms)
            if poll.nack:
                await self._send_rtcp_nack(header.ssrc, list(poll.nack))
            if poll.lost and self._sink is not None:
                self._sink.on_unrepairable(layer, arrival_ms)

    def nack_stats(self) -> dict[str, float | int]:
        """Publisher-leg repair, summed over this track's SSRCs (empty when NACK is off)."""
        total: dict[str, float | int] = {}
        for scheduler in (self._nacks or {}).values():
            for key, value in scheduler.stats().items():
                # Counters add up; the round trip is one link's, whichever SSRC measured it.
                combine = max if key == "rttMs" else sum
                total[key] = combine((total.get(key, 0), value))
        return total

    async def _feed_remb(self, header: RtpHeader, arrival_ms: int) -> None:
        value = header.extensions.get(self._abs_send_time_id or -1)
        estimator = self._RTCRtpReceiver__remote_bitrate_estimator
        if value is None or len(value) != 3 or estimator is None:
            return
        remb = estimator.add(
            abs_send_time=int.from_bytes(value, "big"),
            arrival_time_ms=arrival_ms,
            payload_size=header.payload_end - header.payload_offset + header.padding_size,
            ssrc=header.ssrc,
        )
        rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc
        if remb is not None and rtcp_ssrc is not None:
            self.remb_sent += 1
            await self._send_rtcp(
                RtcpPsfbPacket(
                    fmt=RTCP_PSFB_APP, ssrc=rtcp_ssrc, media_ssrc=0, fci=pack_remb_fci(*remb)
                )
            )

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        # Only reached for the first packet of an SSRC (the tap learns it); re-serialising
        # once per SSRC is fine.
        await self.consume(packet.serialize(), now_ms())

    async def request_keyframe(self, layer: int = 0) -> bool:
        """PLI for one simulcast layer (or the only stream); False while its SSRC is unknown."""
        media_ssrc = self.ssrc_by_layer.get(layer)
        if media_ssrc is None:
            return False
        await self._send_rtcp_pli(media_ssrc)
        return True

    @property
    def rtcp_ssrc(self) -> int | None:
        ssrc: int | None = self._RTCRtpReceiver__rtcp_ssrc
        return ssrc

    @property
    def twcc_packets_recorded(self) -> int:
        return self._twcc.packets_recorded if self._twcc is not None else 0

    def _handle_disconnect(self) -> None:
        pass  # no decoder thread to stop

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            self._RTCRtpReceiver__lsr[packet.ssrc] = (
                packet.sender_info.ntp_timestamp >> 16
            ) & 0xFFFFFFFF
            self._RTCRtpReceiver__lsr_time[packet.ssrc] = time.time()

    async def _run_rtcp(self) -> None:
        # Same cadence as aiortc (0.5-1.5 s), reading our statistics table.
        self._RTCRtpReceiver__rtcp_started.set()
        try:
            while True:
                await asyncio.sleep(0.5 + random.random())
                reports = []
                lsr_table = self._RTCRtpReceiver__lsr
                for ssrc, stream in self._stats.items():
                    lsr = lsr_table.get(ssrc, 0)
                    dlsr = 0
                    if ssrc in lsr_table:
                        delay = time.time() - self._RTCRtpReceiver__lsr_time[ssrc]
                        if 0 < delay < 65536:
                            dlsr = int(delay * 65536)
                    reports.append(
                        RtcpReceiverInfo(
                            ssrc=ssrc,
                            fraction_lost=stream.fraction_lost,
                            packets_lost=stream.packets_lost,
                            highest_sequence=stream.max_seq or 0,
                            jitter=stream.jitter,
                            lsr=lsr,
                            dlsr=dlsr,
                        )
                    )
                rtcp_ssrc = self._RTCRtpReceiver__rtcp_ssrc
                if rtcp_ssrc is not None and reports:
                    await self._send_rtcp(RtcpRrPacket(ssrc=rtcp_ssrc, reports=reports[:31]))
        except asyncio.CancelledError:
            pass
        self._RTCRtpReceiver__rtcp_exited.set()

    def rtp_statistics(self) -> dict[int, dict[str, int]]:
        return {
            ssrc: {
                "packets_received": s.packets_received,
                "packets_lost": s.packets_lost,
                "jitter": s.jitter,
                "layer": self.layer_by_ssrc.get(ssrc, -1),
            }
            for ssrc, s in self._stats.items()
        }


def _start_twcc_feedback(dtls: RTCDtlsTransport, receiver: ForwardingReceiver) -> TwccRecorder:
    """One transport-wide feedback loop per publisher transport (shared by its receivers)."""
    state = _transport_state(dtls)
    if state.twcc_recorder is None:
        recorder = TwccRecorder(sender_ssrc=receiver.rtcp_ssrc or random.getrandbits(32))
        state.twcc_recorder = recorder

        async def feedback_loop() -> None:
            while dtls.state not in ("closed", "failed"):
                await asyncio.sleep(TWCC_FEEDBACK_INTERVAL_S)
                if dtls.state != "connected":
                    continue
                for packet in recorder.build_feedback(now_ms()):
                    with contextlib.suppress(ConnectionError):
                        await dtls._send_rtp(packet)

        state.twcc_task = asyncio.ensure_future(feedback_loop())
    return state.twcc_recorder


def _unwrap_rtx(
    data: bytes, header: RtpHeader, apt: int, original_ssrc: int
) -> tuple[bytes, RtpHeader]:
    payload = data[header.payload_offset : header.payload_end]
    original_seq, original_payload = unwrap_rtx_payload(payload)
    head = bytearray(data[: header.payload_offset])
    head[0] &= 0xDF  # padding was stripped with the RTX wrapper
    head[1] = (head[1] & 0x80) | apt
    head[2:4] = original_seq.to_bytes(2, "big")
    head[8:12] = original_ssrc.to_bytes(4, "big")
    rebuilt = bytes(head) + original_payload
    return rebuilt, parse_rtp_header(rebuilt)


def adopt_receiver(
    receiver: RTCRtpReceiver, sink: IngressSink | None = None, nack: bool = True
) -> ForwardingReceiver:
    """Turn a stock receiver into a forwarding one. Call inside ``pc.on("track")``.

    ``nack`` lets the SFU NACK video lost on the publisher leg (off only for comparisons).
    """
    if receiver._RTCRtpReceiver__started:
        raise RuntimeError("receiver already started; adopt it inside the track event")
    receiver.__class__ = ForwardingReceiver
    fwd: ForwardingReceiver = receiver  # type: ignore[assignment]
    fwd._sink = sink
    fwd._stats = {}
    fwd._rtx_original = {}
    fwd._rtx_payload_types = {}
    fwd._codec_by_pt = {}
    fwd._abs_send_time_id = None
    fwd._twcc_id = None
    fwd._rid_id = None
    fwd._repaired_rid_id = None
    fwd._twcc = None
    fwd.simulcast = None
    fwd.layer_by_ssrc = {}
    fwd.ssrc_by_layer = {}
    fwd.extension_ids = {}
    fwd.negotiated = None
    fwd.packets_received = 0
    fwd.packets_malformed = 0
    fwd.packets_unmapped = 0
    fwd.remb_sent = 0
    video = receiver._track is not None and receiver._track.kind == "video"
    fwd._nacks = {} if video and nack else None
    # The stock track would only ever receive decoded frames; nobody reads it.
    return fwd


def set_sink(receiver: ForwardingReceiver, sink: IngressSink | None) -> None:
    receiver._sink = sink


def set_simulcast(receiver: ForwardingReceiver, offer: SimulcastOffer | None) -> None:
    """The receiver's streams are RID simulcast layers (call before media flows)."""
    receiver.simulcast = offer


def _install_ingress_tap(dtls: RTCDtlsTransport) -> None:
    """Route decrypted RTP of known SSRCs straight to their ForwardingReceiver."""
    state = _transport_state(dtls)
    if state.ingress_tapped:
        return
    known: dict[int, ForwardingReceiver] = {}
    stock = dtls._handle_rtp_data
    router = dtls._rtp_router

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        # aiortc's arrival time is wall-clock ms since 1900; the SFU runs on its own clock.
        if len(data) < 12:
            return
        arrival_time_ms = now_ms()
        ssrc = int.from_bytes(data[8:12], "big")
        receiver = known.get(ssrc)
        if receiver is not None and receiver in router.receivers:
            await receiver.consume(data, arrival_time_ms)
            return
        try:
            packet = RtpPacket.parse(data, dtls._rtp_header_extensions_map)
        except ValueError:
            return
        routed = router.route_rtp(packet)
        if isinstance(routed, ForwardingReceiver):
            known[ssrc] = routed
            await routed.consume(data, arrival_time_ms)
        elif routed is not None:
            await stock(data, arrival_time_ms)

    dtls._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
    state.ingress_tapped = True


def _install_rtcp_tap(dtls: RTCDtlsTransport) -> None:
    """Take transport-wide feedback out of incoming RTCP before aiortc's parser sees it.

    aiortc parses RTPFB FMT=15 as a generic NACK, and an FCI whose length is not a multiple of
    four makes it drop the whole compound packet (PLIs and receiver reports with it).
    """
    state = _transport_state(dtls)
    if state.rtcp_tapped:
        return
    stock = dtls._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        feedback, rest = split_rtcp_compound(data)
        for packet in feedback:
            try:
                parsed = parse_twcc(packet)
            except TwccParseError:
                state.twcc_malformed += 1
                continue
            if state.twcc_sink is not None:
                state.twcc_sink(parsed)
        if rest:
            await stock(rest)

    dtls._handle_rtcp_data = handle_rtcp_data  # type: ignore[method-assign]
    state.rtcp_tapped = True


# --------------------------------------------------------------------------- egress


class EgressFeedback(Protocol):
    """Subscriber RTCP for one forwarded track."""

    def on_keyframe_request(self) -> None: ...

    async def on_nack(self, sequence_numbers: list[int]) -> None: ...

    def on_remb(self, bitrate_bps: int) -> None: ...

    def on_receiver_report(self, fraction_lost: int, packets_lost: int, jitter: int) -> None: ...


class ForwardingSender(RTCRtpSender):
    """An aiortc sender that sends RTP bytes built by the SFU. Installed by :func:`adopt_sender`."""

    _feedback: EgressFeedback | None
    negotiated: NegotiatedCodec | None
    extension_ids: dict[str, int]
    mid: str | None
    packets_sent: int
    octets_sent: int
    _last_rtp_timestamp: int
    _last_send_ntp: int
    _rtcp_task: asyncio.Task[None] | None
    _cname: str | None
    _started_forwarding: bool
    rtt_ms: float | None

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        if self._started_forwarding:
            return
        self._cname = parameters.rtcp.cname
        self.mid = parameters.muxId
        self.negotiated = _codec_from_parameters(parameters)
        self.extension_ids = _extension_ids(parameters)
        self.transport._register_rtp_sender(self, parameters)
        _install_rtcp_tap(self.transport)
        self._rtcp_task = asyncio.ensure_future(self._run_sender_reports())
        self._started_forwarding = True

    @property
    def ssrc(self) -> int:
        value: int = self._ssrc
        return value

    @property
    def rtx_ssrc(self) -> int:
        value: int = self._rtx_ssrc
        return value

    @property
    def ready(self) -> bool:
        return self._started_forwarding and self.transport.state == "connected"

    async def send_rtp(self, packet: bytes, rtp_timestamp: int, payload_size: int) -> bool:
        """Send one fully built RTP packet; False if the transport is not (or no longer) up."""
        try:
            await self.transport._send_rtp(packet)
        except ConnectionError:
            return False
        self.packets_sent += 1
        self.octets_sent += payload_size
        self._last_rtp_timestamp = rtp_timestamp
        self._last_send_ntp = aiortc_clock.current_ntp_time()
        return True

    async def stop(self) -> None:
        if not self._started_forwarding:
            return
        self._started_forwarding = False
        self.transport._unregister_rtp_sender(self)
        if self._rtcp_task is not None:
            self._rtcp_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rtcp_task
            self._rtcp_task = None
        with contextlib.suppress(ConnectionError):
            await self.transport._send_rtp(bytes(RtcpByePacket(sources=[self._ssrc])))

    async def _run_sender_reports(self) -> None:
        # SRs map our rewritten RTP clock to wall-clock NTP so browsers can sync lip movement.
        while True:
            await asyncio.sleep(0.5 + random.random())
            if self.packets_sent == 0:
                continue
            packets: list[Any] = [
                RtcpSrPacket(
                    ssrc=self._ssrc,
                    sender_info=RtcpSenderInfo(
                        ntp_timestamp=self._last_send_ntp,
                        rtp_timestamp=self._last_rtp_timestamp,
                        packet_count=self.packets_sent & 0xFFFFFFFF,
                        octet_count=self.octets_sent & 0xFFFFFFFF,
                    ),
                )
            ]
            if self._cname:
                packets.append(
                    RtcpSdesPacket(
                        chunks=[RtcpSourceInfo(ssrc=self._ssrc, items=[(1, self._cname.encode())])]
                    )
                )
            with contextlib.suppress(ConnectionError):
                await self.transport._send_rtp(b"".join(bytes(p) for p in packets))

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        feedback = self._feedback
        if feedback is None:
            return
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self._ssrc:
                    feedback.on_receiver_report(
                        report.fraction_lost, report.packets_lost, report.jitter
                    )
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            await feedback.on_nack(list(packet.lost))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            feedback.on_keyframe_request()
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            with contextlib.suppress(ValueError):
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
                if self._ssrc in ssrcs:
                    feedback.on_remb(bitrate)


def set_transport_feedback(
    sender: ForwardingSender, sink: Callable[[TwccFeedback], None] | None
) -> None:
    """Deliver the transport-wide feedback of ``sender``'s connection to ``sink``."""
    state = _transport_state(sender.transport)
    state.twcc_sink = sink
    _install_rtcp_tap(sender.transport)


def twcc_malformed(sender: ForwardingSender) -> int:
    return _transport_state(sender.transport).twcc_malformed


def adopt_sender(
    sender: RTCRtpSender, feedback: EgressFeedback | None, *, stream_id: str, track_id: str
) -> ForwardingSender:
    """Turn a fresh stock sender (no track) into a forwarding one, right after addTransceiver.

    ``stream_id`` groups a publisher's audio and video in the subscriber's browser (lip sync);
    unrelated publishers must never share one.
    """
    if sender.track is not None:
        raise ValueError("forwarding senders carry no track")
    sender.__class__ = ForwardingSender
    fwd: ForwardingSender = sender
    fwd._feedback = feedback
    fwd.negotiated = None
    fwd.extension_ids = {}
    fwd.mid = None
    fwd.packets_sent = 0
    fwd.octets_sent = 0
    fwd._last_rtp_timestamp = 0
    fwd._last_send_ntp = 0
    fwd._rtcp_task = None
    fwd._cname = None
    fwd._started_forwarding = False
    fwd.rtt_ms = None
    fwd._stream_id = stream_id
    fwd._track_id = track_id
    return fwd


def add_forwarding_transceiver(
    pc: RTCPeerConnection,
    kind: str,
    codec: NegotiatedCodec,
    feedback: EgressFeedback | None,
    *,
    stream_id: str,
    track_id: str,
) -> tuple[RTCRtpTransceiver, ForwardingSender]:
    transceiver = pc.addTransceiver(kind, direction="sendonly")
    prefer_codec(transceiver, codec)
    sender = adopt_sender(transceiver.sender, feedback, stream_id=stream_id, track_id=track_id)
    return transceiver, sender


def retire_transceiver(transceiver: RTCRtpTransceiver) -> None:
    """Stop sending on an m-line whose publisher left; the next offer marks it inactive.

    The sender stays registered so that the m-line can carry another publisher later
    (:func:`reuse_transceiver`): a long consultation with people reconnecting must not grow its
    SDP by two m-lines per reconnect.
    """
    transceiver.direction = "inactive"
    sender = transceiver.sender
    if isinstance(sender, ForwardingSender):
        sender._feedback = None


def reusable_transceiver(
    pc: RTCPeerConnection, kind: str, codec: NegotiatedCodec, in_use: set[RTCRtpTransceiver]
) -> RTCRtpTransceiver | None:
    """An inactive, negotiated m-line of this kind whose codec matches, if there is one."""
    for t in pc.getTransceivers():
        sender = t.sender
        if (
            t not in in_use
            and t.kind == kind
            and t.direction == "inactive"
            and t.currentDirection == "inactive"
            and isinstance(sender, ForwardingSender)
            and sender.negotiated is not None
            and sender.negotiated.name == codec.name
            and sender.negotiated.parameters.get("profile-level-id")
            == codec.parameters.get("profile-level-id")
        ):
            return t
    return None


def reuse_transceiver(
    transceiver: RTCRtpTransceiver,
    feedback: EgressFeedback | None,
    *,
    stream_id: str,
    track_id: str,
) -> ForwardingSender:
    """Give an inactive m-line to a new publisher: fresh SSRCs, msid and counters."""
    sender = transceiver.sender
    if not isinstance(sender, ForwardingSender):
        raise TypeError("only forwarding transceivers can be reused")
    router = sender.transport._rtp_router
    router.unregister_sender(sender)
    sender._ssrc = random.getrandbits(32)
    sender._rtx_ssrc = random.getrandbits(32)
    router.register_sender(sender, ssrc=sender._ssrc)
    sender._stream_id = stream_id
    sender._track_id = track_id
    sender._feedback = feedback
    sender.packets_sent = 0
    sender.octets_sent = 0
    transceiver.direction = "sendonly"
    return sender


def threads_decoding() -> list[str]:
    """Names of live aiortc decoder threads (forwarded media must never start one)."""
    import threading

    return [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]


# --------------------------------------------------------------------------- RED for aiortc clients


class _RedAudioSender(RTCRtpSender):
    """A stock aiortc audio sender whose Opus packets leave as RED (see enable_red_audio)."""

    red_encoder: RedEncoder | None
    red_distance: int
    red_payload_type: int | None
    red_opus_payload_type: int | None

    async def send(self, parameters: RTCRtpSendParameters) -> None:
        codec = _codec_from_parameters(parameters)
        # aiortc encodes with the first codec: keep Opus there, RED only as the wrapper.
        if codec is not None and codec.name == "opus" and codec.red_payload_type is not None:
            self.red_payload_type = codec.red_payload_type
            self.red_opus_payload_type = codec.payload_type
            self.red_encoder = RedEncoder(self.red_distance)
            parameters.codecs = [c for c in parameters.codecs if not is_red(c)]
            _install_red_egress(self.transport).senders[self._ssrc] = self
        await super().send(parameters)

    def wrap(self, data: bytes) -> bytes:
        """One outgoing RTP packet of this sender: Opus becomes RED (header bytes kept)."""
        encoder = self.red_encoder
        if encoder is None or self.red_payload_type is None:
            return data
        try:
            header = parse_rtp_header(data)
        except RtpParseError:
            return data
        if header.payload_type != self.red_opus_payload_type:
            return data
        payload = encoder.wrap(
            header.payload_type, header.timestamp, data[header.payload_offset : header.payload_end]
        )
        head = bytearray(data[: header.payload_offset])
        head[0] &= 0xDF  # aiortc does not pad audio; the RED payload carries no padding
        head[1] = (head[1] & 0x80) | self.red_payload_type
        return bytes(head) + payload


class _RedEgress:
    """Per DTLS transport: which senders' packets to wrap."""

    def __init__(self) -> None:
        self.senders: dict[int, _RedAudioSender] = {}


def _install_red_egress(dtls: RTCDtlsTransport) -> _RedEgress:
    egress: _RedEgress | None = getattr(dtls, "_consilium_red_egress", None)
    if egress is not None:
        return egress
    egress = _RedEgress()
    dtls._consilium_red_egress = egress
    stock_send = dtls._send_rtp

    async def send_rtp(data: bytes) -> None:
        if len(data) >= 12 and not is_rtcp(data):
            sender = egress.senders.get(int.from_bytes(data[8:12], "big"))
            if sender is not None:
                data = sender.wrap(data)
        await stock_send(data)

    dtls._send_rtp = send_rtp  # type: ignore[method-assign]
    return egress


class _RedAudioReceiver(RTCRtpReceiver):
    """A stock aiortc audio receiver that unwraps RED and fills gaps from its redundancy."""

    red_payload_type: int | None
    red_streams: dict[int, RedReceiver]
    red_malformed: int

    async def receive(self, parameters: RTCRtpReceiveParameters) -> None:
        codec = _codec_from_parameters(parameters)
        if codec is not None and codec.name == "opus":
            self.red_payload_type = codec.red_payload_type
        await super().receive(parameters)

    async def _handle_rtp_packet(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if self.red_payload_type is None or packet.payload_type != self.red_payload_type:
            await super()._handle_rtp_packet(packet, arrival_time_ms)
            return
        stream = self.red_streams.get(packet.ssrc)
        if stream is None:
            stream = self.red_streams[packet.ssrc] = RedReceiver()
        try:
            frames = stream.on_packet(packet.sequence_number, packet.timestamp, packet.payload)
        except RedParseError:
            self.red_malformed += 1
            return
        # Recovered frames go first, so aiortc's jitter buffer sees them in sequence order.
        for frame in frames:
            plain = RtpPacket(
                payload_type=frame.payload_type,
                marker=packet.marker,
                sequence_number=frame.sequence_number,
                timestamp=frame.timestamp,
                ssrc=packet.ssrc,
                payload=frame.data,
            )
            plain.extensions = packet.extensions
            await super()._handle_rtp_packet(plain, arrival_time_ms)


def _adopt_red_receiver(receiver: RTCRtpReceiver) -> None:
    if isinstance(receiver, _RedAudioReceiver) or receiver._RTCRtpReceiver__started:
        return
    receiver.__class__ = _RedAudioReceiver
    red: _RedAudioReceiver = receiver  # type: ignore[assignment]
    red.red_payload_type = None
    red.red_streams = {}
    red.red_malformed = 0


def _adopt_red_sender(sender: RTCRtpSender, distance: int) -> None:
    if isinstance(sender, _RedAudioSender):
        sender.red_distance = distance
        return
    sender.__class__ = _RedAudioSender
    red: _RedAudioSender = sender  # type: ignore[assignment]
    red.red_distance = distance
    red.red_encoder = None
    red.red_payload_type = None
    red.red_opus_payload_type = None


def enable_red_audio(pc: RTCPeerConnection, distance: int = 1) -> None:
    """Opt an aiortc client connection into audio RED (call before it negotiates).

    The connection then offers/accepts ``red/48000/2``; its audio senders wrap each Opus
    packet into RED carrying the previous ``distance`` frames (when RED was negotiated), and
    its audio receivers unwrap RED, handing frames lost in transit but carried as redundancy
    to aiortc's jitter buffer before the packet's own frame. Counters: :func:`red_stats`.
    """
    if not 1 <= distance <= 2:
        raise ValueError("RED distance must be 1 or 2")
    allow_red(pc)
    pc._consilium_red_distance = distance
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            _adopt_red_sender(transceiver.sender, distance)
            _adopt_red_receiver(transceiver.receiver)

    @pc.on("track")
    def on_track(track: Any) -> None:
        # Receivers created by a remote offer; fired before aiortc starts them.
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "audio" and transceiver.receiver.track is track:
                _adopt_red_receiver(transceiver.receiver)


def red_stats(pc: RTCPeerConnection) -> dict[str, int]:
    """RED counters of a connection set up with :func:`enable_red_audio`."""
    out = {"sent": 0, "received": 0, "recovered": 0, "duplicates": 0, "malformed": 0}
    for transceiver in pc.getTransceivers():
        sender = transceiver.sender
        if isinstance(sender, _RedAudioSender) and sender.red_encoder is not None:
            out["sent"] += sender.red_encoder.packets
        receiver = transceiver.receiver
        if isinstance(receiver, _RedAudioReceiver):
            out["malformed"] += receiver.red_malformed
            for stream in receiver.red_streams.values():
                out["received"] += stream.packets
                out["recovered"] += stream.recovered
                out["duplicates"] += stream.duplicates
    return out
