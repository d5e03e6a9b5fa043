"""WebSocket signaling protocol v1: client messages parsed into frozen values, server builders.

Pure: no I/O imports. Every way a client message can be wrong ends in exactly one
:class:`ProtocolError` whose ``code`` is a contract error code, so the WebSocket handler needs
a single ``except ProtocolError`` and never sees a KeyError/TypeError from hostile input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

from sfu.vocabulary import TileView
from signaling.auth import is_valid_role, is_valid_room_id
from signaling.chat import (
    ChatRejected,
    burn_ttl_s,
    check_client_id,
    normalise_attachments,
    normalise_mentions,
    normalise_text,
)

__all__ = [
    "ERROR_CODES",
    "MAX_MEDIA_SECTIONS",
    "MAX_MESSAGE_BYTES",
    "MAX_SDP_BYTES",
    "MAX_SUBSCRIBE_MEDIA_SECTIONS",
    "PROTOCOL_VERSION",
    "ChatReceipt",
    "ChatSend",
    "ChatSync",
    "ClientMessage",
    "EndConsultation",
    "Join",
    "Leave",
    "Mute",
    "MuteParticipant",
    "Ping",
    "ProtocolError",
    "Publish",
    "RemoveParticipant",
    "SetRole",
    "StartRecording",
    "StopRecording",
    "SubscribeAnswer",
    "Viewport",
    "error_message",
    "parse_client_message",
    "server_message",
    "validate_sdp",
]

PROTOCOL_VERSION: Final = 1
MAX_MESSAGE_BYTES: Final = 65536
MAX_SDP_BYTES: Final = 65536
# A publisher offers audio + video (+ maybe screen share); 20 leaves room without letting a
# client make us build hundreds of transceivers.
MAX_MEDIA_SECTIONS: Final = 20
# The subscribe-answer mirrors the *server's* offer, which has one m-section per remote track
# and keeps stopped ones until they are recycled, so it may legitimately exceed 20 in bigger
# rooms. The 64 KiB message cap still bounds it.
MAX_SUBSCRIBE_MEDIA_SECTIONS: Final = 128

# Every error code of the contract; error_message() refuses others so typos surface in tests.
ERROR_CODES: Final = frozenset(
    {
        "bad-json",
        "too-large",
        "unknown-type",
        "bad-field",
        "not-joined",
        "already-joined",
        "unsupported-version",
        "token-missing",
        "token-invalid",
        "token-expired",
        "token-wrong-room",
        "forbidden",
        "room-full",
        "room-ended",
        "bad-sdp",
        "negotiation-failed",
        "internal",
    }
)


class ProtocolError(Exception):
    """A client message was refused. ``code`` is a contract error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_message(self, *, fatal: bool = False) -> dict[str, Any]:
        return error_message(self.code, self.message, fatal=fatal)


class ChatRefused(ProtocolError):
    """A chat-send was refused (bad field, too long, not allowed): counted for operators."""


@dataclass(frozen=True, slots=True)
class Join:
    token: str
    version: int
    # Optional room the page thinks it is joining; when given, the token must be for it
    # (token-wrong-room) instead of silently landing the user in the token's room.
    room: str | None = None
    # joined.resumeToken of a session whose socket dropped: re-attach to it if still possible.
    resume: str | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    sdp: str


@dataclass(frozen=True, slots=True)
class SubscribeAnswer:
    sdp: str


@dataclass(frozen=True, slots=True)
class Mute:
    kind: Literal["audio", "video"]
    muted: bool


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Viewport:
    """The page's remote video tiles: rendered size and visibility (simulcast layer choice)."""

    tiles: tuple[TileView, ...]


@dataclass(frozen=True, slots=True)
class StartRecording:
    pass


@dataclass(frozen=True, slots=True)
class StopRecording:
    pass


@dataclass(frozen=True, slots=True)
class RemoveParticipant:
    """Host control: disconnect a participant and refuse their rejoin until the room closes."""

    participant_id: str


@dataclass(frozen=True, slots=True)
class MuteParticipant:
    """Host control: stop forwarding a participant's audio until they unmute themself."""

    participant_id: str


@dataclass(frozen=True, slots=True)
class EndConsultation:
    pass


@dataclass(frozen=True, slots=True)
class SetRole:
    """Host control: give a participant another role (and that role's permissions)."""

    participant_id: str
    role: str


@dataclass(frozen=True, slots=True)
class ChatSend:
    """A chat message to the room; already trimmed, checked and normalised (signaling.chat)."""

    client_id: str
    text: str
    mentions: tuple[str, ...] = ()
    attachments: tuple[str, ...] = ()  # file ids
    burn_ttl_s: int | None = None  # seconds; None: not burn-after-reading


@dataclass(frozen=True, slots=True)
class ChatSync:
    """Ask for the room's messages with seq > after (answered with chat-history pages)."""

    after: int


@dataclass(frozen=True, slots=True)
class ChatReceipt:
    """Watermarks: every message up to ``delivered`` arrived, up to ``read`` was seen."""

    delivered: int | None = None
    read: int | None = None


ClientMessage: TypeAlias = (
    Join
    | Publish
    | SubscribeAnswer
    | Mute
    | Leave
    | Ping
    | Viewport
    | StartRecording
    | StopRecording
    | RemoveParticipant
    | MuteParticipant
    | EndConsultation
    | ChatSend
    | ChatSync
    | ChatReceipt
    | SetRole
)

MAX_VIEWPORT_TILES = 64
MAX_PARTICIPANT_ID_CHARS = 64  # identities are at most this long (signaling.auth)
MAX_TILE_PIXELS = 16384


# -- parsing --------------------------------------------------------------------------------


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"type":"ping","type":"publish"} must not mean whatever the last key says.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ProtocolError("bad-json", f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    # NaN/Infinity are not JSON; Python's json accepts them unless told otherwise.
    raise ProtocolError("bad-json", f"{name} is not valid JSON")


def _has_lone_surrogate(text: str) -> bool:
    # "\ud800" escapes decode to unpaired surrogates that cannot be re-encoded as UTF-8 later.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _load_object(raw: str | bytes) -> dict[str, Any]:
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
        if len(data) > MAX_MESSAGE_BYTES:
            raise ProtocolError("too-large", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("bad-json", "message is not valid UTF-8") from None
    elif isinstance(raw, str):
        # Each character is at least one byte, so a long string is rejected without encoding it.
        if len(raw) > MAX_MESSAGE_BYTES or _utf8_size(raw) > MAX_MESSAGE_BYTES:
            raise ProtocolError("too-large", f"message exceeds {MAX_MESSAGE_BYTES} bytes")
        text = raw
    else:
        raise ProtocolError("bad-json", "message must be text")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_reject_duplicate_keys,
            parse_constant=_reject_constant,
        )
    except ProtocolError:
        raise
    except (ValueError, RecursionError):
        # RecursionError: "[[[[…" nested deeper than the C scanner allows.
        raise ProtocolError("bad-json", "message is not valid JSON") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad-json", "message must be a JSON object")
    return value


def _require_str(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        what = "missing" if field not in obj else "not a string"
        raise ProtocolError("bad-field", f"field {field!r} is {what}")
    if _has_lone_surrogate(value):
        raise ProtocolError("bad-field", f"field {field!r} is not valid Unicode")
    return value


def _require_bool(obj: dict[str, Any], field: str) -> bool:
    value = obj.get(field)
    if not isinstance(value, bool):
        what = "missing" if field not in obj else "not a boolean"
        raise ProtocolError("bad-field", f"field {field!r} is {what}")
    return value


def _require_int(obj: dict[str, Any], field: str) -> int:
    value = obj.get(field)
    # bool is an int subclass: "version": true is a client bug, not version 1.
    if isinstance(value, bool) or not isinstance(value, int):
        what = "missing" if field not in obj else "not an integer"
        raise ProtocolError("bad-field", f"field {field!r} is {what}")
    return value


def _parse_join(obj: dict[str, Any]) -> Join:
    # Version first: a future client's join may look different, and "upgrade the server/page"
    # is the useful answer for it.
    version = _require_int(obj, "version")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            "unsupported-version",
            f"protocol version {version} is not supported; this server speaks {PROTOCOL_VERSION}",
        )
    token = obj.get("token")
    if token is None or token == "":
        raise ProtocolError("token-missing", "join needs an access token")
    room = obj.get("room")
    if room is not None and not is_valid_room_id(room):
        raise ProtocolError("bad-field", "field 'room' must match [A-Za-z0-9_-]{1,64}")
    resume = obj.get("resume")
    if resume is not None:
        # Any string is accepted: a wrong or stale one just means a full join.
        resume = _require_str(obj, "resume")
    return Join(token=_require_str(obj, "token"), version=version, room=room, resume=resume)


def _parse_mute(obj: dict[str, Any]) -> Mute:
    kind = _require_str(obj, "kind")
    muted = _require_bool(obj, "muted")
    if kind == "audio":
        return Mute(kind="audio", muted=muted)
    if kind == "video":
        return Mute(kind="video", muted=muted)
    raise ProtocolError("bad-field", "field 'kind' must be 'audio' or 'video'")


def _require_participant(obj: dict[str, Any]) -> str:
    participant_id = _require_str(obj, "participantId")
    if not 1 <= len(participant_id) <= MAX_PARTICIPANT_ID_CHARS:
        raise ProtocolError("bad-field", "field 'participantId' has the wrong length")
    return participant_id


def _parse_viewport(obj: dict[str, Any]) -> Viewport:
    tiles = obj.get("tiles")
    if not isinstance(tiles, list):
        raise ProtocolError("bad-field", "field 'tiles' must be a list")
    if len(tiles) > MAX_VIEWPORT_TILES:
        raise ProtocolError("bad-field", f"at most {MAX_VIEWPORT_TILES} tiles may be reported")
    parsed: list[TileView] = []
    for tile in tiles:
        if not isinstance(tile, dict):
            raise ProtocolError("bad-field", "each tile must be an object")
        width = _require_int(tile, "width")
        height = _require_int(tile, "height")
        if not (0 <= width <= MAX_TILE_PIXELS and 0 <= height <= MAX_TILE_PIXELS):
            raise ProtocolError("bad-field", f"tile sizes must be 0..{MAX_TILE_PIXELS} pixels")
        pinned = tile.get("pinned", False)
        if not isinstance(pinned, bool):
            raise ProtocolError("bad-field", "field 'pinned' is not a boolean")
        parsed.append(
            TileView(
                participant_id=_require_str(tile, "participantId"),
                width=width,
                height=height,
                visible=_require_bool(tile, "visible"),
                pinned=pinned,
            )
        )
    return Viewport(tiles=tuple(parsed))


def _optional_str_list(obj: dict[str, Any], field: str) -> list[str]:
    value = obj.get(field)
    if value is None:
        return []
    # The 64 KiB message cap bounds the list; the per-field limits apply after de-duplication.
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError("bad-field", f"field {field!r} must be a list of strings")
    if any(_has_lone_surrogate(v) for v in value):
        raise ProtocolError("bad-field", f"field {field!r} is not valid Unicode")
    return value


def _optional_seq(obj: dict[str, Any], field: str) -> int | None:
    if obj.get(field) is None:
        return None
    value = _require_int(obj, field)
    if value < 0:
        raise ProtocolError("bad-field", f"field {field!r} must not be negative")
    return value


def _parse_burn(obj: dict[str, Any]) -> int | None:
    burn = obj.get("burn")
    if burn is None:
        return None
    if not isinstance(burn, dict):
        raise ProtocolError("bad-field", "field 'burn' must be an object or null")
    if not _require_bool(burn, "afterReading"):
        return None
    ttl = burn.get("ttlSeconds")
    return burn_ttl_s(None if ttl is None else _require_int(burn, "ttlSeconds"))


def _parse_chat_send(obj: dict[str, Any]) -> ChatSend:
    try:
        client_id = check_client_id(_require_str(obj, "clientId"))
        attachments = normalise_attachments(_optional_str_list(obj, "attachments"))
        text = normalise_text(_require_str(obj, "text"), has_attachments=bool(attachments))
        mentions = normalise_mentions(_optional_str_list(obj, "mentions"))
        ttl = _parse_burn(obj)
    except (ChatRejected, ProtocolError) as exc:
        raise ChatRefused(exc.code, exc.message) from None
    return ChatSend(client_id, text, mentions, attachments, ttl)


def _parse_chat_receipt(obj: dict[str, Any]) -> ChatReceipt:
    delivered = _optional_seq(obj, "delivered")
    read = _optional_seq(obj, "read")
    if delivered is None and read is None:
        raise ProtocolError("bad-field", "chat-receipt needs 'delivered' or 'read'")
    return ChatReceipt(delivered=delivered, read=read)


def parse_client_message(raw: str | bytes) -> ClientMessage:
    """Parse one WebSocket message; raises :class:`ProtocolError` and nothing else.

    SDP in publish / subscribe-answer is already checked with :func:`validate_sdp`. Unknown
    extra fields are ignored so that newer clients can add optional fields.
    """
    obj = _load_object(raw)
    type_ = obj.get("type")
    if not isinstance(type_, str):
        what = "missing" if "type" not in obj else "not a string"
        raise ProtocolError("bad-field", f"field 'type' is {what}")
    if type_ == "join":
        return _parse_join(obj)
    if type_ == "publish":
        sdp = _require_str(obj, "sdp")
        validate_sdp(sdp)
        return Publish(sdp=sdp)
    if type_ == "subscribe-answer":
        sdp = _require_str(obj, "sdp")
        validate_sdp(sdp, max_media_sections=MAX_SUBSCRIBE_MEDIA_SECTIONS)
        return SubscribeAnswer(sdp=sdp)
    if type_ == "mute":
        return _parse_mute(obj)
    if type_ == "leave":
        return Leave()
    if type_ == "ping":
        return Ping()
    if type_ == "viewport":
        return _parse_viewport(obj)
    if type_ == "start-recording":
        return StartRecording()
    if type_ == "stop-recording":
        return StopRecording()
    if type_ == "remove-participant":
        return RemoveParticipant(participant_id=_require_participant(obj))
    if type_ == "mute-participant":
        return MuteParticipant(participant_id=_require_participant(obj))
    if type_ == "end-consultation":
        return EndConsultation()
    if type_ == "set-role":
        role = _require_str(obj, "role")
        if not is_valid_role(role):
            raise ProtocolError(
                "bad-field", "field 'role' must be host, specialist, bedside or observer"
            )
        return SetRole(participant_id=_require_participant(obj), role=role)
    if type_ == "chat-send":
        return _parse_chat_send(obj)
    if type_ == "chat-sync":
        after = _optional_seq(obj, "after")
        return ChatSync(after=after or 0)
    if type_ == "chat-receipt":
        return _parse_chat_receipt(obj)
    shown = type_ if len(type_) <= 40 else type_[:40] + "…"
    raise ProtocolError("unknown-type", f"unknown message type {shown!r}")


# -- SDP ------------------------------------------------------------------------------------


def _is_bad_sdp_char(ch: str) -> bool:
    code = ord(ch)
    if ch in "\r\n\t":
        return False
    # C0, DEL and C1 controls (NUL included).
    return code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF


# Real lines stay well under 1 KiB (the longest are m= lines listing payload types and
# a=candidate / a=fingerprint); anything far longer is an attack on a parser.
MAX_SDP_LINE_CHARS = 4096


def validate_sdp(sdp: str, *, max_media_sections: int = MAX_MEDIA_SECTIONS) -> None:
    """Cheap structural checks before an SDP reaches the WebRTC stack; raises ``bad-sdp``.

    This is not an SDP parser: it only keeps obviously hostile or truncated input away from one.
    """
    if not isinstance(sdp, str):
        raise ProtocolError("bad-sdp", "SDP must be a string")
    if _utf8_size(sdp) > MAX_SDP_BYTES:
        raise ProtocolError("bad-sdp", f"SDP is larger than {MAX_SDP_BYTES} bytes")
    if any(_is_bad_sdp_char(ch) for ch in sdp):
        raise ProtocolError("bad-sdp", "SDP contains control characters")
    lines = sdp.split("\n")
    # A final line break (or a few) is normal; blank lines inside are not.
    while lines and lines[-1] in ("", "\r"):
        lines.pop()
    if not lines or lines[0].removesuffix("\r") != "v=0":
        raise ProtocolError("bad-sdp", "SDP must start with 'v=0'")
    media_sections = 0
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if "\r" in line:
            raise ProtocolError("bad-sdp", f"SDP line {number} contains a stray CR")
        if len(line) < 2 or not ("a" <= line[0] <= "z") or line[1] != "=":
            raise ProtocolError("bad-sdp", f"SDP line {number} is not of the form 'x=...'")
        if len(line) > MAX_SDP_LINE_CHARS:
            raise ProtocolError(
                "bad-sdp", f"SDP line {number} is longer than {MAX_SDP_LINE_CHARS} characters"
            )
        if line[0] == "m":
            media_sections += 1
            if media_sections > max_media_sections:
                raise ProtocolError(
                    "bad-sdp", f"SDP has more than {max_media_sections} media sections"
                )


# -- server -> client -----------------------------------------------------------------------


def server_message(type_: str, **fields: Any) -> dict[str, Any]:
    """``{"type": type_, **fields}``; the one place server messages get their ``type``."""
    if "type" in fields:
        raise ValueError("pass the message type as type_, not as a field")
    return {"type": type_, **fields}


def error_message(code: str, message: str, fatal: bool = False) -> dict[str, Any]:
    """The contract's ``error`` message. ``fatal`` means the server closes the socket after it."""
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}")
    return server_message("error", code=code, message=message, fatal=fatal)
