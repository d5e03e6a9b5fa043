"""Synthetic media over real aiortc peer connections on loopback, without the Consilium server.

1. A direct in-process PC pair: counters sent by CounterVideoTrack arrive decoded and advance.
2. SyntheticParticipant against a tiny *echo* signaling server written here (it speaks just
   enough of protocol v1 and sends the client's own tracks back in a subscribe-offer), so the
   client's join / publish / subscribe / decode / leave plumbing is exercised end to end.

Run inside the loopback-only namespace: bash tools/in_netns.sh .venv/bin/pytest -q <this file>
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aioice.ice
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

from media.synthetic import CounterVideoTrack, ToneAudioTrack, decode_barcode
from tools.synthetic_client import SyntheticClientError, SyntheticParticipant

pytestmark = pytest.mark.webrtc


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    # aioice skips 127.0.0.1 when gathering; the namespace has nothing else.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def _pc() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def test_direct_pc_pair_counters_advance() -> None:
    sender, receiver = _pc(), _pc()
    video = CounterVideoTrack("direct", 320, 240, fps=15)
    audio = ToneAudioTrack(frequency=700.0)
    counters: list[int] = []
    audio_frames = 0
    got_enough = asyncio.Event()

    async def consume(track: MediaStreamTrack) -> None:
        nonlocal audio_frames
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, VideoFrame):
                decoded = decode_barcode(frame.to_ndarray(format="bgr24"))
                if decoded is not None:
                    counters.append(decoded[0])
            elif isinstance(frame, AudioFrame):
                audio_frames += 1
            if len(counters) >= 15 and audio_frames >= 25:
                got_enough.set()

    tasks: list[asyncio.Task[None]] = []
    receiver.on("track", lambda track: tasks.append(asyncio.create_task(consume(track))))
    try:
        sender.addTransceiver(video, direction="sendonly")
        sender.addTransceiver(audio, direction="sendonly")
        await sender.setLocalDescription(await sender.createOffer())
        assert "127.0.0.1" in sender.localDescription.sdp
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        await asyncio.wait_for(got_enough.wait(), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.close()
        await receiver.close()

    assert len(counters) >= 15
    assert counters == sorted(counters), "decoded counters must never go backwards"
    assert counters[-1] - counters[0] >= 10
    assert audio_frames >= 25


# --------------------------------------------------------------------------- echo server


class EchoServer:
    """Protocol-v1 stand-in: answers publish, then offers the publisher's own tracks back."""

    def __init__(self) -> None:
        self.pcs: list[RTCPeerConnection] = []
        self.received: list[dict[str, Any]] = []

    async def dev_token(self, request: web.Request) -> web.Response:
        return web.json_response({"token": "not-a-jwt", "identity": "bot-1"})

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        subscriber: RTCPeerConnection | None = None
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except ValueError:
                await ws.send_json(
                    {"type": "error", "code": "bad-json", "message": "x", "fatal": False}
                )
                continue
            self.received.append(data)
            kind = data.get("type")
            if kind == "join":
                me = {"id": "bot-1", "name": "bot", "role": "specialist"}
                await ws.send_json(
                    {
                        "type": "joined",
                        "version": 1,
                        "room": "demo",
                        "self": me,
                        "participants": [],
                        "iceServers": [],
                        "maxMessageBytes": 65536,
                    }
                )
            elif kind == "publish":
                publisher = _pc()
                self.pcs.append(publisher)
                await publisher.setRemoteDescription(
                    RTCSessionDescription(sdp=data["sdp"], type="offer")
                )
                await publisher.setLocalDescription(await publisher.createAnswer())
                await ws.send_json(
                    {"type": "publish-answer", "sdp": publisher.localDescription.sdp}
                )
                # aiortc decodes and re-encodes here: fine for a stand-in, not how the SFU works.
                subscriber = _pc()
                self.pcs.append(subscriber)
                added = []
                for transceiver in publisher.getTransceivers():
                    track = transceiver.receiver.track
                    assert track is not None
                    added.append(subscriber.addTransceiver(track, direction="sendonly"))
                await subscriber.setLocalDescription(await subscriber.createOffer())
                tracks = [
                    {
                        "mid": t.mid,
                        "participantId": "echo",
                        "kind": t.kind,
                        "name": "Echo",
                        "role": "host",
                    }
                    for t in added
                ]
                await ws.send_json(
                    {
                        "type": "subscribe-offer",
                        "sdp": subscriber.localDescription.sdp,
                        "tracks": tracks,
                    }
                )
            elif kind == "subscribe-answer" and subscriber is not None:
                await subscriber.setRemoteDescription(
                    RTCSessionDescription(sdp=data["sdp"], type="answer")
                )
            elif kind == "leave":
                break
        await ws.close()
        return ws

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, EchoServer]]:
    state = EchoServer()
    app = web.Application()
    app.router.add_get("/api/dev-token", state.dev_token)
    app.router.add_get("/ws", state.ws)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), state
    finally:
        await state.close()
        await server.close()


def _echo_flowing(p: SyntheticParticipant) -> bool:
    media = p.received.get("echo")
    return (
        media is not None
        and len(media.counters) >= 10
        and media.counters[-1] > media.counters[0]
        and media.audio_frames >= 25
    )


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_participant_against_echo_server(echo: tuple[str, EchoServer], codec: str) -> None:
    url, state = echo
    bot = SyntheticParticipant(url, name="bot", video_codec=codec, tone_hz=650.0)
    try:
        joined = await bot.join()
        assert joined["type"] == "joined" and bot.identity == "bot-1"
        assert state.received[0] == {"type": "join", "version": 1, "token": "not-a-jwt"}

        # The published offer carries only the requested video codec (plus RTX) and
        # loopback candidates, with no trickling needed.
        assert bot.publish_pc is not None
        offer_sdp = next(m["sdp"] for m in state.received if m["type"] == "publish")
        video_section = offer_sdp[offer_sdp.index("m=video") :]
        assert f"{codec}/90000" in video_section
        assert ("VP8/90000" in video_section) == (codec == "VP8")
        assert "a=candidate:" in offer_sdp and "127.0.0.1" in offer_sdp

        offer = await bot.next_message("subscribe-offer")
        assert {t["kind"] for t in offer["tracks"]} == {"audio", "video"}
        await bot.wait_for(lambda: _echo_flowing(bot), timeout=60)
        media = bot.received["echo"]
        assert (media.name, media.role) == ("Echo", "host")
        assert media.last_counter == media.counters[-1]
        assert media.video_size == (320, 240)
        assert media.audio_rms > 0.05
        assert media.audio_freq_hz is not None and abs(media.audio_freq_hz - 650.0) <= 50
        assert media.latencies_ms and all(-1000 < lat < 10_000 for lat in media.latencies_ms)
        assert any(m["type"] == "subscribe-answer" for m in state.received)

        await bot.send_raw("{not json")
        error = await bot.next_message("error", timeout=10)
        assert error["code"] == "bad-json" and bot.errors == [error]
    finally:
        await bot.leave()

    assert not bot.connected
    assert state.received[-1] == {"type": "leave"}
    for task in bot._consumers.values():
        assert task.done()


async def test_wait_for_times_out_with_context(echo: tuple[str, EchoServer]) -> None:
    url, _ = echo
    bot = SyntheticParticipant(url, publish_audio=False, publish_video=False)
    try:
        await bot.join()
        assert bot.publish_pc is None  # nothing to publish, so no publish message
        with pytest.raises(TimeoutError, match="condition not met"):
            await bot.wait_for(lambda: False, timeout=0.3)
        with pytest.raises(TimeoutError):
            await bot.next_message("subscribe-offer", timeout=0.3)
    finally:
        await bot.leave()


async def test_decode_false_counts_frames_without_inspecting(echo: tuple[str, EchoServer]) -> None:
    url, _ = echo
    bot = SyntheticParticipant(url, decode=False)
    try:
        await bot.join()

        def flowing() -> bool:
            media = bot.received.get("echo")
            return media is not None and media.video_frames >= 10 and media.audio_frames >= 25

        await bot.wait_for(flowing, timeout=60)
        media = bot.received["echo"]
        assert media.counters == [] and media.last_counter is None
        assert media.audio_rms == 0.0 and media.audio_freq_hz is None
    finally:
        await bot.leave()


async def test_refused_join_raises_and_cleans_up(echo: tuple[str, EchoServer]) -> None:
    url, _ = echo
    bot = SyntheticParticipant(url + "/nowhere")  # dev-token 404s
    with pytest.raises(SyntheticClientError, match="dev-token failed"):
        await bot.join()
    assert not bot.connected
