"""tus 1.0.0 resumable uploads: header parsing and upload state, as values (pure core).

The aiohttp shell (signaling.files) turns a ``TusError`` into an HTTP response and keeps the
bytes; everything that decides *whether* a request may go on lives here, so it is tested
without a server. Protocol: https://tus.io/protocols/resumable-upload (core, creation,
termination and expiration extensions).

Times are unix milliseconds passed in by the caller: an upload outlives a restart, so its
expiry is wall-clock time, not the process's monotonic clock.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,termination,expiration"
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# An unfinished upload is kept this long after its last byte arrived.
UPLOAD_TTL_MS = 24 * 3600 * 1000
MAX_METADATA_CHARS = 4096
MAX_NAME_CHARS = 255
DEFAULT_TYPE = "application/octet-stream"

_DECIMAL = re.compile(r"[0-9]{1,19}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")
_KEY = re.compile(r"[^\s,]{1,64}")


class TusError(Exception):
    """A refused tus request: HTTP ``status``, API error ``code`` and a human ``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def check_resumable(value: str | None) -> None:
    """Every request but OPTIONS names the protocol version it speaks."""
    if value is None:
        raise TusError(412, "tus-version", f"send Tus-Resumable: {TUS_VERSION}")
    if value.strip() != TUS_VERSION:
        raise TusError(412, "tus-version", f"this server speaks tus {TUS_VERSION} only")


def _non_negative(value: str | None, header: str) -> int:
    if value is None:
        raise TusError(400, "bad-header", f"{header} is required")
    text = value.strip()
    if not _DECIMAL.fullmatch(text):
        raise TusError(400, "bad-header", f"{header} must be a non-negative integer")
    return int(text)


def parse_length(value: str | None, max_size: int) -> int:
    length = _non_negative(value, "Upload-Length")
    if length > max_size:
        raise TusError(413, "too-large", f"uploads are limited to {max_size} bytes")
    return length


def parse_offset(value: str | None) -> int:
    return _non_negative(value, "Upload-Offset")


def parse_metadata(value: str | None) -> dict[str, str]:
    """``key base64,key base64,key`` → {key: decoded UTF-8 text}; a key alone maps to ""."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA_CHARS:
        raise TusError(400, "bad-header", "Upload-Metadata is too long")
    pairs: dict[str, str] = {}
    for item in value.split(","):
        parts = item.strip().split(" ")
        if not 1 <= len(parts) <= 2 or not _KEY.fullmatch(parts[0]):
            raise TusError(400, "bad-header", "Upload-Metadata must be 'key base64' pairs")
        key = parts[0]
        if key in pairs:
            raise TusError(400, "bad-header", f"Upload-Metadata repeats the key {key!r}")
        text = ""
        if len(parts) == 2:
            try:
                text = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise TusError(
                    400, "bad-header", f"Upload-Metadata value of {key!r} is not base64 UTF-8"
                ) from None
        pairs[key] = text
    return pairs


def encode_metadata(pairs: Mapping[str, str]) -> str:
    return ",".join(
        f"{k} {base64.b64encode(v.encode('utf-8')).decode('ascii')}" for k, v in pairs.items()
    )


def clean_filename(name: str) -> str:
    """What we store and show: the last path segment, no control characters, bounded length."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in last if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    cleaned = cleaned.strip().strip(".") or "file"
    return cleaned[:MAX_NAME_CHARS]


def clean_type(value: str | None) -> str:
    """A plain ``type/subtype`` (parameters dropped); anything odd becomes octet-stream."""
    if not value:
        return DEFAULT_TYPE
    base = value.split(";", 1)[0].strip().lower()
    return base if _MIME.fullmatch(base) else DEFAULT_TYPE


def parse_sha256(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    digest = value.strip().lower()
    if not _SHA256.fullmatch(digest):
        raise TusError(400, "bad-field", "sha256 must be 64 hexadecimal characters")
    return digest


@dataclass(frozen=True, slots=True)
class UploadRequest:
    """A validated creation request (POST)."""

    length: int
    name: str
    type: str
    sha256: str | None


def parse_creation(headers: Mapping[str, str], max_size: int) -> UploadRequest:
    check_resumable(headers.get("Tus-Resumable"))
    if headers.get("Upload-Defer-Length") is not None:
        raise TusError(400, "bad-header", "Upload-Defer-Length is not supported")
    length = parse_length(headers.get("Upload-Length"), max_size)
    meta = parse_metadata(headers.get("Upload-Metadata"))
    return UploadRequest(
        length=length,
        name=clean_filename(meta.get("filename") or meta.get("name") or "file"),
        type=clean_type(meta.get("filetype") or meta.get("type")),
        sha256=parse_sha256(meta.get("sha256")),
    )


@dataclass(frozen=True, slots=True)
class UploadState:
    """One tus upload as stored: who sends what, and how far it got."""

    id: str
    room: str
    uploader_id: str
    uploader_name: str
    length: int
    offset: int
    name: str
    type: str
    sha256: str | None
    created_ms: int
    expires_ms: int

    @property
    def complete(self) -> bool:
        return self.offset >= self.length

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.expires_ms

    def metadata(self) -> dict[str, str]:
        meta = {"filename": self.name, "filetype": self.type}
        if self.sha256 is not None:
            meta["sha256"] = self.sha256
        return meta


def new_upload(
    upload_id: str,
    room: str,
    uploader_id: str,
    uploader_name: str,
    request: UploadRequest,
    now_ms: int,
) -> UploadState:
    return UploadState(
        id=upload_id,
        room=room,
        uploader_id=uploader_id,
        uploader_name=uploader_name,
        length=request.length,
        offset=0,
        name=request.name,
        type=request.type,
        sha256=request.sha256,
        created_ms=now_ms,
        expires_ms=now_ms + UPLOAD_TTL_MS,
    )


def check_patch(
    state: UploadState,
    headers: Mapping[str, str],
    content_length: int | None,
    now_ms: int,
) -> int:
    """May this PATCH append? Returns the most bytes it may carry; TusError otherwise."""
    check_resumable(headers.get("Tus-Resumable"))
    content_type = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if content_type != OFFSET_CONTENT_TYPE:
        raise TusError(415, "bad-header", f"Content-Type must be {OFFSET_CONTENT_TYPE}")
    offset = parse_offset(headers.get("Upload-Offset"))
    if state.expired(now_ms):
        raise TusError(410, "upload-expired", "this upload has expired; start a new one")
    if offset != state.offset:
        # The client's idea of the offset is stale: it asks with HEAD and resumes from ours.
        raise TusError(409, "offset-mismatch", f"the upload is at offset {state.offset}")
    remaining = state.length - state.offset
    if content_length is not None and content_length > remaining:
        raise TusError(413, "too-large", f"only {remaining} more bytes fit this upload")
    return remaining


def advance(state: UploadState, received: int, now_ms: int) -> UploadState:
    """Bytes were appended: a new offset, and the expiry pushed back."""
    offset = state.offset + received
    if received < 0 or offset > state.length:
        raise TusError(413, "too-large", "more bytes than Upload-Length")
    return replace(state, offset=offset, expires_ms=now_ms + UPLOAD_TTL_MS)


def http_date(unix_ms: int) -> str:
    """RFC 7231 date for Upload-Expires."""
    return formatdate(unix_ms / 1000, usegmt=True)
