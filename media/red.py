"""RTP payload for redundant audio data (RED, RFC 2198): parse, build, strip, recover.

Pure: no I/O library imports. A RED payload is a list of block headers followed by the
blocks' data in the same order:

* every block but the last has a 4-byte header: F=1 (1 bit), block payload type (7 bits),
  timestamp offset (14 bits, how far the block's media lies before the packet's timestamp),
  block length (10 bits);
* the last block (the *primary* encoding, the packet's own frame) has a 1-byte header:
  F=0 and its payload type; its length is whatever is left and its offset is 0.

Redundant blocks come oldest first. Every malformed input raises :class:`RedParseError`
(an ``RtpParseError``, hence a ``ValueError``), never ``IndexError``.

Recovery assumption (the same one libwebrtc's RED-for-Opus makes): the sender puts the
payloads of its *immediately preceding* packets into each packet, one block per packet, the
most recent last. So in a packet with sequence number N and ``count`` redundant blocks, block
``k`` (0 = oldest) carries the frame of packet ``N - (count - k)``. A sender that skips a
previous frame (for example one whose timestamp offset no longer fits in 14 bits after a DTX
pause) drops it from the *oldest* end, which keeps the mapping true. Offsets that do not
grow strictly from the newest block to the oldest contradict the assumption; such blocks are
not used for recovery.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Sequence
from dataclasses import dataclass

from media.rtp import Buffer, RtpParseError, SequenceUnwrapper

MAX_TIMESTAMP_OFFSET = (1 << 14) - 1
MAX_BLOCK_LENGTH = (1 << 10) - 1
SEQ_MASK = 0xFFFF
TS_MASK = 0xFFFFFFFF


class RedParseError(RtpParseError):
    """The bytes are not a well-formed RFC 2198 payload."""


@dataclass(frozen=True, slots=True)
class RedBlock:
    payload_type: int
    timestamp_offset: int  # samples before the packet's timestamp; 0 for the primary
    data: bytes


@dataclass(frozen=True, slots=True)
class RedPayload:
    redundant: tuple[RedBlock, ...]  # oldest first
    primary: RedBlock


@dataclass(frozen=True, slots=True)
class RecoveredPacket:
    """A frame to hand to the decoder as if it had arrived in its own RTP packet."""

    sequence_number: int
    timestamp: int
    payload_type: int
    data: bytes


def _headers(payload: Buffer) -> tuple[list[tuple[int, int, int]], int, int]:
    """Redundant block headers (pt, offset, length), primary pt, offset of the first data."""
    size = len(payload)
    pos = 0
    blocks: list[tuple[int, int, int]] = []
    while True:
        if pos >= size:
            raise RedParseError(f"RED payload ends inside its block headers ({size} bytes)")
        first = payload[pos]
        if not first & 0x80:
            return blocks, first & 0x7F, pos + 1
        if pos + 4 > size:
            raise RedParseError(f"RED block header cut short at byte {pos} of {size}")
        word = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        blocks.append((first & 0x7F, word >> 10, word & 0x3FF))
        pos += 4


def parse_red(payload: Buffer) -> RedPayload:
    """Split a RED payload into its redundant blocks and the primary block."""
    headers, primary_pt, pos = _headers(payload)
    need = pos + sum(length for _, _, length in headers)
    if need > len(payload):
        raise RedParseError(
            f"RED block lengths add up to {need} bytes but the payload has {len(payload)}"
        )
    redundant = []
    for pt, offset, length in headers:
        redundant.append(RedBlock(pt, offset, bytes(payload[pos : pos + length])))
        pos += length
    return RedPayload(tuple(redundant), RedBlock(primary_pt, 0, bytes(payload[pos:])))


def primary(payload: Buffer) -> tuple[int, bytes]:
    """(payload type, data) of the primary block: what a subscriber without RED gets."""
    headers, primary_pt, pos = _headers(payload)
    start = pos + sum(length for _, _, length in headers)
    if start > len(payload):
        raise RedParseError(
            f"RED block lengths add up to {start} bytes but the payload has {len(payload)}"
        )
    return primary_pt, bytes(payload[start:])


def rewrite_payload_types(payload: Buffer, payload_type: int) -> bytes:
    """The same RED payload with every block's payload type set to ``payload_type``.

    Forwarding RED to a subscriber whose Opus payload type differs from the publisher's only
    touches the header bytes; the data is copied once.
    """
    if not 0 <= payload_type <= 0x7F:
        raise ValueError(f"payload type {payload_type} out of range 0..127")
    headers, _, pos = _headers(payload)
    need = pos + sum(length for _, _, length in headers)
    if need > len(payload):
        raise RedParseError(
            f"RED block lengths add up to {need} bytes but the payload has {len(payload)}"
        )
    out = bytearray(payload)
    for i in range(0, pos, 4):  # headers sit at 0, 4, 8, ...; the last one is 1 byte
        out[i] = (out[i] & 0x80) | payload_type
    return bytes(out)


def build_red(primary_pt: int, primary_data: Buffer, redundant: Sequence[RedBlock] = ()) -> bytes:
    """A RED payload: ``redundant`` (oldest first) then the primary block.

    Raises ValueError for an offset or length that the 14/10-bit fields cannot carry.
    """
    if not 0 <= primary_pt <= 0x7F:
        raise ValueError(f"payload type {primary_pt} out of range 0..127")
    head = bytearray()
    for block in redundant:
        if not 0 <= block.payload_type <= 0x7F:
            raise ValueError(f"payload type {block.payload_type} out of range 0..127")
        if not 0 <= block.timestamp_offset <= MAX_TIMESTAMP_OFFSET:
            raise ValueError(f"timestamp offset {block.timestamp_offset} does not fit 14 bits")
        if len(block.data) > MAX_BLOCK_LENGTH:
            raise ValueError(f"block of {len(block.data)} bytes does not fit 10 bits")
        head.append(0x80 | block.payload_type)
        word = (block.timestamp_offset << 10) | len(block.data)
        head += word.to_bytes(3, "big")
    head.append(primary_pt)
    return bytes(head) + b"".join(b.data for b in redundant) + bytes(primary_data)


def recover(
    sequence_number: int, timestamp: int, red: RedPayload, received: Container[int]
) -> list[RecoveredPacket]:
    """The redundant blocks of packet ``sequence_number`` that stand in for missing packets.

    ``received`` holds the 16-bit sequence numbers already seen. Block k of ``count`` maps to
    sequence number N - (count - k) (see the module docstring); blocks whose offsets do not
    grow strictly towards the oldest, or with an offset of 0, are ignored (with everything
    older than them). Result: oldest first, sequence numbers and timestamps wrapped.
    """
    out: list[RecoveredPacket] = []
    count = len(red.redundant)
    newer_offset = 0
    # Walk newest -> oldest so one inconsistent block cuts off the older ones.
    for distance in range(1, count + 1):
        block = red.redundant[count - distance]
        if block.timestamp_offset <= newer_offset:
            break
        newer_offset = block.timestamp_offset
        seq = (sequence_number - distance) & SEQ_MASK
        if seq in received:
            continue
        out.append(
            RecoveredPacket(
                seq,
                (timestamp - block.timestamp_offset) & TS_MASK,
                block.payload_type,
                block.data,
            )
        )
    out.reverse()
    return out


class RedEncoder:
    """Wraps successive frames of one stream into RED carrying the previous ``distance``.

    ``wrap`` is called once per outgoing packet, in sending order. Frames too far back for a
    14-bit offset, or too big for a 10-bit length, are left out (oldest first).
    """

    __slots__ = ("_distance", "_history", "packets")

    def __init__(self, distance: int = 1) -> None:
        if not 1 <= distance <= 8:
            raise ValueError(f"RED distance must be 1..8, got {distance}")
        self._distance = distance
        self._history: deque[tuple[int, int, bytes]] = deque(maxlen=distance)
        self.packets = 0

    @property
    def distance(self) -> int:
        return self._distance

    def wrap(self, payload_type: int, timestamp: int, data: Buffer) -> bytes:
        blocks: list[RedBlock] = []
        for pt, ts, old in self._history:
            offset = (timestamp - ts) & TS_MASK
            fits = 0 < offset <= MAX_TIMESTAMP_OFFSET and len(old) <= MAX_BLOCK_LENGTH
            # Only a contiguous run ending at the newest frame keeps the seq mapping true.
            if not fits:
                blocks.clear()
                continue
            blocks.append(RedBlock(pt, offset, old))
        frame = bytes(data)
        self._history.append((payload_type, timestamp, frame))
        self.packets += 1
        return build_red(payload_type, frame, blocks)


class RedReceiver:
    """Unwraps one stream's RED packets and recovers lost packets from their redundancy.

    ``on_packet`` returns the frames to hand on, oldest first: recovered ones, then the
    packet's primary (left out when that frame was handed on already). Only packets newer
    than the first one received are recovered (the redundancy of the first packet describes
    frames sent before we listened), and a sequence number is recovered at most once.
    Counters: ``packets``, ``recovered``, ``duplicates`` (a late original after its recovery,
    or a retransmission).
    """

    __slots__ = ("_first", "_seen", "_seen_order", "_unwrap", "duplicates", "packets", "recovered")

    WINDOW = 256  # sequence numbers remembered

    def __init__(self) -> None:
        self._unwrap = SequenceUnwrapper()
        self._first: int | None = None
        self._seen: set[int] = set()  # unwrapped sequence numbers
        self._seen_order: deque[int] = deque()
        self.packets = 0
        self.recovered = 0
        self.duplicates = 0

    def _remember(self, ext: int) -> None:
        self._seen.add(ext)
        self._seen_order.append(ext)
        if len(self._seen_order) > self.WINDOW:
            self._seen.discard(self._seen_order.popleft())

    def on_packet(
        self, sequence_number: int, timestamp: int, payload: Buffer
    ) -> list[RecoveredPacket]:
        """Raises RedParseError for a malformed payload (nothing is remembered then)."""
        red = parse_red(payload)
        ext = self._unwrap.unwrap(sequence_number)
        if self._first is None:
            self._first = ext
        self.packets += 1
        out: list[RecoveredPacket] = []
        first = self._first
        seen = self._seen
        for packet in recover(sequence_number, timestamp, red, _Never()):
            back = (sequence_number - packet.sequence_number) & SEQ_MASK
            candidate = ext - back
            if candidate <= first or candidate in seen:
                continue
            self._remember(candidate)
            self.recovered += 1
            out.append(packet)
        if ext in seen:
            # Recovered earlier (or a retransmission): the decoder has this frame already.
            self.duplicates += 1
            return out
        self._remember(ext)
        out.append(
            RecoveredPacket(
                sequence_number & SEQ_MASK,
                timestamp & TS_MASK,
                red.primary.payload_type,
                red.primary.data,
            )
        )
        return out


class _Never:
    """An empty container: ``recover`` then returns every usable block."""

    def __contains__(self, item: object) -> bool:
        return False


class RedPacketView:
    """One incoming RED payload as its subscribers need it, each form computed once.

    Validated on construction (RedParseError), so forwarding it cannot fail later.
    """

    __slots__ = ("_primary", "_retyped", "payload")

    def __init__(self, payload: Buffer) -> None:
        self.payload = bytes(payload)
        self._primary = primary(self.payload)
        self._retyped: dict[int, bytes] = {}

    @property
    def primary_payload_type(self) -> int:
        return self._primary[0]

    @property
    def primary_data(self) -> bytes:
        """The Opus frame alone: what a subscriber without RED gets."""
        return self._primary[1]

    def with_payload_type(self, payload_type: int) -> bytes:
        """The RED payload with its blocks' payload type set to the subscriber's Opus type."""
        out = self._retyped.get(payload_type)
        if out is None:
            out = self._retyped[payload_type] = rewrite_payload_types(self.payload, payload_type)
        return out
