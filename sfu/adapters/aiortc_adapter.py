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
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aioice.ice
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc import clock as aiortc_clock
from aiortc.codecs import get_capabilities
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import (
    RTCRtpCodecCapability,
    RTCRtpCodecParameters,
    RTCRtpParameters,
    RTCRtpReceiveParameters,
    RTCRtpSendParameters,
)
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
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

from media.rtp import RtpHeader, RtpParseError, parse_rtp_header, unwrap_rtx_payload

PINNED_AIORTC = "1.16.0"

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

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
    return RTCPeerConnection(
        RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


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


def _codec_from_parameters(parameters: RTCRtpParameters) -> NegotiatedCodec | None:
    media = [c for c in parameters.codecs if not c.mimeType.lower().endswith("/rtx")]
    if not media:
        return None
    primary = media[0]
    assert primary.payloadType is not None
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
    )


def _extension_ids(parameters: RTCRtpParameters) -> dict[str, int]:
    return {ext.uri: ext.id for ext in parameters.headerExtensions}


def restrict_answer_codec(transceiver: RTCRtpTransceiver) -> NegotiatedCodec | None:
    """Keep only the remote's favourite codec (and its RTX) before answering a publisher.

    The SFU forwards without transcoding, so a publisher must send exactly one codec that every
    subscriber connection can then be offered.
    """
    codecs: list[RTCRtpCodecParameters] = list(transceiver._codecs)
    media = [c for c in codecs if not c.mimeType.lower().endswith("/rtx")]
    if not media:
        return None
    primary = media[0]
    kept = [primary] + [
        c
        for c in codecs
        if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == primary.payloadType
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
    transceiver.setCodecPreferences(chosen)


def transceiver_of_receiver(pc: RTCPeerConnection, receiver: RTCRtpReceiver) -> RTCRtpTransceiver:
    for t in pc.getTransceivers():
        if t.receiver is receiver:
            return t
    raise LookupError("receiver does not belong to this connection")


# --------------------------------------------------------------------------- ingress


class IngressSink(Protocol):
    """Receives every RTP packet of one publisher track, RTX already unwrapped."""

    async def on_rtp(self, data: bytes, header: RtpHeader, arrival_ms: int) -> None: ...


class ForwardingReceiver(RTCRtpReceiver):
    """An aiortc receiver that forwards bytes instead of decoding.

    Installed with :func:`adopt_receiver`; never constructed directly.
    """

    _sink: IngressSink | None
    _rtx_original: dict[int, int]
    _rtx_payload_types: dict[int, int]
    _codec_by_pt: dict[int, RTCRtpCodecParameters]
    _stats: dict[int, StreamStatistics]
    _nack: NackGenerator | None
    _abs_send_time_id: int | None
    negotiated: NegotiatedCodec | None
    extension_ids: dict[str, int]
    packets_received: int
    packets_malformed: int
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
        self._abs_send_time_id = self.extension_ids.get(URI_ABS_SEND_TIME)
        transport: RTCDtlsTransport = self.transport
        transport._register_rtp_receiver(self, parameters)
        _install_ingress_tap(transport)
        self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())
        self._RTCRtpReceiver__started = True

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
        codec = self._codec_by_pt.get(header.payload_type)
        if codec is None:
            return
        stats = self._stats.get(ssrc)
        if stats is None:
            stats = self._stats[ssrc] = StreamStatistics(codec.clockRate)
        stats.add(header)  # type: ignore[arg-type]  # duck-typed: seq and timestamp only

        if self._abs_send_time_id is not None:
            await self._feed_remb(header, arrival_ms)

        apt = self._rtx_payload_types.get(header.payload_type)
        if apt is not None:
            original_ssrc = self._rtx_original.get(ssrc)
            if original_ssrc is None:
                return
            try:
                data, header = _unwrap_rtx(data, header, apt, original_ssrc)
            except RtpParseError:
                self.packets_malformed += 1
                return

        if self._nack is not None and self._nack.add(header):  # type: ignore[arg-type]
            await self._send_rtcp_nack(header.ssrc, sorted(self._nack.missing))
        if self._sink is not None:
            await self._sink.on_rtp(data, header, arrival_ms)

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
        await self.consume(packet.serialize(), arrival_time_ms)

    async def request_keyframe(self, media_ssrc: int) -> None:
        await self._send_rtcp_pli(media_ssrc)

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
            }
            for ssrc, s in self._stats.items()
        }


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


def adopt_receiver(receiver: RTCRtpReceiver, sink: IngressSink | None = None) -> ForwardingReceiver:
    """Turn a stock receiver into a forwarding one. Call inside ``pc.on("track")``."""
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
    fwd.extension_ids = {}
    fwd.negotiated = None
    fwd.packets_received = 0
    fwd.packets_malformed = 0
    fwd.remb_sent = 0
    fwd._nack = (
        NackGenerator() if receiver._track is not None and receiver._track.kind == "video" else None
    )
    # The stock track would only ever receive decoded frames; nobody reads it.
    return fwd


def set_sink(receiver: ForwardingReceiver, sink: IngressSink | None) -> None:
    receiver._sink = sink


def _install_ingress_tap(dtls: RTCDtlsTransport) -> None:
    """Route decrypted RTP of known SSRCs straight to their ForwardingReceiver."""
    if getattr(dtls, "_consilium_tapped", False):
        return
    known: dict[int, ForwardingReceiver] = {}
    stock = dtls._handle_rtp_data
    router = dtls._rtp_router

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        if len(data) < 12:
            return
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
    dtls._consilium_tapped = True


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
        self._rtcp_task = asyncio.ensure_future(self._run_sender_reports())
        self._started_forwarding = True

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
