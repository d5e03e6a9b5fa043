"""NACK timing on the publisher leg: detect, ask, ask again once per RTT, give up."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.nack import MAX_GAP, NackPoll, NackScheduler


def feed(scheduler: NackScheduler, seqs: list[int], now_ms: float) -> NackPoll:
    for seq in seqs:
        scheduler.on_packet(seq, now_ms)
    return scheduler.poll(now_ms)


def test_in_order_stream_asks_for_nothing() -> None:
    s = NackScheduler()
    for i in range(500):
        s.on_packet(i, i * 10)
        assert s.poll(i * 10) == NackPoll()
    assert s.stats()["missingDetected"] == 0


def test_a_gap_is_nacked_at_once_and_again_after_a_round_trip() -> None:
    s = NackScheduler(initial_rtt_ms=100)
    assert feed(s, [10, 11, 14], 0).nack == (12, 13)
    assert s.poll(50) == NackPoll()  # less than a round trip since the request
    assert s.poll(111).nack == (12, 13)  # 1.1 x RTT later: asked again
    s.on_packet(12, 150)  # repaired 39 ms after the retry: RTT sample pulls the estimate down
    assert s.recovered == 1 and s.rtt_ms < 100
    assert s.poll(300).nack == (13,)


def test_gives_up_after_max_retries_and_reports_loss() -> None:
    s = NackScheduler(initial_rtt_ms=20, max_retries=3, max_age_ms=10_000)
    feed(s, [0, 2], 0)
    polls = [s.poll(t) for t in range(5, 400, 5)]
    assert sum(1 for p in polls if p.nack) == 2  # the first request went out in feed()
    assert [p.lost for p in polls if p.lost] == [(1,)]
    assert s.lost == 1 and s.outstanding == 0 and s.nacks_sent == 3


def test_gives_up_on_packets_too_old_to_matter() -> None:
    s = NackScheduler(initial_rtt_ms=400, max_age_ms=1000)
    feed(s, [0, 2], 0)
    assert s.poll(500).nack == (1,)
    assert s.poll(1001).lost == (1,)


def test_reordering_recovers_without_counting_loss() -> None:
    s = NackScheduler()
    feed(s, [0, 1, 3], 0)
    s.on_packet(2, 5)  # simply reordered
    assert s.poll(500) == NackPoll() and s.recovered == 1 and s.lost == 0


def test_duplicates_are_counted_not_nacked() -> None:
    s = NackScheduler()
    feed(s, [0, 1, 2, 2, 1], 0)
    assert s.duplicates == 2 and s.outstanding == 0


@pytest.mark.parametrize("first", [65530, 65535, 0])
def test_wrap_around(first: int) -> None:
    s = NackScheduler()
    seqs = [(first + i) & 0xFFFF for i in range(12) if i not in (4, 5)]
    assert feed(s, seqs, 0).nack == ((first + 4) & 0xFFFF, (first + 5) & 0xFFFF)


def test_a_big_jump_is_a_new_stream_not_loss_to_nack() -> None:
    s = NackScheduler()
    feed(s, [0, 1, 3], 0)
    poll = feed(s, [3 + MAX_GAP + 5], 10)
    assert poll.nack == () and s.jumps == 1 and s.outstanding == 0 and s.lost == 1


def test_rtt_estimate_follows_repairs() -> None:
    s = NackScheduler(initial_rtt_ms=100)
    seq = 0
    for round_ in range(40):
        t = round_ * 1000.0
        feed(s, [seq, seq + 2], t)  # seq + 1 missing, NACKed at t
        s.on_packet(seq + 1, t + 30)  # repaired 30 ms later
        seq += 3
    assert 29 <= s.rtt_ms <= 35


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.floats(0, 50)), max_size=300))
def test_garbage_sequences_never_break_the_bounds(steps: list[tuple[int, float]]) -> None:
    s = NackScheduler()
    now = 0.0
    for seq, dt in steps:
        now += dt
        s.on_packet(seq, now)
        poll = s.poll(now)
        assert all(0 <= x <= 0xFFFF for x in poll.nack + poll.lost)
        assert s.outstanding <= 2000
    assert s.poll(now + 10_000).nack == ()  # everything old is given up, nothing re-asked
