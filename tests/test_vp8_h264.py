"""media/vp8.py, media/h264.py, media/codecs.py: payload headers and keyframe detection."""

from __future__ import annotations

import struct

import pytest
from aiortc.codecs.vpx import VpxPayloadDescriptor
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import codec_name, is_keyframe, supports_keyframe_detection
from media.h264 import is_h264_keyframe
from media.rtp import RtpParseError
from media.vp8 import Vp8Descriptor, parse_vp8_descriptor, rewrite_vp8_descriptor

KEY = b"\x10\x02\x00\x9d\x01\x2a"  # VP8 payload header with P=0 (key frame) + start code
DELTA = b"\x31\x02\x00"  # P=1 (inter frame)

# --- VP8 --------------------------------------------------------------------------------

VP8_CASES = [
    # (name, payload, expected fields)
    (
        "minimal keyframe",
        b"\x10" + KEY,
        dict(
            start_of_partition=True,
            partition_id=0,
            picture_id=None,
            picture_id_bits=0,
            picture_id_offset=-1,
            tl0picidx=None,
            tl0picidx_offset=-1,
            temporal_id=None,
            layer_sync=False,
            key_idx=None,
            header_size=1,
            is_keyframe=True,
        ),
    ),
    ("minimal delta", b"\x10" + DELTA, dict(header_size=1, is_keyframe=False)),
    ("continuation packet", b"\x00" + KEY, dict(start_of_partition=False, is_keyframe=False)),
    ("partition 1 start", b"\x11" + KEY, dict(partition_id=1, is_keyframe=False)),
    ("partition 7", b"\x07" + KEY, dict(partition_id=7, is_keyframe=False)),
    ("R bit is not part of PID", b"\x18" + KEY, dict(partition_id=0, is_keyframe=True)),
    ("descriptor only", b"\x10", dict(header_size=1, is_keyframe=False)),
    (
        "7-bit picture id",
        b"\x90\x80\x7f" + KEY,
        dict(
            picture_id=127, picture_id_bits=7, picture_id_offset=2, header_size=3, is_keyframe=True
        ),
    ),
    (
        "15-bit picture id",
        b"\x90\x80\xff\xff" + DELTA,
        dict(picture_id=0x7FFF, picture_id_bits=15, picture_id_offset=2, header_size=4),
    ),
    (
        "15-bit picture id zero",
        b"\x90\x80\x80\x00" + KEY,
        dict(picture_id=0, picture_id_bits=15, header_size=4, is_keyframe=True),
    ),
    (
        "tl0picidx only",
        b"\x90\x40\xfe" + KEY,
        dict(picture_id=None, tl0picidx=254, tl0picidx_offset=2, header_size=3),
    ),
    (
        "T only",
        b"\x90\x20\xa0" + KEY,
        dict(temporal_id=2, layer_sync=True, key_idx=None, header_size=3, is_keyframe=True),
    ),
    ("K only", b"\x90\x10\xff" + KEY, dict(temporal_id=None, layer_sync=False, key_idx=31)),
    (
        "everything (what Chrome sends)",
        b"\x90\xf0\x81\x23\x05\x5f" + DELTA,
        dict(
            picture_id=0x123,
            picture_id_bits=15,
            picture_id_offset=2,
            tl0picidx=5,
            tl0picidx_offset=4,
            temporal_id=1,
            layer_sync=False,
            key_idx=31,
            header_size=6,
            is_keyframe=False,
        ),
    ),
    ("X with no optional fields", b"\x90\x00" + KEY, dict(header_size=2, is_keyframe=True)),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [(p, e) for _, p, e in VP8_CASES], ids=[n for n, _, _ in VP8_CASES]
)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_parse_vp8(payload: bytes, expected: dict[str, object], wrap: type) -> None:
    desc = parse_vp8_descriptor(wrap(payload))
    for name, value in expected.items():
        assert getattr(desc, name) == value, name


VP8_TRUNCATED = [
    ("empty", b""),
    ("X without extension byte", b"\x90"),
    ("I without picture id", b"\x90\x80"),
    ("M without second byte", b"\x90\x80\x80"),
    ("L without tl0picidx", b"\x90\xc0\x01"),
    ("L without tl0picidx, 15-bit id", b"\x90\xc0\x80\x01"),
    ("T without tid byte", b"\x90\x20"),
    ("K without keyidx byte", b"\x90\x10"),
    ("all flags, last byte missing", b"\x90\xf0\x81\x23\x05"),
]


@pytest.mark.parametrize(
    "payload", [p for _, p in VP8_TRUNCATED], ids=[n for n, _ in VP8_TRUNCATED]
)
def test_parse_vp8_truncated(payload: bytes) -> None:
    with pytest.raises(RtpParseError):
        parse_vp8_descriptor(payload)


@settings(max_examples=2000)
@given(st.binary(max_size=12))
def test_parse_vp8_arbitrary_bytes(payload: bytes) -> None:
    try:
        desc = parse_vp8_descriptor(payload)
    except RtpParseError:
        return
    assert 1 <= desc.header_size <= len(payload)
    if desc.picture_id is not None:
        assert 0 <= desc.picture_id < (1 << desc.picture_id_bits)


@settings(max_examples=1000)
@given(st.binary(max_size=12))
def test_parse_vp8_agrees_with_aiortc(payload: bytes) -> None:
    try:
        ours = parse_vp8_descriptor(payload)
    except RtpParseError:
        with pytest.raises(ValueError):
            VpxPayloadDescriptor.parse(payload)
        return
    theirs, rest = VpxPayloadDescriptor.parse(payload)
    assert ours.start_of_partition == bool(theirs.partition_start)
    assert ours.partition_id == theirs.partition_id & 0x07  # aiortc keeps the R bit in PID
    assert ours.picture_id == theirs.picture_id
    assert ours.tl0picidx == theirs.tl0picidx
    assert ours.key_idx == theirs.keyidx
    if theirs.tid is None:
        assert ours.temporal_id is None
    else:
        assert (ours.temporal_id, int(ours.layer_sync)) == theirs.tid
    assert payload[ours.header_size :] == rest


@pytest.mark.parametrize(
    ("picture_id", "tl0", "tid", "keyidx"),
    [(0, None, None, None), (0x7FFF, 255, (3, 1), 31), (300, 0, None, 4), (None, 7, (0, 0), None)],
)
def test_parse_vp8_aiortc_serialized(
    picture_id: int | None, tl0: int | None, tid: tuple[int, int] | None, keyidx: int | None
) -> None:
    data = bytes(VpxPayloadDescriptor(1, 0, picture_id, tl0, tid, keyidx)) + KEY
    desc = parse_vp8_descriptor(data)
    assert desc.picture_id == picture_id
    assert desc.picture_id_bits == (15 if picture_id is not None else 0)
    assert desc.tl0picidx == tl0
    assert desc.temporal_id == (tid[0] if tid else None)
    assert desc.key_idx == keyidx
    assert desc.is_keyframe


REWRITE_CASES = [
    # (name, payload, picture_id, tl0, expected picture id after, expected tl0 after)
    ("15-bit", b"\x90\xc0\x81\x23\x05" + DELTA, 0x7ABC, 9, 0x7ABC, 9),
    ("15-bit masks to 15 bits", b"\x90\x80\x80\x00" + DELTA, 0x18001, None, 0x0001, None),
    ("15-bit wrap value", b"\x90\x80\x80\x00" + DELTA, 0x8000, None, 0, None),
    ("7-bit masks to 7 bits", b"\x90\x80\x05" + DELTA, 0x1FF, None, 0x7F, None),
    ("7-bit", b"\x90\xc0\x05\x01" + DELTA, 0x23, 0x1FF, 0x23, 0xFF),
    ("None leaves fields", b"\x90\xc0\x85\x55\x07" + DELTA, None, None, 0x555, 7),
    ("absent fields are not added", b"\x10" + DELTA, 5, 6, None, None),
    ("tl0 only", b"\x90\x40\x00" + DELTA, 1, 0x100, None, 0),
]


@pytest.mark.parametrize(
    ("payload", "picture_id", "tl0", "want_pid", "want_tl0"),
    [c[1:] for c in REWRITE_CASES],
    ids=[c[0] for c in REWRITE_CASES],
)
def test_rewrite_vp8(
    payload: bytes,
    picture_id: int | None,
    tl0: int | None,
    want_pid: int | None,
    want_tl0: int | None,
) -> None:
    desc = parse_vp8_descriptor(payload)
    buf = bytearray(payload)
    rewrite_vp8_descriptor(buf, desc, picture_id=picture_id, tl0picidx=tl0)
    after = parse_vp8_descriptor(buf)
    assert after.picture_id == want_pid
    assert after.tl0picidx == want_tl0
    # Width, layout and everything else stay as they were.
    assert after.picture_id_bits == desc.picture_id_bits
    assert after.header_size == desc.header_size
    assert (after.temporal_id, after.key_idx, after.is_keyframe) == (
        desc.temporal_id,
        desc.key_idx,
        desc.is_keyframe,
    )
    assert buf[desc.header_size :] == payload[desc.header_size :]
    assert len(buf) == len(payload)


def test_rewrite_vp8_in_memoryview_of_packet() -> None:
    packet = bytearray(b"H" * 12 + b"\x90\x80\x80\x01" + KEY)
    view = memoryview(packet)[12:]
    desc = parse_vp8_descriptor(view)
    rewrite_vp8_descriptor(view, desc, picture_id=0x4321, tl0picidx=None)
    assert packet[12:16] == b"\x90\x80\xc3\x21"


def test_vp8_descriptor_has_slots() -> None:
    desc = parse_vp8_descriptor(b"\x10" + KEY)
    assert isinstance(desc, Vp8Descriptor)
    assert not hasattr(desc, "__dict__")


# --- H264 -------------------------------------------------------------------------------


def nal(nal_type: int, body: bytes = b"\x88\x84") -> bytes:
    return bytes([0x60 | nal_type]) + body


def stap_a(*units: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(u)) + u for u in units)


def fu_a(nal_type: int, *, start: bool, end: bool = False) -> bytes:
    header = (0x80 if start else 0) | (0x40 if end else 0) | nal_type
    return bytes([0x7C, header]) + b"\x01\x02"


H264_CASES = [
    ("empty", b"", False),
    ("single IDR", nal(5), True),
    ("single IDR header only", bytes([0x65]), True),
    ("single SPS", nal(7), True),
    ("single PPS", nal(8), False),
    ("single non-IDR slice", nal(1), False),
    ("single SEI", nal(6), False),
    ("IDR with F bit and NRI 0", bytes([0x85, 0]), True),
    ("STAP-A SPS PPS", stap_a(nal(7), nal(8)), True),
    ("STAP-A PPS then IDR", stap_a(nal(8), nal(5, b"x" * 50)), True),
    ("STAP-A third unit IDR", stap_a(nal(6), nal(8), nal(5)), True),
    ("STAP-A only deltas", stap_a(nal(1), nal(1), nal(6)), False),
    ("STAP-A header only", b"\x78", False),
    ("STAP-A size without unit", b"\x78\x00", False),
    ("STAP-A size, zero-length unit", b"\x78\x00\x00", False),
    ("STAP-A unit overruns packet", b"\x78\x00\x09\x67\x01", False),
    ("STAP-A IDR hidden behind a truncated unit", stap_a(nal(1))[:-1] + nal(5), False),
    ("STAP-A delta then truncated size", stap_a(nal(1)) + b"\x00", False),
    ("STAP-A zero-size unit then IDR", b"\x78\x00\x00" + struct.pack("!H", 3) + nal(5), False),
    ("STAP-A unit size reading exactly to end", stap_a(nal(1), nal(7, b"")), True),
    ("FU-A IDR start", fu_a(5, start=True), True),
    ("FU-A IDR middle", fu_a(5, start=False), False),
    ("FU-A IDR end", fu_a(5, start=False, end=True), False),
    ("FU-A non-IDR start", fu_a(1, start=True), False),
    ("FU-A truncated", b"\x7c", False),
    ("FU-A header only", b"\x7c\x85", True),
    ("FU-B is not FU-A", bytes([0x7D, 0x85, 0, 0]), False),
    ("STAP-B is not STAP-A", bytes([0x79, 0, 0]) + stap_a(nal(5))[1:], False),
]


@pytest.mark.parametrize(
    ("payload", "expected"), [(p, e) for _, p, e in H264_CASES], ids=[n for n, _, _ in H264_CASES]
)
def test_is_h264_keyframe(payload: bytes, expected: bool) -> None:
    assert is_h264_keyframe(payload) is expected
    assert is_h264_keyframe(memoryview(payload)) is expected
    assert is_keyframe("video/H264", payload) is expected


@settings(max_examples=3000)
@given(st.binary(max_size=40))
def test_is_h264_keyframe_arbitrary_bytes(payload: bytes) -> None:
    assert is_h264_keyframe(payload) in (True, False)


@settings(max_examples=500)
@given(st.lists(st.binary(min_size=1, max_size=30), min_size=1, max_size=6), st.data())
def test_stap_a_keyframe_iff_some_unit_is(units: list[bytes], data: st.DataObject) -> None:
    expected = any(u[0] & 0x1F in (5, 7) for u in units)
    assert is_h264_keyframe(stap_a(*units)) is expected
    # Any truncation never raises.
    cut = data.draw(st.integers(0, len(stap_a(*units))))
    assert is_h264_keyframe(stap_a(*units)[:cut]) in (True, False)


# --- dispatch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "payload", "expected"),
    [
        ("vp8", b"\x10" + KEY, True),
        ("VP8", b"\x10" + KEY, True),
        ("video/VP8", b"\x10" + KEY, True),
        ("video/vp8", b"\x10" + DELTA, False),
        ("vp8", b"\x90\x80", False),  # truncated descriptor: not a keyframe, no exception
        ("vp8", b"", False),
        ("H264", nal(5), True),
        ("video/H264", nal(1), False),
        ("h264", b"", False),
        ("opus", nal(5), False),
        ("audio/opus", b"\x10" + KEY, False),
        ("PCMU", nal(5), False),
        ("VP9", b"\x10" + KEY, False),
        ("", nal(5), False),
    ],
)
def test_is_keyframe_dispatch(codec: str, payload: bytes, expected: bool) -> None:
    assert is_keyframe(codec, payload) is expected


@pytest.mark.parametrize(
    ("codec", "name", "aware"),
    [
        ("video/VP8", "vp8", True),
        ("H264", "h264", True),
        ("audio/opus", "opus", False),
        ("video/VP9", "vp9", False),
        ("AV1", "av1", False),
    ],
)
def test_codec_name(codec: str, name: str, aware: bool) -> None:
    assert codec_name(codec) == name
    assert supports_keyframe_detection(codec) is aware


@settings(max_examples=1000)
@given(st.sampled_from(["vp8", "h264", "opus", "vp9"]), st.binary(max_size=20))
def test_is_keyframe_never_raises(codec: str, payload: bytes) -> None:
    assert is_keyframe(codec, payload) in (True, False)
