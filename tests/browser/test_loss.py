"""Real Chromium through the impairment tool: 5 % random loss on every leg.

The publisher and the subscriber both sit in an impaired namespace (tools/impair.py), so the
publisher's video crosses a lossy uplink to the SFU and a lossy downlink from it. Frames must
keep arriving, every sampled frame must carry an intact barcode, and both repair paths must
have worked: the SFU recovered publisher-leg loss with its own NACKs, and it answered the
subscriber's NACKs with retransmissions.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tools.browser_rig import frame_intact, write_noisy_y4m
from tools.impair import ImpairedNamespace, get_profile

pytestmark = [pytest.mark.webrtc, pytest.mark.browser]

ROOM = "lossy"
WATCH_S = 20.0


@pytest.fixture
async def impaired() -> AsyncIterator[ImpairedNamespace]:
    reason = ImpairedNamespace.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"impaired namespace unavailable in CI: {reason}")
        pytest.skip(reason)
    async with ImpairedNamespace(get_profile("lossy-5"), seed=5, label="loss") as net:
        yield net


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


async def test_video_survives_five_percent_loss_on_both_legs(
    chromium_path: str,
    chromium_args: list[str],
    server_factory: Callable[..., Awaitable[Any]],
    impaired: ImpairedNamespace,
    tmp_path: Path,
) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    y4m = tmp_path / "camera.y4m"
    write_noisy_y4m(y4m, 640, 360)
    server = await server_factory("--host", "0.0.0.0", "--ice-host", impaired.host_addr)
    wrapper = impaired.wrapper_script(chromium_path, tmp_path)
    origin = f"http://{impaired.host_addr}:{server.port}"
    # One layer keeps the picture the same all along: any broken frame is loss, not a switch.
    base = f"{origin}/?room={ROOM}&simulcast=0"

    async with playwright_api.async_playwright() as pw:
        env = {**os.environ, "HOME": str(tmp_path)}
        browser = await pw.chromium.launch(
            executable_path=str(wrapper),
            headless=True,
            args=[
                *chromium_args,
                f"--use-file-for-fake-video-capture={y4m}",
                # The camera needs a secure origin; the SFU is plain HTTP on the wire's address.
                f"--unsafely-treat-insecure-origin-as-secure={origin}",
            ],
            env=env,
            timeout=60_000,
        )
        try:
            publisher = await browser.new_page()
            await publisher.goto(f"{base}&name=Bedside")
            await publisher.wait_for_function(
                "() => window.consilium.state === 'joined'", timeout=60_000
            )
            viewer_context = await browser.new_context()
            viewer = await viewer_context.new_page()
            await viewer.goto(f"{base}&name=Attending&role=observer")
            await viewer.wait_for_function(
                "() => window.consilium.state === 'joined'", timeout=60_000
            )
            await viewer.wait_for_function(
                "() => document.querySelector('#tiles .tile video')?.videoWidth > 0", timeout=60_000
            )

            intact = broken = 0
            decoded: list[int] = []
            deadline = time.monotonic() + WATCH_S
            while time.monotonic() < deadline:
                frame = await frame_intact(viewer)
                if frame is not None:
                    if frame[0]:
                        intact += 1
                    else:
                        broken += 1
                inbound = await viewer.evaluate("() => window.consilium.inboundVideoStats()")
                if inbound:
                    decoded.append(inbound[0]["framesDecoded"])
                await asyncio.sleep(0.5)

            publisher_id = await publisher.evaluate("window.consilium.self.id")
            viewer_id = await viewer.evaluate("window.consilium.self.id")
            api = f"http://127.0.0.1:{server.port}/api/rooms/{ROOM}/participants"
            published = _get_json(f"{api}/{publisher_id}/stats")
            received = _get_json(f"{api}/{viewer_id}/stats")
        finally:
            await browser.close()

    counters = impaired.stats()
    assert counters["uplink"]["lost_random"] > 0 and counters["downlink"]["lost_random"] > 0
    # Frames keep arriving, and none that the page showed was corrupt.
    assert intact >= WATCH_S, (intact, broken)
    assert broken == 0, (intact, broken)
    assert len(decoded) > 10 and decoded[-1] > decoded[len(decoded) // 2] > decoded[0]
    # Publisher leg: the SFU noticed the loss and got most of it back with its own NACKs.
    [video] = [p for p in published["producers"] if p["kind"] == "video"]
    repair = video["upstreamRepair"]
    assert repair["missingDetected"] > 0 and repair["recovered"] > 0, repair
    # Subscriber leg: the viewer's NACKs were answered from the SFU's cache.
    [consumed] = [c for c in received["consumers"] if c["kind"] == "video"]
    assert consumed["retransmitted"] > 0, consumed
