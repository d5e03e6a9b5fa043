"""A page reloaded in the middle of an upload carries on where it stopped, in a real browser.

A bedside phone that reloads the page (or a browser that crashes) half-way through a large
study must not send it all again: tus-js-client keeps the upload's URL in localStorage under
the file's fingerprint, and sharing the same file again after the reload resumes from the
server's offset. The page's upload bandwidth is throttled (Chromium's network emulation) so
that the reload reliably lands mid-way; the server's tus state and its byte counter prove that
only the remainder was sent the second time.

Reuses the workspace module's fixtures (its own server and Chromium for this module). Every
wait has a generous timeout and nothing asserts on elapsed time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_workspace_ui import UI_TIMEOUT_MS, _close_all, _open, _open_chat
from test_workspace_ui import server as reload_server  # noqa: F401  (fixtures, by these names)
from test_workspace_ui import shared_browser as reload_browser  # noqa: F401

from tools.browser_rig import Server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.webrtc,
    pytest.mark.asyncio(loop_scope="module"),
]

SIZE = 4 * 1024 * 1024
THROTTLE_BPS = 512 * 1024  # about 8 s for the whole file: the reload comes after ~2.5 s
COUNTER = "consilium_tus_received_bytes_total"

# The tus upload URLs this page's localStorage remembers (tus-js-client's fingerprints).
STORED_UPLOADS_JS = """() => Object.keys(localStorage)
  .filter((k) => k.startsWith('tus::'))
  .map((k) => JSON.parse(localStorage.getItem(k)).uploadUrl)"""

# Every text the upload's status line shows, however briefly (the resume notice is transient).
WATCH_STATUS_JS = """() => {
  window.__statusLog = [];
  new MutationObserver(() => {
    for (const el of document.querySelectorAll('#uploads .upload-status')) {
      const t = el.textContent;
      if (t && window.__statusLog[window.__statusLog.length - 1] !== t) window.__statusLog.push(t);
    }
  }).observe(document.getElementById('uploads'),
    { subtree: true, childList: true, characterData: true });
}"""


async def _received_bytes(http: aiohttp.ClientSession, base_url: str) -> float:
    async with http.get(f"{base_url}/metrics") as resp:
        assert resp.status == 200, resp.status
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(COUNTER + " "):
            return float(line.split()[1])
    raise AssertionError(f"{COUNTER} missing from /metrics")


async def _throttle(page: Any, upload_bps: int) -> Any:
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": upload_bps},
    )
    return cdp


async def test_reload_mid_upload_resumes_from_the_servers_offset(
    reload_browser: Any,  # noqa: F811
    reload_server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    study = tmp_path / "MR study.zip"
    study.write_bytes(os.urandom(SIZE))
    digest = hashlib.sha256(study.read_bytes()).hexdigest()
    room = "reloadui"
    async with aiohttp.ClientSession() as http:
        # An invitation link: the reloaded page is the same participant, who owns the upload.
        async with http.get(
            f"{reload_server.url}/api/dev-token?room={room}&name=Bedside&role=bedside"
        ) as resp:
            token = (await resp.json())["token"]
        url = f"{reload_server.url}/?token={token}"
        received_before = await _received_bytes(http, reload_server.url)

        page = await _open(reload_browser, url)
        cdp = await _throttle(page, THROTTLE_BPS)
        await page.set_input_files("#file-input", str(study))
        # Well under way (the page's own progress), then the page is reloaded mid-PATCH.
        await page.wait_for_function(
            "() => { const p = document.querySelector('#uploads .upload progress');"
            " return !!p && p.closest('.upload').dataset.state === 'uploading'"
            " && p.value >= 30; }",
            timeout=UI_TIMEOUT_MS,
        )
        stored = await page.evaluate(STORED_UPLOADS_JS)
        assert len(stored) == 1 and f"/api/rooms/{room}/uploads/" in stored[0], stored
        upload_url = stored[0]
        await page.reload()
        await page.wait_for_function(
            "() => window.consilium && window.consilium.state === 'joined'",
            timeout=UI_TIMEOUT_MS,
        )

        # The server kept what arrived before the reload (HEAD waits for the cut PATCH to save).
        headers = {"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
        async with http.head(upload_url, headers=headers) as resp:
            assert resp.status == 200, resp.status
            offset = int(resp.headers["Upload-Offset"])
        assert 0 < offset < SIZE, offset
        first_try = await _received_bytes(http, reload_server.url) - received_before
        assert first_try == offset, (first_try, offset)

        # The same file shared again after the reload: only the remainder goes up.
        await cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        assert await page.evaluate(STORED_UPLOADS_JS) == [upload_url]
        requests: list[str] = []
        page.on(
            "request",
            lambda r: requests.append(r.method) if "/uploads" in r.url else None,
        )
        await page.evaluate(WATCH_STATUS_JS)
        await page.set_input_files("#file-input", str(study))
        done = page.locator("#uploads .upload[data-state=done]")
        await done.wait_for(timeout=UI_TIMEOUT_MS)
        record = await page.evaluate("() => window.consilium.files.uploads[0]")
        assert record["instant"] is False and record["fileId"], record
        assert record["resumedFrom"] == offset, record
        statuses = await page.evaluate("() => window.__statusLog")
        resuming = f"Resuming from {offset * 100 // SIZE} %"
        assert any(s.startswith(resuming) for s in statuses), statuses
        assert "POST" not in requests and requests[:2] == ["HEAD", "PATCH"], requests
        total = await _received_bytes(http, reload_server.url) - received_before
        assert total == SIZE, (total, SIZE, offset)  # not 2x: the first part was not sent again
        # Finished: the upload is gone, and so is the page's stored fingerprint.
        async with http.head(upload_url, headers=headers) as resp:
            assert resp.status == 404, resp.status
        assert await page.evaluate(STORED_UPLOADS_JS) == []

    # One blob with the file's bytes, and one chat attachment.
    blobs = [p for p in (reload_server.data_dir / "blobs").rglob("*") if p.is_file()]  # type: ignore[attr-defined]
    assert [p.name for p in blobs] == [digest], blobs
    assert hashlib.sha256(blobs[0].read_bytes()).hexdigest() == digest
    await _open_chat(page)
    card = f'#chat-log .file-card[data-file-id="{record["fileId"]}"]'
    await page.wait_for_selector(card, timeout=UI_TIMEOUT_MS)
    assert await page.locator(card).count() == 1
    assert await page.locator("#chat-log .file-card").count() == 1
    assert record["name"] == study.name
    await _close_all(page)
