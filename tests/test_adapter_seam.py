"""The seam between Consilium and aiortc internals: fails loudly when an upgrade moves it."""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender

from media.rtp import RtpHeader
from media.synthetic import CounterVideoTrack
from sfu.adapters import aiortc_adapter as adapter

RECEIVER_PRIVATE = [
    "__started",
    "__decoder_thread",
    "__remote_bitrate_estimator",
    "__rtcp_ssrc",
    "__lsr",
    "__lsr_time",
    "__rtcp_started",
    "__rtcp_exited",
    "__rtcp_task",
    "__active_ssrc",
    "__jitter_buffer",  # tap_jitter_buffer (QA clients)
    "__nack_generator",  # missing_packets, send_nack (QA clients)
    "__rtx_ssrc",
]


def test_aiortc_version_is_the_pinned_one() -> None:
    assert version("aiortc") == adapter.PINNED_AIORTC


async def test_private_attributes_the_adapter_uses_still_exist() -> None:
    pc = RTCPeerConnection()
    try:
        transceiver = pc.addTransceiver("video", direction="sendonly")
        receiver = transceiver.receiver
        for name in RECEIVER_PRIVATE:
            assert hasattr(receiver, f"_RTCRtpReceiver{name}"), name
        assert callable(receiver._send_rtcp_nack)  # send_nack (QA clients)
        assert isinstance(receiver, RTCRtpReceiver)
        sender = transceiver.sender
        assert isinstance(sender, RTCRtpSender)
        for name in ("_ssrc", "_rtx_ssrc", "_stream_id", "_track_id", "_handle_rtcp_packet"):
            assert hasattr(sender, name), name
        assert hasattr(transceiver, "_codecs")
        dtls = receiver.transport
        for name in (
            "_handle_rtp_data",
            "_handle_rtcp_data",
            "_rtp_router",
            "_rtp_header_extensions_map",
            "_register_rtp_receiver",
            "_register_rtp_sender",
            "_send_rtp",
        ):
            assert hasattr(dtls, name), name
        assert callable(aioice.ice.get_host_addresses)
    finally:
        await pc.close()


def test_negotiation_tables_carry_simulcast_and_transport_cc() -> None:
    """aiortc's module-level codec/extension tables are what the adapter extends."""
    from aiortc.codecs import CODECS, HEADER_EXTENSIONS, get_capabilities

    video_uris = {e.uri for e in HEADER_EXTENSIONS["video"]}
    assert {adapter.URI_TRANSPORT_CC, adapter.URI_RID, adapter.URI_REPAIRED_RID} <= video_uris
    assert adapter.URI_TRANSPORT_CC in {e.uri for e in HEADER_EXTENSIONS["audio"]}
    ids = {e.uri: e.id for kind in ("audio", "video") for e in HEADER_EXTENSIONS[kind]}
    # Under BUNDLE one id means one extension across kinds.
    assert len(set(ids.values())) == len(ids)
    for codec in CODECS["video"]:
        if not codec.mimeType.lower().endswith("/rtx"):
            assert any(f.type == "transport-cc" for f in codec.rtcpFeedback), codec
    caps = {c.uri for c in get_capabilities("video").headerExtensions}
    assert adapter.URI_RID in caps


async def test_our_peer_connections_never_use_a_default_stun_server() -> None:
    pc = adapter.new_peer_connection([])
    try:
        pc.addTransceiver("audio")
        gatherer = pc.getTransceivers()[0].receiver.transport.transport.iceGatherer
        assert gatherer._connection.stun_server is None
        assert gatherer._connection.turn_server is None
    finally:
        await pc.close()


async def test_ice_hosts_can_be_restricted_to_loopback() -> None:
    adapter.configure_ice_hosts(["127.0.0.1"])
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    adapter.configure_ice_hosts(None)
    assert "127.0.0.1" in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)
    adapter.configure_ice_hosts(["127.0.0.1"])


class _Recorder:
    def __init__(self) -> None:
        self.headers: list[RtpHeader] = []

    async def on_rtp(self, data: bytes, header: RtpHeader, arrival_ms: int, layer: int) -> None:
        self.headers.append(header)

    def on_unrepairable(self, layer: int, now_ms: int) -> None:
        pass


@pytest.mark.webrtc
async def test_adopted_receiver_forwards_bytes_and_never_decodes() -> None:
    adapter.configure_ice_hosts(["127.0.0.1"])
    sender_pc = adapter.new_peer_connection([])
    sfu_pc = adapter.new_peer_connection([])
    recorder = _Recorder()
    adopted: list[adapter.ForwardingReceiver] = []

    @sfu_pc.on("track")
    def on_track(track: object) -> None:
        for t in sfu_pc.getTransceivers():
            if t.receiver.track is track:
                adopted.append(adapter.adopt_receiver(t.receiver, recorder))

    try:
        sender_pc.addTransceiver(CounterVideoTrack("seam"), direction="sendonly")
        await sender_pc.setLocalDescription(await sender_pc.createOffer())
        await sfu_pc.setRemoteDescription(sender_pc.localDescription)
        transceiver = sfu_pc.getTransceivers()[0]
        codec = adapter.restrict_answer_codec(transceiver)
        assert codec is not None and codec.name in ("vp8", "h264")
        await sfu_pc.setLocalDescription(await sfu_pc.createAnswer())
        await sender_pc.setRemoteDescription(sfu_pc.localDescription)
        for _ in range(300):
            if len(recorder.headers) > 50:
                break
            await asyncio.sleep(0.05)
        assert len(recorder.headers) > 50
        assert len(adopted) == 1
        receiver = adopted[0]
        assert receiver._RTCRtpReceiver__decoder_thread is None
        assert adapter.threads_decoding() == []
        # Receive statistics still run, so the publisher gets receiver reports.
        assert sum(s["packets_received"] for s in receiver.rtp_statistics().values()) > 50
    finally:
        await sender_pc.close()
        await sfu_pc.close()


async def test_transport_feedback_is_taken_out_below_aiortcs_rtcp_parser() -> None:
    """A compound RR + TWCC: aiortc's parser would drop it whole (the TWCC FCI is not a NACK
    list); the tap hands the TWCC to the sink and only the rest to aiortc."""
    import types

    from aiortc.rtp import RtcpPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket

    from sfu.twcc import build_twcc

    twcc = build_twcc(1, 2, 65534, 7, [(65534, 10.0), (65535, None), (0, 12.5)])
    rr = bytes(
        RtcpRrPacket(
            ssrc=1,
            reports=[
                RtcpReceiverInfo(
                    ssrc=2,
                    fraction_lost=0,
                    packets_lost=0,
                    highest_sequence=5,
                    jitter=0,
                    lsr=0,
                    dlsr=0,
                )
            ],
        )
    )
    # aiortc reads transport-wide feedback as a generic RTPFB (its FCI as a NACK list).
    stock_view = RtcpPacket.parse(rr + twcc)
    assert any(isinstance(p, RtcpRtpfbPacket) and p.fmt == 15 for p in stock_view)
    passed: list[bytes] = []
    received = []

    async def stock(data: bytes) -> None:
        passed.append(data)

    dtls = types.SimpleNamespace(_handle_rtcp_data=stock)
    adapter._install_rtcp_tap(dtls)  # type: ignore[arg-type]
    adapter._transport_state(dtls).twcc_sink = received.append  # type: ignore[arg-type]
    await dtls._handle_rtcp_data(rr + twcc)
    assert passed == [rr]
    [feedback] = received
    assert (feedback.base_sequence, feedback.feedback_count) == (65534, 7)
    assert [seq for seq, _ in feedback.arrivals] == [65534, 65535, 0]
    # A well-framed TWCC with no room for its fields is counted, never raised, and the rest of
    # the compound still reaches aiortc.
    empty_twcc = bytes([0x8F, 205, 0, 2]) + (1).to_bytes(4, "big") + (2).to_bytes(4, "big")
    await dtls._handle_rtcp_data(rr + empty_twcc)
    assert adapter._transport_state(dtls).twcc_malformed == 1
    assert passed == [rr, rr]


def test_client_opus_bitrate_reaches_aiortcs_encoder() -> None:
    from aiortc.codecs.opus import OpusEncoder

    assert OpusEncoder().codec.bit_rate == 96000  # aiortc's own default: the seam we patch
    adapter.set_client_opus_bitrate(32000)
    try:
        assert OpusEncoder().codec.bit_rate == 32000
    finally:
        adapter.set_client_opus_bitrate(None)
    assert OpusEncoder().codec.bit_rate == 96000
    with pytest.raises(ValueError):
        adapter.set_client_opus_bitrate(1000)


async def test_qa_keyframe_helpers_work_on_a_stock_receiver() -> None:
    """send_pli and skip_to_keyframe reach into RTCRtpReceiver and aiortc's JitterBuffer."""
    from aiortc.jitterbuffer import JitterBuffer
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters
    from aiortc.rtp import RtpPacket

    pc = RTCPeerConnection()
    try:
        receiver = pc.addTransceiver("video", direction="recvonly").receiver
        vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
        receiver._RTCRtpReceiver__codecs = {96: vp8}
        buffer = JitterBuffer(capacity=128, is_video=True)
        receiver._RTCRtpReceiver__jitter_buffer = buffer
        assert adapter.skip_to_keyframe(receiver) is False  # nothing buffered yet

        delta_frame = b"\x10\x01\x00\x00"  # VP8 descriptor S=1, then a P=1 (inter) header
        keyframe = b"\x10\x00\x00\x00\x9d\x01\x2a"  # P=0: a keyframe, with the start code
        for seq, ts, payload in ((100, 1000, delta_frame), (103, 4000, keyframe)):
            buffer.add(
                RtpPacket(payload_type=96, sequence_number=seq, timestamp=ts, payload=payload)
            )
        assert adapter.skip_to_keyframe(receiver) is True  # the hole at 101-102 is given up
        assert buffer._origin == 103

        sent: list[int] = []

        async def capture_pli(media_ssrc: int) -> None:
            sent.append(media_ssrc)

        receiver._send_rtcp_pli = capture_pli
        assert await adapter.send_pli(receiver) is False  # no media SSRC seen yet
        receiver._RTCRtpReceiver__active_ssrc[0xBEEF] = 1
        receiver._RTCRtpReceiver__active_ssrc[0xCAFE] = 2
        receiver._RTCRtpReceiver__rtx_ssrc[0xCAFE] = 0xBEEF  # an RTX stream is not asked
        assert await adapter.send_pli(receiver) is True
        assert sent == [0xBEEF]
    finally:
        await pc.close()
