"""An in-process aiortc participant that speaks Consilium's WebSocket protocol v1.

Used by end-to-end tests, the leak test and the forwarding benchmark. It publishes a
:class:`~media.synthetic.CounterVideoTrack` (barcoded frame counter + capture time) and a
per-participant :class:`~media.synthetic.ToneAudioTrack`, answers every ``subscribe-offer`` and
records what it receives per remote participant in :attr:`SyntheticParticipant.received`.

ICE: every RTCPeerConnection gets ``RTCConfiguration(iceServers=ice_servers or [])`` so the
client never contacts aiortc's default public STUN server. aioice does not gather 127.0.0.1,
so on the loopback-only test namespace the *process* must first enable loopback candidates with
``sfu.adapters.aiortc_adapter.configure_ice_hosts(["127.0.0.1"])`` (the test fixtures do this;
this module deliberately does not patch aioice itself).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from media.synthetic import (
    CounterVideoTrack,
    ToneAudioTrack,
    clock_ms32,
    decode_barcode,
    elapsed_ms32,
    tone_frequency_for,
)
from sfu.clock import now_ms
from tools.client_recovery import ReconnectPolicy

__all__ = ["RemoteMedia", "SyntheticClientError", "SyntheticParticipant"]

log = logging.getLogger(__name__)

KEEP_LAST = 200  # history kept per remote participant (counters, latencies)
PUBLISH_TIMEOUT_S = 15.0
JOIN_TIMEOUT_S = 10.0
RESUME_ATTEMPT_TIMEOUT_S = 10.0  # connect + joined (+ publish after a full rejoin)

# Role -> permissions, mirrored from the contract; only used to decide whether to publish.
_ROLE_PERMISSIONS: dict[str, set[str]] = {
    "host": {"publish", "subscribe", "admin", "record"},
    "specialist": {"publish", "subscribe"},
    "bedside": {"publish", "subscribe"},
    "observer": {"subscribe"},
}


class SyntheticClientError(Exception):
    """The server refused something (carries the server's error message when there is one)."""

    def __init__(self, message: str, error: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.error = error


@dataclass
class RemoteMedia:
    """What we received from one remote participant (all of its tracks)."""

    name: str = ""
    role: str = ""
    video_frames: int = 0
    counters: list[int] = field(default_factory=list)  # decoded barcode counters, last 200
    last_counter: int | None = None
    barcode_failures: int = 0  # frames whose barcode did not decode
    latencies_ms: list[int] = field(default_factory=list)  # capture -> decoded here, last 200
    video_size: tuple[int, int] | None = None
    audio_frames: int = 0
    audio_rms: float = 0.0  # of the last frame, 0..1 of full scale
    audio_freq_hz: float | None = None  # strongest frequency of the last frame (50 Hz bins)


def _ws_url(base_url: str) -> str:
    base = base_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + "/ws"
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :] + "/ws"
    return base + "/ws"


def _token_claims(token: str) -> dict[str, Any]:
    """The JWT payload, unverified: only used to predict what the server will allow."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


def _ice_server(entry: RTCIceServer | dict[str, Any]) -> RTCIceServer:
    if isinstance(entry, RTCIceServer):
        return entry
    return RTCIceServer(
        urls=entry["urls"], username=entry.get("username"), credential=entry.get("credential")
    )


def _video_codec_preferences(codec: str) -> list[Any]:
    wanted = f"video/{codec}".lower()
    caps = RTCRtpSender.getCapabilities("video").codecs
    chosen = [c for c in caps if c.mimeType.lower() == wanted]
    if not chosen:
        raise ValueError(f"aiortc cannot send video codec {codec!r}")
    # Keep RTX so retransmissions are negotiated like a browser would.
    return chosen + [c for c in caps if c.mimeType.lower() == "video/rtx"]


class SyntheticParticipant:
    """One bot in a room: publishes synthetic media and measures what it receives."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        room: str = "demo",
        name: str = "bot",
        role: str = "specialist",
        publish_audio: bool = True,
        publish_video: bool = True,
        video_size: tuple[int, int] = (320, 240),
        fps: int = 15,
        video_codec: str = "VP8",
        decode: bool = True,
        ice_servers: list[RTCIceServer | dict[str, Any]] | None = None,
        tone_hz: float | None = None,
        red_distance: int | None = None,
        auto_resume: bool = False,
        resume_grace_s: float = 20.0,
    ) -> None:
        if video_codec.upper() not in {"VP8", "H264"}:
            raise ValueError("video_codec must be VP8 or H264")
        self.base_url = base_url.rstrip("/")
        self.room = room
        self.name = name
        self.role = role
        self.publish_audio = publish_audio
        self.publish_video = publish_video
        self.video_size = video_size
        self.fps = fps
        self.video_codec = video_codec.upper()
        self.decode = decode
        self.tone_hz = tone_hz if tone_hz is not None else tone_frequency_for(name)
        # Audio RED (RFC 2198) with this many previous frames per packet; None = plain Opus.
        self.red_distance = red_distance
        # Reconnect by itself when the signaling socket drops unexpectedly (as the web client
        # does); resume_grace_s is the server's --resume-grace-s (the reconnect schedule's pace).
        self.auto_resume = auto_resume
        self.resume_grace_s = resume_grace_s
        self.resumes = 0  # the kept session came back (media never stopped)
        self.rejoins = 0  # grace period over: joined afresh and published again
        self.reconnect_failures = 0  # outages after which the client gave up
        # One entry per outage: dropped_ms, back_ms (None: gave up), attempts, outcome.
        self.reconnects: list[dict[str, Any]] = []
        self._token = token
        self._ice_servers = [_ice_server(s) for s in ice_servers or []]

        self.identity: str | None = None
        self.joined: dict[str, Any] | None = None
        self.removed: dict[str, Any] | None = None
        self.received: dict[str, RemoteMedia] = {}
        self.errors: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.negotiation_failures: list[str] = []
        self.video_track: CounterVideoTrack | None = None
        self.audio_track: ToneAudioTrack | None = None
        self.publish_pc: RTCPeerConnection | None = None
        self.subscribe_pc: RTCPeerConnection | None = None

        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._negotiator: asyncio.Task[None] | None = None
        self._offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._consumers: dict[str, asyncio.Task[None]] = {}  # mid -> task
        self._mid_to_participant: dict[str, str] = {}
        self._cursor = 0  # next_message reads the message log forward from here
        self._changed = asyncio.Event()
        self._left = False
        self._reconnector: asyncio.Task[None] | None = None
        self._republish = False  # a full rejoin whose publish has not completed yet

    # ------------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def join(self) -> dict[str, Any]:
        """Join the room, then publish if allowed. Returns the ``joined`` message.

        Raises :class:`SyntheticClientError` when the server refuses (the error message is in
        ``.error`` and in :attr:`errors`); the participant is then already cleaned up.
        """
        if self._session is not None:
            raise RuntimeError("join() may be called once per SyntheticParticipant")
        self._session = aiohttp.ClientSession()
        try:
            return await self._join()
        except BaseException:
            # A refused join must not leak sockets, tasks or peer connections.
            await self.leave()
            raise

    async def _join(self) -> dict[str, Any]:
        assert self._session is not None
        token = self._token = self._token or await self._fetch_dev_token()
        self._ws = await self._session.ws_connect(_ws_url(self.base_url), autoping=True)
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-ws-reader")
        self._negotiator = asyncio.create_task(
            self._negotiate_loop(), name=f"{self.name}-negotiator"
        )

        start = len(self.messages)
        await self.send({"type": "join", "version": 1, "token": token})
        reply = await self._first_message({"joined", "error", "removed"}, start, JOIN_TIMEOUT_S)
        if reply["type"] != "joined":
            raise SyntheticClientError(f"join refused: {reply}", reply)
        self.joined = reply
        self.identity = reply["self"]["id"]

        if (self.publish_audio or self.publish_video) and self._may_publish(token):
            await self._publish()
        return reply

    async def leave(self) -> None:
        """Say goodbye, close peer connections and the socket, and stop every task."""
        if self._left:
            return
        self._left = True
        if self.connected:
            with contextlib.suppress(Exception):
                await self.send({"type": "leave"})
        tasks = [t for t in (self._reader, self._negotiator, self._reconnector) if t is not None]
        tasks += list(self._consumers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.stop()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._notify()

    async def drop_connection(self) -> None:
        """Lose the signaling socket abruptly (no leave, no close frame); media keeps flowing.

        With ``auto_resume`` the client notices the dead socket as after a real network drop
        and reconnects by itself (see :attr:`reconnects`); otherwise call :meth:`resume`.
        """
        if self.auto_resume:
            if self._ws is not None:
                self._ws._response.close()  # the reader sees the socket end
            return
        ws, self._ws = self._ws, None
        if ws is None:
            return
        ws._response.close()  # the TCP connection just goes (hospital Wi-Fi, a lift)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._notify()

    async def resume(self, resume_token: str | None = None) -> dict[str, Any]:
        """Reconnect the signaling socket, asking for the kept session (``joined.resumeToken``
        unless another token is given). Returns the ``joined`` reply.

        ``resumed: true``: the peer connections and media simply carry on. ``resumed: false``
        (the grace period was over, or the token wrong): the old connections are dropped and
        the participant publishes again, as a fresh join would.
        """
        assert self._session is not None and self._token is not None and self.joined is not None
        if resume_token is None:
            resume_token = str(self.joined.get("resumeToken", ""))
        self._ws = await self._session.ws_connect(_ws_url(self.base_url), autoping=True)
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.name}-ws-reader")
        start = len(self.messages)
        await self.send(
            {"type": "join", "version": 1, "token": self._token, "resume": resume_token}
        )
        reply = await self._first_message({"joined", "error", "removed"}, start, JOIN_TIMEOUT_S)
        if reply["type"] != "joined":
            raise SyntheticClientError(f"join refused: {reply}", reply)
        self.joined = reply
        self.identity = reply["self"]["id"]
        if not reply.get("resumed"):
            await self._reset_media(offers_since=start)
            self._republish = True
        if self._republish:
            # Also after a resume whose full rejoin before it failed to publish.
            if (self.publish_audio or self.publish_video) and self._may_publish(self._token):
                await self._publish()
            self._republish = False
        return reply

    async def _reset_media(self, offers_since: int) -> None:
        # The negotiator may already be answering the new session's offer with the old
        # connection: stop it, drop the old connections, then answer the new offers afresh.
        if self._negotiator is not None:
            self._negotiator.cancel()
            await asyncio.gather(self._negotiator, return_exceptions=True)
        consumers = list(self._consumers.values())
        self._consumers.clear()
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.stop()
        self.publish_pc = self.subscribe_pc = None
        self._mid_to_participant = {}
        # No await from here on: an offer arriving meanwhile lands in the new queue.
        self._offers = asyncio.Queue()
        for message in self.messages[offers_since:]:
            if message.get("type") == "subscribe-offer":
                self._offers.put_nowait(message)
        self._negotiator = asyncio.create_task(
            self._negotiate_loop(), name=f"{self.name}-negotiator"
        )

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(json.dumps(message))

    # ------------------------------------------------------------------ automatic resume

    def _may_reconnect(self) -> bool:
        """The socket ended by itself: not after leave, removal, the end or a fatal error."""
        if not self.auto_resume or self._left or self.joined is None or self.removed is not None:
            return False
        if self._reconnector is not None and not self._reconnector.done():
            return False  # an attempt's own socket ended: the running loop handles it
        if any(e.get("fatal") for e in self.errors):
            return False
        return not any(m.get("type") == "consultation-ended" for m in self.messages)

    async def _discard_socket(self) -> None:
        ws, self._ws = self._ws, None
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def _reconnect_loop(self) -> None:
        dropped = now_ms()
        policy = ReconnectPolicy(dropped, grace_ms=round(self.resume_grace_s * 1000))
        entry: dict[str, Any] = {"dropped_ms": dropped, "back_ms": None, "attempts": 0}
        self.reconnects.append(entry)
        log.info("%s: signaling socket dropped; resuming", self.name)
        while not self._left:
            delay = policy.next_delay_ms(now_ms())
            if delay is None:
                entry["outcome"] = "gave-up"
                self.reconnect_failures += 1
                log.warning("%s: could not reconnect; giving up", self.name)
                return
            await asyncio.sleep(delay / 1000)
            entry["attempts"] += 1
            try:
                async with asyncio.timeout(RESUME_ATTEMPT_TIMEOUT_S):
                    reply = await self.resume()
            except SyntheticClientError as exc:
                await self._discard_socket()
                refusal = exc.error or {}
                if refusal.get("type") == "removed" or refusal.get("fatal"):
                    entry["outcome"] = f"refused: {refusal.get('code') or refusal.get('reason')}"
                    self.reconnect_failures += 1
                    return
                entry["last_error"] = str(exc)[:200]
                continue
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                await self._discard_socket()
                entry["last_error"] = repr(exc)[:200]
                continue
            entry["back_ms"] = now_ms()
            if reply.get("resumed"):
                entry["outcome"] = "resumed"
                self.resumes += 1
            else:
                entry["outcome"] = "rejoined"
                self.rejoins += 1
            log.info(
                "%s: signaling %s after %d ms",
                self.name,
                entry["outcome"],
                entry["back_ms"] - dropped,
            )
            self._notify()
            return

    async def send_raw(self, payload: str | bytes) -> None:
        """Send exactly these bytes/text (for bad-input tests)."""
        if self._ws is None:
            raise RuntimeError("not connected")
        if isinstance(payload, bytes):
            await self._ws.send_bytes(payload)
        else:
            await self._ws.send_str(payload)

    # The contract's API takes timeouts as arguments (like asyncio.wait_for), hence noqa.
    async def wait_for(
        self,
        predicate: Callable[[], bool],
        timeout: float,  # noqa: ASYNC109
    ) -> None:
        """Wait until ``predicate()`` is true; re-checked on every message and media frame."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    changed = self._changed
                    # The periodic re-check covers predicates on state we do not notify about.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(changed.wait(), 0.25)
        except TimeoutError:
            raise TimeoutError(
                f"{self.name}: condition not met within {timeout}s; "
                f"received={self.summary()} errors={self.errors}"
            ) from None

    async def next_message(
        self,
        type_: str,
        timeout: float = 10,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The next server message of ``type_``, reading the message log forward.

        The log is read like a stream: each call starts after the message the previous call
        returned (whatever its type) and skips other types, so a message that already arrived
        is not lost, and ``next_message("participant-left")`` followed by
        ``next_message("subscribe-offer")`` yields the offer sent after that departure.
        """
        return await self._first_message({type_}, self._cursor, timeout, advance=True)

    def red_stats(self) -> dict[str, int]:
        """Audio RED counters over both connections (all 0 without ``red_distance``)."""
        total = {"sent": 0, "received": 0, "recovered": 0, "duplicates": 0, "malformed": 0}
        if self.red_distance is None:
            return total
        from sfu.adapters.aiortc_adapter import red_stats

        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                for key, value in red_stats(pc).items():
                    total[key] += value
        return total

    def summary(self) -> dict[str, dict[str, Any]]:
        """A compact view of :attr:`received` for logs and assertion messages."""
        return {
            pid: {
                "video_frames": m.video_frames,
                "last_counter": m.last_counter,
                "audio_frames": m.audio_frames,
                "audio_rms": round(m.audio_rms, 3),
            }
            for pid, m in self.received.items()
        }

    # ------------------------------------------------------------------ signaling

    async def _fetch_dev_token(self) -> str:
        assert self._session is not None
        params = {"room": self.room, "name": self.name, "role": self.role}
        async with self._session.get(f"{self.base_url}/api/dev-token", params=params) as resp:
            text = await resp.text()
            try:
                body = json.loads(text)
            except ValueError:
                body = text[:200]
            if resp.status // 100 != 2 or not isinstance(body, dict) or "token" not in body:
                raise SyntheticClientError(f"dev-token failed: HTTP {resp.status} {body}")
        if isinstance(body.get("identity"), str):
            self.identity = body["identity"]
        token = body["token"]
        assert isinstance(token, str)
        return token

    def _may_publish(self, token: str) -> bool:
        claims = _token_claims(token)
        role = claims.get("role", self.role)
        allowed = _ROLE_PERMISSIONS.get(role, set())
        claimed = claims.get("permissions")
        if isinstance(claimed, list):
            allowed = allowed & set(claimed)
        return "publish" in allowed

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    log.warning("%s: server sent non-JSON text %r", self.name, msg.data[:100])
                    continue
                if not isinstance(data, dict):
                    continue
                self._handle(data)
        finally:
            self._notify()
        # Only reached when the socket ended by itself (a cancelled reader never gets here).
        if ws is self._ws and self._may_reconnect():
            self._ws = None
            self._reconnector = asyncio.create_task(
                self._reconnect_loop(), name=f"{self.name}-reconnect"
            )

    def _handle(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        kind = message.get("type")
        if kind == "error":
            self.errors.append(message)
        elif kind == "removed":
            self.removed = message
        elif kind == "subscribe-offer":
            self._offers.put_nowait(message)
        self._notify()

    async def _first_message(
        self, types: set[str], start: int, wait_s: float, *, advance: bool = False
    ) -> dict[str, Any]:
        """First message of one of ``types`` at or after log index ``start``.

        Only next_message() advances the public cursor: join() and publishing consume their own
        replies without hiding the messages that arrived in between from next_message().
        """
        index = start

        def scan() -> bool:
            nonlocal index
            while index < len(self.messages):
                if self.messages[index].get("type") in types:
                    return True
                index += 1
            return False

        try:
            async with asyncio.timeout(wait_s):
                while not scan():
                    if self._reader is not None and self._reader.done():
                        raise SyntheticClientError(
                            f"{self.name}: socket closed while waiting for {sorted(types)}"
                        )
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{self.name}: no {sorted(types)} message within {wait_s}s "
                f"(last: {[m.get('type') for m in self.messages[-5:]]})"
            ) from None
        if advance:
            self._cursor = index + 1
        return self.messages[index]

    def _notify(self) -> None:
        # Wake every waiter, then arm a fresh event for the next change.
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ publishing

    def _new_pc(self) -> RTCPeerConnection:
        # max-bundle: with aiortc's "balanced" default, a subscribe offer that adds two video
        # m-lines at once leaves the second on a transport the BUNDLE never connects.
        return RTCPeerConnection(
            RTCConfiguration(
                iceServers=list(self._ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
            )
        )

    def _enable_red(self, pc: RTCPeerConnection) -> None:
        if self.red_distance is None:
            return
        # Imported only on request: the adapter patches aiortc's negotiation process-wide.
        from sfu.adapters.aiortc_adapter import enable_red_audio

        enable_red_audio(pc, self.red_distance)

    async def _publish(self) -> None:
        pc = self.publish_pc = self._new_pc()
        if self.publish_audio:
            self.audio_track = ToneAudioTrack(frequency=self.tone_hz)
            pc.addTransceiver(self.audio_track, direction="sendonly")
        if self.publish_video:
            width, height = self.video_size
            self.video_track = CounterVideoTrack(self.name, width, height, self.fps)
            transceiver = pc.addTransceiver(self.video_track, direction="sendonly")
            transceiver.setCodecPreferences(_video_codec_preferences(self.video_codec))
        self._enable_red(pc)
        # aiortc gathers every candidate inside setLocalDescription, so the offer is complete:
        # the server takes no trickled candidates.
        await pc.setLocalDescription(await pc.createOffer())
        start = len(self.messages)
        await self.send({"type": "publish", "sdp": pc.localDescription.sdp})
        reply = await self._first_message({"publish-answer", "error"}, start, PUBLISH_TIMEOUT_S)
        if reply["type"] != "publish-answer":
            raise SyntheticClientError(f"publish refused: {reply}", reply)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=reply["sdp"], type="answer"))

    # ------------------------------------------------------------------ subscribing

    async def _negotiate_loop(self) -> None:
        while True:
            offer = await self._offers.get()
            # Only the latest offer matters (each is a complete description); skip stale ones.
            while not self._offers.empty():
                offer = self._offers.get_nowait()
            try:
                await self._answer_offer(offer)
            except Exception as exc:  # keep serving later offers; tests inspect the failure
                log.warning("%s: subscribe negotiation failed: %r", self.name, exc)
                self.negotiation_failures.append(repr(exc))
                self._notify()

    async def _answer_offer(self, offer: dict[str, Any]) -> None:
        if self.subscribe_pc is None:
            self.subscribe_pc = self._new_pc()
            self._enable_red(self.subscribe_pc)
        pc = self.subscribe_pc
        # Mids may be reused for someone else after renegotiation: consumers look the owner up
        # per frame, so replacing the map is enough.
        mapping: dict[str, str] = {}
        for track in offer.get("tracks", []):
            pid = str(track["participantId"])
            mapping[str(track["mid"])] = pid
            media = self.received.setdefault(pid, RemoteMedia())
            media.name = str(track.get("name", media.name))
            media.role = str(track.get("role", media.role))
        self._mid_to_participant = mapping

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if mid is None or mid in self._consumers:
                continue
            track = transceiver.receiver.track
            if track is None:
                continue
            self._consumers[mid] = asyncio.create_task(
                self._consume(mid, track), name=f"{self.name}-rx-{mid}"
            )
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "subscribe-answer", "sdp": pc.localDescription.sdp})

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        # Even with decode=False the frames are pulled: aiortc's receiver decodes regardless and
        # would otherwise pile frames up in an unbounded queue.
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            pid = self._mid_to_participant.get(mid)
            if pid is None:
                continue
            media = self.received.setdefault(pid, RemoteMedia())
            if isinstance(frame, VideoFrame):
                media.video_frames += 1
                if self.decode:
                    self._inspect_video(media, frame)
            elif isinstance(frame, AudioFrame):
                media.audio_frames += 1
                if self.decode:
                    self._inspect_audio(media, frame)
            self._notify()

    @staticmethod
    def _inspect_video(media: RemoteMedia, frame: VideoFrame) -> None:
        media.video_size = (frame.width, frame.height)
        # Luma is all the barcode needs and skips a colour conversion per frame.
        decoded = decode_barcode(frame.to_ndarray(format="gray"))
        if decoded is None:
            media.barcode_failures += 1
            return
        counter, capture_ms = decoded
        media.last_counter = counter
        media.counters.append(counter)
        media.latencies_ms.append(elapsed_ms32(capture_ms, clock_ms32()))
        if len(media.counters) > KEEP_LAST:
            del media.counters[:-KEEP_LAST]
        if len(media.latencies_ms) > KEEP_LAST:
            del media.latencies_ms[:-KEEP_LAST]

    @staticmethod
    def _inspect_audio(media: RemoteMedia, frame: AudioFrame) -> None:
        data = frame.to_ndarray()
        channels = len(frame.layout.channels)
        if frame.format.is_planar or channels == 1:
            mono = data[0]
        else:
            mono = data.reshape(-1, channels)[:, 0]  # packed: interleaved samples
        samples = mono.astype(np.float64)
        if data.dtype == np.int16:  # aiortc's opus decoder gives s16; float formats are 0..1
            samples /= 32768.0
        if samples.size == 0:
            return
        media.audio_rms = float(np.sqrt(np.mean(samples**2)))
        spectrum = np.abs(np.fft.rfft(samples))
        spectrum[0] = 0.0  # ignore DC
        media.audio_freq_hz = float(np.argmax(spectrum)) * frame.sample_rate / samples.size
