"""Sharing studies: tus uploads, content-addressed blobs, signed downloads (the aiohttp shell).

Decisions are made by pure cores — ``signaling.tus`` (headers, offsets, sizes),
``signaling.file_links`` (signed links), ``signaling.dicom_summary`` (what a study holds) —
and the rows live in ``signaling.storage.files_sqlite``. This module moves bytes:

- a PATCH body is streamed to ``<data-dir>/uploads/<id>.part`` in batches of ``BATCH_BYTES``,
  hashed (SHA-256) as it arrives, both in a worker thread so a multi-GB upload never stalls the
  event loop that also forwards media; memory stays bounded whatever the size;
- the offset is saved after every PATCH, also when the client vanishes mid-body, so the client
  resumes from what arrived (HEAD, then PATCH from the server's offset);
- a finished upload becomes ``<data-dir>/blobs/<sha[:2]>/<sha>``, or is deleted when that blob
  exists already: the bytes are stored once however often a study is shared.

File names may carry patient names: they are stored and shown to the room, never logged or
audited (the audit trail gets file ids and hashes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web

# signaling.app imports this module inside create_app, after its own names exist.
from signaling.app import AUDIT, AUTHORITY, ROOM_ID, SETTINGS, SFU, api_error
from signaling.auth import Permission, TokenError, check_api_key
from signaling.dicom_summary import summarize
from signaling.file_links import LinkError, LinkSigner, derive_key
from signaling.storage.files_sqlite import SharedFile, SqliteFileRepository
from signaling.storage.sqlite import SqliteStore
from signaling.tus import (
    TUS_EXTENSIONS,
    TUS_VERSION,
    TusError,
    UploadState,
    advance,
    check_patch,
    check_resumable,
    clean_filename,
    clean_type,
    encode_metadata,
    http_date,
    new_upload,
    parse_creation,
    parse_sha256,
)

log = logging.getLogger("consilium.files")

# Bytes handed to the writer thread at once: large enough that the thread hop is noise,
# small enough that an upload holds a few MiB at most.
BATCH_BYTES = 1 << 20
# How long a request waits for another one on the same upload (an interrupted PATCH that the
# server is still closing) before answering 423.
LOCK_WAIT_S = 30.0
SWEEP_INTERVAL_S = 600.0
# Types a browser may render inline from our origin; anything else (HTML, SVG, scripts) is
# served as an opaque download so a shared file can never run script on this site.
INLINE_SAFE_PREFIXES = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/", "audio/")
INLINE_SAFE_TYPES = {"application/pdf", "text/plain"}


def _now_ms() -> int:
    # Wall clock on purpose: upload expiry and uploadedAt must survive a restart.
    return int(time.time() * 1000)


def _now_s() -> int:
    return int(time.time())


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    name: str
    can_share: bool
    operator: bool


class _Active:
    """What this process knows about an upload beyond its row: the running hash."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.hasher: Any = None  # hashlib sha256 object covering bytes [0, hashed)
        self.hashed = -1


class FileService:
    def __init__(
        self, data_dir: Path, repo: SqliteFileRepository, signer: LinkSigner, max_size: int
    ) -> None:
        self.uploads_dir = data_dir / "uploads"
        self.blobs_dir = data_dir / "blobs"
        self.repo = repo
        self.signer = signer
        self.max_size = max_size
        self._active: dict[str, _Active] = {}

    def part_path(self, upload_id: str) -> Path:
        return self.uploads_dir / f"{upload_id}.part"

    def blob_path(self, sha256: str) -> Path:
        return self.blobs_dir / sha256[:2] / sha256

    def active(self, upload_id: str) -> _Active:
        return self._active.setdefault(upload_id, _Active())

    def forget(self, upload_id: str) -> None:
        self._active.pop(upload_id, None)

    def discard_upload(self, upload_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.part_path(upload_id).unlink()
        self.repo.delete_upload(upload_id)
        self.forget(upload_id)

    def sweep(self, now_ms: int) -> int:
        """Delete expired unfinished uploads (rows and partial files); returns how many."""
        removed = 0
        for upload in self.repo.expired_uploads(now_ms):
            active = self._active.get(upload.id)
            if active is not None and active.lock.locked():
                continue  # a PATCH is writing to it right now
            self.discard_upload(upload.id)
            removed += 1
        return removed


FILES = web.AppKey("files", FileService)


# --------------------------------------------------------------------------- helpers


def _error(status: int, code: str, message: str, tus: bool = False) -> web.Response:
    response = api_error(status, code, message)
    if tus:
        response.headers["Tus-Resumable"] = TUS_VERSION
        if status == 412:
            response.headers["Tus-Version"] = TUS_VERSION
    return response


def _tus_error(exc: TusError) -> web.Response:
    return _error(exc.status, exc.code, exc.message, tus=True)


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}


def _audit(request: web.Request, event: str, room: str, actor: str, **details: Any) -> None:
    request.app[AUDIT].record(event, room, actor, **details)


def _caller(request: web.Request, room_id: str) -> Caller | web.Response:
    """Who is asking, for this room: a participant token, the operator key, or a refusal."""
    if not ROOM_ID.match(room_id):
        return _error(404, "room-not-found", "no such room")
    settings = request.app[SETTINGS]
    sfu = request.app[SFU]
    header = request.headers.get("Authorization")
    caller: Caller | None = None
    if settings.api_key and check_api_key(header, settings.api_key):
        caller = Caller("api-key", "Operator", can_share=True, operator=True)
    elif header and header.startswith("Bearer "):
        try:
            grant = request.app[AUTHORITY].verify(header[7:], room=room_id, now_s=_now_s())
        except TokenError as exc:
            _audit(request, "token-refused", room_id, "unknown", code=exc.code, path=request.path)
            return _error(401, exc.code, exc.message)
        room = sfu.rooms.get(room_id)
        if room is not None and grant.identity in room.removed_identities:
            return _error(403, "forbidden", "the host removed you from this consultation")
        caller = Caller(grant.identity, grant.name, grant.can(Permission.CHAT), operator=False)
    elif header is None and settings.dev_mode and not settings.api_key:
        # Dev mode leaves the REST API open, as for every other endpoint.
        caller = Caller("api-dev", "Operator", can_share=True, operator=True)
    if caller is None:
        return _error(401, "unauthorized", "send Authorization: Bearer <participant token>")
    if room_id in sfu.ended_rooms:
        return _error(410, "room-ended", f"the consultation in room {room_id} has ended")
    return caller


def _sharer(request: web.Request, room_id: str) -> Caller | web.Response:
    """A caller who may share files (permission chat); refusals are audited."""
    caller = _caller(request, room_id)
    if isinstance(caller, Caller) and not caller.can_share:
        _audit(request, "upload-refused", room_id, caller.identity, reason="no-permission")
        return _error(403, "forbidden", "your role cannot share files in this room")
    return caller


async def _broadcast(app: web.Application, room_id: str, info: dict[str, Any]) -> None:
    room = app[SFU].rooms.get(room_id)
    if room is None:
        return
    message = {"type": "file-shared", "file": info}
    for session in list(room.sessions.values()):
        with contextlib.suppress(Exception):
            await session.link.send(message)


async def _dicom_of(service: FileService, sha256: str, blob: Path) -> dict[str, Any] | None:
    """The summary of these bytes: from an earlier share when there is one, else read."""
    earlier = service.repo.find_by_sha256(sha256)
    if earlier is not None:
        return earlier.dicom
    try:
        summary = await asyncio.to_thread(summarize, blob)
    except Exception as exc:  # a damaged file must not fail the share
        log.info("no DICOM summary for a shared file (%s)", type(exc).__name__)
        return None
    return None if summary is None else summary.as_dict()


async def _share(
    request: web.Request,
    room_id: str,
    uploader_id: str,
    uploader_name: str,
    sha256: str,
    size: int,
    name: str,
    type_: str,
    instant: bool,
    finished_upload: str | None = None,
) -> SharedFile:
    service = request.app[FILES]
    dicom = await _dicom_of(service, sha256, service.blob_path(sha256))
    shared = SharedFile(
        id=secrets.token_urlsafe(12),
        room=room_id,
        sha256=sha256,
        size=size,
        name=name,
        type=type_,
        uploader_id=uploader_id,
        uploader_name=uploader_name,
        uploaded_ms=_now_ms(),
        dicom=dicom,
    )
    service.repo.add(shared, finished_upload=finished_upload)
    _audit(
        request,
        "file-uploaded",
        room_id,
        uploader_id,
        file=shared.id,
        sha256=sha256,
        size=size,
        instant=instant,
        dicom=dicom is not None,
    )
    await _broadcast(request.app, room_id, shared.info())
    return shared


# --------------------------------------------------------------------------- disk work


def _write_and_hash(fp: IO[bytes], hasher: Any, chunks: list[bytes]) -> int:
    # Both release the GIL on large buffers: this thread and the event loop run side by side.
    # The chunks are passed as received: no copy into one big buffer.
    for chunk in chunks:
        hasher.update(chunk)
    fp.writelines(chunks)
    return sum(len(c) for c in chunks)


def _rehash(part: Path, offset: int) -> tuple[Any, int]:
    """Hash the partial file up to the stored offset (after a restart: no hash in memory).

    Bytes past the offset (written, but the offset not saved: a crash) are cut off; a file
    shorter than the offset (lost at a power cut) moves the offset back to what is there.
    """
    if not part.exists():
        part.touch()
    size = part.stat().st_size
    offset = min(offset, size)
    if size > offset:
        os.truncate(part, offset)
    hasher = hashlib.sha256()
    with part.open("rb") as fp:
        left = offset
        while left > 0:
            block = fp.read(min(BATCH_BYTES, left))
            if not block:
                break
            hasher.update(block)
            left -= len(block)
    return hasher, offset


def _store_blob(part: Path, blob: Path) -> bool:
    """Move the finished upload into place; False when the blob was there already."""
    if blob.is_file():
        part.unlink()
        return False
    blob.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, blob)
    return True


# --------------------------------------------------------------------------- tus handlers


def _upload_url(room_id: str, upload_id: str) -> str:
    return f"/api/rooms/{room_id}/uploads/{upload_id}"


async def tus_options(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _caller(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    return web.Response(
        status=204,
        headers=_tus_headers(
            **{
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": TUS_EXTENSIONS,
                "Tus-Max-Size": str(request.app[FILES].max_size),
            }
        ),
    )


async def tus_create(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _sharer(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    service = request.app[FILES]
    try:
        wanted = parse_creation(request.headers, service.max_size)
    except TusError as exc:
        if exc.status == 413:
            _audit(request, "upload-refused", room_id, caller.identity, reason="too-large")
        return _tus_error(exc)
    now = _now_ms()
    service.sweep(now)
    service.uploads_dir.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(service.uploads_dir).free < wanted.length:
        _audit(request, "upload-refused", room_id, caller.identity, reason="disk-full")
        return _error(507, "insufficient-storage", "the server has no room for this file", True)
    upload = new_upload(
        secrets.token_urlsafe(16), room_id, caller.identity, caller.name, wanted, now
    )
    service.part_path(upload.id).touch()
    service.repo.create_upload(upload)
    headers = _tus_headers(
        Location=_upload_url(room_id, upload.id), **{"Upload-Expires": http_date(upload.expires_ms)}
    )
    if upload.length == 0:
        active = service.active(upload.id)
        active.hasher, active.hashed = hashlib.sha256(), 0
        async with active.lock:
            result = await _finish(request, upload, active)
        if isinstance(result, web.Response):
            return result
        headers["Consilium-File-Id"] = result.id
    return web.Response(status=201, headers=headers)


def _owned_upload(request: web.Request, caller: Caller, room_id: str) -> UploadState | web.Response:
    upload = request.app[FILES].repo.get_upload(room_id, request.match_info["upload"])
    if upload is None or (not caller.operator and upload.uploader_id != caller.identity):
        # Someone else's upload does not exist as far as this caller can tell.
        return _error(404, "not-found", "no such upload (finished, expired or never made)", True)
    if upload.expired(_now_ms()):
        return _error(410, "upload-expired", "this upload has expired; start a new one", True)
    return upload


@contextlib.asynccontextmanager
async def _locked(active: _Active) -> AsyncIterator[bool]:
    """Hold the upload's lock; yields False when another request kept it too long."""
    try:
        async with asyncio.timeout(LOCK_WAIT_S):
            await active.lock.acquire()
    except TimeoutError:
        yield False
        return
    try:
        yield True
    finally:
        active.lock.release()


async def _reconcile(service: FileService, upload: UploadState, active: _Active) -> UploadState:
    """Make the in-memory hash cover exactly the stored offset (re-hash from disk if not)."""
    if active.hasher is not None and active.hashed == upload.offset:
        return upload
    hasher, offset = await asyncio.to_thread(_rehash, service.part_path(upload.id), upload.offset)
    active.hasher, active.hashed = hasher, offset
    if offset != upload.offset:
        upload = replace(upload, offset=offset)
        service.repo.save_progress(upload)
    return upload


async def tus_head(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _caller(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    try:
        check_resumable(request.headers.get("Tus-Resumable"))
    except TusError as exc:
        return _tus_error(exc)
    service = request.app[FILES]
    upload = _owned_upload(request, caller, room_id)
    if isinstance(upload, web.Response):
        return upload
    active = service.active(upload.id)
    # Waiting for the lock lets an interrupted PATCH save what it received first.
    async with _locked(active) as got:
        if not got:
            return _error(423, "locked", "another request is writing this upload", True)
        fresh = service.repo.get_upload(room_id, upload.id)
        if fresh is None:
            return _error(404, "not-found", "no such upload (finished, expired or never made)")
        fresh = await _reconcile(service, fresh, active)
    return web.Response(
        status=200,
        headers=_tus_headers(
            **{
                "Upload-Offset": str(fresh.offset),
                "Upload-Length": str(fresh.length),
                "Upload-Metadata": encode_metadata(fresh.metadata()),
                "Upload-Expires": http_date(fresh.expires_ms),
            }
        ),
    )


async def tus_patch(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _sharer(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    service = request.app[FILES]
    upload = _owned_upload(request, caller, room_id)
    if isinstance(upload, web.Response):
        return upload
    active = service.active(upload.id)
    async with _locked(active) as got:
        if not got:
            return _error(423, "locked", "another request is writing this upload", True)
        fresh = service.repo.get_upload(room_id, upload.id)
        if fresh is None:
            return _error(404, "not-found", "no such upload (finished, expired or never made)")
        try:
            fresh = await _reconcile(service, fresh, active)
            remaining = check_patch(fresh, request.headers, request.content_length, _now_ms())
        except TusError as exc:
            return _tus_error(exc)
        fresh, overrun = await _receive(request, service, fresh, active, remaining)
        if overrun:
            return _error(413, "too-large", "more bytes than Upload-Length", True)
        headers = _tus_headers(
            **{"Upload-Offset": str(fresh.offset), "Upload-Expires": http_date(fresh.expires_ms)}
        )
        if fresh.complete:
            result = await _finish(request, fresh, active)
            if isinstance(result, web.Response):
                return result
            headers["Consilium-File-Id"] = result.id
    return web.Response(status=204, headers=headers)


async def _receive(
    request: web.Request,
    service: FileService,
    upload: UploadState,
    active: _Active,
    remaining: int,
) -> tuple[UploadState, bool]:
    """Append the body to the partial file; returns the saved state and whether it overran.

    Whatever arrived is kept and its offset saved, even when the client goes away mid-body.
    """
    received = 0
    overrun = False
    batch: list[bytes] = []
    batched = 0
    pending: Awaitable[int] | None = None
    fp = service.part_path(upload.id).open("r+b")
    fp.seek(upload.offset)

    def flush() -> Awaitable[int]:
        nonlocal batch, batched
        chunks, batch, batched = batch, [], 0
        return asyncio.ensure_future(asyncio.to_thread(_write_and_hash, fp, active.hasher, chunks))

    try:
        try:
            async for chunk in request.content.iter_any():
                if received + batched + len(chunk) > remaining:
                    overrun = True
                    break
                batch.append(chunk)
                batched += len(chunk)
                if batched >= BATCH_BYTES:
                    # One batch is written while the next one arrives.
                    if pending is not None:
                        received += await pending
                    pending = flush()
        except Exception as exc:  # the client went away (reset, short body): keep what came
            log.info("upload %s interrupted (%s)", upload.id, type(exc).__name__)
        if pending is not None:
            received += await pending
            pending = None
        if batch:
            received += await flush()
    finally:
        if pending is not None:
            with contextlib.suppress(Exception):
                received += await asyncio.shield(pending)
        fp.close()
        upload = advance(upload, received, _now_ms())
        active.hashed = upload.offset
        service.repo.save_progress(upload)
    return upload, overrun


async def _finish(
    request: web.Request, upload: UploadState, active: _Active
) -> SharedFile | web.Response:
    """All bytes are in: check the claimed hash, store the blob once, share the file."""
    service = request.app[FILES]
    digest: str = active.hasher.hexdigest()
    part = service.part_path(upload.id)
    if upload.sha256 is not None and digest != upload.sha256:
        service.discard_upload(upload.id)
        _audit(
            request,
            "upload-refused",
            upload.room,
            upload.uploader_id,
            reason="sha256-mismatch",
            size=upload.length,
        )
        return _error(
            460,
            "checksum-mismatch",
            "the received bytes do not match the sha256 you announced; the upload was discarded",
            True,
        )
    await asyncio.to_thread(_store_blob, part, service.blob_path(digest))
    shared = await _share(
        request,
        upload.room,
        upload.uploader_id,
        upload.uploader_name,
        digest,
        upload.length,
        upload.name,
        upload.type,
        instant=False,
        finished_upload=upload.id,
    )
    service.forget(upload.id)
    return shared


async def tus_delete(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _caller(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    try:
        check_resumable(request.headers.get("Tus-Resumable"))
    except TusError as exc:
        return _tus_error(exc)
    service = request.app[FILES]
    upload = _owned_upload(request, caller, room_id)
    if isinstance(upload, web.Response):
        return upload
    async with _locked(service.active(upload.id)) as got:
        if not got:
            return _error(423, "locked", "another request is writing this upload", True)
        service.discard_upload(upload.id)
    return web.Response(status=204, headers=_tus_headers())


# --------------------------------------------------------------------------- files


async def instant_upload(request: web.Request) -> web.Response:
    """Share bytes the server already has (same sha256 and size) without sending them."""
    room_id = request.match_info["room"]
    caller = _sharer(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    service = request.app[FILES]
    try:
        body = await request.json()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "too-large", "the request body is too large")
    except ValueError:
        return _error(400, "bad-json", "the request body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "bad-json", "the request body must be a JSON object")
    sha, size, name = body.get("sha256"), body.get("size"), body.get("name")
    try:
        digest = parse_sha256(sha) if isinstance(sha, str) else None
    except TusError:
        digest = None
    if digest is None:
        return _error(400, "bad-field", "sha256 must be 64 hexadecimal characters")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return _error(400, "bad-field", "size must be a non-negative integer")
    if not isinstance(name, str) or not name.strip():
        return _error(400, "bad-field", "name must be a non-empty string")
    if size > service.max_size:
        _audit(request, "upload-refused", room_id, caller.identity, reason="too-large")
        return _error(413, "too-large", f"uploads are limited to {service.max_size} bytes")
    blob = service.blob_path(digest)
    try:
        present = blob.stat().st_size == size
    except FileNotFoundError:
        present = False
    if not present:
        return _error(404, "not-found", "the server does not have these bytes: upload them")
    type_ = body.get("type")
    shared = await _share(
        request,
        room_id,
        caller.identity,
        caller.name,
        digest,
        size,
        clean_filename(name),
        clean_type(type_ if isinstance(type_, str) else None),
        instant=True,
    )
    return web.json_response({"file": shared.info()}, status=201)


async def list_files(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _caller(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    files = await asyncio.to_thread(request.app[FILES].repo.list_room, room_id)
    return web.json_response({"files": files})


async def mint_link(request: web.Request) -> web.Response:
    room_id = request.match_info["room"]
    caller = _caller(request, room_id)
    if isinstance(caller, web.Response):
        return caller
    service = request.app[FILES]
    file_id = request.match_info["file"]
    if service.repo.get_file(room_id, file_id) is None:
        return _error(404, "not-found", "no such file in this room")
    inline = request.query.get("inline") == "1"
    if request.can_read_body:
        with contextlib.suppress(ValueError, web.HTTPRequestEntityTooLarge):
            body = await request.json()
            inline = inline or (isinstance(body, dict) and body.get("inline") is True)
    url, expires_at = service.signer.mint(
        room_id, file_id, caller.identity, _now_s(), inline=inline
    )
    return web.json_response({"url": url, "expiresAt": expires_at})


def content_disposition(kind: str, name: str) -> str:
    """RFC 6266 with an ASCII fallback and the exact UTF-8 name in filename* (RFC 5987)."""
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch not in '"\\%;' else "_" for ch in name)
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _inline_safe(type_: str) -> bool:
    return type_ in INLINE_SAFE_TYPES or type_.startswith(INLINE_SAFE_PREFIXES)


async def download(request: web.Request) -> web.StreamResponse:
    service = request.app[FILES]
    file_id = request.match_info["file"]
    try:
        link = service.signer.verify(file_id, request.query, _now_s())
    except LinkError as exc:
        return _error(403, exc.code, exc.message)
    sfu = request.app[SFU]
    if link.room in sfu.ended_rooms:
        return _error(410, "room-ended", f"the consultation in room {link.room} has ended")
    room = sfu.rooms.get(link.room)
    if room is not None and link.identity in room.removed_identities:
        return _error(403, "forbidden", "the host removed you from this consultation")
    shared = service.repo.get_file(link.room, file_id)
    blob = None if shared is None else service.blob_path(shared.sha256)
    if shared is None or blob is None or not blob.is_file():
        return _error(404, "not-found", "no such file in this room")
    inline = link.inline and _inline_safe(shared.type)
    headers = {
        "Content-Disposition": content_disposition(
            "inline" if inline else "attachment", shared.name
        ),
        "Content-Type": shared.type if inline else "application/octet-stream",
        "Cache-Control": "private, no-store",
    }
    try:
        start = request.http_range.start
    except ValueError:
        start = None  # a malformed Range: FileResponse answers 416
    if request.method == "GET" and start in (None, 0):
        # Ranged readers (video seeking, resumed downloads) ask many times: one entry per read
        # from the start is enough for the trail.
        event = "file-viewed" if link.inline else "file-downloaded"
        _audit(request, event, link.room, link.identity, file=file_id, sha256=shared.sha256)
    return web.FileResponse(blob, headers=headers)


# --------------------------------------------------------------------------- wiring


def add_file_routes(app: web.Application) -> None:
    """The uploads, files and download routes, and the sweeper of expired uploads."""
    settings = app[SETTINGS]
    audit_store = app[AUDIT].store
    # One database for everything: share the audit's store (its lock serialises writes).
    store = audit_store if isinstance(audit_store, SqliteStore) else None
    if store is None:
        store = SqliteStore.in_dir(settings.data_dir)
    key = derive_key(settings.secret) if settings.secret else secrets.token_bytes(32)
    service = FileService(
        Path(settings.data_dir),
        SqliteFileRepository(store),
        LinkSigner(key),
        settings.max_upload_bytes,
    )
    app[FILES] = service

    async def sweeper() -> None:
        while True:
            try:
                service.sweep(_now_ms())
            except Exception:
                log.exception("could not sweep expired uploads")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sweeper())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if store is not audit_store:
            store.close()

    app.cleanup_ctx.append(lifetime)
    uploads = "/api/rooms/{room}/uploads"
    app.router.add_route("OPTIONS", uploads, tus_options)
    app.router.add_post(uploads, tus_create)
    app.router.add_route("HEAD", uploads + "/{upload}", tus_head)
    app.router.add_patch(uploads + "/{upload}", tus_patch)
    app.router.add_delete(uploads + "/{upload}", tus_delete)
    app.router.add_post("/api/rooms/{room}/files/instant", instant_upload)
    app.router.add_get("/api/rooms/{room}/files", list_files)
    app.router.add_post("/api/rooms/{room}/files/{file}/link", mint_link)
    app.router.add_get("/files/{file}", download)
