"""sfu/forwarder.py (+ sfu/vocabulary.py): per-subscriber forwarding decisions as values."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import RtpParseError, build_rtp_packet
from sfu.forwarder import RETIRED_SSRC_HOLD_MS, Forwarder, IngressPacket, make_ingress_packet
from sfu.vocabulary import DropReason, ForwardDecision, KeyframeRequest, MediaKind, drop

WRAP_STARTS = [0, 1, 65534, 65535]
VP8_KEY = b"\x10\x02\x00\x9d\x01\x2a"
VP8_DELTA = b"\x31\x02\x00"
A, B = 0x1111, 0x2222


def vp8(
    seq: int,
    ts: int,
    *,
    ssrc: int = A,
    key: bool = False,
    pic: int | None = None,
    tl0: int | None = None,
    padding_only: bool = False,
    arrival_ms: int = 0,
) -> IngressPacket:
    if padding_only:
        payload = b""
    else:
        flags = (0x80 if pic is not None else 0) | (0x40 if tl0 is not None else 0)
        desc = bytes([0x90 if flags else 0x10])
        if flags:
            desc += bytes([flags])
        if pic is not None:
            desc += struct.pack("!H", 0x8000 | (pic & 0x7FFF))
        if tl0 is not None:
            desc += bytes([tl0 & 0xFF])
        payload = desc + (VP8_KEY if key else VP8_DELTA)
    data = build_rtp_packet(
        payload_type=96,
        marker=True,
        sequence_number=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=payload,
        padding_size=200 if padding_only else 0,
    )
    return make_ingress_packet(data, "video/VP8", arrival_ms)


def opus(seq: int, ts: int, *, ssrc: int = A) -> IngressPacket:
    data = build_rtp_packet(
        payload_type=111,
        marker=False,
        sequence_number=seq & 0xFFFF,
        timestamp=ts & 0xFFFFFFFF,
        ssrc=ssrc,
        extensions=[(1, b"\x85")],
        payload=b"\xfc\xff\xfe",
    )
    return make_ingress_packet(data, "audio/opus", 0)


def video_forwarder(initial_seq: int = 1000, initial_ts: int = 5000) -> Forwarder:
    return Forwarder(MediaKind.VIDEO, "VP8", 90_000, initial_seq, initial_ts)


def sent(decision: ForwardDecision) -> tuple[int, int, int | None, int | None]:
    assert decision.send, decision.drop_reason
    assert not decision.request_keyframe
    return decision.sequence_number, decision.timestamp, decision.picture_id, decision.tl0picidx


# --- vocabulary ---------------------------------------------------------------------------


def test_drop_reason_values() -> None:
    assert {r.value for r in DropReason} == {
        "waiting-for-keyframe",
        "paused",
        "padding-only",
        "too-old",
        "malformed",
        "unknown-payload-type",
        "not-negotiated",
    }
    assert str(DropReason.TOO_OLD) == "too-old"
    assert MediaKind("video") is MediaKind.VIDEO and MediaKind.AUDIO == "audio"


@pytest.mark.parametrize("reason", list(DropReason))
@pytest.mark.parametrize("request_keyframe", [False, True])
def test_drop_helper_is_shared_and_frozen(reason: DropReason, request_keyframe: bool) -> None:
    d = drop(reason, request_keyframe)
    assert d is drop(reason, request_keyframe)
    assert not d.send
    assert d.drop_reason is reason and d.request_keyframe is request_keyframe
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.sequence_number = 1  # type: ignore[misc]
    assert not hasattr(d, "__dict__")


def test_send_decision_and_keyframe_request() -> None:
    d = ForwardDecision(None, 1, 2, 3, 4, False)
    assert d.send
    k = KeyframeRequest(producer_id="p1", reason="subscriber-pli")
    assert (k.producer_id, k.reason) == ("p1", "subscriber-pli")
    with pytest.raises(dataclasses.FrozenInstanceError):
        k.reason = "x"  # type: ignore[misc]


# --- ingress record ---------------------------------------------------------------------


def test_make_ingress_packet_vp8() -> None:
    pkt = vp8(65535, 0xFFFFFFFF, key=True, pic=0x7FFF, tl0=255, arrival_ms=42)
    assert pkt.source_ssrc == A and pkt.header.ssrc == A
    assert pkt.is_keyframe
    assert pkt.vp8 is not None and pkt.vp8.picture_id == 0x7FFF and pkt.vp8.tl0picidx == 255
    assert pkt.arrival_ms == 42
    assert pkt.payload_size == 5 + len(VP8_KEY)
    assert not hasattr(pkt, "__dict__")


def test_make_ingress_packet_padding_only() -> None:
    pkt = vp8(1, 1, padding_only=True)
    assert pkt.payload_size == 0
    assert pkt.vp8 is None and not pkt.is_keyframe
    assert pkt.header.padding_size == 200


@pytest.mark.parametrize(
    ("codec", "payload", "keyframe", "has_vp8"),
    [
        ("h264", b"\x78\x00\x02\x67\x42\x00\x02\x68\xce", True, False),
        ("video/H264", b"\x7c\x05\x00", False, False),
        ("opus", b"\x10" + VP8_KEY, False, False),
        ("video/VP9", b"\x10" + VP8_KEY, False, False),
        ("VP8", b"\x10" + VP8_KEY, True, True),
    ],
)
def test_make_ingress_packet_codecs(
    codec: str, payload: bytes, keyframe: bool, has_vp8: bool
) -> None:
    data = build_rtp_packet(
        payload_type=100, marker=False, sequence_number=1, timestamp=2, ssrc=3, payload=payload
    )
    pkt = make_ingress_packet(data, codec, 0)
    assert pkt.is_keyframe is keyframe
    assert (pkt.vp8 is not None) is has_vp8
    assert pkt.payload_size == len(payload)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 20,
        build_rtp_packet(
            payload_type=96,
            marker=False,
            sequence_number=1,
            timestamp=1,
            ssrc=1,
            payload=b"\x90\x80",
        ),
    ],
    ids=["empty", "version 0", "truncated vp8 descriptor"],
)
def test_make_ingress_packet_malformed(data: bytes) -> None:
    with pytest.raises(RtpParseError):
        make_ingress_packet(data, "vp8", 0)


# --- video: keyframes -----------------------------------------------------------------


@pytest.mark.parametrize("initial_seq", WRAP_STARTS)
@pytest.mark.parametrize("in_seq", WRAP_STARTS)
@pytest.mark.parametrize("in_ts", [0, 0xFFFFFFFF - 5999])
def test_video_waits_for_keyframe_then_forwards_continuously(
    initial_seq: int, in_seq: int, in_ts: int
) -> None:
    f = video_forwarder(initial_seq, 0xFFFFFFFF)
    assert f.waiting_for_keyframe
    for i in range(3):
        d = f.forward(vp8(in_seq + i, in_ts, pic=10 + i), 0)
        assert d is drop(DropReason.WAITING_FOR_KEYFRAME, True)
    assert f.forward(vp8(in_seq + 3, in_ts + 9000, key=True, pic=13, tl0=200), 0) == (
        ForwardDecision(None, initial_seq, 0xFFFFFFFF, 13, 200, False)
    )
    assert not f.waiting_for_keyframe
    for i in range(4, 300):
        got = sent(f.forward(vp8(in_seq + i, in_ts + 3000 * i, pic=10 + i, tl0=200 + i), 0))
        assert got == (
            (initial_seq + i - 3) & 0xFFFF,
            (0xFFFFFFFF + 3000 * (i - 3)) & 0xFFFFFFFF,
            (10 + i) & 0x7FFF,
            (200 + i) & 0xFF,
        )
    # A straggler from before the keyframe can't be placed in the outgoing stream.
    assert f.forward(vp8(in_seq + 2, in_ts), 0) is drop(DropReason.TOO_OLD)
    assert f.forwarded == 297
    assert f.drops[DropReason.WAITING_FOR_KEYFRAME] == 3
    assert f.drops[DropReason.TOO_OLD] == 1


def test_reordered_packets_after_keyframe_map_consistently() -> None:
    f = video_forwarder(0, 0)
    assert sent(f.forward(vp8(100, 9000, key=True, pic=1), 0))[0] == 0
    assert sent(f.forward(vp8(102, 9000, pic=1), 0))[0] == 2
    assert sent(f.forward(vp8(101, 9000, pic=1), 0))[0] == 1
    assert sent(f.forward(vp8(102, 9000, pic=1), 0))[0] == 2  # duplicate: same numbers


def test_drops_counters_cover_every_reason() -> None:
    f = video_forwarder()
    assert set(f.drops) == set(DropReason)
    assert all(v == 0 for v in f.drops.values())


# --- SSRC changes ---------------------------------------------------------------------


@pytest.mark.parametrize("initial_seq", WRAP_STARTS)
@pytest.mark.parametrize("second_seq", WRAP_STARTS)
def test_new_ssrc_waits_for_keyframe_and_continues(initial_seq: int, second_seq: int) -> None:
    f = video_forwarder(initial_seq, 0xFFFFFFFF - 100)
    f.forward(vp8(500, 7000, key=True, pic=0x7FFE, tl0=255), 1000)
    last = sent(f.forward(vp8(501, 10_000, pic=0x7FFF, tl0=255), 1033))
    # Publisher restarted: new SSRC, new random seq/ts/picture ids.
    d = f.forward(vp8(second_seq, 123, ssrc=B, pic=77, tl0=9), 1100)
    assert d is drop(DropReason.WAITING_FOR_KEYFRAME, True)
    assert f.current_ssrc == B
    got = sent(f.forward(vp8(second_seq + 1, 3123, ssrc=B, key=True, pic=78, tl0=10), 1233))
    assert got == (
        (last[0] + 1) & 0xFFFF,
        (last[1] + 200 * 90) & 0xFFFFFFFF,  # 200 ms of wall clock since the last packet
        0,  # 0x7FFF + 1
        0,  # 255 + 1
    )
    nxt = sent(f.forward(vp8(second_seq + 2, 6123, ssrc=B, pic=79, tl0=10), 1266))
    assert nxt == ((got[0] + 1) & 0xFFFF, (got[1] + 3000) & 0xFFFFFFFF, 1, 0)


def test_stray_packets_of_replaced_ssrc_are_too_old_for_a_while() -> None:
    f = video_forwarder(0, 0)
    f.forward(vp8(10, 0, key=True), 0)
    f.forward(vp8(5000, 0, ssrc=B, key=True), 100)
    assert f.current_ssrc == B
    assert f.forward(vp8(11, 0, key=True), 100 + RETIRED_SSRC_HOLD_MS - 1) is drop(
        DropReason.TOO_OLD
    )
    assert f.current_ssrc == B
    assert sent(f.forward(vp8(5001, 0, ssrc=B), 200))[0] == 2
    # After the hold it is a source like any other again.
    d = f.forward(vp8(12, 0), 100 + RETIRED_SSRC_HOLD_MS)
    assert d is drop(DropReason.WAITING_FOR_KEYFRAME, True)
    assert f.current_ssrc == A
    assert sent(f.forward(vp8(13, 0, key=True), 100 + RETIRED_SSRC_HOLD_MS))[0] == 3


def test_keyframe_on_new_ssrc_switches_immediately() -> None:
    f = video_forwarder(7, 0)
    f.forward(vp8(1, 0, key=True), 0)
    assert sent(f.forward(vp8(40_000, 0, ssrc=B, key=True), 50))[0] == 8
    assert f.drops[DropReason.WAITING_FOR_KEYFRAME] == 0


@pytest.mark.parametrize("second_seq", WRAP_STARTS)
def test_audio_ssrc_change_switches_without_waiting(second_seq: int) -> None:
    f = Forwarder(MediaKind.AUDIO, "opus", 48_000, 65535, 0xFFFFFFFF)
    assert not f.waiting_for_keyframe
    assert sent(f.forward(opus(10, 960), 0)) == (65535, 0xFFFFFFFF, None, None)
    assert sent(f.forward(opus(11, 1920), 20)) == (0, 959, None, None)
    assert sent(f.forward(opus(second_seq, 5, ssrc=B), 60)) == (1, 959 + 40 * 48, None, None)
    assert sent(f.forward(opus(second_seq + 1, 965, ssrc=B), 80)) == (
        2,
        959 + 40 * 48 + 960,
        None,
        None,
    )


# --- pause ------------------------------------------------------------------------------


def test_pause_drops_everything_and_resume_waits_for_keyframe() -> None:
    f = video_forwarder(65534, 100)
    f.forward(vp8(1, 1000, key=True, pic=5), 0)
    f.forward(vp8(2, 4000, pic=6), 33)
    f.set_paused(True)
    assert f.paused
    for i, pkt in enumerate(
        [vp8(3, 7000, key=True, pic=7), vp8(4, 7000, padding_only=True), vp8(5, 10_000, pic=8)]
    ):
        assert f.forward(pkt, 66 + i) is drop(DropReason.PAUSED)
    f.set_paused(False)
    assert f.waiting_for_keyframe
    assert f.forward(vp8(6, 13_000, pic=9), 100) is drop(DropReason.WAITING_FOR_KEYFRAME, True)
    # Sequence continues right after the last forwarded packet; the media clock is kept.
    assert sent(f.forward(vp8(7, 16_000, key=True, pic=10), 133)) == (0, 100 + 15_000, 10, None)
    assert sent(f.forward(vp8(8, 19_000, pic=11), 166)) == (1, 100 + 18_000, 11, None)
    assert f.forward(vp8(2, 4000, pic=6), 170) is drop(DropReason.TOO_OLD)
    assert f.drops[DropReason.PAUSED] == 3


def test_pause_before_first_packet() -> None:
    f = video_forwarder(3, 4)
    f.set_paused(True)
    assert f.forward(vp8(1, 1, key=True), 0) is drop(DropReason.PAUSED)
    f.set_paused(False)
    assert sent(f.forward(vp8(9, 9, key=True), 0))[:2] == (3, 4)


def test_unpausing_when_not_paused_changes_nothing() -> None:
    f = video_forwarder(0, 0)
    f.forward(vp8(1, 0, key=True), 0)
    f.set_paused(False)
    assert not f.waiting_for_keyframe
    assert sent(f.forward(vp8(2, 0), 0))[0] == 1


def test_audio_resume_needs_no_keyframe() -> None:
    f = Forwarder(MediaKind.AUDIO, "audio/opus", 48_000, 0, 0)
    f.forward(opus(100, 0), 0)
    f.set_paused(True)
    assert f.forward(opus(101, 960), 20) is drop(DropReason.PAUSED)
    f.set_paused(False)
    assert sent(f.forward(opus(150, 48_000), 1000)) == (1, 48_000, None, None)


# --- padding ----------------------------------------------------------------------------


@pytest.mark.parametrize("initial_seq", WRAP_STARTS)
@pytest.mark.parametrize("in_seq", WRAP_STARTS)
def test_padding_only_is_dropped_without_gap(initial_seq: int, in_seq: int) -> None:
    f = video_forwarder(initial_seq, 0)
    expected = initial_seq
    padding = {2, 3, 7, 8, 9, 15}
    for i in range(20):
        if i in padding:
            assert f.forward(vp8(in_seq + i, 0, padding_only=True), i) is drop(
                DropReason.PADDING_ONLY
            )
            continue
        got = sent(f.forward(vp8(in_seq + i, 0, key=i == 0), i))
        assert got[0] == expected
        expected = (expected + 1) & 0xFFFF
    assert f.drops[DropReason.PADDING_ONLY] == len(padding)


def test_padding_while_waiting_does_not_ask_for_keyframes() -> None:
    f = video_forwarder(50, 0)
    assert f.forward(vp8(1, 0, padding_only=True), 0) is drop(DropReason.PADDING_ONLY)
    assert sent(f.forward(vp8(2, 0, key=True), 0))[0] == 50
    assert sent(f.forward(vp8(3, 0), 0))[0] == 51


# --- other codecs -------------------------------------------------------------------------


def h264(seq: int, payload: bytes) -> IngressPacket:
    data = build_rtp_packet(
        payload_type=102, marker=False, sequence_number=seq, timestamp=0, ssrc=A, payload=payload
    )
    return make_ingress_packet(data, "video/H264", 0)


def test_h264_starts_at_stap_a_with_sps() -> None:
    f = Forwarder(MediaKind.VIDEO, "video/H264", 90_000, 65535, 0)
    assert f.forward(h264(9, b"\x7c\x01\x00"), 0).drop_reason is DropReason.WAITING_FOR_KEYFRAME
    assert sent(f.forward(h264(10, b"\x78\x00\x02\x67\x42\x00\x02\x68\xce"), 0))[0] == 65535
    assert sent(f.forward(h264(11, b"\x7c\x85\x00"), 0))[0] == 0  # FU-A IDR start
    assert sent(f.forward(h264(12, b"\x7c\x05\x00"), 0))[0] == 1  # FU-A middle
    assert sent(f.forward(h264(13, b"\x7c\x45\x00"), 0))[:3] == (2, 0, None)


def test_video_codec_without_keyframe_detection_is_forwarded_at_once() -> None:
    f = Forwarder(MediaKind.VIDEO, "video/VP9", 90_000, 0, 0)
    assert not f.waiting_for_keyframe
    data = build_rtp_packet(
        payload_type=98, marker=False, sequence_number=1, timestamp=0, ssrc=A, payload=b"\x00"
    )
    assert sent(f.forward(make_ingress_packet(data, "video/VP9", 0), 0))[0] == 0


# --- property: whatever happens, what goes out is gapless ---------------------------------

event = st.sampled_from(["delta", "key", "padding", "pause", "unpause", "new-ssrc"])


@settings(max_examples=300)
@given(
    initial_seq=st.sampled_from(WRAP_STARTS),
    start_seq=st.integers(0, 0xFFFF),
    events=st.lists(event, max_size=80),
)
def test_in_order_stream_yields_gapless_unique_output(
    initial_seq: int, start_seq: int, events: list[str]
) -> None:
    f = video_forwarder(initial_seq, 0)
    ssrc = A
    seq = start_seq
    now = 0
    expected = initial_seq
    waiting = True
    paused = False
    for e in events:
        now += 10
        if e == "pause":
            f.set_paused(True)
            paused = True
            continue
        if e == "unpause":
            if paused:
                waiting = True
            f.set_paused(False)
            paused = False
            continue
        if e == "new-ssrc":
            ssrc += 1
            seq = seq * 7 + 13
            if not paused:
                waiting = True
            continue
        pkt = vp8(
            seq, now * 90, ssrc=ssrc, key=e == "key", padding_only=e == "padding", pic=seq & 0x7FFF
        )
        seq += 1
        d = f.forward(pkt, now)
        if paused:
            assert d.drop_reason is DropReason.PAUSED
        elif e == "padding":
            assert d.drop_reason is DropReason.PADDING_ONLY
        elif waiting and e != "key":
            assert d.drop_reason is DropReason.WAITING_FOR_KEYFRAME and d.request_keyframe
        else:
            waiting = False
            assert d.send
            assert d.sequence_number == expected
            expected = (expected + 1) & 0xFFFF
    assert f.forwarded + sum(f.drops.values()) == sum(
        e not in ("pause", "unpause", "new-ssrc") for e in events
    )
