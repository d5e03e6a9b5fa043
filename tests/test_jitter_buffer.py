"""Adaptive jitter buffer (jitter/buffer.py) on synthetic RTP traces."""

from __future__ import annotations

import ast
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from jitter.buffer import Frame, JitterBuffer
from media.rtp import build_rtp_packet

VIDEO_RATE = 90_000
FRAME_MS = 33.0
TS_STEP = 3000
SSRC = 0x1234


@dataclass(frozen=True)
class Pkt:
    frame: int
    seq: int  # 16-bit
    data: bytes


def vp8_payload(*, start: bool, keyframe: bool, tag: int) -> bytes:
    # Descriptor byte (S bit, partition 0) then the VP8 header byte whose bit 0 is P
    # (inverse keyframe); only meaningful on the first packet of a frame.
    return bytes((0x10 if start else 0x00, 0x00 if keyframe else 0x01, tag & 0xFF))


def video_trace(
    n_frames: int,
    per_frame: int = 3,
    *,
    start_seq: int = 1000,
    start_ts: int = 5000,
    keyframes: frozenset[int] = frozenset({0}),
    ssrc: int = SSRC,
) -> list[Pkt]:
    out: list[Pkt] = []
    seq = start_seq
    for f in range(n_frames):
        ts = (start_ts + f * TS_STEP) & 0xFFFFFFFF
        for i in range(per_frame):
            payload = vp8_payload(start=i == 0, keyframe=f in keyframes, tag=f)
            data = build_rtp_packet(
                payload_type=96,
                marker=i == per_frame - 1,
                sequence_number=seq & 0xFFFF,
                timestamp=ts,
                ssrc=ssrc,
                payload=payload,
            )
            out.append(Pkt(f, seq & 0xFFFF, data))
            seq += 1
    return out


def opus_trace(n: int, *, start_seq: int = 100) -> list[Pkt]:
    return [
        Pkt(
            i,
            (start_seq + i) & 0xFFFF,
            build_rtp_packet(
                payload_type=111,
                marker=False,
                sequence_number=(start_seq + i) & 0xFFFF,
                timestamp=960 * i,
                ssrc=SSRC,
                payload=bytes((i & 0xFF,)),
            ),
        )
        for i in range(n)
    ]


def run(
    jb: JitterBuffer, arrivals: list[tuple[float, bytes]], *, tail_ms: float = 2000.0
) -> tuple[list[Frame], list[bool]]:
    """Insert in arrival order, popping after each packet and every 5 ms in between."""
    frames: list[Frame] = []
    flags: list[bool] = []
    arrivals = sorted(arrivals, key=lambda a: a[0])
    end = arrivals[-1][0] + tail_ms
    now = 0.0
    i = 0
    while now <= end:
        while i < len(arrivals) and arrivals[i][0] <= now:
            jb.insert(arrivals[i][1], arrivals[i][0])
            i += 1
        result = jb.pop(now)
        frames.extend(result.frames)
        flags.append(result.keyframe_needed)
        now += 5.0
    return frames, flags


def on_time(trace: list[Pkt], interval_ms: float = FRAME_MS) -> list[tuple[float, bytes]]:
    return [(p.frame * interval_ms, p.data) for p in trace]


def tags(frames: list[Frame]) -> list[int]:
    return [f.packets[0][2] for f in frames]


# --- basics -------------------------------------------------------------------------------


@pytest.mark.parametrize("start_seq", [65530, 65531, 65532, 65533, 65534, 65535, 0, 1])
def test_in_order_frames_across_sequence_wrap(start_seq: int) -> None:
    jb = JitterBuffer("vp8", VIDEO_RATE)
    frames, flags = run(jb, on_time(video_trace(10, start_seq=start_seq)))
    assert tags(frames) == list(range(10))
    assert [f.first_seq for f in frames] == [start_seq + 3 * k for k in range(10)]
    assert all(f.last_seq == f.first_seq + 2 and len(f.packets) == 3 for f in frames)
    assert [f.timestamp for f in frames] == [5000 + TS_STEP * k for k in range(10)]
    assert [f.keyframe for f in frames] == [True] + [False] * 9
    assert not any(flags)
    assert jb.stats()["frames_out"] == 10 and jb.stats()["received"] == 30
    assert jb.buffered_frames == 0


def test_frame_released_only_at_playout_time() -> None:
    jb = JitterBuffer("vp8", VIDEO_RATE, min_delay_ms=40)
    for p in video_trace(1):
        jb.insert(p.data, 100.0)
    assert jb.pop(139.0).frames == []
    assert len(jb.pop(140.0).frames) == 1


def test_timestamp_wrap() -> None:
    jb = JitterBuffer("vp8", VIDEO_RATE)
    frames, _ = run(jb, on_time(video_trace(8, start_ts=2**32 - 2 * TS_STEP - 7)))
    assert tags(frames) == list(range(8))
    stamps = [f.timestamp for f in frames]
    assert all(b - a == TS_STEP for a, b in zip(stamps, stamps[1:], strict=False))
    assert stamps[-1] > 2**32


# order of packet indices (frame-major, 3 per frame) as they arrive, all within 2 ms
REORDERINGS = {
    "within_frame": [0, 1, 2, 5, 3, 4, 6, 7, 8, 9, 10, 11],
    "marker_first": [2, 1, 0, 3, 4, 5, 8, 7, 6, 9, 10, 11],
    "across_frames": [0, 1, 2, 6, 7, 3, 8, 4, 5, 9, 11, 10],
    "whole_frame_swapped": [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11],
}


@pytest.mark.parametrize("start_seq", [65533, 1000])
@pytest.mark.parametrize("order", list(REORDERINGS.values()), ids=list(REORDERINGS))
def test_reordering(order: list[int], start_seq: int) -> None:
    trace = video_trace(4, start_seq=start_seq)
    jb = JitterBuffer("vp8", VIDEO_RATE)
    arrivals = [(p.frame * FRAME_MS + order.index(i) * 0.1, p.data) for i, p in enumerate(trace)]
    frames, flags = run(jb, arrivals)
    assert tags(frames) == [0, 1, 2, 3]
    assert [f.packets for f in frames] == [
        tuple(trace[3 * k + i].data[12:] for i in range(3)) for k in range(4)
    ]
    s = jb.stats()
    assert (s["lost"], s["discarded"], s["late"]) == (0, 0, 0)
    assert not any(flags)


def test_duplicates_are_counted_and_ignored() -> None:
    trace = video_trace(5)
    arrivals = on_time(trace) + [(p.frame * FRAME_MS + 1, p.data) for p in trace]
    jb = JitterBuffer("vp8", VIDEO_RATE)
    frames, _ = run(jb, arrivals)
    assert tags(frames) == list(range(5))
    assert all(len(f.packets) == 3 for f in frames)
    assert jb.stats()["duplicates"] == 15
    assert jb.stats()["received"] == 30


def test_malformed_packet_is_counted() -> None:
    jb = JitterBuffer("vp8", VIDEO_RATE)
    jb.insert(b"\x00" * 5, 0.0)
    assert jb.stats()["malformed"] == 1 and jb.stats()["received"] == 0


# --- loss and retransmission --------------------------------------------------------------


@pytest.mark.parametrize(
    ("retransmit_at", "delivered", "late"),
    [
        (None, [0, 1, 2, 3, 9, 10, 11], 0),  # never comes: 4 lost, 5..8 discarded
        (60.0, list(range(12)), 0),  # well inside the bound: delivered
        (300.0, [0, 1, 2, 3, 9, 10, 11], 1),  # after the bound: too late, counted
    ],
)
def test_lost_packet_retransmission(
    retransmit_at: float | None, delivered: list[int], late: int
) -> None:
    # Frames 0 and 9 are keys; packet 1 of frame 4 (index 13) goes missing.
    trace = video_trace(12, keyframes=frozenset({0, 9}))
    jb = JitterBuffer("vp8", VIDEO_RATE)
    jb.set_rtt(50)  # bound = 95 ms
    assert jb.rtt_bound_ms == 95
    arrivals = on_time(trace)
    dropped = arrivals.pop(13)
    if retransmit_at is not None:
        arrivals.append((4 * FRAME_MS + retransmit_at, dropped[1]))
    frames, flags = run(jb, arrivals)
    s = jb.stats()
    assert tags(frames) == delivered
    loss = len(delivered) < 12
    assert s["lost"] == (1 if loss else 0)
    assert s["discarded"] == (4 if loss else 0)
    assert any(flags) == loss
    assert flags[-1] is False  # cleared by the keyframe
    assert s["late"] == late


def test_loss_discards_delta_frames_until_keyframe() -> None:
    trace = video_trace(10, keyframes=frozenset({0, 7}))
    jb = JitterBuffer("vp8", VIDEO_RATE)
    jb.set_rtt(20)
    arrivals = [a for i, a in enumerate(on_time(trace)) if i != 7]  # middle of frame 2
    frames, flags = run(jb, arrivals)
    assert tags(frames) == [0, 1, 7, 8, 9]
    s = jb.stats()
    assert s["lost"] == 1
    assert s["discarded"] == 4  # frames 3, 4, 5, 6
    first_true = flags.index(True)
    # keyframe_needed stays up until frame 7 comes out, then clears
    assert all(flags[first_true : first_true + 20])
    assert flags[-1] is False


def test_burst_loss() -> None:
    trace = video_trace(12, keyframes=frozenset({0, 8}))
    jb = JitterBuffer("vp8", VIDEO_RATE)
    jb.set_rtt(30)
    # frames 3, 4 and the first packet of 5 vanish in one burst
    arrivals = [a for i, a in enumerate(on_time(trace)) if not 9 <= i <= 15]
    frames, flags = run(jb, arrivals)
    assert tags(frames) == [0, 1, 2, 8, 9, 10, 11]
    s = jb.stats()
    assert s["lost"] >= 1
    assert s["discarded"] == 3  # 5 (its tail), 6, 7
    assert any(flags) and not flags[-1]


def test_missing_reports_sixteen_bit_numbers_until_the_bound() -> None:
    trace = video_trace(3, start_seq=65534)
    jb = JitterBuffer("vp8", VIDEO_RATE)
    jb.set_rtt(100)  # bound 170 ms
    for i, p in enumerate(trace):
        if i not in (1, 3):  # seqs 65535 and 1
            jb.insert(p.data, 10.0)
    assert jb.missing(10.0) == [65535, 1]
    assert jb.missing(179.0) == [65535, 1]
    assert jb.missing(180.0) == []
    jb.insert(trace[3].data, 20.0)
    assert jb.missing(20.0) == [65535]


@pytest.mark.parametrize(("rtt", "bound"), [(0, 20), (10, 35), (100, 170), (320, 500), (1000, 500)])
def test_rtt_bound(rtt: float, bound: float) -> None:
    jb = JitterBuffer("vp8", VIDEO_RATE, min_delay_ms=20, max_delay_ms=500)
    jb.set_rtt(rtt)
    assert jb.rtt_bound_ms == bound


# --- clock drift, restart, jitter ---------------------------------------------------------


@pytest.mark.parametrize("drift", [0.001, -0.001])
def test_clock_drift_keeps_buffer_bounded(drift: float) -> None:
    n = 6000
    trace = video_trace(n, per_frame=1, keyframes=frozenset({0}))
    interval = FRAME_MS / (1 + drift)  # a fast sender clock packs frames closer in real time
    jb = JitterBuffer("vp8", VIDEO_RATE, min_delay_ms=20, max_delay_ms=500)
    out = 0
    peak = 0
    for p in trace:
        now = p.frame * interval
        jb.insert(p.data, now)
        out += len(jb.pop(now).frames)
        peak = max(peak, jb.buffered_frames)
        assert 20 <= jb.target_delay_ms <= 500
    out += len(jb.pop(n * interval + 1000).frames)
    assert out == n
    assert peak <= 2
    assert jb.target_delay_ms < 25


def test_restart_on_new_ssrc() -> None:
    first = video_trace(3)
    second = video_trace(3, start_seq=40000, start_ts=123, ssrc=0xBEEF)
    arrivals = on_time(first) + [(200 + t, d) for t, d in on_time(second)]
    jb = JitterBuffer("vp8", VIDEO_RATE)
    frames, flags = run(jb, arrivals)
    assert tags(frames) == [0, 1, 2, 0, 1, 2]
    assert jb.stats()["restarts"] == 1
    assert jb.stats()["late"] == 0
    assert not any(flags)


def test_restart_on_sequence_jump_with_same_ssrc() -> None:
    first = video_trace(3, start_seq=100)
    second = video_trace(3, start_seq=100 + 9 + 3001, start_ts=5000 + 3 * TS_STEP)
    arrivals = on_time(first) + [(200 + t, d) for t, d in on_time(second)]
    jb = JitterBuffer("vp8", VIDEO_RATE)
    frames, _ = run(jb, arrivals)
    assert tags(frames) == [0, 1, 2, 0, 1, 2]
    assert jb.stats()["restarts"] == 1
    assert jb.stats()["lost"] == 0


def test_big_but_legal_jump_is_loss_not_restart() -> None:
    first = video_trace(3, start_seq=100)
    second = video_trace(3, start_seq=100 + 9 + 2000, start_ts=5000 + 3 * TS_STEP)
    arrivals = on_time(first) + [(200 + t, d) for t, d in on_time(second)]
    jb = JitterBuffer("vp8", VIDEO_RATE)
    frames, _ = run(jb, arrivals)
    assert jb.stats()["restarts"] == 0
    # the hole is given up on, then the new run's keyframe resyncs and its deltas follow
    assert tags(frames) == [0, 1, 2, 0, 1, 2]
    assert jb.stats()["lost"] == 1


def jittery_opus(n: int, spread_ms: float, seed: int) -> list[tuple[float, bytes]]:
    rng = random.Random(seed)
    arrivals = []
    last = 0.0
    for p in opus_trace(n):
        last = max(last, p.frame * 20.0 + rng.uniform(0, spread_ms))  # FIFO network queue
        arrivals.append((last, p.data))
    return arrivals


@pytest.mark.parametrize(
    ("spread_ms", "max_delay", "low", "high"),
    [
        (0.0, 200.0, 20.0, 20.0),
        (2.0, 200.0, 20.0, 30.0),
        (80.0, 200.0, 60.0, 199.0),
        (2000.0, 100.0, 100.0, 100.0),
    ],
)
def test_target_delay_follows_jitter(
    spread_ms: float, max_delay: float, low: float, high: float
) -> None:
    jb = JitterBuffer("opus", 48_000, min_delay_ms=20, max_delay_ms=max_delay)
    for now, data in jittery_opus(500, spread_ms, seed=7):
        jb.insert(data, now)
        jb.pop(now)
    assert low <= jb.target_delay_ms <= high
    assert jb.stats()["target_delay_ms"] == jb.target_delay_ms


def test_target_shrinks_back_when_jitter_calms() -> None:
    jb = JitterBuffer("opus", 48_000, min_delay_ms=20, max_delay_ms=300)
    for now, data in jittery_opus(300, 100.0, seed=1):
        jb.insert(data, now)
    high = jb.target_delay_ms
    base = 300 * 20.0 + 200
    for p in opus_trace(600, start_seq=400)[300:]:
        # the same stream continuing with a steady network
        jb.insert(p.data, base + (p.frame - 300) * 20.0)
    assert high > 60
    assert jb.target_delay_ms < 25


# --- audio and H264 -----------------------------------------------------------------------


def test_opus_loss_is_concealed() -> None:
    trace = opus_trace(20)
    arrivals = [(p.frame * 20.0, p.data) for p in trace if p.frame not in (5, 6, 12)]
    jb = JitterBuffer("opus", 48_000)
    frames, flags = run(jb, arrivals)
    assert [f.packets[0][0] for f in frames] == [i for i in range(20) if i not in (5, 6, 12)]
    s = jb.stats()
    assert s["concealed"] == 3 and s["lost"] == 3 and s["discarded"] == 0
    assert not any(flags)
    assert all(not f.keyframe for f in frames)


def h264_packet(seq: int, ts: int, marker: bool, payload: bytes) -> bytes:
    return build_rtp_packet(
        payload_type=102,
        marker=marker,
        sequence_number=seq,
        timestamp=ts,
        ssrc=SSRC,
        payload=payload,
    )


IDR_SINGLE = [bytes((0x65, 1, 2))]
SPS_PPS_IDR = [bytes((0x67, 1)), bytes((0x68, 1)), bytes((0x65, 1))]
FU_A_IDR = [bytes((0x7C, 0x85, 1)), bytes((0x7C, 0x05, 2)), bytes((0x7C, 0x45, 3))]
FU_A_DELTA = [bytes((0x7C, 0x81, 1)), bytes((0x7C, 0x41, 2))]
SINGLE_DELTA = [bytes((0x41, 1))]


@pytest.mark.parametrize(
    ("frames_in", "keys_out", "discarded"),
    [
        ([IDR_SINGLE, SINGLE_DELTA, FU_A_DELTA], [True, False, False], 0),
        ([FU_A_IDR, FU_A_DELTA], [True, False], 0),
        ([SPS_PPS_IDR, SINGLE_DELTA], [True, False], 0),
        ([SINGLE_DELTA, FU_A_DELTA, FU_A_IDR, SINGLE_DELTA], [True, False], 2),
    ],
)
def test_h264_keyframe_detection(
    frames_in: list[list[bytes]], keys_out: list[bool], discarded: int
) -> None:
    arrivals = []
    seq = 65534
    for f, payloads in enumerate(frames_in):
        for i, payload in enumerate(payloads):
            data = h264_packet(seq & 0xFFFF, f * TS_STEP, i == len(payloads) - 1, payload)
            arrivals.append((f * FRAME_MS, data))
            seq += 1
    jb = JitterBuffer("video/H264", VIDEO_RATE)
    frames, flags = run(jb, arrivals)
    assert [f.keyframe for f in frames] == keys_out
    assert jb.stats()["discarded"] == discarded
    assert any(flags) == bool(discarded)
    assert not flags[-1]


# --- construction and purity --------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "rate", "lo", "hi"),
    [("vp9", 90_000, 20, 500), ("vp8", 0, 20, 500), ("opus", 48_000, 50, 10)],
)
def test_bad_configuration(codec: str, rate: int, lo: float, hi: float) -> None:
    with pytest.raises(ValueError):
        JitterBuffer(codec, rate, lo, hi)


def test_buffer_imports_no_io_library() -> None:
    source = (Path(__file__).resolve().parent.parent / "jitter" / "buffer.py").read_text()
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert "media" in names
    assert not names & {"asyncio", "aiortc", "aioice", "aiohttp", "av"}
