"""sfu/rewriter.py: one continuous outgoing seq/ts (and VP8 PictureID) space."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.rewriter import MAX_DROPPED_RUNS, SeqTsRewriter, Vp8PictureIdRewriter

WRAP_STARTS = [0, 1, 65534, 65535]
TS_STARTS = [0, 1, 0xFFFFFFFF - 2999, 0xFFFFFFFF]
CLOCK = 90_000
TICKS_PER_PACKET = 3000  # 30 fps, one packet per frame keeps the arithmetic readable


def seq_at(start: int, i: int) -> int:
    return (start + i) & 0xFFFF


def ts_at(start: int, i: int) -> int:
    return (start + i * TICKS_PER_PACKET) & 0xFFFFFFFF


# --- one source ---------------------------------------------------------------------------


@pytest.mark.parametrize("out_seq", WRAP_STARTS)
@pytest.mark.parametrize("in_seq", WRAP_STARTS)
@pytest.mark.parametrize("out_ts", TS_STARTS)
@pytest.mark.parametrize("in_ts", TS_STARTS)
def test_in_order_sweep(out_seq: int, in_seq: int, out_ts: int, in_ts: int) -> None:
    r = SeqTsRewriter(CLOCK, out_seq, out_ts)
    for i in range(70_000 if (out_seq, in_seq, out_ts, in_ts) == (0, 65535, 0, 1) else 300):
        assert r.rewrite(seq_at(in_seq, i), ts_at(in_ts, i), i) == (
            seq_at(out_seq, i),
            ts_at(out_ts, i),
        )
    assert r.last_sequence_number == seq_at(out_seq, i)


@pytest.mark.parametrize("in_seq", WRAP_STARTS)
@pytest.mark.parametrize("out_seq", WRAP_STARTS)
def test_reordering_and_duplicates_map_consistently(in_seq: int, out_seq: int) -> None:
    r = SeqTsRewriter(CLOCK, out_seq, 0xFFFFFFFF)
    # Arrival order: index 0 first (segment start), then swaps, late arrivals, duplicates.
    order = [0, 2, 1, 3, 5, 4, 4, 6, 9, 7, 8, 8, 3, 10, 0, 12, 11]
    for i in order:
        got = r.rewrite(seq_at(in_seq, i), ts_at(0xFFFFFFFF - 10, i), 0)
        assert got == (seq_at(out_seq, i), ts_at(0xFFFFFFFF, i)), i
    assert r.last_sequence_number == seq_at(out_seq, 12)


@pytest.mark.parametrize("in_seq", WRAP_STARTS)
def test_packets_older_than_the_start_are_rejected(in_seq: int) -> None:
    r = SeqTsRewriter(CLOCK, 100, 0)
    assert r.rewrite(seq_at(in_seq, 10), 0, 0) == (100, 0)
    assert r.rewrite(seq_at(in_seq, 9), 0, 0) is None
    assert r.rewrite(seq_at(in_seq, 0), 0, 0) is None
    assert r.rewrite(seq_at(in_seq, 11), 0, 0) == (101, 0)


def test_constructor_validation_and_masking() -> None:
    with pytest.raises(ValueError):
        SeqTsRewriter(0, 0, 0)
    r = SeqTsRewriter(48_000, 65536 + 7, (1 << 32) + 9)
    assert r.rewrite(1, 1, 0) == (7, 9)


def test_state_before_first_packet() -> None:
    r = SeqTsRewriter(CLOCK, 0, 500)
    assert not r.started
    assert r.last_sequence_number == 0xFFFF  # initial - 1
    r.switch_source()  # nothing forwarded yet: initial values still apply
    r.resume()
    assert r.drop(7) is False
    assert r.rewrite(1000, 1, 0) == (0, 500)
    assert r.started
    assert r.timestamp_offset == 499


# --- switching sources ----------------------------------------------------------------


@pytest.mark.parametrize("out_seq", WRAP_STARTS)
@pytest.mark.parametrize("out_ts", TS_STARTS)
@pytest.mark.parametrize("second_seq", WRAP_STARTS)
@pytest.mark.parametrize("second_ts", TS_STARTS)
def test_switch_source_continues(
    out_seq: int, out_ts: int, second_seq: int, second_ts: int
) -> None:
    r = SeqTsRewriter(CLOCK, out_seq, out_ts)
    for i in range(5):
        r.rewrite(seq_at(40000, i), ts_at(12345, i), 1000 + 33 * i)
    last_ms = 1000 + 33 * 4
    r.switch_source()
    # 100 ms later: 9000 ticks at 90 kHz after the last forwarded timestamp.
    first = r.rewrite(second_seq, second_ts, last_ms + 100)
    assert first == (seq_at(out_seq, 5), ts_at(out_ts, 4) + 9000 & 0xFFFFFFFF)
    assert first is not None
    for i in range(1, 300):
        assert r.rewrite(seq_at(second_seq, i), ts_at(second_ts, i), 0) == (
            seq_at(first[0], i),
            ts_at(first[1], i),
        )
    # A packet of the new source from before its first one is too old.
    assert r.rewrite(seq_at(second_seq, -1), second_ts, 0) is None


@pytest.mark.parametrize(
    ("elapsed_ms", "ticks"), [(0, 1), (-5, 1), (1, 90), (20, 1800), (1000, 90_000)]
)
def test_switch_timestamp_advance_is_wall_clock_and_at_least_one(
    elapsed_ms: int, ticks: int
) -> None:
    r = SeqTsRewriter(CLOCK, 10, 0xFFFFFFFF)
    r.rewrite(5, 5, 10_000)
    r.switch_source()
    assert r.rewrite(700, 123, 10_000 + elapsed_ms) == (11, (0xFFFFFFFF + ticks) & 0xFFFFFFFF)


def test_switch_uses_time_of_newest_packet_not_of_late_ones() -> None:
    r = SeqTsRewriter(48_000, 0, 0)
    r.rewrite(10, 0, 1000)
    r.rewrite(12, 1920, 1040)
    r.rewrite(11, 960, 1500)  # late retransmission, must not move the reference
    r.switch_source()
    assert r.rewrite(50, 7, 1060) == (3, 1920 + 960)  # 20 ms after the newest at 48 kHz


def test_repeated_switches_each_continue() -> None:
    r = SeqTsRewriter(CLOCK, 65534, 0)
    expected_seq = 65534
    ts = 0
    now = 0
    for source in range(6):
        r.switch_source()
        r.switch_source()  # idempotent
        start = (source * 20000) & 0xFFFF
        for i in range(3):
            now += 10
            got = r.rewrite(seq_at(start, i), ts_at(source * 1000, i), now)
            assert got is not None
            assert got[0] == expected_seq
            if source and i == 0:
                assert got[1] == (ts + 900) & 0xFFFFFFFF  # 10 ms
            ts = got[1]
            expected_seq = (expected_seq + 1) & 0xFFFF


# --- drops ------------------------------------------------------------------------------


@pytest.mark.parametrize("in_seq", WRAP_STARTS)
@pytest.mark.parametrize("out_seq", WRAP_STARTS)
def test_drop_next_in_order_leaves_no_gap(in_seq: int, out_seq: int) -> None:
    r = SeqTsRewriter(CLOCK, out_seq, 0)
    dropped = {3, 4, 5, 9, 12}
    expected = out_seq
    for i in range(20):
        if i in dropped:
            assert r.drop(seq_at(in_seq, i)) is True
            continue
        got = r.rewrite(seq_at(in_seq, i), ts_at(0, i), i)
        assert got is not None and got[0] == expected, i
        expected = (expected + 1) & 0xFFFF


def test_drop_after_gap_reserves_numbers_for_missing_packets() -> None:
    r = SeqTsRewriter(CLOCK, 1000, 0)
    assert r.rewrite(10, 0, 0) == (1000, 0)
    assert r.drop(13) is True  # 11 and 12 are still on their way
    assert r.rewrite(14, 0, 0) == (1003, 0)
    assert r.rewrite(12, 0, 0) == (1002, 0)
    assert r.rewrite(11, 0, 0) == (1001, 0)
    assert r.rewrite(13, 0, 0) is None  # the dropped one can never be sent
    assert r.rewrite(15, 0, 0) == (1004, 0)


def test_drop_older_than_newest_leaves_the_gap() -> None:
    r = SeqTsRewriter(CLOCK, 0, 0)
    r.rewrite(100, 0, 0)
    r.rewrite(102, 0, 0)
    assert r.drop(101) is False
    assert r.drop(102) is False  # duplicate of something already sent
    assert r.drop(99) is False  # before the start
    assert r.rewrite(103, 0, 0) == (3, 0)


def test_drop_then_late_packets_between_drop_runs() -> None:
    r = SeqTsRewriter(CLOCK, 0, 0)
    r.rewrite(0, 0, 0)
    for s in (2, 3, 6, 9, 10, 11):  # 1, 4, 5, 7, 8 missing for now
        assert r.drop(s) is True
    assert r.rewrite(12, 0, 0) == (6, 0)
    for s, out in ((8, 5), (7, 4), (5, 3), (4, 2), (1, 1)):
        assert r.rewrite(s, 0, 0) == (out, 0), s
    for s in (2, 3, 6, 9, 10, 11):
        assert r.rewrite(s, 0, 0) is None


def test_drops_then_switch_continue_after_reserved_numbers() -> None:
    r = SeqTsRewriter(CLOCK, 0, 0)
    r.rewrite(0, 0, 0)
    r.drop(1)
    r.drop(3)  # 2 missing: its number (1) stays reserved
    r.switch_source()
    assert r.rewrite(500, 0, 0) == (2, 1)


def test_many_drop_runs_forget_the_oldest() -> None:
    r = SeqTsRewriter(CLOCK, 0, 0)
    r.rewrite(0, 0, 0)
    seq = 0
    out = 0
    for _ in range(MAX_DROPPED_RUNS + 10):
        seq += 1
        r.drop(seq)
        seq += 1
        out += 1
        assert r.rewrite(seq, 0, 0) == (out & 0xFFFF, 0)
    # Packets far back are now too old; recent late ones are fine (duplicates here).
    assert r.rewrite(2, 0, 0) is None
    assert r.rewrite(seq, 0, 0) == (out & 0xFFFF, 0)
    assert r.rewrite(seq - 2, 0, 0) == ((out - 1) & 0xFFFF, 0)


# --- resume after a pause -------------------------------------------------------------


@pytest.mark.parametrize("in_ts", TS_STARTS)
def test_resume_keeps_timestamps_and_closes_seq_gap(in_ts: int) -> None:
    r = SeqTsRewriter(CLOCK, 65535, 0xFFFFFFFF)
    for i in range(3):
        r.rewrite(seq_at(65534, i), ts_at(in_ts, i), i)
    offset = r.timestamp_offset
    r.resume()
    r.resume()
    # 500 packets / frames skipped while paused.
    got = r.rewrite(seq_at(65534, 503), ts_at(in_ts, 503), 0)
    assert got == (seq_at(65535, 3), ts_at(0xFFFFFFFF, 503))
    assert r.timestamp_offset == offset
    assert r.rewrite(seq_at(65534, 504), ts_at(in_ts, 504), 0) == (
        seq_at(65535, 4),
        ts_at(0xFFFFFFFF, 504),
    )
    assert r.rewrite(seq_at(65534, 2), 0, 0) is None  # from before the pause


def test_resume_falls_back_to_wall_clock_if_timestamps_went_back() -> None:
    r = SeqTsRewriter(CLOCK, 0, 0)
    r.rewrite(0, 90_000, 1000)
    r.resume()
    assert r.rewrite(1, 1000, 1100) == (1, 9000)


def test_switch_after_resume_wins() -> None:
    r = SeqTsRewriter(CLOCK, 0, 0)
    r.rewrite(0, 90_000, 1000)
    r.resume()
    r.switch_source()
    r.resume()  # must not turn the pending switch back into a same-source resume
    assert r.rewrite(7, 90_500, 1010) == (1, 900)


# --- model-based property ---------------------------------------------------------------

op = st.one_of(
    st.tuples(st.just("send"), st.integers(1, 3)),  # next packet(s) in order, forwarded
    st.tuples(st.just("drop"), st.integers(1, 3)),  # next packet(s) in order, padding
    st.tuples(st.just("switch"), st.integers(0, 0xFFFF)),
    st.tuples(st.just("resume"), st.integers(0, 100)),
    st.tuples(st.just("late"), st.integers(1, 5)),  # re-deliver an earlier packet
)


@settings(max_examples=300)
@given(
    out_seq=st.sampled_from(WRAP_STARTS),
    out_ts=st.sampled_from(TS_STARTS),
    in_seq=st.integers(0, 0xFFFF),
    ops=st.lists(op, max_size=60),
)
def test_outgoing_stream_is_gapless_and_unique(
    out_seq: int, out_ts: int, in_seq: int, ops: list[tuple[str, int]]
) -> None:
    r = SeqTsRewriter(CLOCK, out_seq, out_ts)
    seq = in_seq
    ts = 0
    now = 0
    sent: dict[int, tuple[int, int]] = {}  # incoming unwrapped position -> outgoing (seq, ts)
    pos = 0
    source_start = 0
    expected_next = out_seq
    for kind, n in ops:
        now += 20
        if kind == "send":
            for _ in range(n):
                got = r.rewrite(seq & 0xFFFF, ts & 0xFFFFFFFF, now)
                assert got is not None
                assert got[0] == expected_next
                sent[pos] = got
                expected_next = (expected_next + 1) & 0xFFFF
                seq, ts, pos = seq + 1, ts + 1800, pos + 1
        elif kind == "drop":
            for _ in range(n):
                r.drop(seq & 0xFFFF)
                seq, ts, pos = seq + 1, ts + 1800, pos + 1
        elif kind == "switch":
            r.switch_source()
            seq, ts = n, n * 7919
            pos += 100_000
            source_start = pos
        elif kind == "resume":
            r.resume()
            seq, ts, pos = seq + n, ts + n * 1800, pos + n
            source_start = pos
        elif kind == "late" and sent:
            target = max(sent) - n
            if target >= source_start:
                delta = pos - target
                got = r.rewrite((seq - delta) & 0xFFFF, (ts - delta * 1800) & 0xFFFFFFFF, now)
                assert got == sent.get(target)  # same numbers again, or None if never sent
    outgoing = [s for s, _ in sent.values()]
    assert len(set(outgoing)) == len(outgoing)


# --- VP8 PictureID / TL0PICIDX --------------------------------------------------------


@pytest.mark.parametrize("start", [0, 1, 0x7FFE, 0x7FFF])
def test_picture_id_first_source_unchanged_and_wraps(start: int) -> None:
    r = Vp8PictureIdRewriter()
    for i in range(300):
        assert r.rewrite((start + i) & 0x7FFF, (250 + i) & 0xFF) == (
            (start + i) & 0x7FFF,
            (250 + i) & 0xFF,
        )


@pytest.mark.parametrize("first_end", [0, 0x7FFF, 100])
@pytest.mark.parametrize("second_start", [0, 1, 0x7FFF, 5000])
def test_picture_id_switch_continues(first_end: int, second_start: int) -> None:
    r = Vp8PictureIdRewriter()
    r.rewrite((first_end - 1) & 0x7FFF, 254)
    r.rewrite(first_end, 255)
    r.switch_source()
    assert r.rewrite(second_start, 17) == ((first_end + 1) & 0x7FFF, 0)
    assert r.rewrite(second_start, 17) == ((first_end + 1) & 0x7FFF, 0)  # same picture
    assert r.rewrite((second_start + 1) & 0x7FFF, 18) == ((first_end + 2) & 0x7FFF, 1)
    # Reordered older picture of the new source maps back consistently.
    assert r.rewrite(second_start, 17) == ((first_end + 1) & 0x7FFF, 0)


def test_picture_id_switch_uses_highest_not_latest() -> None:
    r = Vp8PictureIdRewriter()
    r.rewrite(10, 1)
    r.rewrite(12, 3)
    r.rewrite(11, 2)  # late
    r.switch_source()
    assert r.rewrite(9000, 100) == (13, 4)


def test_picture_id_none_passes_through_and_fields_are_independent() -> None:
    r = Vp8PictureIdRewriter()
    assert r.rewrite(None, None) == (None, None)
    assert r.rewrite(5, None) == (5, None)
    r.switch_source()
    assert r.rewrite(None, 40) == (None, 40)  # first TL0PICIDX ever: kept
    assert r.rewrite(70, 41) == (6, 41)
    r.switch_source()
    assert r.rewrite(None, 3) == (None, 42)
    assert r.rewrite(1, 3) == (7, 42)


@pytest.mark.parametrize("start", [0, 126, 127])
def test_seven_bit_picture_ids_unwrap_at_128(start: int) -> None:
    r = Vp8PictureIdRewriter()
    outs = []
    for i in range(300):
        pic, _ = r.rewrite((start + i) & 0x7F, None, 7)
        assert pic is not None
        outs.append(pic)
    assert all((b - a) & 0x7FFF == 1 for a, b in zip(outs, outs[1:], strict=False))
    assert outs[0] == start


def test_picture_id_width_change_continues() -> None:
    r = Vp8PictureIdRewriter()
    assert r.rewrite(0x7FFF, None, 15) == (0x7FFF, None)
    assert r.rewrite(5, None, 7) == (0, None)
    assert r.rewrite(6, None, 7) == (1, None)
