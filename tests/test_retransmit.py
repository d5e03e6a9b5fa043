"""The time-sized retransmission cache: what a NACK can still get, and how often."""

from __future__ import annotations

import pytest

from sfu.retransmit import CachedPacket, Miss, RetransmitCache


def fill(cache: RetransmitCache, first: int, count: int, start_ms: float, step_ms: float) -> None:
    for i in range(count):
        cache.store(
            (first + i) & 0xFFFF, False, i * 3000, bytes([i & 0xFF]), start_ms + i * step_ms
        )


def test_answers_a_nack_within_the_time_window_only() -> None:
    cache = RetransmitCache(keep_ms=1000)
    fill(cache, 100, 50, 0, 20)  # 50 packets over 980 ms
    assert isinstance(cache.resend(100, 990), CachedPacket)  # 990 ms old: still kept
    assert cache.resend(101, 1100) is Miss.UNAVAILABLE  # 1080 ms old: gone
    assert cache.expired >= 2 and cache.unknown == 1


def test_size_follows_time_not_count() -> None:
    slow, fast = RetransmitCache(keep_ms=1000), RetransmitCache(keep_ms=1000)
    fill(slow, 0, 100, 0, 20)  # audio-like: 50 packets a second
    fill(fast, 0, 1000, 0, 2)  # video-like: 500 packets a second
    assert len(slow) == 51 and len(fast) == 501


def test_resends_are_rate_limited_per_packet() -> None:
    cache = RetransmitCache(min_interval_ms=100)
    fill(cache, 7, 1, 0, 0)
    assert isinstance(cache.resend(7, 10), CachedPacket)
    assert cache.resend(7, 50) is Miss.THROTTLED
    assert isinstance(cache.resend(7, 110), CachedPacket)
    assert (cache.resends, cache.throttled) == (2, 1)


@pytest.mark.parametrize("first", [65530, 65535, 0, 1, 32767])
def test_sequence_wrap_around(first: int) -> None:
    cache = RetransmitCache()
    fill(cache, first, 20, 0, 1)
    for i in range(20):
        packet = cache.resend((first + i) & 0xFFFF, 30)
        assert isinstance(packet, CachedPacket) and packet.payload == bytes([i])
    assert cache.resend((first + 20) & 0xFFFF, 30) is Miss.UNAVAILABLE


def test_count_bound_and_reused_numbers() -> None:
    cache = RetransmitCache(keep_ms=10_000, max_packets=100)
    fill(cache, 0, 150, 0, 1)
    assert len(cache) == 100 and cache.resend(49, 200) is Miss.UNAVAILABLE
    assert isinstance(cache.resend(50, 200), CachedPacket)
    cache.store(50, True, 1, b"new", 300)
    packet = cache.resend(50, 1000)
    assert isinstance(packet, CachedPacket) and packet.payload == b"new"
    assert [seq for seq, _ in cache.recent(2)] == [149, 50]
    assert cache.recent(0) == []
    with pytest.raises(ValueError):
        RetransmitCache(max_packets=65536)


def test_a_hole_in_the_stream_is_held_until_the_publisher_resends_it() -> None:
    cache = RetransmitCache(keep_ms=1000)
    fill(cache, 200, 5, 0, 10)  # 200..204
    cache.store(206, False, 0, b"after the hole", 60)  # 205 never arrived from the publisher
    assert cache.resend(205, 70) is Miss.HELD
    assert cache.resend(205, 80) is Miss.HELD  # asked again: still held, counted again
    assert cache.held == 2 and cache.unknown == 0
    cache.store(205, False, 0, b"repaired upstream", 90)  # late: forwarded, answering the hold
    assert cache.held_answered == 1
    packet = cache.resend(205, 300)
    assert isinstance(packet, CachedPacket) and packet.payload == b"repaired upstream"
    # The late packet is the last stored but not the newest number: 207 is still beyond the end.
    assert cache.resend(207, 300) is Miss.UNAVAILABLE


def test_held_nacks_are_forgotten_with_the_cache_window() -> None:
    cache = RetransmitCache(keep_ms=500)
    fill(cache, 65534, 2, 0, 10)  # 65534, 65535
    cache.store(1, False, 0, b"x", 20)  # 0 is missing, across the wrap
    assert cache.resend(0, 30) is Miss.HELD
    cache.store(2, False, 0, b"y", 900)  # the old ones expire, the hold with them
    cache.store(0, False, 0, b"too late to count", 901)
    assert cache.held_answered == 0
    assert cache.resend(65534, 902) is Miss.UNAVAILABLE
