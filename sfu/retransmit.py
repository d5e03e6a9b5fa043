"""Retransmission cache for one subscriber's copy of a track (pure).

Sized by time, not by count: a NACK is only worth answering while the packet can still make
its frame's playout, so packets older than `keep_ms` are forgotten whatever the bitrate (a
fixed count is seconds of audio but a fraction of a second of 720p video). A packet is resent
at most once per `min_interval_ms`, so a receiver repeating its NACK every few milliseconds
cannot multiply our sending.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

KEEP_MS = 1000
MAX_PACKETS = 4096  # far below 65536: 16-bit sequence numbers can never alias in the cache
MIN_RESEND_INTERVAL_MS = 100


@dataclass(slots=True)
class CachedPacket:
    marker: bool
    timestamp: int
    payload: bytes
    sent_ms: float
    resent_ms: float | None = None


class RetransmitCache:
    __slots__ = (
        "_keep_ms",
        "_max_packets",
        "_min_interval_ms",
        "_packets",
        "expired",
        "resends",
        "stored",
        "throttled",
        "unknown",
    )

    def __init__(
        self,
        keep_ms: float = KEEP_MS,
        max_packets: int = MAX_PACKETS,
        min_interval_ms: float = MIN_RESEND_INTERVAL_MS,
    ) -> None:
        if keep_ms <= 0 or not 0 < max_packets < 65536:
            raise ValueError("keep_ms must be positive and max_packets within 1..65535")
        self._keep_ms = keep_ms
        self._max_packets = max_packets
        self._min_interval_ms = min_interval_ms
        self._packets: OrderedDict[int, CachedPacket] = OrderedDict()  # seq16 -> packet
        self.stored = 0
        self.expired = 0
        self.resends = 0
        self.throttled = 0
        self.unknown = 0

    def __len__(self) -> int:
        return len(self._packets)

    def _expire(self, now_ms: float) -> None:
        packets = self._packets
        while packets:
            seq, oldest = next(iter(packets.items()))
            if now_ms - oldest.sent_ms <= self._keep_ms and len(packets) <= self._max_packets:
                break
            del packets[seq]
            self.expired += 1

    def store(self, seq: int, marker: bool, timestamp: int, payload: bytes, now_ms: float) -> None:
        seq &= 0xFFFF
        self._packets.pop(seq, None)  # a reused number replaces the old packet, at the end
        self._packets[seq] = CachedPacket(marker, timestamp, payload, now_ms)
        self.stored += 1
        self._expire(now_ms)

    def resend(self, seq: int, now_ms: float) -> CachedPacket | None:
        """The packet to send again for a NACK of `seq`, or None (unknown, expired, too soon)."""
        self._expire(now_ms)
        packet = self._packets.get(seq & 0xFFFF)
        if packet is None:
            self.unknown += 1
            return None
        if packet.resent_ms is not None and now_ms - packet.resent_ms < self._min_interval_ms:
            self.throttled += 1
            return None
        packet.resent_ms = now_ms
        self.resends += 1
        return packet

    def recent(self, count: int) -> list[tuple[int, CachedPacket]]:
        """The newest `count` packets, oldest first (probe filler)."""
        if count <= 0:
            return []
        items = list(self._packets.items())
        return items[-count:]
