"""One QA participant in its own process (started by ``tools/qa.py``, possibly inside an
impaired network namespace).

    python -m tools.qa_participant --url http://10.x.x.1:PORT --name bedside --out bedside.json \
        [--ice-host ADDR] [--size 640x360] [--fps 15] [--role bedside] [--max-seconds 600]

It joins like :class:`tools.synthetic_client.SyntheticParticipant` (publishing barcoded counter
frames and a tone) and records, for every frame it decodes from each remote participant, the
arrival time (``sfu.clock.now_ms``), the barcode's counter, the glass-to-glass latency and the
PSNR of the Y plane against the frame the sender drew (regenerated from counter and capture
time: the drawing is deterministic). Audio frames are recorded with their RTP timestamp.

Protocol with the orchestrator: one JSON line per second on stdout (``{"event": "status", ...}``),
``{"event": "joined"}`` once in the room; the line ``stop`` on stdin (or end of stdin, or
``--max-seconds``) makes it leave and write ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack
from av import AudioFrame, VideoFrame

from media.synthetic import (
    clock_ms32,
    decode_barcode,
    draw_background,
    draw_counter_frame,
    elapsed_ms32,
)
from sfu.adapters import aiortc_adapter
from sfu.clock import now_ms
from tools.client_recovery import StallDetector
from tools.qa_metrics import psnr_db
from tools.synthetic_client import RemoteMedia, SyntheticParticipant

STATUS_INTERVAL_S = 1.0
RENACK_TICK_S = 0.05
# No frame for this long while packets arrive: the hole will not be repaired, ask for a
# keyframe (browsers do so sooner; aiortc only after its 512-packet buffer overflows).
STALL_PLI_MS = 1000
# Without a frame for this long, look for a keyframe past the hole in aiortc's jitter buffer.
STALL_SKIP_MS = 200


class NackRetry:
    """Browser-like NACK retries for a stock aiortc receiver (pure: fed ``now_ms``).

    aiortc NACKs a hole once, when it appears. Chromium asks again every round trip, up to
    10 times per packet; this does the same with a fixed interval (no RTT estimate here).
    """

    def __init__(self, interval_ms: int = 100, max_tries: int = 10) -> None:
        self.interval_ms = interval_ms
        self.max_tries = max_tries
        self.sent = 0
        # seq -> (NACKs so far, time of the last one); aiortc's own counts as the first
        self._state: dict[int, tuple[int, int]] = {}

    def due(self, missing: set[int], now_ms: int) -> list[int]:
        """Which of the still-missing packets to NACK again now."""
        for seq in [s for s in self._state if s not in missing]:
            del self._state[seq]  # repaired, or aiortc stopped tracking it
        out: list[int] = []
        for seq in missing:
            tries, last = self._state.get(seq, (1, now_ms))
            if tries < self.max_tries and now_ms - last >= self.interval_ms:
                tries, last = tries + 1, now_ms
                out.append(seq)
            self._state[seq] = (tries, last)
        self.sent += len(out)
        return sorted(out)


def _y_plane(frame: VideoFrame) -> npt.NDArray[Any]:
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    # An I420 ndarray is the Y plane followed by U and V (height * 3/2 rows).
    return frame.to_ndarray()[: frame.height]


class QaParticipant(SyntheticParticipant):
    """A synthetic participant that keeps every measurement (not just the last 200)."""

    def __init__(
        self, base_url: str, *, renack: bool = True, keyframe_requests: bool = True, **kwargs: Any
    ) -> None:
        # A browser resumes a dropped signaling socket by itself; so does a QA participant.
        kwargs.setdefault("auto_resume", True)
        super().__init__(base_url, **kwargs)
        # sender name -> rows: [recv_ms, counter|None, latency_ms|None, psnr_db|None]
        self.video_log: dict[str, list[list[Any]]] = {}
        # sender name -> rows: [recv_ms, rtp_timestamp] of frames out of aiortc's decoder
        self.audio_log: dict[str, list[list[int]]] = {}
        # sender name -> rows: [recv_ms, rtp_timestamp] of packets into the jitter buffer
        # (after RED recovery): what a browser's jitter buffer would get
        self.audio_rtp_log: dict[str, list[list[int]]] = {}
        self._backgrounds: dict[str, npt.NDArray[np.uint8]] = {}
        self.renack = renack
        self._retries: dict[int, NackRetry] = {}  # id(receiver) -> policy
        self.keyframe_requests = keyframe_requests
        self._stalls: dict[str, StallDetector] = {}  # sender name -> detector
        self._video_packets: dict[str, int] = {}  # sender name -> packets into the buffer
        self.keyframe_skips = 0  # times aiortc's buffer gave up a hole for a keyframe

    def _new_pc(self) -> RTCPeerConnection:
        pc = super()._new_pc()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            for transceiver in pc.getTransceivers():
                if transceiver.receiver.track is not track:
                    continue
                tap = self._on_audio_rtp if transceiver.kind == "audio" else self._on_video_rtp
                aiortc_adapter.tap_jitter_buffer(
                    transceiver.receiver, functools.partial(tap, transceiver)
                )

        return pc

    async def renack_loop(self) -> None:
        """Ask again for video packets that are still missing (see NackRetry)."""
        while True:
            await asyncio.sleep(RENACK_TICK_S)
            pc = self.subscribe_pc
            if pc is None or not self.renack:
                continue
            now = now_ms()
            for transceiver in pc.getTransceivers():
                if transceiver.kind != "video":
                    continue
                receiver = transceiver.receiver
                retry = self._retries.setdefault(id(receiver), NackRetry())
                due = retry.due(aiortc_adapter.missing_packets(receiver), now)
                if due:
                    with contextlib.suppress(ConnectionError):
                        await aiortc_adapter.send_nack(receiver, due)

    def renacks_sent(self) -> int:
        return sum(r.sent for r in self._retries.values())

    async def keyframe_loop(self) -> None:
        """Recover from a hole that is not repaired, as a browser does (see StallDetector)."""
        while True:
            await asyncio.sleep(RENACK_TICK_S)
            pc = self.subscribe_pc
            if pc is None or not self.keyframe_requests:
                continue
            now = now_ms()
            for transceiver in pc.getTransceivers():
                name = self._sender_name(transceiver)
                if transceiver.kind != "video" or name is None:
                    continue
                stall = self._stalls.setdefault(name, StallDetector(now, stall_ms=STALL_PLI_MS))
                stall.on_packets(self._video_packets.get(name, 0))
                if now - stall.last_frame_ms < STALL_SKIP_MS:
                    continue
                receiver = transceiver.receiver
                if aiortc_adapter.skip_to_keyframe(receiver):
                    self.keyframe_skips += 1
                if stall.should_send_pli(now):
                    with contextlib.suppress(ConnectionError):
                        await aiortc_adapter.send_pli(receiver)

    def plis_sent(self) -> int:
        return sum(s.plis for s in self._stalls.values())

    def _sender_name(self, transceiver: RTCRtpTransceiver) -> str | None:
        pid = self._mid_to_participant.get(transceiver.mid or "")
        media = self.received.get(pid) if pid is not None else None
        return media.name if media is not None and media.name else None

    def _on_video_rtp(self, transceiver: RTCRtpTransceiver, seq: int, timestamp: int) -> None:
        name = self._sender_name(transceiver)
        if name is not None:
            self._video_packets[name] = self._video_packets.get(name, 0) + 1

    def _on_audio_rtp(self, transceiver: RTCRtpTransceiver, seq: int, timestamp: int) -> None:
        pid = self._mid_to_participant.get(transceiver.mid or "")
        media = self.received.get(pid) if pid is not None else None
        if media is not None:
            self.audio_rtp_log.setdefault(media.name, []).append([now_ms(), timestamp])

    def _reference_y(self, label: str, counter: int, capture_ms: int) -> npt.NDArray[Any]:
        width, height = self.video_size
        background = self._backgrounds.get(label)
        if background is None:
            background = self._backgrounds[label] = draw_background(label, width, height)
        img = draw_counter_frame(label, width, height, counter, capture_ms, background)
        # The sender converted exactly this way before encoding (CounterVideoTrack).
        return cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420)[:height]

    # The base class calls these through self, so instance methods override its static ones.
    def _inspect_video(self, media: RemoteMedia, frame: VideoFrame) -> None:  # type: ignore[override]
        recv, wall = now_ms(), clock_ms32()  # before any work of ours on the frame
        stall = self._stalls.get(media.name)
        if stall is not None:
            stall.on_frame(recv)
        media.video_size = (frame.width, frame.height)
        luma = _y_plane(frame)
        decoded = decode_barcode(luma)
        row: list[Any]
        if decoded is None:
            row = [recv, None, None, None]
        else:
            counter, capture_ms = decoded
            media.last_counter = counter
            reference = self._reference_y(media.name, counter, capture_ms)
            if reference.shape != luma.shape:
                reference = cv2.resize(
                    reference, (luma.shape[1], luma.shape[0]), interpolation=cv2.INTER_AREA
                )
            latency = elapsed_ms32(capture_ms, wall)
            row = [recv, counter, latency, round(psnr_db(luma, reference), 2)]
        self.video_log.setdefault(media.name, []).append(row)

    def _inspect_audio(self, media: RemoteMedia, frame: AudioFrame) -> None:  # type: ignore[override]
        pts = frame.pts if frame.pts is not None else -1
        self.audio_log.setdefault(media.name, []).append([now_ms(), int(pts)])

    def status(self) -> dict[str, Any]:
        return {
            "event": "status",
            "t": now_ms(),
            "cpu_s": round(time.process_time(), 3),
            "video": {k: len(v) for k, v in self.video_log.items()},
            "audio": {k: len(v) for k, v in self.audio_log.items()},
            "publish": self.publish_pc.connectionState if self.publish_pc else "none",
            "subscribe": self.subscribe_pc.connectionState if self.subscribe_pc else "none",
            "ws": self.connected,
            "renacks": self.renacks_sent(),
            "plis": self.plis_sent(),
            "resumes": self.resumes,
            "rejoins": self.rejoins,
        }


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _wait_for_stop(max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        async with asyncio.timeout(max_seconds):
            while True:
                line = await reader.readline()
                if not line or line.strip() == b"stop":
                    return
    except TimeoutError:
        return
    finally:
        transport.close()


def _parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


# What a browser spends on speech; aiortc's own 96 kbit/s is music-grade and, tripled by RED,
# would fill a 3G uplink with audio alone.
SPEECH_OPUS_BPS = 32_000


async def run(args: argparse.Namespace) -> int:
    if args.ice_host:
        aiortc_adapter.configure_ice_hosts(args.ice_host)
    aiortc_adapter.set_client_opus_bitrate(SPEECH_OPUS_BPS)
    participant = QaParticipant(
        args.url,
        room=args.room,
        name=args.name,
        role=args.role,
        video_size=_parse_size(args.size),
        fps=args.fps,
        ice_servers=[],  # never aiortc's default public STUN server
        renack=not args.no_renack,
        keyframe_requests=not args.no_pli,
        **({"red_distance": args.red} if args.red else {}),
    )
    result: dict[str, Any] = {
        "name": args.name,
        "role": args.role,
        "video_size": list(participant.video_size),
        "fps": args.fps,
        "error": None,
        "timeline": [],
    }
    status_task: asyncio.Task[None] | None = None
    renack_task: asyncio.Task[None] | None = None
    keyframe_task: asyncio.Task[None] | None = None

    async def report_status() -> None:
        while True:
            status = participant.status()
            result["timeline"].append(
                [status["t"], status["publish"], status["subscribe"], status["ws"], status["cpu_s"]]
            )
            _emit(status)
            await asyncio.sleep(STATUS_INTERVAL_S)

    try:
        await participant.join()
        result["identity"] = participant.identity
        result["joined_ms"] = now_ms()
        _emit({"event": "joined", "identity": participant.identity, "t": result["joined_ms"]})
        status_task = asyncio.create_task(report_status())
        renack_task = asyncio.create_task(participant.renack_loop())
        keyframe_task = asyncio.create_task(participant.keyframe_loop())
        await _wait_for_stop(args.max_seconds)
    except Exception as exc:  # reported to the orchestrator in the result file
        result["error"] = repr(exc)
        _emit({"event": "error", "error": repr(exc)})
    finally:
        for task in (status_task, renack_task, keyframe_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        result["timeline"].append(
            [now_ms(), *(participant.status()[k] for k in ("publish", "subscribe", "ws", "cpu_s"))]
        )
        result["left_ms"] = now_ms()
        result["frames_sent"] = {
            "video": participant.video_track.frames_sent if participant.video_track else 0,
            "audio": participant.audio_track.frames_sent if participant.audio_track else 0,
        }
        result["negotiation_failures"] = participant.negotiation_failures
        result["renacks_sent"] = participant.renacks_sent()
        result["plis_sent"] = participant.plis_sent()
        result["keyframe_skips"] = participant.keyframe_skips
        result["resumes"] = participant.resumes
        result["rejoins"] = participant.rejoins
        result["reconnect_failures"] = participant.reconnect_failures
        result["reconnects"] = participant.reconnects
        result["server_errors"] = participant.errors
        result["video"] = participant.video_log
        result["audio"] = participant.audio_log
        result["audio_rtp"] = participant.audio_rtp_log
        red_stats = getattr(participant, "red_stats", None)
        result["red"] = red_stats() if args.red and red_stats is not None else None
        await participant.leave()
        await asyncio.to_thread(Path(args.out).write_text, json.dumps(result))
    return 0 if result["error"] is None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.qa_participant")
    parser.add_argument("--url", required=True, help="server base URL")
    parser.add_argument("--room", default="qa")
    parser.add_argument("--name", required=True)
    parser.add_argument("--role", default="specialist")
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--ice-host", action="append", default=[], help="ICE host address")
    parser.add_argument("--red", type=int, default=0, help="audio RED distance (0: plain Opus)")
    parser.add_argument(
        "--no-renack", action="store_true", help="stock aiortc: NACK each hole only once"
    )
    parser.add_argument(
        "--no-pli", action="store_true", help="stock aiortc: never ask for a keyframe on a stall"
    )
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--out", required=True, help="result JSON file")
    args = parser.parse_args(argv)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
