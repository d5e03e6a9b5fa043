"""The pacer spreads bursts at a multiple of the estimate and never delays steady media."""

from __future__ import annotations

import pytest

from sfu.pacer import BURST_MS, MAX_QUEUE_MS, MIN_BURST_BYTES, PACING_FACTOR, Pacer


def drain(pacer: Pacer, sizes: list[int], start_ms: float = 0.0) -> list[float]:
    """Send times of back-to-back packets when each waits as long as the pacer says."""
    now = start_ms
    times = []
    for size in sizes:
        now += pacer.delay_ms(now)
        pacer.on_sent(size, now)
        times.append(now)
    return times


def test_steady_media_below_the_rate_is_never_delayed() -> None:
    pacer = Pacer(2_500_000)
    for frame in range(100):  # 30 fps, 3 packets a frame, 1 Mbit/s
        now = frame * 33.3
        for _ in range(3):
            assert pacer.delay_ms(now) == 0
            pacer.on_sent(1390, now)


def test_a_keyframe_burst_is_spread_at_the_pacing_rate() -> None:
    pacer = Pacer(1_000_000)  # 125 bytes per ms
    times = drain(pacer, [1250] * 40)  # a 50 kB keyframe
    # The 20 ms allowance (2500 bytes) lets three packets leave at once; the other 37 follow
    # at 10 ms per 1250-byte packet.
    assert max(1_000_000 * BURST_MS / 8000, MIN_BURST_BYTES) == 2500
    assert times[:3] == [0, 0, 0]
    assert times[-1] == pytest.approx(370.0)
    gaps = [b - a for a, b in zip(times[5:], times[6:], strict=False)]
    assert all(g == pytest.approx(10.0) for g in gaps)


def test_rate_follows_the_estimate_and_drains_backlogs() -> None:
    pacer = Pacer(1)
    pacer.set_estimate(400_000)
    assert pacer.rate_bps == int(PACING_FACTOR * 400_000)
    pacer.set_estimate(100_000, queued_bytes=100_000)  # 800 kbit queued: drain in 0.5 s
    assert pacer.rate_bps == int(100_000 * 8000 / MAX_QUEUE_MS)


def test_time_going_backwards_does_not_pay_debt() -> None:
    pacer = Pacer(800_000)
    pacer.on_sent(50_000, 100.0)
    wait = pacer.delay_ms(100.0)
    assert wait > 0
    assert pacer.delay_ms(50.0) == pytest.approx(wait)
    with pytest.raises(ValueError):
        Pacer(0)


def test_counters() -> None:
    pacer = Pacer(1_000_000)
    pacer.on_sent(100, 0)
    pacer.on_sent(100, 1, delayed=True)
    assert (pacer.sent_immediately, pacer.sent_delayed) == (1, 1)


def test_never_paces_below_what_the_allocator_sends() -> None:
    # A REMB of 100 kbit/s while 500 kbit/s of video is allocated (a receiver estimate that
    # follows what arrives): pacing at 2.5 x REMB would queue and keep the REMB low.
    pacer = Pacer(1_000_000)
    pacer.set_estimate(100_000, allocated_bps=500_000)
    assert pacer.rate_bps == 1_250_000
    pacer.set_estimate(2_000_000, allocated_bps=500_000)
    assert pacer.rate_bps == 5_000_000
