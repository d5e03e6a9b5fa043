"""The consultation workspace in a real browser: host controls, reconnection, chat and files.

One server and one Chromium serve the whole module (each test uses its own room). Pages get a
small fake camera (320x240, 10 fps, one simulcast layer) so that several pages fit on two busy
cores. Every wait has a generous timeout and nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tools.browser_rig import CHROMIUM_ARGS, Server
from tools.make_study import StudySpec, write_zip

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


async def _wait_left(page: Any) -> None:
    """Until the page has left the call. Asked from here, not with an in-page poller: under
    load, a poller installed while the page tears its call down has missed the change."""
    for _ in range(UI_TIMEOUT_MS // 250):
        if await page.evaluate("() => window.consilium.state") == "left":
            return
        await asyncio.sleep(0.25)
    state = await page.evaluate("() => [window.consilium.state, window.consilium.error]")
    assert state[0] == "left", f"page still {state}; console: {page.consilium_console[-10:]}"


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

    # The host makes the nurse an observer with the tile's role menu: her camera stops and the
    # chat is read-only; the host's tile shows the new role once the server confirms it.
    assert await host.input_value(f"{_tile(nurse_id)} .host-role") == "bedside"
    await host.select_option(f"{_tile(nurse_id)} .host-role", "observer")
    await host.wait_for_function(
        f"() => document.querySelector('{_tile(nurse_id)} .badge').textContent === 'Observer'",
        timeout=UI_TIMEOUT_MS,
    )
    assert await host.input_value(f"{_tile(nurse_id)} .host-role") == "observer"
    await nurse.wait_for_function(
        "() => window.consilium.self.role === 'observer'", timeout=UI_TIMEOUT_MS
    )
    assert "changed your role to observer" in (await nurse.inner_text("#error")).lower()
    assert await nurse.is_disabled("#chat-input")
    assert not await nurse.is_visible("#btn-mic") and not await nurse.is_visible("#self-view")

    # Remove (with a confirmation): the guest sees why and gets no Rejoin link.
    await host.click(f"{_tile(guest_id)} .host-remove")
    await host.wait_for_selector("#confirm-dialog[open]")
    await host.click("#confirm-ok")
    await _wait_left(guest)
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
        await _wait_left(page)
        assert "ended the consultation" in (await page.inner_text("#error")).lower()
        assert "has ended" in (await page.inner_text("#left-title")).lower()

    # A later join to the ended room is refused with a clear message.
    late = await shared_browser.new_context()
    page = await late.new_page()
    await page.goto(f"{base}&name=Late&role=specialist")
    await page.wait_for_selector("#error:not([hidden])", timeout=JOIN_TIMEOUT_MS)
    assert "consultation has ended" in (await page.inner_text("#error")).lower()
    await _close_all(host, guest, nurse, page)


# --------------------------------------------------------------------------- chat


async def _open_chat(page: Any) -> None:
    if not await page.is_visible("#chat-pane"):
        if not await page.is_visible("#side-panel"):
            await page.click("#btn-chat")
        await page.click("#tab-chat")
    await page.wait_for_selector("#chat-input", state="visible")


async def _say(page: Any, text: str) -> None:
    await _open_chat(page)
    await page.fill("#chat-input", text)
    await page.press("#chat-input", "Enter")


def _msg_with(text: str) -> str:
    return f'#chat-log .msg[data-seq]:has(.text:text-is("{text}"))'


async def test_chat_message_receipts_mentions_and_burn(shared_browser: Any, server: Server) -> None:
    base = f"{server.url}/?room=chatui"
    alice = await _open(shared_browser, f"{base}&name=Dr%20Alice%20Grey&role=host")
    bob = await _open(shared_browser, f"{base}&name=Bob%20Nurse&role=bedside")
    watcher = await _open(shared_browser, f"{base}&name=Student&role=observer")
    bob_id = await _id(bob)

    # Wide screens open the chat beside the videos; Bob and the observer close it, so the
    # message shows as unread on their Chat button.
    for page in (bob, watcher):
        await page.click("#side-close")
        assert await page.get_attribute("#btn-chat", "aria-expanded") == "false"
    await _say(alice, "Patient history: <b>not bold</b>")
    await bob.wait_for_selector("#chat-badge:not([hidden])", timeout=UI_TIMEOUT_MS)
    assert (await bob.inner_text("#chat-badge")).strip() == "1"
    mine = alice.locator(_msg_with("Patient history: <b>not bold</b>"))
    await mine.wait_for(timeout=UI_TIMEOUT_MS)
    assert "mine" in (await mine.get_attribute("class") or "")
    # Delivered to everyone, not yet read (Bob and the observer have not opened the chat).
    await alice.wait_for_function(
        "() => document.querySelector('#chat-log .msg.mine .ticks').dataset.status === 'delivered'",
        timeout=UI_TIMEOUT_MS,
    )

    await _open_chat(bob)
    theirs = bob.locator(_msg_with("Patient history: <b>not bold</b>"))
    await theirs.wait_for(timeout=UI_TIMEOUT_MS)
    assert await theirs.locator(".who").inner_text() == "Dr Alice Grey"
    assert (await theirs.locator(".badge").inner_text()).lower() == "host"
    assert await theirs.locator("b").count() == 0  # text, never markup
    await bob.wait_for_selector("#chat-badge", state="hidden", timeout=UI_TIMEOUT_MS)
    await _open_chat(watcher)
    # Read by everyone: the tick turns to "read" for the sender.
    await alice.wait_for_function(
        "() => document.querySelector('#chat-log .msg.mine .ticks').dataset.status === 'read'",
        timeout=UI_TIMEOUT_MS,
    )

    # The observer reads but cannot post, and is told why.
    assert await watcher.is_disabled("#chat-input")
    assert "observer" in (await watcher.inner_text("#chat-note")).lower()
    assert not await watcher.is_visible("#btn-attach")

    # Mentions: typing @ suggests participants; the mentioned one sees it highlighted.
    await alice.click("#chat-input")
    await alice.keyboard.type("Please check this @Bo")
    await alice.wait_for_selector("#mention-list li", timeout=UI_TIMEOUT_MS)
    await alice.keyboard.press("Enter")  # picks the suggestion
    assert "@Bob Nurse" in await alice.input_value("#chat-input")
    await alice.keyboard.press("Enter")  # sends
    mention = bob.locator("#chat-log .msg.mention-me")
    await mention.wait_for(timeout=UI_TIMEOUT_MS)
    assert "@Bob Nurse" in await mention.inner_text()
    await watcher.wait_for_selector(_msg_with("Please check this @Bob Nurse"))
    assert await watcher.locator("#chat-log .msg.mention-me").count() == 0
    sent = await alice.evaluate(
        "() => [...window.consilium.chat.messages.values()].map((m) => m.mentions)"
    )
    assert [bob_id] in sent

    # Too long: a clear error, nothing sent.
    await alice.fill("#chat-input", "x" * 4001)
    await alice.press("#chat-input", "Enter")
    assert "too long" in (await alice.inner_text("#chat-note")).lower()
    await alice.fill("#chat-input", "")

    # Burn after reading: Bob and the observer open it; then it is gone for the sender.
    await alice.click("#btn-burn")
    await _say(alice, "Door code 4711")
    for page in (bob, watcher):
        burn = page.locator("#chat-log .msg.burn .reveal")
        await burn.wait_for(timeout=UI_TIMEOUT_MS)
        assert "4711" not in await page.inner_text("#chat-log")  # not shown until opened
        await burn.click()
        assert "4711" in await page.inner_text("#chat-log")
    await alice.wait_for_selector("#chat-log .msg.burned", timeout=UI_TIMEOUT_MS)
    assert "4711" not in await alice.inner_text("#chat-log")
    await bob.wait_for_function(
        "() => !document.getElementById('chat-log').textContent.includes('4711')",
        timeout=UI_TIMEOUT_MS,
    )
    await _close_all(alice, bob, watcher)


# --------------------------------------------------------------------------- reconnection


async def _wait_video(page: Any, pid: str) -> None:
    """The participant's tile plays video that keeps advancing."""
    sel = f"{_tile(pid)} video"
    await page.wait_for_function(
        "(sel) => { const v = document.querySelector(sel);"
        " return !!v && v.videoWidth > 0 && v.currentTime > 0; }",
        arg=sel,
        timeout=JOIN_TIMEOUT_MS,
    )
    first = await page.evaluate("(sel) => document.querySelector(sel).currentTime", sel)
    await page.wait_for_function(
        "([sel, t]) => document.querySelector(sel).currentTime > t",
        arg=[sel, first],
        timeout=JOIN_TIMEOUT_MS,
    )


async def test_reconnect_restores_media_and_catches_up_chat(
    shared_browser: Any, server: Server
) -> None:
    base = f"{server.url}/?room=reconnect"
    alice = await _open(shared_browser, f"{base}&name=Alice&role=host")

    # Bob's signaling socket runs through a route the test can cut, and refuse while "offline".
    sockets: list[Any] = []
    offline = {"on": False}

    async def route(ws: Any) -> None:
        if offline["on"]:
            await ws.close(code=1011, reason="offline")
            return
        ws.connect_to_server()
        sockets.append(ws)

    context = await shared_browser.new_context()
    await context.add_init_script(SMALL_CAMERA)
    await context.route_web_socket("**/ws", route)
    bob = await context.new_page()
    await bob.goto(f"{base}&name=Bob&role=specialist")
    await bob.wait_for_function(
        "() => window.consilium && window.consilium.state === 'joined'", timeout=JOIN_TIMEOUT_MS
    )
    alice_id, bob_id = await _id(alice), await _id(bob)
    await _wait_video(bob, alice_id)
    await _wait_video(alice, bob_id)
    await _say(alice, "before the drop")
    await bob.wait_for_selector(_msg_with("before the drop"), timeout=UI_TIMEOUT_MS)

    # The network drops: Bob's page says it is reconnecting and keeps trying.
    offline["on"] = True
    await sockets[-1].close(code=4000, reason="network drop")
    await bob.wait_for_function(
        "() => window.consilium.state === 'reconnecting'", timeout=UI_TIMEOUT_MS
    )
    assert "reconnecting" in (await bob.inner_text("#error")).lower()
    # Alice talks while Bob is away (stored: her copy has its seq).
    await _say(alice, "while you were away")
    await alice.wait_for_selector(_msg_with("while you were away"), timeout=UI_TIMEOUT_MS)

    # Back online: Bob rejoins with the same token, media flows again, and the missed message
    # appears exactly once, in order.
    offline["on"] = False
    await bob.wait_for_function(
        "() => window.consilium.state === 'joined' && window.consilium.reconnects === 1",
        timeout=JOIN_TIMEOUT_MS,
    )
    assert await bob.evaluate("() => window.consilium.self.id") == bob_id
    assert len(sockets) == 2  # one rejoin, through the route
    await bob.wait_for_selector(_msg_with("while you were away"), timeout=UI_TIMEOUT_MS)
    await _say(alice, "after the rejoin")
    await bob.wait_for_selector(_msg_with("after the rejoin"), timeout=UI_TIMEOUT_MS)
    texts = await bob.eval_on_selector_all(
        "#chat-log .msg[data-seq] .text", "(els) => els.map((e) => e.textContent)"
    )
    assert texts == ["before the drop", "while you were away", "after the rejoin"], texts
    assert not await bob.is_visible("#error")
    await _wait_video(bob, alice_id)
    await _wait_video(alice, bob_id)
    assert await alice.locator(".tile").count() == 1  # Bob once, not a stale copy
    await _close_all(alice, bob)


# --------------------------------------------------------------------------- files


async def test_upload_shows_in_list_and_chat_then_instant_upload(
    shared_browser: Any, server: Server, tmp_path: Path
) -> None:
    study = tmp_path / "CT study.zip"
    write_zip(StudySpec(series=2, slices=3, size=32, description="Chest CT"), study)
    digest = hashlib.sha256(study.read_bytes()).hexdigest()
    base = f"{server.url}/?room=filesui"
    alice = await _open(shared_browser, f"{base}&name=Dr%20Alice&role=host")
    bob = await _open(shared_browser, f"{base}&name=Bob&role=specialist")

    # Alice's first PATCH dies mid-way (a dropped connection): tus-js-client asks the server
    # for the offset (HEAD) and carries on.
    seen: list[str] = []

    async def flaky(route: Any) -> None:
        seen.append(route.request.method)
        if route.request.method == "PATCH" and seen.count("PATCH") == 1:
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await alice.route("**/api/rooms/filesui/uploads/**", flaky)
    # Alice shares through the file button: hashed, not on the server yet, uploaded with tus.
    await alice.set_input_files("#file-input", str(study))
    done = alice.locator("#uploads .upload[data-state=done]")
    await done.wait_for(timeout=UI_TIMEOUT_MS)
    assert "shared" in (await done.inner_text()).lower()
    record = await alice.evaluate("() => window.consilium.files.uploads[0]")
    assert record["instant"] is False and record["fileId"], record
    assert seen.count("PATCH") == 2 and "HEAD" in seen, seen

    # Bob sees it in the chat as an attachment, with the study summary...
    card = bob.locator(f'#chat-log .msg .file-card[data-file-id="{record["fileId"]}"]')
    await card.wait_for(timeout=UI_TIMEOUT_MS)
    text = await card.inner_text()
    assert (
        "CT study.zip" in text
        and "Dr Alice" in await bob.locator("#chat-log .msg").last.inner_text()
    )
    assert "CT" in text and "2026-11-26" in text and "Chest CT" in text and "2 series" in text, text
    # ... and in the file list, with who shared it.
    await _open_chat(bob)
    await bob.click("#tab-files")
    item = bob.locator(f'#file-list .file-card[data-file-id="{record["fileId"]}"]')
    await item.wait_for(timeout=UI_TIMEOUT_MS)
    assert "shared by Dr Alice" in await item.inner_text()

    # Download through a signed link: the browser saves the same bytes.
    async with bob.expect_download() as info:
        await item.locator(".file-download").click()
    download = await info.value
    saved = tmp_path / "downloaded.zip"
    await download.save_as(str(saved))
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest

    # Bob shares the same file again: the server has it, so no bytes are sent.
    await bob.set_input_files("#file-input", str(study))
    instant = bob.locator("#uploads .upload[data-state=instant]")
    await instant.wait_for(timeout=UI_TIMEOUT_MS)
    assert "instantly" in (await instant.inner_text()).lower()
    second = await bob.evaluate("() => window.consilium.files.uploads[0]")
    assert second["instant"] is True, second
    await alice.wait_for_selector(
        f'#chat-log .msg:not(.mine) .file-card[data-file-id="{second["fileId"]}"]',
        timeout=UI_TIMEOUT_MS,
    )
    blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    assert [p.name for p in blobs] == [digest], blobs
    await _close_all(alice, bob)


# What a file dragged from the desktop and dropped on the page looks like to the page.
DRAG_ENTER_JS = """() => {
  window.__dt = new DataTransfer();
  window.__dt.items.add(new File(['BP 120/80, HR 72'], 'ward-note.txt', { type: 'text/plain' }));
  const ev = new DragEvent('dragenter', { dataTransfer: window.__dt, bubbles: true });
  document.body.dispatchEvent(ev);
}"""
DROP_JS = """() => {
  const ev = new DragEvent('drop', { dataTransfer: window.__dt, bubbles: true, cancelable: true });
  document.body.dispatchEvent(ev);
  return ev.defaultPrevented;
}"""


async def test_phone_chat_and_upload_are_reachable(shared_browser: Any, server: Server) -> None:
    base = f"{server.url}/?room=phoneui"
    desk = await _open(shared_browser, f"{base}&name=Dr%20Desk&role=host")
    phone = await _open(shared_browser, f"{base}&name=Bedside&role=bedside", **PHONE)
    # Phones start with the videos full-screen; the Chat button opens a sheet.
    assert not await phone.is_visible("#side-panel")
    await _say(desk, "How is the patient?")
    await phone.wait_for_selector("#chat-badge:not([hidden])", timeout=UI_TIMEOUT_MS)
    await phone.click("#btn-chat")
    await phone.wait_for_selector(_msg_with("How is the patient?"), timeout=UI_TIMEOUT_MS)
    for sel in ("#chat-input", "#chat-send", "#btn-attach", "#btn-burn", "#side-close"):
        assert await phone.is_visible(sel), sel
        box = await phone.locator(sel).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390 + 0.5, sel
        assert box["y"] >= 0 and box["y"] + box["height"] <= 844 + 0.5, sel
    await _say(phone, "Stable, BP 120/80")
    await desk.wait_for_selector(_msg_with("Stable, BP 120/80"), timeout=UI_TIMEOUT_MS)
    await phone.click("#tab-files")
    assert await phone.is_visible("#btn-upload")
    overflow = await phone.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert overflow[0] <= overflow[1], overflow
    # The desk drops a file onto the page: the drop hint shows, then the file is shared.
    await desk.evaluate(DRAG_ENTER_JS)
    assert await desk.is_visible("#drop-overlay")
    assert await desk.evaluate(DROP_JS) is True  # handled: the browser does not open the file
    assert not await desk.is_visible("#drop-overlay")
    await phone.click("#tab-chat")
    await phone.wait_for_selector(
        '#chat-log .file-card:has(.file-name:text-is("ward-note.txt"))', timeout=UI_TIMEOUT_MS
    )
    # Closing the sheet gives the videos back; every call control stays on screen.
    await phone.click("#side-close")
    for sel in ("#btn-mic", "#btn-cam", "#btn-chat", "#btn-leave"):
        assert await phone.is_visible(sel), sel
    await _close_all(desk, phone)


async def _seed_chat(base_url: str, room: str, count: int) -> None:
    """A plain WebSocket client posts ``count`` messages (more than one history page)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base_url}/api/dev-token?room={room}&name=Seeder") as resp:
            token = (await resp.json())["token"]
        async with http.ws_connect(f"{base_url}/ws") as ws:
            await ws.send_json({"type": "join", "version": 1, "token": token})
            for i in range(count):
                await ws.send_json({"type": "chat-send", "clientId": f"seed-{i}", "text": f"m{i}"})
            echoed = 0
            async with asyncio.timeout(30):
                while echoed < count:
                    msg = await ws.receive_json()
                    echoed += msg.get("type") == "chat-message"
            await ws.send_json({"type": "leave"})


async def test_history_pages_arrive_in_order(shared_browser: Any, server: Server) -> None:
    await _seed_chat(server.url, "history", 230)  # the server pages at 200
    page = await _open(shared_browser, f"{server.url}/?room=history&name=Late&role=specialist")
    await page.wait_for_function(
        "() => window.consilium.chat.messages.size === 230 && !window.consilium.chat.syncing",
        timeout=UI_TIMEOUT_MS,
    )
    texts = await page.eval_on_selector_all(
        "#chat-log .msg[data-seq] .text", "(els) => els.map((e) => e.textContent)"
    )
    assert texts == [f"m{i}" for i in range(230)]
    await _close_all(page)


async def test_pause_and_resume_an_upload(
    shared_browser: Any, server: Server, tmp_path: Path
) -> None:
    data = tmp_path / "echo.bin"
    data.write_bytes(os.urandom(300_000))
    page = await _open(shared_browser, f"{server.url}/?room=pauseui&name=Dr%20Echo&role=host")
    held = asyncio.Event()
    methods: list[str] = []

    async def hold_first_patch(route: Any) -> None:
        methods.append(route.request.method)
        if route.request.method == "PATCH" and methods.count("PATCH") == 1:
            held.set()  # the page's request hangs here until the test pauses the upload
            await asyncio.sleep(2)
            with contextlib.suppress(Exception):  # the page has cancelled it by now
                await route.abort()
            return
        await route.continue_()

    await page.route("**/api/rooms/pauseui/uploads/**", hold_first_patch)
    await page.set_input_files("#file-input", str(data))
    await asyncio.wait_for(held.wait(), 30)
    await page.click("#uploads .upload-pause")
    paused = page.locator("#uploads .upload[data-state=paused]")
    await paused.wait_for(timeout=UI_TIMEOUT_MS)
    assert "paused" in (await paused.inner_text()).lower()
    assert await page.inner_text("#uploads .upload-pause") == "Resume"
    await asyncio.sleep(2.5)  # the held request is gone: nothing else may be sent meanwhile
    assert methods == ["PATCH"], methods
    await page.click("#uploads .upload-pause")
    await page.wait_for_selector("#uploads .upload[data-state=done]", timeout=UI_TIMEOUT_MS)
    assert methods == ["PATCH", "HEAD", "PATCH"], methods  # resumed from the server's offset
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    blob = server.data_dir / "blobs" / digest[:2] / digest  # type: ignore[attr-defined]
    assert blob.read_bytes() == data.read_bytes()
    await _close_all(page)
