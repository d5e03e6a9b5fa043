"""Room recording: every producer of a room feeds a recorder sink; one file per participant.

The sink sits in `Producer.sinks` (it sends nothing on the network). Per packet it asks its
own `Forwarder` what to keep — for simulcast the top active layer, switched on keyframes
with seq/ts kept continuous — and hands the rewritten packet to the participant's
`ParticipantRecorder` (jitter buffer, depacketizer, av muxer; media/recording*.py).
Keyframe requests go to the producer's debounced requester.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from media.recording_writer import ParticipantRecorder
from media.red import RedParseError, primary
from media.rtp import build_rtp_packet
from sfu.forwarder import Forwarder, IngressPacket
from sfu.producer import Producer
from sfu.vocabulary import MediaKind

log = logging.getLogger("consilium.recording")

# How often a simulcast sink re-checks which layer is the top active one.
LAYER_CHECK_MS = 500
_RECORDER_SSRC = 0x5EC0_4D00


class AuditSink(Protocol):
    def record(self, event: str, room: str, actor: str, **details: Any) -> None: ...


def _safe(name: str) -> str:
    """A file-name-safe form of an identity (identities are free text); a hash keeps it unique."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:40]
    if cleaned == name:
        return name
    return f"{cleaned}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class RecorderSink:
    """One producer into one participant recorder."""

    def __init__(self, producer: Producer, recorder: ParticipantRecorder, now_ms: int) -> None:
        self.producer = producer
        self.recorder = recorder
        self.kind = str(producer.kind)
        codec = producer.codec
        self.forwarder = Forwarder(
            kind=producer.kind,
            codec=codec.name,
            clock_rate=codec.clock_rate,
            initial_seq=0,
            initial_ts=0,
            simulcast=producer.simulcast is not None,
        )
        self._layer_checked_ms: int | None = None
        self.failed = False
        recorder.add_track(self.kind, codec.name, codec.clock_rate, now_ms)
        self._choose_layer(now_ms)
        if producer.kind is MediaKind.VIDEO:
            # A file's video starts at a keyframe: ask now rather than waiting for one.
            producer.request_keyframe(now_ms, self._layer())

    def _layer(self) -> int:
        return self.forwarder.target_layer or 0

    def _choose_layer(self, now_ms: int) -> None:
        """Simulcast: record the top layer that is arriving (dynacast may have turned some off)."""
        producer = self.producer
        if producer.simulcast is None:
            return
        self._layer_checked_ms = now_ms
        active = [i for i in range(producer.layer_count) if producer.layers.is_active(i, now_ms)]
        top = active[-1] if active else producer.layer_count - 1
        if top != self.forwarder.target_layer and self.forwarder.set_target_layer(top):
            producer.request_keyframe(now_ms, top)

    def on_packet(self, packet: IngressPacket, data: bytes, arrival_ms: int) -> None:
        if self.failed:
            return
        try:
            self._record(packet, data, arrival_ms)
        except Exception:
            # A full disk or a muxer error must never break forwarding: stop recording this.
            log.exception("recording %s failed; this track is no longer recorded", self.producer.id)
            self.failed = True

    def _record(self, packet: IngressPacket, data: bytes, arrival_ms: int) -> None:
        checked = self._layer_checked_ms
        if checked is not None and arrival_ms - checked >= LAYER_CHECK_MS:
            self._choose_layer(arrival_ms)
        decision = self.forwarder.forward(packet, arrival_ms)
        if decision.drop_reason is not None:
            if decision.request_keyframe:
                self.producer.request_keyframe(arrival_ms, self._layer())
            return
        header = packet.header
        payload = data[header.payload_offset : header.payload_end]
        red = self.producer.codec.red_payload_type
        if red is not None and header.payload_type == red:
            try:
                payload = primary(payload)[1]
            except RedParseError:
                return
        rtp = build_rtp_packet(
            payload_type=96,
            marker=header.marker,
            sequence_number=decision.sequence_number,
            timestamp=decision.timestamp,
            ssrc=_RECORDER_SSRC,
            payload=payload,
        )
        if self.recorder.on_packet(self.kind, rtp, arrival_ms):
            self.producer.request_keyframe(arrival_ms, self._layer())


class Recording:
    """An active recording of one room: attaches to producers, finalises files on stop."""

    def __init__(
        self,
        room_id: str,
        directory: Path,
        started_by: str,
        now_ms: int,
        *,
        started_by_id: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.room_id = room_id
        self.started_at = wall_clock()
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(self.started_at))
        self.directory = directory / room_id / stamp
        self.started_by = started_by
        self.started_by_id = started_by_id
        self.start_ms = now_ms
        self.participants: dict[str, ParticipantRecorder] = {}
        self.sinks: dict[str, RecorderSink] = {}  # producer id -> sink
        self.files: list[dict[str, Any]] = []  # finished files
        self._visits: dict[str, int] = {}
        self.active = True

    def state(self) -> dict[str, Any]:
        return {
            "active": self.active,
            "startedAt": int(self.started_at),
            "startedBy": self.started_by,
        }

    def attach(self, producer: Producer, now_ms: int) -> None:
        if not self.active or producer.id in self.sinks:
            return
        owner = producer.owner_id
        recorder = self.participants.get(owner)
        if recorder is None or recorder.closed:
            # Someone who left and came back gets a new file, not an overwritten one.
            visit = self._visits.get(owner, 0)
            self._visits[owner] = visit + 1
            basename = _safe(owner) + (f"-{visit + 1}" if visit else "")
            recorder = ParticipantRecorder(self.directory, basename, self.start_ms)
            self.participants[owner] = recorder
        try:
            sink = RecorderSink(producer, recorder, now_ms)
        except ValueError as exc:  # a codec the recorder cannot store
            log.warning("not recording %s: %s", producer.id, exc)
            return
        self.sinks[producer.id] = sink
        producer.sinks.append(sink)

    def _unhook(self, sink: RecorderSink) -> None:
        if sink in sink.producer.sinks:
            sink.producer.sinks.remove(sink)
        self.sinks.pop(sink.producer.id, None)

    def detach_participant(self, identity: str, now_ms: int) -> None:
        """The participant left: close its file properly now."""
        for sink in [s for s in self.sinks.values() if s.producer.owner_id == identity]:
            self._unhook(sink)
        recorder = self.participants.pop(identity, None)
        if recorder is not None:
            self._finish(identity, recorder, now_ms)

    def _finish(self, identity: str, recorder: ParticipantRecorder, now_ms: int) -> None:
        try:
            paths = recorder.close(now_ms)
        except Exception:
            log.exception("closing the recording of %s failed", identity)
            paths = recorder.files
        for path in paths:
            self.files.append(
                {
                    "participantId": identity,
                    "path": str(path),
                    "bytes": path.stat().st_size if path.exists() else 0,
                }
            )

    def stop(self, now_ms: int) -> list[dict[str, Any]]:
        """Detach everything and close every file; the finished files."""
        if not self.active:
            return self.files
        self.active = False
        for sink in list(self.sinks.values()):
            self._unhook(sink)
        for identity, recorder in list(self.participants.items()):
            self._finish(identity, recorder, now_ms)
        self.participants.clear()
        return self.files

    def describe_files(self) -> list[dict[str, Any]]:
        """Finished files plus the ones still being written."""
        open_files = [
            {"participantId": owner, "path": str(path), "bytes": None}
            for owner, rec in self.participants.items()
            for path in rec.files
        ]
        return [*self.files, *open_files]
