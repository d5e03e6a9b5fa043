"""The REST API: rooms, participants, recording, the audit trail, tokens, metrics, health.

Every handler answers errors as ``{"error": {"code", "message"}}`` (``api_error``); callers
authenticate with the API key or, for one room, a token with the admin permission.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from sfu.errors import SfuError
from sfu.room import Session
from signaling.appkeys import (
    AUDIT,
    AUTHORITY,
    METRICS,
    ROOM_ID,
    SETTINGS,
    SFU,
    api_error,
    unix_now_s,
)
from signaling.auth import (
    Grant,
    Permission,
    Role,
    TokenError,
    check_api_key,
    is_valid_role,
    new_identity,
)
from signaling.messages import MAX_MESSAGE_BYTES
from signaling.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from signaling.metrics import render as render_metrics
from signaling.ws import change_role


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
            grant = request.app[AUTHORITY].verify(header[7:], room=room_id, now_s=unix_now_s())
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


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or the error response (413 too large, 400 bad JSON)."""
    too_large = f"request bodies are limited to {MAX_MESSAGE_BYTES} bytes"
    if request.content_length is not None and request.content_length > MAX_MESSAGE_BYTES:
        return api_error(413, "too-large", too_large)
    try:
        body = await request.json() if request.can_read_body else {}
    except web.HTTPRequestEntityTooLarge:  # chunked bodies are only caught while reading
        return api_error(413, "too-large", too_large)
    except ValueError:
        return api_error(400, "bad-json", "the request body is not valid JSON")
    if not isinstance(body, dict):
        return api_error(400, "bad-json", "the request body must be a JSON object")
    return body


async def create_room(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
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


def _admin_room(request: web.Request) -> Any:
    """The room the path names if the caller may administer it, else the error response."""
    if (denied := _authorize(request, request.match_info["room"])) is not None:
        return denied
    return _room_or_404(request)


async def get_room(request: web.Request) -> web.Response:
    room = _admin_room(request)
    return room if isinstance(room, web.Response) else web.json_response(room.describe())


async def delete_room(request: web.Request) -> web.Response:
    if (denied := _authorize(request)) is not None:
        return denied
    if not await request.app[SFU].close_room(request.match_info["room"]):
        return api_error(404, "room-not-found", f"no room {request.match_info['room']!r}")
    return web.Response(status=204)


async def list_participants(request: web.Request) -> web.Response:
    room = _admin_room(request)
    if isinstance(room, web.Response):
        return room
    return web.json_response({"participants": [s.describe() for s in room.sessions.values()]})


def _participant_or_error(request: web.Request) -> tuple[Any, Session] | web.Response:
    """(room, session) named by the path, or the error response (auth, 404s)."""
    room = _admin_room(request)
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
    return await _host_action(request, "remove")


async def mute_participant(request: web.Request) -> web.Response:
    return await _host_action(request, "mute")


async def _host_action(request: web.Request, action: str) -> web.Response:
    """Remove or mute the participant the path names, on behalf of the API caller."""
    found = _participant_or_error(request)
    if isinstance(found, web.Response):
        return found
    room, session = found
    act = room.remove_by_host if action == "remove" else room.mute_by_host
    await act(session, _api_actor(request))
    return web.Response(status=204)


async def put_participant_role(request: web.Request) -> web.Response:
    found = _participant_or_error(request)
    if isinstance(found, web.Response):
        return found
    room, session = found
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    role = body.get("role")
    if not is_valid_role(role):
        return api_error(400, "bad-field", "role must be host, specialist, bedside or observer")
    await change_role(room, session, Role(role), _api_actor(request))
    return web.json_response({"participant": session.describe()})


async def end_room(request: web.Request) -> web.Response:
    """End the consultation: everyone is disconnected and the room id refuses later joins."""
    room = _admin_room(request)
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
                header[7:], room=request.match_info["room"], now_s=unix_now_s()
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
    room = _admin_room(request)
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
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
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
    now = unix_now_s()
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
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
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
