"""When to ask a publisher to resend a lost packet, and when to stop asking (pure).

The SFU terminates RTCP, so loss on the publisher leg is ours to repair: every subscriber of
the track would otherwise see the same hole. A missing sequence number is NACKed as soon as
the gap shows, asked again about once per round trip, and given up after `max_retries` or
once it is older than `max_age_ms` — by then it cannot make its frame's playout downstream
(the downstream retransmission cache keeps one second too), and a keyframe is the repair.

The round trip is learnt from the repairs themselves: the time from our last NACK of a packet
to its arrival is one publisher-leg RTT (plus the publisher's reaction time), so no RTCP
extension is needed to know it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from media.rtp import SequenceUnwrapper

INITIAL_RTT_MS = 100.0
MIN_RTT_MS = 5.0
MAX_RTT_MS = 1000.0
MIN_RETRY_INTERVAL_MS = 20.0
MAX_RETRIES = 10
MAX_AGE_MS = 1000.0
# A jump this large is a restarted or switched stream, not loss worth asking for.
MAX_GAP = 1000
# Bound on what one stream may keep outstanding (a burst of loss at a high packet rate).
MAX_MISSING = 2000


@dataclass(slots=True)
class _Missing:
    detected_ms: float
    nacked_ms: float | None = None
    retries: int = 0


@dataclass(frozen=True, slots=True)
class NackPoll:
    """What to do now: sequence numbers to NACK, and those given up as lost for good."""

    nack: tuple[int, ...] = ()
    lost: tuple[int, ...] = ()


class NackScheduler:
    """Loss detection and NACK timing for one incoming RTP stream (one SSRC)."""

    __slots__ = (
        "_max_age_ms",
        "_max_retries",
        "_missing",
        "_newest",
        "_unwrap",
        "_next_due_ms",
        "duplicates",
        "jumps",
        "lost",
        "missing_detected",
        "nacks_sent",
        "recovered",
        "rtt_ms",
    )

    def __init__(
        self,
        initial_rtt_ms: float = INITIAL_RTT_MS,
        max_retries: int = MAX_RETRIES,
        max_age_ms: float = MAX_AGE_MS,
    ) -> None:
        if max_retries < 1 or max_age_ms <= 0:
            raise ValueError("max_retries must be >= 1 and max_age_ms positive")
        self._max_retries = max_retries
        self._max_age_ms = max_age_ms
        self._unwrap = SequenceUnwrapper()
        self._newest: int | None = None
        # Unwrapped seq -> state, in sequence order (gaps are appended as they are found).
        self._missing: OrderedDict[int, _Missing] = OrderedDict()
        self._next_due_ms = float("inf")
        self.rtt_ms = initial_rtt_ms
        self.missing_detected = 0
        self.nacks_sent = 0  # sequence numbers requested, retries included
        self.recovered = 0
        self.lost = 0
        self.duplicates = 0
        self.jumps = 0

    @property
    def outstanding(self) -> int:
        return len(self._missing)

    @property
    def retry_interval_ms(self) -> float:
        return max(MIN_RETRY_INTERVAL_MS, self.rtt_ms * 1.1)

    def on_packet(self, seq: int, now_ms: float) -> None:
        """A packet (original or unwrapped retransmission) with 16-bit `seq` arrived."""
        s = self._unwrap.unwrap(seq & 0xFFFF)
        newest = self._newest
        if newest is None:
            self._newest = s
            return
        if s > newest:
            gap = s - newest - 1
            if gap > MAX_GAP:
                # Not loss: a new stream. What was outstanding cannot be repaired any more.
                self.jumps += 1
                self.lost += len(self._missing)
                self._missing.clear()
            elif gap:
                for missing in range(newest + 1, s):
                    self._missing[missing] = _Missing(now_ms)
                self.missing_detected += gap
                self._next_due_ms = min(self._next_due_ms, now_ms)
                while len(self._missing) > MAX_MISSING:
                    self._missing.popitem(last=False)
                    self.lost += 1
            self._newest = s
            return
        state = self._missing.pop(s, None)
        if state is None:
            self.duplicates += 1  # or reordered past our window; either way nothing to do
            return
        self.recovered += 1
        if state.nacked_ms is not None:
            sample = min(max(now_ms - state.nacked_ms, MIN_RTT_MS), MAX_RTT_MS)
            self.rtt_ms += (sample - self.rtt_ms) / 8

    def poll(self, now_ms: float) -> NackPoll:
        """NACK what is due (new gaps, retries once a round trip); give up on the hopeless."""
        if not self._missing or now_ms < self._next_due_ms:
            return NackPoll()
        interval = self.retry_interval_ms
        nack: list[int] = []
        lost: list[int] = []
        next_due = float("inf")
        for s, state in list(self._missing.items()):
            if state.nacked_ms is None:
                due = state.detected_ms
            else:
                due = state.nacked_ms + interval
            if now_ms < due:
                next_due = min(next_due, due)
                continue
            too_old = now_ms - state.detected_ms > self._max_age_ms
            if too_old or state.retries >= self._max_retries:
                del self._missing[s]
                lost.append(s & 0xFFFF)
                continue
            state.nacked_ms = now_ms
            state.retries += 1
            nack.append(s & 0xFFFF)
            next_due = min(next_due, now_ms + interval)
        self._next_due_ms = next_due
        self.nacks_sent += len(nack)
        self.lost += len(lost)
        return NackPoll(tuple(nack), tuple(lost))

    def stats(self) -> dict[str, float | int]:
        return {
            "missingDetected": self.missing_detected,
            "nacksSent": self.nacks_sent,
            "recovered": self.recovered,
            "lost": self.lost,
            "outstanding": self.outstanding,
            "rttMs": round(self.rtt_ms, 1),
        }
