"""What a chat message costs the server: Consilium's chat (stored, audited, ordered) next to a
bare WebSocket broadcast.

    bash tools/in_netns.sh .venv/bin/python -m tools.bench_chat [--participants 6]
        [--messages 2000] [--rate 200] [--text-chars 4000]

Starts ``consilium serve`` as a subprocess on loopback (temporary ``--data-dir``, deleted at the
end), joins N plain WebSocket participants (no media) and sends ``--messages`` chat messages,
senders taking turns: the first half at ``--rate`` messages per second, the second half as fast
as the client can write them. For each phase it measures the latency from send to receipt at
every other participant (p50/p95/p99/max), messages delivered per second and the server's CPU
seconds per 1000 messages (from /proc/<pid>/stat); then the server's peak RSS (VmHWM) and how
long a late joiner takes to fetch the whole history with ``chat-sync`` paging. Messages are
short lines unless ``--text-chars`` pads them (4000 is the longest the server accepts).

The baseline, in the same run, is a tiny aiohttp server (also a subprocess) that only numbers
and broadcasts what it gets, and keeps it in a Python list for the catch-up: no database, no
audit trail, no validation. The difference is what persistence, audit and ordering cost.
``tests/test_bench_chat_smoke.py`` runs the same code with tiny parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from signaling.messages import PROTOCOL_VERSION
from tools.bench_upload import cpu_seconds, free_port, proc_status_kb, running

SECRET = "bench-chat-secret-0123456789abcdef"
API_KEY = "bench-chat-api-key-0123456789"
ROOM = "bench-chat"
PAGE = 200  # the server's history page (signaling.chat.HISTORY_PAGE); the baseline uses it too
WAIT_S = 120.0  # for one phase's deliveries: generous, a shared 2-core machine can be slow
FILLER = "Befund unauffällig, Kontrolle in 6 Wochen. "  # a clinician's note, not only ASCII


def message_text(n: int, sender: str, chars: int) -> str:
    """A short line, or padded to ``chars`` characters (the limit is 4000)."""
    text = f"message {n} from {sender}"
    if chars > len(text):
        text += " " + FILLER * (chars // len(FILLER) + 1)
        text = text[:chars]
    return text


@dataclass
class Received:
    seq: int
    client_id: str
    sender: str
    at: float  # perf_counter() when the reader parsed it


class Participant:
    """One signaling socket; every chat-message is timestamped as it is read."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, identity: str) -> None:
        self.ws = ws
        self.id = identity
        self.received: list[Received] = []
        self.pages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._target = 0
        self._reached = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def join(cls, http: aiohttp.ClientSession, url: str, token: str) -> Participant:
        ws = await http.ws_connect(url.replace("http", "ws", 1) + "/ws", max_msg_size=0)
        await ws.send_str(json.dumps({"type": "join", "token": token, "version": PROTOCOL_VERSION}))
        async with asyncio.timeout(30):
            while True:
                msg = await ws.receive()
                if msg.type != WSMsgType.TEXT:
                    raise RuntimeError(f"socket ended before joined: {msg.type}")
                data = json.loads(msg.data)
                if data.get("type") == "joined":
                    return cls(ws, str(data["self"]["id"]))
                if data.get("type") == "error":
                    raise RuntimeError(f"join refused: {data}")

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            now = time.perf_counter()
            data = json.loads(msg.data)
            kind = data.get("type")
            if kind == "chat-message":
                m = data["message"]
                self.received.append(Received(m["seq"], m["clientId"], m["from"]["id"], now))
                if len(self.received) >= self._target:
                    self._reached.set()
            elif kind == "chat-history":
                self.pages.put_nowait(data)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def wait_for(self, count: int) -> None:
        """Until this participant has received ``count`` chat messages in all."""
        self._target = count
        self._reached.clear()
        if len(self.received) < count:
            await self._reached.wait()

    async def history(self) -> tuple[list[dict[str, Any]], int]:
        """The whole history through chat-sync paging: (messages, pages)."""
        messages: list[dict[str, Any]] = []
        after, pages = 0, 0
        while True:
            await self.send({"type": "chat-sync", "after": after})
            page = await self.pages.get()
            pages += 1
            messages += page["messages"]
            if not page["more"] or not page["messages"]:
                return messages, pages
            after = page["messages"][-1]["seq"]

    async def close(self) -> None:
        await self.ws.close()
        with contextlib.suppress(Exception):
            await self._reader


# --------------------------------------------------------------------------- results


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class Phase:
    name: str
    messages: int
    latencies_ms: list[float]  # one per delivery to a participant other than the sender
    seconds: float  # first send to the last delivery
    cpu_s: float  # server process

    def pct(self, p: float) -> float:
        return percentile(sorted(self.latencies_ms), p)

    @property
    def max_ms(self) -> float:
        return max(self.latencies_ms) if self.latencies_ms else math.nan

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else math.nan

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s / self.messages * 1000 if self.messages else math.nan


@dataclass
class Result:
    label: str
    participants: int
    phases: list[Phase] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)  # client ids in send order
    # Per participant: the (seq, clientId) sequence it received.
    streams: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    hwm_mb: float = 0.0
    catchup_s: float = 0.0
    catchup_pages: int = 0
    catchup: list[tuple[int, str]] = field(default_factory=list)

    @property
    def delivered_to_all(self) -> bool:
        """Every participant received every message (its own included) exactly once."""
        want = sorted(self.sent)
        return all(sorted(c for _, c in s) == want for s in self.streams.values())

    @property
    def in_order(self) -> bool:
        """Seqs 1..N at every participant, and the same message at the same seq everywhere."""
        streams = list(self.streams.values())
        if not streams:
            return False
        first = streams[0]
        return [s for s, _ in first] == list(range(1, len(first) + 1)) and all(
            s == first for s in streams
        )

    @property
    def catchup_complete(self) -> bool:
        """The late joiner's history is the room's whole stream, in order."""
        streams = list(self.streams.values())
        return bool(streams) and self.catchup == streams[0]

    @property
    def ok(self) -> bool:
        return self.delivered_to_all and self.in_order and self.catchup_complete


# --------------------------------------------------------------------------- running a phase


async def run_phase(
    name: str,
    people: list[Participant],
    pid: int,
    start: int,
    count: int,
    rate: float | None,
    result: Result,
    text_chars: int = 0,
) -> Phase:
    """Send ``count`` messages round-robin (at ``rate``/s, or as fast as possible) and wait
    until everyone has them."""
    sent_at: dict[str, float] = {}
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    for i in range(count):
        n = start + i
        if rate is not None:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        client_id = f"m{n}"
        sender = people[n % len(people)]
        sent_at[client_id] = time.perf_counter()
        result.sent.append(client_id)
        text = message_text(n, sender.id, text_chars)
        await sender.send({"type": "chat-send", "clientId": client_id, "text": text})
        if rate is None:
            await asyncio.sleep(0)  # let the readers timestamp what has arrived
    total = start + count
    async with asyncio.timeout(WAIT_S):
        await asyncio.gather(*(p.wait_for(total) for p in people))
    cpu = cpu_seconds(pid) - cpu0
    latencies = []
    last = t0
    for p in people:
        for r in p.received[start:total]:
            last = max(last, r.at)
            if r.sender != p.id:
                latencies.append((r.at - sent_at[r.client_id]) * 1000)
    return Phase(name, count, latencies, last - t0, cpu)


async def run_clients(
    label: str,
    url: str,
    pid: int,
    tokens: list[str],
    late_token: str,
    messages: int,
    rate: float,
    text_chars: int = 0,
) -> Result:
    result = Result(label, len(tokens))
    paced = messages // 2
    async with aiohttp.ClientSession() as http:
        people = [await Participant.join(http, url, t) for t in tokens]
        try:
            result.phases.append(
                await run_phase(f"{rate:g} msg/s", people, pid, 0, paced, rate, result, text_chars)
            )
            result.phases.append(
                await run_phase(
                    "max rate", people, pid, paced, messages - paced, None, result, text_chars
                )
            )
            result.streams = {p.id: [(r.seq, r.client_id) for r in p.received] for p in people}
            late = await Participant.join(http, url, late_token)
            try:
                t0 = time.perf_counter()
                async with asyncio.timeout(WAIT_S):
                    history, result.catchup_pages = await late.history()
                result.catchup_s = time.perf_counter() - t0
                result.catchup = [(m["seq"], m["clientId"]) for m in history]
            finally:
                await late.close()
        finally:
            for p in people:
                await p.close()
    result.hwm_mb = proc_status_kb(pid, "VmHWM") / 1024
    return result


# --------------------------------------------------------------------------- the two servers


async def mint(http: aiohttp.ClientSession, url: str, identity: str) -> str:
    async with http.post(
        f"{url}/api/tokens",
        json={"room": ROOM, "name": identity, "identity": identity, "role": "specialist"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"token refused: {resp.status} {await resp.text()}")
        return str((await resp.json())["token"])


@contextlib.asynccontextmanager
async def consilium(workdir: Path, participants: int) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    argv = [
        sys.executable, "-m", "signaling.cli", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--ice-host", "127.0.0.1", "--secret", SECRET,
        "--api-key", API_KEY, "--data-dir", str(workdir / "data"),
        "--recordings-dir", str(workdir / "rec"),
        "--max-participants", str(participants + 1), "--log-level", "WARNING",
    ]  # fmt: skip
    async with running(argv, "/healthz", port, workdir) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


@contextlib.asynccontextmanager
async def baseline(workdir: Path) -> AsyncIterator[tuple[str, int]]:
    port = free_port()
    argv = [sys.executable, "-m", "tools.bench_chat", "--baseline-server", str(port)]
    async with running(argv, "/up", port, workdir) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


async def bench(
    participants: int, messages: int, rate: float, workdir: Path, text_chars: int = 0
) -> list[Result]:
    ids = [f"p{i}" for i in range(participants)]
    results = []
    async with consilium(workdir, participants) as (url, pid):
        async with aiohttp.ClientSession() as http:
            tokens = [await mint(http, url, i) for i in ids]
            late = await mint(http, url, "late")
        results.append(
            await run_clients("consilium chat", url, pid, tokens, late, messages, rate, text_chars)
        )
    async with baseline(workdir) as (url, pid):
        # The baseline checks no token: it takes it as the participant's id.
        results.append(
            await run_clients(
                "bare WS broadcast", url, pid, ids, "late", messages, rate, text_chars
            )
        )
    return results


def print_table(results: list[Result], messages: int, text_chars: int = 0) -> None:
    n = results[0].participants
    size = f" of {text_chars} characters" if text_chars else ""
    print(f"\nchat: {n} participants, {messages} messages{size} round-robin, over loopback")
    head = (
        f"  {'':18} {'phase':>11} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7}"
        f" {'msg/s':>7} {'deliv/s':>8} {'CPU s/1k':>9}"
    )
    print(head)
    for r in results:
        for ph in r.phases:
            deliveries = ph.msgs_per_s * (r.participants - 1)
            print(
                f"  {r.label:18} {ph.name:>11} {ph.pct(50):7.1f} {ph.pct(95):7.1f}"
                f" {ph.pct(99):7.1f} {ph.max_ms:7.1f} {ph.msgs_per_s:7.0f} {deliveries:8.0f}"
                f" {ph.cpu_per_1000:9.3f}"
            )
    print(f"\n  {'':18} {'VmHWM MB':>9} {'catch-up ms':>12} {'pages':>6}  all delivered, in order")
    for r in results:
        ok = "yes" if r.ok else "NO"
        print(
            f"  {r.label:18} {r.hwm_mb:9.0f} {r.catchup_s * 1000:12.1f} {r.catchup_pages:6d}  {ok}"
        )


# --------------------------------------------------------------------------- baseline server


def run_baseline_server(port: int) -> None:
    """Numbers chat-send messages and broadcasts them; pages them back from a list."""
    sockets: list[web.WebSocketResponse] = []
    history: list[dict[str, Any]] = []

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        identity = ""
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                kind = data.get("type")
                if kind == "join":
                    identity = str(data.get("token"))
                    sockets.append(ws)
                    await ws.send_json({"type": "joined", "self": {"id": identity}})
                elif kind == "chat-send":
                    message = {
                        "seq": len(history) + 1,
                        "from": {"id": identity},
                        "clientId": data.get("clientId"),
                        "text": data.get("text"),
                        "sentAt": int(time.time() * 1000),
                    }
                    history.append(message)
                    text = json.dumps({"type": "chat-message", "message": message})
                    for other in list(sockets):
                        with contextlib.suppress(Exception):
                            await other.send_str(text)
                elif kind == "chat-sync":
                    after = int(data.get("after", 0))
                    page = history[after : after + PAGE]
                    more = after + PAGE < len(history)
                    await ws.send_json({"type": "chat-history", "messages": page, "more": more})
        finally:
            if ws in sockets:
                sockets.remove(ws)
        return ws

    async def up(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/up", up)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--participants", type=int, default=6, help="senders (default 6)")
    parser.add_argument("--messages", type=int, default=2000, help="in all (default 2000)")
    parser.add_argument(
        "--rate", type=float, default=200.0, help="offered msg/s of the first half (default 200)"
    )
    parser.add_argument(
        "--text-chars",
        type=int,
        default=0,
        help="pad each message to this many characters (default: a short line; limit 4000)",
    )
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server:
        run_baseline_server(args.baseline_server)
        return 0
    if args.participants < 2 or args.messages < 2 or args.rate <= 0:
        parser.error("need at least 2 participants, 2 messages and a positive rate")
    workdir = Path(tempfile.mkdtemp(prefix="consilium-bench-chat-"))
    try:
        results = asyncio.run(
            bench(args.participants, args.messages, args.rate, workdir, args.text_chars)
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(results, args.messages, args.text_chars)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
