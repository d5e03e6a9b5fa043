"""The web client in a real browser (Debian's chromium through playwright) against a real server.

Every wait has a generous timeout (2-core machine, software video codecs) and nothing asserts on
elapsed time: "advancing" means "changed before the timeout".
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
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


def _request(method: str, url: str) -> int:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return int(resp.status)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


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
    first = await page.evaluate("(sel) => document.querySelector(sel + ' video').currentTime", tile)
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


async def test_two_participants_see_each_other(browser: Any, live_server: Any) -> None:
    alice = await _open(browser, f"{live_server.base_url}/?room={ROOM}&name=Alice")
    bob = await _open(browser, f"{live_server.base_url}/?room={ROOM}&name=Bob&role=specialist")
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
    assert (
        "specialist"
        in (await alice.inner_text(f'.tile[data-participant-id="{bob_id}"] .badge')).lower()
    )
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
    for page in (alice, bob):
        assert not [m for m in page.consilium_console if m.startswith("pageerror")]
    await bob.wait_for_selector(alice_tile_at_bob, state="detached", timeout=JOIN_TIMEOUT_MS)
    assert await bob.evaluate("() => window.consilium.state") == "joined"


async def test_late_joiner_sees_everyone_already_there(browser: Any, live_server: Any) -> None:
    # The first subscribe-offer of a late joiner carries several video m-lines at once; each
    # must carry media, not only the first.
    first = await _open(browser, f"{live_server.base_url}/?room=late&name=Ana")
    second = await _open(browser, f"{live_server.base_url}/?room=late&name=Ben&role=bedside")
    first_id = await _wait_joined(first)
    second_id = await _wait_joined(second)
    await _wait_remote_video(first, second_id)
    await _wait_remote_video(second, first_id)

    late = await _open(browser, f"{live_server.base_url}/?room=late&name=Cy&role=specialist")
    late_id = await _wait_joined(late)
    for other_id in (first_id, second_id):
        await _wait_remote_video(late, other_id)
        await _wait_frames_advance(late, other_id)
    for page in (first, second):
        await _wait_remote_video(page, late_id)
    assert sorted(await late.evaluate("() => [...window.consilium.participants.keys()]")) == sorted(
        [first_id, second_id]
    )


async def test_observer_receives_without_publishing(browser: Any, live_server: Any) -> None:
    host = await _open(browser, f"{live_server.base_url}/?room=watch&name=Host")
    host_id = await _wait_joined(host)
    observer = await _open(
        browser, f"{live_server.base_url}/?room=watch&name=Student&role=observer"
    )
    observer_id = await _wait_joined(observer)
    await _wait_remote_video(observer, host_id)
    await _wait_frames_advance(observer, host_id)
    # No camera, no preview, no device buttons; the host sees a tile with the observer's initials.
    assert not await observer.is_visible("#self-view")
    assert not await observer.is_visible("#btn-mic")
    assert not await observer.is_visible("#btn-cam")
    assert await observer.is_visible("#btn-leave")
    await host.wait_for_selector(
        f'.tile[data-participant-id="{observer_id}"].video-off', timeout=JOIN_TIMEOUT_MS
    )
    people = await asyncio.to_thread(
        _get_json, f"{live_server.base_url}/api/rooms/watch/participants"
    )
    by_id = {p["id"]: p for p in people["participants"]}
    assert by_id[observer_id]["publishing"] == []
    # Without a user gesture the browser may refuse sound; then the page offers a button.
    if await observer.is_visible("#enable-sound"):
        await observer.click("#enable-sound")
        await observer.wait_for_function(
            "(sel) => !document.querySelector(sel + ' video').muted",
            arg=f'.tile[data-participant-id="{host_id}"]',
            timeout=10_000,
        )
        assert not await observer.is_visible("#enable-sound")
    assert not [m for m in observer.consilium_console if m.startswith("pageerror")]


IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)


async def test_apple_devices_publish_h264_others_vp8(browser: Any, live_server: Any) -> None:
    desk = await _open(browser, f"{live_server.base_url}/?room=codecs&name=Desk")
    desk_id = await _wait_joined(desk)
    phone = await _open(
        browser,
        f"{live_server.base_url}/?room=codecs&name=Phone&role=bedside",
        user_agent=IPHONE_UA,
    )
    has_h264 = await phone.evaluate(
        "() => RTCRtpSender.getCapabilities('video').codecs"
        ".some((c) => c.mimeType.toLowerCase() === 'video/h264')"
    )
    if not has_h264:
        pytest.skip("this chromium build has no H264 encoder")
    phone_id = await _wait_joined(phone)
    await _wait_remote_video(desk, phone_id)
    await _wait_frames_advance(desk, phone_id)
    await _wait_remote_video(phone, desk_id)

    async def received_codec(page: Any, other_id: str) -> str:
        stats = await page.evaluate("() => window.consilium.inboundVideoStats()")
        return str(next(s["codec"] for s in stats if s["participantId"] == other_id)).lower()

    # The SFU forwards without transcoding, so what arrives is what each side chose to send.
    assert await received_codec(desk, phone_id) == "video/h264"
    assert await received_codec(phone, desk_id) == "video/vp8"


DENY_DEVICES = """
navigator.mediaDevices.getUserMedia = () =>
  Promise.reject(new DOMException('Permission denied', 'NotAllowedError'));
"""


async def test_denied_camera_joins_receive_only(browser: Any, live_server: Any) -> None:
    host = await _open(browser, f"{live_server.base_url}/?room=deny&name=Host")
    host_id = await _wait_joined(host)
    context = await browser.new_context()
    await context.add_init_script(DENY_DEVICES)
    page = await context.new_page()
    page.consilium_console = []
    await page.goto(f"{live_server.base_url}/?room=deny&name=Shy%20Guest&role=specialist")
    shy_id = await _wait_joined(page)
    await page.wait_for_selector("#error:not([hidden])", timeout=JOIN_TIMEOUT_MS)
    text = (await page.inner_text("#error")).lower()
    assert "denied" in text and "receive-only" in text, text
    await _wait_remote_video(page, host_id)
    assert await page.evaluate("() => window.consilium.state") == "joined"
    await host.wait_for_selector(
        f'.tile[data-participant-id="{shy_id}"].video-off.audio-off', timeout=JOIN_TIMEOUT_MS
    )
    assert (await host.inner_text(f'.tile[data-participant-id="{shy_id}"] .initials')) == "SG"


async def test_removed_by_host_is_explained(browser: Any, live_server: Any) -> None:
    page = await _open(browser, f"{live_server.base_url}/?room=kick&name=Guest&role=specialist")
    guest_id = await _wait_joined(page)
    status = await asyncio.to_thread(
        _request, "DELETE", f"{live_server.base_url}/api/rooms/kick/participants/{guest_id}"
    )
    assert status == 204
    await page.wait_for_function("() => window.consilium.state === 'left'", timeout=JOIN_TIMEOUT_MS)
    assert "host removed you" in (await page.inner_text("#error")).lower()
    # The server refuses that identity while the room lives: no Rejoin link that cannot work.
    assert not await page.is_visible("#rejoin")


async def test_phone_viewport_layout(browser: Any, live_server: Any) -> None:
    phone = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
    desk = await _open(browser, f"{live_server.base_url}/?room=phonetest&name=Dr%20Grey")
    mobile = await _open(
        browser,
        f"{live_server.base_url}/?room=phonetest&name=Bedside%20Nurse&role=bedside",
        **phone,
    )
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


async def test_garbage_token_shows_clear_error(browser: Any, live_server: Any) -> None:
    page = await _open(browser, f"{live_server.base_url}/?token=garbage")
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
