"""sfu/forwarder.py (+ sfu/vocabulary.py): per-subscriber forwarding decisions as values."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import RtpParseError, build_rtp_packet
from sfu.forwarder import RETIRED_SSRC_HOLD_MS, Forwarder, IngressPacket, make_ingress_packet
from sfu.vocabulary import (
    DropReason,
    ForwardDecision,
    KeyframeRequest,
    LayerSelection,
    MediaKind,
    drop,
)

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
    layer: int = 0,
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
    return make_ingress_packet(data, "video/VP8", arrival_ms, layer=layer)


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
        "layer-not-selected",
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
    assert pkt.layer == 0
    assert vp8(1, 1, layer=2).layer == 2
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


# --- simulcast ----------------------------------------------------------------------------

L0, L1, L2 = 0xA0, 0xA1, 0xA2  # one SSRC per simulcast layer
LAYER_SSRCS = (L0, L1, L2)


def simulcast_forwarder(initial_seq: int = 1000, initial_ts: int = 5000) -> Forwarder:
    return Forwarder(MediaKind.VIDEO, "VP8", 90_000, initial_seq, initial_ts, simulcast=True)


def test_ingress_packet_layer_defaults_to_zero_for_positional_callers() -> None:
    pkt = vp8(1, 1)
    positional = IngressPacket(pkt.header, pkt.source_ssrc, False, pkt.vp8, 0, pkt.payload_size)
    assert positional.layer == 0
    assert [f.name for f in dataclasses.fields(IngressPacket)][-1] == "layer"


def test_non_simulcast_forwarder_ignores_layers() -> None:
    f = video_forwarder(0, 0)
    assert not f.simulcast
    assert f.target_layer == 0 and f.current_layer is None
    assert sent(f.forward(vp8(1, 0, key=True, layer=2), 0))[0] == 0
    assert sent(f.forward(vp8(2, 0, layer=1), 0))[0] == 1
    assert f.current_layer == 0 and f.switches == 0
    assert f.selection(2) == LayerSelection(2, 0, 0)


def test_non_simulcast_target_layer_maps_to_pause() -> None:
    f = video_forwarder(0, 0)
    f.forward(vp8(1, 0, key=True), 0)
    assert f.set_target_layer(None) is False
    assert f.paused and f.target_layer is None and f.current_layer is None
    assert f.set_target_layer(0) is True  # resuming video needs a keyframe
    assert not f.paused and f.waiting_for_keyframe
    with pytest.raises(ValueError):
        f.set_target_layer(1)
    audio = Forwarder(MediaKind.AUDIO, "opus", 48_000, 0, 0)
    audio.set_target_layer(None)
    assert audio.set_target_layer(0) is False


def test_simulcast_initial_state_targets_the_lowest_layer() -> None:
    f = simulcast_forwarder()
    assert f.simulcast
    assert f.selection(2) == LayerSelection(2, 0, None)
    assert f.waiting_for_keyframe and not f.paused
    # Layer 1 is not the target: dropped, and a keyframe of layer 0 is needed.
    assert f.forward(vp8(1, 0, ssrc=L1, key=True, layer=1), 0) is drop(
        DropReason.LAYER_NOT_SELECTED, True
    )
    assert f.forward(vp8(1, 0, ssrc=L0, layer=0), 0) is drop(DropReason.LAYER_NOT_SELECTED, True)
    assert sent(f.forward(vp8(2, 0, ssrc=L0, key=True, pic=9, layer=0), 0)) == (1000, 5000, 9, None)
    assert f.selection(2) == LayerSelection(2, 0, 0)
    assert not f.waiting_for_keyframe
    # Settled: other layers are dropped without asking for keyframes.
    assert f.forward(vp8(2, 0, ssrc=L1, key=True, layer=1), 0) is drop(
        DropReason.LAYER_NOT_SELECTED
    )
    assert f.switches == 0  # starting is not a switch
    assert f.drops[DropReason.LAYER_NOT_SELECTED] == 3


@pytest.mark.parametrize(
    ("current", "target", "needs_keyframe"),
    [(None, 0, True), (None, 2, True), (0, 0, False), (0, 1, True), (2, 0, True), (1, None, False)],
)
def test_set_target_layer_says_when_a_keyframe_is_needed(
    current: int | None, target: int | None, needs_keyframe: bool
) -> None:
    f = simulcast_forwarder()
    if current is not None:
        f.set_target_layer(current)
        f.forward(vp8(1, 0, ssrc=LAYER_SSRCS[current], key=True, layer=current), 0)
    assert f.current_layer == current
    assert f.set_target_layer(target) is needs_keyframe
    assert f.target_layer == target
    assert f.waiting_for_keyframe is needs_keyframe


def test_set_target_layer_rejects_negative_layers() -> None:
    with pytest.raises(ValueError):
        simulcast_forwarder().set_target_layer(-1)


class SimulcastSource:
    """A publisher sending three simulcast layers, one VP8 frame at a time per layer.

    Each layer has its own SSRC and its own (wrapping) seq / ts / PictureID / TL0PICIDX;
    layer k sends k + 1 packets per frame, the layers of one frame interleaved 0, 1, 2.
    """

    def __init__(self, seqs: tuple[int, ...], tss: tuple[int, ...], pics: tuple[int, ...]):
        self.seq = list(seqs)
        self.ts = list(tss)
        self.pic = list(pics)
        self.tl0 = [250, 100, 0]

    def frame(self, layer: int, key: bool, now_ms: int) -> list[IngressPacket]:
        packets = []
        for i in range(layer + 1):
            packets.append(
                vp8(
                    self.seq[layer],
                    self.ts[layer],
                    ssrc=LAYER_SSRCS[layer],
                    key=key and i == 0,
                    pic=self.pic[layer],
                    tl0=self.tl0[layer],
                    layer=layer,
                    arrival_ms=now_ms,
                )
            )
            self.seq[layer] = (self.seq[layer] + 1) & 0xFFFF
        self.ts[layer] = (self.ts[layer] + 3000) & 0xFFFFFFFF
        self.pic[layer] = (self.pic[layer] + 1) & 0x7FFF
        self.tl0[layer] = (self.tl0[layer] + 1) & 0xFF
        return packets


class ContinuityChecker:
    """What a subscriber must see: seq +1 per packet, PictureID / TL0PICIDX +1 per frame,
    timestamps increasing per frame, whatever layer each frame came from."""

    def __init__(self) -> None:
        self.last: ForwardDecision | None = None
        self.frames: list[tuple[int, int]] = []  # (frame number, layer) forwarded

    def check(self, d: ForwardDecision, pkt: IngressPacket, frame: int) -> None:
        assert d.send and not d.request_keyframe
        assert d.picture_id is not None and d.tl0picidx is not None
        first = not self.frames or self.frames[-1] != (frame, pkt.layer)
        last = self.last
        if last is not None:
            assert d.sequence_number == (last.sequence_number + 1) & 0xFFFF
            assert last.picture_id is not None and last.tl0picidx is not None
            if first:
                assert d.picture_id == (last.picture_id + 1) & 0x7FFF
                assert d.tl0picidx == (last.tl0picidx + 1) & 0xFF
                assert 0 < (d.timestamp - last.timestamp) & 0xFFFFFFFF < 1 << 31
            else:
                assert (d.picture_id, d.tl0picidx, d.timestamp) == (
                    last.picture_id,
                    last.tl0picidx,
                    last.timestamp,
                )
        if first:
            self.frames.append((frame, pkt.layer))
        self.last = d


# One scenario, 30 frames: at frame -> the new target; per layer the frames that are
# keyframes; the (frame, layer) pairs the subscriber receives.
SWITCH_TARGETS: dict[int, int | None] = {3: 2, 10: 1, 15: None, 18: 1, 22: 0, 25: 2}
SWITCH_KEYFRAMES: dict[int, set[int]] = {0: {0, 22}, 1: {12, 20}, 2: {1, 6, 27}}
SWITCH_EXPECTED: list[tuple[int, int]] = (
    # Up to 2 waits for layer 2's keyframe at frame 6, which comes after layer 0's
    # packets of that frame: frame 6 goes out twice (both layers), timestamps apart.
    [(n, 0) for n in range(0, 7)]
    + [(n, 2) for n in range(6, 12)]
    # Down to 1 waits for layer 1's keyframe at 12 (sent before layer 2's frame 12).
    + [(n, 1) for n in range(12, 15)]
    # Paused 15..17; target 1 again at 18, resumed by layer 1's keyframe at 20.
    + [(20, 1), (21, 1)]
    # Down to 0 at 22: layer 0's keyframe comes first in the frame.
    + [(n, 0) for n in range(22, 28)]
    + [(27, 2), (28, 2), (29, 2)]
)


@pytest.mark.parametrize("out_seq", WRAP_STARTS)
@pytest.mark.parametrize("out_ts", [0, 0xFFFFFFFF - 4000])
@pytest.mark.parametrize(
    ("seqs", "tss", "pics"),
    [
        ((0, 0, 0), (0, 0, 0), (0, 0, 0)),
        ((65530, 65534, 65535), (0xFFFFFFFF - 6000, 0xFFFFFFFF, 1), (32760, 32767, 32766)),
        ((65535, 10, 65520), (0xFFFFFFFF - 2999, 77, 0xFFFFFFFF - 60000), (32767, 5, 32740)),
    ],
    ids=["zero", "near-wrap", "mixed"],
)
def test_simulcast_switches_are_seamless_across_wraps(
    out_seq: int,
    out_ts: int,
    seqs: tuple[int, int, int],
    tss: tuple[int, int, int],
    pics: tuple[int, int, int],
) -> None:
    f = simulcast_forwarder(out_seq, out_ts)
    src = SimulcastSource(seqs, tss, pics)
    checker = ContinuityChecker()
    requests: list[int] = []
    for frame in range(30):
        now = frame * 33
        if frame in SWITCH_TARGETS:
            f.set_target_layer(SWITCH_TARGETS[frame])
        for layer in range(3):
            for pkt in src.frame(layer, frame in SWITCH_KEYFRAMES[layer], now):
                d = f.forward(pkt, now)
                if d.send:
                    checker.check(d, pkt, frame)
                    assert pkt.layer == f.current_layer
                elif f.target_layer is None:
                    assert d is drop(DropReason.PAUSED)
                else:
                    assert d.drop_reason is DropReason.LAYER_NOT_SELECTED
                    if d.request_keyframe:
                        requests.append(frame)
    assert checker.frames == SWITCH_EXPECTED
    assert f.forwarded == sum(layer + 1 for _, layer in checker.frames)
    # Ask for keyframes exactly while a switch is pending (not while paused or settled).
    assert sorted(set(requests)) == [3, 4, 5, 6, 10, 11, 12, 18, 19, 20, 25, 26, 27]
    # 0->2, 2->1, 1->0, 0->2 (the pause and resume on layer 1 is not a switch)
    assert f.switches == 4
    assert f.selection(2) == LayerSelection(2, 2, 2)


def test_first_output_uses_initial_seq_and_ts() -> None:
    f = simulcast_forwarder(65535, 0xFFFFFFFF)
    f.set_target_layer(1)
    assert sent(f.forward(vp8(7, 123, ssrc=L1, key=True, pic=4, tl0=1, layer=1), 0)) == (
        65535,
        0xFFFFFFFF,
        4,
        1,
    )


def test_switch_continues_seq_ts_and_picture_id() -> None:
    f = simulcast_forwarder(65534, 0xFFFFFFFF - 100)
    f.forward(vp8(100, 9000, ssrc=L0, key=True, pic=0x7FFE, tl0=255, layer=0), 1000)
    last = sent(f.forward(vp8(101, 12_000, ssrc=L0, pic=0x7FFF, tl0=255, layer=0), 1033))
    assert last[0] == 65535
    assert f.set_target_layer(2)
    got = sent(f.forward(vp8(40_000, 777, ssrc=L2, key=True, pic=3, tl0=9, layer=2), 1100))
    assert got == (0, (last[1] + 67 * 90) & 0xFFFFFFFF, 0, 0)
    nxt = sent(f.forward(vp8(40_001, 3777, ssrc=L2, pic=4, tl0=9, layer=2), 1133))
    assert nxt == (1, (got[1] + 3000) & 0xFFFFFFFF, 1, 0)
    assert f.current_ssrc == L2 and f.switches == 1


def test_current_layer_keeps_flowing_until_the_target_keyframe() -> None:
    f = simulcast_forwarder(0, 0)
    assert f.set_target_layer(1)
    f.forward(vp8(1, 0, ssrc=L1, key=True, layer=1), 0)
    assert f.current_layer == 1
    assert f.set_target_layer(0)  # downswitch: also waits for a keyframe (of layer 0)
    assert sent(f.forward(vp8(2, 0, ssrc=L1, layer=1), 10))[0] == 1
    assert f.forward(vp8(50, 0, ssrc=L0, layer=0), 10) is drop(DropReason.LAYER_NOT_SELECTED, True)
    assert f.forward(vp8(3, 0, ssrc=L1, key=True, layer=1), 20) == ForwardDecision(
        None, 2, 0, None, None, False
    )
    assert sent(f.forward(vp8(51, 0, ssrc=L0, key=True, layer=0), 30))[0] == 3
    assert f.current_layer == 0
    assert f.forward(vp8(4, 0, ssrc=L1, layer=1), 40) is drop(DropReason.LAYER_NOT_SELECTED)


def test_retransmissions_of_the_old_layer_do_not_flip_back() -> None:
    f = simulcast_forwarder(0, 0)
    f.forward(vp8(10, 0, ssrc=L0, key=True, layer=0), 0)
    f.forward(vp8(11, 0, ssrc=L0, layer=0), 10)
    f.set_target_layer(1)
    assert sent(f.forward(vp8(500, 0, ssrc=L1, key=True, layer=1), 20))[0] == 2
    for seq in (10, 11, 12):  # late copies of layer 0, keyframe included
        d = f.forward(vp8(seq, 0, ssrc=L0, key=seq == 10, layer=0), 30)
        assert d is drop(DropReason.LAYER_NOT_SELECTED)
    assert f.current_layer == 1 and f.current_ssrc == L1
    assert sent(f.forward(vp8(501, 0, ssrc=L1, layer=1), 40))[0] == 3
    # Even with layer 0 as the target again, a late copy of its old keyframe is no switch
    # point: the packets after it were never forwarded.
    assert f.set_target_layer(0)
    assert f.forward(vp8(10, 0, ssrc=L0, key=True, layer=0), 50) is drop(
        DropReason.LAYER_NOT_SELECTED, True
    )
    assert sent(f.forward(vp8(502, 0, ssrc=L1, layer=1), 60))[0] == 4
    assert sent(f.forward(vp8(13, 0, ssrc=L0, key=True, layer=0), 70))[0] == 5
    assert f.current_layer == 0 and f.switches == 2


def test_reordered_packets_of_the_new_layer_after_a_switch() -> None:
    f = simulcast_forwarder(100, 0)
    f.forward(vp8(1, 0, ssrc=L0, key=True, layer=0), 0)
    f.set_target_layer(1)
    assert sent(f.forward(vp8(20, 0, ssrc=L1, key=True, layer=1), 10))[0] == 101
    assert sent(f.forward(vp8(22, 0, ssrc=L1, layer=1), 10))[0] == 103
    assert sent(f.forward(vp8(21, 0, ssrc=L1, layer=1), 10))[0] == 102
    assert f.forward(vp8(19, 0, ssrc=L1, layer=1), 10) is drop(DropReason.TOO_OLD)


def test_padding_in_simulcast() -> None:
    f = simulcast_forwarder(0, 0)
    f.forward(vp8(1, 0, ssrc=L0, key=True, layer=0), 0)
    # Padding of the current layer leaves no gap; of another layer it asks for nothing.
    assert f.forward(vp8(2, 0, ssrc=L0, padding_only=True, layer=0), 0) is drop(
        DropReason.PADDING_ONLY
    )
    assert sent(f.forward(vp8(3, 0, ssrc=L0, layer=0), 0))[0] == 1
    f.set_target_layer(2)
    assert f.forward(vp8(9, 0, ssrc=L2, padding_only=True, layer=2), 0) is drop(
        DropReason.PADDING_ONLY
    )
    assert f.forward(vp8(9, 0, ssrc=L1, padding_only=True, layer=1), 0) is drop(
        DropReason.PADDING_ONLY
    )
    assert sent(f.forward(vp8(10, 0, ssrc=L2, key=True, layer=2), 0))[0] == 2


def test_target_none_pauses_and_resume_waits_for_a_keyframe() -> None:
    f = simulcast_forwarder(65535, 1000)
    f.set_target_layer(1)
    f.forward(vp8(5, 3000, ssrc=L1, key=True, pic=40, layer=1), 0)
    f.forward(vp8(6, 6000, ssrc=L1, pic=41, layer=1), 33)
    assert f.set_target_layer(None) is False
    assert f.paused and f.selection(1) == LayerSelection(1, None, None)
    assert not f.waiting_for_keyframe
    for layer in range(3):
        pkt = vp8(7, 9000, ssrc=LAYER_SSRCS[layer], key=True, layer=layer)
        assert f.forward(pkt, 66) is drop(DropReason.PAUSED)
    assert f.set_target_layer(1) is True
    assert not f.paused
    assert f.forward(vp8(8, 12_000, ssrc=L1, pic=43, layer=1), 100) is drop(
        DropReason.LAYER_NOT_SELECTED, True
    )
    # The same stream resumes: seq right after the hole, the media clock kept exactly
    # (not re-derived from the wall clock, which here says 467 ms passed, not 100).
    assert sent(f.forward(vp8(9, 15_000, ssrc=L1, key=True, pic=44, layer=1), 500)) == (
        1,
        1000 + 12_000,
        42,
        None,
    )
    assert f.switches == 0
    assert f.drops[DropReason.PAUSED] == 3


def test_set_paused_works_with_simulcast_too() -> None:
    f = simulcast_forwarder(0, 0)
    f.forward(vp8(1, 0, ssrc=L0, key=True, layer=0), 0)
    f.set_paused(True)
    assert f.paused and f.current_layer is None and f.target_layer == 0
    assert f.forward(vp8(2, 0, ssrc=L0, key=True, layer=0), 10) is drop(DropReason.PAUSED)
    f.set_paused(False)
    assert f.waiting_for_keyframe
    assert f.forward(vp8(3, 0, ssrc=L0, layer=0), 20) is drop(DropReason.LAYER_NOT_SELECTED, True)
    assert sent(f.forward(vp8(4, 0, ssrc=L0, key=True, layer=0), 30))[0] == 1


def test_publisher_restart_on_the_current_layer_keeps_ssrc_change_behaviour() -> None:
    f = simulcast_forwarder(0, 0)
    f.set_target_layer(1)
    f.forward(vp8(10, 0, ssrc=L1, key=True, pic=1, layer=1), 0)
    f.forward(vp8(11, 0, ssrc=L1, pic=2, layer=1), 10)
    new = 0xB1
    assert f.forward(vp8(900, 0, ssrc=new, pic=70, layer=1), 20) is drop(
        DropReason.WAITING_FOR_KEYFRAME, True
    )
    assert f.current_layer == 1 and f.waiting_for_keyframe
    assert f.set_target_layer(1) is True  # still needs that keyframe
    assert f.forward(vp8(12, 0, ssrc=L1, layer=1), 30) is drop(DropReason.TOO_OLD)
    assert sent(f.forward(vp8(901, 0, ssrc=new, key=True, pic=71, layer=1), 40))[::2] == (2, 3)
    assert f.switches == 0


def test_simulcast_codec_without_keyframe_detection_switches_at_once() -> None:
    f = Forwarder(MediaKind.VIDEO, "video/VP9", 90_000, 0, 0, simulcast=True)
    data = build_rtp_packet(
        payload_type=98, marker=False, sequence_number=1, timestamp=0, ssrc=L1, payload=b"\x00"
    )
    f.set_target_layer(1)
    pkt = make_ingress_packet(data, "video/VP9", 0, layer=1)
    assert sent(f.forward(pkt, 0))[0] == 0
    assert f.current_layer == 1 and not f.waiting_for_keyframe


sim_event = st.one_of(
    st.tuples(st.just("frame"), st.frozensets(st.integers(0, 2))),  # layers with a keyframe
    st.tuples(st.just("target"), st.sampled_from([None, 0, 1, 2])),
    st.tuples(st.just("lose"), st.integers(0, 2)),  # one layer's next frame goes missing
)


@settings(max_examples=300)
@given(
    out_seq=st.sampled_from(WRAP_STARTS),
    seqs=st.tuples(*[st.integers(0, 0xFFFF)] * 3),
    tss=st.tuples(*[st.integers(0, 0xFFFFFFFF)] * 3),
    pics=st.tuples(*[st.integers(0, 0x7FFF)] * 3),
    events=st.lists(sim_event, max_size=60),
)
def test_simulcast_output_is_always_one_continuous_stream(
    out_seq: int,
    seqs: tuple[int, int, int],
    tss: tuple[int, int, int],
    pics: tuple[int, int, int],
    events: list[tuple[str, object]],
) -> None:
    f = simulcast_forwarder(out_seq, 0xFFFFFFFF - 1000)
    src = SimulcastSource(seqs, tss, pics)
    checker = ContinuityChecker()
    lost: set[int] = set()
    frame = 0
    for kind, value in events:
        if kind == "target":
            assert isinstance(value, int) or value is None
            f.set_target_layer(value)
            continue
        if kind == "lose":
            assert isinstance(value, int)
            lost.add(value)
            continue
        assert isinstance(value, frozenset)
        frame += 1
        for layer in range(3):
            packets = src.frame(layer, layer in value, frame * 33)
            if layer in lost and layer != f.current_layer:
                # Never arrives (losses of the forwarded layer would be gaps the
                # subscriber NACKs; not what this test is about).
                continue
            for pkt in packets:
                before = f.current_layer
                d = f.forward(pkt, frame * 33)
                if d.send:
                    if before != pkt.layer:
                        assert pkt.is_keyframe  # a layer only starts on a keyframe
                    assert f.current_layer == pkt.layer == f.target_layer or before == pkt.layer
                    checker.check(d, pkt, frame)
                else:
                    assert f.current_layer == before
                    assert d.request_keyframe is (
                        f.target_layer is not None and f.target_layer != f.current_layer
                    )
        lost.clear()
