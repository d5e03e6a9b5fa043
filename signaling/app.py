"""The aiohttp application: web client, WebSocket signaling, REST API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from aiohttp import WebSocketError, WSMsgType, web
from prometheus_client import CollectorRegistry

from sfu.adapters.aiortc_adapter import configure_ice_hosts
from sfu.clock import now_ms
from sfu.errors import SfuError
from sfu.room import Session, Sfu, SfuSettings
from signaling.audit import AuditLog
from signaling.auth import (
    ROLE_PERMISSIONS,
    Grant,
    Permission,
    Role,
    TokenAuthority,
    TokenError,
    check_api_key,
    generate_secret,
    is_valid_role,
    new_identity,
)
from signaling.chat_service import CHAT_COMMANDS, ChatService
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
from signaling.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from signaling.metrics import registry_for
from signaling.metrics import render as render_metrics
from signaling.resume import LinkState, ResumeLimits, ResumeState, Route, keeps_session
from signaling.storage.chat_sqlite import SqliteChatRepository
from signaling.storage.rooms_sqlite import SqliteEndedRooms
from signaling.storage.sqlite import SqliteStore

log = logging.getLogger("consilium.signaling")

STATIC_DIR = Path(__file__).parent / "static"
ROOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# aiohttp closes the socket above this; our own, friendlier limit is MAX_MESSAGE_BYTES.
WS_HARD_LIMIT = 4 * MAX_MESSAGE_BYTES
JOIN_TIMEOUT_S = 15.0

SETTINGS = web.AppKey("settings", Settings)
SFU = web.AppKey("sfu", Sfu)
AUTHORITY = web.AppKey("authority", TokenAuthority)
METRICS = web.AppKey("metrics", CollectorRegistry)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
AUDIT = web.AppKey("audit", AuditLog)
CHAT = web.AppKey("chat", ChatService)
COUNTERS = web.AppKey("counters", ServiceCounters)


def _now_s() -> int:
    return int(time.time())


def api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


# --------------------------------------------------------------------------- WebSocket


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
    grant = app[AUTHORITY].verify(join.token, room=join.room, now_s=_now_s())
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


# --------------------------------------------------------------------------- REST


def _authorize(request: web.Request, room_id: str | None = None) -> web.Response | None:
    """None when allowed; otherwise the error response to return."""
    settings = request.app[SETTINGS]
    header = request.headers.get("Authorization")
    if settings.api_key is None and settings.dev_mode:
        return None
    if settings.api_key is not None and check_api_key(header, settings.api_key):
        return None
    if room_id is not None and header and header.startswith("Bearer "):
        try:
            grant = request.app[AUTHORITY].verify(header[7:], room=room_id, now_s=_now_s())
        except TokenError as exc:
            request.app[AUDIT].record(
                "token-refused", room_id, "unknown", code=exc.code, path=request.path
            )
            return api_error(401, exc.code, exc.message)
        if grant.can(Permission.ADMIN):
            return None
        return api_error(403, "forbidden", "this token has no admin permission")
    return api_error(401, "unauthorized", "send Authorization: Bearer <api key>")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format; the API key guards it like the rest of the API."""
    if (denied := _authorize(request)) is not None:
        return denied
    body = render_metrics(request.app[METRICS])
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    sfu = request.app[SFU]
    return web.json_response(
        {"status": "ok", "rooms": len(sfu.rooms), "participants": sfu.participant_count()}
    )


async def list_rooms(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    return web.json_response({"rooms": [r.describe() for r in request.app[SFU].rooms.values()]})


async def _json_body(request: web.Request) -> dict[str, Any]:
    too_large = f"request bodies are limited to {MAX_MESSAGE_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        raise ProtocolError("too-large", too_large)
    try:
        body = await request.json() if request.can_read_body else {}
    except web.HTTPRequestEntityTooLarge as exc:  # chunked bodies are only caught while reading
        raise ProtocolError("too-large", too_large) from exc
    except ValueError as exc:
        raise ProtocolError("bad-json", "the request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise ProtocolError("bad-json", "the request body must be a JSON object")
    return body


async def create_room(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    try:
        body = await _json_body(request)
    except ProtocolError as exc:
        return api_error(413 if exc.code == "too-large" else 400, exc.code, exc.message)
    room_id = body.get("id")
    if room_id is None:
        room_id = new_identity()
    max_participants = body.get("maxParticipants")
    if not isinstance(room_id, str) or not ROOM_ID.match(room_id):
        return api_error(400, "bad-field", "id must match [A-Za-z0-9_-]{1,64}")
    if max_participants is not None and (
        not isinstance(max_participants, int)
        or isinstance(max_participants, bool)
        or not 1 <= max_participants <= 100
    ):
        return api_error(400, "bad-field", "maxParticipants must be an integer from 1 to 100")
    try:
        room = request.app[SFU].create_room(room_id, max_participants)
    except SfuError as exc:
        return api_error(409, exc.code, exc.message)
    return web.json_response(room.describe(), status=201)


def _room_or_404(request: web.Request) -> Any:
    room = request.app[SFU].rooms.get(request.match_info["room"])
    if room is None:
        return api_error(404, "room-not-found", f"no room {request.match_info['room']!r}")
    return room


async def get_room(request: web.Request) -> web.Response:
    if (denied := _authorize(request, request.match_info["room"])) is not None:
        return denied
    room = _room_or_404(request)
    return room if isinstance(room, web.Response) else web.json_response(room.describe())


async def delete_room(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    if not await request.app[SFU].close_room(request.match_info["room"]):
        return api_error(404, "room-not-found", f"no room {request.match_info['room']!r}")
    return web.Response(status=204)


async def list_participants(request: web.Request) -> web.Response:
    if (denied := _authorize(request, request.match_info["room"])) is not None:
        return denied
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    return web.json_response({"participants": [s.describe() for s in room.sessions.values()]})


def _participant_or_error(request: web.Request) -> tuple[Any, Session] | web.Response:
    """(room, session) named by the path, or the error response (auth, 404s)."""
    if (denied := _authorize(request, request.match_info["room"])) is not None:
        return denied
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    session = room.sessions.get(request.match_info["identity"])
    if session is None:
        return api_error(404, "participant-not-found", "no such participant in this room")
    return room, session


async def participant_stats(request: web.Request) -> web.Response:
    found = _participant_or_error(request)
    if isinstance(found, web.Response):
        return found
    return web.json_response(found[1].stats())


async def remove_participant(request: web.Request) -> web.Response:
    found = _participant_or_error(request)
    if isinstance(found, web.Response):
        return found
    room, session = found
    await room.remove_by_host(session, _api_actor(request))
    return web.Response(status=204)


async def mute_participant(request: web.Request) -> web.Response:
    found = _participant_or_error(request)
    if isinstance(found, web.Response):
        return found
    room, session = found
    await room.mute_by_host(session, _api_actor(request))
    return web.Response(status=204)


async def put_participant_role(request: web.Request) -> web.Response:
    found = _participant_or_error(request)
    if isinstance(found, web.Response):
        return found
    room, session = found
    try:
        body = await _json_body(request)
    except ProtocolError as exc:
        return api_error(413 if exc.code == "too-large" else 400, exc.code, exc.message)
    role = body.get("role")
    if not is_valid_role(role):
        return api_error(400, "bad-field", "role must be host, specialist, bedside or observer")
    await change_role(room, session, Role(role), _api_actor(request))
    return web.json_response({"participant": session.describe()})


async def end_room(request: web.Request) -> web.Response:
    """End the consultation: everyone is disconnected and the room id refuses later joins."""
    if (denied := _authorize(request, request.match_info["room"])) is not None:
        return denied
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    await request.app[SFU].end_consultation(room, _api_actor(request))
    return web.Response(status=204)


def _api_actor(request: web.Request) -> str:
    """Who is calling the REST API, for the audit trail: a host token's identity or the key."""
    header = request.headers.get("Authorization", "")
    settings = request.app[SETTINGS]
    if settings.api_key is not None and check_api_key(header, settings.api_key):
        return "api-key"
    if header.startswith("Bearer "):
        with contextlib.suppress(TokenError):
            grant = request.app[AUTHORITY].verify(
                header[7:], room=request.match_info["room"], now_s=_now_s()
            )
            return grant.identity
    return "api-dev"


def _recording_body(room: Any) -> dict[str, Any]:
    current = room.recording or room.last_recording
    return {
        "recording": room.recording_state(),
        "files": current.describe_files() if current is not None else [],
    }


async def get_recording(request: web.Request) -> web.Response:
    if (denied := _authorize(request, request.match_info["room"])) is not None:
        return denied
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    return web.json_response(_recording_body(room))


async def post_recording(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    if (denied := _authorize(request, room_id)) is not None:
        if denied.status == 403:
            request.app[AUDIT].record(
                "recording-refused", room_id, "api-token", reason="no admin permission"
            )
        return denied
    room = _room_or_404(request)
    if isinstance(room, web.Response):
        return room
    try:
        body = await _json_body(request)
    except ProtocolError as exc:
        return api_error(413 if exc.code == "too-large" else 400, exc.code, exc.message)
    action = body.get("action")
    if action not in ("start", "stop"):
        return api_error(400, "bad-field", "action must be 'start' or 'stop'")
    actor = _api_actor(request)
    if action == "start":
        await room.start_recording(actor, "REST API")
    else:
        await room.stop_recording(actor)
    return web.json_response(_recording_body(room))


AUDIT_PAGE_MAX = 500


async def get_audit(request: web.Request) -> web.Response:
    """A room's audit entries after `after` (a seq), oldest first; admins only."""
    room_id = request.match_info["room"]
    if (denied := _authorize(request, room_id)) is not None:
        return denied
    try:
        after = int(request.query.get("after", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return api_error(400, "bad-field", "after and limit must be integers")
    if after < 0 or not 1 <= limit <= AUDIT_PAGE_MAX:
        return api_error(400, "bad-field", f"after >= 0 and 1 <= limit <= {AUDIT_PAGE_MAX}")
    store = request.app[AUDIT].store
    entries = await asyncio.to_thread(store.list_room, room_id, after, limit)
    return web.json_response(
        {
            "room": room_id,
            "entries": [e.as_dict() for e in entries],
            # Pass as ?after= for the next page; null when this page was the last.
            "next": entries[-1].seq if len(entries) == limit else None,
        }
    )


def _mint(request: web.Request, body: dict[str, Any], status: int = 201) -> web.Response:
    authority = request.app[AUTHORITY]
    room = body.get("room")
    name = body.get("name")
    role = body.get("role", "specialist")
    identity = body.get("identity") or new_identity()
    ttl = body.get("ttlSeconds")
    permissions = body.get("permissions")
    if not isinstance(room, str) or not isinstance(name, str) or not isinstance(role, str):
        return api_error(400, "bad-field", "room, name and role must be strings")
    if not isinstance(identity, str):
        return api_error(400, "bad-field", "identity must be a string")
    if ttl is not None and (
        not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 7 * 86400
    ):
        return api_error(400, "bad-field", "ttlSeconds must be an integer from 1 to 604800")
    if permissions is not None and (
        not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions)
    ):
        return api_error(400, "bad-field", "permissions must be a list of strings")
    now = _now_s()
    try:
        token = authority.mint(
            room=room,
            identity=identity,
            name=name,
            role=role,
            permissions=permissions,
            ttl_s=ttl,
            now_s=now,
        )
    except ValueError as exc:
        return api_error(400, "bad-field", str(exc))
    grant: Grant = authority.verify(token, room=room, now_s=now)
    return web.json_response(
        {
            "token": token,
            "identity": identity,
            "expiresAt": grant.expires_at,
            "url": f"/?token={token}",
        },
        status=status,
    )


async def mint_token(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    try:
        body = await _json_body(request)
    except ProtocolError as exc:
        return api_error(413 if exc.code == "too-large" else 400, exc.code, exc.message)
    return _mint(request, body)


async def dev_token(request: web.Request) -> web.Response:
    if not request.app[SETTINGS].dev_mode:
        return api_error(
            404, "not-found", "development tokens are off: this server needs invitation links"
        )
    q = request.query
    body = {
        "room": q.get("room", "demo"),
        "name": q.get("name", "Guest"),
        "role": q.get("role", "host"),
    }
    return _mint(request, body, status=200)  # a GET: nothing new is stored


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# --------------------------------------------------------------------------- app


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    response: web.StreamResponse = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # tokens live in page URLs
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=MAX_MESSAGE_BYTES)
    app[SETTINGS] = settings
    store = SqliteStore.in_dir(settings.data_dir)
    app[AUDIT] = AuditLog(store)
    app[AUTHORITY] = TokenAuthority(
        settings.secret or generate_secret(), default_ttl_s=settings.token_ttl_s
    )
    app[SFU] = Sfu(
        SfuSettings(
            ice_servers=settings.ice_servers,
            max_participants=settings.max_participants,
            bwe_trace_dir=settings.bwe_trace_dir,
            nack=settings.nack,
            recordings_dir=settings.recordings_dir,
            audit=app[AUDIT],
        )
    )
    app[SFU].ended_rooms = SqliteEndedRooms(store)
    app[COUNTERS] = ServiceCounters()
    app[CHAT] = ChatService(
        SqliteChatRepository(store), app[AUDIT], app[SFU], counters=app[COUNTERS]
    )
    app[METRICS] = registry_for(app[SFU], app[COUNTERS])
    app[SOCKETS] = set()
    configure_ice_hosts(settings.ice_hosts)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        yield
        sockets: set[web.WebSocketResponse] = app[SOCKETS]
        for ws in list(sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")
        await app[SFU].close()
        app[AUDIT].store.close()
        await asyncio.sleep(0)

    app.cleanup_ctx.append(lifetime)

    async def chat_burn_sweeper(app: web.Application) -> AsyncIterator[None]:
        # Registered after `lifetime`, so it stops before the store closes.
        task = asyncio.create_task(app[CHAT].run_sweeper())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(chat_burn_sweeper)
    app.router.add_get("/", index)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/api/rooms", list_rooms)
    app.router.add_post("/api/rooms", create_room)
    app.router.add_get("/api/rooms/{room}", get_room)
    app.router.add_delete("/api/rooms/{room}", delete_room)
    app.router.add_get("/api/rooms/{room}/participants", list_participants)
    app.router.add_get("/api/rooms/{room}/recording", get_recording)
    app.router.add_post("/api/rooms/{room}/recording", post_recording)
    app.router.add_get("/api/rooms/{room}/audit", get_audit)
    app.router.add_get("/api/rooms/{room}/participants/{identity}/stats", participant_stats)
    app.router.add_delete("/api/rooms/{room}/participants/{identity}", remove_participant)
    app.router.add_post("/api/rooms/{room}/participants/{identity}/mute", mute_participant)
    app.router.add_put("/api/rooms/{room}/participants/{identity}/role", put_participant_role)
    app.router.add_post("/api/rooms/{room}/end", end_room)
    app.router.add_post("/api/tokens", mint_token)
    app.router.add_get("/api/dev-token", dev_token)
    app.router.add_static("/static", STATIC_DIR, show_index=False)
    # Shared files (tus uploads, downloads); that module imports this one's keys.
    from signaling.files import FILES, add_file_routes

    add_file_routes(app)
    # Chat attachments name files shared in the same room.
    app[CHAT].files = app[FILES].repo
    return app
