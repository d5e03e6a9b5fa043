"""The QA client's measurements (tools/qa_metrics.py) and report writing (tools/qa_report.py)."""

from __future__ import annotations

import fractions
import json
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from media.synthetic import decode_barcode, draw_background, draw_counter_frame
from tools.qa_metrics import (
    BOTH,
    CLEAN,
    CORRUPT_PSNR_DB,
    DOWNLINK,
    UPLINK,
    AudioSample,
    AudioSummary,
    FreezeDetector,
    PathResult,
    VideoSample,
    audio_series,
    evaluate_targets,
    find_freezes,
    path_class,
    psnr_db,
    summarize_audio,
    summarize_video,
    unwrap_timestamps,
    video_series,
)
from tools.qa_report import analyse_run, format_summary, write_report

# ----------------------------------------------------------------------------- freezes


def test_freeze_detector_follows_chromium_rule() -> None:
    det = FreezeDetector(nominal_interval_ms=66.7)
    t = 0
    assert det.on_frame(t) is None
    for _ in range(10):  # steady 15 fps: average 66 ms -> threshold max(198, 216) = 216
        t += 66
        assert det.on_frame(t) is None
    assert det.threshold_ms() == pytest.approx(216)
    t += 210  # below the threshold: not a freeze (and it joins the average)
    assert det.on_frame(t) is None
    threshold = det.threshold_ms()
    t += int(threshold) + 5
    freeze = det.on_frame(t)
    assert freeze is not None and freeze.duration_ms == int(threshold) + 5
    # The freeze stays out of the average.
    assert det.threshold_ms() == pytest.approx(threshold)


def test_freeze_threshold_at_low_frame_rate_is_three_intervals() -> None:
    det = FreezeDetector(nominal_interval_ms=200)
    for i in range(8):
        det.on_frame(i * 200)
    assert det.threshold_ms() == pytest.approx(600)  # 3 x 200 beats 200 + 150
    assert det.on_frame(7 * 200 + 590) is None
    # That interval joined the average: (7 x 200 + 590) / 8, times three.
    assert det.threshold_ms() == pytest.approx(3 * (7 * 200 + 590) / 8)
    assert det.on_frame(7 * 200 + 590 + 740) is None
    assert det.on_frame(7 * 200 + 590 + 740 + 1000) is not None  # now above 3 x 303


def test_early_stall_counts_with_nominal_interval() -> None:
    # Only three frames, then nothing: still a freeze up to the window's end.
    freezes = find_freezes([0, 66, 133], 0, 5000, 66.7)
    assert len(freezes) == 1
    assert freezes[0].start_ms == 133 and freezes[0].end_ms == 5000


def test_freezes_are_clipped_to_the_window_and_no_frames_is_all_frozen() -> None:
    times = list(range(0, 2000, 66)) + list(range(3000, 6000, 66))
    freezes = find_freezes(times, 2500, 6000, 66.7)
    assert [(f.start_ms, f.end_ms) for f in freezes] == [(2500, 3000)]
    assert [(f.start_ms, f.end_ms) for f in find_freezes([], 0, 1000, 66.7)] == [(0, 1000)]
    assert [(f.start_ms, f.end_ms) for f in find_freezes([5, 10], 100, 900, 66.7)] == [(100, 900)]


# ----------------------------------------------------------------------------- video


def _frames(
    start: int, count: int, step: int = 66, first_counter: int = 0, psnr: float = 45.0
) -> list[VideoSample]:
    return [
        VideoSample(start + i * step, first_counter + i, 80 + i % 5, psnr) for i in range(count)
    ]


def test_video_summary_counts_freezes_latency_psnr_and_corruption() -> None:
    samples = _frames(0, 30)  # 0 .. 1914 ms
    samples += _frames(2914, 30, first_counter=30)  # a 1 s freeze
    samples.append(VideoSample(2914 + 30 * 66, None, None, None))  # barcode unreadable
    samples.append(VideoSample(2914 + 31 * 66, 61, 90, 18.0))  # decoded on a lost reference
    s = summarize_video(samples, 0, 5000, nominal_fps=15)
    assert s.frames == 62
    assert s.fps == pytest.approx(62 / 5)
    assert s.freeze_count == 1 and s.freeze_total_ms == 1000
    assert s.freeze_percent == pytest.approx(20.0)
    assert s.longest_gap_ms == 1000
    assert s.corrupt_frames == 2 and s.undecodable_frames == 1
    assert s.latency_p50_ms is not None and 80 <= s.latency_p50_ms <= 84
    assert s.latency_max_ms == 90
    assert s.psnr_min_db == 18.0
    assert s.counters_skipped == 1  # 60: the unreadable one
    assert s.counter_regressions == 0


def test_video_summary_sees_skipped_and_regressing_counters() -> None:
    samples = [VideoSample(i * 66, c, 50, 40.0) for i, c in enumerate([1, 2, 5, 6, 4, 7])]
    s = summarize_video(samples, 0, 1000, nominal_fps=15)
    assert s.counters_skipped == 2  # 3 and 4 never shown in order
    assert s.counter_regressions == 1


def test_video_series_bins_per_second() -> None:
    samples = _frames(0, 15) + _frames(2000, 15, first_counter=15, psnr=20.0)
    series = video_series(samples, 0, 3000, nominal_fps=15)
    assert series["t_s"] == [0.0, 1.0, 2.0]
    assert series["fps"] == [15.0, 0.0, 15.0]
    assert series["latency_p50_ms"][1] is None
    assert series["corrupt"] == [0, 0, 15]
    assert series["psnr_mean_db"] == [45.0, None, 20.0]
    # The 1 s hole is frozen time, split over the bins it covers.
    assert sum(series["frozen_ms"]) == 2000 - 14 * 66
    assert series["frozen_ms"][1] == 1000


def test_psnr() -> None:
    a = np.full((8, 8), 100, np.uint8)
    assert psnr_db(a, a) == 100.0
    b = a.copy()
    b[0, 0] = 110  # MSE = 100 / 64
    assert psnr_db(a, b) == pytest.approx(10 * np.log10(255**2 / (100 / 64)))
    with pytest.raises(ValueError):
        psnr_db(a, np.zeros((4, 4), np.uint8))


def _i420(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)


def test_corrupt_threshold_separates_clean_from_lost_reference_frames() -> None:
    """The threshold's justification, re-measured: VP8 through libvpx (aiortc's codec) at
    640x360; clean frames score far above it, frames decoded after a lost reference frame far
    below, and several of those still carry a readable barcode."""
    width, height = 640, 360
    background = draw_background("bedside", width, height)
    refs = [
        _i420(draw_counter_frame("bedside", width, height, i, 1000 + 66 * i, background))
        for i in range(30)
    ]
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.bit_rate = 500_000
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.gop_size = 3000
    # aiortc's Vp8Encoder settings (CBR at its default 500 kbit/s).
    encoder.options = {
        "deadline": "realtime",
        "cpu-used": "-6",
        "lag-in-frames": "0",
        "bufsize": "500000",
        "minrate": "500000",
        "maxrate": "500000",
        "static-thresh": "1",
        "undershoot-pct": "100",
        "overshoot-pct": "15",
    }
    packets: list[list[bytes]] = []
    for i, ref in enumerate(refs):
        frame = av.VideoFrame.from_ndarray(ref, format="yuv420p")
        frame.pts = i * 6000
        frame.time_base = fractions.Fraction(1, 90_000)
        packets.append([bytes(p) for p in encoder.encode(frame)])

    def decode(drop: set[int]) -> list[tuple[int, float, bool]]:
        decoder = av.CodecContext.create("libvpx", "r")
        out = []
        for i, frame_packets in enumerate(packets):
            if i in drop:
                continue
            for data in frame_packets:
                for frame in decoder.decode(av.Packet(data)):
                    luma = frame.to_ndarray()[:height]
                    score = psnr_db(luma, refs[i][:height])
                    out.append((i, score, decode_barcode(luma) is not None))
        return out

    clean = decode(set())
    assert len(clean) == len(refs)
    assert min(score for _, score, _ in clean) > CORRUPT_PSNR_DB + 8
    damaged = [r for r in decode({10}) if r[0] > 10]
    assert damaged and max(score for _, score, _ in damaged) < CORRUPT_PSNR_DB - 3
    assert any(readable for _, _, readable in damaged)  # the barcode alone would miss them


# ----------------------------------------------------------------------------- audio


def test_unwrap_timestamps() -> None:
    assert unwrap_timestamps([0xFFFFFC40, 0, 960]) == [0xFFFFFC40, 1 << 32, (1 << 32) + 960]
    assert unwrap_timestamps([1920, 960, 2880]) == [1920, 960, 2880]


def test_audio_loss_holes_and_stalls() -> None:
    base = 0xFFFF0000  # wraps during the run
    received = [i for i in range(250) if i not in {10, 50, 51, 52, 120}]
    samples = [AudioSample(1000 + 20 * i, (base + 960 * i) & 0xFFFFFFFF) for i in received]
    samples.append(samples[3])  # a duplicate (e.g. RED recovery racing the original)
    s = summarize_audio(samples, 0, 10_000)
    assert s.frames_expected == 250 and s.frames_received == 245
    assert s.loss_percent == pytest.approx(2.0)
    assert s.longest_gap_ms == 60
    assert s.longest_stall_ms == 10_000 - (1000 + 20 * 249)  # audio ended before the window
    series = audio_series(samples, 1000, 6000)
    assert series["t_s"][:2] == [0.0, 1.0]
    assert series["loss_percent"][0] == pytest.approx(100 * 1 / 50)  # frame 10 in second 0
    assert series["loss_percent"][1] == pytest.approx(100 * 3 / 50)  # 50-52 in second 1


def test_no_audio_is_total_loss() -> None:
    s = summarize_audio([], 0, 5000)
    assert s.loss_percent == 100.0 and s.frames_received == 0


# ----------------------------------------------------------------------------- targets


def _path(
    cls: str,
    freeze_percent: float = 0.0,
    corrupt: int = 0,
    gap: int = 100,
    loss: float = 0.0,
    hole: int = 0,
) -> PathResult:
    video = summarize_video(_frames(0, 10), 0, 1000, 15)
    video = type(video)(**{**video.as_dict(), "freeze_percent": freeze_percent})
    video = type(video)(**{**video.as_dict(), "corrupt_frames": corrupt, "longest_gap_ms": gap})
    audio = AudioSummary(100, 100, loss, hole, 20)
    return PathResult("bedside", "attending", cls, video, audio)


def test_targets_at_moderate_loss() -> None:
    ok = evaluate_targets(0.05, [_path(UPLINK)], {"bedside": True})
    assert ok.passed
    assert {v.target for v in ok.verdicts} >= {"freeze time", "corrupt frames", "call stays up"}
    frozen = evaluate_targets(0.05, [_path(UPLINK, freeze_percent=1.2)], {"bedside": True})
    assert not frozen.passed
    assert [v.target for v in frozen.verdicts if not v.passed] == ["freeze time"]
    corrupt = evaluate_targets(0.05, [_path(UPLINK, corrupt=1)], {"bedside": True})
    assert [v.target for v in corrupt.verdicts if not v.passed] == ["corrupt frames"]


def test_targets_at_heavy_loss_skip_quality_but_need_the_call_up() -> None:
    heavy = evaluate_targets(0.2, [_path(DOWNLINK, freeze_percent=30, corrupt=3)], {"b": True})
    assert heavy.passed  # freezes and corruption are not the target at 20 %
    dropped = evaluate_targets(0.2, [_path(DOWNLINK)], {"b": False})
    assert [v.target for v in dropped.verdicts if not v.passed] == ["call stays up"]
    stalled = evaluate_targets(0.2, [_path(DOWNLINK, gap=3500)], {"b": True})
    assert [v.target for v in stalled.verdicts if not v.passed] == ["frames keep arriving"]
    choppy = evaluate_targets(0.2, [_path(DOWNLINK, loss=6.0)], {"b": True})
    holes = evaluate_targets(0.2, [_path(DOWNLINK, hole=120)], {"b": True})
    for result in (choppy, holes):
        assert [v.target for v in result.verdicts if not v.passed] == ["audio continuous"]


def test_path_class() -> None:
    assert path_class(True, False) == UPLINK
    assert path_class(False, True) == DOWNLINK
    assert path_class(True, True) == BOTH
    assert path_class(False, False) == CLEAN


# ----------------------------------------------------------------------------- report


def _participant(name: str, senders: list[str], start: int, seconds: int) -> dict[str, Any]:
    video = {s: [[start + i * 66, i, 70, 45.0] for i in range(seconds * 15)] for s in senders}
    audio = {s: [[start + i * 20, i * 960] for i in range(seconds * 50)] for s in senders}
    timeline = [[start + i * 1000, "connected", "connected", True, i * 0.1] for i in range(seconds)]
    return {
        "name": name,
        "error": None,
        "timeline": timeline,
        "video": video,
        "audio": audio,
        "audio_rtp": audio,
        "frames_sent": {"video": seconds * 15, "audio": seconds * 50},
    }


def test_analyse_and_write_report(tmp_path: Path) -> None:
    names = ["bedside", "attending", "specialist1"]
    people = [_participant(n, [o for o in names if o != n], 10_000, 6) for n in names]
    people[1]["video"]["bedside"] = people[1]["video"]["bedside"][:30]  # bedside->attending stops
    run = analyse_run(people, {"bedside"}, 10_000, 15_000, 15, 0.05)
    by_label = {p["label"]: p for p in run["paths"]}
    assert len(by_label) == 6
    assert by_label["bedside→attending (uplink)"]["video"]["freeze_percent"] > 50
    assert by_label["attending→bedside (downlink)"]["class"] == DOWNLINK
    assert by_label["attending→specialist1 (clean)"]["video"]["freeze_count"] == 0
    assert not run["passed"]
    assert all(p["connected_throughout"] for p in run["participants"])
    assert run["participants"][0]["cpu_percent"] == pytest.approx(10.0)

    run.update(profile="lossy-5", nack=True, description="5 %", server={"cpu_percent": 3.0})
    off = json.loads(json.dumps(run))
    off["nack"] = False
    report = {"created": "now", "config": {"duration": 5}, "runs": [run, off]}
    written = write_report(report, tmp_path / "out")
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [r["nack"] for r in data["runs"]] == [True, False]
    page = (tmp_path / "out" / "report.html").read_text()
    pngs = [name for name in written if name.endswith(".png")]
    assert len(pngs) == 1  # one figure per profile, NACK on/off side by side
    png = (tmp_path / "out" / pngs[0]).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert pngs[0] in page and "NACK off: fps" in page and "FAIL" in page
    text = format_summary(report)
    assert "lossy-5 / NACK+RTX on" in text and "lossy-5 / NACK+RTX off" in text
    assert "FAIL freeze time: bedside→attending (uplink)" in text


def test_a_resumed_signaling_outage_keeps_the_call_up_a_rejoin_does_not() -> None:
    names = ["bedside", "attending"]
    people = [_participant(n, [o for o in names if o != n], 10_000, 6) for n in names]
    bedside, attending = people
    # The bedside's socket was away 10.5-12.3 s and came back as the same session.
    for row in bedside["timeline"][1:3]:
        row[3] = False
    bedside["reconnects"] = [
        {"dropped_ms": 10_500, "back_ms": 12_300, "attempts": 3, "outcome": "resumed"}
    ]
    # The attending's came back only as a new session (new peer connections).
    attending["timeline"][2][3] = False
    attending["reconnects"] = [
        {"dropped_ms": 11_900, "back_ms": 12_100, "attempts": 1, "outcome": "rejoined"},
        {"dropped_ms": 1_000, "back_ms": 2_000, "attempts": 1, "outcome": "resumed"},  # before
    ]
    run = analyse_run(people, {"bedside"}, 10_000, 15_000, 15, 0.2)
    facts = {p["name"]: p for p in run["participants"]}
    assert facts["bedside"]["connected_throughout"] is True
    assert (facts["bedside"]["resumes"], facts["bedside"]["rejoins"]) == (1, 0)
    assert facts["bedside"]["longest_away_ms"] == 1800
    assert facts["attending"]["connected_throughout"] is False
    assert (facts["attending"]["resumes"], facts["attending"]["rejoins"]) == (0, 1)
    stays_up = {v["subject"]: v for v in run["verdicts"] if v["target"] == "call stays up"}
    assert stays_up["bedside"]["passed"]
    assert stays_up["bedside"]["measured"] == (
        "connected (signaling resumed 1x, longest away 1.8 s)"
    )
    assert not stays_up["attending"]["passed"]
    text = format_summary(
        {"runs": [dict(run, profile="lossy-20", nack=True)], "created": "now", "config": {}}
    )
    assert "bedside up, resumes 1, rejoins 0 (away 1.8 s)" in text
    assert "attending DROPPED, resumes 0, rejoins 1" in text


# ----------------------------------------------------------------------------- client NACK retries


def test_nack_retry_asks_again_every_interval_up_to_ten_times() -> None:
    from tools.qa_participant import NackRetry

    retry = NackRetry(interval_ms=100, max_tries=10)
    assert retry.due({5, 6}, 0) == []  # aiortc NACKed them when the hole appeared
    assert retry.due({5, 6}, 99) == []
    assert retry.due({5, 6}, 100) == [5, 6]
    assert retry.due({6}, 250) == [6]  # 5 was repaired
    asked = [t for t in range(300, 3000, 50) if retry.due({6}, t)]
    assert len(asked) == 7  # 1 by aiortc + 2 above + 7 = 10 in all
    assert retry.sent == 10
    assert retry.due({6, 7}, 5000) == []  # 6 gave up; 7 is new
    assert retry.due({7}, 5100) == [7]
    assert retry.due(set(), 5150) == []  # 7 repaired: forgotten
    assert retry.due({7}, 5200) == [] and retry.due({7}, 5300) == [7]  # a fresh hole again
