"""The av shell of recording: mux already-encoded frames into WebM/Matroska, no codec runs.

Streams are created with `add_mux_stream` (no codec context, so nothing is ever encoded or
decoded). Opus needs an OpusHead as Matroska CodecPrivate, which a mux-only stream cannot
carry; its stream is therefore copied from a template (a one-packet in-memory WebM read
back), whose codec context takes the extradata and is never opened. H264 goes in as
Annex-B: PyAV pulls SPS/PPS out of the first keyframe for the avcC header and the Matroska
muxer converts the frames to length-prefixed NAL units.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
from av.container import OutputContainer
from av.stream import Stream

from media.recording import (
    EXTENSION_FOR_CONTAINER,
    CloseFile,
    MuxAction,
    MuxPlanner,
    OpenFile,
    Sample,
    TrackRecorder,
    TrackSpec,
    WriteSample,
    opus_head,
)

_SILENT_OPUS_FRAME = b"\xf8\xff\xfe"  # a 20 ms CELT silence frame


def _opus_template() -> av.container.InputContainer:
    buf = io.BytesIO()
    with av.open(buf, "w", format="webm") as tmp:
        stream = tmp.add_mux_stream("opus", rate=48_000)
        packet = av.Packet(_SILENT_OPUS_FRAME)
        packet.stream = stream
        packet.pts = packet.dts = 0
        packet.time_base = Fraction(1, 48_000)
        tmp.mux(packet)
    buf.seek(0)
    return av.open(buf, "r")


class ContainerWriter:
    """One open recording file; `write` takes the planner's WriteSample values."""

    def __init__(self, path: Path, container: str, tracks: tuple[TrackSpec, ...]) -> None:
        self.path = path
        self.tracks = tracks
        self.frames: dict[str, int] = {t.kind: 0 for t in tracks}
        path.parent.mkdir(parents=True, exist_ok=True)
        self._out: OutputContainer = av.open(str(path), "w", format=container)
        self._streams: dict[str, Stream] = {}
        try:
            for track in tracks:
                self._streams[track.kind] = self._add(track)
        except Exception:
            self._out.close()
            raise

    def _add(self, track: TrackSpec) -> Stream:
        out = self._out
        stream: Stream
        if track.codec == "opus":
            template = _opus_template()
            try:
                stream = out.add_stream_from_template(template.streams.audio[0], opaque=True)
            finally:
                template.close()
            stream.codec_context.extradata = opus_head()
        else:
            stream = out.add_mux_stream(track.codec, width=track.width, height=track.height)
        stream.time_base = Fraction(1, track.clock_rate)
        return stream

    def write(self, item: WriteSample) -> None:
        sample = item.sample
        packet = av.Packet(sample.data)
        packet.stream = self._streams[sample.kind]
        packet.pts = packet.dts = item.pts
        packet.time_base = Fraction(1, sample.clock_rate)
        packet.is_keyframe = sample.keyframe or sample.kind == "audio"
        self._out.mux(packet)
        self.frames[sample.kind] += 1

    def close(self) -> None:
        self._out.close()


class ParticipantRecorder:
    """One participant's tracks into one file (or a few segments): the planner's actions run.

    `on_packet` returns True when the track wants a keyframe from its publisher (debounced).
    """

    def __init__(self, directory: Path, basename: str, start_ms: float) -> None:
        self.directory = directory
        self.basename = basename
        self.start_ms = start_ms
        self.tracks: dict[str, TrackRecorder] = {}
        self.planner = MuxPlanner()
        self.files: list[Path] = []
        self._writer: ContainerWriter | None = None
        self.errors = 0
        self.closed = False

    def add_track(self, kind: str, codec: str, clock_rate: int, now_ms: float) -> None:
        self.tracks[kind] = TrackRecorder(kind, codec, clock_rate, self.start_ms)
        self.planner.add_track(kind, codec, clock_rate, now_ms)

    def remove_track(self, kind: str, now_ms: float) -> None:
        track = self.tracks.pop(kind, None)
        if track is not None:
            self._run(self.planner.offer(track.flush(now_ms), now_ms))
            self.planner.remove_track(kind)

    def on_packet(self, kind: str, packet: bytes, now_ms: float) -> bool:
        """Take one RTP packet of `kind`; True means: ask the publisher for a keyframe now."""
        track = self.tracks.get(kind)
        if self.closed or track is None:
            return False
        track.insert(packet, now_ms)
        return self.poll(now_ms).get(kind, False)

    def poll(self, now_ms: float) -> dict[str, bool]:
        """Release due frames of every track (keeps a/v interleaved); kind -> wants keyframe."""
        samples: list[Sample] = []
        wants: dict[str, bool] = {}
        for kind, track in self.tracks.items():
            out = track.poll(now_ms)
            samples.extend(out.samples)
            wants[kind] = out.request_keyframe
        samples.sort(key=lambda s: s.time_ms)
        self._run(self.planner.offer(samples, now_ms))
        return wants

    def close(self, now_ms: float) -> list[Path]:
        """Flush what is buffered and close the file properly (idempotent)."""
        if self.closed:
            return self.files
        samples = [s for t in self.tracks.values() for s in t.flush(now_ms)]
        samples.sort(key=lambda s: s.time_ms)
        self._run(self.planner.offer(samples, now_ms))
        self._run(self.planner.finish())
        self.closed = True
        self.tracks.clear()
        return self.files

    def _path(self, segment: int, container: str) -> Path:
        suffix = "" if segment == 0 else f"-part{segment + 1}"
        return self.directory / f"{self.basename}{suffix}{EXTENSION_FOR_CONTAINER[container]}"

    def _run(self, actions: list[MuxAction]) -> None:
        for action in actions:
            if isinstance(action, OpenFile):
                path = self._path(action.segment, action.container)
                self._writer = ContainerWriter(path, action.container, action.tracks)
                self.files.append(path)
            elif isinstance(action, WriteSample):
                if self._writer is not None:
                    try:
                        self._writer.write(action)
                    except av.FFmpegError:
                        # One bad frame must not end the recording; the muxer says why in its log.
                        self.errors += 1
            elif isinstance(action, CloseFile):
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
                if action.video_needs_keyframe:
                    video = self.tracks.get("video")
                    if video is not None:
                        video.require_keyframe()
