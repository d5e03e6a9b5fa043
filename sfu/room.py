"""Rooms, sessions and their peer connections: the asyncio shell around the forwarding cores.

Ownership: Sfu → Room → Session → (publisher PC → Producers, subscriber PC → Consumers).
Every fan-out edge is a Consumer in ``Producer.consumers``; removing a session removes its
producers' consumers everywhere and renegotiates the subscribers that had them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiortc import RTCPeerConnection, RTCSessionDescription

from media.sdp_simulcast import add_simulcast_answer, parse_simulcast_offers
from sfu.adapters.aiortc_adapter import (
    ForwardingReceiver,
    IceServer,
    RTCRtpTransceiver,
    add_forwarding_transceiver,
    adopt_receiver,
    new_peer_connection,
    restrict_answer_codec,
    retire_transceiver,
    reusable_transceiver,
    reuse_transceiver,
    set_simulcast,
    set_sink,
    set_transport_feedback,
    transceiver_of_receiver,
)
from sfu.clock import now_ms
from sfu.consumer import Consumer
from sfu.downlink import Downlink
from sfu.errors import SfuError
from sfu.layers import preferred_layer_for
from sfu.producer import Producer
from sfu.recording import AuditSink, Recording
from sfu.speaker import ActiveSpeakerDetector
from sfu.vocabulary import MediaKind, TileView

log = logging.getLogger("consilium.sfu")

# A subscriber that does not answer an offer in this time is considered gone.
ANSWER_TIMEOUT_S = 20.0
MAX_TRACKS_PER_KIND = 1


class SessionLink(Protocol):
    """How the SFU talks back to one participant (implemented by the signaling layer)."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def close(self, reason: str) -> None: ...


@dataclass
class SfuSettings:
    ice_servers: list[IceServer] = field(default_factory=list)
    max_participants: int = 8
    bwe_trace_dir: str | None = None
    # Repair loss with NACK/RTX on both legs; off only to measure what it buys (QA).
    nack: bool = True
    recordings_dir: str = "recordings"
    audit: AuditSink | None = None


class Session:
    """One participant's presence in a room."""

    def __init__(
        self,
        room: Room,
        identity: str,
        name: str,
        role: str,
        *,
        can_publish: bool,
        can_subscribe: bool,
        link: SessionLink,
    ) -> None:
        self.room = room
        self.identity = identity
        self.name = name
        self.role = role
        self.can_publish = can_publish
        self.can_subscribe = can_subscribe
        self.link = link
        self.joined_at = time.time()
        self.audio_muted = False
        self.video_muted = False
        self.muted_by_host = False
        # "reconnecting" while the signaling socket is gone and the session waits for a resume.
        self.connection = "connected"
        self.publisher_pc: RTCPeerConnection | None = None
        self.subscriber_pc: RTCPeerConnection | None = None
        self.producers: dict[str, Producer] = {}
        self.consumers: dict[str, Consumer] = {}  # producer id → consumer
        self._transceivers: dict[str, RTCRtpTransceiver] = {}  # producer id → m-line
        self._pending_add: list[Producer] = []
        self._pending_retire: list[RTCRtpTransceiver] = []
        self._negotiation: asyncio.Task[None] | None = None
        self._answer: asyncio.Future[str] | None = None
        self._offer: dict[str, Any] | None = None  # the subscribe-offer awaiting its answer
        self._offer_resends = 0
        self._renegotiate = False
        self._publish_lock = asyncio.Lock()
        self._tiles: dict[str, TileView] = {}  # participant id -> how the page shows them
        trace_dir = room.sfu.settings.bwe_trace_dir
        self.downlink = Downlink(
            lambda: self.consumers.values(),
            room.dominant_speaker,
            self._send_in_background,
            trace_path=(
                f"{trace_dir}/{room.id}-{identity}-{int(time.time())}.jsonl" if trace_dir else None
            ),
        )
        self._background: set[asyncio.Task[None]] = set()
        self.closed = False

    # ------------------------------------------------------------------ description

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.identity,
            "name": self.name,
            "role": self.role,
            "audioMuted": self.audio_muted,
            "videoMuted": self.video_muted,
            "publishing": sorted({str(p.kind) for p in self.producers.values()}),
            "joinedAt": int(self.joined_at),
            "connection": self.connection,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "producers": [
                {
                    "id": p.id,
                    "kind": str(p.kind),
                    "codec": p.codec.name,
                    "packets": p.packets,
                    "keyframes": p.keyframes_seen,
                    "keyframeRequestsSent": p.keyframe_requests_sent,
                    "redPackets": p.red_packets,
                    "upstreamRepair": p.receiver.nack_stats(),
                    "unrepairable": p.unrepairable,
                    "simulcast": list(p.rids),
                    "layerBitrates": list(p.layers.bitrates(now_ms())),
                    "activeLayers": list(p.dynacast.active()) if p.dynacast else None,
                    "consumers": len(p.consumers),
                }
                for p in self.producers.values()
            ],
            "consumers": [c.stats() for c in self.consumers.values()],
            "downlink": self.downlink.snapshot(),
        }

    # ------------------------------------------------------------------ what the page shows

    def set_viewport(self, tiles: Iterable[TileView]) -> None:
        """The page reports each remote video tile's rendered size and visibility.

        Kept per participant, so a tile reported before its video arrives still applies.
        """
        for tile in tiles:
            self._tiles[tile.participant_id] = tile
        for consumer in self.consumers.values():
            self._apply_tile(consumer)
        self.downlink.allocate(now_ms())

    def _apply_tile(self, consumer: Consumer) -> None:
        tile = self._tiles.get(consumer.producer.owner_id)
        if tile is None or consumer.producer.kind is not MediaKind.VIDEO:
            return
        consumer.pinned = tile.pinned
        if not tile.visible or tile.width <= 0 or tile.height <= 0:
            consumer.preferred_layer = None
        else:
            consumer.preferred_layer = preferred_layer_for(
                tile.height, consumer.producer.layer_heights
            )

    # ------------------------------------------------------------------ publishing

    async def publish(self, offer_sdp: str) -> str:
        if not self.can_publish:
            raise SfuError("forbidden", "your role may not publish media")
        _check_publish_offer(offer_sdp)
        async with self._publish_lock:
            if self.closed:
                raise SfuError("negotiation-failed", "session closed")
            created = self.publisher_pc is None
            if self.publisher_pc is None:
                self.publisher_pc = self.room.sfu.new_peer_connection()
            pc = self.publisher_pc
            adopted: list[ForwardingReceiver] = []

            @pc.on("track")
            def on_track(track: Any) -> None:
                for t in pc.getTransceivers():
                    if t.receiver.track is track:
                        adopted.append(adopt_receiver(t.receiver, nack=self.room.sfu.settings.nack))

            simulcast = parse_simulcast_offers(offer_sdp)
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
                new_producers: list[Producer] = []
                for receiver in adopted:
                    transceiver = transceiver_of_receiver(pc, receiver)
                    codec = restrict_answer_codec(transceiver)
                    if codec is None:
                        raise SfuError("bad-sdp", f"no usable {transceiver.kind} codec offered")
                    layers = simulcast.get(transceiver.mid or "")
                    producer = Producer(
                        producer_id=f"{self.identity}:{transceiver.kind}:{transceiver.mid}",
                        owner_id=self.identity,
                        kind=MediaKind(transceiver.kind),
                        codec=codec,
                        receiver=receiver,
                        simulcast=layers,
                    )
                    producer.mid = transceiver.mid
                    producer.on_active_layers = self._send_active_layers
                    producer.on_audio_level = self.room.speaker.on_level
                    set_simulcast(receiver, layers)
                    set_sink(receiver, producer)
                    new_producers.append(producer)
                answer = await pc.createAnswer()
                await pc.setLocalDescription(answer)
            except SfuError:
                if created:
                    await self._close_publisher()
                raise
            except Exception as exc:  # aiortc raises many types on hostile SDP
                log.info("publish from %s refused: %r", self.identity, exc)
                if created:
                    await self._close_publisher()
                raise SfuError("bad-sdp", f"the offer could not be applied: {exc}") from exc
            finally:
                pc.remove_listener("track", on_track)
            for producer in new_producers:
                self.producers[producer.id] = producer
            if new_producers:
                await self.room.on_producers_added(self, new_producers)
            # aiortc's SDP model has no a=rid / a=simulcast: they go into the text we send.
            return add_simulcast_answer(str(pc.localDescription.sdp), simulcast)

    def _send_active_layers(self, producer: Producer, rids: tuple[str, ...]) -> None:
        """Dynacast: tell this publisher which simulcast encodings anyone needs."""
        self._send_in_background(
            {"type": "publisher-layers", "mid": producer.mid, "active": list(rids)}
        )

    async def _send_quietly(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # a closing socket; its session is going away
            await self.link.send(message)

    def _send_in_background(self, message: dict[str, Any]) -> None:
        if self.closed:
            return
        task = asyncio.ensure_future(self._send_quietly(message))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _close_publisher(self) -> None:
        pc, self.publisher_pc = self.publisher_pc, None
        if pc is not None:
            await pc.close()

    # ------------------------------------------------------------------ subscribing

    def subscribe_to(self, producers: Iterable[Producer]) -> None:
        if not self.can_subscribe or self.closed:
            return
        self._pending_add.extend(producers)
        self._request_negotiation()

    def unsubscribe_from(self, producers: Iterable[Producer]) -> None:
        for producer in producers:
            if producer in self._pending_add:
                self._pending_add.remove(producer)
            consumer = self.consumers.pop(producer.id, None)
            transceiver = self._transceivers.pop(producer.id, None)
            if consumer is None:
                continue
            consumer.closed = True
            if consumer in producer.consumers:
                producer.consumers.remove(consumer)
            if transceiver is not None:
                self._pending_retire.append(transceiver)
        if self._pending_retire:
            self._request_negotiation()

    def _request_negotiation(self) -> None:
        self._renegotiate = True
        if self._negotiation is None or self._negotiation.done():
            self._negotiation = asyncio.ensure_future(self._negotiate())

    async def _negotiate(self) -> None:
        try:
            while self._renegotiate and not self.closed:
                self._renegotiate = False
                if not await self._negotiate_once():
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("negotiation with %s failed: %r", self.identity, exc)
            await self.room.remove(self, "negotiation-failed", notify_code="negotiation-failed")

    async def _negotiate_once(self) -> bool:
        adds, self._pending_add = self._pending_add, []
        retires, self._pending_retire = self._pending_retire, []
        adds = [p for p in adds if p.id not in self.consumers and p in self.room.live_producers()]
        if not adds and not retires:
            return True
        if self.subscriber_pc is None:
            if not adds:
                return True
            self.subscriber_pc = self.room.sfu.new_peer_connection()
        pc = self.subscriber_pc
        for transceiver in retires:
            retire_transceiver(transceiver)
        in_use = set(self._transceivers.values())
        for producer in adds:
            kind = str(producer.kind)
            reusable = reusable_transceiver(pc, kind, producer.codec, in_use)
            if reusable is not None:
                transceiver = reusable
                sender = reuse_transceiver(
                    transceiver, None, stream_id=producer.owner_id, track_id=producer.id
                )
            else:
                transceiver, sender = add_forwarding_transceiver(
                    pc,
                    kind,
                    producer.codec,
                    None,
                    stream_id=producer.owner_id,
                    track_id=producer.id,
                )
            in_use.add(transceiver)
            consumer = Consumer(
                producer,
                self.identity,
                sender,
                self.downlink,
                retransmit=self.room.sfu.settings.nack,
            )
            self._apply_tile(consumer)
            sender._feedback = consumer
            self.consumers[producer.id] = consumer
            self._transceivers[producer.id] = transceiver
            producer.consumers.append(consumer)
        offer = await pc.createOffer()
        await pc.setLocalDescription(offer)
        tracks = []
        for producer_id, transceiver in self._transceivers.items():
            consumer = self.consumers[producer_id]
            consumer.mid = transceiver.mid
            owner = self.room.sessions.get(consumer.producer.owner_id)
            tracks.append(
                {
                    "mid": transceiver.mid,
                    "participantId": consumer.producer.owner_id,
                    "kind": str(consumer.producer.kind),
                    "name": owner.name if owner else "",
                    "role": owner.role if owner else "",
                }
            )
        self._answer = asyncio.get_running_loop().create_future()
        self._offer = {"type": "subscribe-offer", "sdp": pc.localDescription.sdp, "tracks": tracks}
        try:
            await self.link.send(self._offer)
            answer_sdp = await self._wait_for_answer(self._answer)
            if answer_sdp is None:
                await self.room.remove(
                    self, "no answer to subscribe-offer", notify_code="negotiation-failed"
                )
                return False
        finally:
            self._answer = None
            self._offer = None
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))
        except Exception as exc:
            await self.room.remove(self, f"bad subscribe-answer: {exc}", notify_code="bad-sdp")
            return False
        first = next(iter(self.consumers.values()), None)
        if first is not None:
            set_transport_feedback(first.sender, self.downlink.on_transport_feedback)
        self.downlink.start()
        # A new consumer's first forwarded video must be a keyframe: ask now, not on first drop.
        now = now_ms()
        for producer in adds:
            added = self.consumers.get(producer.id)
            layer = added.forwarder.target_layer if added is not None else 0
            producer.request_keyframe(now, layer or 0)
        self.downlink.allocate(now)
        return True

    async def _wait_for_answer(self, answer: asyncio.Future[str]) -> str | None:
        """The answer, or None when the client let ANSWER_TIMEOUT_S pass without one.

        A client whose signaling socket is away cannot answer: the grace period decides about
        it. A resumed client gets the offer again and a fresh ANSWER_TIMEOUT_S.
        """
        while True:
            resends = self._offer_resends
            try:
                return await asyncio.wait_for(asyncio.shield(answer), ANSWER_TIMEOUT_S)
            except TimeoutError:
                if self.connection != "connected" or self._offer_resends != resends:
                    continue
                return None

    def pending_offer(self) -> dict[str, Any] | None:
        """The subscribe-offer the client has not answered yet (None: nothing outstanding)."""
        if self._answer is None or self._answer.done():
            return None
        return self._offer

    async def resend_offer(self, offer: dict[str, Any]) -> None:
        """Send the pending offer again (it went to a socket that died before it arrived)."""
        if self.pending_offer() is not offer:
            return
        self._offer_resends += 1
        await self.link.send(offer)

    def accept_answer(self, answer_sdp: str) -> None:
        if self._answer is None or self._answer.done():
            raise SfuError("negotiation-failed", "no subscribe-offer is waiting for an answer")
        self._answer.set_result(answer_sdp)

    # ------------------------------------------------------------------ teardown

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.downlink.stop()
        for pending in list(self._background):
            pending.cancel()
        task = self._negotiation
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for consumer in self.consumers.values():
            consumer.closed = True
            if consumer in consumer.producer.consumers:
                consumer.producer.consumers.remove(consumer)
        self.consumers.clear()
        self._transceivers.clear()
        self._pending_add.clear()
        self._pending_retire.clear()
        for pc in (self.publisher_pc, self.subscriber_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        self.publisher_pc = None
        self.subscriber_pc = None


def _check_publish_offer(sdp: str) -> None:
    counts = {"audio": 0, "video": 0}
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            if kind not in counts:
                raise SfuError(
                    "bad-sdp", f"m={kind} sections are not accepted on the publish connection"
                )
            counts[kind] += 1
    if sum(counts.values()) == 0:
        raise SfuError("bad-sdp", "the offer has no audio or video section")
    # Media must be DTLS-SRTP keyed: an offer without a fingerprint cannot be secured.
    if "\na=fingerprint:" not in sdp.replace("\r\n", "\n"):
        raise SfuError("bad-sdp", "the offer has no DTLS fingerprint")
    for kind, n in counts.items():
        if n > MAX_TRACKS_PER_KIND:
            raise SfuError(
                "bad-sdp", f"at most {MAX_TRACKS_PER_KIND} {kind} track may be published"
            )


class Room:
    def __init__(self, sfu: Sfu, room_id: str, max_participants: int) -> None:
        self.sfu = sfu
        self.id = room_id
        self.max_participants = max_participants
        self.created_at = time.time()
        self.sessions: dict[str, Session] = {}
        self.speaker = ActiveSpeakerDetector()
        self.recording: Recording | None = None
        self.last_recording: Recording | None = None  # the stopped one, for its file list
        self.removed_identities: set[str] = set()  # removed by the host: no rejoin
        # Roles the host gave while the room lives; they outlast a reconnect with the old token.
        self.role_overrides: dict[str, str] = {}

    def dominant_speaker(self) -> str | None:
        return self.speaker.dominant(now_ms())

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "participants": len(self.sessions),
            "maxParticipants": self.max_participants,
            "createdAt": int(self.created_at),
        }

    def live_producers(self) -> list[Producer]:
        return [p for s in self.sessions.values() for p in s.producers.values()]

    async def join(
        self,
        identity: str,
        name: str,
        role: str,
        *,
        can_publish: bool,
        can_subscribe: bool,
        link: SessionLink,
    ) -> Session:
        if identity in self.removed_identities:
            raise SfuError("forbidden", "the host removed you from this consultation")
        previous = self.sessions.get(identity)
        if previous is None and len(self.sessions) >= self.max_participants:
            raise SfuError(
                "room-full", f"room {self.id} is full ({self.max_participants} participants)"
            )
        if previous is not None:
            # The same person reconnecting (new tab, phone on a new network) replaces the old one.
            await self.remove(
                previous, "duplicate-identity", notify_reason="duplicate-identity", keep_room=True
            )
        session = Session(
            self,
            identity,
            name,
            role,
            can_publish=can_publish,
            can_subscribe=can_subscribe,
            link=link,
        )
        self.sessions[identity] = session
        self._audit("participant-joined", identity, role=role)
        others = [s for s in self.sessions.values() if s is not session]
        await _broadcast(others, {"type": "participant-joined", "participant": session.describe()})
        session.subscribe_to(self.live_producers())
        return session

    # ------------------------------------------------------------------ recording

    def recording_state(self) -> dict[str, Any]:
        if self.recording is not None and self.recording.active:
            return self.recording.state()
        return {"active": False, "startedAt": None, "startedBy": None}

    def _audit(self, event: str, actor: str, **details: Any) -> None:
        audit = self.sfu.settings.audit
        if audit is not None:
            audit.record(event, self.id, actor, **details)

    async def start_recording(self, actor: str, actor_name: str) -> bool:
        """Start recording everyone (False: it was already running). Told to everyone."""
        if self.recording is not None and self.recording.active:
            return False
        now = now_ms()
        recording = Recording(
            self.id,
            Path(self.sfu.settings.recordings_dir),
            actor_name,
            now,
            started_by_id=actor,
        )
        self.recording = recording
        for producer in self.live_producers():
            recording.attach(producer, now)
        self._audit("recording-started", actor, participants=sorted(self.sessions))
        await _broadcast(list(self.sessions.values()), {"type": "recording", **recording.state()})
        return True

    async def stop_recording(self, actor: str, reason: str = "stopped") -> bool:
        """Stop and finalise every file (False: nothing was recording). Told to everyone."""
        recording = self.recording
        if recording is None or not recording.active:
            return False
        files = recording.stop(now_ms())
        self.recording = None
        self.last_recording = recording
        self._audit(
            "recording-stopped",
            actor,
            reason=reason,
            durationS=round(time.time() - recording.started_at, 1),
            files=[Path(f["path"]).name for f in files],
            bytes=sum(f["bytes"] or 0 for f in files),
        )
        await _broadcast(
            list(self.sessions.values()), {"type": "recording", **self.recording_state()}
        )
        return True

    # ------------------------------------------------------------------ publishers

    async def on_producers_added(self, owner: Session, producers: list[Producer]) -> None:
        for producer in producers:
            if not owner.can_publish or (owner.muted_by_host and producer.kind is MediaKind.AUDIO):
                producer.paused = True
        if self.recording is not None:
            now = now_ms()
            for producer in producers:
                self.recording.attach(producer, now)
        for session in list(self.sessions.values()):
            if session is not owner:
                session.subscribe_to(producers)
        await _broadcast(
            [s for s in self.sessions.values() if s is not owner],
            {"type": "participant-updated", "participant": owner.describe()},
        )

    async def set_muted(self, session: Session, kind: str, muted: bool) -> None:
        if kind == "audio":
            session.audio_muted = muted
            if not muted:
                # Unmuting oneself lifts a host mute too (the host cannot force silence).
                session.muted_by_host = False
                for producer in session.producers.values():
                    if producer.kind is MediaKind.AUDIO:
                        producer.paused = not session.can_publish
        else:
            session.video_muted = muted
        await _broadcast(
            list(self.sessions.values()),
            {"type": "participant-updated", "participant": session.describe()},
        )

    async def set_connection(self, session: Session, connection: str) -> None:
        """The participant's signaling socket dropped ("reconnecting") or was resumed."""
        if session.connection == connection or session.closed:
            return
        session.connection = connection
        await _broadcast(
            [s for s in self.sessions.values() if s is not session],
            {"type": "participant-updated", "participant": session.describe()},
        )

    # ------------------------------------------------------------------ host controls

    async def mute_by_host(self, session: Session, actor: str) -> None:
        """Stop forwarding the participant's audio to everyone and tell them why."""
        session.muted_by_host = True
        for producer in session.producers.values():
            if producer.kind is MediaKind.AUDIO:
                producer.paused = True
        self._audit("participant-muted", actor, target=session.identity)
        with contextlib.suppress(Exception):
            await session.link.send({"type": "muted-by-host", "kind": "audio"})
        await self.set_muted(session, "audio", True)

    async def set_role(
        self, session: Session, role: str, *, can_publish: bool, can_subscribe: bool, actor: str
    ) -> None:
        """Give the participant another role; media they may no longer publish stops flowing."""
        previous = session.role
        session.role = role
        session.can_publish = can_publish
        session.can_subscribe = can_subscribe
        self.role_overrides[session.identity] = role
        for producer in session.producers.values():
            host_muted_audio = session.muted_by_host and producer.kind is MediaKind.AUDIO
            producer.paused = not can_publish or host_muted_audio
        self._audit("role-changed", actor, target=session.identity, previous=previous, role=role)
        await _broadcast(
            list(self.sessions.values()),
            {"type": "participant-updated", "participant": session.describe()},
        )

    async def remove_by_host(self, session: Session, actor: str) -> None:
        """Disconnect the participant; the same identity may not rejoin while the room lives."""
        self.removed_identities.add(session.identity)
        self._audit("participant-removed", actor, target=session.identity)
        await self.remove(session, "removed-by-host", notify_reason="removed-by-host")

    async def remove(
        self,
        session: Session,
        reason: str,
        *,
        notify_reason: str | None = None,
        notify_code: str | None = None,
        keep_room: bool = False,
    ) -> None:
        """Take a session out of the room; tell it why when the removal was not its own choice."""
        if self.sessions.get(session.identity) is not session:
            await session.close()
            return
        del self.sessions[session.identity]
        self._audit("participant-left", session.identity, reason=reason)
        self.speaker.forget(session.identity)
        producers = list(session.producers.values())
        if self.recording is not None:
            self.recording.detach_participant(session.identity, now_ms())
        await session.close()
        for other in self.sessions.values():
            other.unsubscribe_from(producers)
        if notify_code is not None:
            with contextlib.suppress(Exception):
                await session.link.send(
                    {"type": "error", "code": notify_code, "message": reason, "fatal": True}
                )
            with contextlib.suppress(Exception):
                await session.link.close(notify_code)
        elif notify_reason is not None:
            with contextlib.suppress(Exception):
                await session.link.send({"type": "removed", "reason": notify_reason})
            with contextlib.suppress(Exception):
                await session.link.close(notify_reason)
        await _broadcast(
            list(self.sessions.values()),
            {
                "type": "participant-left",
                "participantId": session.identity,
                "reason": notify_reason or notify_code or reason,
            },
        )
        if not self.sessions and not keep_room and not self.sfu.keeps_empty_room(self):
            await self.stop_recording("system", "room-closed")
            self.sfu.rooms.pop(self.id, None)


async def _broadcast(sessions: Iterable[Session], message: dict[str, Any]) -> None:
    for session in sessions:
        with contextlib.suppress(Exception):
            await session.link.send(message)


class EndedRooms(Protocol):
    def __contains__(self, room: object, /) -> bool: ...

    def add(self, room: str, /) -> None: ...


class Sfu:
    """Registry of rooms for this process."""

    def __init__(self, settings: SfuSettings) -> None:
        self.settings = settings
        self.rooms: dict[str, Room] = {}
        self._explicit_rooms: set[str] = set()
        # Ended by a host: joining or re-creating them is refused (the signaling layer swaps in
        # a set kept in the database, so that holds across restarts too).
        self.ended_rooms: EndedRooms = set()

    def new_peer_connection(self) -> RTCPeerConnection:
        return new_peer_connection(self.settings.ice_servers)

    def keeps_empty_room(self, room: Room) -> bool:
        return room.id in self._explicit_rooms

    def create_room(self, room_id: str, max_participants: int | None = None) -> Room:
        self._refuse_ended(room_id)
        if room_id in self.rooms:
            raise SfuError("room-exists", f"room {room_id} already exists")
        room = Room(self, room_id, max_participants or self.settings.max_participants)
        self.rooms[room_id] = room
        self._explicit_rooms.add(room_id)
        return room

    def _refuse_ended(self, room_id: str) -> None:
        if room_id in self.ended_rooms:
            raise SfuError("room-ended", f"the consultation in room {room_id} has ended")

    def room_for_join(self, room_id: str) -> Room:
        self._refuse_ended(room_id)
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = Room(self, room_id, self.settings.max_participants)
        return room

    async def close_room(self, room_id: str, reason: str = "room-closed") -> bool:
        room = self.rooms.get(room_id)
        if room is None:
            return False
        self._explicit_rooms.discard(room_id)
        for session in list(room.sessions.values()):
            await room.remove(session, reason, notify_reason=reason)
        await room.stop_recording("system", reason)
        self.rooms.pop(room_id, None)
        return True

    async def end_consultation(self, room: Room, actor: str) -> None:
        """Tell everyone, disconnect them, close the room and refuse later joins."""
        self.ended_rooms.add(room.id)
        room._audit("consultation-ended", actor, participants=sorted(room.sessions))
        await _broadcast(list(room.sessions.values()), {"type": "consultation-ended", "by": actor})
        await self.close_room(room.id, "consultation-ended")

    def participant_count(self) -> int:
        return sum(len(r.sessions) for r in self.rooms.values())

    async def close(self) -> None:
        for room_id in list(self.rooms):
            await self.close_room(room_id, "server-shutdown")
