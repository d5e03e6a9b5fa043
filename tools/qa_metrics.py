"""What the QA client measures, as pure functions of recorded samples (no I/O, no asyncio).

A receiving participant (``tools/qa_participant.py``) records one :class:`VideoSample` per
decoded frame and one :class:`AudioSample` per decoded 20 ms audio frame; everything here turns
those into summaries, per-second series and target verdicts.

Clocks. ``recv_ms`` is ``sfu.clock.now_ms()`` (CLOCK_MONOTONIC), which every process on the host
shares, network namespaces included (they do not virtualise clocks), so the QA run's window
``[start_ms, end_ms)`` chosen by the orchestrator applies to every participant. Latency is
computed by the receiver when the frame comes out of its decoder: its own ``clock_ms32()`` minus
the capture time in the barcode, both CLOCK_REALTIME on the same host.

Definitions:

* **freeze** — Chromium's: a frame interval longer than ``max(3 x avg, avg + 150 ms)``, where
  ``avg`` is the mean of the last 30 non-freeze intervals (the nominal frame interval until five
  are known). Its duration is the whole interval. A stream that stops before the window ends has
  an open freeze up to the end.
* **corrupt frame** — barcode undecodable, or PSNR of the Y plane against the frame the sender
  drew (regenerated from the barcode's counter and capture time) below
  :data:`CORRUPT_PSNR_DB`. Measured on this codec path: clean VP8 frames at 640x360 score
  46-65 dB; frames decoded after a lost reference frame 16-23 dB, and many of those still carry a
  readable barcode (``tests/test_qa_metrics.py`` re-checks this), so 30 dB splits them with a wide
  margin and the barcode alone would miss them.
* **audio loss** — 20 ms frames missing between the first and last RTP timestamp received in the
  window. aiortc has no concealment, so what is missing here is what a listener loses; "after
  FEC" means after RED recovery when the client negotiates RED.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

CORRUPT_PSNR_DB = 30.0
PSNR_CAP_DB = 100.0  # identical images: a finite number keeps the JSON plain
FREEZE_MIN_SAMPLES = 5
FREEZE_AVG_FRAMES = 30
FREEZE_MIN_EXTRA_MS = 150
AUDIO_CLOCK_HZ = 48_000
AUDIO_FRAME_MS = 20
AUDIO_FRAME_TICKS = AUDIO_CLOCK_HZ * AUDIO_FRAME_MS // 1000
BIN_MS = 1000

# Path classes: which impaired leg a media path crosses.
CLEAN = "clean"
UPLINK = "uplink"
DOWNLINK = "downlink"
BOTH = "uplink+downlink"


def path_class(sender_impaired: bool, receiver_impaired: bool) -> str:
    """Which impaired legs media from sender to receiver crosses (the SFU sits between)."""
    if sender_impaired and receiver_impaired:
        return BOTH
    if sender_impaired:
        return UPLINK
    if receiver_impaired:
        return DOWNLINK
    return CLEAN


def psnr_db(received: npt.NDArray[Any], reference: npt.NDArray[Any]) -> float:
    """Peak signal-to-noise ratio of two 8-bit images of the same shape, capped at 100 dB."""
    if received.shape != reference.shape:
        raise ValueError(f"shape mismatch: {received.shape} vs {reference.shape}")
    diff = received.astype(np.float32) - reference.astype(np.float32)
    mse = float(np.mean(diff * diff))
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0 * 255.0 / mse))


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class VideoSample:
    recv_ms: int
    counter: int | None  # None: the barcode did not decode
    latency_ms: int | None  # glass-to-glass: decoded here minus captured there
    psnr_db: float | None  # None when there is no reference (barcode undecodable)

    def corrupt(self, threshold_db: float = CORRUPT_PSNR_DB) -> bool:
        return self.counter is None or self.psnr_db is None or self.psnr_db < threshold_db


@dataclass(frozen=True)
class AudioSample:
    recv_ms: int
    timestamp: int  # RTP timestamp of the frame, 48 kHz ticks, wraps at 2**32


@dataclass(frozen=True)
class Freeze:
    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    def clipped(self, start_ms: int, end_ms: int) -> Freeze | None:
        lo, hi = max(self.start_ms, start_ms), min(self.end_ms, end_ms)
        return Freeze(lo, hi) if hi > lo else None


class FreezeDetector:
    """Chromium's freeze rule over frame arrival times (fed in order)."""

    def __init__(self, nominal_interval_ms: float) -> None:
        if nominal_interval_ms <= 0:
            raise ValueError("nominal_interval_ms must be positive")
        self.nominal_interval_ms = nominal_interval_ms
        self._intervals: deque[int] = deque(maxlen=FREEZE_AVG_FRAMES)
        self._last_ms: int | None = None

    def threshold_ms(self) -> float:
        if len(self._intervals) >= FREEZE_MIN_SAMPLES:
            average = sum(self._intervals) / len(self._intervals)
        else:
            # Too few intervals for an average: a stream that stalls early must still count.
            average = self.nominal_interval_ms
        return max(3 * average, average + FREEZE_MIN_EXTRA_MS)

    def on_frame(self, now_ms: int) -> Freeze | None:
        last, self._last_ms = self._last_ms, now_ms
        if last is None:
            return None
        interval = now_ms - last
        if interval > self.threshold_ms():
            # Freezes stay out of the average, or one long stall would hide the next.
            return Freeze(last, now_ms)
        self._intervals.append(max(interval, 0))
        return None

    def open_freeze(self, now_ms: int) -> Freeze | None:
        """The freeze in progress at ``now_ms`` (no frame for longer than the threshold)."""
        if self._last_ms is None or now_ms - self._last_ms <= self.threshold_ms():
            return None
        return Freeze(self._last_ms, now_ms)


def find_freezes(
    recv_ms: Sequence[int], start_ms: int, end_ms: int, nominal_interval_ms: float
) -> list[Freeze]:
    """Freezes overlapping ``[start_ms, end_ms)``, clipped to it.

    Frames before the window feed the average (so the window starts warm). No frame at all
    in the window is one freeze over all of it.
    """
    detector = FreezeDetector(nominal_interval_ms)
    out: list[Freeze] = []
    seen_in_window = False
    for t in sorted(recv_ms):
        if t >= end_ms:
            break
        seen_in_window = seen_in_window or t >= start_ms
        found = detector.on_frame(t)
        if found is not None:
            clipped = found.clipped(start_ms, end_ms)
            if clipped is not None:
                out.append(clipped)
    if not seen_in_window:
        return [Freeze(start_ms, end_ms)] if end_ms > start_ms else []
    tail = detector.open_freeze(end_ms)
    if tail is not None:
        clipped = tail.clipped(start_ms, end_ms)
        if clipped is not None:
            out.append(clipped)
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def longest_gap_ms(recv_ms: Sequence[int], start_ms: int, end_ms: int) -> int:
    """Longest time in the window without a sample (window edges count as boundaries)."""
    inside = sorted(t for t in recv_ms if start_ms <= t < end_ms)
    edges = [start_ms, *inside, end_ms]
    return max((b - a for a, b in zip(edges, edges[1:], strict=False)), default=0)


# ----------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoSummary:
    frames: int
    fps: float
    corrupt_frames: int
    undecodable_frames: int  # part of corrupt_frames
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_max_ms: float | None
    freeze_count: int
    freeze_total_ms: int
    freeze_percent: float  # of the window
    longest_gap_ms: int  # longest time without any decoded frame
    psnr_mean_db: float | None
    psnr_min_db: float | None
    counters_skipped: int  # sender frames never shown (jumps in the counter)
    counter_regressions: int  # a counter not above the previous one

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_video(
    samples: Iterable[VideoSample],
    start_ms: int,
    end_ms: int,
    nominal_fps: float,
    corrupt_threshold_db: float = CORRUPT_PSNR_DB,
) -> VideoSummary:
    every = sorted(samples, key=lambda s: s.recv_ms)
    inside = [s for s in every if start_ms <= s.recv_ms < end_ms]
    seconds = max(end_ms - start_ms, 1) / 1000
    freezes = find_freezes([s.recv_ms for s in every], start_ms, end_ms, 1000 / nominal_fps)
    frozen = sum(f.duration_ms for f in freezes)
    latencies = [float(s.latency_ms) for s in inside if s.latency_ms is not None]
    psnrs = [s.psnr_db for s in inside if s.psnr_db is not None]
    skipped = regressions = 0
    previous: int | None = None
    for s in inside:
        if s.counter is None:
            continue
        if previous is not None:
            if s.counter <= previous:
                regressions += 1
            else:
                skipped += s.counter - previous - 1
        previous = s.counter if previous is None else max(previous, s.counter)
    return VideoSummary(
        frames=len(inside),
        fps=round(len(inside) / seconds, 2),
        corrupt_frames=sum(1 for s in inside if s.corrupt(corrupt_threshold_db)),
        undecodable_frames=sum(1 for s in inside if s.counter is None),
        latency_p50_ms=_round(percentile(latencies, 50)),
        latency_p95_ms=_round(percentile(latencies, 95)),
        latency_max_ms=max(latencies) if latencies else None,
        freeze_count=len(freezes),
        freeze_total_ms=frozen,
        freeze_percent=round(100 * frozen / max(end_ms - start_ms, 1), 3),
        longest_gap_ms=longest_gap_ms([s.recv_ms for s in inside], start_ms, end_ms),
        psnr_mean_db=_round(sum(psnrs) / len(psnrs), 2) if psnrs else None,
        psnr_min_db=_round(min(psnrs), 2) if psnrs else None,
        counters_skipped=skipped,
        counter_regressions=regressions,
    )


def _bins(start_ms: int, end_ms: int, bin_ms: int) -> list[tuple[int, int]]:
    out = []
    t = start_ms
    while t < end_ms:
        out.append((t, min(t + bin_ms, end_ms)))
        t += bin_ms
    return out


def video_series(
    samples: Iterable[VideoSample],
    start_ms: int,
    end_ms: int,
    nominal_fps: float,
    bin_ms: int = BIN_MS,
    corrupt_threshold_db: float = CORRUPT_PSNR_DB,
) -> dict[str, list[Any]]:
    """Per-bin values over the window: ``t_s`` is each bin's start, seconds into the window."""
    every = sorted(samples, key=lambda s: s.recv_ms)
    freezes = find_freezes([s.recv_ms for s in every], start_ms, end_ms, 1000 / nominal_fps)
    series: dict[str, list[Any]] = {
        k: []
        for k in (
            "t_s",
            "fps",
            "latency_p50_ms",
            "latency_p95_ms",
            "psnr_mean_db",
            "psnr_min_db",
            "frozen_ms",
            "corrupt",
        )
    }
    index = 0
    for lo, hi in _bins(start_ms, end_ms, bin_ms):
        while index < len(every) and every[index].recv_ms < lo:
            index += 1
        group: list[VideoSample] = []
        while index < len(every) and every[index].recv_ms < hi:
            group.append(every[index])
            index += 1
        latencies = [float(s.latency_ms) for s in group if s.latency_ms is not None]
        psnrs = [s.psnr_db for s in group if s.psnr_db is not None]
        frozen = 0
        for f in freezes:
            part = f.clipped(lo, hi)
            frozen += part.duration_ms if part is not None else 0
        series["t_s"].append((lo - start_ms) / 1000)
        series["fps"].append(round(len(group) * 1000 / (hi - lo), 2))
        series["latency_p50_ms"].append(_round(percentile(latencies, 50)))
        series["latency_p95_ms"].append(_round(percentile(latencies, 95)))
        series["psnr_mean_db"].append(_round(sum(psnrs) / len(psnrs), 2) if psnrs else None)
        series["psnr_min_db"].append(_round(min(psnrs), 2) if psnrs else None)
        series["frozen_ms"].append(frozen)
        series["corrupt"].append(sum(1 for s in group if s.corrupt(corrupt_threshold_db)))
    return series


# ----------------------------------------------------------------------------- audio


def unwrap_timestamps(timestamps: Iterable[int]) -> list[int]:
    """32-bit RTP timestamps unwrapped to a monotone-ish 64-bit line (in arrival order)."""
    out: list[int] = []
    last: int | None = None
    for ts in timestamps:
        ts &= 0xFFFFFFFF
        if last is None:
            value = ts
        else:
            delta = (ts - (last & 0xFFFFFFFF)) & 0xFFFFFFFF
            if delta >= 1 << 31:
                delta -= 1 << 32
            value = last + delta
        out.append(value)
        last = value
    return out


@dataclass(frozen=True)
class AudioSummary:
    frames_received: int
    frames_expected: int
    loss_percent: float
    longest_gap_ms: int  # longest run of missing 20 ms frames, in ms of audio
    longest_stall_ms: int  # longest time without any audio frame arriving (playout stall)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _audio_frames(samples: Iterable[AudioSample]) -> list[tuple[int, int]]:
    ordered = sorted(samples, key=lambda s: s.recv_ms)
    unwrapped = unwrap_timestamps(s.timestamp for s in ordered)
    if not unwrapped:
        return []
    # (frame index, arrival), duplicates dropped; the index counts 20 ms frames from the
    # first timestamp seen, rounding to the nearest frame.
    base = unwrapped[0] - AUDIO_FRAME_TICKS // 2
    seen: dict[int, int] = {}
    for s, ts in zip(ordered, unwrapped, strict=True):
        seen.setdefault((ts - base) // AUDIO_FRAME_TICKS, s.recv_ms)
    return sorted(seen.items())


def summarize_audio(samples: Iterable[AudioSample], start_ms: int, end_ms: int) -> AudioSummary:
    """Loss and holes of one audio stream in the window (RED counters are per connection: see
    the participant's ``red`` in the report)."""
    every = list(samples)
    frames = [(i, t) for i, t in _audio_frames(every) if start_ms <= t < end_ms]
    if not frames:
        return AudioSummary(0, 0, 100.0, end_ms - start_ms, end_ms - start_ms)
    indices = [i for i, _ in frames]
    expected = indices[-1] - indices[0] + 1
    gap = max((b - a - 1 for a, b in zip(indices, indices[1:], strict=False)), default=0)
    return AudioSummary(
        frames_received=len(frames),
        frames_expected=expected,
        loss_percent=round(100 * (expected - len(frames)) / expected, 3),
        longest_gap_ms=gap * AUDIO_FRAME_MS,
        longest_stall_ms=longest_gap_ms([t for _, t in frames], start_ms, end_ms),
    )


def audio_series(
    samples: Iterable[AudioSample], start_ms: int, end_ms: int, bin_ms: int = BIN_MS
) -> dict[str, list[Any]]:
    """Per-bin audio loss: frames missing just before each arriving frame are charged to its bin."""
    frames = _audio_frames(samples)
    bins = _bins(start_ms, end_ms, bin_ms)
    received = [0] * len(bins)
    missing = [0] * len(bins)
    previous: int | None = None
    for index, t in frames:
        if start_ms <= t < end_ms:
            b = (t - start_ms) // bin_ms
            received[b] += 1
            if previous is not None and index > previous + 1:
                missing[b] += index - previous - 1
        previous = index if previous is None else max(previous, index)
    loss: list[float | None] = []
    for r, m in zip(received, missing, strict=True):
        loss.append(round(100 * m / (r + m), 2) if r + m else None)
    return {
        "t_s": [(lo - start_ms) / 1000 for lo, _ in bins],
        "frames": received,
        "loss_percent": loss,
    }


# ----------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Targets:
    """The issue's targets, as numbers (see README "QA: network profiles and loss reports")."""

    moderate_loss: float = 0.05  # profiles at or below this loss get the quality target
    max_freeze_percent: float = 1.0
    max_corrupt_frames: int = 0
    # "The call stays up": every peer connection connected at every sample, and no path goes
    # longer than this without a decoded frame.
    max_video_gap_ms: int = 3000
    # "Audio stays continuous": what is left missing after recovery, and how long a hole gets.
    # Opus concealment hides single lost frames; holes past 100 ms are audible dropouts.
    max_audio_loss_percent: float = 5.0
    max_audio_gap_ms: int = 100


DEFAULT_TARGETS = Targets()


@dataclass(frozen=True)
class PathResult:
    sender: str
    receiver: str
    path_class: str
    video: VideoSummary
    audio: AudioSummary

    @property
    def label(self) -> str:
        return f"{self.sender}→{self.receiver} ({self.path_class})"


@dataclass(frozen=True)
class Verdict:
    target: str
    subject: str
    passed: bool
    measured: str
    criterion: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunVerdicts:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)


def evaluate_targets(
    profile_loss: float,
    paths: Sequence[PathResult],
    connected_throughout: dict[str, bool],
    targets: Targets = DEFAULT_TARGETS,
    connection_notes: dict[str, str] | None = None,
) -> RunVerdicts:
    """Verdicts for one run. ``profile_loss`` is the profile's worst random loss (0..1).

    The quality target (freezes, corrupt frames) applies to profiles at or below moderate loss;
    the stays-up target (connection, frames keep arriving, continuous audio) to every profile.
    """
    out = RunVerdicts()
    add = out.verdicts.append
    if profile_loss <= targets.moderate_loss + 1e-9:
        for p in paths:
            add(
                Verdict(
                    "freeze time",
                    p.label,
                    p.video.freeze_percent < targets.max_freeze_percent,
                    f"{p.video.freeze_percent:.2f} % ({p.video.freeze_count} freezes, "
                    f"{p.video.freeze_total_ms} ms)",
                    f"< {targets.max_freeze_percent:g} % of the call",
                )
            )
            add(
                Verdict(
                    "corrupt frames",
                    p.label,
                    p.video.corrupt_frames <= targets.max_corrupt_frames,
                    f"{p.video.corrupt_frames} of {p.video.frames}",
                    f"<= {targets.max_corrupt_frames}",
                )
            )
    for name, ok in sorted(connected_throughout.items()):
        measured = "connected" if ok else "dropped"
        note = (connection_notes or {}).get(name)
        if note:
            measured += f" ({note})"
        add(Verdict("call stays up", name, ok, measured, "connected"))
    for p in paths:
        add(
            Verdict(
                "frames keep arriving",
                p.label,
                p.video.frames > 0 and p.video.longest_gap_ms <= targets.max_video_gap_ms,
                f"{p.video.frames} frames, longest gap {p.video.longest_gap_ms} ms",
                f"gap <= {targets.max_video_gap_ms} ms",
            )
        )
        a = p.audio
        add(
            Verdict(
                "audio continuous",
                p.label,
                a.frames_received > 0
                and a.loss_percent <= targets.max_audio_loss_percent
                and a.longest_gap_ms <= targets.max_audio_gap_ms,
                f"loss {a.loss_percent:.2f} %, longest hole {a.longest_gap_ms} ms",
                f"loss <= {targets.max_audio_loss_percent:g} %, "
                f"hole <= {targets.max_audio_gap_ms} ms",
            )
        )
    return out
