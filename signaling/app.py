"""The aiohttp application: its state, lifetimes and routes.

The handlers live in ``signaling.ws`` (the signaling WebSocket), ``signaling.rest`` (the REST
API) and ``signaling.files`` (shared files); their shared keys in ``signaling.appkeys``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from sfu.adapters.aiortc_adapter import configure_ice_hosts
from sfu.room import Sfu, SfuSettings
from signaling import rest
from signaling.appkeys import (
    AUDIT,
    AUTHORITY,
    CHAT,
    COUNTERS,
    FILES,
    METRICS,
    SETTINGS,
    SFU,
    SOCKETS,
)
from signaling.audit import AuditLog
from signaling.auth import TokenAuthority, generate_secret
from signaling.chat_service import ChatService
from signaling.config import Settings
from signaling.counters import ServiceCounters
from signaling.files import add_file_routes
from signaling.messages import MAX_MESSAGE_BYTES
from signaling.metrics import registry_for
from signaling.storage.chat_sqlite import SqliteChatRepository
from signaling.storage.rooms_sqlite import SqliteEndedRooms
from signaling.storage.sqlite import SqliteStore
from signaling.ws import websocket_handler

STATIC_DIR = Path(__file__).parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


# The web client shows patient data: only our own scripts (plus compiling hash-wasm's
# WebAssembly), styles and connections; media from the camera. 'self' covers ws(s) to the same
# host in CSP3 browsers.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
PERMISSIONS_POLICY = "camera=(self), microphone=(self), display-capture=(self), geolocation=()"


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response just before it is sent, errors and the WebSocket handshake included;
    a handler's own stricter values (shared-file downloads) win."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")  # tokens live in page URLs
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    app.on_response_prepare.append(security_headers)
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
    app.router.add_get("/healthz", rest.healthz)
    app.router.add_get("/metrics", rest.metrics)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/api/rooms", rest.list_rooms)
    app.router.add_post("/api/rooms", rest.create_room)
    app.router.add_get("/api/rooms/{room}", rest.get_room)
    app.router.add_delete("/api/rooms/{room}", rest.delete_room)
    app.router.add_get("/api/rooms/{room}/participants", rest.list_participants)
    app.router.add_get("/api/rooms/{room}/recording", rest.get_recording)
    app.router.add_post("/api/rooms/{room}/recording", rest.post_recording)
    app.router.add_get("/api/rooms/{room}/audit", rest.get_audit)
    app.router.add_get("/api/rooms/{room}/participants/{identity}/stats", rest.participant_stats)
    app.router.add_delete("/api/rooms/{room}/participants/{identity}", rest.remove_participant)
    app.router.add_post("/api/rooms/{room}/participants/{identity}/mute", rest.mute_participant)
    app.router.add_put("/api/rooms/{room}/participants/{identity}/role", rest.put_participant_role)
    app.router.add_post("/api/rooms/{room}/end", rest.end_room)
    app.router.add_post("/api/tokens", rest.mint_token)
    app.router.add_get("/api/dev-token", rest.dev_token)
    app.router.add_static("/static", STATIC_DIR, show_index=False)
    add_file_routes(app)  # shared files: tus uploads, downloads
    # Chat attachments name files shared in the same room.
    app[CHAT].files = app[FILES].repo
    return app
