"""VP8 RTP payload descriptor (RFC 7741 §4.2): parse, keyframe test, in-place rewrite.

     0 1 2 3 4 5 6 7
    +-+-+-+-+-+-+-+-+
    |X|R|N|S|R| PID | (required)
    +-+-+-+-+-+-+-+-+
 X: |I|L|T|K| RSV   | (optional)
    +-+-+-+-+-+-+-+-+
 I: |M| PictureID   | (optional, 7 or 15 bits)
    +-+-+-+-+-+-+-+-+
 L: |   TL0PICIDX   | (optional)
    +-+-+-+-+-+-+-+-+
T/K:|TID|Y| KEYIDX  | (optional)
    +-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

from dataclasses import dataclass

from media.rtp import Buffer, RtpParseError


@dataclass(slots=True)
class Vp8Descriptor:
    start_of_partition: bool
    partition_id: int
    picture_id: int | None
    picture_id_bits: int  # 0 (absent), 7 or 15
    picture_id_offset: int  # byte offset inside the payload, -1 if absent
    tl0picidx: int | None
    tl0picidx_offset: int  # -1 if absent
    temporal_id: int | None
    layer_sync: bool
    key_idx: int | None
    header_size: int
    is_keyframe: bool


def parse_vp8_descriptor(payload: Buffer) -> Vp8Descriptor:
    """Parse the descriptor at the start of a VP8 RTP payload; RtpParseError if truncated."""
    n = len(payload)
    if n < 1:
        raise RtpParseError("VP8 payload is empty")
    b0 = payload[0]
    pos = 1
    picture_id: int | None = None
    picture_id_bits = 0
    picture_id_offset = -1
    tl0picidx: int | None = None
    tl0picidx_offset = -1
    temporal_id: int | None = None
    layer_sync = False
    key_idx: int | None = None
    if b0 & 0x80:  # X: extended control bits present
        if n < 2:
            raise RtpParseError("VP8 descriptor truncated: X set but no extension byte")
        b1 = payload[1]
        pos = 2
        if b1 & 0x80:  # I: PictureID present
            if pos >= n:
                raise RtpParseError("VP8 descriptor truncated in PictureID")
            picture_id_offset = pos
            first = payload[pos]
            if first & 0x80:  # M: 15-bit PictureID
                if pos + 2 > n:
                    raise RtpParseError("VP8 descriptor truncated in 15-bit PictureID")
                picture_id = ((first & 0x7F) << 8) | payload[pos + 1]
                picture_id_bits = 15
                pos += 2
            else:
                picture_id = first
                picture_id_bits = 7
                pos += 1
        if b1 & 0x40:  # L: TL0PICIDX present
            if pos >= n:
                raise RtpParseError("VP8 descriptor truncated in TL0PICIDX")
            tl0picidx = payload[pos]
            tl0picidx_offset = pos
            pos += 1
        if b1 & 0x30:  # T or K: the TID/Y/KEYIDX byte is present
            if pos >= n:
                raise RtpParseError("VP8 descriptor truncated in TID/KEYIDX")
            b = payload[pos]
            pos += 1
            if b1 & 0x20:
                temporal_id = b >> 6
                layer_sync = bool(b & 0x20)
            if b1 & 0x10:
                key_idx = b & 0x1F
    start = bool(b0 & 0x10)
    partition_id = b0 & 0x07
    # The VP8 payload header's first byte has P (inverse key frame) in bit 0; it only
    # exists at the start of partition 0.
    is_keyframe = start and partition_id == 0 and pos < n and not payload[pos] & 0x01
    return Vp8Descriptor(
        start_of_partition=start,
        partition_id=partition_id,
        picture_id=picture_id,
        picture_id_bits=picture_id_bits,
        picture_id_offset=picture_id_offset,
        tl0picidx=tl0picidx,
        tl0picidx_offset=tl0picidx_offset,
        temporal_id=temporal_id,
        layer_sync=layer_sync,
        key_idx=key_idx,
        header_size=pos,
        is_keyframe=is_keyframe,
    )


def rewrite_vp8_descriptor(
    payload: bytearray | memoryview,
    desc: Vp8Descriptor,
    *,
    picture_id: int | None,
    tl0picidx: int | None,
) -> None:
    """Overwrite PictureID / TL0PICIDX in place, keeping the field widths of `desc`.

    A field the descriptor does not carry cannot be added in place and is left alone;
    None leaves a field unchanged.
    """
    off = desc.picture_id_offset
    if picture_id is not None and off >= 0:
        if desc.picture_id_bits == 15:
            payload[off] = 0x80 | ((picture_id >> 8) & 0x7F)  # keep M set
            payload[off + 1] = picture_id & 0xFF
        else:
            payload[off] = picture_id & 0x7F
    off = desc.tl0picidx_offset
    if tl0picidx is not None and off >= 0:
        payload[off] = tl0picidx & 0xFF
