"""Retransmission cache for one subscriber's copy of a track (pure).

Sized by time, not by count: a NACK is only worth answering while the packet can still make
its frame's playout, so packets older than `keep_ms` are forgotten whatever the bitrate (a
fixed count is seconds of audio but a fraction of a second of 720p video). A packet is resent
at most once per `min_interval_ms`, so a receiver repeating its NACK every few milliseconds
cannot multiply our sending.

A NACK for a number we never had, but that lies inside the cached range, names a packet lost on
the publisher leg: it is *held* rather than refused, because the SFU is asking the publisher
for it and forwards it the moment it arrives. A NACK for a number older than the cache cannot
be repaired by retransmission; the caller asks for a keyframe instead.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum

KEEP_MS = 1000
MAX_PACKETS = 4096  # far below 65536: 16-bit sequence numbers can never alias in the cache
MIN_RESEND_INTERVAL_MS = 100


class Miss(StrEnum):
    """Why a NACKed packet is not resent now."""

    THROTTLED = "throttled"  # resent less than min_interval_ms ago
    HELD = "held"  # missing upstream too; it is forwarded when the publisher resends it
    UNAVAILABLE = "unavailable"  # older than the cache (or never ours): needs a keyframe


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
        "_newest_seq",
        "_min_interval_ms",
        "_held",
        "_packets",
        "expired",
        "held",
        "held_answered",
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
        self._held: dict[int, float] = {}  # seq16 -> when a NACK for it was held
        # Highest number stored; a late packet (a repaired hole) is stored last but is older.
        self._newest_seq: int | None = None
        self.held = 0
        self.held_answered = 0
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
        if self._held:
            for seq, held_ms in list(self._held.items()):
                if now_ms - held_ms > self._keep_ms:
                    del self._held[seq]

    def store(self, seq: int, marker: bool, timestamp: int, payload: bytes, now_ms: float) -> None:
        seq &= 0xFFFF
        if self._held and self._held.pop(seq, None) is not None:
            self.held_answered += 1  # forwarding it now is the answer to the held NACK
        newest = self._newest_seq
        if newest is None or 0 < (seq - newest) & 0xFFFF < 0x8000:
            self._newest_seq = seq
        self._packets.pop(seq, None)  # a reused number replaces the old packet, at the end
        self._packets[seq] = CachedPacket(marker, timestamp, payload, now_ms)
        self.stored += 1
        self._expire(now_ms)

    def resend(self, seq: int, now_ms: float) -> CachedPacket | Miss:
        """The packet to send again for a NACK of `seq`, or why not."""
        self._expire(now_ms)
        seq &= 0xFFFF
        packet = self._packets.get(seq)
        if packet is None:
            if self._within_cached_range(seq):
                self._held.setdefault(seq, now_ms)
                self.held += 1
                return Miss.HELD
            self.unknown += 1
            return Miss.UNAVAILABLE
        if packet.resent_ms is not None and now_ms - packet.resent_ms < self._min_interval_ms:
            self.throttled += 1
            return Miss.THROTTLED
        packet.resent_ms = now_ms
        self.resends += 1
        return packet

    def _within_cached_range(self, seq: int) -> bool:
        """Between the oldest and newest cached numbers: a hole the stream itself has."""
        packets = self._packets
        newest = self._newest_seq
        if not packets or newest is None:
            return False
        oldest = next(iter(packets))
        return (seq - oldest) & 0xFFFF < (newest - oldest) & 0xFFFF

    def recent(self, count: int) -> list[tuple[int, CachedPacket]]:
        """The newest `count` packets, oldest first (probe filler)."""
        if count <= 0:
            return []
        items = list(self._packets.items())
        return items[-count:]
