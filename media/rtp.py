"""Byte-level RTP helpers for the forwarding hot path (RFC 3550, RFC 8285, RFC 4588).

Pure: no I/O library imports. Packets stay bytes; a header is parsed once into a small
record and rewritten in place by the caller. Every malformed input raises RtpParseError
(a ValueError), never IndexError or struct.error, so the shell can count it as "malformed".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

RTP_HEADER_SIZE = 12
RTP_VERSION = 2

ONE_BYTE_PROFILE = 0xBEDE
# RFC 8285 two-byte form: 0x100 followed by 4 "appbits" the sender may set.
TWO_BYTE_PROFILE = 0x1000
TWO_BYTE_PROFILE_MASK = 0xFFF0

_FIXED = struct.Struct("!BBHII")
_U16 = struct.Struct("!H")
_U16X2 = struct.Struct("!HH")
# Precompiled so the CSRC path never formats a struct string per packet.
_CSRC_STRUCTS = tuple(struct.Struct(f"!{n}I") for n in range(16))

Buffer = bytes | bytearray | memoryview


class RtpParseError(ValueError):
    """The bytes are not a well-formed RTP packet (or payload header)."""


@dataclass(slots=True)
class RtpHeader:
    payload_type: int
    marker: bool
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    payload_offset: int
    # End of the payload inside the packet, padding excluded.
    payload_end: int
    padding_size: int
    # Extension id -> raw value; empty when the packet carries no (RFC 8285) extension.
    extensions: dict[int, bytes]

    @property
    def payload_size(self) -> int:
        return self.payload_end - self.payload_offset


def _parse_one_byte_extensions(data: bytes, out: dict[int, bytes]) -> None:
    pos = 0
    end = len(data)
    while pos < end:
        b = data[pos]
        if b == 0:  # padding between elements
            pos += 1
            continue
        ext_id = b >> 4
        if ext_id == 15:
            # RFC 8285 §4.2: id 15 is reserved; processing of the block stops here.
            return
        length = (b & 0x0F) + 1
        pos += 1
        if pos + length > end:
            raise RtpParseError(
                f"one-byte header extension id {ext_id} needs {length} bytes, only {end - pos} left"
            )
        out[ext_id] = data[pos : pos + length]
        pos += length


def _parse_two_byte_extensions(data: bytes, out: dict[int, bytes]) -> None:
    pos = 0
    end = len(data)
    while pos < end:
        ext_id = data[pos]
        if ext_id == 0:  # padding between elements
            pos += 1
            continue
        if pos + 2 > end:
            raise RtpParseError(f"two-byte header extension id {ext_id} has no length byte")
        length = data[pos + 1]
        pos += 2
        if pos + length > end:
            raise RtpParseError(
                f"two-byte header extension id {ext_id} needs {length} bytes, only {end - pos} left"
            )
        out[ext_id] = data[pos : pos + length]
        pos += length


def parse_rtp_header(data: Buffer) -> RtpHeader:
    """Parse and validate the RTP header of `data` (bytes, bytearray or memoryview)."""
    n = len(data)
    if n < RTP_HEADER_SIZE:
        raise RtpParseError(f"RTP packet too short: {n} bytes, need at least {RTP_HEADER_SIZE}")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
    if b0 >> 6 != RTP_VERSION:
        raise RtpParseError(f"RTP version is {b0 >> 6}, expected {RTP_VERSION}")
    cc = b0 & 0x0F
    pos = RTP_HEADER_SIZE + 4 * cc
    if pos > n:
        raise RtpParseError(f"RTP packet truncated in its CSRC list ({cc} CSRCs, {n} bytes)")
    csrcs: tuple[int, ...] = _CSRC_STRUCTS[cc].unpack_from(data, RTP_HEADER_SIZE) if cc else ()

    extensions: dict[int, bytes] = {}
    if b0 & 0x10:
        if pos + 4 > n:
            raise RtpParseError("RTP packet truncated in its header extension preamble")
        profile, words = _U16X2.unpack_from(data, pos)
        start = pos + 4
        end = start + 4 * words
        if end > n:
            raise RtpParseError(
                f"RTP header extension claims {4 * words} bytes, only {n - start} present"
            )
        if profile == ONE_BYTE_PROFILE:
            # A bytes copy of the (small) block makes every value slice a bytes object.
            _parse_one_byte_extensions(bytes(data[start:end]), extensions)
        elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
            _parse_two_byte_extensions(bytes(data[start:end]), extensions)
        # Any other profile is a RFC 3550 extension we do not understand: skip it.
        pos = end

    payload_end = n
    padding = 0
    if b0 & 0x20:
        padding = data[n - 1]
        if padding == 0 or padding > n - pos:
            raise RtpParseError(
                f"RTP padding length {padding} is invalid ({n - pos} bytes after the header)"
            )
        payload_end = n - padding

    return RtpHeader(
        payload_type=b1 & 0x7F,
        marker=bool(b1 & 0x80),
        sequence_number=seq,
        timestamp=ts,
        ssrc=ssrc,
        csrcs=csrcs,
        payload_offset=pos,
        payload_end=payload_end,
        padding_size=padding,
        extensions=extensions,
    )


def _extension_block(extensions: Sequence[tuple[int, bytes]]) -> bytes:
    one_byte = True
    for ext_id, value in extensions:
        length = len(value)
        if not 1 <= ext_id <= 255:
            raise ValueError(f"header extension id {ext_id} out of range 1..255")
        if length > 255:
            raise ValueError(f"header extension id {ext_id} value too long ({length} > 255)")
        if ext_id > 14 or not 1 <= length <= 16:
            one_byte = False
    parts: list[bytes] = []
    if one_byte:
        profile = ONE_BYTE_PROFILE
        for ext_id, value in extensions:
            parts.append(bytes(((ext_id << 4) | (len(value) - 1),)))
            parts.append(bytes(value))
    else:
        profile = TWO_BYTE_PROFILE
        for ext_id, value in extensions:
            parts.append(bytes((ext_id, len(value))))
            parts.append(bytes(value))
    body = b"".join(parts)
    pad = -len(body) % 4
    if pad:
        body += b"\x00" * pad
    return _U16X2.pack(profile, len(body) // 4) + body


def build_rtp_packet(
    *,
    payload_type: int,
    marker: bool,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    extensions: Sequence[tuple[int, bytes]] = (),
    payload: Buffer,
    csrcs: Sequence[int] = (),
    padding_size: int = 0,
) -> bytes:
    """Serialize an RTP packet.

    Header extensions use the one-byte form when every id is 1..14 and every value 1..16
    bytes, else the two-byte form; no extension block at all for an empty sequence.
    `padding_size` (0..255) appends RFC 3550 padding whose last byte is its length.
    """
    if not 0 <= payload_type <= 127:
        raise ValueError(f"payload type {payload_type} out of range 0..127")
    if not 0 <= sequence_number <= 0xFFFF:
        raise ValueError(f"sequence number {sequence_number} out of range 0..65535")
    if not 0 <= timestamp <= 0xFFFFFFFF:
        raise ValueError(f"timestamp {timestamp} out of range 0..2**32-1")
    if not 0 <= ssrc <= 0xFFFFFFFF:
        raise ValueError(f"ssrc {ssrc} out of range 0..2**32-1")
    if len(csrcs) > 15:
        raise ValueError(f"at most 15 CSRCs, got {len(csrcs)}")
    if not 0 <= padding_size <= 255:
        raise ValueError(f"padding size {padding_size} out of range 0..255")
    b0 = 0x80 | len(csrcs)
    if padding_size:
        b0 |= 0x20
    parts: list[Buffer] = []
    if extensions:
        b0 |= 0x10
    parts.append(
        _FIXED.pack(b0, (0x80 if marker else 0) | payload_type, sequence_number, timestamp, ssrc)
    )
    if csrcs:
        parts.append(_CSRC_STRUCTS[len(csrcs)].pack(*csrcs))
    if extensions:
        parts.append(_extension_block(extensions))
    parts.append(payload)
    if padding_size:
        parts.append(bytes(padding_size - 1) + bytes((padding_size,)))
    return b"".join(parts)


def is_rtcp(data: Buffer) -> bool:
    """RFC 5761 §4 demultiplexing: RTCP packet types 192..223 are 64..95 once M is masked."""
    return len(data) >= 2 and 64 <= (data[1] & 0x7F) <= 95


# --- RTX (RFC 4588) ---------------------------------------------------------------------


def unwrap_rtx_payload(payload: Buffer) -> tuple[int, bytes]:
    """Split an RTX payload into (original sequence number, original payload)."""
    if len(payload) < 2:
        raise RtpParseError(f"RTX payload too short: {len(payload)} bytes, need at least 2")
    return _U16.unpack_from(payload, 0)[0], bytes(payload[2:])


def wrap_rtx_payload(original_seq: int, payload: Buffer) -> bytes:
    """Prefix the original sequence number (OSN) to a payload for retransmission."""
    if not 0 <= original_seq <= 0xFFFF:
        raise ValueError(f"original sequence number {original_seq} out of range 0..65535")
    return _U16.pack(original_seq) + bytes(payload)


# --- wrap-around ------------------------------------------------------------------------


class Unwrapper:
    """Maps an N-bit wrapping counter onto an unbounded, order-preserving int.

    The first value is kept as is. Each later value is placed at the nearest distance
    (forward or backward, up to half the range) from the previous one, so reordering
    across a wrap works both ways. Values before the first one may come out negative.
    Exactly half the range counts as forward.
    """

    __slots__ = ("_half", "_last", "_mask", "_modulus")

    def __init__(self, bits: int) -> None:
        if bits < 2:
            raise ValueError("an unwrapper needs at least 2 bits")
        self._modulus = 1 << bits
        self._mask = self._modulus - 1
        self._half = self._modulus >> 1
        self._last: int | None = None

    @property
    def last(self) -> int | None:
        """The most recently returned value (None before the first)."""
        return self._last

    def unwrap(self, value: int) -> int:
        last = self._last
        if last is None:
            value &= self._mask
            self._last = value
            return value
        delta = (value - last) & self._mask
        if delta > self._half:
            delta -= self._modulus
        last += delta
        self._last = last
        return last


class SequenceUnwrapper(Unwrapper):
    """16-bit RTP sequence numbers -> monotonic int."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(16)


class TimestampUnwrapper(Unwrapper):
    """32-bit RTP timestamps -> monotonic int."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(32)


# --- well-known header extension values -------------------------------------------------


def abs_send_time_value(now_ms: int) -> bytes:
    """The 3-byte abs-send-time value: seconds in 6.18 fixed point, wrapping every 64 s.

    Receivers only use differences, so any millisecond clock works as the base.
    """
    # (ms << 18) / 1000, rounded to the nearest 1/2**18 s like libwebrtc does.
    value = (((now_ms << 18) + 500) // 1000) & 0xFFFFFF
    return value.to_bytes(3, "big")


def parse_audio_level(value: Buffer) -> tuple[bool, int]:
    """RFC 6464 client-to-mixer audio level: (voice activity flag, level in -dBov 0..127)."""
    if len(value) < 1:
        raise RtpParseError("audio level extension value is empty")
    b = value[0]
    return bool(b & 0x80), b & 0x7F


def overwrite_extension(packet: bytearray, ext_id: int, value: bytes) -> bool:
    """Replace the value of one-byte header extension `ext_id` in place (same length only).

    For fields only known when the packet leaves (transport-wide sequence numbers assigned
    by the pacer). False when the packet has no such element of that length.
    """
    if len(packet) < 12 or not packet[0] & 0x10:
        return False
    offset = 12 + 4 * (packet[0] & 0x0F)
    if len(packet) < offset + 4 or packet[offset : offset + 2] != b"\xbe\xde":
        return False
    end = offset + 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    if end > len(packet):
        return False
    pos = offset + 4
    while pos < end:
        byte = packet[pos]
        if byte == 0:  # padding between elements
            pos += 1
            continue
        element_id, length = byte >> 4, (byte & 0x0F) + 1
        if element_id == 15:
            return False
        if element_id == ext_id:
            if length != len(value) or pos + 1 + length > end:
                return False
            packet[pos + 1 : pos + 1 + length] = value
            return True
        pos += 1 + length
    return False
