"""Real encodes turned into RTP packets, for recording tests (aiortc's own encoders)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.opus import OpusEncoder
from aiortc.codecs.vpx import Vp8Encoder
from av import AudioFrame, VideoFrame

from media.rtp import build_rtp_packet
from media.synthetic import draw_background, draw_counter_frame


@dataclass(frozen=True)
class RtpItem:
    packet: bytes
    seq: int
    send_ms: float
    frame: int  # index of the encoded frame (video counter or audio frame number)


def video_rtp(
    codec: str,
    frames: int,
    *,
    fps: int = 15,
    size: tuple[int, int] = (320, 240),
    label: str = "rec",
    first_seq: int = 65_500,
    first_ts: int = 4_294_960_000,
    ssrc: int = 0x1234,
    keyframe_every: int = 0,
    start_ms: float = 0.0,
) -> list[RtpItem]:
    """`frames` barcode frames (counter = index) encoded with aiortc's VP8/H264 encoder."""
    encoder = Vp8Encoder() if codec == "vp8" else H264Encoder()
    width, height = size
    background = draw_background(label, width, height)
    out: list[RtpItem] = []
    seq = first_seq
    for i in range(frames):
        img = draw_counter_frame(label, width, height, i, 0, background)
        frame = VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        frame.pts = i * 90_000 // fps
        frame.time_base = Fraction(1, 90_000)
        force = keyframe_every > 0 and i > 0 and i % keyframe_every == 0
        payloads, ts = encoder.encode(frame, force_keyframe=force)
        for j, payload in enumerate(payloads):
            packet = build_rtp_packet(
                payload_type=96,
                marker=j == len(payloads) - 1,
                sequence_number=seq & 0xFFFF,
                timestamp=(first_ts + ts) & 0xFFFFFFFF,
                ssrc=ssrc,
                payload=payload,
            )
            out.append(RtpItem(packet, seq, start_ms + i * 1000.0 / fps, i))
            seq += 1
    return out


def opus_rtp(
    frames: int,
    *,
    freq: float = 440.0,
    first_seq: int = 100,
    first_ts: int = 123_456,
    ssrc: int = 0x5678,
    start_ms: float = 0.0,
) -> list[RtpItem]:
    """`frames` 20 ms Opus frames of a sine tone (aiortc's encoder)."""
    encoder = OpusEncoder()
    out: list[RtpItem] = []
    seq = first_seq
    for i in range(frames):
        n = np.arange(i * 960, (i + 1) * 960)
        samples = (np.sin(2 * math.pi * freq * n / 48_000) * 12_000).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = i * 960
        frame.time_base = Fraction(1, 48_000)
        payloads, ts = encoder.encode(frame)
        for payload in payloads:
            packet = build_rtp_packet(
                payload_type=111,
                marker=False,
                sequence_number=seq & 0xFFFF,
                timestamp=(first_ts + ts) & 0xFFFFFFFF,
                ssrc=ssrc,
                payload=payload,
            )
            out.append(RtpItem(packet, seq, start_ms + i * 20.0, i))
            seq += 1
    return out
