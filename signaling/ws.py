"""The signaling WebSocket: join and resume, message dispatch, host controls over the socket.

``WsLink`` is the session's link to its client; ``signaling.resume`` decides what it keeps
while the socket is gone and whether a new socket may take the session over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web

from sfu.clock import now_ms
from sfu.errors import SfuError
from sfu.room import Session
from signaling.appkeys import (
    AUDIT,
    AUTHORITY,
    CHAT,
    COUNTERS,
    SETTINGS,
    SFU,
    SOCKETS,
    unix_now_s,
)
from signaling.auth import ROLE_PERMISSIONS, Grant, Permission, Role, TokenError
from signaling.chat_service import CHAT_COMMANDS
from signaling.config import Settings
from signaling.counters import ServiceCounters
from signaling.messages import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    ChatRefused,
    EndConsultation,
    Join,
    Leave,
    Mute,
    MuteParticipant,
    Ping,
    ProtocolError,
    Publish,
    RemoveParticipant,
    SetRole,
    StartRecording,
    StopRecording,
    SubscribeAnswer,
    Viewport,
    error_message,
    parse_client_message,
    validate_sdp,
)
from signaling.resume import LinkState, ResumeLimits, ResumeState, Route, keeps_session

log = logging.getLogger("consilium.signaling")

# aiohttp closes the socket above this; our own, friendlier limit is MAX_MESSAGE_BYTES.
WS_HARD_LIMIT = 4 * MAX_MESSAGE_BYTES
JOIN_TIMEOUT_S = 15.0


class WsLink:
    """SessionLink over the signaling WebSocket.

    One per session: when the socket drops without ``leave`` the link outlives it for the
    grace period, keeps what the session is sent (signaling.resume decides), and a resumed
    socket is attached to it and first gets those messages, in order.
    """

    def __init__(self, ws: web.WebSocketResponse, limits: ResumeLimits) -> None:
        self.ws: web.WebSocketResponse | None = ws
        self.session: Session | None = None
        self.grant: Grant | None = None
        self.resume: ResumeState[str] = ResumeState(limits)
        # Set on a new socket's link when its join resumed another session's link.
        self.resumed_into: WsLink | None = None
        # The client's close frame code (or protocol violation) on this link's first socket.
        self.peer_close_code: int | None = None
        self._grace: asyncio.Task[None] | None = None
        self._expire_now = asyncio.Event()
        self._chores: set[asyncio.Future[bool]] = set()

    async def send(self, message: dict[str, Any]) -> None:
        ws = self.ws
        if self.session is None:  # not joined: nothing to resume
            if ws is not None and not ws.closed:
                await ws.send_json(message)
            return
        text = json.dumps(message)  # ASCII (ensure_ascii): characters are bytes
        kind = str(message.get("type", ""))
        is_open = ws is not None and not ws.closed
        route = self.resume.route(kind, text, len(text), socket_open=is_open)
        if route is Route.SEND and ws is not None:
            try:
                await ws.send_str(text)
            except Exception:  # the socket died under us: keep it for a resume
                route = self.resume.route(kind, text, len(text), socket_open=False)
        if route is Route.OVERFLOW:
            self._expire_now.set()

    async def close(self, reason: str) -> None:
        # The session is over (left, removed, fatal error): nothing more is kept or resumed.
        self.forget()
        ws = self.ws
        if ws is not None and not ws.closed:
            await ws.close(code=1000, message=reason.encode()[:120])

    def forget(self) -> None:
        self.resume.close()
        self.forget_grace()

    def forget_grace(self) -> None:
        task, self._grace = self._grace, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def close_later(self, ws: web.WebSocketResponse, code: int, reason: str) -> None:
        """Close a replaced socket without waiting for its (possibly dead) peer."""
        task = asyncio.ensure_future(ws.close(code=code, message=reason.encode()))
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)


def _resume_limits(settings: Settings) -> ResumeLimits:
    return ResumeLimits(grace_ms=int(settings.resume_grace_s * 1000))


async def _detach(
    link: WsLink, session: Session, close_code: int | None, counters: ServiceCounters
) -> None:
    """The socket dropped without leave: keep the session, media flowing, for a resume."""
    link.ws = None
    link.resume.detach(now_ms())
    link._expire_now.clear()
    link._grace = asyncio.ensure_future(_grace_period(link, session, counters))
    session.room._audit("participant-reconnecting", session.identity, closeCode=close_code)
    await session.room.set_connection(session, "reconnecting")


async def _grace_period(link: WsLink, session: Session, counters: ServiceCounters) -> None:
    """Remove the session, as a plain disconnect, unless it is resumed in time."""
    state = link.resume
    while state.state is LinkState.DETACHED and not state.expired(now_ms()):
        assert state.deadline_ms is not None
        remaining_s = max(0.0, (state.deadline_ms - now_ms()) / 1000)
        with contextlib.suppress(TimeoutError):
            # Woken early when the kept messages overflow.
            await asyncio.wait_for(link._expire_now.wait(), remaining_s)
    if state.state is not LinkState.DETACHED:
        return  # resumed, or removed meanwhile (host, end of the consultation)
    counters.resume_grace_expired(overflow=state.overflowed)
    state.close()
    if not session.closed:
        await session.room.remove(session, "disconnected")


# aiohttp closes a socket whose pong is late by half the heartbeat. At 20 % loss one TCP segment
# can wait behind several backed-off retransmission timeouts; 10 s dropped a bedside phone from
# a call whose media was fine (QA, lossy-20); 15 s leaves more room. A dead peer still goes
# within 45 s.
WS_HEARTBEAT_S = 30.0


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=WS_HARD_LIMIT, heartbeat=WS_HEARTBEAT_S)
    await ws.prepare(request)
    app = request.app
    app[SOCKETS].add(ws)
    link = WsLink(ws, _resume_limits(app[SETTINGS]))
    try:
        await _serve_socket(app, ws, link)
    finally:
        # link.session, not a return value: a cancelled or failing handler must still leave.
        app[SOCKETS].discard(ws)
        active = link.resumed_into or link
        session = active.session
        # active.ws is not ws: a resumed socket took the session over; it is not ours to end.
        if session is not None and not session.closed and active.ws is ws:
            # aiohttp reports an abrupt drop as close code 1000 too: judge by the client's frame.
            if keeps_session(link.peer_close_code, active.resume.limits.grace_ms):
                await _detach(active, session, link.peer_close_code, app[COUNTERS])
            else:
                active.forget()
                await session.room.remove(session, "disconnected")
    return ws


async def _serve_socket(
    app: web.Application, ws: web.WebSocketResponse, link: WsLink
) -> Session | None:
    session: Session | None = None

    def joined() -> bool:
        return session is not None

    async for msg in _messages(ws, joined, link):
        if msg.type == WSMsgType.ERROR or link.ws is not ws:
            break  # (or a resumed socket has taken this session over)
        raw: str | bytes = msg.data
        try:
            parsed = parse_client_message(raw)
            if session is None:
                if not isinstance(parsed, Join):
                    raise ProtocolError("not-joined", "send a join message first")
                session = await _join(app, parsed, link)
                if link.resumed_into is not None:
                    link = link.resumed_into
                link.session = session
                continue
            if isinstance(parsed, CHAT_COMMANDS):
                await app[CHAT].handle(session, parsed, link.grant)
                continue
            session = await _handle(session, parsed, link)
            if session is None:
                break
        except ProtocolError as exc:
            if isinstance(exc, ChatRefused) and session is not None:
                app[COUNTERS].chat_refusal(exc.code)
            await link.send(error_message(exc.code, exc.message))
        except TokenError as exc:
            if session is None and isinstance(parsed, Join):
                # Who tried is unknown (the token did not verify): the room and why only.
                app[AUDIT].record("token-refused", parsed.room or "", "unknown", code=exc.code)
            await link.send(error_message(exc.code, exc.message, fatal=True))
            await link.close(exc.code)
            break
        except SfuError as exc:
            fatal = session is None
            await link.send(error_message(exc.code, exc.message, fatal=fatal))
            if fatal:
                await link.close(exc.code)
                break
        except Exception:
            log.exception("unexpected error handling a signaling message")
            await link.send(error_message("internal", "the server could not handle that message"))
        if session is not None and session.closed:
            break
    return session


async def _messages(
    ws: web.WebSocketResponse, joined: Callable[[], bool], link: WsLink
) -> AsyncIterator[Any]:
    """Yield text/binary frames; close sockets that have not joined within JOIN_TIMEOUT_S.

    Notes in ``link.peer_close_code`` how the client ended the socket: the code of its close
    frame or of its protocol violation; None when the connection just went away.
    """
    join_deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not ws.closed:
        try:
            timeout = None if joined() else max(0.1, join_deadline - time.monotonic())
            msg = await ws.receive(timeout=timeout)
        except TimeoutError:
            await ws.send_json(error_message("not-joined", "no join message received", fatal=True))
            await ws.close()
            return
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            yield msg
        elif msg.type == WSMsgType.ERROR:
            exc = ws.exception()
            if exc is not None and "exceeds limit" in str(exc):
                log.info("closed a socket that sent an oversized frame")
            if isinstance(exc, WebSocketError):  # a bad frame, not the network
                link.peer_close_code = exc.code
            return
        elif msg.type == WSMsgType.CLOSE:
            link.peer_close_code = msg.data if isinstance(msg.data, int) else None
            return
        elif msg.type in (WSMsgType.CLOSING, WSMsgType.CLOSED):
            return


async def _join(app: web.Application, join: Join, link: WsLink) -> Session:
    if join.version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported-version", f"this server speaks protocol {PROTOCOL_VERSION}"
        )
    grant = app[AUTHORITY].verify(join.token, room=join.room, now_s=unix_now_s())
    room = app[SFU].room_for_join(grant.room)
    override = room.role_overrides.get(grant.identity)
    if override is not None:
        grant = grant.with_role(Role(override))
    if join.resume is not None:
        resumed = await _resume(app, room, grant.identity, join.resume, link)
        if resumed is not None:
            return resumed
    link.grant = grant
    session = await room.join(
        grant.identity,
        grant.name,
        str(grant.role),
        can_publish=grant.can(Permission.PUBLISH),
        can_subscribe=grant.can(Permission.SUBSCRIBE),
        link=link,
    )
    await link.send(_joined_message(app, session, grant, link, resumed=False))
    return session


def _joined_message(
    app: web.Application, session: Session, grant: Grant, link: WsLink, *, resumed: bool
) -> dict[str, Any]:
    room = session.room
    return {
        "type": "joined",
        "version": PROTOCOL_VERSION,
        "room": room.id,
        "self": {
            **session.describe(),
            "permissions": sorted(str(p) for p in grant.permissions),
        },
        "participants": [s.describe() for s in room.sessions.values() if s is not session],
        "iceServers": [s.as_dict() for s in app[SETTINGS].ice_servers],
        "maxMessageBytes": MAX_MESSAGE_BYTES,
        "recording": room.recording_state(),
        "resumeToken": link.resume.token,
        "resumed": resumed,
    }


async def _resume(
    app: web.Application, room: Any, identity: str, token: str, link: WsLink
) -> Session | None:
    """Attach this socket to the identity's kept session, or None for a full join."""
    session = room.sessions.get(identity)
    if session is None or session.closed or not isinstance(session.link, WsLink):
        return None
    target: WsLink = session.link
    now = now_ms()
    if target.grant is None or not target.resume.may_resume(token, now):
        return None
    away_ms = now - target.resume.detached_at_ms if target.resume.detached_at_ms else 0
    ws = link.ws
    assert ws is not None
    stale = target.ws
    target.forget_grace()
    target.ws = ws
    link.resumed_into = target
    # The offer waiting for an answer went out on the old socket unless it was kept: then the
    # client may never have seen it, so it is sent again after the replay.
    offer = session.pending_offer()
    resend = offer is not None and not target.resume.queued_since_drop("subscribe-offer")
    replayed = target.resume.queued
    target.resume.begin_replay()
    if stale is not None and stale is not ws and not stale.closed:
        # The old socket still looked alive (a half-open TCP connection): retire it quietly.
        target.close_later(stale, 4001, "resumed on another connection")
    room._audit("participant-resumed", identity, awayMs=away_ms, replayed=replayed)
    app[COUNTERS].session_resumed()
    # `joined` first, then what was kept (messages sent meanwhile queue behind it).
    try:
        await ws.send_str(
            json.dumps(_joined_message(app, session, target.grant, target, resumed=True))
        )
        while (text := target.resume.next_to_replay()) is not None:
            await ws.send_str(text)
    except Exception:
        # Dropped again while catching up: this handler's exit starts a new grace period.
        log.info("resumed socket of %s closed during the replay", identity)
        return session
    await room.set_connection(session, "connected")
    if resend and offer is not None:
        await session.resend_offer(offer)
    return session


async def _handle(session: Session, message: Any, link: WsLink) -> Session | None:
    if isinstance(message, Join):
        raise ProtocolError("already-joined", "this socket has already joined")
    if isinstance(message, Publish):
        validate_sdp(message.sdp)
        answer = await session.publish(message.sdp)
        await link.send({"type": "publish-answer", "sdp": answer})
    elif isinstance(message, SubscribeAnswer):
        validate_sdp(message.sdp)
        session.accept_answer(message.sdp)
    elif isinstance(message, Mute):
        await session.room.set_muted(session, message.kind, message.muted)
    elif isinstance(message, Ping):
        await link.send({"type": "pong"})
    elif isinstance(message, Viewport):
        session.set_viewport(message.tiles)
    elif isinstance(message, (StartRecording, StopRecording)):
        await _recording_by_participant(session, message, link)
    elif isinstance(message, (RemoveParticipant, MuteParticipant, EndConsultation, SetRole)):
        await _host_control(session, message, link)
        if session.closed:  # the host ended the consultation: their socket is closed too
            return None
    elif isinstance(message, Leave):
        await session.room.remove(session, "left")
        await link.close("left")
        return None
    return session


async def _recording_by_participant(
    session: Session, message: StartRecording | StopRecording, link: WsLink
) -> None:
    room = session.room
    start = isinstance(message, StartRecording)
    grant = link.grant
    if grant is None or not grant.can(Permission.RECORD):
        audit = room.sfu.settings.audit
        if audit is not None:
            audit.record(
                "recording-refused",
                room.id,
                session.identity,
                action="start" if start else "stop",
                role=session.role,
            )
        raise ProtocolError("forbidden", "only the host may start or stop recording")
    changed = (
        await room.start_recording(session.identity, session.name)
        if start
        else await room.stop_recording(session.identity)
    )
    if not changed:
        # Already in that state: the asker still learns where things stand.
        await link.send({"type": "recording", **room.recording_state()})


HOST_ACTIONS = {
    RemoveParticipant: "remove-participant",
    MuteParticipant: "mute-participant",
    EndConsultation: "end-consultation",
    SetRole: "set-role",
}
HostControl = RemoveParticipant | MuteParticipant | EndConsultation | SetRole


async def change_role(room: Any, target: Session, role: Role, actor: str) -> None:
    """Apply a host's role change to a live participant and tell them their new permissions."""
    permissions = ROLE_PERMISSIONS[role]
    link = target.link
    if isinstance(link, WsLink) and link.grant is not None:
        link.grant = link.grant.with_role(role)
    await room.set_role(
        target,
        str(role),
        can_publish=Permission.PUBLISH in permissions,
        can_subscribe=Permission.SUBSCRIBE in permissions,
        actor=actor,
    )
    with contextlib.suppress(Exception):
        await link.send(
            {"type": "role-changed", "role": str(role), "permissions": sorted(permissions)}
        )


async def _host_control(session: Session, message: HostControl, link: WsLink) -> None:
    room = session.room
    action = HOST_ACTIONS[type(message)]
    target_id = None if isinstance(message, EndConsultation) else message.participant_id
    grant = link.grant
    if grant is None or not grant.can(Permission.ADMIN):
        details: dict[str, Any] = {"action": action, "role": session.role}
        if target_id is not None:
            details["target"] = target_id
        room._audit("host-control-refused", session.identity, **details)
        raise ProtocolError(
            "forbidden", "only the host may remove or mute participants, change roles or end"
        )
    if isinstance(message, EndConsultation):
        await room.sfu.end_consultation(room, session.identity)
        return
    target = room.sessions.get(message.participant_id)
    if target is None:
        raise ProtocolError("bad-field", "no such participant in this room")
    if target is session:
        raise ProtocolError("bad-field", "use leave or mute for yourself")
    if isinstance(message, RemoveParticipant):
        await room.remove_by_host(target, session.identity)
    elif isinstance(message, SetRole):
        await change_role(room, target, Role(message.role), session.identity)
    else:
        await room.mute_by_host(target, session.identity)
