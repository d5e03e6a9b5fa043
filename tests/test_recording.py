"""media/recording.py (pure) and media/recording_writer.py (av shell): RTP from real encodes in,
WebM/Matroska out without re-encoding, read back and decoded with av."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import av
import pytest
from recording_media import RtpItem, opus_rtp, video_rtp

from media.recording import (
    REANCHOR_MS,
    CloseFile,
    MuxPlanner,
    OpenFile,
    Sample,
    TrackTimeline,
    WriteSample,
    annex_b_units,
    h264_dimensions,
    h264_frame,
    opus_head,
    vp8_dimensions,
    vp8_frame,
)
from media.recording_writer import ParticipantRecorder
from media.rtp import RtpParseError
from media.synthetic import decode_barcode

# --- depacketizing ----------------------------------------------------------------------------


def test_vp8_frame_strips_every_descriptor() -> None:
    first = b"\x90\x80\x81\x23" + b"\x10\x02\x00\x9d\x01\x2a"  # X, 15-bit PictureID, S=1
    second = b"\x80\x80\x81\x23" + b"\xaa\xbb"  # continuation
    assert vp8_frame([first, second]) == b"\x10\x02\x00\x9d\x01\x2a\xaa\xbb"
    with pytest.raises(RtpParseError):
        vp8_frame([b"\x90"])  # truncated descriptor
    with pytest.raises(RtpParseError):
        vp8_frame([b"\x10"])  # descriptor only: no frame


def test_h264_single_stap_and_fu_a_become_annex_b() -> None:
    sps, pps = b"\x67\x42\xc0\x1e\xaa", b"\x68\xce\x3c\x80"
    stap = b"\x18" + struct.pack(">H", len(sps)) + sps + struct.pack(">H", len(pps)) + pps
    idr = b"\x65" + bytes(range(1, 40))
    fu_indicator = (idr[0] & 0xE0) | 28
    fus = [
        bytes([fu_indicator, 0x80 | 5]) + idr[1:15],
        bytes([fu_indicator, 5]) + idr[15:30],
        bytes([fu_indicator, 0x40 | 5]) + idr[30:],
    ]
    single = b"\x06\x05\x01\x02"  # SEI
    out = h264_frame([stap, single, *fus])
    start = b"\x00\x00\x00\x01"
    assert out == start + sps + start + pps + start + single + start + idr
    assert annex_b_units(out) == [sps, pps, single, idr]


@pytest.mark.parametrize(
    "payloads",
    [
        [b""],
        [b"\x7c\x05abc"],  # FU-A continuation without its start
        [b"\x18\x00\x09\x67"],  # STAP-A unit longer than the packet
        [b"\x18\x00"],  # STAP-A truncated in a size
        [b"\x19\x00\x01\x00"],  # STAP-B: not in packetization-mode 1
        [b"\x7c"],  # FU-A header missing
    ],
)
def test_h264_malformed_payloads_are_refused(payloads: list[bytes]) -> None:
    with pytest.raises(RtpParseError):
        h264_frame(payloads)


def test_vp8_dimensions_from_a_keyframe_only() -> None:
    key = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", 640 | 0x4000, 360) + b"\x00"
    assert vp8_dimensions(key) == (640, 360)  # the scale bits are not part of the size
    assert vp8_dimensions(b"\x11" + key[1:]) is None  # P bit: an interframe
    assert vp8_dimensions(key[:8]) is None


def test_h264_dimensions_from_real_encoder_sps() -> None:
    for size in [(320, 240), (176, 144), (322, 182)]:  # 322x182 needs cropping
        items = video_rtp("h264", 1, size=size)
        frame = h264_frame([i.packet[12:] for i in items])
        assert h264_dimensions(frame) == size
    assert h264_dimensions(b"\x00\x00\x00\x01\x65\x88") is None  # no SPS


def test_opus_head_layout() -> None:
    head = opus_head()
    assert head[:8] == b"OpusHead" and len(head) == 19
    version, channels, pre_skip, rate, gain, family = struct.unpack("<BBHIhB", head[8:])
    assert (version, channels, pre_skip, rate, gain, family) == (1, 2, 0, 48_000, 0, 0)
    with pytest.raises(ValueError):
        opus_head(channels=3)


# --- timing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("first_ts", [0, 1, 4_294_967_000, 2**31])
def test_timeline_anchors_on_arrival_and_follows_rtp_time(first_ts: int) -> None:
    t = TrackTimeline(90_000, start_ms=1000.0)
    assert t.pts(first_ts, 1500.0) == 45_000  # first frame arrived 500 ms into the recording
    # The next frame is 3000 ticks later on the media clock; its arrival jitters.
    assert t.pts(first_ts + 3000, 1540.0) == 48_000
    assert t.pts(first_ts + 6000, 1560.0) == 51_000
    assert t.pts(first_ts + 6000, 1570.0) is None  # not after the previous frame
    assert t.reanchors == 0


def test_timeline_reanchors_when_the_media_clock_jumps() -> None:
    t = TrackTimeline(48_000, start_ms=0.0)
    assert t.pts(1000, 0.0) == 0
    assert t.pts(1960, 20.0) == 960
    # The publisher restarts its stream with a new random timestamp base.
    jumped = t.pts(900_000_000, 40.0)
    assert jumped == 1920 and t.reanchors == 1
    assert t.pts(900_000_960, 60.0) == 2880
    # A jump backwards that would go before the last frame still moves forward.
    back = TrackTimeline(48_000, start_ms=0.0)
    back.pts(10_000_000, 0.0)
    back.pts(10_000_000 + 48_000 * 5, 5000.0)
    assert back.pts(5, 5000.0 + REANCHOR_MS + 1) == round((5000.0 + REANCHOR_MS + 1) * 48)


def _sample(kind: str, ms: float, keyframe: bool = False) -> Sample:
    rate = 90_000 if kind == "video" else 48_000
    size = (320, 240) if keyframe else (None, None)
    return Sample(kind, b"x", round(ms * rate / 1000), rate, keyframe, *size)


def test_planner_waits_for_video_keyframe_then_opens_with_both_tracks() -> None:
    p = MuxPlanner()
    p.add_track("audio", "opus", 48_000, 0.0)
    p.add_track("video", "vp8", 90_000, 0.0)
    assert p.offer([_sample("audio", 100), _sample("video", 110)], 120.0) == []  # delta: dropped
    acts = p.offer([_sample("audio", 120), _sample("video", 180, keyframe=True)], 200.0)
    assert isinstance(acts[0], OpenFile)
    assert acts[0].container == "webm"
    assert [(t.kind, t.width) for t in acts[0].tracks] == [("audio", 0), ("video", 320)]
    writes = [a for a in acts[1:] if isinstance(a, WriteSample)]
    # The file starts at its earliest sample; held samples go out in time order.
    assert [(w.sample.kind, w.pts) for w in writes] == [
        ("audio", 0),
        ("audio", 960),
        ("video", 7200),
    ]
    assert p.dropped == 1


def test_planner_opens_without_video_after_the_wait_then_rolls_over() -> None:
    p = MuxPlanner(wait_ms=1000.0)
    p.add_track("audio", "opus", 48_000, 0.0)
    p.add_track("video", "h264", 90_000, 0.0)
    assert p.offer([_sample("audio", 0)], 500.0) == []
    acts = p.offer([_sample("audio", 20)], 1000.0)
    assert isinstance(acts[0], OpenFile) and [t.kind for t in acts[0].tracks] == ["audio"]
    assert acts[0].container == "webm"
    acts = p.offer([_sample("audio", 1100), _sample("video", 1110, keyframe=True)], 1120.0)
    assert [type(a) for a in acts] == [WriteSample, CloseFile]
    close = acts[1]
    assert isinstance(close, CloseFile) and not close.video_needs_keyframe
    # The next file opens as soon as audio is there too, starting at the held keyframe.
    acts = p.offer([_sample("audio", 1120)], 1130.0)
    opened = acts[0]
    assert isinstance(opened, OpenFile) and opened.segment == 1
    assert [t.kind for t in opened.tracks] == ["audio", "video"]
    assert opened.container == "matroska"  # H264 video: Matroska
    writes = [(a.sample.kind, a.pts) for a in acts[1:] if isinstance(a, WriteSample)]
    assert writes == [("video", 0), ("audio", 480)]
    assert p.finish() == [CloseFile()]


def test_planner_drops_samples_that_would_go_backwards() -> None:
    p = MuxPlanner()
    p.add_track("audio", "opus", 48_000, 0.0)
    acts = p.offer([_sample("audio", 100)], 100.0)
    assert [type(a) for a in acts] == [OpenFile, WriteSample]
    assert p.offer([_sample("audio", 100)], 120.0) == []  # same time again
    assert p.offer([_sample("audio", 50)], 140.0) == []  # before the file start
    assert p.dropped == 2


# --- the recorder end to end (real encodes, read back with av) ---------------------------------


def _interleave(*tracks: tuple[str, list[RtpItem]]) -> list[tuple[str, RtpItem]]:
    merged = [(kind, item) for kind, items in tracks for item in items]
    merged.sort(key=lambda x: x[1].send_ms)
    return merged


def _record(
    tmp_path: Path,
    packets: list[tuple[str, RtpItem]],
    video_codec: str | None,
    *,
    latency_ms: float = 30.0,
) -> tuple[list[Path], ParticipantRecorder]:
    rec = ParticipantRecorder(tmp_path, "alice", start_ms=0.0)
    rec.add_track("audio", "opus", 48_000, 0.0)
    if video_codec is not None:
        rec.add_track("video", video_codec, 90_000, 0.0)
    requests = 0
    for kind, item in packets:
        requests += rec.on_packet(kind, item.packet, item.send_ms + latency_ms)
    end = packets[-1][1].send_ms + latency_ms
    files = rec.close(end)
    assert rec.close(end) == files  # idempotent
    if video_codec is not None:
        assert requests >= 1  # asked for a keyframe at start
    return files, rec


def _read(path: Path) -> dict[str, list[av.Packet]]:
    out: dict[str, list[av.Packet]] = {"audio": [], "video": []}
    with av.open(str(path)) as c:
        for packet in c.demux():
            if packet.size:
                out[packet.stream.type].append(packet)
    return out


def _decoded_counters(path: Path) -> list[int]:
    counters = []
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            decoded = decode_barcode(frame.to_ndarray(format="gray"))
            assert decoded is not None
            counters.append(decoded[0])
    return counters


def _audio_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(audio=0))


def _monotonic(packets: list[av.Packet]) -> bool:
    times = [p.pts for p in packets]
    return all(
        a is not None and b is not None and a < b for a, b in zip(times, times[1:], strict=False)
    )


def test_vp8_and_opus_into_one_webm(tmp_path: Path) -> None:
    video = video_rtp("vp8", 30, fps=15)  # 2 s
    audio = opus_rtp(100)  # 2 s
    files, rec = _record(tmp_path, _interleave(("video", video), ("audio", audio)), "vp8")
    assert [f.name for f in files] == ["alice.webm"]
    with av.open(str(files[0])) as c:
        assert c.format.name.startswith("matroska")  # av names the WebM demuxer this way
        kinds = {s.type: s for s in c.streams}
        assert kinds["video"].codec_context.name == "vp8"
        assert (kinds["video"].width, kinds["video"].height) == (320, 240)
        assert kinds["audio"].codec_context.name == "opus"
        assert bytes(kinds["audio"].codec_context.extradata or b"")[:8] == b"OpusHead"
    packets = _read(files[0])
    assert len(packets["video"]) == 30
    assert len(packets["audio"]) == 100
    assert _monotonic(packets["video"]) and _monotonic(packets["audio"])
    assert packets["video"][0].is_keyframe
    assert _decoded_counters(files[0]) == list(range(30))
    assert _audio_frames(files[0]) == 100
    # Audio and video start together (both arrive from t=30 ms), within a frame.
    first_v = float(packets["video"][0].pts * packets["video"][0].time_base)
    first_a = float(packets["audio"][0].pts * packets["audio"][0].time_base)
    assert abs(first_v - first_a) <= 1 / 15
    # The media clock sets the spacing: the last video frame is 29/15 s after the first.
    last_v = float(packets["video"][-1].pts * packets["video"][-1].time_base)
    assert last_v - first_v == pytest.approx(29 / 15, abs=0.002)
    assert rec.errors == 0


def test_h264_into_matroska(tmp_path: Path) -> None:
    video = video_rtp("h264", 20, fps=10, size=(176, 144))
    audio = opus_rtp(100)
    files, _ = _record(tmp_path, _interleave(("video", video), ("audio", audio)), "h264")
    assert [f.name for f in files] == ["alice.mkv"]
    with av.open(str(files[0])) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264"
        assert (v.width, v.height) == (176, 144)
        assert bytes(v.codec_context.extradata or b"")[:1] == b"\x01"  # avcC header
    assert _decoded_counters(files[0]) == list(range(20))
    assert _audio_frames(files[0]) == 100


def test_loss_and_reordering(tmp_path: Path) -> None:
    """Reordered packets are put back in order; a lost video packet costs the frames up to
    the next keyframe (never a broken frame); lost audio is just skipped."""
    video = video_rtp("vp8", 45, fps=15, keyframe_every=15)  # keyframes at 0, 15, 30
    audio = opus_rtp(150)
    rng = random.Random(7)
    # Lose one packet of video frame 5 and audio frames 40..42.
    lost_video = next(i for i in video if i.frame == 5)
    video = [i for i in video if i is not lost_video]
    audio = [i for i in audio if i.frame not in (40, 41, 42)]
    merged = _interleave(("video", video), ("audio", audio))
    # Reorder: swap neighbours here and there (arrival order changes, not the send times).
    for k in range(5, len(merged) - 1, 9):
        if rng.random() < 0.7:
            merged[k], merged[k + 1] = merged[k + 1], merged[k]
    rec = ParticipantRecorder(tmp_path, "bob", start_ms=0.0)
    rec.add_track("audio", "opus", 48_000, 0.0)
    rec.add_track("video", "vp8", 90_000, 0.0)
    now = 0.0
    requests = 0
    for kind, item in merged:
        now = max(now, item.send_ms + 20.0)  # arrival order is the list order
        requests += rec.on_packet(kind, item.packet, now)
    [path] = rec.close(now + 10.0)
    counters = _decoded_counters(path)
    assert counters == [*range(5), *range(15, 45)]
    assert requests >= 2  # at start, and after the loss
    assert rec.tracks == {}
    packets = _read(path)
    assert len(packets["audio"]) == 147
    assert _monotonic(packets["audio"]) and _monotonic(packets["video"])
    assert _audio_frames(path) == 147


def test_audio_only_participant(tmp_path: Path) -> None:
    files, _ = _record(tmp_path, [("audio", i) for i in opus_rtp(50)], None)
    assert [f.name for f in files] == ["alice.webm"]
    packets = _read(files[0])
    assert len(packets["audio"]) == 50 and packets["video"] == []


def test_video_that_never_sends_a_keyframe_leaves_an_audio_file(tmp_path: Path) -> None:
    video = [i for i in video_rtp("vp8", 60, fps=15) if i.frame > 0]  # keyframe lost for good
    audio = opus_rtp(200)  # 4 s: past the 3 s wait
    files, rec = _record(tmp_path, _interleave(("video", video), ("audio", audio)), "vp8")
    assert [f.name for f in files] == ["alice.webm"]
    packets = _read(files[0])
    assert packets["video"] == [] and len(packets["audio"]) > 100
    assert rec.tracks == {}
