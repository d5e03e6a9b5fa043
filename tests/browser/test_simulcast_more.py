"""More simulcast end to end with real Chromium: dynacast and hidden tiles, and H264 simulcast.

Both tests run one publisher (a 1280x720 y4m camera, so it publishes three layers q/h/f) and
one observer page on the plain loopback, without any shaping.

* Dynacast: when the only subscriber's tile shrinks to a thumbnail, the subscriber drops to the
  lowest layer and, after the dynacast quiet period, the publisher is told to stop encoding the
  two upper layers (and really stops: its outbound-rtp counters for them stand still). A hidden
  tile pauses the video ('not-wanted'); a big tile again brings every layer and the top one back.
* H264: the same flow with the publisher preferring H264 (an Apple user agent, as the web client
  picks H264 first on Apple devices): the producer is H264, three layers arrive, the subscriber
  reaches the top layer and every sampled frame decodes intact.

Where a server-side check fails, the tests note it and go on, and fail at the end with every
note: one broken step should not hide whether the rest of the flow works.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

# The small helpers of the first simulcast test (camera file, stats and frame grabbing). Both
# files live in tests/browser, which has no __init__.py: pytest's default (prepend) import mode
# puts that directory on sys.path, so the sibling imports as a top-level module.
from test_simulcast import (
    STATS_JS,
    Y4M_FRAMES,
    Watch,
    sample,
    wait_layer,
    write_noisy_y4m,
)

from media.synthetic import draw_counter_frame

pytestmark = [pytest.mark.webrtc, pytest.mark.browser]

TOP_LAYER = 2
SUBSCRIBER_VIEWPORT = {"width": 1600, "height": 1000}
# Generous: starting two browsers, the first keyframes and the estimate's ramp-up.
TOP_LAYER_TIMEOUT_S = 60
# sfu.dynacast.LAYER_OFF_DELAY_MS is 5 s; a layer is switched off within a tick after that.
DYNACAST_TIMEOUT_S = 25
STEP_TIMEOUT_S = 30
# Layers stop counting 1 s after their last packet (the bitrate window is 2 s).
LAYER_GONE_TIMEOUT_S = 6
# The same iPhone as tests/browser/test_web_client.py: isApplePlatform() is true for it.
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)

# A test-only hook, installed before app.js runs: remember every RTCPeerConnection the page
# makes so that the test can read the publisher's RTCRtpSender (app.js keeps it private).
RECORD_PCS_JS = """(() => {
  const Native = window.RTCPeerConnection;
  const pcs = [];
  window.__testPcs = pcs;
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); pcs.push(this); }
  };
})();"""

# The publisher's video sender: each encoding's rid and active flag, and per rid the
# outbound-rtp counters (which stand still once an encoding is switched off).
SENDER_JS = """async () => {
  for (const pc of window.__testPcs || []) {
    if (pc.connectionState === 'closed') continue;
    for (const s of pc.getSenders()) {
      if (!s.track || s.track.kind !== 'video') continue;
      const p = s.getParameters();
      const report = await s.getStats();
      const outbound = {};
      let codec = null;
      let uplinkBps = null;
      report.forEach((r) => {
        if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate) {
          uplinkBps = r.availableOutgoingBitrate;
        }
        if (r.type !== 'outbound-rtp' || r.kind !== 'video') return;
        const c = r.codecId ? report.get(r.codecId) : null;
        if (c) codec = c.mimeType;
        outbound[r.rid || ''] = { framesEncoded: r.framesEncoded || 0,
          bytesSent: r.bytesSent || 0, packetsSent: r.packetsSent || 0,
          keyFrames: r.keyFramesEncoded || 0, pli: r.pliCount || 0, fps: r.framesPerSecond || 0,
          frameHeight: r.frameHeight || 0,
          encoder: r.encoderImplementation || null,
          limitation: r.qualityLimitationReason || null };
      });
      return { encodings: (p.encodings || []).map((e) => ({ rid: e.rid || null,
                 active: e.active !== false })),
               codec, uplinkBps, outbound };
    }
  }
  return null;
}"""

TILE_JS = '(pid) => document.querySelector(`#tiles .tile[data-participant-id="${pid}"]`)'
RESIZE_TILE_JS = f"""([pid, w, h]) => {{
  const tile = ({TILE_JS})(pid);
  tile.style.flex = 'none';
  tile.style.width = w + 'px';
  tile.style.height = h + 'px';
}}"""
HIDE_TILE_JS = f"(pid) => {{ ({TILE_JS})(pid).style.display = 'none'; }}"
RESTORE_TILE_JS = f"(pid) => {{ ({TILE_JS})(pid).removeAttribute('style'); }}"
# What the page last told the server about the tile: [width, height, visible].
REPORTED_JS = """(pid) => {
  const t = (window.consilium.lastViewport || []).find((x) => x.participantId === pid);
  return t ? [t.width, t.height, t.visible] : null;
}"""


def write_moving_y4m(path: Path, width: int = 1280, height: int = 720, fps: int = 30) -> None:
    """A camera H264 can encode at the layers' bitrates: the barcode frame over a smooth
    pattern that moves every frame (no per-pixel noise, unlike write_noisy_y4m)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode("ascii"))
        for index in range(Y4M_FRAMES):
            img = draw_counter_frame("simulcast", width, height, index, index * 1000 // fps)
            phase = 2 * np.pi * index / Y4M_FRAMES
            wave = 128 + 90 * np.sin(xs / 37.0 + phase) * np.cos(ys / 23.0 - 2 * phase)
            band = slice(height // 2, height)
            img[band] = np.clip(wave[band], 0, 255).astype(np.uint8)[..., None]
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


async def video_producer(server: Any, room: str, participant: str) -> dict[str, Any]:
    """The REST stats of `participant`'s published video (dev mode: no credentials needed)."""
    url = f"{server.base_url}/api/rooms/{room}/participants/{participant}/stats"
    stats = await asyncio.get_running_loop().run_in_executor(None, _get_json, url)
    videos = [p for p in stats["producers"] if p["kind"] == "video"]
    assert len(videos) == 1, stats
    return dict(videos[0])


async def wait_until(
    probe: Callable[[], Awaitable[Any]],
    predicate: Callable[[Any], bool],
    timeout_s: float,
    what: str,
) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last is not None and predicate(last):
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout_s:.0f} s; last seen {last}")


class Call:
    """A publisher browser with the y4m camera and an observer browser, in one room."""

    def __init__(self, pw: Any, chromium_path: str, chromium_args: list[str], home: Path) -> None:
        self._pw = pw
        self._path = chromium_path
        self._args = chromium_args
        self._env = {**os.environ, "HOME": str(home)}
        self._browsers: list[Any] = []

    async def launch(self, *extra: str) -> Any:
        browser = await self._pw.chromium.launch(
            executable_path=self._path,
            headless=True,
            args=[*self._args, *extra],
            env=self._env,
            timeout=60_000,
        )
        self._browsers.append(browser)
        return browser

    async def close(self) -> None:
        for browser in self._browsers:
            await browser.close()


async def open_page(browser: Any, url: str, **context_args: Any) -> Any:
    context = await browser.new_context(**context_args)
    await context.add_init_script(RECORD_PCS_JS)
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.test_console = console
    await page.goto(url)
    await page.wait_for_function(
        "() => window.consilium && window.consilium.state !== 'connecting'", timeout=60_000
    )
    state = await page.evaluate("() => [window.consilium.state, window.consilium.error]")
    assert state[0] == "joined", f"page did not join: {state}; console {console}"
    return page


def page_errors(page: Any) -> list[str]:
    return [m for m in page.test_console if m.startswith("pageerror")]


class Sampler:
    """Samples the subscriber page every 0.3 s in the background (frames, layers, decoding)."""

    def __init__(self, page: Any, name: str) -> None:
        self.page = page
        self.watch = Watch(name)
        self._t0 = time.monotonic()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            await sample(self.page, self.watch, self._t0)
            await asyncio.sleep(0.3)

    async def __aenter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def test_dynacast_and_hidden_tiles(
    chromium_path: str,
    chromium_args: list[str],
    server_factory: Callable[..., Awaitable[Any]],
    tmp_path: Path,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    room = "dynacast"
    y4m = tmp_path / "camera.y4m"
    write_noisy_y4m(y4m)
    server = await server_factory()
    started = time.monotonic()
    marks: dict[str, float] = {}
    problems: list[str] = []

    def mark(name: str) -> None:
        marks[name] = time.monotonic() - started

    async with playwright_api.async_playwright() as pw:
        call = Call(pw, chromium_path, chromium_args, tmp_path)
        try:
            pub_browser = await call.launch(f"--use-file-for-fake-video-capture={y4m}")
            sub_browser = await call.launch()
            publisher = await open_page(
                pub_browser, f"{server.base_url}/?room={room}&name=Bedside&role=bedside"
            )
            await publisher.wait_for_function("() => window.consilium.publishedLayers.length > 0")
            assert await publisher.evaluate("window.consilium.publishedLayers") == ["q", "h", "f"]
            pub_id = await publisher.evaluate("window.consilium.self.id")
            subscriber = await open_page(
                sub_browser,
                f"{server.base_url}/?room={room}&name=Watcher&role=observer&debug=1",
                viewport=SUBSCRIBER_VIEWPORT,
            )

            async def sender() -> Any:
                return await publisher.evaluate(SENDER_JS)

            async def producer() -> dict[str, Any]:
                return await video_producer(server, room, pub_id)

            async def stats() -> Any:
                return await subscriber.evaluate(STATS_JS)

            async def active_layers() -> Any:
                return await publisher.evaluate("window.consilium.activeLayers")

            async with Sampler(subscriber, "dynacast") as sampler:
                # 1. A big tile: the subscriber wants and gets the top layer; all layers on.
                big = await wait_layer(subscriber, lambda s: s["current"] == TOP_LAYER, 60)
                mark("top layer")
                assert big["preferred"] == TOP_LAYER, big
                prod = await producer()
                assert prod["simulcast"] == ["q", "h", "f"], prod
                assert prod["activeLayers"] == [True, True, True], prod
                assert all(bps > 0 for bps in prod["layerBitrates"]), prod
                # The server never had to change the publisher's layers so far.
                assert await active_layers() is None

                # 2. A thumbnail (200x112 px, below 0.9 x 180): layer 0 is enough.
                await subscriber.evaluate(RESIZE_TILE_JS, [pub_id, 200, 112])
                reported = await wait_until(
                    lambda: subscriber.evaluate(REPORTED_JS, pub_id),
                    lambda r: r[1] <= 112 and r[2],
                    5,
                    "the page reports the thumbnail's size",
                )
                small = await wait_layer(
                    subscriber,
                    lambda s: s["preferred"] == 0 and s["current"] == 0,
                    STEP_TIMEOUT_S,
                )
                mark("layer 0")
                # The decoded picture is the quarter-size encoding.
                await wait_until(
                    lambda: subscriber.evaluate("() => window.consilium.inboundVideoStats()"),
                    lambda ins: any(s["frameHeight"] == 180 for s in ins),
                    STEP_TIMEOUT_S,
                    "the subscriber decodes 180p frames",
                )
                # After the quiet period dynacast switches the unwatched layers off...
                layers = await wait_until(
                    active_layers, lambda a: a == ["q"], DYNACAST_TIMEOUT_S, "activeLayers ['q']"
                )
                mark("dynacast off")
                snd = await sender()
                assert snd is not None, "no video sender found on the publisher page"
                assert {e["rid"]: e["active"] for e in snd["encodings"]} == {
                    "q": True,
                    "h": False,
                    "f": False,
                }, snd
                # ... the publisher really stops encoding them ...
                await asyncio.sleep(2)
                later = await sender()
                for rid in ("h", "f"):
                    assert (
                        later["outbound"][rid]["framesEncoded"]
                        == snd["outbound"][rid]["framesEncoded"]
                    ), f"layer {rid} still encoded: {snd} -> {later}"
                assert (
                    later["outbound"]["q"]["framesEncoded"] > snd["outbound"]["q"]["framesEncoded"]
                ), f"layer q stopped too: {snd} -> {later}"
                # ... and the server sees only layer 0 arrive: a layer not heard from for 1 s
                # is inactive (bitrate 0) in sfu.layers.LayerActivityTracker. Checked softly
                # (reported at the end) so that the rest of the flow still runs when it fails.
                try:
                    prod = await wait_until(
                        producer,
                        lambda p: p["layerBitrates"][1] == 0 and p["layerBitrates"][2] == 0,
                        LAYER_GONE_TIMEOUT_S,
                        "the server still counts layers 1 and 2 after the publisher stopped them",
                    )
                except AssertionError as exc:
                    problems.append(f"{exc}; publisher sender {later}")
                    prod = await producer()
                assert prod["activeLayers"] == [True, False, False], prod
                assert prod["layerBitrates"][0] > 0, prod
                mark("server sees layer 0 only")

                # 3. A hidden tile: the video is not wanted and is paused.
                await subscriber.evaluate(HIDE_TILE_JS, pub_id)
                hidden = await wait_layer(
                    subscriber,
                    lambda s: s["pauseReason"] == "not-wanted" and s["current"] is None,
                    STEP_TIMEOUT_S,
                )
                mark("paused")
                assert hidden["preferred"] is None, hidden
                assert await subscriber.evaluate(REPORTED_JS, pub_id) == [0, 0, False]
                # The lowest layer is always kept, for whoever comes next.
                assert await active_layers() == ["q"]
                paused_at = max(s["framesDecoded"] for s in await inbound(subscriber))
                await asyncio.sleep(2)
                assert max(s["framesDecoded"] for s in await inbound(subscriber)) <= paused_at + 2

                # 4. Big again: every layer back at once, and the top one for the subscriber.
                await subscriber.evaluate(RESTORE_TILE_JS, pub_id)
                await wait_until(
                    active_layers,
                    lambda a: a == ["q", "h", "f"],
                    STEP_TIMEOUT_S,
                    "activeLayers back to all three",
                )
                mark("dynacast on")
                snd = await sender()
                assert all(e["active"] for e in snd["encodings"]), snd
                back = await wait_layer(
                    subscriber, lambda s: s["current"] == TOP_LAYER, TOP_LAYER_TIMEOUT_S
                )
                mark("top layer again")
                assert back["pauseReason"] is None and back["preferred"] == TOP_LAYER, back
                prod = await wait_until(
                    producer,
                    lambda p: all(bps > 0 for bps in p["layerBitrates"]),
                    STEP_TIMEOUT_S,
                    "all three layers arrive again",
                )
                assert prod["activeLayers"] == [True, True, True], prod
                await wait_until(
                    lambda: subscriber.evaluate("() => window.consilium.inboundVideoStats()"),
                    lambda ins: any(s["frameHeight"] == 720 for s in ins),
                    STEP_TIMEOUT_S,
                    "the subscriber decodes 720p frames again",
                )
                await asyncio.sleep(2)
                await sampler.stop()
            watch = sampler.watch
            print(
                f"\ndynacast: {', '.join(f'{k} at {v:.1f} s' for k, v in marks.items())}; "
                f"reported thumbnail {reported}, small stats {small}, layers {layers}; "
                f"{watch.frames_ok} frames ok, {watch.frames_bad} bad, sizes {sorted(watch.sizes)}"
            )
            assert watch.frames_bad == 0, "the subscriber showed a frame with a broken barcode"
            assert watch.frames_ok > 20, watch
            assert {(320, 180), (1280, 720)} <= watch.sizes, watch.sizes
            assert watch.decoded[-1] > watch.decoded[0]
            for page in (publisher, subscriber):
                assert not page_errors(page), page.test_console
            assert not problems, "\n".join(problems)
        finally:
            await call.close()


async def inbound(page: Any) -> list[dict[str, Any]]:
    stats = await page.evaluate("() => window.consilium.inboundVideoStats()")
    assert stats, "the subscriber has no inbound video"
    return list(stats)


async def test_h264_simulcast(
    chromium_path: str,
    chromium_args: list[str],
    server_factory: Callable[..., Awaitable[Any]],
    tmp_path: Path,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    room = "h264simulcast"
    y4m = tmp_path / "camera.y4m"
    # Not the noisy camera: on per-pixel noise OpenH264 runs at its highest QP, and Chromium's
    # quality scaler (reported as qualityLimitationReason 'bandwidth') then scales the input
    # down step by step, 720p -> 540p -> 360p, where the top encoding is dropped (q and h
    # end at 90p and 180p). That is Chromium adapting to incompressible content, not a
    # simulcast failure; a moving but compressible picture keeps all three layers at full size.
    write_moving_y4m(y4m)
    server = await server_factory()
    started = time.monotonic()
    problems: list[str] = []

    async with playwright_api.async_playwright() as pw:
        call = Call(pw, chromium_path, chromium_args, tmp_path)
        try:
            pub_browser = await call.launch(f"--use-file-for-fake-video-capture={y4m}")
            sub_browser = await call.launch()
            publisher = await open_page(
                pub_browser,
                f"{server.base_url}/?room={room}&name=Phone&role=bedside",
                user_agent=IPHONE_UA,
            )
            has_h264 = await publisher.evaluate(
                "() => RTCRtpSender.getCapabilities('video').codecs"
                ".some((c) => c.mimeType.toLowerCase() === 'video/h264')"
            )
            if not has_h264:
                pytest.skip("this chromium build has no H264 encoder")
            await publisher.wait_for_function("() => window.consilium.publishedLayers.length > 0")
            assert await publisher.evaluate("window.consilium.publishedLayers") == ["q", "h", "f"]
            pub_id = await publisher.evaluate("window.consilium.self.id")
            subscriber = await open_page(
                sub_browser,
                f"{server.base_url}/?room={room}&name=Watcher&role=observer",
                viewport=SUBSCRIBER_VIEWPORT,
            )

            async def producer() -> dict[str, Any]:
                return await video_producer(server, room, pub_id)

            async def sender() -> Any:
                return await publisher.evaluate(SENDER_JS)

            async with Sampler(subscriber, "h264") as sampler:
                prod = await wait_until(
                    producer,
                    lambda p: all(bps > 0 for bps in p["layerBitrates"]),
                    TOP_LAYER_TIMEOUT_S,
                    "all three H264 layers arrive at the server",
                )
                layers_at = time.monotonic() - started
                assert prod["codec"] == "h264", prod
                assert prod["simulcast"] == ["q", "h", "f"], prod
                # Chromium really encodes three H264 streams at the nominal sizes.
                snd = await wait_until(
                    sender,
                    lambda s: (
                        {r: o["frameHeight"] for r, o in s["outbound"].items()}
                        == {"q": 180, "h": 360, "f": 720}
                    ),
                    STEP_TIMEOUT_S,
                    "the publisher encodes q/h/f at 180/360/720 lines",
                )
                assert str(snd["codec"]).lower() == "video/h264", snd
                # The subscriber's big tile wants the top layer; checked softly (reported at
                # the end) so that the frame checks below run in any case.
                top_at = None
                try:
                    top = await wait_layer(
                        subscriber, lambda s: s["current"] == TOP_LAYER, TOP_LAYER_TIMEOUT_S
                    )
                    top_at = time.monotonic() - started
                    assert top["preferred"] == TOP_LAYER, top
                    await wait_until(
                        lambda: inbound(subscriber),
                        lambda ins: any(s["frameHeight"] == 720 for s in ins),
                        STEP_TIMEOUT_S,
                        "the subscriber decodes 720p frames",
                    )
                except AssertionError as exc:
                    problems.append(
                        f"{exc}; server producer {await producer()}; publisher {await sender()}"
                    )
                await asyncio.sleep(5)
            snd = await sender()
            prod = await producer()
            received = await inbound(subscriber)
            watch = sampler.watch
            print(
                f"\nh264 simulcast: three layers at the server {layers_at:.1f} s, top layer at "
                f"the subscriber {'never' if top_at is None else f'{top_at:.1f} s'}; "
                f"server layer bitrates {prod['layerBitrates']}; encoders "
                f"{ {rid: o['encoder'] for rid, o in snd['outbound'].items()} }; "
                f"{watch.frames_ok} frames ok, {watch.frames_bad} bad, sizes {sorted(watch.sizes)}"
            )
            # The SFU forwards without transcoding: the subscriber decodes what was sent.
            assert received and all(str(s["codec"]).lower() == "video/h264" for s in received), (
                received
            )
            assert watch.frames_bad == 0, "the subscriber showed a frame with a broken barcode"
            assert watch.frames_ok > 10, watch
            assert watch.decoded[-1] > watch.decoded[0]
            for page in (publisher, subscriber):
                assert not page_errors(page), page.test_console
            assert not problems, "\n".join(problems)
            assert (1280, 720) in watch.sizes, watch.sizes
        finally:
            await call.close()
