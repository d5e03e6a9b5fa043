"""sfu/twcc.py: transport-wide feedback parse/build, recorder, send history."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.twcc import (
    MAX_REPORT_SPAN,
    MAX_STATUSES_PER_PACKET,
    RESYNC_AFTER_STALE,
    PacketResult,
    SendHistory,
    TwccFeedback,
    TwccParseError,
    TwccRecorder,
    build_twcc,
    parse_twcc,
    split_rtcp_compound,
)

WRAP_STARTS = [0, 1, 32767, 32768, 65534, 65535]

# --- hand-made vectors (written from draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1)

# base 0xFFFE (wraps), 5 statuses, reference 16 × 64 ms = 1024 ms, fb count 7.
# One 2-bit status vector 11|01 00 10 01 00 00 00 = 0xD240: received small, lost,
# received large, received small, lost. Deltas: 0x04 (+1 ms), 0xFFF8 (-2 ms), 0xFF (+63.75 ms).
# 20 + 2 + 4 = 26 bytes, zero-padded to 28: length field 6.
VECTOR_TWO_BIT = bytes.fromhex(
    "8fcd0006 00000001 12345678 fffe0005 00001007 d240 04 fff8 ff 0000".replace(" ", "")
)
ARRIVALS_TWO_BIT = ((0xFFFE, 1025.0), (0xFFFF, None), (0, 1023.0), (1, 1086.75), (2, None))

# base 100, 17 statuses, reference -1 (0xFFFFFF → -64 ms), fb count 0.
# Run chunk 0|01|0000000000011 = 0x2003 (3 × received small), then a 1-bit vector
# 1|0|1 0 1 0 0 0 0 0 0 0 0 0 0 1 = 0xA801. Six 1-byte deltas 0,1,2,4,8,16 (× 250 µs).
VECTOR_RUN_AND_ONE_BIT = bytes.fromhex(
    "8fcd0007 00000002 00000003 00640011 ffffff00 2003 a801 000102040810 0000".replace(" ", "")
)
ARRIVALS_RUN_AND_ONE_BIT = (
    ((100, -64.0), (101, -63.75), (102, -63.25), (103, -62.25), (104, None), (105, -60.25))
    + tuple((seq, None) for seq in range(106, 116))
    + ((116, -56.25),)
)

# base 0, 8194 statuses, reference 0, fb count 255. A run of 8191 lost (0|00|1111111111111 =
# 0x1FFF, the longest run), then a 2-bit vector 11|01 10 10 00 00 00 00 = 0xDA00: received
# small (+0), received large (+8191.75 ms = 0x7FFF), received large (-8192 ms = 0x8000).
# 20 + 4 + 5 = 29 bytes, padded to 32: length field 7.
VECTOR_LONG_RUN = bytes.fromhex(
    "8fcd0007 0000000a 0000000b 00002002 000000ff 1fff da00 00 7fff 8000 000000".replace(" ", "")
)


def test_hand_made_two_bit_vector() -> None:
    fb = parse_twcc(VECTOR_TWO_BIT)
    assert fb == TwccFeedback(1, 0x12345678, 0xFFFE, 7, 1024, ARRIVALS_TWO_BIT)


def test_hand_made_run_and_one_bit_vector_with_negative_reference() -> None:
    fb = parse_twcc(VECTOR_RUN_AND_ONE_BIT)
    assert fb == TwccFeedback(2, 3, 100, 0, -64, ARRIVALS_RUN_AND_ONE_BIT)


def test_hand_made_longest_run_and_extreme_large_deltas() -> None:
    fb = parse_twcc(VECTOR_LONG_RUN)
    assert (fb.base_sequence, fb.feedback_count, fb.reference_time_ms) == (0, 255, 0)
    assert len(fb.arrivals) == 8194
    assert fb.arrivals[:8191] == tuple((seq, None) for seq in range(8191))
    assert fb.arrivals[8191:] == ((8191, 0.0), (8192, 8191.75), (8193, -0.25))


def test_hand_made_run_of_large_deltas() -> None:
    # Run chunk 0|10|0000000000010 = 0x4002: two large deltas, +1 ms then -0.25 ms.
    packet = bytes.fromhex("8fcd0006 00000001 00000002 00070002 00000000 4002 0004 ffff 0000")
    assert parse_twcc(packet).arrivals == ((7, 1.0), (8, 0.75))


def test_build_produces_the_hand_made_bytes() -> None:
    assert build_twcc(1, 0x12345678, 0xFFFE, 7, ARRIVALS_TWO_BIT) == VECTOR_TWO_BIT
    assert build_twcc(10, 11, 0, 255, parse_twcc(VECTOR_LONG_RUN).arrivals) == VECTOR_LONG_RUN


def test_p_bit_padding_is_honoured() -> None:
    padded = bytearray(VECTOR_TWO_BIT)
    padded[0] |= 0x20
    padded[-1] = 2  # two padding bytes, the count included
    assert parse_twcc(bytes(padded)).arrivals == ARRIVALS_TWO_BIT
    # Padding that eats into the deltas leaves them truncated.
    padded[-1] = 4
    with pytest.raises(TwccParseError):
        parse_twcc(bytes(padded))
    for bad in (0, 255):
        padded[-1] = bad
        with pytest.raises(TwccParseError):
            parse_twcc(bytes(padded))


def test_trailing_bytes_are_tolerated() -> None:
    # Extra zero words inside the declared length, and bytes beyond it.
    longer = bytearray(VECTOR_TWO_BIT + bytes(8))
    longer[3] += 2
    assert parse_twcc(bytes(longer)).arrivals == ARRIVALS_TWO_BIT
    assert parse_twcc(VECTOR_TWO_BIT + b"\xde\xad").arrivals == ARRIVALS_TWO_BIT


def test_unused_symbols_of_the_last_vector_are_ignored() -> None:
    # 2-bit vector for 5 statuses whose two filler symbols are the reserved value 3.
    packet = bytearray(VECTOR_TWO_BIT)
    packet[21] |= 0x0F
    assert parse_twcc(bytes(packet)).arrivals == ARRIVALS_TWO_BIT


def test_zero_statuses() -> None:
    packet = build_twcc(5, 6, 65535, 1, [])
    assert len(packet) == 20
    fb = parse_twcc(packet)
    assert (fb.base_sequence, fb.arrivals, fb.reference_time_ms) == (65535, (), 0)


def _with(packet: bytes, offset: int, value: bytes) -> bytes:
    return packet[:offset] + value + packet[offset + len(value) :]


@pytest.mark.parametrize(
    "packet, message",
    [
        (b"", "shorter"),
        (VECTOR_TWO_BIT[:19], "shorter"),
        (_with(VECTOR_TWO_BIT, 0, b"\x4f"), "version"),
        (_with(VECTOR_TWO_BIT, 0, b"\x81"), "not transport-wide"),  # FMT 1 (NACK)
        (_with(VECTOR_TWO_BIT, 1, b"\xce"), "not transport-wide"),  # PT 206
        (_with(VECTOR_TWO_BIT, 2, b"\x00\x07"), "length field"),  # runs past the end
        (_with(VECTOR_TWO_BIT, 2, b"\x00\x03"), "too short"),  # 16 bytes declared
        # 16 statuses, but the two run chunks hold 7 each and nothing follows.
        (bytes.fromhex("8fcd0005 00000001 00000002 00000010 00000000 2007 2007"), "exceeds"),
        # 3 small deltas announced, 2 present.
        (bytes.fromhex("8fcd0005 00000001 00000002 00000003 00000000 2003 0102"), "truncated"),
        # 2 large deltas, the second cut short by the P-bit padding (3 bytes).
        (
            bytes.fromhex("afcd0006 00000001 00000002 00000002 00000000 4002 0001 00 000003"),
            "trunc",
        ),
        (_with(VECTOR_TWO_BIT, 20, b"\x60\x05"), "reserved"),  # run chunk with symbol 3
        (_with(VECTOR_TWO_BIT, 20, b"\xf0\x00"), "reserved"),  # vector: 2nd symbol is 3
        (_with(VECTOR_TWO_BIT, 3, b"\x05")[:24], "truncated"),  # deltas cut short
    ],
)
def test_malformed_packets_raise_parse_error(packet: bytes, message: str) -> None:
    with pytest.raises(TwccParseError, match=message):
        parse_twcc(packet)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(TwccParseError, ValueError)


# --- round trips --------------------------------------------------------------------------


def _timeline(base: int, count: int, lost_every: int = 5) -> list[tuple[int, float | None]]:
    """Arrivals 0.75 ms apart with a jitter pattern and a loss every `lost_every` packets."""
    jitter = [0.0, 2.5, -1.25, 70.0, -40.5, 0.25]
    out: list[tuple[int, float | None]] = []
    t = 123_456.0
    for i in range(count):
        t += 0.75 + jitter[i % len(jitter)]
        out.append(((base + i) & 0xFFFF, None if i % lost_every == 3 else t))
    return out


@pytest.mark.parametrize("base", WRAP_STARTS)
@pytest.mark.parametrize("count", [1, 6, 7, 13, 14, 15, 300, 9000])
def test_round_trip_wrap_sweep(base: int, count: int) -> None:
    arrivals = _timeline(base, count)
    fb = parse_twcc(build_twcc(0xDEADBEEF, 0xFFFFFFFF, base, count & 0xFF, arrivals))
    assert fb.arrivals == tuple(arrivals)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_sequence) == (0xDEADBEEF, 0xFFFFFFFF, base)
    assert fb.feedback_count == count & 0xFF
    first = next(a for _, a in arrivals if a is not None)
    assert fb.reference_time_ms == first // 64 * 64


@pytest.mark.parametrize("base", WRAP_STARTS)
def test_round_trip_all_lost_and_all_received_runs(base: int) -> None:
    lost: list[tuple[int, float | None]] = [((base + i) & 0xFFFF, None) for i in range(10_000)]
    assert parse_twcc(build_twcc(1, 2, base, 0, lost)).arrivals == tuple(lost)
    same = [((base + i) & 0xFFFF, 5.0 + i * 0.25) for i in range(20_000)]
    packet = build_twcc(1, 2, base, 0, same)
    # Runs keep this compact: 3 run chunks + one byte per packet.
    assert len(packet) <= 20 + 3 * 2 + 20_000 + 3
    assert parse_twcc(packet).arrivals == tuple(same)


def test_arrivals_are_quantised_to_250_microseconds() -> None:
    fb = parse_twcc(build_twcc(1, 2, 10, 0, [(10, 100.1), (11, 100.2), (12, 100.4), (13, 99.0)]))
    assert [a for _, a in fb.arrivals] == [100.0, 100.25, 100.5, 99.0]


def test_negative_and_large_deltas() -> None:
    arrivals: list[tuple[int, float | None]] = [
        (0, 1000.0),
        (1, 1000.0 + 8191.75),  # largest positive 2-byte delta
        (2, 1000.0 + 8191.75 - 8192.0),  # largest negative
        (3, 999.75),
        (4, 999.75 + 63.75),  # largest 1-byte delta
        (5, 999.75 + 63.75 + 64.0),  # just too big for 1 byte
    ]
    assert parse_twcc(build_twcc(1, 2, 0, 0, arrivals)).arrivals == tuple(arrivals)
    with pytest.raises(ValueError, match="16 bits"):
        build_twcc(1, 2, 0, 0, [(0, 0.0), (1, 8192.0)])
    with pytest.raises(ValueError, match="16 bits"):
        build_twcc(1, 2, 0, 0, [(0, 8192.0), (1, None), (2, -0.25)])


def test_negative_reference_time_round_trips() -> None:
    arrivals = [(7, -1.0), (8, -0.5), (9, 3.0)]
    fb = parse_twcc(build_twcc(1, 2, 7, 0, arrivals))
    assert fb.reference_time_ms == -64
    assert fb.arrivals == tuple(arrivals)


def test_reference_time_beyond_24_bits_wraps_keeping_relative_times() -> None:
    start = float((1 << 23) * 64 + 1000)  # just past the largest signed reference
    arrivals = [(0, start), (1, start + 12.5)]
    fb = parse_twcc(build_twcc(1, 2, 0, 0, arrivals))
    shift = (1 << 24) * 64
    assert fb.reference_time_ms == (start // 64) * 64 - shift
    assert [a for _, a in fb.arrivals] == [start - shift, start + 12.5 - shift]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sender_ssrc": -1},
        {"media_ssrc": 1 << 32},
        {"base_sequence": 65536},
        {"feedback_count": 256},
        {"arrivals": [(6, 1.0)]},  # not the base sequence
        {"arrivals": [(5, 1.0), (7, 2.0)]},  # not consecutive
        {"arrivals": [(5, float("nan"))]},
        {"arrivals": [(5, float("inf"))]},
        {"arrivals": [((5 + i) & 0xFFFF, None) for i in range(65536)]},
    ],
)
def test_build_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {
        "sender_ssrc": 1,
        "media_ssrc": 2,
        "base_sequence": 5,
        "feedback_count": 0,
        "arrivals": [(5, 1.0)],
    }
    args.update(kwargs)
    with pytest.raises(ValueError):
        build_twcc(**args)  # type: ignore[arg-type]


@st.composite
def feedback_inputs(draw: st.DrawFn) -> tuple[int, list[tuple[int, float | None]]]:
    base = draw(st.integers(0, 0xFFFF))
    ticks = draw(st.integers(-(1 << 23) * 256, ((1 << 23) - 1) * 256))
    steps = draw(
        st.lists(
            st.one_of(
                st.none(),
                st.integers(0, 255),
                st.integers(-0x8000, 0x7FFF),
            ),
            max_size=400,
        )
    )
    arrivals: list[tuple[int, float | None]] = []
    first = True  # the first arrival sets the reference: keep it within the signed 24 bits
    for i, step in enumerate(steps):
        if step is None:
            arrivals.append(((base + i) & 0xFFFF, None))
        else:
            ticks = ticks if first else ticks + step
            first = False
            arrivals.append(((base + i) & 0xFFFF, ticks / 4))
    return base, arrivals


@settings(max_examples=300, deadline=None)
@given(feedback_inputs(), st.integers(0, 0xFFFFFFFF), st.integers(0, 255))
def test_round_trip_property(
    inputs: tuple[int, list[tuple[int, float | None]]], ssrc: int, count: int
) -> None:
    base, arrivals = inputs
    packet = build_twcc(ssrc, ssrc ^ 0xFFFF, base, count, arrivals)
    assert len(packet) % 4 == 0
    assert struct.unpack_from("!H", packet, 2)[0] == len(packet) // 4 - 1
    fb = parse_twcc(packet)
    assert fb.arrivals == tuple(arrivals)
    assert (fb.sender_ssrc, fb.media_ssrc, fb.base_sequence, fb.feedback_count) == (
        ssrc,
        ssrc ^ 0xFFFF,
        base,
        count,
    )


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_parse_random_bytes_raises_only_parse_error(data: bytes) -> None:
    try:
        parse_twcc(data)
    except TwccParseError:
        pass


@settings(max_examples=1000, deadline=None)
@given(st.binary(min_size=16, max_size=300))
def test_parse_random_bodies_behind_a_valid_header_raise_only_parse_error(body: bytes) -> None:
    # Random bytes rarely get past the header checks, so give them a valid one.
    length = (len(body) + 4) // 4 - 1
    data = bytes([0x8F | (body[0] & 0x20), 205]) + length.to_bytes(2, "big") + body
    try:
        parse_twcc(data)
    except TwccParseError:
        pass


@settings(max_examples=500, deadline=None)
@given(feedback_inputs(), st.data())
def test_parse_mutated_packets_raises_only_parse_error(
    inputs: tuple[int, list[tuple[int, float | None]]], data: st.DataObject
) -> None:
    packet = bytearray(build_twcc(1, 2, inputs[0], 3, inputs[1]))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(4, len(packet) - 1))
        packet[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    try:
        parse_twcc(bytes(packet[:cut]))
    except TwccParseError:
        pass


# --- compound RTCP ------------------------------------------------------------------------

# Receiver report with no report blocks (8 bytes) and a PLI (12 bytes).
RR = bytes.fromhex("80c9000100000001")
PLI = bytes.fromhex("81ce00020000000100000002")
NACK = bytes.fromhex("81cd0003000000010000000200640000")  # PT 205 but FMT 1


def test_split_compound() -> None:
    other = build_twcc(9, 8, 300, 1, [(300, 1.0)])
    data = RR + VECTOR_TWO_BIT + NACK + PLI + other
    twcc, rest = split_rtcp_compound(data)
    assert twcc == [VECTOR_TWO_BIT, other]
    assert rest == RR + NACK + PLI


def test_split_without_twcc_returns_the_data_itself() -> None:
    data = RR + PLI
    assert split_rtcp_compound(data) == ([], data)
    assert split_rtcp_compound(VECTOR_TWO_BIT) == ([VECTOR_TWO_BIT], b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        RR + VECTOR_TWO_BIT[:-4],  # length runs past the end
        VECTOR_TWO_BIT + b"\x80\xc9",  # trailing partial header
        VECTOR_TWO_BIT + b"\x00\xc9\x00\x00",  # version 0
        _with(VECTOR_TWO_BIT, 2, b"\x00\x10"),
    ],
)
def test_split_malformed_compound_is_untouched(data: bytes) -> None:
    assert split_rtcp_compound(data) == ([], data)


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200))
def test_split_random_bytes_never_raises(data: bytes) -> None:
    twcc, rest = split_rtcp_compound(data)
    if twcc:
        assert sum(map(len, twcc)) + len(rest) == len(data)
    else:
        assert rest == data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([RR, PLI, NACK, VECTOR_TWO_BIT, VECTOR_RUN_AND_ONE_BIT])))
def test_split_partitions_valid_compounds(packets: list[bytes]) -> None:
    twcc, rest = split_rtcp_compound(b"".join(packets))
    expected = [p for p in packets if p in (VECTOR_TWO_BIT, VECTOR_RUN_AND_ONE_BIT)]
    assert twcc == expected
    if expected:
        assert rest == b"".join(p for p in packets if p not in expected)


# --- recorder -----------------------------------------------------------------------------


def _all_arrivals(packets: list[bytes]) -> list[tuple[int, float | None]]:
    return [item for packet in packets for item in parse_twcc(packet).arrivals]


@pytest.mark.parametrize("start", WRAP_STARTS)
def test_recorder_reports_everything_in_order_across_wrap(start: int) -> None:
    rec = TwccRecorder(0xABCD)
    sent: list[tuple[int, float | None]] = []
    reported: list[tuple[int, float | None]] = []
    t = 5000.0
    for i in range(1000):
        seq = (start + i) & 0xFFFF
        t += 0.5
        rec.on_packet(seq, t, media_ssrc=77)
        sent.append((seq, t))
        if i % 37 == 36:
            fbs = [parse_twcc(p) for p in rec.build_feedback(t)]
            assert fbs and all(fb.sender_ssrc == 0xABCD and fb.media_ssrc == 77 for fb in fbs)
            reported += [item for fb in fbs for item in fb.arrivals]
    reported += _all_arrivals(rec.build_feedback(t))
    assert reported == sent


@pytest.mark.parametrize("start", WRAP_STARTS)
def test_recorder_missing_reordered_duplicate_and_late(start: int) -> None:
    rec = TwccRecorder(1)

    def seq(i: int) -> int:
        return (start + i) & 0xFFFF

    # 0, 2, 1 (reordered), 2 again (duplicate), 5 (3 and 4 missing)
    for i, t in [(0, 10.0), (2, 11.0), (1, 11.5), (2, 99.0), (5, 12.0)]:
        rec.on_packet(seq(i), t, 1)
    assert rec.duplicates == 1
    assert _all_arrivals(rec.build_feedback(20.0)) == [
        (seq(0), 10.0),
        (seq(1), 11.5),
        (seq(2), 11.0),
        (seq(3), None),
        (seq(4), None),
        (seq(5), 12.0),
    ]
    # 4 arrives after being reported lost: ignored. Nothing new -> no feedback.
    rec.on_packet(seq(4), 21.0, 1)
    assert rec.too_old == 1
    assert rec.build_feedback(30.0) == []
    rec.on_packet(seq(6), 31.0, 1)
    assert _all_arrivals(rec.build_feedback(40.0)) == [(seq(6), 31.0)]


def test_recorder_first_report_starts_at_the_lowest_seen() -> None:
    rec = TwccRecorder(1)
    rec.on_packet(1, 10.0, 1)
    rec.on_packet(65534, 11.0, 1)  # reordered from before the first one, across the wrap
    assert _all_arrivals(rec.build_feedback(20.0)) == [
        (65534, 11.0),
        (65535, None),
        (0, None),
        (1, 10.0),
    ]


def test_recorder_nothing_recorded() -> None:
    rec = TwccRecorder(1)
    assert rec.build_feedback(0.0) == []


@pytest.mark.parametrize("start", WRAP_STARTS)
def test_recorder_splits_long_reports(start: int) -> None:
    rec = TwccRecorder(1)
    total = 2 * MAX_STATUSES_PER_PACKET + 50
    expected = []
    for i in range(total):
        seq = (start + i) & 0xFFFF
        arrival = None if i % 11 == 4 else 100.0 + i
        if arrival is not None:
            rec.on_packet(seq, arrival, 1)
        expected.append((seq, arrival))
    packets = rec.build_feedback(1000.0)
    fbs = [parse_twcc(p) for p in packets]
    assert [len(fb.arrivals) for fb in fbs] == [200, 200, 50]
    assert [fb.feedback_count for fb in fbs] == [0, 1, 2]
    assert [fb.base_sequence for fb in fbs] == [(start + k * 200) & 0xFFFF for k in range(3)]
    assert _all_arrivals(packets) == expected


@pytest.mark.parametrize("gap_ms", [8191.75, 8192.0, 50_000.0])
def test_recorder_splits_where_a_delta_overflows(gap_ms: float) -> None:
    rec = TwccRecorder(1)
    rec.on_packet(65535, 100.0, 1)
    rec.on_packet(0, 100.0 + gap_ms, 1)
    rec.on_packet(1, 100.5, 1)  # large negative delta right after: overflows too
    packets = rec.build_feedback(0.0)
    # 8192 ms overflows forwards, but the following -8191.5 ms still fits.
    assert len(packets) == {8191.75: 1, 8192.0: 2, 50_000.0: 3}[gap_ms]
    assert _all_arrivals(packets) == [(65535, 100.0), (0, 100.0 + gap_ms), (1, 100.5)]


def test_recorder_feedback_count_wraps() -> None:
    rec = TwccRecorder(1)
    counts = []
    for i in range(300):
        rec.on_packet(i, float(i), 1)
        counts += [parse_twcc(p).feedback_count for p in rec.build_feedback(float(i))]
    assert counts == [i & 0xFF for i in range(300)]


def test_recorder_reports_the_last_media_ssrc() -> None:
    rec = TwccRecorder(1)
    rec.on_packet(1, 1.0, 111)
    rec.on_packet(2, 2.0, 222)
    assert parse_twcc(rec.build_feedback(3.0)[0]).media_ssrc == 222


def test_recorder_huge_forward_jump_reports_only_the_newest_span() -> None:
    rec = TwccRecorder(1)
    rec.on_packet(0, 1.0, 1)
    assert len(rec.build_feedback(2.0)) == 1
    rec.on_packet(30_000, 3.0, 1)
    arrivals = _all_arrivals(rec.build_feedback(4.0))
    assert len(arrivals) == MAX_REPORT_SPAN
    assert arrivals[-1] == (30_000, 3.0)
    assert arrivals[0] == (30_000 - MAX_REPORT_SPAN + 1, None)


def test_recorder_resyncs_after_a_counter_restart() -> None:
    rec = TwccRecorder(1)
    for i in range(5000, 5100):
        rec.on_packet(i, float(i), 1)
    rec.build_feedback(0.0)
    # The sender restarts at 1: stale numbers are dropped until it is clearly a restart.
    for i in range(1, RESYNC_AFTER_STALE):
        rec.on_packet(i, 6000.0 + i, 1)
    assert rec.build_feedback(0.0) == []
    assert rec.resyncs == 0
    rec.on_packet(RESYNC_AFTER_STALE, 7000.0, 1)
    assert rec.resyncs == 1
    rec.on_packet(RESYNC_AFTER_STALE + 1, 7001.0, 1)
    assert _all_arrivals(rec.build_feedback(0.0)) == [
        (RESYNC_AFTER_STALE, 7000.0),
        (RESYNC_AFTER_STALE + 1, 7001.0),
    ]


def test_isolated_late_packets_do_not_resync() -> None:
    rec = TwccRecorder(1)
    rec.on_packet(1000, 0.0, 1)
    rec.build_feedback(0.0)
    for i in range(1, 500):
        rec.on_packet(1000 + i, float(i), 1)
        rec.on_packet(1000 + i - 300, float(i), 1)  # stale, but interleaved with fresh ones
    assert rec.resyncs == 0
    assert len(_all_arrivals(rec.build_feedback(0.0))) == 499


def test_recorder_memory_is_bounded_without_feedback() -> None:
    rec = TwccRecorder(1)
    for i in range(100_000):
        rec.on_packet(i & 0xFFFF, float(i), 1)
    assert len(rec._arrivals) <= 2 * MAX_REPORT_SPAN + 1
    assert len(_all_arrivals(rec.build_feedback(0.0))) == MAX_REPORT_SPAN


def test_recorder_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        TwccRecorder(1 << 32)
    with pytest.raises(ValueError):
        TwccRecorder(1).on_packet(1, float("nan"), 1)


# --- send history -------------------------------------------------------------------------


def _feedback(base: int, arrivals: list[float | None], ref_ms: int = 0) -> TwccFeedback:
    return TwccFeedback(
        1, 2, base, 0, ref_ms, tuple(((base + i) & 0xFFFF, a) for i, a in enumerate(arrivals))
    )


def test_next_sequence_wraps() -> None:
    history = SendHistory(first_sequence=65534)
    assert [history.next_sequence() for _ in range(4)] == [65534, 65535, 0, 1]
    assert SendHistory().next_sequence() == 0


@pytest.mark.parametrize("first", WRAP_STARTS)
def test_history_maps_feedback_across_the_wrap(first: int) -> None:
    history = SendHistory(first_sequence=first)
    for i in range(20):
        history.on_sent(history.next_sequence(), 100.0 + i, 1000 + i, 7 if i >= 10 else None)
    assert history.packets_sent == 20
    assert history.in_flight_bytes() == sum(1000 + i for i in range(20))
    results = history.on_feedback(_feedback((first + 4) & 0xFFFF, [150.0, None, 152.5]), 200.0)
    assert results == [
        PacketResult(first + 4, 104.0, 1004, 150.0, None),
        PacketResult(first + 5, 105.0, 1005, None, None),
        PacketResult(first + 6, 106.0, 1006, 152.5, None),
    ]
    # Everything up to the newest reported number is out of flight.
    assert history.in_flight_bytes() == sum(1000 + i for i in range(7, 20))
    assert history.feedbacks == 1
    results = history.on_feedback(_feedback((first + 10) & 0xFFFF, [160.0]), 200.0)
    assert results == [PacketResult(first + 10, 110.0, 1010, 160.0, 7)]


def test_history_long_sweep_unwraps_monotonically() -> None:
    history = SendHistory(first_sequence=65000)
    sent_ms = 0.0
    got: list[int] = []
    for _ in range(700):  # 700 × 200 = 140k packets, two wraps
        base = None
        for _i in range(200):
            seq = history.next_sequence()
            base = seq if base is None else base
            sent_ms += 1.0
            history.on_sent(seq, sent_ms, 100)
        assert base is not None
        results = history.on_feedback(_feedback(base, [sent_ms] * 200), sent_ms)
        got += [r.sequence for r in results]
        assert history.in_flight_bytes() == 0
    assert got == list(range(65000, 65000 + 140_000))


def test_history_lost_packet_can_be_reported_received_later() -> None:
    history = SendHistory()
    for seq in range(5):
        history.on_sent(seq, float(seq), 100)
    assert [r.arrival_ms for r in history.on_feedback(_feedback(0, [10.0, None]), 5.0)] == [
        10.0,
        None,
    ]
    results = history.on_feedback(_feedback(0, [10.0, 12.0, 13.0]), 5.0)
    # 0 was already reported received (unknown now); 1 turns up late.
    assert [(r.sequence, r.arrival_ms) for r in results] == [(1, 12.0), (2, 13.0)]
    assert history.unknown_reports == 1
    assert history.in_flight_bytes() == 200


def test_history_ignores_unknown_and_ancient() -> None:
    history = SendHistory(max_age_ms=1000)
    history.on_sent(100, 0.0, 500)
    history.on_sent(101, 500.0, 600)
    # 99 was never sent; a report "ahead" of what we sent maps a full cycle back.
    assert history.on_feedback(_feedback(99, [1.0]), 600.0) == []
    assert history.on_feedback(_feedback(102, [1.0]), 600.0) == []
    assert history.in_flight_bytes() == 1100
    # At 1200 ms packet 100 (sent at 0) has aged out; 101 is still known.
    results = history.on_feedback(_feedback(100, [1.0, 2.0]), 1200.0)
    assert [r.sequence for r in results] == [101]
    assert history.in_flight_bytes() == 0


def test_aged_out_packets_leave_flight() -> None:
    history = SendHistory(max_age_ms=100)
    history.on_sent(1, 0.0, 500)
    history.on_sent(2, 50.0, 700)
    assert history.in_flight_bytes() == 1200
    history.on_sent(3, 120.0, 300)
    assert history.in_flight_bytes() == 1000
    assert history.on_feedback(_feedback(1, [5.0]), 120.0) == []


def test_history_resent_sequence_replaces_the_entry() -> None:
    history = SendHistory()
    history.on_sent(5, 0.0, 500)
    history.on_sent(5, 1.0, 800)
    assert history.in_flight_bytes() == 800
    assert history.on_feedback(_feedback(5, [3.0]), 2.0) == [PacketResult(5, 1.0, 800, 3.0)]


def test_history_unwraps_the_reference_time() -> None:
    history = SendHistory()
    for seq in range(4):
        history.on_sent(seq, float(seq), 100)
    top = ((1 << 23) - 1) * 64  # largest signed reference
    first = history.on_feedback(_feedback(0, [top + 10.0, top + 20.0], ref_ms=top), 4.0)
    # The next reference wrapped to the most negative value: 64 ms later, not 6 days earlier.
    bottom = -(1 << 23) * 64
    second = history.on_feedback(_feedback(2, [bottom + 5.0, None], ref_ms=bottom), 4.0)
    assert [r.arrival_ms for r in first] == [top + 10.0, top + 20.0]
    assert [r.arrival_ms for r in second] == [top + 64 + 5.0, None]


def test_history_before_anything_sent_and_bad_arguments() -> None:
    history = SendHistory()
    assert history.on_feedback(_feedback(0, [1.0]), 0.0) == []
    assert history.in_flight_bytes() == 0
    with pytest.raises(ValueError):
        SendHistory(max_age_ms=0)


# --- end to end: history -> (link) -> recorder -> bytes -> parse -> history --------------


@pytest.mark.parametrize("first", WRAP_STARTS)
def test_feedback_loop_end_to_end(first: int) -> None:
    history = SendHistory(first_sequence=first)
    recorder = TwccRecorder(0x5F5F)
    results: list[PacketResult] = []
    expected: dict[int, float | None] = {}
    now = 1_000_000.0
    for i in range(3000):
        now += 0.4
        seq = history.next_sequence()
        history.on_sent(seq, now, 1200, None)
        lost = i % 23 == 7
        # One-way delay grows then shrinks; receiver clock is offset by an arbitrary amount.
        arrival = now + 30.0 + (i % 200) * 0.05 - 77_000.0
        if not lost:
            recorder.on_packet(seq, arrival, 0x1234)
        expected[first + i] = None if lost else round(arrival * 4) / 4
        if i % 125 == 124:  # feedback every 50 ms
            for packet in recorder.build_feedback(arrival):
                twcc, rest = split_rtcp_compound(RR + packet)
                assert rest == RR
                results += history.on_feedback(parse_twcc(twcc[0]), now)
    for packet in recorder.build_feedback(now):
        results += history.on_feedback(parse_twcc(packet), now)
    assert [r.sequence for r in results] == [first + i for i in range(3000)]
    assert {r.sequence: r.arrival_ms for r in results} == expected
    assert all(r.size == 1200 for r in results)
    assert history.in_flight_bytes() == 0
