"""Fixtures for the real-browser tests: a Consilium server subprocess and Debian's chromium.

Run them inside the loopback-only namespace:
``bash tools/in_netns.sh .venv/bin/pytest tests/browser``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tools.browser_rig import CHROMIUM_ARGS as BROWSER_RIG_ARGS

REPO = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 60.0

# Chromium flags from REFERENCE.md: fake camera/mic, loopback ICE, no outside traffic.
CHROMIUM_ARGS = BROWSER_RIG_ARGS


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One ``python -m signaling.cli serve`` child with its output captured to a file."""

    def __init__(self, extra_args: list[str], log_path: Path) -> None:
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSILIUM_")}
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "signaling.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--ice-host",
            "127.0.0.1",
            *extra_args,
        ]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SERVER_START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            if await loop.run_in_executor(None, self._healthy):
                return
            if loop.time() > deadline:
                pytest.fail(f"server did not answer /healthz in time:\n{self.output()}")
            await asyncio.sleep(0.2)

    def _healthy(self) -> bool:
        import json
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as resp:
                return resp.status == 200 and json.load(resp).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


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
