"""Synthetic media: barcode round trips (raw, scaled, through real VP8/H264), tone, y4m."""

from __future__ import annotations

import fractions
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from media.synthetic import (
    COUNTER_MASK,
    CounterVideoTrack,
    ToneAudioTrack,
    decode_barcode,
    draw_counter_frame,
    elapsed_ms32,
    tone_frequency_for,
    write_y4m,
)

CASES = [
    (0, 0),
    (1, 1),
    (255, 65_535),
    (65_535, 2**31),
    (123_456, 4_000_000_000),
    (COUNTER_MASK, 2**32 - 1),
]


@pytest.mark.parametrize(("counter", "capture_ms"), CASES)
def test_raw_roundtrip(counter: int, capture_ms: int) -> None:
    img = draw_counter_frame("alice", 320, 240, counter, capture_ms)
    assert decode_barcode(img) == (counter, capture_ms)
    assert decode_barcode(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)) == (counter, capture_ms)


def test_counter_wraps_to_24_bits() -> None:
    img = draw_counter_frame("alice", 320, 240, COUNTER_MASK + 6, 9)
    assert decode_barcode(img) == (5, 9)


@pytest.mark.parametrize("size", [(80, 60), (160, 120), (333, 250), (640, 480), (1280, 720)])
def test_roundtrip_survives_scaling(size: tuple[int, int]) -> None:
    img = draw_counter_frame("bob", 320, 240, 4242, 777)
    scaled = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    assert decode_barcode(scaled) == (4242, 777)


def test_roundtrip_through_yuv420p_frame() -> None:
    img = draw_counter_frame("carol", 640, 360, 99, 1234)
    i420 = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
    assert decode_barcode(frame.to_ndarray(format="bgr24")) == (99, 1234)
    assert decode_barcode(frame.to_ndarray(format="gray")) == (99, 1234)


def _garbage_images() -> list[npt.NDArray[Any]]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    black = np.zeros((240, 320, 3), dtype=np.uint8)
    white = np.full((240, 320, 3), 255, dtype=np.uint8)
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    blocks = cv2.resize(
        (rng.random((15, 20)) > 0.5).astype(np.uint8) * 255,
        (320, 240),
        interpolation=cv2.INTER_NEAREST,
    )
    return [noise, black, white, gradient, blocks, np.zeros((10, 10), dtype=np.uint8)]


@pytest.mark.parametrize("index", range(6))
def test_garbage_is_rejected(index: int) -> None:
    assert decode_barcode(_garbage_images()[index]) is None


def test_single_flipped_cell_is_rejected() -> None:
    img = draw_counter_frame("dave", 320, 240, 1000, 2000)
    # Data cell (row 1, data column 5) = grid column 7: 16 px cells at 320x240.
    y0, x0 = 16 * 1, 16 * 7
    cell = img[y0 : y0 + 16, x0 : x0 + 16]
    img[y0 : y0 + 16, x0 : x0 + 16] = 255 - cell
    assert decode_barcode(img) is None


def test_blurred_cell_is_rejected_not_guessed() -> None:
    img = draw_counter_frame("erin", 320, 240, 1000, 2000)
    img[16:32, 16 * 5 : 16 * 6] = 128  # a grey data cell is ambiguous
    assert decode_barcode(img) is None


def test_elapsed_ms32_wraps() -> None:
    assert elapsed_ms32(10, 25) == 15
    assert elapsed_ms32(2**32 - 5, 5) == 10
    assert elapsed_ms32(5, 2**32 - 5) == -10


def _codec_roundtrip(encoder: str, decoder: str, bit_rate: int) -> None:
    width, height, frames = 320, 240, 45
    enc = av.CodecContext.create(encoder, "w")
    assert isinstance(enc, av.VideoCodecContext)
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, 15)
    enc.framerate = fractions.Fraction(15, 1)
    enc.bit_rate = bit_rate
    if encoder == "libx264":
        enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    dec = av.CodecContext.create(decoder, "r")
    assert isinstance(dec, av.VideoCodecContext)

    decoded: list[tuple[int, int] | None] = []

    def feed(packets: list[av.Packet]) -> None:
        for packet in packets:
            for out in dec.decode(packet):
                decoded.append(decode_barcode(out.to_ndarray(format="bgr24")))

    expected = [(i * 7919 % (COUNTER_MASK + 1), 3_000_000_000 + i * 66) for i in range(frames)]
    for i, (counter, capture_ms) in enumerate(expected):
        img = draw_counter_frame("vp8-test", width, height, counter, capture_ms)
        frame = av.VideoFrame.from_ndarray(
            np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8), format="yuv420p"
        )
        frame.pts = i
        feed(enc.encode(frame))
    feed(enc.encode(None))
    assert decoded == expected


@pytest.mark.parametrize("bit_rate", [60_000, 150_000])
def test_roundtrip_through_vp8(bit_rate: int) -> None:
    if "libvpx" not in av.codecs_available:
        pytest.skip("PyAV was built without libvpx")
    _codec_roundtrip("libvpx", "vp8", bit_rate)


@pytest.mark.parametrize("bit_rate", [60_000, 150_000])
def test_roundtrip_through_h264(bit_rate: int) -> None:
    if "libx264" not in av.codecs_available:
        reason = "PyAV was built without libx264; H264 round trip not tested"
        print(reason)
        pytest.skip(reason)
    _codec_roundtrip("libx264", "h264", bit_rate)


async def test_counter_track_frames_and_pts() -> None:
    track = CounterVideoTrack("frank", width=320, height=240, fps=50)
    frames = [await track.recv() for _ in range(4)]
    track.stop()
    assert [f.pts for f in frames] == [0, 1800, 3600, 5400]  # 90 kHz / 50 fps
    for i, frame in enumerate(frames):
        assert frame.time_base == fractions.Fraction(1, 90_000)
        assert (frame.width, frame.height, frame.format.name) == (320, 240, "yuv420p")
        decoded = decode_barcode(frame.to_ndarray(format="bgr24"))
        assert decoded is not None and decoded[0] == i
    # capture times come from the clock and do not go backwards
    times = [decode_barcode(f.to_ndarray(format="gray")) for f in frames]
    stamps = [t[1] for t in times if t is not None]
    assert all(elapsed_ms32(a, b) >= 0 for a, b in zip(stamps, stamps[1:], strict=False))
    assert track.frames_sent == 4


async def test_tone_track_frames() -> None:
    track = ToneAudioTrack(frequency=600.0, amplitude=0.5)
    frames = [await track.recv() for _ in range(3)]
    track.stop()
    assert [f.pts for f in frames] == [0, 960, 1920]
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float64)
    for frame in frames:
        assert (frame.sample_rate, frame.samples, frame.format.name) == (48_000, 960, "s16")
        assert frame.layout.name == "mono"
        assert frame.time_base == fractions.Fraction(1, 48_000)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 48_000 / len(samples)
    assert abs(peak_hz - 600.0) < 20
    rms = np.sqrt(np.mean(samples**2)) / 32768
    assert abs(rms - 0.5 / np.sqrt(2)) < 0.01


def test_tone_frequency_is_stable_per_label() -> None:
    assert tone_frequency_for("alice") == tone_frequency_for("alice")
    assert 300 <= tone_frequency_for("bob") <= 1050


def test_write_y4m(tmp_path: Path) -> None:
    path = tmp_path / "counter.y4m"
    width, height, fps, frames = 160, 120, 20, 5
    write_y4m(path, width, height, fps, frames, "y4m")
    data = path.read_bytes()
    header, _, rest = data.partition(b"\n")
    assert header == b"YUV4MPEG2 W160 H120 F20:1 Ip A1:1 C420"
    frame_bytes = width * height * 3 // 2
    assert len(rest) == frames * (len(b"FRAME\n") + frame_bytes)
    for i in range(frames):
        start = i * (6 + frame_bytes)
        assert rest[start : start + 6] == b"FRAME\n"
        yuv = np.frombuffer(rest[start + 6 : start + 6 + frame_bytes], dtype=np.uint8)
        bgr = cv2.cvtColor(yuv.reshape(height * 3 // 2, width), cv2.COLOR_YUV2BGR_I420)
        assert decode_barcode(bgr) == (i, i * 1000 // fps)


def test_odd_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        CounterVideoTrack("x", width=321, height=240)
    with pytest.raises(ValueError):
        write_y4m(tmp_path / "x.y4m", 320, 241, 15, 1, "x")
