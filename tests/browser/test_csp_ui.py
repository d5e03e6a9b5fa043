"""The web client under its Content-Security-Policy in a real browser: joining (scripts,
WebSocket, camera), chatting, sharing a file (hash-wasm compiles WebAssembly, tus uploads) and
downloading it raise no CSP violation at all.

Reuses the workspace module's fixtures (its own server and Chromium for this module) and
helpers. Every wait has a generous timeout and nothing asserts on elapsed time.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from test_workspace_ui import (
    JOIN_TIMEOUT_MS,
    SMALL_CAMERA,
    UI_TIMEOUT_MS,
    _close_all,
    _msg_with,
    _open_chat,
    _say,
)
from test_workspace_ui import server as csp_server  # noqa: F401  (fixtures, by these names)
from test_workspace_ui import shared_browser as csp_browser  # noqa: F401

from signaling.app import CONTENT_SECURITY_POLICY
from tools.browser_rig import Server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.webrtc,
    pytest.mark.asyncio(loop_scope="module"),
]

# Installed before any page script: every violation the browser reports, in order.
VIOLATIONS_JS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`
    + ` at ${e.sourceFile || '?'}:${e.lineNumber}`);
});
"""


async def _with_listener(browser: Any, url: str) -> Any:
    """A joined page (as the workspace tests open one) whose CSP violations are recorded: the
    DOM events and the console errors."""
    context = await browser.new_context()
    await context.add_init_script(SMALL_CAMERA)
    await context.add_init_script(VIOLATIONS_JS)
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


async def _violations(page: Any) -> list[str]:
    events = [str(v) for v in await page.evaluate("() => window.__csp")]
    console = [m for m in page.consilium_console if "Content Security Policy" in m]
    return events + console


async def test_join_chat_share_and_download_without_csp_violations(
    csp_browser: Any,  # noqa: F811
    csp_server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    report = tmp_path / "lab report.txt"
    report.write_text("Hb 13.2 g/dL, CRP 4 mg/L")
    digest = hashlib.sha256(report.read_bytes()).hexdigest()
    base = f"{csp_server.url}/?room=cspui"
    # The page itself arrives with the policy (else "no violations" would prove nothing).
    probe = await csp_browser.new_page()
    response = await probe.goto(f"{csp_server.url}/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    await probe.close()

    # Joining: module scripts, the vendored libraries, the same-origin WebSocket, the camera.
    host = await _with_listener(csp_browser, f"{base}&name=Dr%20Host&role=host")
    guest = await _with_listener(csp_browser, f"{base}&name=Guest&role=specialist")
    guest_id = str(await guest.evaluate("() => window.consilium.self.id"))
    await host.wait_for_selector(
        f'.tile[data-participant-id="{guest_id}"] video', timeout=UI_TIMEOUT_MS
    )

    # Chat both ways (the composer resizes itself through element.style, which CSP allows).
    await _say(host, "CSP check from the host")
    await _open_chat(guest)
    await guest.wait_for_selector(_msg_with("CSP check from the host"), timeout=UI_TIMEOUT_MS)
    await _say(guest, "received")
    await host.wait_for_selector(_msg_with("received"), timeout=UI_TIMEOUT_MS)

    # Sharing a file: SHA-256 through hash-wasm's WebAssembly, then a tus upload.
    await host.set_input_files("#file-input", str(report))
    await host.locator("#uploads .upload[data-state=done]").wait_for(timeout=UI_TIMEOUT_MS)
    record = await host.evaluate("() => window.consilium.files.uploads[0]")
    assert record["fileId"] and record["instant"] is False, record

    # Downloading it on the other page: a signed link saved through Content-Disposition.
    await guest.click("#tab-files")
    item = guest.locator(f'#file-list .file-card[data-file-id="{record["fileId"]}"]')
    await item.wait_for(timeout=UI_TIMEOUT_MS)
    async with guest.expect_download(timeout=UI_TIMEOUT_MS) as info:
        await item.locator(".file-download").click()
    saved = tmp_path / "saved.txt"
    await (await info.value).save_as(str(saved))
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest

    for page in (host, guest):
        assert await page.evaluate("() => window.consilium.state") == "joined"
        assert await _violations(page) == [], page.consilium_console

    # The listener does see a violation: an inline <style> block is refused.
    await host.evaluate(
        "() => { const s = document.createElement('style');"
        " s.textContent = 'body { color: red }'; document.head.append(s); }"
    )
    await host.wait_for_function("() => window.__csp.length > 0", timeout=UI_TIMEOUT_MS)
    assert "style-src" in (await _violations(host))[0]
    await _close_all(host, guest)
