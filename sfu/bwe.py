"""Send-side downlink bandwidth estimation, Google congestion control family (pure).

The SFU sends media to a subscriber, the subscriber returns transport-wide feedback, and
`sfu.twcc.SendHistory` turns it into `PacketResult`s. From those this module estimates how
many bits per second the path to that subscriber carries:

- a delay-based estimate: `TrendlineEstimator` watches the one-way queueing delay trend
  (draft-ietf-rmcat-gcc-02 §5, libwebrtc's trendline filter) and `AimdRateControl` turns its
  verdicts into a rate (§5.5);
- a loss-based estimate: `LossBasedEstimator` (§6), never above the delay-based one;
- probing: `DownlinkEstimator.maybe_probe` asks the shell for short bursts of padding so the
  estimate can climb faster than the 1.5 x throughput cap allows when the allocator wants more.

Time on our side is `now_ms` / `PacketResult.send_ms`; `arrival_ms` is the receiver's clock,
whose offset is unknown, so only differences of arrival times are ever used.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sfu.twcc import PacketResult


class BandwidthUsage(StrEnum):
    """The delay-based detector's verdict about the bottleneck queue."""

    NORMAL = "normal"
    OVERUSING = "overusing"  # the queue is growing: we send more than the path carries
    UNDERUSING = "underusing"  # the queue is draining


# --------------------------------------------------------------------------- delay trend


@dataclass(slots=True)
class _Group:
    """Packets sent within one burst; GCC compares groups, not single packets."""

    first_send_ms: float
    last_send_ms: float
    first_arrival_ms: float
    last_arrival_ms: float


class TrendlineEstimator:
    """Over-use detector on the slope of the queueing delay.

    Packets are grouped into bursts (sent within `burst_ms`; or arriving back to back after a
    queue released them). For consecutive groups the delay variation is
    `arrival delta - send delta`; its running sum, exponentially smoothed, is regressed
    against arrival time over the last `window_size` groups. The slope (ms of extra delay per
    ms), scaled, is compared with an adaptive threshold (gcc-02 §5.4), so that the detector
    adapts to jitter yet does not starve against loss-based flows. OVERUSING needs the trend
    above the threshold for more than `overuse_time_ms` and not falling.
    """

    # Threshold adaptation (gcc-02 §5.4): grows slowly, shrinks quickly.
    K_UP = 0.0087
    K_DOWN = 0.039
    MAX_ADAPT_OFFSET_MS = 15.0  # trends this far above the threshold are spikes: do not adapt
    MIN_THRESHOLD = 6.0
    MAX_THRESHOLD = 600.0
    # A gap this large between arrival and send deltas is a clock jump, not queueing.
    CLOCK_JUMP_MS = 3000.0

    def __init__(
        self,
        window_size: int = 20,
        smoothing: float = 0.9,
        threshold_gain: float = 4.0,
        burst_ms: float = 5.0,
        initial_threshold: float = 12.5,
        overuse_time_ms: float = 10.0,
    ) -> None:
        if window_size < 2:
            raise ValueError("window_size must be at least 2")
        self._window_size = window_size
        self._smoothing = smoothing
        self._gain = threshold_gain
        self._burst_ms = burst_ms
        self._initial_threshold = initial_threshold
        self._overuse_time_ms = overuse_time_ms
        self.reset()

    def reset(self) -> None:
        self._group: _Group | None = None
        self._previous: _Group | None = None
        self._window: deque[tuple[float, float]] = deque(maxlen=self._window_size)
        self._first_arrival_ms: float | None = None
        self._accumulated_ms = 0.0
        self._smoothed_ms = 0.0
        self._deltas = 0
        self._slope = 0.0
        self._previous_slope = 0.0
        self._modified_trend = 0.0
        self._threshold = self._initial_threshold
        self._threshold_updated_ms: float | None = None
        self._time_over_ms = -1.0
        self._overuse_count = 0
        self._usage = BandwidthUsage.NORMAL

    @property
    def usage(self) -> BandwidthUsage:
        return self._usage

    @property
    def trend(self) -> float:
        """The scaled slope compared with `threshold` (ms of delay growth, gcc's m(t))."""
        return self._modified_trend

    @property
    def threshold(self) -> float:
        return self._threshold

    def update(self, results: Iterable[PacketResult]) -> BandwidthUsage:
        """Feed one feedback's results (lost ones are skipped); the verdict after them."""
        received = [r for r in results if r.arrival_ms is not None]
        received.sort(key=lambda r: (r.arrival_ms, r.sequence))
        for r in received:
            assert r.arrival_ms is not None
            self.on_packet(r.send_ms, r.arrival_ms)
        return self._usage

    def on_packet(self, send_ms: float, arrival_ms: float) -> BandwidthUsage:
        """One received packet, in arrival order."""
        group = self._group
        if group is None:
            self._group = _Group(send_ms, send_ms, arrival_ms, arrival_ms)
            return self._usage
        if send_ms < group.first_send_ms:
            return self._usage  # reordered from an older group: its delta is already taken
        if self._belongs_to(group, send_ms, arrival_ms):
            group.last_send_ms = max(group.last_send_ms, send_ms)
            group.last_arrival_ms = max(group.last_arrival_ms, arrival_ms)
            return self._usage
        # A new group starts: the one just closed can be compared with the one before it.
        previous = self._previous
        if previous is not None:
            send_delta = group.last_send_ms - previous.last_send_ms
            arrival_delta = group.last_arrival_ms - previous.last_arrival_ms
            if abs(arrival_delta - send_delta) > self.CLOCK_JUMP_MS:
                self.reset()
                self._group = _Group(send_ms, send_ms, arrival_ms, arrival_ms)
                return self._usage
            if arrival_delta >= 0:
                self._on_delta(arrival_delta - send_delta, send_delta, group.last_arrival_ms)
        self._previous = group
        self._group = _Group(send_ms, send_ms, arrival_ms, arrival_ms)
        return self._usage

    def _belongs_to(self, group: _Group, send_ms: float, arrival_ms: float) -> bool:
        if send_ms - group.first_send_ms <= self._burst_ms:
            return True
        # Packets that arrive back to back although sent apart were held in one queue
        # release (e.g. a Wi-Fi aggregation): treat them as one burst (libwebrtc does too).
        arrival_delta = arrival_ms - group.last_arrival_ms
        send_delta = send_ms - group.last_send_ms
        return (
            arrival_delta - send_delta < 0
            and arrival_delta <= self._burst_ms
            and arrival_ms - group.first_arrival_ms < 100.0
        )

    def _on_delta(self, variation_ms: float, send_delta_ms: float, arrival_ms: float) -> None:
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        self._deltas = min(self._deltas + 1, 1000)
        self._accumulated_ms += variation_ms
        self._smoothed_ms = (
            self._smoothing * self._smoothed_ms + (1 - self._smoothing) * self._accumulated_ms
        )
        self._window.append((arrival_ms - self._first_arrival_ms, self._smoothed_ms))
        if len(self._window) == self._window_size:
            slope = _slope(self._window)
            if slope is not None:
                self._slope = slope
        self._detect(send_delta_ms, arrival_ms)

    def _detect(self, send_delta_ms: float, now_ms: float) -> None:
        if self._deltas < 2:
            return
        # More samples make the slope more trustworthy, up to 60 (libwebrtc's cap).
        modified = min(self._deltas, 60) * self._slope * self._gain
        self._modified_trend = modified
        if modified > self._threshold:
            if self._time_over_ms < 0:
                self._time_over_ms = send_delta_ms / 2  # assume halfway into this delta
            else:
                self._time_over_ms += send_delta_ms
            self._overuse_count += 1
            if (
                self._time_over_ms > self._overuse_time_ms
                and self._overuse_count > 1
                and self._slope >= self._previous_slope
            ):
                self._time_over_ms = 0.0
                self._overuse_count = 0
                self._usage = BandwidthUsage.OVERUSING
        elif modified < -self._threshold:
            self._time_over_ms = -1.0
            self._overuse_count = 0
            self._usage = BandwidthUsage.UNDERUSING
        else:
            self._time_over_ms = -1.0
            self._overuse_count = 0
            self._usage = BandwidthUsage.NORMAL
        self._previous_slope = self._slope
        self._adapt_threshold(modified, now_ms)

    def _adapt_threshold(self, modified: float, now_ms: float) -> None:
        last = self._threshold_updated_ms
        self._threshold_updated_ms = now_ms
        if last is None:
            return
        magnitude = abs(modified)
        if magnitude > self._threshold + self.MAX_ADAPT_OFFSET_MS:
            return
        k = self.K_DOWN if magnitude < self._threshold else self.K_UP
        dt = min(max(now_ms - last, 0.0), 100.0)
        self._threshold += k * (magnitude - self._threshold) * dt
        self._threshold = min(max(self._threshold, self.MIN_THRESHOLD), self.MAX_THRESHOLD)


def _slope(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x; None when x does not vary."""
    pts = list(points)
    n = len(pts)
    mean_x = sum(p[0] for p in pts) / n
    mean_y = sum(p[1] for p in pts) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in pts)
    den = sum((x - mean_x) ** 2 for x, _ in pts)
    return num / den if den > 0 else None


# --------------------------------------------------------------------------- acked throughput


class AckedBitrate:
    """Throughput the receiver acknowledged, over the last `window_ms` of its arrival clock.

    This is what the path really delivered (media and padding), the anchor of every decrease
    and of the increase cap.
    """

    def __init__(self, window_ms: float = 500.0, min_span_ms: float = 100.0) -> None:
        self._window_ms = window_ms
        self._min_span_ms = min_span_ms
        self._packets: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self._first_arrival_ms: float | None = None
        self._latest_ms: float | None = None

    def update(self, results: Iterable[PacketResult]) -> int | None:
        for r in results:
            if r.arrival_ms is not None:
                self.on_packet(r.arrival_ms, r.size)
        return self.bitrate_bps

    def on_packet(self, arrival_ms: float, size: int) -> None:
        if self._first_arrival_ms is None:
            self._first_arrival_ms = arrival_ms
        if self._latest_ms is None or arrival_ms > self._latest_ms:
            self._latest_ms = arrival_ms
        self._packets.append((arrival_ms, size))
        self._bytes += size
        horizon = self._latest_ms - self._window_ms
        while self._packets and self._packets[0][0] <= horizon:
            self._bytes -= self._packets.popleft()[1]

    @property
    def bitrate_bps(self) -> int | None:
        """None until at least `min_span_ms` of arrivals were seen."""
        if self._latest_ms is None or self._first_arrival_ms is None:
            return None
        span = min(self._latest_ms - self._first_arrival_ms, self._window_ms)
        if span < self._min_span_ms:
            return None
        return int(self._bytes * 8000 / span)


# --------------------------------------------------------------------------- AIMD


class RateControlState(StrEnum):
    HOLD = "hold"
    INCREASE = "increase"
    DECREASE = "decrease"


class _LinkCapacity:
    """Running mean and spread (kbps) of the throughput measured at each over-use.

    Near that value the rate grows additively, far from it multiplicatively (gcc-02 §5.5).
    """

    def __init__(self) -> None:
        self.estimate_kbps: float | None = None
        self._deviation = 0.4  # normalised variance, kbps

    def reset(self) -> None:
        self.estimate_kbps = None

    def update(self, sample_bps: float, alpha: float = 0.05) -> None:
        sample = sample_bps / 1000
        if self.estimate_kbps is None:
            self.estimate_kbps = sample
        else:
            self.estimate_kbps = (1 - alpha) * self.estimate_kbps + alpha * sample
        norm = max(self.estimate_kbps, 1.0)
        error = self.estimate_kbps - sample
        self._deviation = (1 - alpha) * self._deviation + alpha * error * error / norm
        self._deviation = min(max(self._deviation, 0.4), 2.5)

    def _spread_kbps(self) -> float:
        assert self.estimate_kbps is not None
        return 3 * math.sqrt(self._deviation * self.estimate_kbps)

    def upper_bps(self) -> float:
        if self.estimate_kbps is None:
            return math.inf
        return (self.estimate_kbps + self._spread_kbps()) * 1000

    def lower_bps(self) -> float:
        if self.estimate_kbps is None:
            return 0.0
        return (self.estimate_kbps - self._spread_kbps()) * 1000


class AimdRateControl:
    """Additive-increase / multiplicative-decrease on the delay detector's verdicts.

    OVERUSING -> decrease to `beta` x acked throughput (at most once per round trip unless
    the throughput collapsed); UNDERUSING -> hold (the queue drains at the current rate);
    NORMAL -> increase: ~8 %/s while far from the last known capacity, about one packet per
    response time near it. Increases never go beyond 1.5 x acked + 10 kbps: a sender that
    does not use its estimate learns nothing about the path (the probe is the way past it).
    """

    BETA = 0.85
    MULTIPLICATIVE_PER_S = 1.08
    THROUGHPUT_CAP_FACTOR = 1.5
    THROUGHPUT_CAP_EXTRA_BPS = 10_000
    FRAME_RATE = 30.0
    PACKET_BITS = 1200 * 8
    MIN_ADDITIVE_BPS_PER_S = 4000.0
    APP_LIMITED_DELIVERY = 0.9  # acked / sent at or above this: the path kept up

    def __init__(self, initial_bps: int, min_bps: int, max_bps: int) -> None:
        if not 0 < min_bps <= max_bps:
            raise ValueError("need 0 < min_bps <= max_bps")
        self._min_bps = min_bps
        self._max_bps = max_bps
        self._rate = float(self._clamp(initial_bps))
        self._state = RateControlState.INCREASE
        self._capacity = _LinkCapacity()
        self._last_update_ms: float | None = None
        self._last_decrease_ms: float | None = None
        self.rtt_ms = 200.0  # until the owner knows better
        self.decreases = 0

    def _clamp(self, bps: float) -> float:
        return min(max(bps, self._min_bps), self._max_bps)

    @property
    def rate_bps(self) -> int:
        return int(self._rate)

    @property
    def state(self) -> RateControlState:
        return self._state

    @property
    def link_capacity_bps(self) -> int | None:
        kbps = self._capacity.estimate_kbps
        return None if kbps is None else int(kbps * 1000)

    def set_estimate(self, bps: float, now_ms: float) -> None:
        """Jump to a measured rate (a probe result); resumes fast growth beyond the old capacity."""
        self._rate = self._clamp(bps)
        if self._rate > self._capacity.upper_bps():
            self._capacity.reset()
        self._last_update_ms = now_ms

    def update(
        self,
        usage: BandwidthUsage,
        acked_bps: int | None,
        now_ms: float,
        sent_bps: int | None = None,
    ) -> int:
        """One detector verdict. `sent_bps` (what we sent over the same span) tells an
        application-limited sender (it got everything through) from a full path."""
        dt_ms = 0.0 if self._last_update_ms is None else max(now_ms - self._last_update_ms, 0.0)
        self._last_update_ms = now_ms
        if usage is BandwidthUsage.OVERUSING:
            self._state = RateControlState.DECREASE
        elif usage is BandwidthUsage.UNDERUSING:
            self._state = RateControlState.HOLD
        elif self._state is not RateControlState.INCREASE:
            self._state = RateControlState.INCREASE

        if self._state is RateControlState.INCREASE:
            self._increase(acked_bps, dt_ms)
        elif self._state is RateControlState.DECREASE:
            self._decrease(acked_bps, now_ms, sent_bps)
        return int(self._rate)

    def _increase(self, acked_bps: int | None, dt_ms: float) -> None:
        if acked_bps is not None and acked_bps > self._capacity.upper_bps():
            self._capacity.reset()  # throughput left the old capacity behind: search again
        dt_s = min(dt_ms, 1000.0) / 1000
        if self._capacity.estimate_kbps is not None:
            new = self._rate + self._additive_bps_per_s() * dt_s
        else:
            new = self._rate * self.MULTIPLICATIVE_PER_S**dt_s
            new = max(new, self._rate + 1000 * dt_s)
        if acked_bps is not None:
            cap = self.THROUGHPUT_CAP_FACTOR * acked_bps + self.THROUGHPUT_CAP_EXTRA_BPS
            if new > cap:
                new = max(self._rate, cap)  # the cap stops growth, it never pulls down
        self._rate = self._clamp(new)

    def _additive_bps_per_s(self) -> float:
        # About one average packet per response time (gcc-02 §5.5), packets sized from the
        # frames a 30 fps encoder would produce at this rate.
        bits_per_frame = self._rate / self.FRAME_RATE
        packets_per_frame = max(math.ceil(bits_per_frame / self.PACKET_BITS), 1)
        avg_packet_bits = bits_per_frame / packets_per_frame
        response_ms = self.rtt_ms + 100.0
        return max(self.MIN_ADDITIVE_BPS_PER_S, avg_packet_bits * 1000 / response_ms)

    def _decrease(self, acked_bps: int | None, now_ms: float, sent_bps: int | None = None) -> None:
        reference = float(acked_bps) if acked_bps is not None else self._rate
        app_limited = (
            acked_bps is not None
            and sent_bps is not None
            and acked_bps >= self.APP_LIMITED_DELIVERY * sent_bps
            and acked_bps < 0.5 * self._rate
        )
        if app_limited:
            # We send far below the estimate and the path delivered all of it: the over-use is a
            # burst (a keyframe forwarded at line rate), not a full path. beta x acked would
            # collapse the estimate to what the subscriber happens to watch now.
            reference = self._rate
        last = self._last_decrease_ms
        # One reaction per round trip: the feedback after a decrease still shows the old queue.
        if last is not None and now_ms - last < min(max(self.rtt_ms, 10.0), 200.0):
            if reference >= 0.5 * self._rate:
                self._state = RateControlState.HOLD
                return
        target = self.BETA * reference
        if target > self._rate and self._capacity.estimate_kbps is not None:
            target = self.BETA * self._capacity.estimate_kbps * 1000
        if target < self._rate:
            self._rate = self._clamp(target)
        if acked_bps is not None and not app_limited:
            if acked_bps < self._capacity.lower_bps():
                self._capacity.reset()  # the path got much slower: forget the old capacity
            self._capacity.update(acked_bps)
        self._last_decrease_ms = now_ms
        self.decreases += 1
        self._state = RateControlState.HOLD


# --------------------------------------------------------------------------- loss


class QueueDelayTracker:
    """How much standing queue the packets of one feedback met, in ms.

    One-way delays (arrival minus send, on two unrelated clocks) are compared with their
    minimum over the last 10-20 s, the empty-queue base. The *smallest* delay of a feedback
    is used: jitter spreads delays upward but some packet still goes through near the base,
    while a full drop-tail queue delays every packet alike.
    """

    WINDOW_MS = 10_000.0

    def __init__(self) -> None:
        self._current_min = math.inf
        self._previous_min = math.inf
        self._window_start_ms: float | None = None
        self.queue_delay_ms = 0.0

    def update(self, results: Sequence[PacketResult], now_ms: float) -> float:
        delays = [r.arrival_ms - r.send_ms for r in results if r.arrival_ms is not None]
        if not delays:
            return self.queue_delay_ms
        if self._window_start_ms is None:
            self._window_start_ms = now_ms
        elif now_ms - self._window_start_ms >= self.WINDOW_MS:
            self._previous_min, self._current_min = self._current_min, math.inf
            self._window_start_ms = now_ms
        smallest = min(delays)
        self._current_min = min(self._current_min, smallest)
        base = min(self._current_min, self._previous_min)
        self.queue_delay_ms = smallest - base
        return self.queue_delay_ms


class LossBasedEstimator:
    """Loss-based rate (gcc-02 §6), never above the delay-based limit given to it.

    Loss under 2 %: grow 8 % a second (from the lowest rate of the last second, so a burst
    of reports does not compound); 2-10 %: hold; over 10 %: rate x (1 - loss / 2), at most
    once per 300 ms + round trip so one loss episode is not punished twice.

    The thresholds apply to loss *above the link's inherent loss*. Hospital Wi-Fi and cellular
    links lose a few percent whatever we send; read as congestion, a steady 5 % would hold the
    estimate down for the whole call (and keep a single-layer video paused). The inherent level
    is learnt slowly (3 s time constant), only from reports whose packets met no standing queue
    (a full drop-tail queue loses packets *and* delays them all), and never above 10 %.
    """

    LOW_LOSS = 0.02
    HIGH_LOSS = 0.10
    DECREASE_INTERVAL_MS = 300.0
    MAX_INHERENT_LOSS = 0.10
    INHERENT_TIME_CONSTANT_MS = 3000.0  # time, not reports: low rates report rarely

    def __init__(self, initial_bps: int, min_bps: int, max_bps: int) -> None:
        self._min_bps = min_bps
        self._max_bps = max_bps
        self._rate = float(initial_bps)
        self._history: deque[tuple[float, float]] = deque()
        self._last_decrease_ms: float | None = None
        self.rtt_ms = 200.0
        self.inherent_loss = 0.0
        self._learnt_ms: float | None = None

    @property
    def rate_bps(self) -> int:
        return int(self._rate)

    def _clamp(self, bps: float) -> float:
        return min(max(bps, self._min_bps), self._max_bps)

    def _remember(self, now_ms: float) -> None:
        while self._history and self._history[0][0] < now_ms - 1000:
            self._history.popleft()
        self._history.append((now_ms, self._rate))

    # Below this much standing queue, loss is not the queue overflowing.
    QUEUE_FREE_MS = 30.0

    def update(
        self,
        loss_fraction: float,
        now_ms: float,
        delivered_bps: int | None = None,
        queue_delay_ms: float = math.inf,
    ) -> int:
        """One loss report (fraction of packets lost since the previous one).

        `delivered_bps`, the throughput the receiver acknowledged meanwhile, bounds a decrease:
        a burst of loss (a keyframe or a probe overflowing a short queue) must not push the
        rate far below what the path has just carried.
        """
        excess = loss_fraction - self.inherent_loss
        if excess < self.LOW_LOSS:
            floor = min((r for _, r in self._history), default=self._rate)
            self._rate = max(self._rate, self._clamp(floor * 1.08 + 1000))
        elif excess > self.HIGH_LOSS:
            last = self._last_decrease_ms
            if last is None or now_ms - last >= self.DECREASE_INTERVAL_MS + self.rtt_ms:
                decreased = self._rate * (1 - 0.5 * excess)
                if delivered_bps is not None:
                    decreased = max(decreased, self.DELIVERED_FLOOR * delivered_bps)
                self._rate = self._clamp(min(decreased, self._rate))
                self._last_decrease_ms = now_ms
        if queue_delay_ms < self.QUEUE_FREE_MS and self.INHERENT_TIME_CONSTANT_MS > 0:
            since = now_ms - (self._learnt_ms if self._learnt_ms is not None else now_ms)
            weight = 1 - math.exp(-max(since, 0.0) / self.INHERENT_TIME_CONSTANT_MS)
            learnt = min(loss_fraction, self.MAX_INHERENT_LOSS)
            self.inherent_loss += weight * (learnt - self.inherent_loss)
            self._learnt_ms = now_ms
        self._remember(now_ms)
        return int(self._rate)

    DELIVERED_FLOOR = 0.85

    def limit(self, cap_bps: float) -> int:
        """Never above the delay-based estimate (`cap_bps`)."""
        if self._rate > cap_bps:
            self._rate = self._clamp(cap_bps)
            if self._history:
                self._history[-1] = (self._history[-1][0], min(self._history[-1][1], self._rate))
        return int(self._rate)

    def set_rate(self, bps: float, now_ms: float) -> None:
        """A probe measured the path: start from there."""
        self._rate = self._clamp(bps)
        self._history.clear()
        self._remember(now_ms)


# --------------------------------------------------------------------------- probing


@dataclass(frozen=True)
class ProbeCluster:
    """A request to the shell: send padding at `rate_bps` on top of the media, every padding
    packet tagged with `cluster_id`, for `duration_ms` and at least `min_packets` packets.

    The padding rate tops the media up to the probe's target; the result is measured over
    everything sent while the tagged packets went out, so tagging media too does no harm.
    """

    cluster_id: int
    rate_bps: int
    duration_ms: int
    min_packets: int


@dataclass(slots=True)
class _ActiveProbe:
    cluster: ProbeCluster
    created_ms: float
    target_bps: int  # media + padding
    first_tagged_send_ms: float | None = None
    last_tagged_send_ms: float | None = None


@dataclass(frozen=True, slots=True)
class ProbeResult:
    send_bps: float
    receive_bps: float

    @property
    def probed_bps(self) -> float:
        return min(self.send_bps, self.receive_bps)

    @property
    def saturated(self) -> bool:
        """The path delivered clearly less than was sent: it is at its capacity."""
        return self.receive_bps < 0.9 * self.send_bps


def measure_probe(results: Sequence[PacketResult], min_received: int) -> ProbeResult | None:
    """Send and receive rate of a probe window (every packet sent while the probe ran).

    Like libwebrtc's ProbeBitrateEstimator: each rate leaves out the packet that closes its
    interval (the last sent / the first received), intervals must be positive and under a
    second, and a receive rate over twice the send rate (a burst squeezed together on the
    way) is not a measurement.
    """
    if len(results) < 2:
        return None
    first_send = min(r.send_ms for r in results)
    last = max(results, key=lambda r: (r.send_ms, r.sequence))
    send_span = last.send_ms - first_send
    received = [r for r in results if r.arrival_ms is not None]
    if len(received) < max(min_received, 2) or not 0 < send_span <= 1000:
        return None
    first = min(received, key=lambda r: (r.arrival_ms, r.sequence))
    last_arrival = max(r.arrival_ms for r in received if r.arrival_ms is not None)
    assert first.arrival_ms is not None
    receive_span = last_arrival - first.arrival_ms
    if not 0 < receive_span <= 1000:
        return None
    send_bps = (sum(r.size for r in results) - last.size) * 8000 / send_span
    receive_bps = (sum(r.size for r in received) - first.size) * 8000 / receive_span
    if send_bps <= 0 or receive_bps > 2 * send_bps:
        return None
    return ProbeResult(send_bps, receive_bps)


# --------------------------------------------------------------------------- the estimator


class DownlinkEstimator:
    """Bandwidth estimate of one subscriber's downlink, fed with transport-wide feedback.

    `estimate_bps` = min(delay-based, loss-based). Without transport-wide feedback (a client
    that only sends REMB) the estimate follows REMB.

    A probe ends when feedback covers a packet sent after the cluster's duration (or it times
    out). Its measured rate (min of send and receive rate of all packets sent while it ran)
    raises the estimate to 0.95 x that rate if the path is not overusing; if the probe itself
    filled the queue (over-use, receive rate < 0.9 x send rate), to 0.85 x the receive rate,
    the same as an over-use decrease would pick. A probe that found the path full backs off.
    """

    LOSS_REPORT_PACKETS = 20  # loss fractions from fewer packets are mostly noise
    PROBE_DURATION_MS = 300
    PROBE_MIN_PACKETS = 5
    PROBE_HEADROOM = 1.1  # probe a bit above the demand: the result is discounted
    PROBE_TARGET_FRACTION = 0.95  # of the probed rate, so the next frames do not overuse
    PROBE_SETTLE_MS = 20.0  # a later send than the cluster's end by this much closes it
    PROBE_TIMEOUT_MS = 1500.0  # after the cluster's duration
    PROBE_BACKOFF_MS = 2000.0
    PROBE_MAX_BACKOFF_MS = 8000.0
    # Smoothed loss above the inherent level; the loss estimator cuts at 10 % as well. Below
    # that a probe is how to tell a radio link's loss (it stays) from congestion (it grows).
    PROBE_MAX_LOSS = 0.10

    def __init__(
        self, initial_bps: int = 300_000, min_bps: int = 30_000, max_bps: int = 20_000_000
    ) -> None:
        if not 0 < min_bps <= initial_bps <= max_bps:
            raise ValueError("need 0 < min_bps <= initial_bps <= max_bps")
        self._min_bps = min_bps
        self._max_bps = max_bps
        self.trendline = TrendlineEstimator()
        self.aimd = AimdRateControl(initial_bps, min_bps, max_bps)
        self.loss_based = LossBasedEstimator(initial_bps, min_bps, max_bps)
        self.queue = QueueDelayTracker()
        self.acked = AckedBitrate()
        self._media_acked = AckedBitrate()  # untagged packets only: what media alone uses
        self._sent = AckedBitrate()  # by send time: what we put on the wire over the same span
        self._twcc_seen = False
        self._remb_bps: int | None = None
        self._lost = 0
        self._expected = 0
        self._loss_fraction = 0.0
        self._loss_smoothed = 0.0  # over reports: one lucky report must not look loss-free
        self._rtt_ms: float | None = None
        # probing
        self._probe: _ActiveProbe | None = None
        self._probe_window: list[PacketResult] = []
        self._next_cluster_id = 1
        self._probe_not_before_ms = -math.inf
        self._probe_finished_ms = -math.inf
        self._failed_probes = 0  # consecutive; sets the backoff
        self._wanted_at_failure = 0
        self._capacity_at_failure = 0.0  # what the last failed probe found (or the estimate)
        self.last_probe_bps = 0  # what the last valid probe measured
        self.last_probe_target_bps = 0
        self.probes_sent = 0
        self.probes_succeeded = 0

    # ------------------------------------------------------------------ state

    @property
    def estimate_bps(self) -> int:
        if not self._twcc_seen and self._remb_bps is not None:
            return self._remb_bps
        return min(self.aimd.rate_bps, self.loss_based.rate_bps)

    @property
    def delay_based_bps(self) -> int:
        return self.aimd.rate_bps

    @property
    def usage(self) -> BandwidthUsage:
        return self.trendline.usage

    @property
    def acked_bps(self) -> int:
        """Throughput the subscriber acknowledged recently (0 until known)."""
        return self.acked.bitrate_bps or 0

    @property
    def loss_fraction(self) -> float:
        """Fraction lost in the latest loss report (>= 20 packets)."""
        return self._loss_fraction

    @property
    def rtt_ms(self) -> float | None:
        return self._rtt_ms

    @property
    def probing(self) -> bool:
        return self._probe is not None

    # ------------------------------------------------------------------ inputs

    def on_remb(self, bps: int, now_ms: float) -> None:
        """Receiver estimate; used only while no transport-wide feedback ever arrived."""
        self._remb_bps = int(min(max(bps, self._min_bps), self._max_bps))

    def on_packet_results(self, results: Sequence[PacketResult], now_ms: float) -> None:
        if not results:
            return
        self._twcc_seen = True
        self._update_rtt(results, now_ms)
        self.queue.update(results, now_ms)
        self._update_loss(results, now_ms)
        in_arrival_order = sorted(results, key=lambda r: (r.arrival_ms or 0.0, r.sequence))
        self.acked.update(in_arrival_order)
        self._media_acked.update(r for r in in_arrival_order if r.probe_cluster_id is None)
        for r in sorted(results, key=lambda r: r.send_ms):
            self._sent.on_packet(r.send_ms, r.size)
        usage = self.trendline.update(results)
        self.aimd.update(usage, self.acked.bitrate_bps, now_ms, self._sent.bitrate_bps)
        self._collect_probe(results, now_ms)
        self.loss_based.limit(self.aimd.rate_bps)

    def _update_rtt(self, results: Sequence[PacketResult], now_ms: float) -> None:
        # The newest packet in a feedback was acknowledged about one round trip after it left
        # (plus the receiver's feedback interval, which a response time should include anyway).
        sample = now_ms - max(r.send_ms for r in results)
        if sample < 0:
            return
        rtt = sample if self._rtt_ms is None else 0.9 * self._rtt_ms + 0.1 * sample
        self._rtt_ms = rtt
        self.aimd.rtt_ms = min(max(rtt, 10.0), 1000.0)
        self.loss_based.rtt_ms = self.aimd.rtt_ms

    def _update_loss(self, results: Sequence[PacketResult], now_ms: float) -> None:
        self._expected += len(results)
        self._lost += sum(1 for r in results if r.arrival_ms is None)
        if self._expected >= self.LOSS_REPORT_PACKETS:
            self._loss_fraction = self._lost / self._expected
            self._loss_smoothed = 0.8 * self._loss_smoothed + 0.2 * self._loss_fraction
            # Smoothed: at 5 % random loss one report in thirteen of 20 packets shows 15 %,
            # and cutting on those alone would hold the estimate down for the whole call.
            self.loss_based.update(
                self._loss_smoothed, now_ms, self.acked.bitrate_bps, self.queue.queue_delay_ms
            )
            self._lost = self._expected = 0

    # ------------------------------------------------------------------ probing

    def maybe_probe(
        self, now_ms: float, wanted_bps: int, urgent: bool = False
    ) -> ProbeCluster | None:
        """A probe cluster for the shell to send now, or None.

        Probes only when the allocator wants more than the estimate, none is in flight, the
        path is neither overusing nor losing packets lately, transport-wide feedback is
        available (REMB cannot measure a probe), and the backoff after a failed probe has
        passed (2 s, doubling per consecutive failure up to 8 s). A much larger demand (a new
        track) or an estimate that grew well past what the failed probe found (the path got
        faster) ends the backoff early.
        """
        self._check_probe_timeout(now_ms)
        estimate = self.estimate_bps
        if wanted_bps <= estimate or self._probe is not None:
            return None
        if not self._twcc_seen and self._remb_bps is not None:
            return None
        excess_loss = self._loss_smoothed - self.loss_based.inherent_loss
        if self.usage is BandwidthUsage.OVERUSING or excess_loss > self.PROBE_MAX_LOSS:
            return None  # a probe would only add to the queue, or cannot answer a loss problem
        if self._failed_probes and (
            wanted_bps > 1.5 * self._wanted_at_failure or estimate > 1.1 * self._capacity_at_failure
        ):
            self._probe_not_before_ms = -math.inf
        not_before = self._probe_not_before_ms
        if urgent:
            # Something is paused for want of bandwidth: never wait longer than the first backoff.
            not_before = min(not_before, self._probe_finished_ms + self.PROBE_BACKOFF_MS)
        if now_ms < not_before:
            return None
        target = int(min(wanted_bps * self.PROBE_HEADROOM, 2 * estimate, self._max_bps))
        if target <= estimate:
            return None
        # The shell adds padding to the media it is sending anyway.
        padding = max(target - (self._media_acked.bitrate_bps or 0), target // 4)
        cluster = ProbeCluster(
            cluster_id=self._next_cluster_id,
            rate_bps=padding,
            duration_ms=self.PROBE_DURATION_MS,
            min_packets=self.PROBE_MIN_PACKETS,
        )
        self._next_cluster_id += 1
        self._probe = _ActiveProbe(cluster, now_ms, target)
        self.last_probe_target_bps = target
        self._probe_window = []
        self._wanted_at_failure = wanted_bps
        self.probes_sent += 1
        return cluster

    def _collect_probe(self, results: Sequence[PacketResult], now_ms: float) -> None:
        probe = self._probe
        if probe is None:
            return
        cid = probe.cluster.cluster_id
        for r in results:
            if r.probe_cluster_id == cid:
                if probe.first_tagged_send_ms is None or r.send_ms < probe.first_tagged_send_ms:
                    probe.first_tagged_send_ms = r.send_ms
                if probe.last_tagged_send_ms is None or r.send_ms > probe.last_tagged_send_ms:
                    probe.last_tagged_send_ms = r.send_ms
            if r.send_ms >= probe.created_ms:
                self._probe_window.append(r)
        first = probe.first_tagged_send_ms
        if first is not None:
            end = first + probe.cluster.duration_ms + self.PROBE_SETTLE_MS
            if any(r.send_ms > end for r in results):
                self._finish_probe(now_ms)
                return
        self._check_probe_timeout(now_ms)

    def _check_probe_timeout(self, now_ms: float) -> None:
        probe = self._probe
        if probe is None:
            return
        if now_ms - probe.created_ms > probe.cluster.duration_ms + self.PROBE_TIMEOUT_MS:
            self._finish_probe(now_ms)

    def _finish_probe(self, now_ms: float) -> None:
        probe = self._probe
        assert probe is not None
        self._probe = None
        self._probe_finished_ms = now_ms
        window = self._probe_window
        self._probe_window = []
        result: ProbeResult | None = None
        first, last = probe.first_tagged_send_ms, probe.last_tagged_send_ms
        if first is not None and last is not None:
            # Everything sent while the cluster ran, media included: the path carried all of it.
            inside = [r for r in window if first <= r.send_ms <= last]
            min_received = math.ceil(0.8 * probe.cluster.min_packets)
            result = measure_probe(inside, min_received)
        raised = False
        capacity_found = float(self.estimate_bps)
        if result is not None:
            self.last_probe_bps = int(result.probed_bps)
            target = 0.0
            if self.usage is not BandwidthUsage.OVERUSING:
                target = self.PROBE_TARGET_FRACTION * result.probed_bps
            elif result.saturated:
                # The probe filled the queue itself. An over-use decrease goes to beta x acked,
                # and the probe's receive rate is the best measure of acked throughput there is.
                target = AimdRateControl.BETA * result.receive_bps
            if result.saturated:
                capacity_found = max(capacity_found, result.receive_bps)
            if target > self.estimate_bps:
                self.aimd.set_estimate(target, now_ms)
                self.loss_based.set_rate(target, now_ms)
                raised = True
        if raised:
            self.probes_succeeded += 1
        if raised and result is not None and not result.saturated:
            # The path took everything: probe further right away.
            self._failed_probes = 0
            self._probe_not_before_ms = now_ms
        else:
            # At capacity (or no measurement): look again later, less often each time.
            self._failed_probes += 1
            self._capacity_at_failure = max(capacity_found, float(self.estimate_bps))
            backoff = self.PROBE_BACKOFF_MS * 2 ** (self._failed_probes - 1)
            self._probe_not_before_ms = now_ms + min(backoff, self.PROBE_MAX_BACKOFF_MS)

    # ------------------------------------------------------------------ metrics

    def snapshot(self) -> dict[str, float | int | str]:
        return {
            "estimate_bps": self.estimate_bps,
            "delay_based_bps": self.aimd.rate_bps,
            "loss_based_bps": self.loss_based.rate_bps,
            "acked_bps": self.acked_bps,
            "loss_fraction": round(self._loss_fraction, 4),
            "usage": str(self.usage),
            "rate_control": str(self.aimd.state),
            "trend": round(self.trendline.trend, 3),
            "threshold": round(self.trendline.threshold, 3),
            "rtt_ms": round(self._rtt_ms, 1) if self._rtt_ms is not None else -1,
            "remb_bps": self._remb_bps if self._remb_bps is not None else -1,
            "feedback": "twcc" if self._twcc_seen else ("remb" if self._remb_bps else "none"),
            "probing": int(self._probe is not None),
            "probes_sent": self.probes_sent,
            "probes_succeeded": self.probes_succeeded,
            "last_probe_bps": self.last_probe_bps,
            "last_probe_target_bps": self.last_probe_target_bps,
        }
