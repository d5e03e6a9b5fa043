"""Synthetic media for tests, QA and benchmarks.

Every video frame carries a machine-readable barcode in its top rows:

* a 20 x 15 cell grid scaled to the frame (16 x 16 px cells at 320x240), so the decoder samples
  cell centres relative to the image size and survives scaling (simulcast layers, resizes);
* rows 0-3 are barcode rows: ``white, black, 16 data cells, black, white``. The guard cells give
  each row its own black/white reference (lossy codecs shift levels) and let the decoder reject
  images that are not ours;
* the 64 data bits are ``counter (24) | capture_ms (32) | CRC-8 (8)``, most significant bit first,
  white = 1. The CRC rejects frames whose cells were misread.

``capture_ms`` is the sender's wall clock in milliseconds modulo 2**32 (see :func:`clock_ms32`),
so a receiver on the same host can compute one-way latency with :func:`elapsed_ms32`.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import os
import time
import zlib
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from aiortc import AudioStreamTrack, VideoStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

__all__ = [
    "BARCODE_COLS",
    "BARCODE_GRID_ROWS",
    "BARCODE_ROWS",
    "COUNTER_BITS",
    "CounterVideoTrack",
    "ToneAudioTrack",
    "clock_ms32",
    "decode_barcode",
    "draw_counter_frame",
    "elapsed_ms32",
    "tone_frequency_for",
    "write_y4m",
]

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

# Grid geometry, all relative to the frame size.
BARCODE_COLS = 20
BARCODE_GRID_ROWS = 15
BARCODE_ROWS = 4
_DATA_COLS = 16
_DATA_START = 2  # columns 0,1 are the start guard; 18,19 the end guard

COUNTER_BITS = 24
COUNTER_MASK = (1 << COUNTER_BITS) - 1
MS_MASK = 0xFFFFFFFF

# Decoder tolerances (grey levels 0-255). A VP8 frame at 100 kbit/s keeps cell centres within
# a few levels of black/white; natural images rarely have four rows of sharp guard pairs.
_MIN_CONTRAST = 60.0
# A data cell must sit clearly on one side: its level normalised to [0, 1] between the row's
# black and white references must be outside (0.5 - margin, 0.5 + margin).
_AMBIGUITY_MARGIN = 0.2

_WHITE = 255
_BLACK = 0


def clock_ms32() -> int:
    """Wall-clock milliseconds modulo 2**32 (the capture time carried in the barcode)."""
    return int(time.time() * 1000) & MS_MASK


def elapsed_ms32(capture_ms: int, now_ms: int) -> int:
    """Signed difference ``now_ms - capture_ms`` modulo 2**32 (handles wrap-around)."""
    diff = (now_ms - capture_ms) & MS_MASK
    return diff - (1 << 32) if diff >= (1 << 31) else diff


def _crc8(data: bytes) -> int:
    # CRC-8/I-432-1 (poly 0x07, xorout 0x55): the xorout means an all-black payload does not
    # carry a valid CRC, so a black box with guards drawn on it is still rejected.
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ 0x55


def _payload_bits(counter: int, capture_ms: int) -> list[int]:
    body = (counter & COUNTER_MASK).to_bytes(3, "big") + (capture_ms & MS_MASK).to_bytes(4, "big")
    word = int.from_bytes(body + bytes([_crc8(body)]), "big")
    total = BARCODE_ROWS * _DATA_COLS
    return [(word >> (total - 1 - i)) & 1 for i in range(total)]


def _cell_edges(size: int, cells: int) -> list[int]:
    # Rounded edges so the grid covers any size exactly (no drift at odd scales).
    return [round(i * size / cells) for i in range(cells + 1)]


def _row_levels(bits: list[int], row: int) -> list[int]:
    data = bits[row * _DATA_COLS : (row + 1) * _DATA_COLS]
    levels = [_WHITE, _BLACK]
    levels += [_WHITE if b else _BLACK for b in data]
    levels += [_BLACK, _WHITE]
    return levels


def _label_colour(label: str) -> tuple[int, int, int]:
    # Stable per-label hue (crc32, not hash(): that is salted per process) at medium
    # brightness so the text stays readable and the label is recognisable on screen.
    hue = zlib.crc32(label.encode()) % 180
    hsv = np.array([[[hue, 160, 150]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def draw_background(label: str, width: int, height: int) -> npt.NDArray[np.uint8]:
    """The static part of a counter frame (coloured background and the label)."""
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[:] = _label_colour(label)
    scale = max(height / 480.0, 0.3)
    thickness = max(1, round(2 * scale))
    y = round(height * 7 / BARCODE_GRID_ROWS)
    cv2.putText(
        img,
        label,
        (max(2, width // 40), y),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.2 * scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return img


def draw_barcode(img: npt.NDArray[np.uint8], counter: int, capture_ms: int) -> None:
    """Paint the barcode rows of ``img`` (BGR or grey) in place."""
    height, width = img.shape[:2]
    xs = _cell_edges(width, BARCODE_COLS)
    ys = _cell_edges(height, BARCODE_GRID_ROWS)
    bits = _payload_bits(counter, capture_ms)
    for row in range(BARCODE_ROWS):
        for col, level in enumerate(_row_levels(bits, row)):
            img[ys[row] : ys[row + 1], xs[col] : xs[col + 1]] = level


def draw_counter_frame(
    label: str,
    width: int,
    height: int,
    counter: int,
    capture_ms: int,
    background: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.uint8]:
    """A complete BGR frame: background, label, frame number and barcode."""
    img = (background if background is not None else draw_background(label, width, height)).copy()
    scale = max(height / 480.0, 0.3)
    y = round(height * 10 / BARCODE_GRID_ROWS)
    cv2.putText(
        img,
        f"#{counter}",
        (max(2, width // 40), y),
        cv2.FONT_HERSHEY_SIMPLEX,
        1.6 * scale,
        (255, 255, 255),
        max(1, round(2 * scale)),
        cv2.LINE_AA,
    )
    draw_barcode(img, counter, capture_ms)
    return img


def _bgr_to_i420(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420))


def decode_barcode(image: npt.NDArray[Any]) -> tuple[int, int] | None:
    """Read ``(counter, capture_ms)`` from a frame made by :func:`draw_counter_frame`.

    ``image`` is BGR (H x W x 3) or grey/luma (H x W) at any scale of the original geometry.
    Returns None when the guards, contrast or CRC do not match (not one of our frames, or too
    damaged to trust).
    """
    if image.ndim == 3:
        if image.shape[2] != 3:
            return None
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    elif image.ndim == 2:
        gray = image
    else:
        return None
    height, width = gray.shape
    if width < 2 * BARCODE_COLS or height < 2 * BARCODE_GRID_ROWS:
        return None
    cell_w = width / BARCODE_COLS
    cell_h = height / BARCODE_GRID_ROWS

    bits: list[int] = []
    for row in range(BARCODE_ROWS):
        # Central half of each cell: far from the edges where codecs ring and blur.
        y0 = int((row + 0.25) * cell_h)
        y1 = max(y0 + 1, int((row + 0.75) * cell_h))
        band = gray[y0:y1].astype(np.float32)
        levels: list[float] = []
        for col in range(BARCODE_COLS):
            x0 = int((col + 0.25) * cell_w)
            x1 = max(x0 + 1, int((col + 0.75) * cell_w))
            levels.append(float(band[:, x0:x1].mean()))
        whites = (levels[0], levels[-1])
        blacks = (levels[1], levels[-2])
        if min(whites) - max(blacks) < _MIN_CONTRAST:
            return None
        white = (whites[0] + whites[1]) / 2
        black = (blacks[0] + blacks[1]) / 2
        for level in levels[_DATA_START : _DATA_START + _DATA_COLS]:
            norm = (level - black) / (white - black)
            if abs(norm - 0.5) < _AMBIGUITY_MARGIN:
                return None
            bits.append(1 if norm > 0.5 else 0)

    word = 0
    for bit in bits:
        word = (word << 1) | bit
    raw = word.to_bytes(BARCODE_ROWS * _DATA_COLS // 8, "big")
    if _crc8(raw[:7]) != raw[7]:
        return None
    return int.from_bytes(raw[:3], "big"), int.from_bytes(raw[3:7], "big")


class CounterVideoTrack(VideoStreamTrack):
    """A video track whose frames carry a frame counter and capture time as a barcode.

    Frames are yuv420p with 90 kHz pts paced at ``fps`` (aiortc's base class is fixed at 30 fps,
    so the pacing is reimplemented the same way with a configurable rate).
    """

    def __init__(self, label: str, width: int = 320, height: int = 240, fps: int = 15) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs an even width and height")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.label = label
        self.width = width
        self.height = height
        self.fps = fps
        self.frames_sent = 0
        self._background = draw_background(label, width, height)
        self._pace_start: float | None = None
        self._frame_index = 0

    async def next_timestamp(self) -> tuple[int, fractions.Fraction]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pace_start is None:
            self._pace_start = time.monotonic()
            self._frame_index = 0
        else:
            self._frame_index += 1
            # Sleep to the ideal schedule, not "1/fps after the last frame", so slow
            # consumers do not accumulate drift.
            wait = self._pace_start + self._frame_index / self.fps - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        return round(self._frame_index * VIDEO_CLOCK_RATE / self.fps), VIDEO_TIME_BASE

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        counter = self._frame_index & COUNTER_MASK
        img = draw_counter_frame(
            self.label, self.width, self.height, counter, clock_ms32(), self._background
        )
        frame = VideoFrame.from_ndarray(_bgr_to_i420(img), format="yuv420p")
        frame.pts = pts
        frame.time_base = time_base
        self.frames_sent += 1
        return frame


def tone_frequency_for(label: str) -> float:
    """A stable per-participant tone: 300-1050 Hz in 50 Hz steps (one FFT bin at 20 ms)."""
    return 300.0 + 50.0 * (zlib.crc32(label.encode()) % 16)


class ToneAudioTrack(AudioStreamTrack):
    """48 kHz mono s16 sine in 20 ms frames, paced in real time with sample-count pts."""

    SAMPLE_RATE = 48_000
    SAMPLES_PER_FRAME = 960  # 20 ms

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        if not 0.0 <= amplitude <= 1.0:
            raise ValueError("amplitude must be within [0, 1]")
        self.frequency = frequency
        self.amplitude = amplitude
        self.frames_sent = 0
        self._pace_start: float | None = None
        self._sample_index = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pace_start is None:
            self._pace_start = time.monotonic()
            self._sample_index = 0
        else:
            self._sample_index += self.SAMPLES_PER_FRAME
            wait = self._pace_start + self._sample_index / self.SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        n = np.arange(self._sample_index, self._sample_index + self.SAMPLES_PER_FRAME)
        # Phase from the absolute sample index keeps the sine continuous across frames.
        phase = np.mod(n * (self.frequency / self.SAMPLE_RATE), 1.0)
        samples = np.sin(2 * math.pi * phase) * (self.amplitude * 32767)
        data = samples.astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(data, format="s16", layout="mono")
        frame.sample_rate = self.SAMPLE_RATE
        frame.pts = self._sample_index
        frame.time_base = fractions.Fraction(1, self.SAMPLE_RATE)
        self.frames_sent += 1
        return frame


def write_y4m(
    path: str | os.PathLike[str], width: int, height: int, fps: int, frames: int, label: str
) -> None:
    """Write ``frames`` counter frames as a 4:2:0 YUV4MPEG2 file.

    The barcode's capture_ms is the frame's nominal offset (``index * 1000 // fps``): a file has
    no capture time, and a player looping it restarts both the counter and this offset.
    """
    if width % 2 or height % 2:
        raise ValueError("4:2:0 needs an even width and height")
    if fps <= 0 or frames < 0:
        raise ValueError("fps must be positive and frames non-negative")
    background = draw_background(label, width, height)
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode("ascii"))
        for index in range(frames):
            img = draw_counter_frame(
                label,
                width,
                height,
                index & COUNTER_MASK,
                (index * 1000 // fps) & MS_MASK,
                background,
            )
            out.write(b"FRAME\n")
            out.write(_bgr_to_i420(img).tobytes())
