"""What a large upload costs the server: tus (stream + hash + blob) next to a plain streamed PUT.

    bash tools/in_netns.sh .venv/bin/python -m tools.bench_upload [--gb 2] [--chunk-kib 1024]

Starts ``consilium serve`` as a subprocess on loopback and uploads ``--gb`` GiB through tus
(one creation POST, one streamed PATCH); then, as the baseline, the same bytes to a tiny
aiohttp server (also a subprocess) whose PUT handler only streams the body to a file — no
hashing, no tus, no database. For each it prints throughput, the server's CPU seconds and its
peak RSS (VmHWM) before and after. The bytes are generated as they are sent (never held in
memory) and every file is deleted at the end.

``tests/test_files_large.py`` uses the same helpers to check memory stays bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

GIB = 1024**3
MIB = 1024**2
SECRET = "bench-upload-secret-0123456789abcdef"
API_KEY = "bench-upload-api-key-0123456789"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` size (VmHWM = peak RSS, VmRSS = now) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


def _spawn(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


async def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {_tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not start in time")


@contextlib.asynccontextmanager
async def running(argv: list[str], probe: str, port: int, workdir: Path) -> AsyncIterator[Any]:
    log = workdir / f"server-{port}.log"
    proc = _spawn(argv, log)
    try:
        await _wait_until_up(f"http://127.0.0.1:{port}{probe}", proc, log)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def consilium_server(
    workdir: Path, max_upload: int = 8 * GIB
) -> AsyncIterator[ServerProcess]:
    port = free_port()
    data = workdir / "data"
    argv = [
        sys.executable, "-m", "signaling.cli", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--ice-host", "127.0.0.1", "--secret", SECRET,
        "--api-key", API_KEY, "--data-dir", str(data),
        "--recordings-dir", str(workdir / "rec"), "--max-upload-bytes", str(max_upload),
        "--log-level", "WARNING",
    ]  # fmt: skip
    async with running(argv, "/healthz", port, workdir) as proc:
        yield ServerProcess(proc, f"http://127.0.0.1:{port}", data)


@contextlib.asynccontextmanager
async def baseline_server(workdir: Path) -> AsyncIterator[ServerProcess]:
    port = free_port()
    out = workdir / "baseline"
    argv = [sys.executable, "-m", "tools.bench_upload", "--baseline-server", str(port), str(out)]
    async with running(argv, "/up", port, workdir) as proc:
        yield ServerProcess(proc, f"http://127.0.0.1:{port}", out)


class PatternSource:
    """``total`` bytes made on the fly, 1 MiB at a time (a random block stamped with a counter,
    so no two blocks are equal), hashed as they go out."""

    def __init__(self, total: int, chunk: int = MIB, seed: int = 1) -> None:
        self.total = total
        self.chunk = chunk
        self.block = bytearray(hashlib.shake_256(seed.to_bytes(8, "big")).digest(chunk))
        self.hasher = hashlib.sha256()
        self.sent = 0

    def chunks(self) -> Iterator[bytes]:
        index = 0
        while self.sent < self.total:
            self.block[:8] = index.to_bytes(8, "big")
            piece = bytes(self.block[: min(self.chunk, self.total - self.sent)])
            self.hasher.update(piece)
            self.sent += len(piece)
            index += 1
            yield piece

    async def stream(self) -> AsyncIterator[bytes]:
        for piece in self.chunks():
            yield piece

    @property
    def sha256(self) -> str:
        return self.hasher.hexdigest()


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


async def tus_upload(
    http: aiohttp.ClientSession,
    url: str,
    room: str,
    source: PatternSource,
    chunked: bool = False,
) -> str:
    """Create + one streamed PATCH (with Content-Length, or chunked); returns the file's id."""
    headers = {**bearer(), "Tus-Resumable": "1.0.0"}
    async with http.post(
        f"{url}/api/rooms/{room}/uploads",
        headers={**headers, "Upload-Length": str(source.total), "Upload-Metadata": ""},
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creation failed: {resp.status} {await resp.text()}")
        location = resp.headers["Location"]
    async with http.patch(
        url + location,
        data=source.stream(),
        headers={
            **headers,
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            **({} if chunked else {"Content-Length": str(source.total)}),
        },
    ) as resp:
        if resp.status != 204:
            raise RuntimeError(f"PATCH failed: {resp.status} {await resp.text()}")
        return resp.headers["Consilium-File-Id"]


async def shared_sha256(http: aiohttp.ClientSession, url: str, room: str, file_id: str) -> str:
    async with http.get(f"{url}/api/rooms/{room}/files", headers=bearer()) as resp:
        files = (await resp.json())["files"]
    return str(next(f["sha256"] for f in files if f["id"] == file_id))


@dataclass
class Measured:
    label: str
    seconds: float
    cpu_s: float
    hwm_before_mb: float
    hwm_after_mb: float
    total: int

    @property
    def mb_per_s(self) -> float:
        return self.total / MIB / self.seconds

    @property
    def hwm_growth_mb(self) -> float:
        return self.hwm_after_mb - self.hwm_before_mb


async def measure(label: str, pid: int, total: int, send: Any) -> Measured:
    hwm0, cpu0 = proc_status_kb(pid, "VmHWM") / 1024, cpu_seconds(pid)
    t0 = time.perf_counter()
    await send()
    seconds = time.perf_counter() - t0
    return Measured(
        label,
        seconds,
        cpu_seconds(pid) - cpu0,
        hwm0,
        proc_status_kb(pid, "VmHWM") / 1024,
        total,
    )


def _client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600, sock_read=120))


async def bench(total: int, chunk: int, workdir: Path) -> list[Measured]:
    results = []
    async with consilium_server(workdir) as server, _client() as http:
        source = PatternSource(total, chunk)
        file_id = ""

        async def send_tus() -> None:
            nonlocal file_id
            file_id = await tus_upload(http, server.url, "bench", source)

        results.append(await measure("consilium tus", server.pid, total, send_tus))
        if await shared_sha256(http, server.url, "bench", file_id) != source.sha256:
            raise RuntimeError("the server's sha256 differs from what was sent")
        shutil.rmtree(server.data_dir / "blobs", ignore_errors=True)
    async with baseline_server(workdir) as server, _client() as http:
        source = PatternSource(total, chunk)

        async def send_put() -> None:
            async with http.put(
                f"{server.url}/up", data=source.stream(), headers={"Content-Length": str(total)}
            ) as resp:
                if resp.status != 204:
                    raise RuntimeError(f"baseline PUT failed: {resp.status}")

        results.append(await measure("plain aiohttp PUT", server.pid, total, send_put))
    return results


def print_table(results: list[Measured]) -> None:
    gib = results[0].total / GIB
    print(f"\nupload of {gib:.2f} GiB over loopback (server is a subprocess):")
    print(f"  {'':20} {'MB/s':>8} {'CPU s':>7} {'CPU s/GiB':>10} {'VmHWM MB':>18}")
    for r in results:
        hwm = f"{r.hwm_before_mb:.0f} -> {r.hwm_after_mb:.0f}"
        print(f"  {r.label:20} {r.mb_per_s:8.0f} {r.cpu_s:7.2f} {r.cpu_s / gib:10.2f} {hwm:>18}")


# --------------------------------------------------------------------------- baseline server


def run_baseline_server(port: int, out_dir: Path) -> None:
    """PUT /up streams the body to a file: the least an upload can cost in aiohttp."""
    out_dir.mkdir(parents=True, exist_ok=True)

    async def put(request: web.Request) -> web.Response:
        # Kept, like the tus blob: dropping dirty pages unwritten would flatter the baseline.
        with (out_dir / "upload.bin").open("wb") as fp:
            async for chunk in request.content.iter_chunked(1 << 20):
                fp.write(chunk)
        return web.Response(status=204)

    async def up(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_put("/up", put)
    app.router.add_get("/up", up)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gb", type=float, default=2.0, help="GiB to upload (default 2)")
    parser.add_argument("--chunk-kib", type=int, default=1024, help="client write size")
    parser.add_argument(
        "--baseline-server", nargs=2, metavar=("PORT", "DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.baseline_server:
        run_baseline_server(int(args.baseline_server[0]), Path(args.baseline_server[1]))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="consilium-bench-upload-"))
    try:
        results = asyncio.run(bench(int(args.gb * GIB), args.chunk_kib * 1024, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
