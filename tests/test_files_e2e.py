"""Sharing studies end to end: tus uploads (a standard client and raw requests), resume after
an interrupted PATCH and after a restart, content addressing, instant uploads, signed Range
downloads and every refusal. Real server on loopback (run inside tools/in_netns.sh).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from dicom_samples import PATIENT_ID, PATIENT_NAME, zip_study
from tusclient.client import TusClient

from signaling.app import create_app
from signaling.appkeys import AUDIT, FILES, SFU
from signaling.auth import TokenAuthority
from signaling.config import Settings
from signaling.files import ORPHAN_MIN_AGE_S, BlobMissing
from signaling.messages import PROTOCOL_VERSION
from signaling.storage.files_sqlite import SharedFile
from signaling.tus import UPLOAD_TTL_MS

T = 20.0
SECRET = "files-test-secret-0123456789abcdef0123"
API_KEY = "files-test-api-key-0123456789"
MAX = 4 * 1024 * 1024
ROOM = "ward"


def settings_for(tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        ice_hosts=["127.0.0.1"],
        secret=SECRET,
        api_key=API_KEY,
        recordings_dir=str(tmp_path / "rec"),
        data_dir=str(tmp_path / "data"),
        max_upload_bytes=MAX,
    )


class Served:
    def __init__(self, server: TestServer, app: web.Application, data: Path) -> None:
        self.server = server
        self.app = app
        self.url = str(server.make_url("")).rstrip("/")
        self.data = data

    def audit(self, event: str | None = None) -> list[dict[str, Any]]:
        entries = self.app[AUDIT].entries(ROOM)
        return [e for e in entries if event is None or e["event"] == event]


async def start(tmp_path: Path) -> Served:
    settings = settings_for(tmp_path)
    app = create_app(settings)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return Served(server, app, Path(settings.data_dir))


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    s = await start(tmp_path)
    try:
        yield s
    finally:
        await s.server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=T)) as session:
        yield session


def token(identity: str, role: str = "specialist", room: str = ROOM) -> str:
    return TokenAuthority(SECRET).mint(
        room=room, identity=identity, name=identity.title(), role=role, ttl_s=600,
        now_s=int(time.time()),
    )  # fmt: skip


def auth(identity: str = "alice", role: str = "specialist", room: str = ROOM) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(identity, role, room)}"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


TUS = {"Tus-Resumable": "1.0.0"}


async def create(
    http: aiohttp.ClientSession,
    s: Served,
    length: int,
    name: str = "scan.bin",
    sha256: str | None = None,
    headers: dict[str, str] | None = None,
    type_: str = "application/octet-stream",
) -> aiohttp.ClientResponse:
    meta = f"filename {b64(name)},filetype {b64(type_)}"
    if sha256:
        meta += f",sha256 {b64(sha256)}"
    async with http.post(
        f"{s.url}/api/rooms/{ROOM}/uploads",
        headers={
            **TUS,
            **(headers or auth()),
            "Upload-Length": str(length),
            "Upload-Metadata": meta,
        },
    ) as resp:
        await resp.read()
        return resp


async def patch(
    http: aiohttp.ClientSession, s: Served, location: str, offset: int, body: bytes
) -> aiohttp.ClientResponse:
    async with http.patch(
        s.url + location,
        data=body,
        headers={
            **TUS,
            **auth(),
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
    ) as resp:
        await resp.read()
        return resp


async def head_offset(http: aiohttp.ClientSession, s: Served, location: str) -> int:
    async with http.head(s.url + location, headers={**TUS, **auth()}) as resp:
        assert resp.status == 200, resp.status
        assert resp.headers["Cache-Control"] == "no-store"
        return int(resp.headers["Upload-Offset"])


async def upload(http: aiohttp.ClientSession, s: Served, data: bytes, **kw: Any) -> str:
    created = await create(http, s, len(data), **kw)
    assert created.status == 201
    resp = await patch(http, s, created.headers["Location"], 0, data)
    assert resp.status == 204, resp.status
    return resp.headers["Consilium-File-Id"]


async def files(http: aiohttp.ClientSession, s: Served) -> list[dict[str, Any]]:
    async with http.get(f"{s.url}/api/rooms/{ROOM}/files", headers=auth("bob")) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return list(body["files"])


def blobs(s: Served) -> list[Path]:
    root = s.data / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def parts(s: Served) -> list[Path]:
    root = s.data / "uploads"
    return sorted(root.glob("*.part")) if root.exists() else []


async def join(http: aiohttp.ClientSession, s: Served, identity: str) -> Any:
    ws = await http.ws_connect(s.url.replace("http", "ws", 1) + "/ws")
    await ws.send_str(
        json.dumps(
            {"type": "join", "token": token(identity), "version": PROTOCOL_VERSION, "room": ROOM}
        )
    )
    while True:
        msg = json.loads((await ws.receive(timeout=T)).data)
        if msg["type"] == "joined":
            return ws


async def next_of(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        msg = json.loads((await ws.receive(timeout=T)).data)
        if msg["type"] == kind:
            return msg


# --------------------------------------------------------------------------- tests


async def test_options_announces_tus(served: Served, http: aiohttp.ClientSession) -> None:
    async with http.options(f"{served.url}/api/rooms/{ROOM}/uploads", headers=auth()) as resp:
        assert resp.status == 204
        assert resp.headers["Tus-Version"] == "1.0.0"
        assert resp.headers["Tus-Extension"] == "creation,termination,expiration"
        assert resp.headers["Tus-Max-Size"] == str(MAX)


async def test_tuspy_uploads_a_dicom_study(
    served: Served, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    study = zip_study(tmp_path / "study", tmp_path / "Müller CT.zip")
    data = study.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    bob = await join(http, served, "bob")

    def send() -> str:
        client = TusClient(f"{served.url}/api/rooms/{ROOM}/uploads", headers=auth())
        uploader = client.uploader(
            file_path=str(study),
            chunk_size=1024,  # several PATCH requests
            metadata={"filename": study.name, "filetype": "application/zip", "sha256": sha},
        )
        uploader.upload()
        assert uploader.request is not None
        return str(uploader.request.response_headers["consilium-file-id"])

    file_id = await asyncio.to_thread(send)
    shared = (await next_of(bob, "file-shared"))["file"]
    await bob.close()
    assert shared["id"] == file_id
    assert (shared["name"], shared["size"], shared["sha256"]) == (study.name, len(data), sha)
    assert shared["type"] == "application/zip"
    assert shared["uploadedBy"] == {"id": "alice", "name": "Alice"}
    assert shared["dicom"] == {
        "modality": "CT",
        "studyDate": "2024-01-31",
        "studyDescription": "CT THORAX",
        "seriesCount": 2,
        "instanceCount": 5,
    }
    assert await files(http, served) == [shared]
    assert served.app[FILES].repo.get(ROOM, file_id) == shared
    assert served.app[FILES].repo.get("elsewhere", file_id) is None
    assert blobs(served) == [served.data / "blobs" / sha[:2] / sha]
    assert parts(served) == []
    (entry,) = served.audit("file-uploaded")
    assert (entry["actor"], entry["file"], entry["sha256"]) == ("alice", file_id, sha)
    assert (entry["size"], entry["instant"]) == (len(data), False)
    trail = json.dumps(served.audit()) + caplog.text
    for secret in (PATIENT_NAME, PATIENT_ID, "Müller", "Doe"):
        assert secret not in trail


async def test_interrupted_patch_resumes_from_the_server_offset(
    served: Served, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    created = await create(http, served, len(data), sha256=hashlib.sha256(data).hexdigest())
    location = created.headers["Location"]
    # A raw request that promises the whole body, sends 1.6 MiB and drops the connection.
    sent = 1_600_000
    host, port = urlsplit(served.url).hostname, urlsplit(served.url).port
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {auth()['Authorization']}\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    writer.write(head.encode() + data[:sent])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    # HEAD waits for a PATCH still being closed; under load the server may not even have
    # started that PATCH yet when HEAD arrives, so ask again until the bytes show up.
    for _ in range(100):
        offset = await head_offset(http, served, location)
        if offset > 0:
            break
        await asyncio.sleep(0.1)
    assert 0 < offset <= sent
    resp = await patch(http, served, location, offset, data[offset:])
    assert resp.status == 204 and int(resp.headers["Upload-Offset"]) == len(data)
    (shared,) = await files(http, served)
    assert shared["sha256"] == hashlib.sha256(data).hexdigest()
    assert blobs(served)[0].read_bytes() == data


async def test_stale_offset_is_a_conflict(served: Served, http: aiohttp.ClientSession) -> None:
    created = await create(http, served, 100)
    location = created.headers["Location"]
    assert (await patch(http, served, location, 0, b"a" * 40)).status == 204
    resp = await patch(http, served, location, 0, b"a" * 40)
    assert resp.status == 409
    assert await head_offset(http, served, location) == 40
    assert (await patch(http, served, location, 40, b"b" * 61)).status == 413


async def test_duplicates_are_stored_once(served: Served, http: aiohttp.ClientSession) -> None:
    data = os.urandom(200_000)
    sha = hashlib.sha256(data).hexdigest()
    first = await upload(http, served, data)
    instant_url = f"{served.url}/api/rooms/{ROOM}/files/instant"
    body = {"sha256": sha, "size": len(data), "name": "again.bin", "type": "image/png"}
    async with http.post(instant_url, json=body, headers=auth("carol", "bedside")) as resp:
        assert resp.status == 201
        instant = (await resp.json())["file"]
    assert instant["sha256"] == sha and instant["id"] != first
    assert instant["uploadedBy"]["id"] == "carol" and instant["type"] == "image/png"
    for wrong in ({**body, "size": len(data) + 1}, {**body, "sha256": "0" * 64}):
        async with http.post(instant_url, json=wrong, headers=auth()) as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not-found"
    async with http.post(instant_url, json={**body, "sha256": "xyz"}, headers=auth()) as resp:
        assert resp.status == 400
    # A plain tus upload of the same bytes completes and leaves no second copy.
    third = await upload(http, served, data, name="third.bin")
    assert [f["id"] for f in await files(http, served)] == [first, instant["id"], third]
    assert len(blobs(served)) == 1 and parts(served) == []
    assert [e["instant"] for e in served.audit("file-uploaded")] == [False, True, False]


async def test_sha256_mismatch_is_refused_and_discarded(
    served: Served, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(50_000)
    created = await create(http, served, len(data), sha256=hashlib.sha256(b"other").hexdigest())
    resp = await patch(http, served, created.headers["Location"], 0, data)
    assert resp.status == 460
    assert parts(served) == [] and blobs(served) == []
    async with http.head(served.url + created.headers["Location"], headers={**TUS, **auth()}) as r:
        assert r.status == 404
    (refused,) = served.audit("upload-refused")
    assert refused["reason"] == "sha256-mismatch"
    assert await files(http, served) == []


async def test_empty_file_and_termination(served: Served, http: aiohttp.ClientSession) -> None:
    created = await create(http, served, 0, name="empty.txt")
    assert created.status == 201 and created.headers["Consilium-File-Id"]
    (empty,) = await files(http, served)
    assert empty["size"] == 0 and empty["sha256"] == hashlib.sha256(b"").hexdigest()
    created = await create(http, served, 1000)
    location = created.headers["Location"]
    assert (await patch(http, served, location, 0, b"x" * 10)).status == 204
    assert len(parts(served)) == 1
    # Someone else cannot see or end it; the uploader can.
    async with http.delete(served.url + location, headers={**TUS, **auth("bob")}) as resp:
        assert resp.status == 404
    async with http.delete(served.url + location, headers={**TUS, **auth()}) as resp:
        assert resp.status == 204
    assert parts(served) == []


async def test_expired_uploads_are_swept(served: Served, http: aiohttp.ClientSession) -> None:
    created = await create(http, served, 1000)
    location = created.headers["Location"]
    assert (await patch(http, served, location, 0, b"x" * 10)).status == 204
    service = served.app[FILES]
    assert service.sweep(int(time.time() * 1000)) == 0 and len(parts(served)) == 1
    assert service.sweep(int(time.time() * 1000) + UPLOAD_TTL_MS + 1000) == 1
    assert parts(served) == []
    async with http.head(served.url + location, headers={**TUS, **auth()}) as resp:
        assert resp.status == 404


async def test_range_downloads_and_audit(served: Served, http: aiohttp.ClientSession) -> None:
    data = bytes(range(256)) * 40
    file_id = await upload(http, served, data, name="Röntgen «1».pdf", type_="application/pdf")
    link_url = f"{served.url}/api/rooms/{ROOM}/files/{file_id}/link"
    async with http.post(link_url, headers=auth("bob")) as resp:
        assert resp.status == 200
        link = await resp.json()
    assert link["url"].startswith(f"/files/{file_id}?")
    assert abs(link["expiresAt"] - (time.time() + 600)) < 60
    url = served.url + link["url"]
    async with http.get(url) as resp:
        assert resp.status == 200 and await resp.read() == data
        disposition = resp.headers["Content-Disposition"]
        assert disposition.startswith("attachment; ")
        assert "filename*=UTF-8''R%C3%B6ntgen%20%C2%AB1%C2%BB.pdf" in disposition
        assert resp.headers["Content-Type"] == "application/octet-stream"
    async with http.get(url, headers={"Range": "bytes=0-9"}) as resp:
        assert resp.status == 206 and await resp.read() == data[:10]
        assert resp.headers["Content-Range"] == f"bytes 0-9/{len(data)}"
    async with http.get(url, headers={"Range": "bytes=-5"}) as resp:
        assert resp.status == 206 and await resp.read() == data[-5:]
    async with http.get(url, headers={"Range": "bytes=100-199"}) as resp:
        assert resp.status == 206 and await resp.read() == data[100:200]
    async with http.get(url, headers={"Range": f"bytes={len(data)}-"}) as resp:
        assert resp.status == 416
    # Only reads from the start count: a seeking reader does not flood the trail.
    downloads = served.audit("file-downloaded")
    assert [(e["actor"], e["file"]) for e in downloads] == [("bob", file_id)] * 2
    async with http.post(link_url + "?inline=1", headers=auth("bob")) as resp:
        inline = await resp.json()
    async with http.get(served.url + inline["url"]) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/pdf"
        assert resp.headers["Content-Disposition"].startswith("inline; ")
    assert len(served.audit("file-viewed")) == 1


async def test_html_is_never_served_inline(served: Served, http: aiohttp.ClientSession) -> None:
    meta = f"filename {b64('x.html')},filetype {b64('text/html')}"
    async with http.post(
        f"{served.url}/api/rooms/{ROOM}/uploads",
        headers={**TUS, **auth(), "Upload-Length": "20", "Upload-Metadata": meta},
    ) as created:
        location = created.headers["Location"]
    resp = await patch(http, served, location, 0, b"<script>1</script>  ")
    file_id = resp.headers["Consilium-File-Id"]
    async with http.post(
        f"{served.url}/api/rooms/{ROOM}/files/{file_id}/link", json={"inline": True},
        headers=auth(),
    ) as r:  # fmt: skip
        url = (await r.json())["url"]
    async with http.get(served.url + url) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"].startswith("attachment; ")


async def test_who_may_do_what(served: Served, http: aiohttp.ClientSession) -> None:
    file_id = await upload(http, served, b"study bytes")
    base = f"{served.url}/api/rooms/{ROOM}"
    # No token, another room's token, an observer uploading.
    async with http.get(f"{base}/files") as resp:
        assert resp.status == 401
    async with http.get(f"{base}/files", headers=auth("eve", room="other")) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "token-wrong-room"
    created = await create(http, served, 10, headers=auth("olga", "observer"))
    assert created.status == 403
    assert served.audit("upload-refused")[-1]["reason"] == "no-permission"
    async with http.post(f"{base}/files/{file_id}/link", headers=auth("eve", room="other")) as r:
        assert r.status == 401
    # Observers read and download.
    async with http.post(f"{base}/files/{file_id}/link", headers=auth("olga", "observer")) as r:
        assert r.status == 200
        olga_link = (await r.json())["url"]
    async with http.get(served.url + olga_link) as r:
        assert r.status == 200
    # The operator's API key works too.
    api = {"Authorization": f"Bearer {API_KEY}"}
    async with http.get(f"{base}/files", headers=api) as resp:
        assert resp.status == 200
    # Tampered and expired links.
    tampered = olga_link.replace("who=olga", "who=mallory")
    async with http.get(served.url + tampered) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "link-invalid"
    signer = served.app[FILES].signer
    old, _ = signer.mint(ROOM, file_id, "olga", int(time.time()) - 601)
    async with http.get(served.url + old) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "link-expired"
    # A participant the host removed: token and links refused while the room lives.
    olga = await join(http, served, "olga")
    host = await join(http, served, "hank")
    async with http.delete(f"{base}/participants/olga", headers=api) as r:
        assert r.status == 204
    async with http.get(f"{base}/files", headers=auth("olga", "observer")) as resp:
        assert resp.status == 403
    async with http.get(served.url + olga_link) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    await olga.close()
    await host.close()
    # An ended consultation: nothing more from it.
    served.app[SFU].ended_rooms.add(ROOM)
    async with http.get(f"{base}/files", headers=auth("bob")) as resp:
        assert resp.status == 410 and (await resp.json())["error"]["code"] == "room-ended"
    async with http.post(f"{base}/files/{file_id}/link", headers=auth("bob")) as r:
        assert r.status == 410
    bob_link, _ = signer.mint(ROOM, file_id, "bob", int(time.time()))
    async with http.get(served.url + bob_link) as r:
        assert r.status == 410


async def test_oversized_and_malformed_creation(
    served: Served, http: aiohttp.ClientSession
) -> None:
    assert (await create(http, served, MAX + 1)).status == 413
    assert served.audit("upload-refused")[-1]["reason"] == "too-large"
    assert (await create(http, served, MAX)).status == 201
    async with http.post(
        f"{served.url}/api/rooms/{ROOM}/uploads", headers={**auth(), "Upload-Length": "5"}
    ) as resp:
        assert resp.status == 412 and resp.headers["Tus-Version"] == "1.0.0"
    created = await create(http, served, 10)
    async with http.patch(
        served.url + created.headers["Location"],
        data=b"x" * 5,
        headers={**TUS, **auth(), "Upload-Offset": "0", "Content-Type": "text/plain"},
    ) as resp:
        assert resp.status == 415


async def test_resume_after_a_server_restart(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    data = os.urandom(2 * 1024 * 1024 + 7)
    half = len(data) // 2
    first = await start(tmp_path)
    try:
        created = await create(http, first, len(data), sha256=hashlib.sha256(data).hexdigest())
        location = created.headers["Location"]
        assert (await patch(http, first, location, 0, data[:half])).status == 204
    finally:
        await first.server.close()
    second = await start(tmp_path)
    try:
        # Nothing in memory now: the server re-hashes the partial file before appending.
        assert await head_offset(http, second, location) == half
        resp = await patch(http, second, location, half, data[half:])
        assert resp.status == 204, resp.status
        (shared,) = await files(http, second)
        assert shared["sha256"] == hashlib.sha256(data).hexdigest()
    finally:
        await second.server.close()


def test_settings_default_max_size() -> None:
    assert Settings().max_upload_bytes == 8 * 1024**3
    assert replace(Settings(), max_upload_bytes=5).max_upload_bytes == 5


# --------------------------------------------------------------------------- deleting


async def test_delete_rights_blob_references_broadcast_and_audit(
    served: Served, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(30_000)
    sha = hashlib.sha256(data).hexdigest()
    base = f"{served.url}/api/rooms/{ROOM}/files"
    name = "Wrong-Patient Müller CT.zip"
    mine = await upload(http, served, data, name=name)  # alice, a specialist
    second = await upload(http, served, os.urandom(100), name="second.bin")
    # The same study shared in another room too: one blob, two records.
    elsewhere = {"sha256": sha, "size": len(data), "name": "copy.zip"}
    async with http.post(
        f"{served.url}/api/rooms/icu/files/instant",
        json=elsewhere,
        headers=auth("alice", room="icu"),
    ) as resp:
        assert resp.status == 201
        icu_copy = (await resp.json())["file"]["id"]
    async with http.post(f"{base}/{mine}/link", headers=auth("bob")) as resp:
        old_link = served.url + (await resp.json())["url"]
    bob = await join(http, served, "bob")

    # Another specialist may not; the uploader may. Refusals are audited, without the name.
    async with http.delete(f"{base}/{mine}", headers=auth("bob")) as resp:
        assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    (refused,) = served.audit("file-delete-refused")
    assert (refused["actor"], refused["file"]) == ("bob", mine)
    async with http.delete(f"{base}/{mine}", headers=auth("alice")) as resp:
        assert resp.status == 204
    assert await next_of(bob, "file-removed") == {"type": "file-removed", "fileId": mine}
    assert [f["id"] for f in await files(http, served)] == [second]
    async with http.get(old_link) as resp:
        assert resp.status == 404
    async with http.post(f"{base}/{mine}/link", headers=auth("bob")) as resp:
        assert resp.status == 404
    async with http.delete(f"{base}/{mine}", headers=auth("alice")) as resp:
        assert resp.status == 404
    # The icu room still shares those bytes: the blob stays.
    assert served.data / "blobs" / sha[:2] / sha in blobs(served)
    (deleted,) = served.audit("file-deleted")
    assert (deleted["actor"], deleted["file"], deleted["sha256"]) == ("alice", mine, sha)
    assert deleted["blobRemoved"] is False
    assert "Müller" not in json.dumps(served.audit())

    # A host deletes what someone else shared.
    async with http.delete(f"{base}/{second}", headers=auth("hank", "host")) as resp:
        assert resp.status == 204
    assert (await next_of(bob, "file-removed"))["fileId"] == second
    assert served.audit("file-deleted")[-1]["blobRemoved"] is True
    await bob.close()
    # The operator removes the last reference, even after that consultation ended.
    served.app[SFU].ended_rooms.add("icu")
    icu = f"{served.url}/api/rooms/icu/files/{icu_copy}"
    async with http.delete(icu, headers=auth("ivy", "host", room="icu")) as resp:
        assert resp.status == 410
    async with http.delete(icu, headers={"Authorization": f"Bearer {API_KEY}"}) as resp:
        assert resp.status == 204
    assert blobs(served) == [] and list((served.data / "trash").iterdir()) == []
    (icu_deleted,) = [e for e in served.app[AUDIT].entries("icu") if e["event"] == "file-deleted"]
    assert icu_deleted["actor"] == "api-key" and icu_deleted["blobRemoved"] is True
    # Shared again after that, the bytes come back.
    again = await upload(http, served, data, name="again.zip")
    assert [f["id"] for f in await files(http, served)] == [again]
    assert blobs(served)[0].read_bytes() == data


async def test_a_delete_between_an_instant_check_and_its_record_wins(
    served: Served, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(5000)
    sha = hashlib.sha256(data).hexdigest()
    first = await upload(http, served, data)
    service = served.app[FILES]
    service.require_blob(sha, len(data))  # an instant upload found the bytes...
    assert service.delete_file(ROOM, first)[1] is True  # ...then the last record went...
    late = SharedFile("late", ROOM, sha, len(data), "x.bin", "text/plain", "a", "A", 0, None)
    with pytest.raises(BlobMissing):  # ...so its record is refused, inside its transaction.
        service.repo.add(late, None, partial(service.require_blob, sha, len(data)))
    assert service.repo.get_file(ROOM, "late") is None and blobs(served) == []
    body = {"sha256": sha, "size": len(data), "name": "x.bin"}
    async with http.post(f"{served.url}/api/rooms/{ROOM}/files/instant", json=body,
                         headers=auth()) as resp:  # fmt: skip
        assert resp.status == 404


# --------------------------------------------------------------------------- orphans


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_orphans_are_swept_at_start_up_and_by_the_sweeper(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    first = await start(tmp_path)
    try:
        kept_data = os.urandom(1000)
        kept = await upload(http, first, kept_data)
        created = await create(http, first, 1000)  # an upload in progress: row and file
        in_progress = parts(first)[0]
    finally:
        await first.server.close()
    data = first.data
    # What a crash leaves: a partial file whose row never came, a blob without a record,
    # and a delete that moved its blob aside but never committed (the record is still there).
    crashed_part = data / "uploads" / "never-recorded.part"
    crashed_part.write_bytes(b"x" * 10)
    orphan_sha = hashlib.sha256(b"orphan").hexdigest()
    orphan = data / "blobs" / orphan_sha[:2] / orphan_sha
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan")
    kept_sha = hashlib.sha256(kept_data).hexdigest()
    (data / "trash").mkdir()
    os.replace(data / "blobs" / kept_sha[:2] / kept_sha, data / "trash" / f"{kept_sha}.0a1b")
    for path in (crashed_part, orphan, in_progress):
        _age(path, ORPHAN_MIN_AGE_S + 60)
    # Being created right now: too young to be touched.
    young_part = data / "uploads" / "just-created.part"
    young_part.write_bytes(b"")
    young_sha = hashlib.sha256(b"young").hexdigest()
    young = data / "blobs" / young_sha[:2] / young_sha
    young.parent.mkdir(parents=True)
    young.write_bytes(b"young")

    second = await start(tmp_path)
    try:
        # The start-up sweep runs in the background: wait for it (bounded).
        for _ in range(200):
            if not crashed_part.exists() and not orphan.exists():
                break
            await asyncio.sleep(0.05)
        assert not crashed_part.exists() and not orphan.exists()
        assert in_progress.exists() and young_part.exists() and young.exists()
        assert (data / "blobs" / kept_sha[:2] / kept_sha).read_bytes() == kept_data
        assert list((data / "trash").iterdir()) == []
        assert await head_offset(http, second, created.headers["Location"]) == 0
        link = second.app[FILES].signer.mint(ROOM, kept, "bob", int(time.time()))[0]
        async with http.get(second.url + link) as resp:
            assert resp.status == 200 and await resp.read() == kept_data
        # Later, the periodic sweep takes what has grown old meanwhile.
        _age(young_part, ORPHAN_MIN_AGE_S + 1)
        _age(young, ORPHAN_MIN_AGE_S + 1)
        service = second.app[FILES]
        assert await asyncio.to_thread(service.sweep_orphans, time.time()) == (1, 1)
        assert not young_part.exists() and not young.exists() and in_progress.exists()
    finally:
        await second.server.close()


async def test_instant_upload_needs_more_than_the_hash(
    served: Served, http: aiohttp.ClientSession
) -> None:
    """Knowing a study's sha256 must not pull a copy into another room without the bytes."""
    data = os.urandom(50_000)
    await upload(http, served, data)  # alice, in ROOM
    body = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "name": "x.bin"}
    other_room = f"{served.url}/api/rooms/elsewhere/files/instant"
    async with http.post(other_room, json=body, headers=auth("mallory", room="elsewhere")) as r:
        assert r.status == 404  # the same answer as for bytes the server never saw
        assert (await r.json())["error"]["code"] == "not-found"
    # In the room where the file is shared, anyone may; so may its uploader anywhere.
    same_room = f"{served.url}/api/rooms/{ROOM}/files/instant"
    async with http.post(same_room, json=body, headers=auth("carol", "bedside")) as r:
        assert r.status == 201
    async with http.post(other_room, json=body, headers=auth("alice", room="elsewhere")) as r:
        assert r.status == 201
    assert len(blobs(served)) == 1
