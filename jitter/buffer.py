"""Adaptive jitter buffer: RTP packets in, complete frames out, in order, at playout time.

Pure core: no I/O imports, the caller passes `now_ms`. It is meant for places where the
server consumes media itself (recording, QA), not for the forwarding path.

Shape, following aiortc's jitter buffer: `pop()` returns what to do as a value,
`PopResult(frames, keyframe_needed)`; the shell sends the PLI (debounced elsewhere).

- A frame is all packets sharing one RTP timestamp (video) or a single packet (Opus).
  `Frame.packets` holds the RTP *payloads* (padding stripped) in sequence order, so a
  depacketizer or recorder never parses the header again.
- Playout time of a frame = arrival of its first-arriving packet + the target delay; the
  target follows the RFC 3550 interarrival jitter: clamp(min + 4 * jitter, min, max).
  Being arrival-based, a drifting sender clock cannot make the buffer grow.
- A hole (missing sequence numbers) is waited for at most the RTT bound
  max(min, min(1.5 * rtt + 20, max)) from when it was noticed, so a NACKed retransmission
  can still fill it. Then the video frame counts as lost and later non-key frames are
  discarded until a keyframe; for Opus the missing packets count as concealed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from media.codecs import codec_name
from media.h264 import is_h264_keyframe
from media.rtp import RtpParseError, SequenceUnwrapper, TimestampUnwrapper, parse_rtp_header
from media.vp8 import parse_vp8_descriptor

SUPPORTED_CODECS = frozenset(("vp8", "h264", "opus"))
VIDEO_CODECS = frozenset(("vp8", "h264"))
# A larger sequence jump (either way) is a new stream from the same SSRC, not loss.
MAX_SEQ_JUMP = 3000
JITTER_MULTIPLIER = 4.0
# Assumed until set_rtt() is called (libwebrtc uses the same default).
DEFAULT_RTT_MS = 100.0


@dataclass(frozen=True, slots=True)
class Frame:
    timestamp: int  # unwrapped RTP timestamp
    first_seq: int  # unwrapped sequence numbers, inclusive
    last_seq: int
    keyframe: bool
    packets: tuple[bytes, ...]  # RTP payloads in sequence order
    first_arrival_ms: float
    last_arrival_ms: float


class PopResult(NamedTuple):
    frames: list[Frame]
    # True from a loss or discard until a keyframe comes out; the shell debounces the PLI.
    keyframe_needed: bool


@dataclass(slots=True)
class _Packet:
    seq: int
    timestamp: int
    marker: bool
    keyframe: bool
    # Definitely the first packet of a frame (VP8 S bit on partition 0, an H264 keyframe
    # start, any Opus packet). False means "not known", not "not a start".
    starts_frame: bool
    arrival_ms: float
    payload: bytes


@dataclass(slots=True)
class _Slot:
    """The packets received so far for one frame."""

    timestamp: int
    packets: dict[int, _Packet] = field(default_factory=dict)
    first_seq: int = 0
    last_seq: int = 0
    marker_seq: int | None = None
    first_arrival_ms: float = 0.0
    last_arrival_ms: float = 0.0

    def add(self, packet: _Packet) -> None:
        if not self.packets:
            self.first_seq = self.last_seq = packet.seq
            self.first_arrival_ms = self.last_arrival_ms = packet.arrival_ms
        else:
            self.first_seq = min(self.first_seq, packet.seq)
            self.last_seq = max(self.last_seq, packet.seq)
            self.first_arrival_ms = min(self.first_arrival_ms, packet.arrival_ms)
            self.last_arrival_ms = max(self.last_arrival_ms, packet.arrival_ms)
        self.packets[packet.seq] = packet
        if packet.marker:
            self.marker_seq = packet.seq

    def holes(self) -> list[int]:
        return [s for s in range(self.first_seq, self.last_seq + 1) if s not in self.packets]


class JitterBuffer:
    def __init__(
        self,
        codec: str,
        clock_rate: int,
        min_delay_ms: float = 20.0,
        max_delay_ms: float = 500.0,
    ) -> None:
        name = codec_name(codec)
        if name not in SUPPORTED_CODECS:
            raise ValueError(f"unsupported codec {codec!r}, expected one of vp8, h264, opus")
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, got {clock_rate}")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(
                f"need 0 <= min_delay_ms <= max_delay_ms, got {min_delay_ms}, {max_delay_ms}"
            )
        self.codec = name
        self.clock_rate = clock_rate
        self.min_delay_ms = float(min_delay_ms)
        self.max_delay_ms = float(max_delay_ms)
        self._video = name in VIDEO_CODECS
        self._rtt_bound_ms = self._bound_for(DEFAULT_RTT_MS)
        self._jitter_ms = 0.0
        self.received = 0
        self.duplicates = 0
        self.late = 0
        self.lost = 0
        self.concealed = 0
        self.discarded = 0
        self.frames_out = 0
        self.restarts = 0
        self.malformed = 0
        self._ssrc: int | None = None
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._seq_unwrapper = SequenceUnwrapper()
        self._ts_unwrapper = TimestampUnwrapper()
        # Video slots are keyed by timestamp, Opus slots by sequence number.
        self._slots: dict[int, _Slot] = {}
        self._seq_to_key: dict[int, int] = {}
        # Missing sequence number -> when the hole was noticed.
        self._missing: dict[int, float] = {}
        self._highest_seq: int | None = None
        self._lowest_seq: int | None = None
        # Everything at or below these was released or given up (None before the first).
        self._floor_seq: int | None = None
        self._floor_ts: int | None = None
        self._prev_transit_ms: float | None = None
        self._jitter_ts: int | None = None
        # Video decoding can only start (or resume after a loss) at a keyframe.
        self._waiting_for_keyframe = self._video
        self._keyframe_needed = False

    # --- configuration and state ----------------------------------------------------------

    def _bound_for(self, rtt_ms: float) -> float:
        return max(self.min_delay_ms, min(1.5 * rtt_ms + 20.0, self.max_delay_ms))

    def set_rtt(self, rtt_ms: float) -> None:
        self._rtt_bound_ms = self._bound_for(rtt_ms)

    @property
    def rtt_bound_ms(self) -> float:
        return self._rtt_bound_ms

    @property
    def jitter_ms(self) -> float:
        return self._jitter_ms

    @property
    def target_delay_ms(self) -> float:
        target = self.min_delay_ms + JITTER_MULTIPLIER * self._jitter_ms
        return max(self.min_delay_ms, min(target, self.max_delay_ms))

    @property
    def buffered_frames(self) -> int:
        return len(self._slots)

    def stats(self) -> dict[str, int | float]:
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "late": self.late,
            "lost": self.lost,
            "concealed": self.concealed,
            "discarded": self.discarded,
            "frames_out": self.frames_out,
            "restarts": self.restarts,
            "malformed": self.malformed,
            "buffered_frames": len(self._slots),
            "buffered_packets": len(self._seq_to_key),
            "jitter_ms": self._jitter_ms,
            "target_delay_ms": self.target_delay_ms,
            "rtt_bound_ms": self._rtt_bound_ms,
        }

    # --- input ----------------------------------------------------------------------------

    def _inspect(self, payload: bytes) -> tuple[bool, bool]:
        """(keyframe, starts_frame) of one payload."""
        if self.codec == "vp8":
            try:
                desc = parse_vp8_descriptor(payload)
            except RtpParseError:
                return False, False
            return desc.is_keyframe, desc.start_of_partition and desc.partition_id == 0
        if self.codec == "h264":
            key = is_h264_keyframe(payload)
            return key, key
        return False, True

    def _restart(self, ssrc: int) -> None:
        self.restarts += 1
        self.discarded += len(self._slots)
        self._ssrc = ssrc
        self._reset_stream()

    def insert(self, packet: bytes, now_ms: float) -> None:
        try:
            header = parse_rtp_header(packet)
        except RtpParseError:
            self.malformed += 1
            return
        self.received += 1
        if self._ssrc is None:
            self._ssrc = header.ssrc
        elif header.ssrc != self._ssrc:
            self._restart(header.ssrc)
        seq = self._seq_unwrapper.unwrap(header.sequence_number)
        if self._highest_seq is not None and abs(seq - self._highest_seq) > MAX_SEQ_JUMP:
            self._restart(header.ssrc)
            seq = self._seq_unwrapper.unwrap(header.sequence_number)
        ts = self._ts_unwrapper.unwrap(header.timestamp)

        if self._floor_seq is not None and seq <= self._floor_seq:
            self.late += 1
            return
        if self._video and self._floor_ts is not None and ts <= self._floor_ts:
            self.late += 1
            return
        if seq in self._seq_to_key:
            self.duplicates += 1
            return

        payload = bytes(packet[header.payload_offset : header.payload_end])
        keyframe, starts = self._inspect(payload)
        key = ts if self._video else seq
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(ts)
        slot.add(_Packet(seq, ts, header.marker, keyframe, starts, now_ms, payload))
        self._seq_to_key[seq] = key
        self._missing.pop(seq, None)

        if self._floor_seq is None and self._lowest_seq is not None and seq < self._lowest_seq:
            # Reordering before anything was released: the holes above still count.
            for hole in range(seq + 1, self._lowest_seq):
                if hole not in self._seq_to_key:
                    self._missing[hole] = now_ms
        if self._lowest_seq is None or seq < self._lowest_seq:
            self._lowest_seq = seq
        if self._highest_seq is None or seq > self._highest_seq:
            if self._highest_seq is not None:
                for hole in range(self._highest_seq + 1, seq):
                    self._missing[hole] = now_ms
            self._highest_seq = seq
            # Only in-order packets of a new frame feed the estimate: retransmissions would
            # count the RTT as jitter and a frame's own packets would dilute it.
            if self._jitter_ts is None or ts > self._jitter_ts:
                self._update_jitter(ts, now_ms)

    def _update_jitter(self, ts: int, now_ms: float) -> None:
        # RFC 3550 §6.4.1, in milliseconds instead of timestamp units.
        transit = now_ms - ts * 1000.0 / self.clock_rate
        if self._prev_transit_ms is not None:
            d = min(abs(transit - self._prev_transit_ms), self.max_delay_ms)
            self._jitter_ms += (d - self._jitter_ms) / 16.0
        self._prev_transit_ms = transit
        self._jitter_ts = ts

    # --- output ---------------------------------------------------------------------------

    def missing(self, now_ms: float) -> list[int]:
        """16-bit sequence numbers still worth a NACK (their wait bound has not passed)."""
        return [
            seq & 0xFFFF
            for seq, since in sorted(self._missing.items())
            if now_ms < since + self._rtt_bound_ms
        ]

    def _deadline(self, holes: list[int]) -> float | None:
        times = [self._missing[s] for s in holes if s in self._missing]
        return min(times) + self._rtt_bound_ms if times else None

    def _remove(self, key: int, slot: _Slot) -> None:
        del self._slots[key]
        for seq in slot.packets:
            del self._seq_to_key[seq]
        self._advance_floor(slot.last_seq, slot.timestamp)

    def _advance_floor(self, seq: int, ts: int | None) -> None:
        if self._floor_seq is None or seq > self._floor_seq:
            self._floor_seq = seq
        if ts is not None and (self._floor_ts is None or ts > self._floor_ts):
            self._floor_ts = ts
        for hole in [s for s in self._missing if s <= seq]:
            del self._missing[hole]

    def _release(self, key: int, slot: _Slot, out: list[Frame]) -> None:
        self._remove(key, slot)
        packets = [slot.packets[s] for s in sorted(slot.packets)]
        keyframe = packets[0].keyframe
        if keyframe:
            self._waiting_for_keyframe = False
            self._keyframe_needed = False
        self.frames_out += 1
        out.append(
            Frame(
                timestamp=slot.timestamp,
                first_seq=slot.first_seq,
                last_seq=slot.last_seq,
                keyframe=keyframe,
                packets=tuple(p.payload for p in packets),
                first_arrival_ms=slot.first_arrival_ms,
                last_arrival_ms=slot.last_arrival_ms,
            )
        )

    def _end_seq(self, slot: _Slot) -> int | None:
        """Last sequence number of the frame, None while it is not known yet."""
        if not self._video:
            return slot.first_seq
        if slot.marker_seq is not None:
            return slot.marker_seq
        # Tolerate a sender that omits the marker: the next packet has another timestamp.
        nxt = self._seq_to_key.get(slot.last_seq + 1)
        return slot.last_seq if nxt is not None and nxt != slot.timestamp else None

    def pop(self, now_ms: float) -> PopResult:
        out: list[Frame] = []
        target = self.target_delay_ms
        while self._slots:
            key = min(self._slots)
            slot = self._slots[key]
            if now_ms < slot.first_arrival_ms + target:
                break
            if not self._step(key, slot, now_ms, out):
                break
        return PopResult(out, self._keyframe_needed)

    def _step(self, key: int, slot: _Slot, now_ms: float, out: list[Frame]) -> bool:
        """Handle the oldest frame once its playout time has come; False means wait."""
        first = slot.packets[slot.first_seq]
        floor = self._floor_seq
        gap_before = [] if floor is None else list(range(floor + 1, slot.first_seq))
        end = self._end_seq(slot)
        holes = slot.holes()
        # The marker packet may be lost behind a later frame.
        tail = [] if end is not None else [slot.last_seq + 1]
        whole = end is not None and not holes

        if self._waiting_for_keyframe:
            if first.keyframe and first.starts_frame and whole:
                # Nothing before a keyframe matters: skip any hole in front of it.
                self._release(key, slot, out)
                return True
            known_start = floor is None or not gap_before or first.starts_frame
            if known_start and not first.keyframe:
                self.discarded += 1
                self._keyframe_needed = True
                self._remove(key, slot)
                return True
            deadline = self._deadline(holes + tail if known_start else gap_before)
            if deadline is None:
                if end is None:
                    return False
                self._give_up(key, slot)
                return True
            if now_ms < deadline:
                return False
            if known_start:
                self._give_up(key, slot)
            else:
                self._advance_floor(slot.first_seq - 1, None)
            return True

        start_ok = not gap_before and (self.codec != "vp8" or first.starts_frame)
        if start_ok and whole:
            self._release(key, slot, out)
            return True
        deadline = self._deadline(gap_before + holes + tail)
        if deadline is None:
            if end is None:
                return False  # the rest of the frame is still on its way
            # Contiguous but the first packet cannot start a frame: unusable.
            self._give_up(key, slot)
            return True
        if now_ms < deadline:
            return False
        if not self._video:
            # Each missing Opus packet is one frame the decoder has to conceal.
            self.lost += len(gap_before)
            self.concealed += len(gap_before)
            self._advance_floor(slot.first_seq - 1, None)
            return True
        self.lost += 1
        self._waiting_for_keyframe = True
        self._keyframe_needed = True
        # Skip the hole; the frame itself is then judged again in keyframe-wait mode.
        if gap_before:
            self._advance_floor(slot.first_seq - 1, None)
        else:
            self._remove(key, slot)
        return True

    def _give_up(self, key: int, slot: _Slot) -> None:
        self.lost += 1
        if self._video:
            self._waiting_for_keyframe = True
            self._keyframe_needed = True
        self._remove(key, slot)
