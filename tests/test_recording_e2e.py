"""Recording a consultation end to end: in-process server, aiortc participants, files read back.

WebRTC tests: run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_recording_e2e.py
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiohttp.test_utils import TestServer

from media.recording_writer import ParticipantRecorder
from media.synthetic import decode_barcode
from sfu.recording import RecorderSink, Recording
from signaling.app import create_app
from signaling.appkeys import AUDIT, AUTHORITY
from signaling.config import Settings
from tools.synthetic_client import SyntheticParticipant

T = 60.0


def _bot(server: Any, room: str, name: str, role: str, codec: str = "VP8") -> SyntheticParticipant:
    return SyntheticParticipant(
        server.url,
        room=room,
        name=name,
        role=role,
        video_codec=codec,
        video_size=(160, 120),
        fps=10,
    )


def _sees(p: SyntheticParticipant, other: SyntheticParticipant) -> bool:
    media = p.received.get(other.identity or "")
    return media is not None and media.video_frames >= 5 and media.audio_frames >= 10


def _contents(path: Path) -> tuple[list[int], int, dict[str, str]]:
    """(barcode counters of the decoded video, decoded audio frames, codec per stream type)."""
    counters: list[int] = []
    audio = 0
    with av.open(str(path)) as c:
        codecs = {s.type: s.codec_context.name for s in c.streams}
        for frame in c.decode(*c.streams):
            if isinstance(frame, av.VideoFrame):
                decoded = decode_barcode(frame.to_ndarray(format="gray"))
                if decoded is not None:
                    counters.append(decoded[0])
            else:
                audio += 1
    return counters, audio, codecs


def _audit(server: Any) -> list[dict[str, Any]]:
    """The recording events (joins and leaves are audited too, but not checked here)."""
    return [e for e in server.app[AUDIT].entries() if e["event"].startswith("recording-")]


@pytest.mark.webrtc
async def test_host_records_everyone_and_files_decode(server: Any) -> None:
    room_id = "recward"
    host = _bot(server, room_id, "Dr Host", "host")
    alice = _bot(server, room_id, "Alice", "specialist")
    carol = _bot(server, room_id, "Carol", "bedside", codec="H264")
    try:
        await host.join()
        joined = await alice.join()
        assert joined["recording"] == {"active": False, "startedAt": None, "startedBy": None}
        await alice.wait_for(lambda: _sees(alice, host), timeout=T)

        # Not the host: refused, with a clear message, and audited.
        await alice.send({"type": "start-recording"})
        error = await alice.next_message("error", timeout=10)
        assert error["code"] == "forbidden" and "host" in error["message"]
        room = server.sfu.rooms[room_id]
        assert room.recording is None

        await host.send({"type": "start-recording"})
        state = await alice.next_message("recording", timeout=10)
        assert state["active"] is True and state["startedBy"] == "Dr Host"
        assert isinstance(state["startedAt"], int)

        # Someone joining later learns the state on join and is recorded too (H264: .mkv).
        joined = await carol.join()
        assert joined["recording"]["active"] is True
        await host.wait_for(lambda: _sees(host, carol), timeout=T)
        recording = room.recording
        assert recording is not None

        def all_writing() -> bool:
            # Six tracks attached and every participant's file open.
            return len(recording.sinks) == 6 and all(
                r.planner.file_open for r in recording.participants.values()
            )

        await host.wait_for(all_writing, timeout=T)
        await asyncio.sleep(2.0)  # a couple of seconds of media in every file

        # Carol leaves while recording: her file is closed properly right away.
        assert carol.identity is not None
        carol_id = carol.identity
        await carol.leave()
        await host.wait_for(lambda: carol_id not in room.sessions, timeout=T)
        assert [f["participantId"] for f in recording.files] == [carol_id]

        await host.send({"type": "stop-recording"})
        state = await alice.next_message("recording", timeout=10)
        assert state == {"type": "recording", "active": False, "startedAt": None, "startedBy": None}
        assert room.recording is None

        files = {f["participantId"]: Path(f["path"]) for f in recording.files}
        assert set(files) == {host.identity, alice.identity, carol_id}
        assert files[carol_id].suffix == ".mkv" and files[host.identity or ""].suffix == ".webm"
        for identity, path in files.items():
            counters, audio, codecs = _contents(path)
            video_codec = "h264" if identity == carol_id else "vp8"
            assert codecs == {"audio": "opus", "video": video_codec}, path
            assert len(counters) >= 10, (path, counters)
            assert counters == sorted(counters) and counters[-1] > counters[0]
            assert audio >= 50, (path, audio)

        events = [(e["event"], e["actor"]) for e in _audit(server)]
        assert events == [
            ("recording-refused", alice.identity),
            ("recording-started", host.identity),
            ("recording-stopped", host.identity),
        ]
        stopped = _audit(server)[-1]
        assert sorted(stopped["files"]) == sorted(p.name for p in files.values())

        # Nothing of the recording stays attached or alive.
        for session in room.sessions.values():
            for producer in session.producers.values():
                assert producer.sinks == []
        gc.collect()
        leftovers = [
            o
            for o in gc.get_objects()
            if isinstance(o, (RecorderSink, ParticipantRecorder, Recording))
            and o is not room.last_recording
        ]
        assert leftovers == []
    finally:
        for p in (host, alice, carol):
            await p.leave()


@pytest.mark.webrtc
async def test_room_close_finalises_the_recording(server: Any) -> None:
    host = _bot(server, "closing", "Host", "host")
    try:
        await host.join()
        await host.send({"type": "start-recording"})
        await host.next_message("recording", timeout=10)
        room = server.sfu.rooms["closing"]
        recording = room.recording
        assert recording is not None
        await host.wait_for(
            lambda: any(r.planner.segments for r in recording.participants.values()), timeout=T
        )
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{server.url}/api/rooms/closing") as resp:
                assert resp.status == 204
        assert not recording.active and recording.sinks == {}
        [f] = recording.files
        _, audio, codecs = _contents(Path(f["path"]))
        assert codecs["audio"] == "opus" and audio > 0
        stopped = [e for e in _audit(server) if e["event"] == "recording-stopped"]
        assert stopped[0]["actor"] == "system" and stopped[0]["reason"] == "room-closed"
    finally:
        await host.leave()


async def test_rest_recording_control_and_audit(tmp_path: Path) -> None:
    key = "rec-api-key-0123456789"
    settings = Settings(
        host="127.0.0.1",
        port=0,
        ice_hosts=["127.0.0.1"],
        secret="rec-secret-0123456789abcdef0123456789",
        api_key=key,
        recordings_dir=str(tmp_path),
        data_dir=str(tmp_path / "data"),
    )
    app = create_app(settings)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    base = str(test_server.make_url("")).rstrip("/")
    url = f"{base}/api/rooms/restrec/recording"
    by_key = {"Authorization": f"Bearer {key}"}
    authority = app[AUTHORITY]

    def token(role: str, identity: str) -> dict[str, str]:
        minted = authority.mint(
            room="restrec", identity=identity, name=identity, role=role, now_s=int(time.time())
        )
        return {"Authorization": f"Bearer {minted}"}

    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url, headers=by_key) as resp:
                assert resp.status == 404  # no such room yet
            async with http.post(f"{base}/api/rooms", json={"id": "restrec"}, headers=by_key) as r:
                assert r.status == 201
            async with http.get(url, headers=by_key) as resp:
                assert resp.status == 200
                assert await resp.json() == {
                    "recording": {"active": False, "startedAt": None, "startedBy": None},
                    "files": [],
                }
            async with http.post(url, json={"action": "start"}) as resp:
                assert resp.status == 401
            specialist = token("specialist", "spec-1")
            async with http.post(url, json={"action": "start"}, headers=specialist) as resp:
                assert resp.status == 403
            async with http.post(url, json={"action": "pause"}, headers=by_key) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "bad-field"
            async with http.post(url, json={"action": "start"}, headers=by_key) as resp:
                assert resp.status == 200
                state = (await resp.json())["recording"]
                assert state["active"] is True and state["startedBy"] == "REST API"
            async with http.post(url, json={"action": "stop"}, headers=token("host", "h-1")) as r:
                assert r.status == 200
                assert (await r.json())["recording"]["active"] is False
            async with http.post(url, json={"action": "stop"}, headers=by_key) as resp:
                assert resp.status == 200  # already stopped: nothing changes
        events = [
            (e["event"], e["actor"])
            for e in app[AUDIT].entries()
            if e["event"].startswith("recording-")
        ]
        assert events == [
            ("recording-refused", "api-token"),
            ("recording-started", "api-key"),
            ("recording-stopped", "h-1"),
        ]
        assert all("time" in e and e["room"] == "restrec" for e in app[AUDIT].entries())
        assert (tmp_path / "data" / "consilium.db").exists()
        assert app[AUDIT].verify().ok
    finally:
        await test_server.close()
