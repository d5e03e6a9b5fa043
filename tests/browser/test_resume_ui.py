"""Signaling resume in a real browser: a dropped socket does not stop the call.

Bob's signaling WebSocket runs through a Playwright route the test can cut. While it is cut the
server keeps his session: both videos keep playing, Alice's page shows Bob's tile as
"Reconnecting…", and when the network is back Bob's page resumes the same session without
creating a single new RTCPeerConnection; a chat message sent meanwhile arrives once.

Run inside the loopback-only namespace:
    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/browser/test_resume_ui.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tools.browser_rig import CHROMIUM_ARGS, Server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.webrtc,
    pytest.mark.asyncio(loop_scope="module"),
]

playwright_api = pytest.importorskip("playwright.async_api")

JOIN_TIMEOUT_MS = 60_000
UI_TIMEOUT_MS = 30_000

# A small camera keeps encoding cheap on two busy cores (one simulcast layer).
SMALL_CAMERA = """
(() => {
  const md = navigator.mediaDevices;
  if (!md) return;
  const original = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => original({
    audio: c && c.audio,
    video: c && c.video ? { width: 320, height: 240, frameRate: 10 } : false,
  });
})();
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("resume")
    srv = Server(
        ["127.0.0.1"],
        base / "server.log",
        ("--data-dir", str(base / "data"), "--recordings-dir", str(base / "rec")),
        host="127.0.0.1",
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
    out = srv.output()
    assert "Traceback" not in out, out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="consilium-chromium-") as home:
        async with playwright_api.async_playwright() as pw:
            launched = await pw.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                env={**os.environ, "HOME": home},
                timeout=60_000,
            )
            try:
                yield launched
            finally:
                await launched.close()


def _tile(pid: str) -> str:
    return f'.tile[data-participant-id="{pid}"]'


def _msg_with(text: str) -> str:
    return f'#chat-log .msg[data-seq]:has(.text:text-is("{text}"))'


async def _joined(page: Any) -> None:
    await page.wait_for_function(
        "() => window.consilium && window.consilium.state === 'joined'", timeout=JOIN_TIMEOUT_MS
    )


async def _video_advances(page: Any, pid: str) -> None:
    """The participant's tile plays video whose time moves on."""
    sel = f"{_tile(pid)} video"
    await page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel);"
        " return !!v && v.videoWidth > 0 && v.currentTime > 0; }",
        arg=sel,
        timeout=JOIN_TIMEOUT_MS,
    )
    first = await page.evaluate("(sel) => document.querySelector(sel).currentTime", sel)
    await page.wait_for_function(
        "([sel, t]) => document.querySelector(sel).currentTime > t + 0.5",
        arg=[sel, first],
        timeout=JOIN_TIMEOUT_MS,
    )


async def _say(page: Any, text: str) -> None:
    if not await page.is_visible("#chat-input"):
        if not await page.is_visible("#side-panel"):
            await page.click("#btn-chat")
        await page.click("#tab-chat")
    await page.fill("#chat-input", text)
    await page.press("#chat-input", "Enter")


async def test_dropped_socket_resumes_without_new_peer_connections(
    browser: Any, server: Server
) -> None:
    base = f"{server.url}/?room=resume-ui"
    alice_ctx = await browser.new_context()
    await alice_ctx.add_init_script(SMALL_CAMERA)
    alice = await alice_ctx.new_page()
    await alice.goto(f"{base}&name=Alice&role=host")
    await _joined(alice)

    sockets: list[Any] = []
    offline = {"on": False}

    async def route(ws: Any) -> None:
        if offline["on"]:
            await ws.close(code=1011, reason="offline")
            return
        ws.connect_to_server()
        sockets.append(ws)

    bob_ctx = await browser.new_context()
    await bob_ctx.add_init_script(SMALL_CAMERA)
    await bob_ctx.route_web_socket("**/ws", route)
    bob = await bob_ctx.new_page()
    try:
        await bob.goto(f"{base}&name=Bob&role=specialist")
        await _joined(bob)
        alice_id = await alice.evaluate("() => window.consilium.self.id")
        bob_id = await bob.evaluate("() => window.consilium.self.id")
        await _video_advances(bob, alice_id)
        await _video_advances(alice, bob_id)
        created = await bob.evaluate("() => window.consilium.peerConnectionsCreated")
        assert created == 2  # publishing + subscribing
        # Mark Alice's tile for Bob: a participant-left/joined pair would replace it.
        await alice.eval_on_selector(_tile(bob_id), "(el) => { el.dataset.marker = 'kept'; }")

        # The network drops under Bob.
        offline["on"] = True
        await sockets[-1].close(code=4000, reason="network drop")
        await bob.wait_for_function(
            "() => window.consilium.state === 'reconnecting'", timeout=UI_TIMEOUT_MS
        )
        badge = f"{_tile(bob_id)} .conn-state"
        await alice.wait_for_selector(badge, state="visible", timeout=UI_TIMEOUT_MS)
        assert "reconnecting" in (await alice.inner_text(badge)).lower()
        # The media does not care: both videos keep playing while signaling is away.
        await _video_advances(bob, alice_id)
        await _video_advances(alice, bob_id)
        assert await bob.evaluate("() => window.consilium.state") == "reconnecting"
        await _say(alice, "while you were away")
        await alice.wait_for_selector(_msg_with("while you were away"), timeout=UI_TIMEOUT_MS)

        # Back online: the same session, the same peer connections.
        offline["on"] = False
        await bob.evaluate("() => window.dispatchEvent(new Event('online'))")
        await bob.wait_for_function(
            "() => window.consilium.state === 'joined' && window.consilium.resumes === 1",
            timeout=JOIN_TIMEOUT_MS,
        )
        assert await bob.evaluate("() => window.consilium.peerConnectionsCreated") == created
        assert await bob.evaluate("() => window.consilium.self.id") == bob_id
        await alice.wait_for_selector(badge, state="hidden", timeout=UI_TIMEOUT_MS)
        await bob.wait_for_selector(_msg_with("while you were away"), timeout=UI_TIMEOUT_MS)
        assert await bob.locator(_msg_with("while you were away")).count() == 1
        await _video_advances(bob, alice_id)
        await _video_advances(alice, bob_id)
        assert await alice.eval_on_selector(_tile(bob_id), "(el) => el.dataset.marker") == "kept"
        assert not await bob.is_visible("#error")
        # Signaling works on the resumed socket: a message from Bob reaches Alice.
        await _say(bob, "back again")
        await alice.wait_for_selector(_msg_with("back again"), timeout=UI_TIMEOUT_MS)
    finally:
        await bob_ctx.close()
        await alice_ctx.close()


async def test_refused_resume_falls_back_to_a_full_rejoin(browser: Any, server: Server) -> None:
    """A resume the server cannot honour (here: a garbled token) ends in a working full rejoin."""
    base = f"{server.url}/?room=resume-refused"
    alice_ctx = await browser.new_context()
    await alice_ctx.add_init_script(SMALL_CAMERA)
    alice = await alice_ctx.new_page()
    await alice.goto(f"{base}&name=Alice&role=host")
    await _joined(alice)

    sockets: list[Any] = []
    offline = {"on": False}

    async def route(ws: Any) -> None:
        if offline["on"]:
            await ws.close(code=1011, reason="offline")
            return
        to_server = ws.connect_to_server()
        if sockets:
            # Every later socket garbles the resume token on its way to the server.
            def garble(message: str | bytes) -> None:
                if isinstance(message, str):
                    message = message.replace('"resume":"', '"resume":"garbled-')
                to_server.send(message)

            ws.on_message(garble)
        sockets.append(ws)

    bob_ctx = await browser.new_context()
    await bob_ctx.add_init_script(SMALL_CAMERA)
    await bob_ctx.route_web_socket("**/ws", route)
    bob = await bob_ctx.new_page()
    try:
        await bob.goto(f"{base}&name=Bob&role=specialist")
        await _joined(bob)
        alice_id = await alice.evaluate("() => window.consilium.self.id")
        bob_id = await bob.evaluate("() => window.consilium.self.id")
        await _video_advances(bob, alice_id)
        await _video_advances(alice, bob_id)

        offline["on"] = True
        await sockets[-1].close(code=4000, reason="network drop")
        await bob.wait_for_function(
            "() => window.consilium.state === 'reconnecting'", timeout=UI_TIMEOUT_MS
        )
        offline["on"] = False
        await bob.evaluate("() => window.dispatchEvent(new Event('online'))")
        await bob.wait_for_function(
            "() => window.consilium.state === 'joined' && window.consilium.reconnects === 1",
            timeout=JOIN_TIMEOUT_MS,
        )
        assert await bob.evaluate("() => window.consilium.resumes") == 0
        # A new session: new publishing and subscribing connections (the subscribing one comes
        # with the server's first offer, which may follow joined), media flows again.
        await bob.wait_for_function(
            "() => window.consilium.peerConnectionsCreated >= 4", timeout=JOIN_TIMEOUT_MS
        )
        assert await bob.evaluate("() => window.consilium.peerConnectionsCreated") == 4
        await _video_advances(bob, alice_id)
        await _video_advances(alice, bob_id)
        assert await alice.locator(".tile").count() == 1
        assert not await bob.is_visible("#error")
    finally:
        await bob_ctx.close()
        await alice_ctx.close()
