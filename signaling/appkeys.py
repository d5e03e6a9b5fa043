"""The application's typed keys and the helpers every handler module shares.

Its own module so that the WebSocket, REST and file handlers (and ``create_app``, which fills
the keys in) all import from here and never from each other's shells.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry

from sfu.room import Sfu
from signaling.audit import AuditLog
from signaling.auth import TokenAuthority
from signaling.chat_service import ChatService
from signaling.config import Settings
from signaling.counters import ServiceCounters

if TYPE_CHECKING:  # signaling.files imports this module
    from signaling.files import FileService

ROOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

SETTINGS = web.AppKey("settings", Settings)
SFU = web.AppKey("sfu", Sfu)
AUTHORITY = web.AppKey("authority", TokenAuthority)
METRICS = web.AppKey("metrics", CollectorRegistry)
SOCKETS: web.AppKey[set[web.WebSocketResponse]] = web.AppKey("sockets")
AUDIT = web.AppKey("audit", AuditLog)
CHAT = web.AppKey("chat", ChatService)
COUNTERS = web.AppKey("counters", ServiceCounters)
FILES: web.AppKey[FileService] = web.AppKey("files")


def unix_now_s() -> int:
    """Wall-clock seconds, as tokens and signed links count them (sfu.clock is monotonic)."""
    return int(time.time())


def api_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)
