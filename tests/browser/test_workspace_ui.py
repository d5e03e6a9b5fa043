"""The consultation workspace in a real browser: host controls, reconnection, chat and files.

One server and one Chromium serve the whole module (each test uses its own room). Pages get a
small fake camera (320x240, 10 fps, one simulcast layer) so that several pages fit on two busy
cores. Every wait has a generous timeout and nothing asserts on elapsed time.
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
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}

# A small camera keeps encoding cheap: no simulcast below 270 lines.
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
    base = tmp_path_factory.mktemp("workspace")
    srv = Server(
        ["127.0.0.1"],
        base / "server.log",
        ("--data-dir", str(base / "data"), "--recordings-dir", str(base / "rec")),
        host="127.0.0.1",
    )
    srv.data_dir = base / "data"  # type: ignore[attr-defined]
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
    out = srv.output()
    assert "Traceback" not in out, out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_browser() -> AsyncIterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="consilium-chromium-") as home:
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=CHROMIUM_ARGS,
                env={**os.environ, "HOME": home},
                timeout=60_000,
            )
            try:
                yield browser
            finally:
                await browser.close()


async def _open(browser: Any, url: str, **context_args: Any) -> Any:
    context = await browser.new_context(**context_args)
    await context.add_init_script(SMALL_CAMERA)
    page = await context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.consilium_console = console
    await page.goto(url)
    await page.wait_for_function(
        "() => window.consilium && window.consilium.state !== 'connecting'",
        timeout=JOIN_TIMEOUT_MS,
    )
    state = await page.evaluate("() => [window.consilium.state, window.consilium.error]")
    if state[0] != "joined":
        pytest.fail(f"page did not join: {state}; console: {console}")
    return page


async def _id(page: Any) -> str:
    return str(await page.evaluate("() => window.consilium.self.id"))


def _tile(pid: str) -> str:
    return f'.tile[data-participant-id="{pid}"]'


async def _close_all(*pages: Any) -> None:
    for page in pages:
        await page.context.close()


# --------------------------------------------------------------------------- host controls


async def test_host_mutes_removes_and_ends(shared_browser: Any, server: Server) -> None:
    base = f"{server.url}/?room=hostui"
    host = await _open(shared_browser, f"{base}&name=Dr%20Host&role=host")
    guest = await _open(shared_browser, f"{base}&name=Guest&role=specialist")
    nurse = await _open(shared_browser, f"{base}&name=Nurse&role=bedside")
    guest_id, nurse_id = await _id(guest), await _id(nurse)

    # Only the host (admin permission) gets the tile buttons and the End button.
    await host.wait_for_selector(f"{_tile(guest_id)} .host-mute", state="visible")
    assert await host.is_visible("#btn-end")
    await guest.wait_for_selector(_tile(nurse_id), state="attached", timeout=UI_TIMEOUT_MS)
    assert not await guest.is_visible(f"{_tile(nurse_id)} .host-actions")
    assert not await guest.is_visible("#btn-end")

    # Mute: the guest is told, the mic button shows muted, and the guest may unmute.
    await host.click(f"{_tile(guest_id)} .host-mute")
    await guest.wait_for_selector("#error:not([hidden])", timeout=UI_TIMEOUT_MS)
    assert "host muted your microphone" in (await guest.inner_text("#error")).lower()
    assert await guest.get_attribute("#btn-mic", "aria-pressed") == "true"
    await host.wait_for_selector(f"{_tile(guest_id)}.audio-off", timeout=UI_TIMEOUT_MS)
    assert await host.is_disabled(f"{_tile(guest_id)} .host-mute")
    await guest.click("#btn-mic")
    assert await guest.get_attribute("#btn-mic", "aria-pressed") == "false"
    await host.wait_for_selector(f"{_tile(guest_id)}:not(.audio-off)", timeout=UI_TIMEOUT_MS)

    # Remove (with a confirmation): the guest sees why and gets no Rejoin link.
    await host.click(f"{_tile(guest_id)} .host-remove")
    await host.wait_for_selector("#confirm-dialog[open]")
    await host.click("#confirm-ok")
    await guest.wait_for_function("() => window.consilium.state === 'left'", timeout=UI_TIMEOUT_MS)
    assert "host removed you" in (await guest.inner_text("#error")).lower()
    assert not await guest.is_visible("#rejoin")
    await host.wait_for_selector(_tile(guest_id), state="detached", timeout=UI_TIMEOUT_MS)

    # End consultation: cancel first (nothing happens), then confirm; everyone sees it ended.
    await host.click("#btn-end")
    await host.wait_for_selector("#confirm-dialog[open]")
    await host.click("#confirm-dialog button[value=cancel]")
    assert await host.evaluate("() => window.consilium.state") == "joined"
    await host.click("#btn-end")
    await host.click("#confirm-ok")
    for page in (host, nurse):
        await page.wait_for_function(
            "() => window.consilium.state === 'left'", timeout=UI_TIMEOUT_MS
        )
        assert "ended the consultation" in (await page.inner_text("#error")).lower()
        assert "has ended" in (await page.inner_text("#left-title")).lower()

    # A later join to the ended room is refused with a clear message.
    late = await shared_browser.new_context()
    page = await late.new_page()
    await page.goto(f"{base}&name=Late&role=specialist")
    await page.wait_for_selector("#error:not([hidden])", timeout=JOIN_TIMEOUT_MS)
    assert "consultation has ended" in (await page.inner_text("#error")).lower()
    await _close_all(host, guest, nurse, page)
