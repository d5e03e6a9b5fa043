"""A 2 GiB tus upload through a real ``consilium serve`` subprocess: the body is streamed to
disk and hashed as it arrives, so the server's peak RSS (VmHWM) barely moves.

The bytes are generated as they are sent (tools.bench_upload.PatternSource), never held in
memory on either side; everything written is deleted at the end.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp

from tools.bench_upload import (
    GIB,
    PatternSource,
    consilium_server,
    proc_status_kb,
    shared_sha256,
    tus_upload,
)

TOTAL = 2 * GIB
MAX_RSS_GROWTH_MB = 200


async def test_two_gib_upload_keeps_server_memory_flat(tmp_path: Path) -> None:
    try:
        async with (
            consilium_server(tmp_path, max_upload=TOTAL) as server,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http,
        ):
            before_kb = proc_status_kb(server.pid, "VmHWM")
            source = PatternSource(TOTAL)
            # Chunked transfer encoding: no Content-Length, the server counts against
            # Upload-Length itself.
            file_id = await tus_upload(http, server.url, "big", source, chunked=True)
            growth_mb = (proc_status_kb(server.pid, "VmHWM") - before_kb) / 1024
            assert source.sent == TOTAL
            assert growth_mb < MAX_RSS_GROWTH_MB, f"peak RSS grew by {growth_mb:.0f} MB"
            assert await shared_sha256(http, server.url, "big", file_id) == source.sha256
            blob = server.data_dir / "blobs" / source.sha256[:2] / source.sha256
            assert blob.stat().st_size == TOTAL
            assert list((server.data_dir / "uploads").iterdir()) == []
    finally:
        shutil.rmtree(tmp_path / "data", ignore_errors=True)
