"""Deleting a shared file in a real browser: who gets the Delete button, the confirmation, and
what the other pages show afterwards (gone from the Files list; the chat attachment stays,
marked removed, also for a page that joins later and gets it from history).

Reuses the workspace module's fixtures (its own server and Chromium for this module) and
helpers. Every wait has a generous timeout and nothing asserts on elapsed time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_workspace_ui import UI_TIMEOUT_MS, _close_all, _open, _open_chat
from test_workspace_ui import server as files_server  # noqa: F401  (fixtures, by these names)
from test_workspace_ui import shared_browser as files_browser  # noqa: F401

from tools.browser_rig import Server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.webrtc,
    pytest.mark.asyncio(loop_scope="module"),
]


def _card(where: str, file_id: str) -> str:
    return f'{where} .file-card[data-file-id="{file_id}"]'


async def _share(page: Any, path: Path) -> str:
    """Share a file through the file button; the id the server gave it."""
    before = await page.evaluate("() => window.consilium.files.uploads.length")
    await page.set_input_files("#file-input", str(path))
    await page.wait_for_function(
        f"() => window.consilium.files.uploads.length > {before}"
        " && window.consilium.files.uploads[0].fileId",
        timeout=UI_TIMEOUT_MS,
    )
    return str(await page.evaluate("() => window.consilium.files.uploads[0].fileId"))


async def _files_tab(page: Any) -> None:
    await _open_chat(page)
    await page.click("#tab-files")


async def test_host_deletes_a_shared_file_and_every_page_shows_it_removed(
    files_browser: Any,  # noqa: F811
    files_server: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    wrong = tmp_path / "wrong patient.txt"
    wrong.write_text("CT report of another patient")
    notes = tmp_path / "host notes.txt"
    notes.write_text("plan: repeat CT in 3 months")
    base = f"{files_server.url}/?room=deleteui"
    host = await _open(files_browser, f"{base}&name=Dr%20Host&role=host")
    bob = await _open(files_browser, f"{base}&name=Bob&role=specialist")

    wrong_id = await _share(bob, wrong)
    notes_id = await _share(host, notes)
    for page in (host, bob):
        await _files_tab(page)
        for file_id in (wrong_id, notes_id):
            await page.wait_for_selector(_card("#file-list", file_id), timeout=UI_TIMEOUT_MS)
    # Bob may delete what he shared, not the host's file; the host may delete both.
    assert await bob.is_visible(f"{_card('#file-list', wrong_id)} .file-delete")
    assert not await bob.is_visible(f"{_card('#file-list', notes_id)} .file-delete")
    assert await host.is_visible(f"{_card('#file-list', wrong_id)} .file-delete")

    # The host asks to delete Bob's file; Cancel keeps it, Delete removes it.
    delete_button = f"{_card('#file-list', wrong_id)} .file-delete"
    await host.click(delete_button)
    await host.wait_for_selector("#confirm-dialog[open]", timeout=UI_TIMEOUT_MS)
    assert "wrong patient.txt" in await host.inner_text("#confirm-title")
    await host.click("#confirm-dialog button[value=cancel]")
    await host.wait_for_selector("#confirm-dialog", state="hidden", timeout=UI_TIMEOUT_MS)
    assert await host.is_visible(_card("#file-list", wrong_id))
    await host.click(delete_button)
    await host.click("#confirm-ok")

    # Bob's page: gone from the list (the other file stays); the chat attachment is kept,
    # marked removed, and cannot be downloaded.
    await bob.wait_for_selector(
        _card("#file-list", wrong_id), state="detached", timeout=UI_TIMEOUT_MS
    )
    assert await bob.is_visible(_card("#file-list", notes_id))
    await bob.click("#tab-chat")
    removed = _card("#chat-log", wrong_id) + ".removed"
    await bob.wait_for_selector(removed, timeout=UI_TIMEOUT_MS)
    assert await bob.is_disabled(f"{removed} .file-download")
    assert "Removed" in await bob.inner_text(f"{removed} .file-download")
    await host.wait_for_selector(
        _card("#file-list", wrong_id), state="detached", timeout=UI_TIMEOUT_MS
    )
    await host.click("#tab-chat")
    await host.wait_for_selector(removed, timeout=UI_TIMEOUT_MS)

    # A page that joins afterwards gets the message from history with the attachment marked
    # removed by the server, and no such file in its list.
    late = await _open(files_browser, f"{base}&name=Late&role=specialist")
    await _open_chat(late)
    await late.wait_for_selector(removed, timeout=UI_TIMEOUT_MS)
    await late.click("#tab-files")
    await late.wait_for_selector(_card("#file-list", notes_id), timeout=UI_TIMEOUT_MS)
    assert await late.locator(_card("#file-list", wrong_id)).count() == 0
    await _close_all(host, bob, late)
