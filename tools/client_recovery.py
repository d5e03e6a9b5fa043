"""How a synthetic client recovers like a browser: pure decisions, fed ``now_ms``.

- :class:`ReconnectPolicy`: when to try the signaling socket again after it dropped. Within the
  server's grace period a ``join`` with ``resume`` gets the same session back (media never
  stopped), so the first tries come quickly; after it, the join is a full rejoin and there is
  no hurry; after ``give_up_ms`` the client stops trying.
- :class:`StallDetector`: when to ask for a keyframe (PLI). A browser whose decoder waits on a
  hole that is never repaired drops the broken frames and asks for a keyframe; aiortc never
  does until its 512-packet jitter buffer overflows (seconds of frozen video). So: packets keep
  arriving, nothing decoded for ``stall_ms`` -> PLI, at most one per ``repeat_ms``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ReconnectPolicy", "StallDetector"]


class ReconnectPolicy:
    """Delays between reconnection attempts for one outage of the signaling socket."""

    def __init__(
        self,
        dropped_ms: int,
        *,
        grace_ms: int = 20_000,
        delays_ms: Sequence[int] = (0, 250, 500, 1000, 2000),
        after_grace_delay_ms: int = 5000,
        give_up_ms: int = 120_000,
    ) -> None:
        self.dropped_ms = dropped_ms
        self.grace_ms = grace_ms
        self.delays_ms = tuple(delays_ms)
        self.after_grace_delay_ms = after_grace_delay_ms
        self.give_up_ms = give_up_ms
        self.attempts = 0

    def within_grace(self, now_ms: int) -> bool:
        """A resume may still get the kept session back (the server may still hold it)."""
        return now_ms - self.dropped_ms < self.grace_ms

    def next_delay_ms(self, now_ms: int) -> int | None:
        """How long to wait before the next attempt; ``None``: stop trying."""
        if now_ms - self.dropped_ms >= self.give_up_ms:
            return None
        if self.within_grace(now_ms):
            delay = self.delays_ms[min(self.attempts, len(self.delays_ms) - 1)]
            # Do not sleep past the end of the grace period: one last resume just before it.
            delay = min(delay, max(0, self.dropped_ms + self.grace_ms - now_ms - 1))
        else:
            delay = self.after_grace_delay_ms if self.attempts else 0
        self.attempts += 1
        return delay


class StallDetector:
    """Whether a video receiver should send a PLI now (one detector per remote video stream)."""

    def __init__(self, now_ms: int, *, stall_ms: int = 1000, repeat_ms: int = 1000) -> None:
        self.stall_ms = stall_ms
        self.repeat_ms = repeat_ms
        self.last_frame_ms = now_ms
        self.last_pli_ms: int | None = None
        self.plis = 0
        self._packets_at_frame = 0
        self._packets_at_pli = 0
        self._packets = 0

    def on_frame(self, now_ms: int) -> None:
        """A frame came out of the decoder."""
        self.last_frame_ms = now_ms
        self._packets_at_frame = self._packets
        self.last_pli_ms = None  # recovered: the next stall may ask at once

    def on_packets(self, total: int) -> None:
        """The receiver's running count of RTP packets received for this stream."""
        self._packets = total

    def should_send_pli(self, now_ms: int) -> bool:
        """True (and counted) when the decoder has been starved while packets kept arriving."""
        if self._packets == self._packets_at_frame:
            return False  # nothing arrives: a sender or network pause, not a hole; PLI won't help
        if now_ms - self.last_frame_ms < self.stall_ms:
            return False
        if self.last_pli_ms is not None and (
            now_ms - self.last_pli_ms < self.repeat_ms or self._packets == self._packets_at_pli
        ):
            return False  # asked recently, or nothing came since the last request
        self.last_pli_ms = now_ms
        self._packets_at_pli = self._packets
        self.plis += 1
        return True
