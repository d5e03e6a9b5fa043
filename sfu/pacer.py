"""Pacing: spread what one subscriber connection sends over time (pure).

The SFU forwards a keyframe the moment its packets arrive: tens of kilobytes in a millisecond.
On a slow link that burst fills the bottleneck queue, the delay-based estimator reads it as
congestion and the loss-based one as loss. Like libwebrtc's pacer, packets leave at a multiple
of the bandwidth estimate, with a small burst allowance so steady media is never delayed.
"""

from __future__ import annotations

PACING_FACTOR = 2.5  # x the estimate (libwebrtc's default)
BURST_MS = 20.0  # this much data at the pacing rate may leave back to back
MIN_BURST_BYTES = 2 * 1200
MAX_QUEUE_MS = 500.0  # a backlog is drained within this, whatever the estimate says


class Pacer:
    """A leaky bucket of debt: a packet may leave while the debt is within the burst allowance."""

    __slots__ = ("_debt", "_last_ms", "_rate_bps", "sent_immediately", "sent_delayed")

    def __init__(self, rate_bps: int) -> None:
        if rate_bps <= 0:
            raise ValueError("pacing rate must be positive")
        self._rate_bps = rate_bps
        self._debt = 0.0  # bytes sent that the rate has not yet paid off
        self._last_ms: float | None = None
        self.sent_immediately = 0
        self.sent_delayed = 0

    @property
    def rate_bps(self) -> int:
        return self._rate_bps

    def set_estimate(
        self, estimate_bps: int, queued_bytes: int = 0, allocated_bps: int = 0
    ) -> None:
        """Pace at PACING_FACTOR x the estimate, faster if a backlog would wait too long.

        Never below PACING_FACTOR x what the allocator decided to send: the allocator is what
        limits the rate; a pacer slower than that only builds a standing queue (latency, and
        no room for retransmissions). It matters when the estimate is a receiver's REMB,
        which follows what arrives, so a slow pacer would keep it low for good.
        """
        drain = queued_bytes * 8000 / MAX_QUEUE_MS
        floor = PACING_FACTOR * allocated_bps
        self._rate_bps = max(int(PACING_FACTOR * estimate_bps), int(floor), int(drain), 1)

    def _burst_bytes(self) -> float:
        return max(self._rate_bps * BURST_MS / 8000, MIN_BURST_BYTES)

    def _refill(self, now_ms: float) -> None:
        if self._last_ms is not None and now_ms > self._last_ms:
            self._debt = max(0.0, self._debt - (now_ms - self._last_ms) * self._rate_bps / 8000)
        if self._last_ms is None or now_ms > self._last_ms:
            self._last_ms = now_ms

    def delay_ms(self, now_ms: float) -> float:
        """How long the next packet must wait (0: it may leave now)."""
        self._refill(now_ms)
        excess = self._debt - self._burst_bytes()
        return 0.0 if excess <= 0 else excess * 8000 / self._rate_bps

    def on_sent(self, size: int, now_ms: float, delayed: bool = False) -> None:
        self._refill(now_ms)
        self._debt += size
        if delayed:
            self.sent_delayed += 1
        else:
            self.sent_immediately += 1
