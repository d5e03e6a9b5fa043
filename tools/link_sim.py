"""A pure bottleneck-link simulator to exercise bandwidth estimators in simulated time.

    .venv/bin/python -m tools.link_sim        # prints convergence and recovery numbers

`BottleneckLink` is one FIFO queue in front of a link of some capacity (drop-tail when the
queueing delay would exceed `queue_ms`), plus propagation delay and optional random loss.
`Simulation` plays an SFU sending to one subscriber through it: media at
min(application rate, estimate), padding when the estimator asks for a probe, and
transport-wide feedback every `feedback_interval_ms`, all in simulated milliseconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sfu.bwe import DownlinkEstimator, ProbeCluster
from sfu.twcc import PacketResult


class BottleneckLink:
    """FIFO bottleneck: a packet leaves when the link has serialised everything before it."""

    def __init__(
        self,
        capacity_bps: int,
        queue_ms: float = 300.0,
        base_delay_ms: float = 20.0,
        loss: float = 0.0,
        seed: int = 1,
        jitter_ms: float = 0.0,
    ) -> None:
        if capacity_bps <= 0 or queue_ms < 0 or base_delay_ms < 0 or not 0 <= loss < 1:
            raise ValueError("bad link parameters")
        self.capacity_bps = capacity_bps
        self.queue_ms = queue_ms
        self.base_delay_ms = base_delay_ms
        self.loss = loss
        self.jitter_ms = jitter_ms
        self._rng = random.Random(seed)
        self._busy_until_ms = -math.inf  # when the link finishes what is queued
        self._last_arrival_ms = -math.inf
        self.sent = 0
        self.dropped = 0  # drop-tail (queue full)
        self.lost = 0  # random loss

    def set_capacity(self, bps: int) -> None:
        """From now on packets are serialised at `bps` (queued ones keep their departure)."""
        if bps <= 0:
            raise ValueError("capacity must be positive")
        self.capacity_bps = bps

    def queue_delay_ms(self, now_ms: float) -> float:
        return max(self._busy_until_ms - now_ms, 0.0)

    def send(self, send_ms: float, size: int) -> float | None:
        """Arrival time of a packet sent at `send_ms` (non-decreasing), or None if lost."""
        self.sent += 1
        if self.queue_delay_ms(send_ms) > self.queue_ms:
            self.dropped += 1
            return None
        start = max(self._busy_until_ms, send_ms)
        self._busy_until_ms = start + size * 8000 / self.capacity_bps
        if self.loss and self._rng.random() < self.loss:
            self.lost += 1  # lost after the bottleneck: it still used the capacity
            return None
        arrival = self._busy_until_ms + self.base_delay_ms
        if self.jitter_ms:
            # Jitter never reorders (a FIFO path): it only delays up to the next packet.
            arrival = max(arrival + self._rng.uniform(0, self.jitter_ms), self._last_arrival_ms)
        self._last_arrival_ms = arrival
        return arrival


class Estimator(Protocol):
    """What the simulation needs from an estimator (DownlinkEstimator has it)."""

    @property
    def estimate_bps(self) -> int: ...

    def on_packet_results(self, results: Sequence[PacketResult], now_ms: float) -> None: ...

    def maybe_probe(self, now_ms: float, wanted_bps: int) -> ProbeCluster | None: ...


@dataclass(frozen=True, slots=True)
class Sample:
    t_ms: float
    estimate_bps: int
    capacity_bps: int
    sent_bps: int  # what the sender put on the wire over the last feedback interval


@dataclass(slots=True)
class _InFlight:
    sequence: int
    send_ms: float
    size: int
    arrival_ms: float | None
    cluster_id: int | None


class Simulation:
    """An SFU sending one subscriber's media through `link`, driven by `estimator`.

    Media goes out at min(`sender_rate_fn(t)`, estimate) in `packet_size` packets, paced in
    `tick_ms` steps, or as whole frames every `frame_interval_ms` when that is set (an SFU
    forwards frames as bursts); a probe cluster adds tagged padding at its rate for its
    duration (at least its `min_packets` packets). The receiver reports, every
    `feedback_interval_ms`, every packet up to the newest one it received (lost ones as
    lost); the report reaches the sender `base_delay_ms` later. The receiver's clock is
    offset by `clock_offset_ms`. `maybe_probe` is offered the application rate as the wanted
    rate every `probe_check_ms`.
    """

    def __init__(
        self,
        estimator: Estimator,
        link: BottleneckLink,
        sender_rate_fn: Callable[[float], int],
        feedback_interval_ms: float = 50.0,
        tick_ms: float = 5.0,
        packet_size: int = 1200,
        probing: bool = True,
        probe_check_ms: float = 200.0,
        clock_offset_ms: float = 12_345_678.0,
        frame_interval_ms: float | None = None,
    ) -> None:
        self.estimator = estimator
        self.link = link
        self.sender_rate_fn = sender_rate_fn
        self.feedback_interval_ms = feedback_interval_ms
        self.tick_ms = tick_ms
        self.packet_size = packet_size
        self.probing = probing
        self.probe_check_ms = probe_check_ms
        self.clock_offset_ms = clock_offset_ms
        self.frame_interval_ms = frame_interval_ms
        self._next_frame_ms = 0.0
        self.now_ms = 0.0
        self.samples: list[Sample] = []
        self.probes: list[tuple[float, ProbeCluster]] = []
        self._sequence = 0
        self._unreported: list[_InFlight] = []  # sent, not yet covered by a feedback
        self._feedback: list[tuple[float, list[PacketResult]]] = []  # (delivery time, report)
        self._media_credit = 0.0
        self._probe: ProbeCluster | None = None
        self._probe_start_ms = 0.0
        self._probe_credit = 0.0
        self._probe_packets = 0
        self._next_feedback_ms = feedback_interval_ms
        self._next_probe_check_ms = 0.0
        self._interval_bytes = 0

    def run_until(self, end_ms: float) -> list[Sample]:
        while self.now_ms < end_ms:
            self._tick()
            self.now_ms += self.tick_ms
        return self.samples

    def _send(self, size: int, cluster_id: int | None) -> None:
        self._sequence += 1
        arrival = self.link.send(self.now_ms, size)
        self._unreported.append(_InFlight(self._sequence, self.now_ms, size, arrival, cluster_id))
        self._interval_bytes += size

    def _tick(self) -> None:
        now = self.now_ms
        # Feedback that reached the sender by now.
        due = [f for f in self._feedback if f[0] <= now]
        if due:
            self._feedback = [f for f in self._feedback if f[0] > now]
            for _, report in due:
                self.estimator.on_packet_results(report, now)
        wanted = self.sender_rate_fn(now)
        if self.probing and self._probe is None and now >= self._next_probe_check_ms:
            self._next_probe_check_ms = now + self.probe_check_ms
            cluster = self.estimator.maybe_probe(now, wanted)
            if cluster is not None:
                self._probe = cluster
                self._probe_start_ms = now
                self._probe_credit = 0.0
                self._probe_packets = 0
                self.probes.append((now, cluster))
        # Media: paced, or a frame's worth at a time.
        rate = min(wanted, self.estimator.estimate_bps)
        self._media_credit += rate * self.tick_ms / 8000
        if self.frame_interval_ms is None:
            self._media_credit = min(self._media_credit, 4.0 * self.packet_size)
            release = True
        else:
            release = now >= self._next_frame_ms
            if release:
                self._next_frame_ms += self.frame_interval_ms
        while release and self._media_credit >= self.packet_size:
            self._media_credit -= self.packet_size
            self._send(self.packet_size, None)
        # Probe padding.
        probe = self._probe
        if probe is not None:
            elapsed = now - self._probe_start_ms
            if elapsed >= probe.duration_ms and self._probe_packets >= probe.min_packets:
                self._probe = None
            else:
                self._probe_credit += probe.rate_bps * self.tick_ms / 8000
                while self._probe_credit >= self.packet_size or (
                    elapsed >= probe.duration_ms and self._probe_packets < probe.min_packets
                ):
                    self._probe_credit -= self.packet_size
                    self._send(self.packet_size, probe.cluster_id)
                    self._probe_packets += 1
        if now >= self._next_feedback_ms:
            self._next_feedback_ms += self.feedback_interval_ms
            self._report(now)
            sent_bps = int(self._interval_bytes * 8000 / self.feedback_interval_ms)
            self._interval_bytes = 0
            self.samples.append(
                Sample(now, self.estimator.estimate_bps, self.link.capacity_bps, sent_bps)
            )

    def _report(self, now: float) -> None:
        """The receiver's feedback at `now`: everything up to its newest received packet."""
        newest = None
        for i, p in enumerate(self._unreported):
            if p.arrival_ms is not None and p.arrival_ms <= now:
                newest = i
        if newest is None:
            return
        covered = self._unreported[: newest + 1]
        del self._unreported[: newest + 1]
        report = [
            PacketResult(
                sequence=p.sequence,
                send_ms=p.send_ms,
                size=p.size,
                arrival_ms=(
                    None
                    if p.arrival_ms is None or p.arrival_ms > now
                    else p.arrival_ms + self.clock_offset_ms
                ),
                probe_cluster_id=p.cluster_id,
            )
            for p in covered
        ]
        self._feedback.append((now + self.link.base_delay_ms, report))


def simulate(
    estimator: Estimator,
    link: BottleneckLink,
    duration_ms: float,
    sender_rate_fn: Callable[[float], int],
    feedback_interval_ms: float = 50.0,
    capacity_schedule: Sequence[tuple[float, int]] = (),
    probing: bool = True,
) -> list[Sample]:
    """Run a whole simulation; `capacity_schedule` = (time, new capacity) steps."""
    sim = Simulation(
        estimator, link, sender_rate_fn, feedback_interval_ms=feedback_interval_ms, probing=probing
    )
    for at_ms, bps in sorted(capacity_schedule):
        sim.run_until(at_ms)
        link.set_capacity(bps)
    return sim.run_until(duration_ms)


# --------------------------------------------------------------------------- summaries


def mean_estimate(samples: Sequence[Sample], start_ms: float, end_ms: float) -> float:
    window = [s.estimate_bps for s in samples if start_ms <= s.t_ms < end_ms]
    if not window:
        raise ValueError("no samples in that window")
    return sum(window) / len(window)


def first_time(
    samples: Sequence[Sample], after_ms: float, condition: Callable[[Sample], bool]
) -> float | None:
    """Time of the first sample at or after `after_ms` meeting `condition` (None: never)."""
    for s in samples:
        if s.t_ms >= after_ms and condition(s):
            return s.t_ms
    return None


def _constant(bps: int) -> Callable[[float], int]:
    return lambda _t: bps


def print_report() -> None:
    print("steady state: app wants 2x capacity, 30 s, mean/min/max of the last 15 s")
    for capacity in (300_000, 1_000_000, 3_000_000):
        est = DownlinkEstimator()
        link = BottleneckLink(capacity)
        samples = simulate(est, link, 30_000, _constant(2 * capacity))
        tail = [s.estimate_bps for s in samples if s.t_ms >= 15_000]
        print(
            f"  {capacity / 1e6:4.1f} Mbps: mean {sum(tail) / len(tail) / capacity:5.2f}  "
            f"min {min(tail) / capacity:5.2f}  max {max(tail) / capacity:5.2f}  "
            f"(x capacity)  probes {est.probes_sent} ok {est.probes_succeeded}  "
            f"drops {link.dropped}/{link.sent}"
        )
    print("capacity drop 3 Mbps -> 300 kbps at 10 s: time until estimate <= 1.3 x 300 kbps")
    est = DownlinkEstimator()
    samples = simulate(
        est,
        BottleneckLink(3_000_000),
        20_000,
        lambda _t: 6_000_000,
        capacity_schedule=[(10_000, 300_000)],
    )
    hit = first_time(samples, 10_000, lambda s: s.estimate_bps <= 390_000)
    print(f"  {'never' if hit is None else f'{(hit - 10_000) / 1000:.2f} s'}")
    print("capacity lift 300 kbps -> 3 Mbps at 10 s: time until estimate >= 2.4 Mbps (0.8 x)")
    for probing in (True, False):
        est = DownlinkEstimator()
        samples = simulate(
            est,
            BottleneckLink(300_000),
            70_000,
            lambda _t: 4_000_000,
            capacity_schedule=[(10_000, 3_000_000)],
            probing=probing,
        )
        hit = first_time(samples, 10_000, lambda s: s.estimate_bps >= 2_400_000)
        label = "never (60 s)" if hit is None else f"{(hit - 10_000) / 1000:.2f} s"
        print(f"  probing={probing!s:5}: {label}")
    print("random loss 15 % on a 3 Mbps link, 20 s: mean estimate of the last 10 s")
    est = DownlinkEstimator()
    samples = simulate(est, BottleneckLink(3_000_000, loss=0.15), 20_000, lambda _t: 6_000_000)
    print(f"  {mean_estimate(samples, 10_000, 20_000) / 1e6:.2f} Mbps")


if __name__ == "__main__":
    print_report()
