"""Recording without re-encoding: the pure decisions (av muxing is in media/recording_writer.py).

Per track, a `TrackRecorder` runs forwarded RTP through `jitter.buffer.JitterBuffer`, turns
each complete frame into codec bytes (VP8: descriptors stripped; H264: Annex-B; Opus: as is)
and stamps it with a presentation time. Per participant, a `MuxPlanner` decides when a file
is opened (with which tracks), what is written to it and when it is rolled over.

Timing. A track's presentation time is anchored at the arrival time of its first frame
relative to the recording start; from there it follows the (unwrapped) RTP timestamps, so
the sender's media clock sets the spacing and network jitter does not. Audio and video of
one participant are anchored independently on the same arrival clock, which keeps them
within about a frame of each other (what remains is the sender's encode/packetisation
delay difference and the first packets' network jitter; RTCP sender reports would do
better). If the RTP clock and the arrival clock disagree by more than `REANCHOR_MS` (a
publisher restarting its stream) the track is re-anchored at the arrival time.

Loss. The jitter buffer waits for retransmissions, then skips: for video it releases
nothing until the next keyframe (and says `keyframe_needed`), for audio it just moves on.
A file's video starts at a keyframe; the recorder asks for one at start and whenever it
has to wait for one, at most once per `KEYFRAME_REQUEST_INTERVAL_MS`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from jitter.buffer import Frame, JitterBuffer
from media.codecs import codec_name
from media.h264 import NAL_FU_A, NAL_SPS, NAL_STAP_A
from media.rtp import RtpParseError
from media.vp8 import parse_vp8_descriptor

ANNEX_B_START = b"\x00\x00\x00\x01"
REANCHOR_MS = 2000.0
KEYFRAME_REQUEST_INTERVAL_MS = 1000.0
# How long a new file waits for every track (video needs a keyframe) before it opens with
# the tracks that are ready; a track that becomes ready later rolls the file over.
READY_WAIT_MS = 3000.0
# Frames held while a file waits to open (about 10 s of audio + 30 fps video).
MAX_PENDING_SAMPLES = 1000
# Jitter buffer delays for recording: enough to wait for a NACKed retransmission.
RECORD_MIN_DELAY_MS = 60.0
RECORD_MAX_DELAY_MS = 600.0

CONTAINER_FOR_VIDEO = {"vp8": "webm", "h264": "matroska"}
EXTENSION_FOR_CONTAINER = {"webm": ".webm", "matroska": ".mkv"}


# --- depacketizing ------------------------------------------------------------------------


def vp8_frame(payloads: Sequence[bytes]) -> bytes:
    """One VP8 frame from its RTP payloads (RFC 7741): the descriptors stripped."""
    parts = []
    for payload in payloads:
        desc = parse_vp8_descriptor(payload)
        parts.append(payload[desc.header_size :])
    data = b"".join(parts)
    if not data:
        raise RtpParseError("VP8 frame is empty")
    return data


def h264_frame(payloads: Sequence[bytes]) -> bytes:
    """One H264 access unit in Annex-B form from RTP payloads (RFC 6184, mode 0/1)."""
    out = bytearray()
    in_fragment = False
    for payload in payloads:
        if not payload:
            raise RtpParseError("empty H264 payload")
        nal_type = payload[0] & 0x1F
        if nal_type == NAL_FU_A:
            if len(payload) < 3:
                raise RtpParseError("FU-A too short")
            fu = payload[1]
            if fu & 0x80:  # start: rebuild the NAL header from F/NRI and the FU type
                out += ANNEX_B_START
                out.append((payload[0] & 0xE0) | (fu & 0x1F))
                in_fragment = True
            elif not in_fragment:
                raise RtpParseError("FU-A continuation without its start")
            out += payload[2:]
            if fu & 0x40:
                in_fragment = False
            continue
        in_fragment = False
        if nal_type == NAL_STAP_A:
            pos, n = 1, len(payload)
            while pos < n:
                if pos + 2 > n:
                    raise RtpParseError("STAP-A truncated in a unit size")
                size = (payload[pos] << 8) | payload[pos + 1]
                pos += 2
                if size == 0 or pos + size > n:
                    raise RtpParseError("STAP-A unit overruns the payload")
                out += ANNEX_B_START
                out += payload[pos : pos + size]
                pos += size
        elif 1 <= nal_type <= 23:
            out += ANNEX_B_START
            out += payload
        else:
            raise RtpParseError(f"H264 packetization type {nal_type} is not supported")
    if not out:
        raise RtpParseError("H264 frame is empty")
    return bytes(out)


def depacketize(codec: str, payloads: Sequence[bytes]) -> bytes:
    name = codec_name(codec)
    if name == "vp8":
        return vp8_frame(payloads)
    if name == "h264":
        return h264_frame(payloads)
    if name == "opus":
        if len(payloads) != 1 or not payloads[0]:
            raise RtpParseError("an Opus frame is exactly one non-empty payload")
        return payloads[0]
    raise ValueError(f"cannot record codec {codec!r}")


# --- frame sizes ----------------------------------------------------------------------------


def vp8_dimensions(frame: bytes) -> tuple[int, int] | None:
    """(width, height) of a VP8 keyframe (RFC 6386 §9.1); None for an interframe."""
    if len(frame) < 10 or frame[0] & 0x01 or frame[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", frame, 6)
    return width & 0x3FFF, height & 0x3FFF


class _Bits:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes already removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise RtpParseError("SPS truncated")
            value = (value << 1) | ((self.data[byte] >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
            if zeros > 31:
                raise RtpParseError("bad Exp-Golomb code in SPS")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in nal:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def h264_sps_dimensions(sps: bytes) -> tuple[int, int]:
    """(width, height) from an SPS NAL unit (header byte included), cropping applied."""
    r = _Bits(_rbsp(sps[1:]))
    profile_idc = r.u(8)
    r.u(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_planes = 0
    if profile_idc in _HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc == 3:
            separate_planes = r.u(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.u(1)  # qpprime_y_zero_transform_bypass_flag
        if r.u(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.u(1):
                    last = nxt = 8
                    for _ in range(16 if i < 6 else 64):
                        if nxt:
                            nxt = (last + r.se() + 256) % 256
                        last = nxt or last
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    elif poc_type == 1:
        r.u(1)
        r.se()
        r.se()
        for _ in range(r.ue()):
            r.se()
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_units = r.ue() + 1
    frame_mbs_only = r.u(1)
    if not frame_mbs_only:
        r.u(1)  # mb_adaptive_frame_field_flag
    r.u(1)  # direct_8x8_inference_flag
    crop = (0, 0, 0, 0)
    if r.u(1):
        crop = (r.ue(), r.ue(), r.ue(), r.ue())
    if chroma_format_idc == 0 or separate_planes:
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        sub_w = 1 if chroma_format_idc == 3 else 2
        sub_h = 2 if chroma_format_idc == 1 else 1
        unit_x, unit_y = sub_w, sub_h * (2 - frame_mbs_only)
    width = width_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - unit_y * (crop[2] + crop[3])
    if width <= 0 or height <= 0:
        raise RtpParseError("SPS describes an empty picture")
    return width, height


def annex_b_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B byte stream (start codes removed)."""
    units: list[bytes] = []
    pos = data.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        nxt = data.find(b"\x00\x00\x01", start)
        end = len(data) if nxt < 0 else nxt
        unit = data[start:end]
        if nxt >= 0:
            unit = unit.rstrip(b"\x00")  # the next start code's leading zero
        if unit:
            units.append(unit)
        pos = nxt
    return units


def h264_dimensions(access_unit: bytes) -> tuple[int, int] | None:
    """(width, height) from the SPS of an Annex-B access unit; None without a usable SPS."""
    for unit in annex_b_units(access_unit):
        if unit[0] & 0x1F == NAL_SPS:
            try:
                return h264_sps_dimensions(unit)
            except RtpParseError:
                return None
    return None


def opus_head(channels: int = 2, input_rate: int = 48_000, pre_skip: int = 0) -> bytes:
    """The OpusHead identification header (RFC 7845 §5.1), the Matroska CodecPrivate.

    WebRTC Opus has no encoder pre-skip in the stream, so it is 0; channel mapping family 0.
    """
    if channels not in (1, 2):
        raise ValueError("mapping family 0 carries 1 or 2 channels")
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


# --- per track ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One codec frame ready to be muxed."""

    kind: str  # "audio" or "video"
    data: bytes
    pts: int  # in units of 1/clock_rate since the recording started
    clock_rate: int
    keyframe: bool
    width: int | None = None  # video keyframes only
    height: int | None = None

    @property
    def time_ms(self) -> float:
        return self.pts * 1000.0 / self.clock_rate


class TrackTimeline:
    """RTP timestamps -> presentation times anchored on the arrival clock (see module doc)."""

    __slots__ = ("_anchor_pts", "_anchor_ts", "_last_pts", "clock_rate", "reanchors", "start_ms")

    def __init__(self, clock_rate: int, start_ms: float) -> None:
        self.clock_rate = clock_rate
        self.start_ms = start_ms
        self._anchor_ts: int | None = None
        self._anchor_pts = 0
        self._last_pts: int | None = None
        self.reanchors = 0

    def _ticks(self, ms: float) -> int:
        return round(ms * self.clock_rate / 1000.0)

    def pts(self, timestamp: int, arrival_ms: float) -> int | None:
        """Presentation time of the frame, or None when it is not after the previous one."""
        arrival_pts = self._ticks(max(0.0, arrival_ms - self.start_ms))
        if self._anchor_ts is None:
            self._anchor_ts, self._anchor_pts = timestamp, arrival_pts
        pts = self._anchor_pts + (timestamp - self._anchor_ts)
        if abs(pts - arrival_pts) > self._ticks(REANCHOR_MS):
            self.reanchors += 1
            self._anchor_ts, self._anchor_pts = timestamp, arrival_pts
            pts = arrival_pts
            if self._last_pts is not None and pts <= self._last_pts:
                pts = self._last_pts + 1
                self._anchor_pts = pts
        if self._last_pts is not None and pts <= self._last_pts:
            return None
        self._last_pts = pts
        return pts


@dataclass(slots=True)
class TrackOutput:
    samples: list[Sample]
    request_keyframe: bool


class TrackRecorder:
    """One track: RTP packets in, timed codec frames out (plus when to ask for a keyframe)."""

    def __init__(self, kind: str, codec: str, clock_rate: int, start_ms: float) -> None:
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be audio or video, got {kind!r}")
        self.kind = kind
        self.codec = codec_name(codec)
        self.clock_rate = clock_rate
        self.buffer = JitterBuffer(self.codec, clock_rate, RECORD_MIN_DELAY_MS, RECORD_MAX_DELAY_MS)
        self.timeline = TrackTimeline(clock_rate, start_ms)
        self._video = kind == "video"
        # Video waits for a keyframe at start, after a bad frame and when a file rolls over.
        self._need_keyframe = self._video
        self._last_request_ms: float | None = None
        self.width: int | None = None
        self.height: int | None = None
        self.frames = 0
        self.skipped = 0
        self.malformed = 0
        self.keyframe_requests = 0

    def insert(self, packet: bytes, now_ms: float) -> None:
        self.buffer.insert(packet, now_ms)

    def require_keyframe(self) -> None:
        """Drop video until the next keyframe (a new file must start with one)."""
        if self._video:
            self._need_keyframe = True

    def poll(self, now_ms: float) -> TrackOutput:
        result = self.buffer.pop(now_ms)
        samples = [s for s in (self._sample(f) for f in result.frames) if s is not None]
        wanted = self._video and (result.keyframe_needed or self._need_keyframe)
        request = False
        if wanted and (
            self._last_request_ms is None
            or now_ms - self._last_request_ms >= KEYFRAME_REQUEST_INTERVAL_MS
        ):
            self._last_request_ms = now_ms
            self.keyframe_requests += 1
            request = True
        return TrackOutput(samples, request)

    def flush(self, now_ms: float) -> list[Sample]:
        """Whatever complete frames are still buffered (the track is closing)."""
        return self.poll(now_ms + RECORD_MAX_DELAY_MS * 4).samples

    def _sample(self, frame: Frame) -> Sample | None:
        if self._need_keyframe and not frame.keyframe:
            self.skipped += 1
            return None
        try:
            data = depacketize(self.codec, frame.packets)
        except RtpParseError:
            self.malformed += 1
            self.require_keyframe()
            return None
        width = height = None
        if self._video and frame.keyframe:
            size = vp8_dimensions(data) if self.codec == "vp8" else h264_dimensions(data)
            if size is None and (self.width is None or self.height is None):
                # A "keyframe" we cannot size cannot start a file.
                self.skipped += 1
                return None
            if size is not None:
                self.width, self.height = size
            width, height = self.width, self.height
        pts = self.timeline.pts(frame.timestamp, frame.first_arrival_ms)
        if pts is None:
            self.skipped += 1
            return None
        if frame.keyframe:
            self._need_keyframe = False
        self.frames += 1
        return Sample(self.kind, data, pts, self.clock_rate, frame.keyframe, width, height)


# --- per participant ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackSpec:
    kind: str
    codec: str
    clock_rate: int
    width: int = 0
    height: int = 0


@dataclass(frozen=True, slots=True)
class OpenFile:
    tracks: tuple[TrackSpec, ...]
    container: str  # "webm" or "matroska"
    segment: int  # 0 for the first file of a participant, then 1, 2, ...


@dataclass(frozen=True, slots=True)
class WriteSample:
    sample: Sample
    pts: int  # relative to the file's start, in 1/clock_rate units


@dataclass(frozen=True, slots=True)
class CloseFile:
    # A rollover started by audio: the next file's video must wait for a fresh keyframe.
    video_needs_keyframe: bool = False


MuxAction = OpenFile | WriteSample | CloseFile


def container_for(tracks: Sequence[TrackSpec]) -> str:
    for track in tracks:
        if track.kind == "video":
            return CONTAINER_FOR_VIDEO[track.codec]
    return "webm"


@dataclass(slots=True)
class _TrackState:
    codec: str
    clock_rate: int


@dataclass(slots=True)
class MuxPlanner:
    """When a participant's file opens, what goes in, when it rolls over (module doc)."""

    wait_ms: float = READY_WAIT_MS
    _tracks: dict[str, _TrackState] = field(default_factory=dict)
    _pending: list[Sample] = field(default_factory=list)
    _waiting_since_ms: float | None = None
    _file_tracks: dict[str, TrackSpec] | None = None
    _zero_ms: float = 0.0
    _last_pts: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    dropped: int = 0

    @property
    def file_open(self) -> bool:
        return self._file_tracks is not None

    def add_track(self, kind: str, codec: str, clock_rate: int, now_ms: float) -> None:
        self._tracks[kind] = _TrackState(codec_name(codec), clock_rate)
        if self._waiting_since_ms is None:
            self._waiting_since_ms = now_ms

    def remove_track(self, kind: str) -> None:
        self._tracks.pop(kind, None)
        self._pending = [s for s in self._pending if s.kind != kind]

    def offer(self, samples: Sequence[Sample], now_ms: float) -> list[MuxAction]:
        actions: list[MuxAction] = []
        for sample in samples:
            if sample.kind not in self._tracks:
                continue
            files = self._file_tracks
            if files is not None and sample.kind in files:
                actions.extend(self._write(sample))
                continue
            if files is not None:
                if sample.kind == "video" and not sample.keyframe:
                    self.dropped += 1
                    continue
                # A track that was not ready when the file opened: start the next file.
                actions.append(CloseFile("video" in files and sample.kind != "video"))
                self._file_tracks = None
                self._waiting_since_ms = now_ms
            self._hold(sample)
        if self._file_tracks is None:
            actions.extend(self._maybe_open(now_ms))
        return actions

    def finish(self) -> list[MuxAction]:
        """The participant's recording ends: open with what is held if nothing is open yet."""
        actions: list[MuxAction] = []
        if self._file_tracks is None and self._ready():
            actions.extend(self._open(self._ready()))
        if self._file_tracks is not None:
            actions.append(CloseFile())
        self._file_tracks = None
        self._pending.clear()
        return actions

    def _hold(self, sample: Sample) -> None:
        if (
            sample.kind == "video"
            and not sample.keyframe
            and not any(p.kind == "video" for p in self._pending)
        ):
            self.dropped += 1  # a file's video starts at a keyframe
            return
        self._pending.append(sample)
        if len(self._pending) > MAX_PENDING_SAMPLES:
            del self._pending[0]
            self.dropped += 1

    def _ready(self) -> list[str]:
        return [k for k in self._tracks if any(p.kind == k for p in self._pending)]

    def _maybe_open(self, now_ms: float) -> list[MuxAction]:
        ready = self._ready()
        if not ready:
            return []
        waited = self._waiting_since_ms is not None and now_ms - self._waiting_since_ms >= (
            self.wait_ms
        )
        if len(ready) < len(self._tracks) and not waited:
            return []
        return self._open(ready)

    def _open(self, kinds: list[str]) -> list[MuxAction]:
        specs: list[TrackSpec] = []
        for kind in sorted(kinds):  # audio before video: a stable stream order
            state = self._tracks[kind]
            first = next(p for p in self._pending if p.kind == kind)
            specs.append(
                TrackSpec(kind, state.codec, state.clock_rate, first.width or 0, first.height or 0)
            )
        self._file_tracks = {s.kind: s for s in specs}
        self._last_pts = {}
        held = [p for p in self._pending if p.kind in self._file_tracks]
        self.dropped += len(self._pending) - len(held)
        self._pending = []
        self._zero_ms = min(p.time_ms for p in held)
        actions: list[MuxAction] = [OpenFile(tuple(specs), container_for(specs), self.segments)]
        self.segments += 1
        for sample in sorted(held, key=lambda p: p.time_ms):
            actions.extend(self._write(sample))
        return actions

    def _write(self, sample: Sample) -> list[MuxAction]:
        pts = sample.pts - round(self._zero_ms * sample.clock_rate / 1000.0)
        last = self._last_pts.get(sample.kind)
        if pts < 0 or (last is not None and pts <= last):
            self.dropped += 1
            return []
        self._last_pts[sample.kind] = pts
        return [WriteSample(sample, pts)]
