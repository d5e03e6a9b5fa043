"""Viewport-driven pausing, the `downlink-stats` report and `GET /metrics`, end to end.

Alice publishes synthetic audio + video (aiortc: one non-simulcast layer), Bob only receives.
Bob's `viewport` message hides and shows Alice's tile; the REST stats, the metrics and what Bob
actually decodes must all agree. The WebRTC tests run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q tests/test_viewport_and_metrics.py
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from signaling.auth import TokenAuthority
from signaling.config import Settings
from tools.synthetic_client import SyntheticParticipant

T = 20.0
API_KEY = "metrics-test-api-key-0123456789"
SECRET = "metrics-test-secret-0123456789abcdef"
SECURED = Settings(
    host="127.0.0.1", port=0, ice_hosts=["127.0.0.1"], api_key=API_KEY, secret=SECRET
)
DOWNLINK_FIELDS = {
    "type",
    "estimateBps",
    "availableBps",
    "feedback",
    "wantedBps",
    "allocatedBps",
    "estimator",
    "pacer",
    "tracks",
}
TRACK_FIELDS = {
    "participantId",
    "mid",
    "simulcast",
    "preferred",
    "target",
    "current",
    "switches",
    "pauses",
    "pauseReason",
}
OPENAPI = Path(__file__).resolve().parent.parent / "docs" / "openapi.yaml"
LAYER_FIELDS = {"simulcast", "preferred", "target", "current", "switches", "pauses", "pauseReason"}


# --------------------------------------------------------------------------- helpers


@asynccontextmanager
async def alice_and_bob(server: Any, room: str) -> AsyncIterator[tuple[Any, Any]]:
    """Alice publishes, Bob subscribes; yields once Bob decodes Alice's video and audio."""
    alice = SyntheticParticipant(server.url, room=room, name="Alice", video_size=(160, 120))
    bob = SyntheticParticipant(
        server.url, room=room, name="Bob", publish_audio=False, publish_video=False
    )
    try:
        await alice.join()
        await bob.join()
        await bob.wait_for(lambda: receiving(bob, alice.identity), timeout=T)
        yield alice, bob
    finally:
        await bob.leave()
        await alice.leave()


def receiving(p: SyntheticParticipant, other: str | None, frames: int = 5) -> bool:
    media = p.received.get(other or "")
    return (
        media is not None
        and len(media.counters) >= frames
        and media.counters[-1] > media.counters[0]
        and media.audio_frames > 10
    )


def tile(participant: str | None, *, visible: bool, **size: int) -> dict[str, Any]:
    return {
        "participantId": participant,
        "width": size.get("width", 0),
        "height": size.get("height", 0),
        "visible": visible,
    }


async def next_fresh(p: SyntheticParticipant, type_: str, timeout_s: float = 5.0) -> Any:
    """The first message of `type_` that arrives from now on (older ones are skipped)."""
    start = len(p.messages)

    def arrived() -> bool:
        return any(m.get("type") == type_ for m in p.messages[start:])

    await p.wait_for(arrived, timeout=timeout_s)
    return next(m for m in p.messages[start:] if m.get("type") == type_)


async def get(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """(status, content type header, body text)."""
    async with http.get(url, headers=headers or {}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def video_stats(http: aiohttp.ClientSession, server: Any, room: str, bob: Any) -> Any:
    """Bob's consumer of Alice's video, from the REST participant stats endpoint."""
    status, _, text = await get(
        http, f"{server.url}/api/rooms/{room}/participants/{bob.identity}/stats"
    )
    assert status == 200, text
    stats = json.loads(text)
    videos = [c for c in stats["consumers"] if c["kind"] == "video"]
    audios = [c for c in stats["consumers"] if c["kind"] == "audio"]
    assert len(videos) == 1 and len(audios) == 1, stats["consumers"]
    return stats, videos[0], audios[0]


async def eventually(check: Callable[[], Any], timeout_s: float = 5.0) -> Any:
    """Await `check()` (a coroutine function returning a truthy value) until it is truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            assert result, "condition not met in time"
            return result
        await asyncio.sleep(0.2)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text → sample name → [(labels, value)]."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def value(found: dict[str, Any], name: str, **labels: str) -> float:
    matches = [
        v for lbl, v in found.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    ]
    assert len(matches) == 1, (name, labels, found.get(name))
    return float(matches[0])


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# --------------------------------------------------------------------------- (a) hide and show


@pytest.mark.webrtc
async def test_hidden_tile_pauses_video_and_showing_it_resumes(
    server: Any, http: aiohttp.ClientSession
) -> None:
    room = "vp-pause"
    async with alice_and_bob(server, room) as (alice, bob):
        stats, video, audio = await video_stats(http, server, room, bob)
        # The stats carry exactly the fields docs/openapi.yaml documents.
        schemas = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))["components"]["schemas"]
        documented = {name: set(s.get("properties", ())) for name, s in schemas.items()}
        assert set(stats) == documented["ParticipantStats"]
        assert set(stats["downlink"]) == documented["DownlinkStats"]
        for consumer in (video, audio):
            assert set(consumer) == documented["ConsumerStats"]
            assert set(consumer["layers"]) == documented["LayerState"] == LAYER_FIELDS
        status, _, text = await get(
            http, f"{server.url}/api/rooms/{room}/participants/{alice.identity}/stats"
        )
        assert status == 200
        for producer in json.loads(text)["producers"]:
            assert set(producer) == documented["ProducerStats"]
        assert video["participantId"] == alice.identity
        assert video["layers"]["simulcast"] is False
        assert (video["layers"]["preferred"], video["layers"]["target"]) == (0, 0)
        assert video["layers"]["pauseReason"] is None
        pauses = video["layers"]["pauses"]

        await bob.send({"type": "viewport", "tiles": [tile(alice.identity, visible=False)]})

        async def paused() -> Any:
            _, v, _ = await video_stats(http, server, room, bob)
            return v if v["layers"]["pauseReason"] == "not-wanted" else None

        video = await eventually(paused)
        layers = video["layers"]
        assert set(layers) == LAYER_FIELDS
        assert (layers["preferred"], layers["target"], layers["current"]) == (None, None, None)
        assert layers["pauses"] == pauses + 1

        # Nothing new reaches Bob's decoder (once what was in flight is decoded), audio goes on.
        media = bob.received[alice.identity]
        for _ in range(10):
            frames = media.video_frames
            await asyncio.sleep(0.5)
            if media.video_frames == frames:
                break
        frames, counter, sounds = media.video_frames, media.last_counter, media.audio_frames
        _, before, audio_before = await video_stats(http, server, room, bob)
        await asyncio.sleep(1.5)
        _, after, audio_after = await video_stats(http, server, room, bob)
        assert media.video_frames == frames, "video frames still arrive while the tile is hidden"
        assert media.last_counter == counter
        assert after["forwarded"] == before["forwarded"]
        assert after["drops"].get("paused", 0) > before["drops"].get("paused", 0)
        assert media.audio_frames > sounds + 20
        assert audio_after["forwarded"] > audio_before["forwarded"]
        assert audio_after["layers"]["pauseReason"] is None

        # The metrics say the same: preferred and target are "none" (-1).
        status, _, text = await get(http, server.url + "/metrics")
        assert status == 200
        found = samples(text)
        labels = {"room": room, "subscriber": bob.identity, "publisher": alice.identity}
        assert value(found, "consilium_subscriber_layer", state="preferred", **labels) == -1
        assert value(found, "consilium_subscriber_layer", state="target", **labels) == -1

        # Shown again, with a size: the video resumes from a fresh keyframe.
        shown = tile(alice.identity, visible=True, width=320, height=240)
        await bob.send({"type": "viewport", "tiles": [shown]})
        await bob.wait_for(
            lambda: (
                media.video_frames > frames + 5
                and media.last_counter is not None
                and counter is not None
                and media.last_counter > counter + 5
            ),
            timeout=T,
        )

        async def resumed() -> Any:
            _, v, _ = await video_stats(http, server, room, bob)
            return v if v["layers"]["current"] == 0 else None

        video = await eventually(resumed)
        assert (video["layers"]["preferred"], video["layers"]["target"]) == (0, 0)
        assert video["layers"]["pauseReason"] is None
        assert video["forwarded"] > after["forwarded"]
        assert not bob.errors


# --------------------------------------------------------------------------- (b) downlink-stats


@pytest.mark.webrtc
async def test_downlink_stats_messages(server: Any) -> None:
    room = "vp-downlink"
    async with alice_and_bob(server, room) as (alice, bob):
        first = await next_fresh(bob, "downlink-stats")
        second = await next_fresh(bob, "downlink-stats")
        for report in (first, second):
            assert set(report) == DOWNLINK_FIELDS, report
            for name in ("estimateBps", "availableBps", "wantedBps", "allocatedBps"):
                assert isinstance(report[name], int) and report[name] >= 0, (name, report)
            assert report["feedback"] in (None, "twcc", "remb")
            assert isinstance(report["estimator"], dict) and report["estimator"]
            json.dumps(report)
        # One entry per received *video* track; audio is not listed.
        [track] = second["tracks"]
        assert set(track) == TRACK_FIELDS, track
        assert track["participantId"] == alice.identity
        assert isinstance(track["mid"], str)
        assert track["simulcast"] is False
        assert (track["preferred"], track["target"], track["current"]) == (0, 0, 0)
        assert track["pauseReason"] is None
        # (A subscription made before the publisher's first packets arrive starts with one
        # "no-active-layer" pause, so the count is compared, not expected to be 0.)
        assert isinstance(track["switches"], int) and isinstance(track["pauses"], int)
        pauses = track["pauses"]
        # Media is flowing, so the allocation covers at least the audio and the video.
        assert second["allocatedBps"] > 0 and second["wantedBps"] > 0

        # A hidden tile shows up in the next reports.
        await bob.send({"type": "viewport", "tiles": [tile(alice.identity, visible=False)]})
        for _ in range(3):
            report = await next_fresh(bob, "downlink-stats")
            if report["tracks"][0]["pauseReason"] == "not-wanted":
                break
        [track] = report["tracks"]
        assert track["pauseReason"] == "not-wanted", report
        assert (track["preferred"], track["target"]) == (None, None)
        assert track["pauses"] == pauses + 1


# --------------------------------------------------------------------------- (c) /metrics


@pytest.mark.webrtc
async def test_metrics_describe_the_room(server: Any, http: aiohttp.ClientSession) -> None:
    room = "vp-metrics"
    async with alice_and_bob(server, room) as (alice, bob):
        status, content_type, text = await get(http, server.url + "/metrics")  # dev mode: open
        assert status == 200
        assert content_type.startswith("text/plain")
        found = samples(text)
        assert value(found, "consilium_rooms") == 1
        assert value(found, "consilium_participants", room=room) == 2
        forwarded = {
            kind: value(
                found,
                "consilium_forwarded_packets_total",
                room=room,
                subscriber=bob.identity,
                publisher=alice.identity,
                kind=kind,
            )
            for kind in ("audio", "video")
        }
        assert forwarded["audio"] > 0 and forwarded["video"] > 0
        # Alice receives nothing, so she has no forwarded packets and no downlink.
        assert not [
            lbl
            for lbl, _ in found["consilium_forwarded_packets_total"]
            if lbl["subscriber"] == alice.identity
        ]
        labels = {"room": room, "subscriber": bob.identity, "publisher": alice.identity}
        for state in ("preferred", "target", "current"):
            assert value(found, "consilium_subscriber_layer", state=state, **labels) == 0
        # The estimate is exported once the subscriber gave feedback (aiortc sends REMB after
        # its receive-side estimator has a few seconds of packets).
        for _ in range(100):
            if found.get("consilium_downlink_estimate_bps"):
                break
            await asyncio.sleep(0.2)
            found = samples((await get(http, server.url + "/metrics"))[2])
        estimate = value(
            found, "consilium_downlink_estimate_bps", room=room, subscriber=bob.identity
        )
        assert estimate > 0
        assert value(found, "consilium_received_packets_total", room=room, kind="video") > 0
        # Loss-repair counters are exported for every video publisher and subscriber (0 on
        # a clean loopback link is fine; present is what operators' dashboards rely on).
        outcomes = {lbl["outcome"] for lbl, _ in found["consilium_upstream_repair_packets_total"]}
        assert outcomes == {"missing", "nacked", "recovered", "lost"}
        assert (
            value(
                found, "consilium_retransmitted_packets_total", room=room, subscriber=bob.identity
            )
            >= 0
        )


async def test_metrics_need_the_api_key_when_one_is_set(http: aiohttp.ClientSession) -> None:
    from aiohttp.test_utils import TestServer

    from signaling.app import create_app

    test_server = TestServer(create_app(SECURED), host="127.0.0.1")
    await test_server.start_server()
    url = str(test_server.make_url("/metrics"))
    room_admin = TokenAuthority(SECRET).mint(
        room="x", identity="host-x", name="Admin", role="host", now_s=int(time.time())
    )
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong-key"},
            {"Authorization": API_KEY},
            {"Authorization": f"Basic {API_KEY}"},
            # A room admin's token is for that room's participants, not server-wide metrics.
            {"Authorization": f"Bearer {room_admin}"},
        ):
            status, _, text = await get(http, url, headers)
            assert status == 401, (headers, status, text)
            body = json.loads(text)
            assert body["error"]["code"] and body["error"]["message"]
            assert "consilium_" not in text
        status, content_type, text = await get(http, url, {"Authorization": f"Bearer {API_KEY}"})
        assert status == 200 and content_type.startswith("text/plain")
        assert value(samples(text), "consilium_rooms") == 0
    finally:
        await test_server.close()


# --------------------------------------------------------------------------- (d) bad viewports


@pytest.mark.webrtc
async def test_bad_viewport_is_refused_and_the_session_goes_on(
    server: Any, http: aiohttp.ClientSession
) -> None:
    room = "vp-bad"
    async with alice_and_bob(server, room) as (alice, bob):
        good = tile(alice.identity, visible=True, width=320, height=240)
        bad_messages: list[dict[str, Any]] = [
            {"type": "viewport"},
            {"type": "viewport", "tiles": "all"},
            {"type": "viewport", "tiles": [good] * 65},
            {"type": "viewport", "tiles": [good, None]},
            {"type": "viewport", "tiles": [{**good, "width": -1}]},
            {"type": "viewport", "tiles": [{**good, "height": 16385}]},
            {"type": "viewport", "tiles": [{**good, "width": "320"}]},
            {"type": "viewport", "tiles": [{**good, "visible": "no"}]},
            {"type": "viewport", "tiles": [{**good, "pinned": 1}]},
            # Refused as a whole: the valid hidden tile before the bad one is not applied.
            {"type": "viewport", "tiles": [tile(alice.identity, visible=False), {"width": 1}]},
        ]
        for message in bad_messages:
            await bob.send(message)
            error = await bob.next_message("error", timeout=5)
            assert error["code"] == "bad-field", (message, error)
            assert error["fatal"] is False
            assert isinstance(error["message"], str) and error["message"]
        await bob.send({"type": "ping"})
        await bob.next_message("pong", timeout=5)
        assert bob.connected

        # Nothing was applied, and media still flows.
        _, video, _ = await video_stats(http, server, room, bob)
        assert video["layers"]["pauseReason"] is None and video["layers"]["target"] == 0
        media = bob.received[alice.identity]
        counter = media.last_counter or 0
        await bob.wait_for(lambda: (media.last_counter or 0) > counter + 5, timeout=T)

        # Unknown participants are ignored silently, and a good viewport still works.
        await bob.send(
            {
                "type": "viewport",
                "tiles": [tile("nobody", visible=False), tile(alice.identity, visible=False)],
            }
        )

        async def paused() -> Any:
            _, v, _ = await video_stats(http, server, room, bob)
            return v["layers"]["pauseReason"] == "not-wanted"

        await eventually(paused)
        await bob.send({"type": "ping"})
        await bob.next_message("pong", timeout=5)
        assert len(bob.errors) == len(bad_messages)
        assert bob.identity in server.sfu.rooms[room].sessions
