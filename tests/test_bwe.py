"""Downlink bandwidth estimation (sfu.bwe) in simulated time, mostly over tools.link_sim."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.bwe import (
    AckedBitrate,
    AimdRateControl,
    BandwidthUsage,
    DownlinkEstimator,
    LossBasedEstimator,
    ProbeCluster,
    QueueDelayTracker,
    RateControlState,
    TrendlineEstimator,
    measure_probe,
)
from sfu.twcc import PacketResult
from tools.link_sim import BottleneckLink, Sample, Simulation, first_time, simulate

ROOT = Path(__file__).resolve().parent.parent
NORMAL, OVERUSING, UNDERUSING = (
    BandwidthUsage.NORMAL,
    BandwidthUsage.OVERUSING,
    BandwidthUsage.UNDERUSING,
)


def constant(bps: int) -> Callable[[float], int]:
    return lambda _t: bps


# --------------------------------------------------------------------------- trendline


def run_trendline(
    delay_ms: Callable[[int], float], groups: int, spacing_ms: float = 10.0
) -> tuple[TrendlineEstimator, set[BandwidthUsage]]:
    """One packet every `spacing_ms`; packet i is delayed by delay_ms(i) (receiver offset 5 s)."""
    trendline = TrendlineEstimator()
    seen = set()
    for i in range(groups):
        send = i * spacing_ms
        seen.add(trendline.on_packet(send, 5000 + send + delay_ms(i)))
    return trendline, seen


@pytest.mark.parametrize(
    ("name", "delay_ms", "groups", "expected"),
    [
        ("flat", lambda i: 20.0, 200, NORMAL),
        ("slow drift, 0.05 ms per group", lambda i: 20 + 0.05 * i, 300, NORMAL),
        ("rising 1 ms per 10 ms", lambda i: 20 + 1.0 * i, 60, OVERUSING),
        ("rising 0.3 ms per 10 ms", lambda i: 20 + 0.3 * i, 100, OVERUSING),
        ("falling 0.5 ms per 10 ms", lambda i: 300 - 0.5 * i, 60, UNDERUSING),
        ("falling 2 ms per 10 ms", lambda i: 300 - 2.0 * i, 60, UNDERUSING),
        ("flat, then rising", lambda i: 20 + max(0, i - 100) * 2.0, 140, OVERUSING),
        ("rising, then flat for long", lambda i: 20 + min(i, 60) * 1.0, 400, NORMAL),
    ],
)
def test_trendline_verdicts(
    name: str, delay_ms: Callable[[int], float], groups: int, expected: BandwidthUsage
) -> None:
    trendline, _ = run_trendline(delay_ms, groups)
    assert trendline.usage is expected, name


def test_flat_delay_never_leaves_normal_and_threshold_shrinks_to_its_floor() -> None:
    trendline, seen = run_trendline(lambda i: 20.0, 500)
    assert seen == {NORMAL}
    assert trendline.threshold == TrendlineEstimator.MIN_THRESHOLD


def test_random_jitter_is_not_overuse() -> None:
    rng = random.Random(5)
    jitter = [rng.uniform(0, 5) for _ in range(3000)]
    _, seen = run_trendline(lambda i: 20 + jitter[i], 3000)
    assert OVERUSING not in seen


def test_one_late_packet_is_not_overuse() -> None:
    _, seen = run_trendline(lambda i: 60.0 if i == 150 else 20.0, 300)
    assert seen == {NORMAL}


def test_overuse_needs_the_trend_above_threshold_more_than_once() -> None:
    # 50 ms between groups: one delta above the threshold already spans > 10 ms, yet a single
    # sample is not enough evidence; the second one in a row (trend still rising) is.
    trendline = TrendlineEstimator()
    verdicts = []
    for i in range(80):
        threshold = trendline.threshold
        send = i * 50.0
        usage = trendline.on_packet(send, 3000 + send + max(0, i - 40) * 5.0)
        verdicts.append((trendline.trend > threshold, usage))
    first = next(i for i, (above, _) in enumerate(verdicts) if above)
    assert verdicts[first][1] is NORMAL
    assert verdicts[first + 1] == (True, OVERUSING)


def test_sustained_trend_raises_the_threshold() -> None:
    # The threshold follows a persistent trend (gcc-02 §5.4), so a long-lived constant
    # slope (e.g. a competing flow) does not keep the sender in over-use forever.
    trendline, _ = run_trendline(lambda i: 20 + 1.0 * i, 300)
    assert trendline.threshold > 18


def test_packets_sent_in_one_burst_form_one_group() -> None:
    # Frames of 5 packets sent in the same millisecond, serialised 1 ms apart by the link:
    # the spread is transmission time, not queue growth.
    trendline = TrendlineEstimator()
    seen = set()
    for frame in range(300):
        send = frame * 33.0
        for k in range(5):
            seen.add(trendline.on_packet(send, 7000 + send + 20 + k * 1.0))
    assert seen == {NORMAL}


def test_arrival_clock_jump_is_not_overuse() -> None:
    _, seen = run_trendline(lambda i: 20.0 if i < 150 else 10_020.0, 300)
    assert seen == {NORMAL}


def test_update_skips_lost_packets_and_sorts_by_arrival() -> None:
    results = [
        PacketResult(i, i * 10.0, 1200, None if i % 7 == 3 else 900 + i * 11.0) for i in range(80)
    ]
    trendline = TrendlineEstimator()
    assert trendline.update(reversed(results)) is OVERUSING


# --------------------------------------------------------------------------- AIMD


def test_aimd_increases_about_8_percent_per_second_far_from_convergence() -> None:
    aimd = AimdRateControl(1_000_000, 30_000, 20_000_000)
    for step in range(11):
        aimd.update(NORMAL, 1_000_000, step * 100.0)
    assert aimd.state is RateControlState.INCREASE
    assert aimd.rate_bps == pytest.approx(1_080_000, rel=0.01)


def test_aimd_increase_is_capped_by_acked_throughput_but_never_pulled_down() -> None:
    aimd = AimdRateControl(150_000, 30_000, 20_000_000)
    for step in range(100):
        aimd.update(NORMAL, 100_000, step * 100.0)
    assert aimd.rate_bps == 160_000  # 1.5 x 100 kbps + 10 kbps
    high = AimdRateControl(500_000, 30_000, 20_000_000)
    for step in range(10):
        high.update(NORMAL, 100_000, step * 100.0)
    assert high.rate_bps == 500_000


def test_aimd_overuse_decreases_to_085_of_acked_then_holds() -> None:
    aimd = AimdRateControl(2_000_000, 30_000, 20_000_000)
    assert aimd.update(OVERUSING, 1_000_000, 0.0) == 850_000
    assert aimd.state is RateControlState.HOLD
    # Still over-using within a round trip: the queue seen is the old one, no second cut.
    assert aimd.update(OVERUSING, 900_000, 50.0) == 850_000
    # A round trip later, with throughput lower: cut again.
    assert aimd.update(OVERUSING, 900_000, 300.0) == 765_000
    assert aimd.decreases == 2


def test_aimd_collapsed_throughput_cuts_again_at_once() -> None:
    aimd = AimdRateControl(2_000_000, 30_000, 20_000_000)
    aimd.update(OVERUSING, 1_000_000, 0.0)
    assert aimd.update(OVERUSING, 300_000, 20.0) == 255_000


def test_aimd_decrease_never_raises() -> None:
    aimd = AimdRateControl(500_000, 30_000, 20_000_000)
    assert aimd.update(OVERUSING, 1_000_000, 0.0) == 500_000


def test_aimd_underuse_holds() -> None:
    aimd = AimdRateControl(800_000, 30_000, 20_000_000)
    for step in range(20):
        assert aimd.update(UNDERUSING, 800_000, step * 100.0) == 800_000
    assert aimd.state is RateControlState.HOLD
    aimd.update(NORMAL, 800_000, 2100.0)
    assert aimd.state is RateControlState.INCREASE


def test_aimd_near_known_capacity_increases_additively() -> None:
    aimd = AimdRateControl(1_000_000, 30_000, 20_000_000)
    aimd.update(OVERUSING, 1_000_000, 0.0)  # capacity learnt: ~1 Mbps
    assert aimd.link_capacity_bps == 1_000_000
    start = aimd.rate_bps
    for step in range(1, 11):
        aimd.update(NORMAL, 1_000_000, step * 100.0)
    gained = aimd.rate_bps - start
    # About one ~1 kB packet per response time (rtt 200 ms + 100 ms): ~28 kbps in a second,
    # far below the 68 kbps that 8 % would give.
    assert 20_000 < gained < 40_000


def test_aimd_clamps_to_min_and_max() -> None:
    aimd = AimdRateControl(100_000, 50_000, 120_000)
    aimd.update(OVERUSING, 1_000, 0.0)
    assert aimd.rate_bps == 50_000
    aimd.set_estimate(10_000_000, 100.0)
    assert aimd.rate_bps == 120_000


# --------------------------------------------------------------------------- loss


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (0.0, 1_081_000),  # < 2 %: 8 % up (+1 kbps)
        (0.019, 1_081_000),
        (0.02, 1_000_000),  # 2-10 %: hold
        (0.05, 1_000_000),
        (0.10, 1_000_000),
        (0.15, 925_000),  # > 10 %: x (1 - loss / 2)
        (0.20, 900_000),
        (0.50, 750_000),
    ],
)
def test_loss_table(loss: float, expected: int) -> None:
    estimator = LossBasedEstimator(1_000_000, 30_000, 20_000_000)
    assert estimator.update(loss, 0.0) == expected


def test_loss_decreases_at_most_once_per_interval() -> None:
    estimator = LossBasedEstimator(1_000_000, 30_000, 20_000_000)
    estimator.update(0.2, 0.0)
    assert estimator.update(0.2, 100.0) == 900_000
    assert estimator.update(0.2, 600.0) == 810_000  # 300 ms + rtt (200 ms) later


def test_loss_free_growth_is_8_percent_per_second_not_per_report() -> None:
    estimator = LossBasedEstimator(1_000_000, 30_000, 20_000_000)
    for step in range(21):
        estimator.update(0.0, step * 50.0)  # 20 reports in one second
    assert 1_080_000 <= estimator.rate_bps <= 1_170_000


def test_loss_based_never_exceeds_its_limit() -> None:
    estimator = LossBasedEstimator(1_000_000, 30_000, 20_000_000)
    assert estimator.limit(700_000) == 700_000
    assert estimator.update(0.0, 100.0) < 1_000_000  # grows from the limited value


# --------------------------------------------------------------------------- acked bitrate


def test_acked_bitrate_measures_a_constant_rate_and_follows_changes() -> None:
    acked = AckedBitrate(window_ms=500)
    assert acked.bitrate_bps is None
    for i in range(100):  # 1200 B every 10 ms = 960 kbps, for 1 s
        acked.on_packet(1000 + i * 10.0, 1200)
    assert acked.bitrate_bps == pytest.approx(960_000, rel=0.03)
    for i in range(100):  # then every 20 ms = 480 kbps
        acked.on_packet(2000 + i * 20.0, 1200)
    assert acked.bitrate_bps == pytest.approx(480_000, rel=0.05)


def test_acked_bitrate_needs_a_minimum_span_and_ignores_lost() -> None:
    acked = AckedBitrate(window_ms=500, min_span_ms=100)
    acked.update([PacketResult(i, i * 10.0, 1200, 50 + i * 10.0) for i in range(10)])
    assert acked.bitrate_bps is None  # 90 ms of arrivals
    acked.update([PacketResult(10 + i, 100 + i * 10.0, 1200, None) for i in range(10)])
    assert acked.bitrate_bps is None
    acked.update([PacketResult(20, 200.0, 1200, 250.0)])
    assert acked.bitrate_bps is not None


# --------------------------------------------------------------------------- probe measurement


def cluster_results(
    count: int, send_gap_ms: float, arrival_gap_ms: float, lost: Sequence[int] = ()
) -> list[PacketResult]:
    return [
        PacketResult(
            100 + i,
            1000 + i * send_gap_ms,
            1000,
            None if i in lost else 9000 + i * arrival_gap_ms,
            7,
        )
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("results", "send_bps", "receive_bps"),
    [
        (cluster_results(11, 4.0, 4.0), 2_000_000, 2_000_000),  # the path took it all
        (cluster_results(11, 4.0, 8.0), 2_000_000, 1_000_000),  # the path's capacity is 1 Mbps
        (cluster_results(11, 4.0, 3.0), 2_000_000, 8000 * 10_000 / 30),  # squeezed, but < 2x
    ],
)
def test_probe_measurement(
    results: list[PacketResult], send_bps: float, receive_bps: float
) -> None:
    measured = measure_probe(results, 4)
    assert measured is not None
    assert measured.send_bps == pytest.approx(send_bps)
    assert measured.receive_bps == pytest.approx(receive_bps)


@pytest.mark.parametrize(
    ("name", "results"),
    [
        ("too few received", cluster_results(11, 4.0, 4.0, lost=range(2, 11))),
        ("arrived over twice as fast as sent", cluster_results(11, 4.0, 1.0)),
        ("all sent at once", cluster_results(11, 0.0, 4.0)),
        ("spread over more than a second", cluster_results(11, 150.0, 150.0)),
        ("one packet", cluster_results(1, 4.0, 4.0)),
    ],
)
def test_probe_measurement_sanity_checks(name: str, results: list[PacketResult]) -> None:
    assert measure_probe(results, 4) is None, name


# --------------------------------------------------------------------------- estimator: probing


def deliver_probe(
    estimator: DownlinkEstimator,
    cluster: ProbeCluster,
    start_ms: float,
    capacity_bps: float,
    media_bps: float = 300_000,
    first_seq: int = 0,
) -> float:
    """Send media + the cluster's padding through a link of `capacity_bps`, report it all,
    followed by a media packet sent after the cluster (which closes it). Returns the time."""
    packets: list[tuple[float, int | None]] = []
    t = 0.0
    media_credit = padding_credit = 0.0
    while t < cluster.duration_ms:
        media_credit += media_bps * 5 / 8000
        padding_credit += cluster.rate_bps * 5 / 8000
        while media_credit >= 1000:
            media_credit -= 1000
            packets.append((start_ms + t, None))
        while padding_credit >= 1000:
            padding_credit -= 1000
            packets.append((start_ms + t, cluster.cluster_id))
        t += 5
    packets.append((start_ms + cluster.duration_ms + 100, None))
    busy = 0.0
    results = []
    for i, (send, cid) in enumerate(packets):
        busy = max(busy, send) + 1000 * 8000 / capacity_bps
        results.append(PacketResult(first_seq + i, send, 1000, busy + 40, cid))
    now = busy + 60
    estimator.on_packet_results(results, now)
    return now


def test_probe_when_wanted_exceeds_estimate_and_no_probe_in_flight() -> None:
    estimator = DownlinkEstimator(initial_bps=300_000)
    assert estimator.maybe_probe(0.0, 300_000) is None  # the estimate covers the demand
    cluster = estimator.maybe_probe(0.0, 2_000_000)
    assert cluster is not None
    assert cluster.duration_ms == 300 and cluster.min_packets >= 5
    assert cluster.rate_bps == 600_000  # nothing acked yet: padding = min(wanted, 2 x 300k)
    assert estimator.maybe_probe(10.0, 2_000_000) is None  # one at a time
    assert estimator.probes_sent == 1


def test_successful_probe_raises_estimate_to_095_of_probed_rate() -> None:
    estimator = DownlinkEstimator(initial_bps=300_000)
    cluster = estimator.maybe_probe(0.0, 2_000_000)
    assert cluster is not None
    now = deliver_probe(estimator, cluster, 10.0, capacity_bps=10_000_000, media_bps=0)
    assert not estimator.probing
    assert estimator.last_probe_bps == pytest.approx(cluster.rate_bps, rel=0.05)
    assert estimator.estimate_bps == pytest.approx(0.95 * estimator.last_probe_bps, rel=0.01)
    assert estimator.probes_succeeded == 1
    # The path took it all: the next, larger probe may follow at once.
    again = estimator.maybe_probe(now, 2_000_000)
    assert again is not None and again.cluster_id == cluster.cluster_id + 1


def test_probe_measures_media_and_padding_together() -> None:
    estimator = DownlinkEstimator(initial_bps=300_000)
    cluster = estimator.maybe_probe(0.0, 2_000_000)
    assert cluster is not None
    deliver_probe(estimator, cluster, 10.0, capacity_bps=10_000_000, media_bps=300_000)
    assert estimator.last_probe_bps == pytest.approx(cluster.rate_bps + 300_000, rel=0.05)


def test_probe_padding_tops_up_the_media_to_the_target() -> None:
    estimator = DownlinkEstimator(initial_bps=300_000)
    cluster = estimator.maybe_probe(0.0, 2_000_000)
    assert cluster is not None
    now = deliver_probe(estimator, cluster, 10.0, capacity_bps=10_000_000, media_bps=300_000)
    again = estimator.maybe_probe(now, 2_000_000)
    assert again is not None
    target = min(1.1 * 2_000_000, 2 * estimator.estimate_bps)
    # Padding + the ~300 kbps of media (the padding of the last probe does not count as media).
    assert again.rate_bps == pytest.approx(target - 300_000, rel=0.05)


def test_probe_into_a_full_path_backs_off() -> None:
    estimator = DownlinkEstimator(initial_bps=300_000)
    cluster = estimator.maybe_probe(0.0, 2_000_000)
    assert cluster is not None
    now = deliver_probe(estimator, cluster, 10.0, capacity_bps=320_000)
    assert estimator.last_probe_bps == pytest.approx(320_000, rel=0.05)
    assert estimator.estimate_bps <= 320_000
    assert estimator.maybe_probe(now + 1000, 2_000_000) is None  # backoff
    # The queue the probe built drains; the delay settles.
    drained = [PacketResult(1000 + i, now + i * 10, 1000, now + 5000 + i * 10) for i in range(150)]
    estimator.on_packet_results(drained, now + 1500)
    assert estimator.usage is not OVERUSING
    assert estimator.maybe_probe(now + 1900, 2_000_000) is None
    assert estimator.maybe_probe(now + 2100, 2_000_000) is not None


def test_probe_without_any_feedback_times_out_and_backs_off() -> None:
    estimator = DownlinkEstimator()
    cluster = estimator.maybe_probe(0.0, 2_000_000)
    assert cluster is not None
    assert estimator.maybe_probe(1000.0, 2_000_000) is None  # still in flight
    assert estimator.maybe_probe(1900.0, 2_000_000) is None  # timed out, backing off
    assert not estimator.probing
    assert estimator.maybe_probe(3900.0, 2_000_000) is not None
    assert estimator.probes_succeeded == 0


def test_no_probe_while_losing_packets_even_after_one_clean_report() -> None:
    estimator = DownlinkEstimator(initial_bps=1_000_000)
    seq = 0
    for report in range(10):
        results = []
        for _ in range(25):
            # 40 %, then one clean report (loss up to the learnt inherent level, at most
            # 10 %, does not block probes: this is 30 points above it)
            lost = report < 9 and seq % 5 in (0, 2)
            results.append(PacketResult(seq, seq * 10.0, 1200, None if lost else 70 + seq * 10.0))
            seq += 1
        estimator.on_packet_results(results, seq * 10.0 + 100)
    assert estimator.loss_fraction == 0.0
    assert estimator.usage is NORMAL
    assert estimator.estimate_bps < 1_000_000
    assert estimator.maybe_probe(seq * 10.0 + 100, 5_000_000) is None


def test_no_probe_while_overusing() -> None:
    estimator = DownlinkEstimator(initial_bps=1_000_000)
    # Feedback showing a steadily growing queue.
    results = [PacketResult(i, i * 10.0, 1200, 500 + i * 12.0) for i in range(100)]
    estimator.on_packet_results(results, 1100.0)
    assert estimator.usage is OVERUSING
    assert estimator.maybe_probe(1100.0, 5_000_000) is None


# --------------------------------------------------------------------------- estimator: links


def tail(samples: Sequence[Sample], from_ms: float) -> list[float]:
    return [s.estimate_bps / s.capacity_bps for s in samples if s.t_ms >= from_ms]


@pytest.mark.parametrize("capacity", [300_000, 1_000_000, 3_000_000])
def test_estimate_converges_to_link_capacity(capacity: int) -> None:
    # The application wants twice what the path carries.
    estimator = DownlinkEstimator()
    link = BottleneckLink(capacity, queue_ms=300, base_delay_ms=20)
    samples = simulate(estimator, link, 25_000, constant(2 * capacity))
    ratios = tail(samples, 10_000)
    assert 0.7 <= min(ratios) and max(ratios) <= 1.3
    assert 0.8 <= sum(ratios) / len(ratios) <= 1.1


@pytest.mark.parametrize("capacity", [500_000, 2_000_000])
def test_convergence_with_jitter_and_bursty_frames(capacity: int) -> None:
    estimator = DownlinkEstimator()
    link = BottleneckLink(capacity, jitter_ms=5, seed=11)
    sim = Simulation(estimator, link, constant(2 * capacity), frame_interval_ms=33.3)
    ratios = tail(sim.run_until(25_000), 10_000)
    assert 0.7 <= min(ratios) and max(ratios) <= 1.3


def test_capacity_drop_is_detected_within_a_few_seconds() -> None:
    estimator = DownlinkEstimator()
    samples = simulate(
        estimator,
        BottleneckLink(3_000_000),
        20_000,
        constant(6_000_000),
        capacity_schedule=[(10_000, 300_000)],
    )
    assert min(tail(samples, 9_000)[:20]) > 0.7  # converged on 3 Mbps before the drop
    down = first_time(samples, 10_000, lambda s: s.estimate_bps <= 1.3 * 300_000)
    assert down is not None and down - 10_000 <= 3_000
    assert max(tail(samples, 15_000)) <= 1.3


def lift_recovery_ms(probing: bool) -> float | None:
    estimator = DownlinkEstimator()
    samples = simulate(
        estimator,
        BottleneckLink(300_000),
        40_000,
        constant(4_000_000),
        capacity_schedule=[(10_000, 3_000_000)],
        probing=probing,
    )
    up = first_time(samples, 10_000, lambda s: s.estimate_bps >= 0.8 * 3_000_000)
    return None if up is None else up - 10_000


def test_probing_recovers_a_lifted_capacity_much_faster() -> None:
    with_probing = lift_recovery_ms(probing=True)
    without = lift_recovery_ms(probing=False)
    # The first probe fires as soon as the estimate grows past what the last failed probe
    # found, not only after the (up to 8 s) backoff.
    assert with_probing is not None and with_probing <= 7_000
    # Without probes the estimate can only creep up (~8 %/s, capped at 1.5 x throughput).
    assert without is None or without >= 3 * with_probing


def tail_mean_with_random_loss(loss: float) -> tuple[float, DownlinkEstimator]:
    estimator = DownlinkEstimator()
    samples = simulate(
        estimator, BottleneckLink(3_000_000, loss=loss, seed=3), 20_000, constant(6_000_000)
    )
    return sum(s.estimate_bps for s in samples[-100:]) / 100, estimator


def test_heavy_random_loss_lowers_the_estimate() -> None:
    # The learnt inherent level stops at 10 %: 30 % loss is 20 points of "congestion".
    clean_mean, _ = tail_mean_with_random_loss(0.0)
    lossy_mean, lossy = tail_mean_with_random_loss(0.30)
    assert lossy_mean < 0.5 * clean_mean
    assert lossy.estimate_bps == lossy.loss_based.rate_bps < lossy.delay_based_bps


def test_moderate_random_loss_costs_little_estimate() -> None:
    clean_mean, _ = tail_mean_with_random_loss(0.0)
    lossy_mean, lossy = tail_mean_with_random_loss(0.05)
    assert lossy_mean >= 0.85 * clean_mean
    assert 0.03 <= lossy.loss_based.inherent_loss <= 0.07


def test_app_limited_sender_does_not_inflate_the_estimate() -> None:
    estimator = DownlinkEstimator()
    simulate(estimator, BottleneckLink(10_000_000), 20_000, constant(400_000), probing=False)
    # 1.5 x throughput + 10 kbps (+ a little: the throughput window counts its edge packet).
    assert estimator.estimate_bps <= 1.6 * 400_000


# --------------------------------------------------------------------------- estimator: REMB


def test_remb_fallback_when_no_transport_feedback() -> None:
    estimator = DownlinkEstimator()
    estimator.on_remb(800_000, 0.0)
    assert estimator.estimate_bps == 800_000
    estimator.on_remb(200_000, 1000.0)
    assert estimator.estimate_bps == 200_000
    estimator.on_remb(10, 2000.0)
    assert estimator.estimate_bps == 30_000  # clamped to min_bps
    assert estimator.maybe_probe(3000.0, 5_000_000) is None  # a probe could not be measured
    assert estimator.snapshot()["feedback"] == "remb"


def test_transport_feedback_takes_over_from_remb() -> None:
    estimator = DownlinkEstimator(initial_bps=500_000)
    estimator.on_remb(2_000_000, 0.0)
    results = [PacketResult(i, i * 10.0, 1200, 80 + i * 10.0) for i in range(50)]
    estimator.on_packet_results(results, 600.0)
    assert estimator.estimate_bps < 1_000_000
    estimator.on_remb(5_000_000, 700.0)
    assert estimator.estimate_bps < 1_000_000


# --------------------------------------------------------------------------- metrics, purity


def test_snapshot_has_plain_values() -> None:
    estimator = DownlinkEstimator()
    simulate(estimator, BottleneckLink(1_000_000), 3_000, constant(2_000_000))
    snap = estimator.snapshot()
    assert snap["estimate_bps"] == estimator.estimate_bps
    assert snap["probes_sent"] == estimator.probes_sent >= 1
    assert snap["usage"] in {u.value for u in BandwidthUsage}
    assert all(isinstance(v, int | float | str) for v in snap.values())


def test_constructor_rejects_inconsistent_limits() -> None:
    with pytest.raises(ValueError):
        DownlinkEstimator(initial_bps=10_000, min_bps=30_000)


result_lists = st.lists(
    st.builds(
        PacketResult,
        sequence=st.integers(0, 10_000),
        send_ms=st.floats(-1e6, 1e6, allow_nan=False),
        size=st.integers(0, 1500),
        arrival_ms=st.none() | st.floats(-1e9, 1e9, allow_nan=False),
        probe_cluster_id=st.none() | st.integers(1, 3),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    feedbacks=st.lists(result_lists, max_size=8),
    wanted=st.integers(0, 50_000_000),
)
def test_any_feedback_keeps_the_estimate_within_limits(
    feedbacks: list[list[PacketResult]], wanted: int
) -> None:
    estimator = DownlinkEstimator(initial_bps=300_000, min_bps=30_000, max_bps=5_000_000)
    for i, results in enumerate(feedbacks):
        now = i * 100.0
        estimator.on_packet_results(results, now)
        cluster = estimator.maybe_probe(now, wanted)
        if cluster is not None:
            assert cluster.rate_bps > 0
        assert 30_000 <= estimator.estimate_bps <= 5_000_000
        assert 0.0 <= estimator.loss_fraction <= 1.0


def test_bwe_imports_no_io_library() -> None:
    code = (
        "import sys, sfu.bwe, tools.link_sim\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'asyncio', 'aiortc', 'aioice', 'aiohttp', 'av'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_urgent_probing_caps_the_backoff() -> None:
    """A track paused for bandwidth must not wait out an 8 s backoff before the next probe."""
    from sfu.bwe import DownlinkEstimator

    def failing_probes(urgent: bool) -> int:
        est = DownlinkEstimator(initial_bps=200_000)
        est.on_packet_results([PacketResult(0, 0.0, 1000, 10.0)], 0)
        probes = 0
        for t in range(0, 20_000, 100):
            cluster = est.maybe_probe(float(t), 2_000_000, urgent=urgent)
            if cluster is not None:
                probes += 1
                # No feedback for the cluster: it times out as a failed probe.
        return probes

    assert failing_probes(urgent=True) > failing_probes(urgent=False)


def test_an_application_limited_sender_is_not_collapsed_by_a_burst() -> None:
    """Sending 200 kbit/s with a 1 Mbit/s estimate, a keyframe burst's over-use must not drop
    the estimate to 0.85 x 200 kbit/s; on a full path (acked well below sent) it must."""
    from sfu.bwe import AimdRateControl, BandwidthUsage

    limited = AimdRateControl(1_000_000, 30_000, 10_000_000)
    limited.update(BandwidthUsage.OVERUSING, 200_000, 1000.0, sent_bps=205_000)
    assert limited.rate_bps == int(AimdRateControl.BETA * 1_000_000)
    full = AimdRateControl(1_000_000, 30_000, 10_000_000)
    full.update(BandwidthUsage.OVERUSING, 200_000, 1000.0, sent_bps=900_000)
    assert full.rate_bps == int(AimdRateControl.BETA * 200_000)


def steady_loss_tail_mean(loss: float, learn: bool) -> float:
    estimator = DownlinkEstimator()
    if not learn:
        estimator.loss_based.INHERENT_TIME_CONSTANT_MS = 0.0  # the plain gcc-02 reading
    samples = simulate(
        estimator,
        BottleneckLink(3_000_000, loss=loss, seed=11),
        30_000,
        constant(6_000_000),
        probing=False,  # the loss estimator's own behaviour, without probes lifting it
    )
    return sum(s.estimate_bps for s in samples[-100:]) / 100


def test_steady_random_loss_is_learnt_as_inherent_not_congestion() -> None:
    # 5 % loss that does not depend on the rate (a radio link) must not hold the estimate
    # down: read as congestion, only the lucky reports under 2 % let it grow.
    clean = steady_loss_tail_mean(0.0, learn=True)
    learnt = steady_loss_tail_mean(0.05, learn=True)
    plain = steady_loss_tail_mean(0.05, learn=False)
    assert learnt >= 0.75 * clean  # (without probes both creep up at ~8 %/s)
    assert learnt > 3 * plain


def test_loss_above_the_inherent_level_still_holds_and_decreases() -> None:
    estimator = LossBasedEstimator(1_000_000, 30_000, 20_000_000)
    for step in range(200):  # 20 s of steady 5 % loss
        estimator.update(0.05, step * 100.0, queue_delay_ms=5.0)
    assert 0.049 <= estimator.inherent_loss <= 0.05
    grown = estimator.rate_bps
    assert grown > 1_000_000  # learnt: 5 % no longer holds the rate
    assert estimator.update(0.09, 20_000.0) == grown  # 4 points above it: hold
    assert estimator.update(0.25, 20_600.0) < grown  # 20 points above it: decrease
    # Heavy loss is never all inherent: the learnt level stops at 10 %.
    for step in range(400):
        estimator.update(0.30, 21_000.0 + step * 100.0)
    assert estimator.inherent_loss <= LossBasedEstimator.MAX_INHERENT_LOSS


def test_queue_delay_tells_a_standing_queue_from_jitter() -> None:

    rng = random.Random(4)
    tracker = QueueDelayTracker()
    seq = 0

    def feedback(extra_ms: float, jitter_ms: float, now_ms: float) -> float:
        nonlocal seq
        results = []
        for _ in range(20):
            delay = 40 + extra_ms + rng.uniform(0, jitter_ms)
            results.append(PacketResult(seq, seq * 5.0, 1200, seq * 5.0 + delay))
            seq += 1
        return tracker.update(results, now_ms)

    assert feedback(0, 0, 0) == 0  # the first feedback is the base
    jittery = [feedback(0, 40, 100 * i) for i in range(1, 50)]
    assert max(jittery) < 15  # some packet of every feedback still gets through fast
    queued = [feedback(250, 40, 5000 + 100 * i) for i in range(1, 20)]
    assert min(queued) > 200  # a full queue delays every packet
