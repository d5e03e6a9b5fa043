"""Fixtures for the real-browser tests: a Consilium server subprocess and Debian's chromium.

Run them inside the loopback-only namespace:
``bash tools/in_netns.sh .venv/bin/pytest tests/browser``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tools.browser_rig import CHROMIUM_ARGS as BROWSER_RIG_ARGS
from tools.browser_rig import Server

SERVER_START_TIMEOUT_S = 60.0

# Chromium flags from REFERENCE.md: fake camera/mic, loopback ICE, no outside traffic.
CHROMIUM_ARGS = BROWSER_RIG_ARGS


class ServerProcess(Server):
    """The web client's server on loopback, as a user starts it, failing the test if it dies."""

    def __init__(self, extra_args: list[str], log_path: Path) -> None:
        super().__init__(["127.0.0.1"], log_path, tuple(extra_args), host="127.0.0.1")
        self.base_url = self.url

    async def wait_ready(self) -> None:  # type: ignore[override]  # async for the event loop
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVER_START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            if await loop.run_in_executor(None, self.healthy):
                return
            if loop.time() > deadline:
                pytest.fail(f"server did not answer /healthz in time:\n{self.output()}")
            await asyncio.sleep(0.2)


@pytest.fixture
def chromium_args() -> list[str]:
    return list(CHROMIUM_ARGS)


@pytest.fixture
def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Awaitable[ServerProcess]]]:
    """Start servers on demand; at the end stop them and fail on any Traceback they printed."""
    started: list[ServerProcess] = []

    async def start(*extra_args: str) -> ServerProcess:
        server = ServerProcess(list(extra_args), tmp_path / f"server-{len(started)}.log")
        started.append(server)
        await server.wait_ready()
        return server

    yield start
    problems = []
    for server in started:
        server.stop()
        out = server.output()
        if "Traceback" in out:
            problems.append(out)
    if problems:
        pytest.fail("the server printed a Traceback:\n" + "\n-----\n".join(problems))


@pytest.fixture
async def live_server(
    server_factory: Callable[..., Awaitable[ServerProcess]],
) -> ServerProcess:
    """A dev-mode server subprocess (no secret: /api/dev-token is on).

    Named apart from tests/conftest.py's in-process ``server``: the browser tests want the real
    CLI entry point, exactly as a user starts it.
    """
    return await server_factory()


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[object]:
    playwright_api = pytest.importorskip("playwright.async_api")
    with tempfile.TemporaryDirectory(prefix="consilium-chromium-") as home:
        # A private HOME keeps chromium's caches and crash dumps out of the real one.
        env = {**os.environ, "HOME": home}
        async with playwright_api.async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=chromium_path,
                headless=True,
                args=CHROMIUM_ARGS,
                env=env,
                timeout=60_000,
            )
            try:
                yield browser
            finally:
                await browser.close()
