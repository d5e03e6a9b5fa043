"""Sharing studies: tus uploads, content-addressed blobs, signed downloads (the aiohttp shell).

Decisions are made by pure cores — ``signaling.tus`` (headers, offsets, sizes),
``signaling.file_links`` (signed links), ``signaling.dicom_summary`` (what a study holds) —
and the rows live in ``signaling.storage.files_sqlite``. This module moves bytes:

- a PATCH body is streamed to ``<data-dir>/uploads/<id>.part`` in batches of ``BATCH_BYTES``,
  hashed (SHA-256) as it arrives, both in a worker thread so a multi-GB upload never stalls the
  event loop that also forwards media; memory stays bounded whatever the size;
- the offset is saved after every PATCH, also when the client vanishes mid-body, so the client
  resumes from what arrived (HEAD, then PATCH from the server's offset);
- a finished upload is fsynced, then becomes ``<data-dir>/blobs/<sha[:2]>/<sha>`` (or is deleted
  when that blob exists already) inside the transaction that records it: the bytes are stored
  once however often a study is shared, and a recorded file never lacks its bytes;
- deleting a file removes its record; the blob goes with the last record of any room that
  references it (moved aside inside that transaction, unlinked after the commit);
- the sweeper removes expired uploads, partial files without an upload row and blobs no
  record references (both only when older than ``ORPHAN_MIN_AGE_S``) and finishes deletes a
  crash interrupted.

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
from functools import partial
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from aiohttp import web

from signaling.appkeys import (
    AUDIT,
    AUTHORITY,
    COUNTERS,
    FILES,
    ROOM_ID,
    SETTINGS,
    SFU,
    api_error,
    unix_now_s,
)
from signaling.auth import Permission, Role, TokenError, check_api_key
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
# A partial file without its upload row, or a blob without a record, is left alone this long:
# it may be one being created right now (the file comes a moment before its row).
ORPHAN_MIN_AGE_S = 15 * 60
# Types a browser may render inline from our origin; anything else (HTML, SVG, scripts) is
# served as an opaque download so a shared file can never run script on this site.
INLINE_SAFE_PREFIXES = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/", "audio/")
INLINE_SAFE_TYPES = {"application/pdf", "text/plain"}


def _now_ms() -> int:
    # Wall clock on purpose: upload expiry and uploadedAt must survive a restart.
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Caller:
    identity: str
    name: str
    can_share: bool
    operator: bool
    admin: bool = False


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
        # Blobs being deleted: moved here inside the delete's transaction, unlinked after it.
        self.trash_dir = data_dir / "trash"
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

    # -- blobs: placed and retired only inside a shared_file transaction ------------------

    def place_upload(self, part: Path, sha256: str) -> None:
        """The finished (already fsynced) upload becomes the blob, or goes when the blob is
        there already. Runs inside the transaction that records the file."""
        blob = self.blob_path(sha256)
        if blob.is_file():
            part.unlink(missing_ok=True)
            return
        fresh_dir = not blob.parent.is_dir()
        blob.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, blob)
        # The rename is durable once the directory is: no recorded file without its bytes.
        _fsync_dir(blob.parent)
        if fresh_dir:
            _fsync_dir(self.blobs_dir)

    def require_blob(self, sha256: str, size: int) -> None:
        """Inside the recording transaction of an instant upload: the bytes are (still) here."""
        try:
            present = self.blob_path(sha256).stat().st_size == size
        except FileNotFoundError:
            present = False
        if not present:
            raise BlobMissing(sha256)

    def _retire(self, sha256: str, moved: list[Path]) -> None:
        """Inside a transaction that found no record of these bytes: move the blob aside."""
        self.trash_dir.mkdir(parents=True, exist_ok=True)
        target = self.trash_dir / f"{sha256}.{secrets.token_hex(6)}"
        try:
            os.replace(self.blob_path(sha256), target)
        except FileNotFoundError:
            return
        moved.append(target)

    def delete_file(self, room: str, file_id: str) -> tuple[SharedFile | None, bool]:
        """Remove a room's record; (the record or None, whether its blob was deleted)."""
        moved: list[Path] = []
        shared, _ = self.repo.delete(room, file_id, lambda sha: self._retire(sha, moved))
        return shared, _unlink_all(moved) > 0

    def sweep_orphans(self, now_s: float, min_age_s: float = ORPHAN_MIN_AGE_S) -> tuple[int, int]:
        """Remove partial files without an upload row and blobs no record references, both
        only when older than ``min_age_s``; settle blobs a crash left in the trash.
        Returns (partial files, blobs) removed. Blocking: run it in a thread."""
        parts = 0
        for part in _files(self.uploads_dir, "*.part"):
            if _age_s(part, now_s) >= min_age_s and not self.repo.has_upload(part.stem):
                # The age covers the moment between a creation's file and its row.
                part.unlink(missing_ok=True)
                parts += 1
        blobs = 0
        for blob in _files(self.blobs_dir, "??/*"):
            sha256 = blob.name
            if _age_s(blob, now_s) < min_age_s or self.repo.referenced(sha256):
                continue
            moved: list[Path] = []
            # Checked again under the write lock: a record may have come meanwhile.
            self.repo.settle_blob(sha256, partial(self._retire_unless, sha256, moved))
            blobs += _unlink_all(moved)
        for trashed in _files(self.trash_dir, "*"):
            self.repo.settle_blob(trashed.name.split(".")[0], partial(self._untrash, trashed))
        return parts, blobs

    def _retire_unless(self, sha256: str, moved: list[Path], referenced: bool) -> None:
        if not referenced:
            self._retire(sha256, moved)

    def _untrash(self, trashed: Path, referenced: bool) -> None:
        # A delete that crashed before its commit leaves the record and the blob in the trash.
        blob = self.blob_path(trashed.name.split(".")[0])
        if referenced and not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            os.replace(trashed, blob)
            _fsync_dir(blob.parent)
        else:
            trashed.unlink(missing_ok=True)


class BlobMissing(Exception):
    """The bytes an instant upload named went away (deleted) before it was recorded."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as fp:
        os.fsync(fp.fileno())


def _files(root: Path, pattern: str) -> list[Path]:
    return [p for p in root.glob(pattern) if p.is_file()] if root.is_dir() else []


def _age_s(path: Path, now_s: float) -> float:
    try:
        return now_s - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # gone meanwhile: nothing to do


def _unlink_all(paths: list[Path]) -> int:
    removed = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed += 1
    return removed


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


def _caller(
    request: web.Request, room_id: str, operator_after_end: bool = False
) -> Caller | web.Response:
    """Who is asking, for this room: a participant token, the operator key, or a refusal.

    A role the host changed in the live room counts, as on the WebSocket. An ended
    consultation refuses everyone, except the operator when ``operator_after_end`` (cleaning
    up what was shared in it)."""
    if not ROOM_ID.match(room_id):
        return _error(404, "room-not-found", "no such room")
    settings = request.app[SETTINGS]
    sfu = request.app[SFU]
    header = request.headers.get("Authorization")
    caller: Caller | None = None
    if settings.api_key and check_api_key(header, settings.api_key):
        caller = Caller("api-key", "Operator", can_share=True, operator=True, admin=True)
    elif header and header.startswith("Bearer "):
        try:
            grant = request.app[AUTHORITY].verify(header[7:], room=room_id, now_s=unix_now_s())
        except TokenError as exc:
            _audit(request, "token-refused", room_id, "unknown", code=exc.code, path=request.path)
            return _error(401, exc.code, exc.message)
        room = sfu.rooms.get(room_id)
        if room is not None and grant.identity in room.removed_identities:
            return _error(403, "forbidden", "the host removed you from this consultation")
        override = None if room is None else room.role_overrides.get(grant.identity)
        if override is not None:
            grant = grant.with_role(Role(override))
        caller = Caller(
            grant.identity,
            grant.name,
            grant.can(Permission.CHAT),
            operator=False,
            admin=grant.can(Permission.ADMIN),
        )
    elif header is None and settings.dev_mode and not settings.api_key:
        # Dev mode leaves the REST API open, as for every other endpoint.
        caller = Caller("api-dev", "Operator", can_share=True, operator=True, admin=True)
    if caller is None:
        return _error(401, "unauthorized", "send Authorization: Bearer <participant token>")
    if room_id in sfu.ended_rooms and not (operator_after_end and caller.operator):
        return _error(410, "room-ended", f"the consultation in room {room_id} has ended")
    return caller


def _sharer(request: web.Request, room_id: str) -> Caller | web.Response:
    """A caller who may share files (permission chat); refusals are audited."""
    caller = _caller(request, room_id)
    if isinstance(caller, Caller) and not caller.can_share:
        _audit(request, "upload-refused", room_id, caller.identity, reason="no-permission")
        return _error(403, "forbidden", "your role cannot share files in this room")
    return caller


async def _broadcast(app: web.Application, room_id: str, message: dict[str, Any]) -> None:
    room = app[SFU].rooms.get(room_id)
    if room is None:
        return
    for session in list(room.sessions.values()):
        with contextlib.suppress(Exception):
            await session.link.send(message)


async def _dicom_of(service: FileService, sha256: str, data: Path) -> dict[str, Any] | None:
    """The summary of these bytes: from an earlier share when there is one, else read."""
    earlier = service.repo.find_by_sha256(sha256)
    if earlier is not None:
        return earlier.dicom
    try:
        summary = await asyncio.to_thread(summarize, data)
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
    """Record and announce a file. Raises BlobMissing when an instant upload's bytes went
    away (deleted) in the meantime: nothing is recorded then."""
    service = request.app[FILES]
    part = None if finished_upload is None else service.part_path(finished_upload)
    dicom = await _dicom_of(service, sha256, part or service.blob_path(sha256))
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
    if part is not None:
        place = partial(service.place_upload, part, sha256)
    else:
        place = partial(service.require_blob, sha256, size)
    await asyncio.to_thread(service.repo.add, shared, finished_upload, place)
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
    request.app[COUNTERS].upload_completed(instant=instant)
    await _broadcast(request.app, room_id, {"type": "file-shared", "file": shared.info()})
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


@dataclass(frozen=True, slots=True)
class _Held:
    service: FileService
    upload: UploadState  # as stored, read once the lock was ours
    active: _Active


@contextlib.asynccontextmanager
async def _held_upload(
    request: web.Request, sharing: bool = False
) -> AsyncIterator[_Held | web.Response]:
    """The preamble of HEAD, PATCH and DELETE on an upload: who asks (one who may share, for
    PATCH), Tus-Resumable (PATCH checks it with its other headers), the caller's own upload,
    then its lock, held while the block runs. Yields the refusal instead when a step fails."""
    room_id = request.match_info["room"]
    caller = _sharer(request, room_id) if sharing else _caller(request, room_id)
    if isinstance(caller, web.Response):
        yield caller
        return
    if not sharing:
        try:
            check_resumable(request.headers.get("Tus-Resumable"))
        except TusError as exc:
            yield _tus_error(exc)
            return
    service = request.app[FILES]
    upload = _owned_upload(request, caller, room_id)
    if isinstance(upload, web.Response):
        yield upload
        return
    active = service.active(upload.id)
    # Waiting for the lock lets an interrupted PATCH save what it received first.
    async with _locked(active) as got:
        if not got:
            yield _error(423, "locked", "another request is writing this upload", True)
            return
        fresh = service.repo.get_upload(room_id, upload.id)
        if fresh is None:
            yield _error(404, "not-found", "no such upload (finished, expired or never made)")
            return
        yield _Held(service, fresh, active)


async def tus_head(request: web.Request) -> web.Response:
    async with _held_upload(request) as held:
        if isinstance(held, web.Response):
            return held
        fresh = await _reconcile(held.service, held.upload, held.active)
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
    async with _held_upload(request, sharing=True) as held:
        if isinstance(held, web.Response):
            return held
        service, active = held.service, held.active
        try:
            fresh = await _reconcile(service, held.upload, active)
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
        request.app[COUNTERS].tus_received(received)
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
    # On disk before it is recorded and announced: a power cut cannot leave a shared file
    # whose bytes were still in the page cache (place_upload then syncs the directory).
    started = time.perf_counter()
    await asyncio.to_thread(_fsync_file, part)
    log.info(
        "upload %s synced to disk in %.0f ms", upload.id, (time.perf_counter() - started) * 1000
    )
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
    async with _held_upload(request) as held:
        if isinstance(held, web.Response):
            return held
        held.service.discard_upload(held.upload.id)
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
    missing = _error(404, "not-found", "the server does not have these bytes: upload them")
    # Same answer as for unknown bytes: whether another room holds them is not for this caller.
    if not service.repo.may_claim(room_id, caller.identity, digest):
        return missing
    try:
        service.require_blob(digest, size)
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
    except BlobMissing:
        return missing  # or deleted between the check and the record
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
        room_id, file_id, caller.identity, unix_now_s(), inline=inline
    )
    return web.json_response({"url": url, "expiresAt": expires_at})


async def delete_file(request: web.Request) -> web.Response:
    """Unshare a file: its uploader, a host of the room or the operator (also once the
    consultation has ended). The blob goes with the last record of any room."""
    room_id = request.match_info["room"]
    caller = _caller(request, room_id, operator_after_end=True)
    if isinstance(caller, web.Response):
        return caller
    service = request.app[FILES]
    file_id = request.match_info["file"]
    shared = service.repo.get_file(room_id, file_id)
    if shared is None:
        return _error(404, "not-found", "no such file in this room")
    if not (caller.operator or caller.admin or caller.identity == shared.uploader_id):
        _audit(request, "file-delete-refused", room_id, caller.identity, file=file_id)
        return _error(403, "forbidden", "only whoever shared the file or a host may delete it")
    removed, blob_removed = await asyncio.to_thread(service.delete_file, room_id, file_id)
    if removed is None:
        return _error(404, "not-found", "no such file in this room")  # deleted meanwhile
    _audit(
        request,
        "file-deleted",
        room_id,
        caller.identity,
        file=file_id,
        sha256=removed.sha256,
        blobRemoved=blob_removed,
    )
    request.app[COUNTERS].file_deleted()
    await _broadcast(request.app, room_id, {"type": "file-removed", "fileId": file_id})
    return web.Response(status=204)


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
        link = service.signer.verify(file_id, request.query, unix_now_s())
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
        # A shared file opened in a tab must never run script on our origin (an SVG or HTML
        # sent as image/png, a PDF with JavaScript): no subresources, a unique opaque origin.
        "Content-Security-Policy": "default-src 'none'; sandbox",
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
        request.app[COUNTERS].download(inline=link.inline)
    return web.FileResponse(blob, headers=headers)


# --------------------------------------------------------------------------- wiring


def add_file_routes(app: web.Application) -> None:
    """The uploads, files and download routes, and the sweeper of expired uploads and
    orphaned files."""
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
        # The first round runs at start-up: what a crash left behind goes at once.
        while True:
            try:
                service.sweep(_now_ms())
                parts, blobs = await asyncio.to_thread(service.sweep_orphans, time.time())
                if parts or blobs:
                    log.info("swept %d orphaned partial files and %d orphaned blobs", parts, blobs)
            except Exception:
                log.exception("could not sweep expired uploads and orphaned files")
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
    app.router.add_delete("/api/rooms/{room}/files/{file}", delete_file)
    app.router.add_post("/api/rooms/{room}/files/{file}/link", mint_link)
    app.router.add_get("/files/{file}", download)
