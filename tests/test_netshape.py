"""tools/netshape.py: a real veth link to another namespace, capped with tc tbf.

Needs the private namespace of tools/in_netns.sh (CAP_NET_ADMIN, veth, tbf). Outside it the
webrtc marker skips these tests; in CI a namespace that cannot do veth + tbf is an error.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tools.netshape import CappedNamespace

pytestmark = pytest.mark.webrtc

CAP_BPS = 2_000_000
SEND_S = 1.5

# Count UDP payload bytes from the first to the last datagram; stop after 0.3 s of silence.
RECEIVER = r"""
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
s.settimeout(5.0)
total = count = 0
first = last = 0.0
try:
    while True:
        n = len(s.recv(65536))
        last = time.monotonic()
        if not count:
            first = last
            s.settimeout(0.3)
        total += n
        count += 1
except socket.timeout:
    pass
print(json.dumps({"bytes": total, "count": count, "seconds": last - first}), flush=True)
"""

# Send 1200-byte datagrams (RTP-sized) as fast as the socket takes them.
SENDER = r"""
import errno, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
payload = bytes(1200)
deadline = time.monotonic() + float(sys.argv[3])
while time.monotonic() < deadline:
    try:
        s.send(payload)
    except OSError as exc:
        # ENOBUFS: tbf's queue is full; ECONNREFUSED: an early ICMP. Keep pushing.
        if exc.errno not in (errno.ENOBUFS, errno.ECONNREFUSED):
            raise
"""


def _require_netshape() -> None:
    reason = CappedNamespace.unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to shape a veth link: {reason}")
    pytest.skip(reason)


def _throughput_bps(
    receiver_prefix: list[str], receiver_addr: str, sender_prefix: list[str]
) -> float:
    """UDP goodput from the sender side to the receiver side, in bit/s."""
    receiver = subprocess.Popen(
        [*receiver_prefix, sys.executable, "-c", RECEIVER, receiver_addr],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        port = receiver.stdout.readline().strip()
        assert port, "the receiver did not start"
        subprocess.run(
            [*sender_prefix, sys.executable, "-c", SENDER, receiver_addr, port, str(SEND_S)],
            check=True,
            timeout=SEND_S + 10,
        )
        out, _ = receiver.communicate(timeout=10)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    result = json.loads(out)
    assert result["count"] > 10, result
    return float(result["bytes"] * 8 / result["seconds"])


def _interfaces() -> list[str]:
    # Not /sys/class/net: sysfs shows the namespace that mounted it, not ours.
    return [name for _, name in socket.if_nameindex()]


def test_downlink_cap_limits_udp_and_lifts() -> None:
    _require_netshape()
    with CappedNamespace("nstest") as ns:
        inside = ns.command([])
        ns.set_downlink(CAP_BPS)
        capped = _throughput_bps(inside, ns.peer_addr, [])
        ns.set_downlink(None)
        free = _throughput_bps(inside, ns.peer_addr, [])
        # The uplink is shaped on the namespace's own veth end: our side receives.
        ns.set_uplink(CAP_BPS)
        up_capped = _throughput_bps([], ns.host_addr, inside)
    print(
        f"downlink capped {capped / 1e6:.2f} Mbit/s, uncapped {free / 1e6:.1f} Mbit/s, "
        f"uplink capped {up_capped / 1e6:.2f} Mbit/s (cap {CAP_BPS / 1e6:g})"
    )
    assert 0.5 * CAP_BPS <= capped <= 1.15 * CAP_BPS
    assert free > 3 * CAP_BPS
    assert 0.5 * CAP_BPS <= up_capped <= 1.15 * CAP_BPS


def test_exit_leaves_nothing_behind() -> None:
    _require_netshape()
    ns = CappedNamespace("nstest")
    with ns:
        ns.set_downlink(CAP_BPS)
        ns.set_uplink(CAP_BPS)
        pid = ns.pid
        host_if = ns.host_if
        assert host_if in _interfaces()
    ns.close()  # a second close is harmless
    assert host_if not in _interfaces()
    assert not Path(f"/proc/{pid}").exists(), "the holder was not reaped"


def test_two_namespaces_coexist() -> None:
    _require_netshape()
    with (
        CappedNamespace("nsa") as a,
        CappedNamespace("nsb", host_addr="10.77.1.1", peer_addr="10.77.1.2") as b,
    ):
        assert a.host_if != b.host_if
        for ns in (a, b):
            # A TCP listener on our side of each link answers from inside that namespace.
            with socket.create_server((ns.host_addr, 0)) as server:
                port = server.getsockname()[1]
                probe = f"import socket; socket.create_connection(({ns.host_addr!r}, {port}), 5)"
                subprocess.run(ns.command([sys.executable, "-c", probe]), check=True, timeout=10)


# Minimal flags for a headless Debian chromium as root with no outside traffic (the list in
# tests/browser/conftest.py is not importable from here: tests/ is not a package).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BROWSER_CAP_BPS = 1_000_000
BLOB_BYTES = 200_000  # 1.6 s at the cap


@pytest.mark.browser
async def test_chromium_behind_the_cap(tmp_path: Path) -> None:
    _require_netshape()
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    playwright_api = pytest.importorskip("playwright.async_api")
    (tmp_path / "index.html").write_text("<title>netshape ok</title>")
    (tmp_path / "blob.bin").write_bytes(os.urandom(BLOB_BYTES))
    async with CappedNamespace("nsweb") as ns:
        handler = functools.partial(_QuietHandler, directory=str(tmp_path))
        httpd = ThreadingHTTPServer((ns.host_addr, 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        base = f"http://{ns.host_addr}:{httpd.server_address[1]}"
        wrapper = ns.wrapper_script(chromium, tmp_path)
        try:
            with tempfile.TemporaryDirectory(prefix="consilium-chromium-") as home:
                async with playwright_api.async_playwright() as pw:
                    browser = await pw.chromium.launch(
                        executable_path=str(wrapper),
                        headless=True,
                        args=CHROMIUM_ARGS,
                        env={**os.environ, "HOME": home},
                        timeout=60_000,
                    )
                    try:
                        page = await browser.new_page()
                        await page.goto(f"{base}/", timeout=30_000)
                        assert await page.title() == "netshape ok"
                        # Inside, 127.0.0.1 is the namespace's own loopback: nothing listens.
                        reached = await page.evaluate(
                            f"fetch('http://127.0.0.1:{httpd.server_address[1]}/')"
                            ".then(() => true, () => false)"
                        )
                        assert reached is False
                        ns.set_downlink(BROWSER_CAP_BPS)
                        capped_s = await _fetch_seconds(page, f"{base}/blob.bin")
                        ns.set_downlink(None)
                        free_s = await _fetch_seconds(page, f"{base}/blob.bin?again")
                    finally:
                        await browser.close()
        finally:
            httpd.shutdown()
            httpd.server_close()
    print(f"chromium fetched {BLOB_BYTES} B in {capped_s:.2f} s capped, {free_s:.3f} s free")
    expected_s = BLOB_BYTES * 8 / BROWSER_CAP_BPS
    assert capped_s >= 0.7 * expected_s
    assert free_s < capped_s / 3


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


async def _fetch_seconds(page: Any, url: str) -> float:
    script = (
        "async (url) => { const t = performance.now();"
        " const n = (await (await fetch(url, {cache: 'no-store'})).arrayBuffer()).byteLength;"
        " return [n, (performance.now() - t) / 1000]; }"
    )
    size, seconds = await page.evaluate(script, url)
    assert size == BLOB_BYTES
    return float(seconds)
