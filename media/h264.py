"""H264 RTP payload (RFC 6184) keyframe detection for packetization-mode 0/1 streams."""

from __future__ import annotations

from media.rtp import Buffer

NAL_IDR = 5
NAL_SPS = 7
NAL_STAP_A = 24
NAL_FU_A = 28

# A decoder can start from an IDR; SPS counts too because senders put SPS/PPS right before
# the IDR (often in a STAP-A that arrives ahead of the IDR's FU-A fragments).
_KEYFRAME_NAL_TYPES = frozenset((NAL_IDR, NAL_SPS))


def is_h264_keyframe(payload: Buffer) -> bool:
    """True if the payload starts (part of) a keyframe. Never raises on truncated input."""
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == NAL_STAP_A:
        # Aggregation units: 16-bit size followed by a whole NAL unit, repeated. A unit
        # that claims more bytes than remain ends the walk; complete units still count.
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > n:
                return False
            if payload[pos] & 0x1F in _KEYFRAME_NAL_TYPES:
                return True
            pos += size
        return False
    if nal_type == NAL_FU_A:
        if n < 2:
            return False
        fu_header = payload[1]
        return bool(fu_header & 0x80) and fu_header & 0x1F in _KEYFRAME_NAL_TYPES
    return nal_type in _KEYFRAME_NAL_TYPES
