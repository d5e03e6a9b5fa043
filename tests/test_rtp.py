"""media/rtp.py: header parsing/building, RTCP demux, RTX, unwrappers, extension values.

Cross-checked against aiortc's own RtpPacket in both directions.
"""

from __future__ import annotations

import struct

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtpPacket,
    pack_header_extensions,
    unpack_header_extensions,
    unwrap_rtx,
    wrap_rtx,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from media.rtp import (
    RtpHeader,
    RtpParseError,
    SequenceUnwrapper,
    TimestampUnwrapper,
    Unwrapper,
    abs_send_time_value,
    build_rtp_packet,
    is_rtcp,
    parse_audio_level,
    parse_rtp_header,
    unwrap_rtx_payload,
    wrap_rtx_payload,
)

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_TWCC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def aiortc_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    return m


def fixed_header(
    *, b0: int = 0x80, b1: int = 96, seq: int = 1, ts: int = 2, ssrc: int = 3
) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


# --- parsing ----------------------------------------------------------------------------

VALID_PACKETS = [
    # (name, bytes, expected fields)
    (
        "plain",
        fixed_header(b1=0x80 | 111, seq=65535, ts=0xFFFFFFFF, ssrc=0xDEADBEEF) + b"abc",
        dict(
            payload_type=111,
            marker=True,
            sequence_number=65535,
            timestamp=0xFFFFFFFF,
            ssrc=0xDEADBEEF,
            csrcs=(),
            payload_offset=12,
            payload_end=15,
            padding_size=0,
            extensions={},
        ),
    ),
    (
        "empty payload",
        fixed_header(),
        dict(payload_offset=12, payload_end=12, extensions={}),
    ),
    (
        "two csrcs",
        fixed_header(b0=0x82) + struct.pack("!II", 7, 8) + b"x",
        dict(csrcs=(7, 8), payload_offset=20, payload_end=21),
    ),
    (
        "one-byte extensions with padding between and after",
        fixed_header(b0=0x90)
        + struct.pack("!HH", 0xBEDE, 2)
        + bytes([0x10, 0xAA, 0x00, 0x21, 0xBB, 0xCC, 0x00, 0x00])
        + b"pay",
        dict(extensions={1: b"\xaa", 2: b"\xbb\xcc"}, payload_offset=24, payload_end=27),
    ),
    (
        "one-byte id 15 stops processing",
        fixed_header(b0=0x90)
        + struct.pack("!HH", 0xBEDE, 1)
        + bytes([0x10, 0xAA, 0xF5, 0x99])
        + b"p",
        dict(extensions={1: b"\xaa"}, payload_offset=20, payload_end=21),
    ),
    (
        "two-byte extensions incl. zero length and id > 14",
        fixed_header(b0=0x90)
        + struct.pack("!HH", 0x1000, 2)
        + bytes([0x0F, 0x00, 0x20, 0x03, 1, 2, 3, 0x00])
        + b"p",
        dict(extensions={15: b"", 32: b"\x01\x02\x03"}, payload_offset=24),
    ),
    (
        "two-byte with appbits in the profile",
        fixed_header(b0=0x90) + struct.pack("!HH", 0x100A, 1) + bytes([5, 1, 9, 0]),
        dict(extensions={5: b"\x09"}, payload_offset=20, payload_end=20),
    ),
    (
        "unknown extension profile is skipped",
        fixed_header(b0=0x90) + struct.pack("!HH", 0x1234, 1) + b"\xff\xff\xff\xff" + b"pp",
        dict(extensions={}, payload_offset=20, payload_end=22),
    ),
    (
        "zero-length extension block",
        fixed_header(b0=0x90) + struct.pack("!HH", 0xBEDE, 0) + b"p",
        dict(extensions={}, payload_offset=16, payload_end=17),
    ),
    (
        "padding",
        fixed_header(b0=0xA0) + b"data" + b"\x00\x00\x03",
        dict(padding_size=3, payload_offset=12, payload_end=16),
    ),
    (
        "padding only",
        fixed_header(b0=0xA0) + bytes(254) + b"\xff",
        dict(padding_size=255, payload_offset=12, payload_end=12),
    ),
    (
        "everything",
        fixed_header(b0=0xB1, b1=0x80 | 100)
        + struct.pack("!I", 42)
        + struct.pack("!HH", 0xBEDE, 1)
        + bytes([0x30, 0x7F, 0x00, 0x00])
        + b"vp8!"
        + b"\x00\x02",
        dict(
            marker=True,
            payload_type=100,
            csrcs=(42,),
            extensions={3: b"\x7f"},
            payload_offset=24,
            payload_end=28,
            padding_size=2,
        ),
    ),
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [(d, e) for _, d, e in VALID_PACKETS],
    ids=[n for n, _, _ in VALID_PACKETS],
)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview], ids=lambda w: w.__name__)
def test_parse_valid(data: bytes, expected: dict[str, object], wrap: type) -> None:
    header = parse_rtp_header(wrap(data))
    for name, value in expected.items():
        assert getattr(header, name) == value, name
    assert header.payload_size == header.payload_end - header.payload_offset
    for value in header.extensions.values():
        assert type(value) is bytes


MALFORMED = [
    ("empty", b"", "too short"),
    ("11 bytes", fixed_header()[:11], "too short"),
    ("version 0", fixed_header(b0=0x00), "version"),
    ("version 1", fixed_header(b0=0x40), "version"),
    ("version 3", fixed_header(b0=0xC0), "version"),
    ("truncated csrc", fixed_header(b0=0x82) + b"\x00" * 7, "CSRC"),
    ("15 csrcs claimed, none there", fixed_header(b0=0x8F), "CSRC"),
    ("extension preamble missing", fixed_header(b0=0x90) + b"\xbe\xde", "preamble"),
    (
        "extension longer than packet",
        fixed_header(b0=0x90) + b"\xbe\xde\x00\x02" + bytes(4),
        "claims",
    ),
    (
        "one-byte element overruns block",
        fixed_header(b0=0x90) + b"\xbe\xde\x00\x01" + bytes([0x13, 1, 2, 3]),
        "one-byte",
    ),
    (
        "two-byte element without length byte",
        fixed_header(b0=0x90) + b"\x10\x00\x00\x01" + bytes([0, 0, 0, 7]),
        "two-byte",
    ),
    (
        "two-byte element overruns block",
        fixed_header(b0=0x90) + b"\x10\x00\x00\x01" + bytes([7, 5, 1, 2]),
        "two-byte",
    ),
    ("padding length zero", fixed_header(b0=0xA0) + b"ab\x00", "padding"),
    ("padding longer than payload", fixed_header(b0=0xA0) + b"a\x03", "padding"),
    ("padding bit without bytes", fixed_header(b0=0xA0), "padding"),
    (
        "padding eats into extension",
        fixed_header(b0=0xB0) + b"\xbe\xde\x00\x01" + bytes([0x10, 1, 0, 0]) + b"\x05",
        "padding",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [(d, m) for _, d, m in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_parse_malformed(data: bytes, message: str) -> None:
    with pytest.raises(RtpParseError, match=message):
        parse_rtp_header(data)


def test_parse_error_is_value_error() -> None:
    assert issubclass(RtpParseError, ValueError)


@settings(max_examples=2000)
@given(st.binary(max_size=80))
def test_parse_arbitrary_bytes_only_raises_parse_error(data: bytes) -> None:
    try:
        header = parse_rtp_header(data)
    except RtpParseError:
        return
    assert 12 <= header.payload_offset <= header.payload_end <= len(data)
    assert header.payload_end + header.padding_size == len(data)


@settings(max_examples=1000)
@given(st.binary(min_size=12, max_size=80))
def test_parse_arbitrary_v2_bytes_only_raises_parse_error(data: bytes) -> None:
    # Force version 2 so the fuzzer gets past the first check most of the time.
    data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]
    try:
        header = parse_rtp_header(data)
    except RtpParseError:
        return
    assert header.payload_offset <= header.payload_end <= len(data)


@settings(max_examples=1000)
@given(st.binary(min_size=12, max_size=80))
def test_parse_agrees_with_aiortc_when_both_accept(data: bytes) -> None:
    data = bytes([0x80 | (data[0] & 0x3F)]) + data[1:]
    try:
        ours = parse_rtp_header(data)
        theirs = RtpPacket.parse(data)
    except ValueError:
        return
    assert ours.sequence_number == theirs.sequence_number
    assert ours.timestamp == theirs.timestamp
    assert ours.ssrc == theirs.ssrc
    assert ours.payload_type == theirs.payload_type
    assert ours.marker == bool(theirs.marker)
    assert list(ours.csrcs) == theirs.csrc
    assert ours.padding_size == theirs.padding_size
    assert data[ours.payload_offset : ours.payload_end] == theirs.payload


# --- building ---------------------------------------------------------------------------

EXTENSION_FORMS = [
    # (extensions, expected profile, expected block length in bytes incl. 4-byte preamble)
    ([], None, 0),
    ([(1, b"\x01")], 0xBEDE, 8),
    ([(14, bytes(16))], 0xBEDE, 4 + 20),
    ([(1, b"abc"), (2, b"de")], 0xBEDE, 4 + 8),
    ([(15, b"\x01")], 0x1000, 8),  # id 15 is reserved in the one-byte form
    ([(1, b"")], 0x1000, 8),  # empty values only exist in the two-byte form
    ([(1, bytes(17))], 0x1000, 4 + 20),
    ([(1, b"a"), (200, b"bb")], 0x1000, 4 + 8),
    ([(255, bytes(255))], 0x1000, 4 + 260),
]


@pytest.mark.parametrize(("extensions", "profile", "block"), EXTENSION_FORMS)
def test_build_extension_forms(
    extensions: list[tuple[int, bytes]], profile: int | None, block: int
) -> None:
    data = build_rtp_packet(
        payload_type=96,
        marker=False,
        sequence_number=1,
        timestamp=2,
        ssrc=3,
        extensions=extensions,
        payload=b"payload",
    )
    assert len(data) == 12 + block + 7
    assert (data[0] & 0x10 != 0) == (profile is not None)
    if profile is not None:
        assert struct.unpack_from("!H", data, 12)[0] == profile
        # Byte-identical to aiortc's own extension packing.
        assert data[12:14] == struct.pack("!H", pack_header_extensions(extensions)[0])
        assert data[16 : 12 + block] == pack_header_extensions(extensions)[1]
    header = parse_rtp_header(data)
    assert header.extensions == dict(extensions)
    assert data[header.payload_offset : header.payload_end] == b"payload"


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(payload_type=128),
        dict(payload_type=-1),
        dict(sequence_number=65536),
        dict(sequence_number=-1),
        dict(timestamp=1 << 32),
        dict(ssrc=1 << 32),
        dict(extensions=[(0, b"x")]),
        dict(extensions=[(256, b"x")]),
        dict(extensions=[(1, bytes(256))]),
        dict(csrcs=list(range(16))),
        dict(padding_size=256),
    ],
)
def test_build_rejects_out_of_range(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = dict(
        payload_type=96, marker=False, sequence_number=0, timestamp=0, ssrc=0, payload=b""
    )
    args.update(kwargs)
    with pytest.raises(ValueError):
        build_rtp_packet(**args)  # type: ignore[arg-type]


def test_build_padding_csrc_and_buffers() -> None:
    data = build_rtp_packet(
        payload_type=0,
        marker=True,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xFFFFFFFF,
        extensions=[(3, b"\x01\x02")],
        payload=memoryview(bytearray(b"xyz")),
        csrcs=[1, 2, 3],
        padding_size=5,
    )
    header = parse_rtp_header(data)
    assert header == RtpHeader(
        payload_type=0,
        marker=True,
        sequence_number=65535,
        timestamp=0xFFFFFFFF,
        ssrc=0xFFFFFFFF,
        csrcs=(1, 2, 3),
        payload_offset=12 + 12 + 8,
        payload_end=12 + 12 + 8 + 3,
        padding_size=5,
        extensions={3: b"\x01\x02"},
    )
    theirs = RtpPacket.parse(data)
    assert theirs.padding_size == 5 and theirs.payload == b"xyz" and theirs.csrc == [1, 2, 3]


AIORTC_IDS = {URI_MID: 1, URI_ABS_SEND_TIME: 3, URI_AUDIO_LEVEL: 10, URI_TWCC: 14}


@pytest.mark.parametrize("seq", [0, 1, 65534, 65535])
@pytest.mark.parametrize("ts", [0, 1, 0xFFFFFFFE, 0xFFFFFFFF])
@pytest.mark.parametrize("marker", [False, True])
def test_ours_build_aiortc_parse(seq: int, ts: int, marker: bool) -> None:
    ext = [(1, b"0"), (3, abs_send_time_value(1234)), (10, b"\x85"), (14, b"\x12\x34")]
    data = build_rtp_packet(
        payload_type=111,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=0x12345678,
        extensions=ext,
        payload=b"\x01\x02\x03",
    )
    packet = RtpPacket.parse(data, aiortc_map(AIORTC_IDS))
    assert packet.payload_type == 111
    assert bool(packet.marker) == marker
    assert packet.sequence_number == seq
    assert packet.timestamp == ts
    assert packet.ssrc == 0x12345678
    assert packet.payload == b"\x01\x02\x03"
    assert packet.extensions.mid == "0"
    assert packet.extensions.abs_send_time == int.from_bytes(abs_send_time_value(1234), "big")
    assert packet.extensions.audio_level == (True, 5)
    assert packet.extensions.transport_sequence_number == 0x1234
    # Byte-identical to what aiortc itself serializes.
    assert packet.serialize(aiortc_map(AIORTC_IDS)) == data


@pytest.mark.parametrize("seq", [0, 1, 65534, 65535])
@pytest.mark.parametrize("ts", [0, 0xFFFFFFFF])
@pytest.mark.parametrize("padding", [0, 1, 4])
def test_aiortc_build_ours_parse(seq: int, ts: int, padding: int) -> None:
    packet = RtpPacket(
        payload_type=96, marker=1, sequence_number=seq, timestamp=ts, ssrc=99, payload=b"hello"
    )
    packet.csrc = [5]
    packet.padding_size = padding
    packet.extensions.mid = "video"
    packet.extensions.audio_level = (False, 127)
    data = packet.serialize(aiortc_map(AIORTC_IDS))
    header = parse_rtp_header(data)
    assert (header.payload_type, header.marker) == (96, True)
    assert (header.sequence_number, header.timestamp, header.ssrc) == (seq, ts, 99)
    assert header.csrcs == (5,)
    assert header.padding_size == padding
    assert data[header.payload_offset : header.payload_end] == b"hello"
    assert header.extensions == {1: b"video", 10: b"\x7f"}
    assert parse_audio_level(header.extensions[10]) == (False, 127)


@settings(max_examples=300)
@given(
    pt=st.integers(0, 127),
    marker=st.booleans(),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    extensions=st.dictionaries(st.integers(1, 255), st.binary(max_size=20), max_size=5),
    payload=st.binary(max_size=50),
    padding=st.integers(0, 255),
)
def test_build_parse_roundtrip_and_aiortc(
    pt: int,
    marker: bool,
    seq: int,
    ts: int,
    ssrc: int,
    extensions: dict[int, bytes],
    payload: bytes,
    padding: int,
) -> None:
    data = build_rtp_packet(
        payload_type=pt,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        extensions=list(extensions.items()),
        payload=payload,
        padding_size=padding,
    )
    assert len(data) % 4 == (12 + len(payload) + padding) % 4  # extension block is word-sized
    header = parse_rtp_header(data)
    assert (header.payload_type, header.marker, header.sequence_number) == (pt, marker, seq)
    assert (header.timestamp, header.ssrc, header.padding_size) == (ts, ssrc, padding)
    assert header.extensions == extensions
    assert data[header.payload_offset : header.payload_end] == payload
    theirs = RtpPacket.parse(data)
    assert theirs.payload == payload
    assert theirs.sequence_number == seq and theirs.timestamp == ts
    if extensions:
        profile = struct.unpack_from("!H", data, 12)[0]
        words = struct.unpack_from("!H", data, 14)[0]
        raw = data[16 : 16 + 4 * words]
        assert dict(unpack_header_extensions(profile, raw)) == extensions


# --- RTCP demux -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second_byte", "expected"),
    [
        (200, True),  # SR
        (201, True),  # RR
        (202, True),  # SDES
        (205, True),  # RTPFB
        (206, True),  # PSFB
        (192, True),  # FIR (RFC 2032), lowest in range
        (223, True),  # highest in range
        (191, False),  # PT 63 + marker
        (224, False),  # PT 96 + marker
        (96, False),
        (111, False),
        (0x80 | 111, False),
        (64, True),  # PT 64 without marker is in the RTCP range too (RFC 5761 §4)
        (95, True),
        (63, False),
        (0, False),
    ],
)
def test_is_rtcp(second_byte: int, expected: bool) -> None:
    assert is_rtcp(bytes([0x80, second_byte, 0, 1])) is expected


def test_is_rtcp_short() -> None:
    assert is_rtcp(b"") is False
    assert is_rtcp(b"\x80") is False


# --- RTX --------------------------------------------------------------------------------


@pytest.mark.parametrize("seq", [0, 1, 65534, 65535])
@pytest.mark.parametrize("payload", [b"", b"x", bytes(range(200))])
def test_rtx_roundtrip(seq: int, payload: bytes) -> None:
    wrapped = wrap_rtx_payload(seq, payload)
    assert wrapped[:2] == struct.pack("!H", seq)
    assert unwrap_rtx_payload(wrapped) == (seq, payload)
    assert unwrap_rtx_payload(bytearray(wrapped)) == (seq, payload)


@pytest.mark.parametrize("payload", [b"", b"\x01"])
def test_rtx_unwrap_too_short(payload: bytes) -> None:
    with pytest.raises(RtpParseError):
        unwrap_rtx_payload(payload)


@pytest.mark.parametrize("seq", [-1, 65536])
def test_rtx_wrap_rejects_bad_seq(seq: int) -> None:
    with pytest.raises(ValueError):
        wrap_rtx_payload(seq, b"")


def test_rtx_matches_aiortc() -> None:
    original = RtpPacket(payload_type=96, sequence_number=65535, timestamp=9, ssrc=1, payload=b"ab")
    theirs = wrap_rtx(original, payload_type=97, sequence_number=5, ssrc=2)
    assert theirs.payload == wrap_rtx_payload(65535, b"ab")
    ours = RtpPacket(payload_type=97, sequence_number=5, timestamp=9, ssrc=2)
    ours.payload = wrap_rtx_payload(1234, b"cd")
    back = unwrap_rtx(ours, payload_type=96, ssrc=1)
    assert (back.sequence_number, back.payload) == unwrap_rtx_payload(ours.payload)


# --- unwrappers -------------------------------------------------------------------------

SEQ_CASES = [
    ("first kept", [5], [5]),
    ("first kept high", [65535], [65535]),
    ("in order", [0, 1, 2, 3], [0, 1, 2, 3]),
    ("wrap from 65534", [65534, 65535, 0, 1], [65534, 65535, 65536, 65537]),
    ("wrap from 65535", [65535, 0], [65535, 65536]),
    ("start at 1, step back", [1, 0, 65535, 2], [1, 0, -1, 2]),
    ("start at 0, backwards across wrap", [0, 65535, 65534], [0, -1, -2]),
    ("reorder across wrap", [65534, 0, 65535, 1], [65534, 65536, 65535, 65537]),
    ("duplicate", [10, 10, 11, 11], [10, 10, 11, 11]),
    ("big forward jump", [0, 32768], [0, 32768]),  # exactly half counts as forward
    ("just over half is backward", [0, 32769], [0, -32767]),
    ("two wraps", [0, 30000, 60000, 24464, 54464, 18928], [0, 30000, 60000, 90000, 120000, 150000]),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in SEQ_CASES], ids=[n for n, _, _ in SEQ_CASES]
)
def test_sequence_unwrapper(values: list[int], expected: list[int]) -> None:
    u = SequenceUnwrapper()
    assert u.last is None
    assert [u.unwrap(v) for v in values] == expected
    assert u.last == expected[-1]


TS_MAX = 0xFFFFFFFF
TS_CASES = [
    ("first kept", [TS_MAX], [TS_MAX]),
    (
        "wrap",
        [TS_MAX - 3000, TS_MAX, 2999, 5999],
        [TS_MAX - 3000, TS_MAX, TS_MAX + 3000, TS_MAX + 6000],
    ),
    ("reorder across wrap", [TS_MAX, 100, TS_MAX - 100], [TS_MAX, TS_MAX + 101, TS_MAX - 100]),
    ("backwards from 0", [0, TS_MAX], [0, -1]),
    ("half forward", [0, 1 << 31], [0, 1 << 31]),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in TS_CASES], ids=[n for n, _, _ in TS_CASES]
)
def test_timestamp_unwrapper(values: list[int], expected: list[int]) -> None:
    u = TimestampUnwrapper()
    assert [u.unwrap(v) for v in values] == expected


@settings(max_examples=300)
@given(
    start=st.integers(0, 0xFFFF),
    steps=st.lists(st.integers(-1000, 1000), max_size=200),
)
def test_sequence_unwrapper_tracks_true_position(start: int, steps: list[int]) -> None:
    u = SequenceUnwrapper()
    true = start
    assert u.unwrap(start) == start
    for step in steps:
        true += step
        assert u.unwrap(true & 0xFFFF) == true


@pytest.mark.parametrize("bits", [7, 8, 15])
def test_generic_unwrapper_widths(bits: int) -> None:
    u = Unwrapper(bits)
    top = (1 << bits) - 1
    assert [u.unwrap(v) for v in (top - 1, top, 0, 1, top)] == [top - 1, top, top + 1, top + 2, top]


def test_unwrapper_rejects_tiny_width() -> None:
    with pytest.raises(ValueError):
        Unwrapper(1)


# --- extension values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now_ms", "expected"),
    [
        (0, 0),
        (1000, 1 << 18),
        (500, 1 << 17),
        (1, 262),  # 262.144 rounds down
        (2, 524),  # 524.288
        (63_999, (63_999 * (1 << 18) + 500) // 1000),
        (64_000, 0),  # wraps every 64 s
        (65_000, 1 << 18),
    ],
)
def test_abs_send_time_value(now_ms: int, expected: int) -> None:
    value = abs_send_time_value(now_ms)
    assert len(value) == 3
    assert int.from_bytes(value, "big") == expected


def test_abs_send_time_matches_aiortc_formula() -> None:
    # aiortc sends (ntp >> 14) & 0xFFFFFF where ntp is 32.32 fixed-point seconds.
    for now_ms in (0, 1, 999, 12_345, 10**9 + 7):
        ntp = (now_ms << 32) // 1000
        ours = int.from_bytes(abs_send_time_value(now_ms), "big")
        # We round to the nearest tick where aiortc truncates.
        assert (ours - (ntp >> 14)) % (1 << 24) in (0, 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\x00", (False, 0)),
        (b"\x7f", (False, 127)),
        (b"\x80", (True, 0)),
        (b"\xaa", (True, 42)),
        (b"\x1e\x00", (False, 30)),  # two-byte form may pad the value
    ],
)
def test_parse_audio_level(value: bytes, expected: tuple[bool, int]) -> None:
    assert parse_audio_level(value) == expected


def test_parse_audio_level_empty() -> None:
    with pytest.raises(RtpParseError):
        parse_audio_level(b"")


def test_overwrite_extension_in_place() -> None:
    from media.rtp import overwrite_extension

    exts = [(4, b"\x00\x00"), (1, b"7"), (3, b"\x01\x02\x03")]
    packet = bytearray(
        build_rtp_packet(
            payload_type=96,
            marker=False,
            sequence_number=1,
            timestamp=2,
            ssrc=3,
            extensions=exts,
            payload=b"payload",
        )
    )
    assert overwrite_extension(packet, 4, b"\xab\xcd")
    assert overwrite_extension(packet, 3, b"\x09\x09\x09")
    header = parse_rtp_header(bytes(packet))
    assert header.extensions[4] == b"\xab\xcd"
    assert header.extensions[3] == b"\x09\x09\x09"
    assert header.extensions[1] == b"7"
    assert bytes(packet[header.payload_offset :]) == b"payload"
    assert not overwrite_extension(packet, 4, b"\x01")  # wrong length
    assert not overwrite_extension(packet, 9, b"\x01\x02")  # absent
    plain = bytearray(
        build_rtp_packet(
            payload_type=96, marker=False, sequence_number=1, timestamp=2, ssrc=3, payload=b"x"
        )
    )
    assert not overwrite_extension(plain, 4, b"\x00\x00")
    assert not overwrite_extension(bytearray(b"\x90" + bytes(5)), 4, b"\x00\x00")
