"""Codec dispatch for payload inspection (keyframe detection)."""

from __future__ import annotations

from media.h264 import is_h264_keyframe
from media.rtp import Buffer, RtpParseError
from media.vp8 import parse_vp8_descriptor

# Video codecs whose keyframes we can recognise; a forwarder only waits for these.
KEYFRAME_AWARE_CODECS = frozenset(("vp8", "h264"))


def codec_name(codec: str) -> str:
    """Lower-cased mime subtype: "video/VP8" -> "vp8", "H264" -> "h264"."""
    return codec.rpartition("/")[2].lower()


def supports_keyframe_detection(codec: str) -> bool:
    return codec_name(codec) in KEYFRAME_AWARE_CODECS


def is_keyframe(codec: str, payload: Buffer) -> bool:
    """True if this RTP payload starts a keyframe. False for audio and unknown codecs,
    and for payloads too broken to tell."""
    name = codec_name(codec)
    if name == "vp8":
        try:
            return parse_vp8_descriptor(payload).is_keyframe
        except RtpParseError:
            return False
    if name == "h264":
        return is_h264_keyframe(payload)
    return False
