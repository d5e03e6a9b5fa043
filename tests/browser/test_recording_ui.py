"""The recording indicator and the host's record button in a real browser (phone-sized host)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import av
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

pytest.importorskip("playwright.async_api")

JOIN_TIMEOUT_MS = 60_000
UI_TIMEOUT_MS = 20_000


async def _open_joined(browser: Any, url: str, **context_args: Any) -> Any:
    context = await browser.new_context(**context_args)
    page = await context.new_page()
    await page.goto(url)
    await page.wait_for_function(
        "() => window.consilium && window.consilium.state !== 'connecting'",
        timeout=JOIN_TIMEOUT_MS,
    )
    assert await page.evaluate("() => window.consilium.state") == "joined"
    return page


async def _badge(page: Any, visible: bool) -> None:
    await page.wait_for_selector(
        "#rec-badge", state="visible" if visible else "hidden", timeout=UI_TIMEOUT_MS
    )


async def _all_layers_arriving(stats_url: str, timeout_s: float = 40) -> None:
    def layers() -> list[int]:
        with urllib.request.urlopen(stats_url, timeout=5) as response:
            stats = json.load(response)
        video = [p for p in stats["producers"] if p["kind"] == "video"]
        return list(video[0]["layerBitrates"]) if video else []

    bitrates: list[int] = []
    for _ in range(int(timeout_s * 2)):
        bitrates = await asyncio.to_thread(layers)
        if len(bitrates) >= 2 and all(bitrates):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"not every simulcast layer arrived: {bitrates}")


async def test_host_records_and_everyone_sees_the_badge(
    browser: Any, server_factory: Any, tmp_path: Path
) -> None:
    server = await server_factory(
        "--recordings-dir", str(tmp_path / "rec"), "--data-dir", str(tmp_path / "data")
    )
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    host = await _open_joined(
        browser, f"{server.base_url}/?room=recui&name=Dr%20Host&role=host", **phone
    )
    other = await _open_joined(browser, f"{server.base_url}/?room=recui&name=Nurse&role=bedside")
    assert await host.is_visible("#btn-rec")
    assert not await other.is_visible("#btn-rec")  # not the host: no button
    assert not await host.is_visible("#rec-badge")
    # Start once every simulcast layer of the bedside camera arrives, so the recorder (which
    # takes the top arriving layer) has the full size to take.
    identity = await other.evaluate("() => window.consilium.self.id")
    await _all_layers_arriving(f"{server.base_url}/api/rooms/recui/participants/{identity}/stats")

    await host.click("#btn-rec")
    await _badge(host, True)
    await _badge(other, True)
    assert "REC" in await other.inner_text("#rec-badge")
    assert await host.get_attribute("#btn-rec", "aria-pressed") == "true"
    # The elapsed time ticks (from the server's start time).
    await other.wait_for_function(
        "() => document.getElementById('rec-time').textContent !== '0:00'", timeout=UI_TIMEOUT_MS
    )
    # Phone: every control visible, nothing overflows sideways.
    for button in ("#btn-mic", "#btn-cam", "#btn-rec", "#btn-leave"):
        assert await host.is_visible(button), button
    width = await host.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], width

    # Let the recording run long enough for keyframes and a few seconds of media.
    published = await other.evaluate("() => window.consilium.publishedLayers")
    camera_width = await other.evaluate("() => document.getElementById('self-video').videoWidth")
    await asyncio.sleep(5)
    await host.click("#btn-rec")
    await _badge(host, False)
    await _badge(other, False)
    assert (tmp_path / "data" / "consilium.db").exists()

    # The bedside page publishes its camera as simulcast; the recorder keeps the top layer (the
    # camera's full size) and writes it without re-encoding: a WebM whose VP8 decodes.
    assert len(published) >= 2, published
    [recording] = list((tmp_path / "rec").glob(f"recui/*/{identity}.webm"))
    with av.open(str(recording)) as container:
        [video] = container.streams.video
        assert video.codec_context.name == "vp8"
        frames = [f for f in container.decode(video)]
    assert len(frames) >= 30, len(frames)  # ~5 s at up to 30 fps, from a keyframe on
    assert max(f.width for f in frames) == camera_width, {(f.width, f.height) for f in frames}
