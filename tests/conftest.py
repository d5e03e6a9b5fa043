"""Shared fixtures: an in-process Consilium server on loopback."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sfu.room import Sfu
from signaling.app import create_app
from signaling.appkeys import SFU
from signaling.config import Settings


def in_loopback_namespace() -> bool:
    """True inside tools/in_netns.sh: the only network interface is loopback."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_loopback_namespace():
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI must run the tests through tools/in_netns.sh (make test)")
    skip = pytest.mark.skip(reason="WebRTC test: run it through tools/in_netns.sh (make test)")
    for item in items:
        if "webrtc" in item.keywords:
            item.add_marker(skip)


@dataclass
class RunningServer:
    url: str
    app: web.Application
    settings: Settings

    @property
    def sfu(self) -> Sfu:
        return self.app[SFU]


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    # Recordings and the database in the test's own directory, never the working tree.
    return Settings(
        host="127.0.0.1",
        port=0,
        ice_hosts=["127.0.0.1"],
        recordings_dir=str(tmp_path / "rec"),
        data_dir=str(tmp_path / "data"),
    )


@pytest.fixture
async def server(server_settings: Settings, tmp_path: Path) -> AsyncIterator[RunningServer]:
    if server_settings.data_dir == Settings.data_dir:
        # Settings built by a test module (parametrized) keep the defaults: move the database
        # and recordings into this test's directory too.
        server_settings = replace(
            server_settings,
            data_dir=str(tmp_path / "data"),
            recordings_dir=str(tmp_path / "rec"),
        )
    app = create_app(server_settings)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield RunningServer(str(test_server.make_url("")).rstrip("/"), app, server_settings)
    finally:
        await test_server.close()
