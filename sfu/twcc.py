"""Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01).

Pure: packet parse/build, the receive-side recorder and the send-side history. Time is
passed in as milliseconds; nothing here reads a clock.

Feedback format (RTCP RTPFB, PT=205, FMT=15, §3.1):

    V=2 P FMT=15 | PT=205 | length            (RFC 4585 common header)
    SSRC of packet sender
    SSRC of media source
    base sequence number (16) | packet status count (16)
    reference time (24, signed, 64 ms units) | feedback packet count (8)
    packet chunks (16 bits each) ... receive deltas ... zero padding to 32 bits

A chunk is either a run (T=0: 2-bit symbol, 13-bit run length) or a status vector (T=1:
S=0 fourteen 1-bit symbols, S=1 seven 2-bit symbols). Symbols: 0 not received, 1 received
with a 1-byte unsigned delta, 2 received with a 2-byte signed delta (deltas in 250 µs units,
the first relative to the reference time, the others to the previous received packet).
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

RTCP_RTPFB = 205
TWCC_FMT = 15
RTCP_VERSION = 2

FIXED_SIZE = 20  # common header + two SSRCs + base/count + reference time/fb count
REFERENCE_TICK_MS = 64
TICKS_PER_REFERENCE = 256  # 250 µs delta units per 64 ms reference tick
MAX_RUN_LENGTH = 0x1FFF
ONE_BIT_CAPACITY = 14
TWO_BIT_CAPACITY = 7

NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2
_RESERVED = 3

# Recorder limits. Chrome's own feedback stays well under an MTU; 200 statuses with 2-byte
# deltas is ~500 bytes.
MAX_STATUSES_PER_PACKET = 200
# A feedback round never reports more than this many sequence numbers: after a huge forward
# jump only the newest ones are worth reporting (the sender's acked sequence still advances).
MAX_REPORT_SPAN = 2048
# This many packets in a row that are all too old means the sender restarted its counter.
RESYNC_AFTER_STALE = 64

_FIXED = struct.Struct("!BBHIIHHI")
_I16 = struct.Struct("!h")

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class PacketResult:
    """One sent packet as the feedback saw it (input of the bandwidth estimators)."""

    sequence: int  # unwrapped transport-wide sequence number
    send_ms: float  # our clock
    size: int  # bytes on the wire (RTP header + payload + padding)
    arrival_ms: float | None  # receiver's clock (arbitrary offset); None = lost
    probe_cluster_id: int | None = None


class TwccParseError(ValueError):
    """A transport-wide feedback packet that cannot be decoded."""


@dataclass(frozen=True, slots=True)
class TwccFeedback:
    """One decoded feedback packet.

    `arrivals` holds (16-bit transport sequence number, arrival ms on the receiver's clock or
    None when not received), in sequence order from `base_sequence`, wrapping mod 2**16.
    """

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    feedback_count: int
    reference_time_ms: int  # reference time * 64, sign-extended
    arrivals: tuple[tuple[int, float | None], ...]


def _unwrap_near(reference: int, value: int, bits: int) -> int:
    """The integer ≡ value (mod 2**bits) nearest to `reference` (half the range counts forward)."""
    modulus = 1 << bits
    delta = (value - reference) & (modulus - 1)
    if delta > modulus >> 1:
        delta -= modulus
    return reference + delta


def _quarter_ms(arrival_ms: float) -> int:
    """Arrival time in 250 µs ticks, rounded half up (the same rounding everywhere)."""
    if not math.isfinite(arrival_ms):
        raise ValueError(f"arrival time must be finite, got {arrival_ms}")
    return math.floor(arrival_ms * 4 + 0.5)


def _fits_large_delta(delta: int) -> bool:
    return -0x8000 <= delta <= 0x7FFF


# --- parse ------------------------------------------------------------------------------


def _read_symbols(packet: Buffer, pos: int, end: int, count: int) -> tuple[list[int], int]:
    """Decode chunks until `count` symbols are known; returns (symbols, position after)."""
    symbols: list[int] = []
    while len(symbols) < count:
        if pos + 2 > end:
            raise TwccParseError(
                f"packet status count {count} exceeds the {len(symbols)} statuses in the chunks"
            )
        chunk = (packet[pos] << 8) | packet[pos + 1]
        pos += 2
        need = count - len(symbols)
        if not chunk & 0x8000:
            symbol = (chunk >> 13) & 0x3
            if symbol == _RESERVED:
                raise TwccParseError("run-length chunk with the reserved symbol")
            # A run longer than the status count is tolerated: the count is authoritative.
            symbols.extend([symbol] * min(chunk & MAX_RUN_LENGTH, need))
        elif not chunk & 0x4000:
            bits = [(chunk >> shift) & 0x1 for shift in range(13, -1, -1)]
            symbols.extend(bits[:need])
        else:
            pairs = [(chunk >> shift) & 0x3 for shift in range(12, -1, -2)][:need]
            # Symbols past the status count are unused filler and may be anything.
            if _RESERVED in pairs:
                raise TwccParseError("status vector chunk with the reserved symbol")
            symbols.extend(pairs)
    return symbols, pos


def parse_twcc(packet: Buffer) -> TwccFeedback:
    """Decode one whole RTCP transport-wide feedback packet (4-byte common header included).

    Tolerant like libwebrtc: trailing bytes after the deltas (zero padding, or bytes beyond
    the declared length) are ignored, and the P bit's padding is honoured. Anything
    undecodable raises TwccParseError and nothing else.
    """
    size = len(packet)
    if size < FIXED_SIZE:
        raise TwccParseError(f"{size} bytes is shorter than the {FIXED_SIZE}-byte TWCC header")
    first, packet_type, length, sender, media, base, count, ref_fb = _FIXED.unpack_from(packet)
    if first >> 6 != RTCP_VERSION:
        raise TwccParseError(f"RTCP version {first >> 6}, expected {RTCP_VERSION}")
    if packet_type != RTCP_RTPFB or first & 0x1F != TWCC_FMT:
        raise TwccParseError(f"not transport-wide feedback (PT {packet_type}, FMT {first & 0x1F})")
    end = (length + 1) * 4
    if end > size:
        raise TwccParseError(f"length field says {end} bytes, only {size} present")
    if end < FIXED_SIZE:
        raise TwccParseError(f"length field says {end} bytes, too short for TWCC")
    if first & 0x20:
        padding = packet[end - 1]
        if padding == 0 or end - padding < FIXED_SIZE:
            raise TwccParseError(f"invalid padding count {padding}")
        end -= padding

    symbols, pos = _read_symbols(packet, FIXED_SIZE, end, count)

    reference = ref_fb >> 8
    if reference & 0x800000:
        reference -= 0x1000000
    ticks = reference * TICKS_PER_REFERENCE
    arrivals: list[tuple[int, float | None]] = []
    seq = base
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            arrivals.append((seq, None))
        elif symbol == SMALL_DELTA:
            if pos >= end:
                raise TwccParseError("receive deltas truncated")
            ticks += packet[pos]
            pos += 1
            arrivals.append((seq, ticks / 4))
        else:
            if pos + 2 > end:
                raise TwccParseError("receive deltas truncated")
            ticks += _I16.unpack_from(packet, pos)[0]
            pos += 2
            arrivals.append((seq, ticks / 4))
        seq = (seq + 1) & 0xFFFF
    return TwccFeedback(
        sender_ssrc=sender,
        media_ssrc=media,
        base_sequence=base,
        feedback_count=ref_fb & 0xFF,
        reference_time_ms=reference * REFERENCE_TICK_MS,
        arrivals=tuple(arrivals),
    )


# --- build ------------------------------------------------------------------------------


def _encode_chunks(symbols: Sequence[int]) -> bytes:
    """Greedy chunking: at each point take whichever chunk kind covers the most statuses."""
    out = bytearray()
    n = len(symbols)
    i = 0
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and run < MAX_RUN_LENGTH and symbols[i + run] == symbol:
            run += 1
        window = symbols[i : i + ONE_BIT_CAPACITY]
        one_bit = all(s <= SMALL_DELTA for s in window)
        vector_cover = len(window) if one_bit else min(TWO_BIT_CAPACITY, n - i)
        if run >= vector_cover:
            chunk = (symbol << 13) | run
            i += run
        elif one_bit:
            # A last, partial vector is zero-filled; the status count tells where it ends.
            chunk = 0x8000
            for k, s in enumerate(window):
                chunk |= s << (13 - k)
            i += len(window)
        else:
            chunk = 0xC000
            for k, s in enumerate(window[:TWO_BIT_CAPACITY]):
                chunk |= s << (12 - 2 * k)
            i += min(TWO_BIT_CAPACITY, len(window))
        out += chunk.to_bytes(2, "big")
    return bytes(out)


def build_twcc(
    sender_ssrc: int,
    media_ssrc: int,
    base_sequence: int,
    feedback_count: int,
    arrivals: Sequence[tuple[int, float | None]],
) -> bytes:
    """Encode one feedback packet for consecutive sequence numbers from `base_sequence`.

    The reference time is the first received arrival floored to 64 ms (0 if none was
    received), written modulo 2**24 so any receiver clock works; arrival times round-trip
    exactly to 250 µs as long as that reference fits the signed 24-bit field. Raises
    ValueError when a receive delta does not fit 16 signed bits (the caller must split).
    """
    for name, value, bits in (
        ("sender_ssrc", sender_ssrc, 32),
        ("media_ssrc", media_ssrc, 32),
        ("base_sequence", base_sequence, 16),
        ("feedback_count", feedback_count, 8),
    ):
        if not 0 <= value < 1 << bits:
            raise ValueError(f"{name} {value} does not fit in {bits} bits")
    if len(arrivals) > 0xFFFF:
        raise ValueError(f"{len(arrivals)} statuses exceed the 16-bit packet status count")

    symbols: list[int] = []
    deltas = bytearray()
    reference: int | None = None
    previous = 0
    for index, (seq, arrival_ms) in enumerate(arrivals):
        if seq != (base_sequence + index) & 0xFFFF:
            raise ValueError(f"status {index} is for sequence {seq}, not base + {index}")
        if arrival_ms is None:
            symbols.append(NOT_RECEIVED)
            continue
        ticks = _quarter_ms(arrival_ms)
        if reference is None:
            reference = ticks // TICKS_PER_REFERENCE
            previous = reference * TICKS_PER_REFERENCE
        delta = ticks - previous
        previous = ticks
        if 0 <= delta <= 0xFF:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        elif _fits_large_delta(delta):
            symbols.append(LARGE_DELTA)
            deltas += _I16.pack(delta)
        else:
            raise ValueError(
                f"receive delta {delta / 4} ms at sequence {seq} does not fit in 16 bits"
            )

    chunks = _encode_chunks(symbols)
    unpadded = FIXED_SIZE + len(chunks) + len(deltas)
    total = (unpadded + 3) & ~3
    reference24 = (reference or 0) & 0xFFFFFF
    header = _FIXED.pack(
        (RTCP_VERSION << 6) | TWCC_FMT,
        RTCP_RTPFB,
        total // 4 - 1,
        sender_ssrc,
        media_ssrc,
        base_sequence,
        len(arrivals),
        (reference24 << 8) | feedback_count,
    )
    # Zero padding without the P bit, as drawn in the draft; libwebrtc accepts both.
    return header + chunks + deltas + bytes(total - unpadded)


# --- compound RTCP ----------------------------------------------------------------------


def split_rtcp_compound(data: bytes) -> tuple[list[bytes], bytes]:
    """Separate TWCC packets from the rest of a compound RTCP datagram.

    Returns (TWCC packets, the other packets concatenated in their original order). A
    malformed compound comes back untouched as ([], data) so the stock parser can reject it.
    """
    twcc: list[bytes] = []
    rest: list[bytes] = []
    size = len(data)
    pos = 0
    if size < 4:
        return [], data
    while pos < size:
        if pos + 4 > size or data[pos] >> 6 != RTCP_VERSION:
            return [], data
        end = pos + (((data[pos + 2] << 8) | data[pos + 3]) + 1) * 4
        if end > size:
            return [], data
        piece = bytes(data[pos:end])
        if data[pos + 1] == RTCP_RTPFB and data[pos] & 0x1F == TWCC_FMT:
            twcc.append(piece)
        else:
            rest.append(piece)
        pos = end
    if not twcc:
        return [], data
    return twcc, b"".join(rest)


# --- receive side -----------------------------------------------------------------------


class TwccRecorder:
    """Records a publisher's transport-wide sequence numbers and builds feedback for them.

    Each `build_feedback` reports from the first unreported sequence number up to the
    highest seen; gaps are reported as not received, and packets arriving after their
    number was reported are ignored (as libwebrtc does in periodic mode).
    """

    __slots__ = (
        "_arrivals",
        "_feedback_count",
        "_highest",
        "_media_ssrc",
        "_next",
        "_sender_ssrc",
        "_stale_run",
        "duplicates",
        "feedback_packets",
        "last_feedback_ms",
        "packets",
        "resyncs",
        "too_old",
    )

    def __init__(self, sender_ssrc: int) -> None:
        if not 0 <= sender_ssrc <= 0xFFFFFFFF:
            raise ValueError(f"sender_ssrc {sender_ssrc} does not fit in 32 bits")
        self._sender_ssrc = sender_ssrc
        self._media_ssrc = 0
        self._feedback_count = 0
        self._arrivals: dict[int, float] = {}  # unwrapped seq -> arrival ms, not yet reported
        self._highest: int | None = None  # highest unwrapped seq recorded
        self._next: int | None = None  # first unwrapped seq not yet reported
        self._stale_run = 0
        self.packets = 0  # recorded (not duplicate, not too old)
        self.duplicates = 0
        self.too_old = 0
        self.resyncs = 0
        self.feedback_packets = 0
        self.last_feedback_ms: float | None = None

    def _reset(self) -> None:
        self._arrivals.clear()
        self._highest = None
        self._next = None
        self._stale_run = 0

    def on_packet(self, transport_seq16: int, arrival_ms: float, media_ssrc: int) -> None:
        if not math.isfinite(arrival_ms):
            raise ValueError(f"arrival time must be finite, got {arrival_ms}")
        highest = self._highest
        if highest is None:
            ext = transport_seq16 & 0xFFFF
        else:
            ext = _unwrap_near(highest, transport_seq16, 16)
            already_reported = self._next is not None and ext < self._next
            if already_reported or ext <= highest - MAX_REPORT_SPAN:
                self.too_old += 1
                self._stale_run += 1
                if self._stale_run < RESYNC_AFTER_STALE:
                    return
                # A long run of stale numbers is a restarted counter, not reordering.
                self.resyncs += 1
                self._reset()
                highest = None
                ext = transport_seq16 & 0xFFFF
        self._stale_run = 0
        arrivals = self._arrivals
        if ext in arrivals:
            self.duplicates += 1
            return
        arrivals[ext] = arrival_ms
        self.packets += 1
        self._media_ssrc = media_ssrc & 0xFFFFFFFF
        if highest is None or ext > highest:
            self._highest = ext
            # Bound memory when nobody builds feedback: forget what can never be reported.
            if len(arrivals) > 2 * MAX_REPORT_SPAN:
                floor = ext - MAX_REPORT_SPAN
                for seq in [s for s in arrivals if s <= floor]:
                    del arrivals[seq]

    def build_feedback(self, now_ms: float) -> list[bytes]:
        """Feedback packets for everything recorded since the last call ([] if nothing new)."""
        highest = self._highest
        if highest is None:
            return []
        begin = self._next if self._next is not None else min(self._arrivals)
        if begin > highest:
            return []
        begin = max(begin, highest - MAX_REPORT_SPAN + 1)
        arrivals = self._arrivals
        statuses = [(seq, arrivals.get(seq)) for seq in range(begin, highest + 1)]
        arrivals.clear()
        self._next = highest + 1
        self.last_feedback_ms = now_ms

        packets = []
        for segment in _segments(statuses):
            packets.append(
                build_twcc(
                    self._sender_ssrc,
                    self._media_ssrc,
                    segment[0][0] & 0xFFFF,
                    self._feedback_count,
                    [(seq & 0xFFFF, arrival) for seq, arrival in segment],
                )
            )
            self._feedback_count = (self._feedback_count + 1) & 0xFF
        self.feedback_packets += len(packets)
        return packets


def _segments(
    statuses: list[tuple[int, float | None]],
) -> list[list[tuple[int, float | None]]]:
    """Split statuses into packets: at most MAX_STATUSES_PER_PACKET, and a new packet (with
    its own reference time) wherever a receive delta would overflow 16 bits."""
    segments: list[list[tuple[int, float | None]]] = []
    current: list[tuple[int, float | None]] = []
    previous: int | None = None  # ticks of the last received packet in `current`
    for item in statuses:
        ticks = None if item[1] is None else _quarter_ms(item[1])
        split = len(current) >= MAX_STATUSES_PER_PACKET
        if ticks is not None and previous is not None and not _fits_large_delta(ticks - previous):
            split = True
        if current and split:
            segments.append(current)
            current = []
            previous = None
        current.append(item)
        if ticks is not None:
            previous = ticks
    if current:
        segments.append(current)
    return segments


# --- send side --------------------------------------------------------------------------


class SendHistory:
    """What we sent to one subscriber, keyed by transport-wide sequence number.

    Feedback is mapped back to PacketResults. Like libwebrtc's feedback adapter, a packet
    reported lost stays in the history (a later feedback may still report it received);
    a received one is forgotten. Bytes count as in flight until a feedback covers a
    sequence number at or beyond theirs.
    """

    __slots__ = (
        "_history",
        "_highest",
        "_in_flight",
        "_last_acked",
        "_max_age_ms",
        "_next_seq",
        "_reference",
        "feedbacks",
        "packets_sent",
        "unknown_reports",
    )

    def __init__(self, max_age_ms: float = 2000, first_sequence: int = 0) -> None:
        if max_age_ms <= 0:
            raise ValueError(f"max_age_ms must be positive, got {max_age_ms}")
        self._max_age_ms = max_age_ms
        self._next_seq = first_sequence & 0xFFFF
        # unwrapped seq -> (send ms, size, probe cluster), in send order so aging pops the front
        self._history: OrderedDict[int, tuple[float, int, int | None]] = OrderedDict()
        self._highest: int | None = None
        self._last_acked = 0  # set on the first send
        self._in_flight = 0
        self._reference: int | None = None  # unwrapped reference time (64 ms ticks)
        self.packets_sent = 0
        self.feedbacks = 0
        self.unknown_reports = 0  # feedback statuses for packets not (or no longer) known

    def next_sequence(self) -> int:
        seq = self._next_seq
        self._next_seq = (seq + 1) & 0xFFFF
        return seq

    def in_flight_bytes(self) -> int:
        return self._in_flight

    def on_sent(
        self, seq16: int, send_ms: float, size: int, probe_cluster_id: int | None = None
    ) -> None:
        if self._highest is None:
            ext = seq16 & 0xFFFF
            self._highest = ext
            self._last_acked = ext - 1
        else:
            ext = _unwrap_near(self._highest, seq16, 16)
            self._highest = max(self._highest, ext)
        previous = self._history.pop(ext, None)
        if previous is not None and ext > self._last_acked:
            self._in_flight -= previous[1]
        self._history[ext] = (send_ms, size, probe_cluster_id)
        if ext > self._last_acked:
            self._in_flight += size
        self.packets_sent += 1
        self._prune(send_ms)

    def _prune(self, now_ms: float) -> None:
        history = self._history
        cutoff = now_ms - self._max_age_ms
        while history:
            seq = next(iter(history))
            if history[seq][0] >= cutoff:
                break
            _, size, _ = history.popitem(last=False)[1]
            if seq > self._last_acked:
                self._in_flight -= size

    def _ack_through(self, ext: int) -> None:
        """A feedback covered `ext`: everything up to it is no longer in flight."""
        history = self._history
        if ext - self._last_acked <= len(history):
            covered = [s for s in range(self._last_acked + 1, ext + 1) if s in history]
        else:
            covered = [s for s in history if self._last_acked < s <= ext]
        for seq in covered:
            self._in_flight -= history[seq][1]
        self._last_acked = ext

    def on_feedback(self, feedback: TwccFeedback, now_ms: float) -> list[PacketResult]:
        self.feedbacks += 1
        self._prune(now_ms)
        highest = self._highest
        if highest is None:
            return []
        offset = 0
        if any(arrival is not None for _, arrival in feedback.arrivals):
            # The 24-bit reference time wraps (every ~12 days unsigned, or at ~6 days when
            # read signed); unwrapping it across feedbacks keeps arrival times continuous.
            ticks = feedback.reference_time_ms // REFERENCE_TICK_MS
            if self._reference is None:
                self._reference = ticks
            else:
                self._reference = _unwrap_near(self._reference, ticks, 24)
            offset = (self._reference - ticks) * REFERENCE_TICK_MS
        results: list[PacketResult] = []
        history = self._history
        for seq16, arrival_ms in feedback.arrivals:
            # Feedback can only be about packets already sent: unwrap backwards from the newest.
            ext = highest - ((highest - seq16) & 0xFFFF)
            if ext > self._last_acked:
                self._ack_through(ext)
            entry = history.get(ext)
            if entry is None:
                self.unknown_reports += 1
                continue
            send_ms, size, cluster = entry
            if arrival_ms is None:
                results.append(PacketResult(ext, send_ms, size, None, cluster))
            else:
                results.append(PacketResult(ext, send_ms, size, arrival_ms + offset, cluster))
                del history[ext]
        return results
