"""The web client in a real browser (Debian's chromium through playwright) against a real server.

Every wait has a generous timeout (2-core machine, software video codecs) and nothing asserts on
elapsed time: "advancing" means "changed before the timeout".
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

pytest.importorskip("playwright.async_api")

JOIN_TIMEOUT_MS = 60_000
MEDIA_TIMEOUT_MS = 90_000
ROOM = "browsertest"
# Set CONSILIUM_SCREENSHOTS=/some/dir to keep screenshots for a human look.
SHOTS = os.environ.get("CONSILIUM_SCREENSHOTS")


async def _screenshot(page: Any, name: str) -> None:
    if SHOTS:
        # playwright creates missing parent directories itself
        await page.screenshot(path=str(Path(SHOTS) / f"{name}.png"))


async def _open(browser: Any, url: str, **context_args: Any) -> Any:
    context = await browser.new_context(**context_args)
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.consilium_console = console  # kept for failure messages
    await page.goto(url)
    return page


async def _wait_joined(page: Any) -> str:
    # Stop waiting as soon as the page has settled either way, so a refusal fails fast.
    await page.wait_for_function(
        "() => window.consilium && window.consilium.state !== 'connecting'",
        timeout=JOIN_TIMEOUT_MS,
    )
    state = await page.evaluate("() => [window.consilium.state, window.consilium.error]")
    if state[0] != "joined":
        pytest.fail(f"page did not join: {state}; console: {page.consilium_console}")
    return str(await page.evaluate("() => window.consilium.self.id"))


async def _wait_remote_video(page: Any, other_id: str) -> None:
    """The other participant's tile shows decoded video that keeps playing."""
    tile = f'.tile[data-participant-id="{other_id}"]'
    await page.wait_for_selector(tile, state="attached", timeout=MEDIA_TIMEOUT_MS)
    await page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel + ' video');"
        " return !!v && v.videoWidth > 0 && v.currentTime > 0; }",
        arg=tile,
        timeout=MEDIA_TIMEOUT_MS,
    )
    first = await page.evaluate(f"() => document.querySelector('{tile} video').currentTime")
    await page.wait_for_function(
        "([sel, t]) => document.querySelector(sel + ' video').currentTime > t",
        arg=[tile, first],
        timeout=MEDIA_TIMEOUT_MS,
    )


async def _frames_decoded(page: Any, other_id: str) -> int:
    stats = await page.evaluate("() => window.consilium.inboundVideoStats()")
    mine = [s for s in stats if s["participantId"] == other_id]
    return max((int(s["framesDecoded"]) for s in mine), default=-1)


async def _wait_frames_advance(page: Any, other_id: str) -> None:
    first = await _frames_decoded(page, other_id)
    assert first >= 0, "inboundVideoStats() has no video entry for the other participant"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MEDIA_TIMEOUT_MS / 1000
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        if await _frames_decoded(page, other_id) > first:
            return
    pytest.fail(f"framesDecoded for {other_id} stayed at {first}")


async def test_two_participants_see_each_other(browser: Any, server: Any) -> None:
    alice = await _open(browser, f"{server.base_url}/?room={ROOM}&name=Alice")
    bob = await _open(browser, f"{server.base_url}/?room={ROOM}&name=Bob&role=specialist")
    alice_id = await _wait_joined(alice)
    bob_id = await _wait_joined(bob)
    assert alice_id != bob_id

    for page, other_id, other_name in ((alice, bob_id, "Bob"), (bob, alice_id, "Alice")):
        await _wait_remote_video(page, other_id)
        await _wait_frames_advance(page, other_id)
        label = await page.inner_text(f'.tile[data-participant-id="{other_id}"] .label')
        assert other_name in label
        assert await page.evaluate("() => window.consilium.error") is None
        stats = await page.evaluate("() => window.consilium.inboundVideoStats()")
        assert any(s["frameWidth"] > 0 and s["frameHeight"] > 0 for s in stats)
    assert "specialist" in (await alice.inner_text(f'.tile[data-participant-id="{bob_id}"] .badge'
                                                   )).lower()
    await _screenshot(alice, "desktop-two")

    # Alice mutes her mic and turns her camera off: Bob's tile for her shows both, with initials.
    alice_tile_at_bob = f'.tile[data-participant-id="{alice_id}"]'
    await alice.click("#btn-mic")
    await alice.click("#btn-cam")
    assert await alice.get_attribute("#btn-mic", "aria-pressed") == "true"
    assert await alice.get_attribute("#btn-cam", "aria-pressed") == "true"
    await bob.wait_for_selector(f"{alice_tile_at_bob}.audio-off.video-off", timeout=JOIN_TIMEOUT_MS)
    assert (await bob.inner_text(f"{alice_tile_at_bob} .initials")).strip() == "A"
    await _screenshot(bob, "desktop-muted")
    await alice.click("#btn-cam")
    await bob.wait_for_selector(f"{alice_tile_at_bob}:not(.video-off)", timeout=JOIN_TIMEOUT_MS)

    # Alice leaves: she sees the left screen, Bob loses her tile.
    await alice.click("#btn-leave")
    await alice.wait_for_function("() => window.consilium.state === 'left'", timeout=10_000)
    assert "You left the consultation" in await alice.inner_text("#left-view")
    await bob.wait_for_selector(alice_tile_at_bob, state="detached", timeout=JOIN_TIMEOUT_MS)
    assert await bob.evaluate("() => window.consilium.state") == "joined"


async def test_late_joiner_sees_everyone_already_there(browser: Any, server: Any) -> None:
    # The first subscribe-offer of a late joiner carries several video m-lines at once; each
    # must carry media, not only the first.
    first = await _open(browser, f"{server.base_url}/?room=late&name=Ana")
    second = await _open(browser, f"{server.base_url}/?room=late&name=Ben&role=bedside")
    first_id = await _wait_joined(first)
    second_id = await _wait_joined(second)
    await _wait_remote_video(first, second_id)
    await _wait_remote_video(second, first_id)

    late = await _open(browser, f"{server.base_url}/?room=late&name=Cy&role=specialist")
    late_id = await _wait_joined(late)
    for other_id in (first_id, second_id):
        await _wait_remote_video(late, other_id)
        await _wait_frames_advance(late, other_id)
    for page in (first, second):
        await _wait_remote_video(page, late_id)
    assert sorted(await late.evaluate("() => [...window.consilium.participants.keys()]")) == sorted(
        [first_id, second_id]
    )


async def test_phone_viewport_layout(browser: Any, server: Any) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    desk = await _open(browser, f"{server.base_url}/?room=phonetest&name=Dr%20Grey")
    mobile = await _open(browser, f"{server.base_url}/?room=phonetest&name=Bedside%20Nurse"
                                  "&role=bedside", **phone)
    desk_id = await _wait_joined(desk)
    await _wait_joined(mobile)
    await _wait_remote_video(mobile, desk_id)

    tile = await mobile.query_selector(f'.tile[data-participant-id="{desk_id}"]')
    assert tile is not None and await tile.is_visible()
    box = await tile.bounding_box()
    assert box is not None and box["width"] > 0 and box["x"] + box["width"] <= 390 + 0.5
    assert await mobile.is_visible("#self-view")
    for button in ("#btn-mic", "#btn-cam", "#btn-leave"):
        assert await mobile.is_visible(button), button
    overflow = await mobile.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert overflow[0] <= overflow[1], f"horizontal overflow: {overflow}"
    await _screenshot(mobile, "phone-two")


async def test_garbage_token_shows_clear_error(browser: Any, server: Any) -> None:
    page = await _open(browser, f"{server.base_url}/?token=garbage")
    await page.wait_for_selector("#error:not([hidden])", timeout=JOIN_TIMEOUT_MS)
    text = (await page.inner_text("#error")).lower()
    assert "invitation link" in text and "not valid" in text, text
    assert await page.evaluate("() => window.consilium.state") == "error"
    await _screenshot(page, "token-refused")


async def test_dev_link_on_secured_server_asks_for_invitation(
    browser: Any, server_factory: Any
) -> None:
    secured = await server_factory("--secret", "browser-test-secret-0123456789abcdef")
    page = await _open(browser, f"{secured.base_url}/?room={ROOM}&name=Alice")
    await page.wait_for_selector("#error:not([hidden])", timeout=JOIN_TIMEOUT_MS)
    text = await page.inner_text("#error")
    assert "needs an invitation link" in text, text
    assert await page.evaluate("() => window.consilium.state") == "error"
