"""What forwarding costs: per-packet CPU of our byte path next to aiortc's object path, and the
server's CPU per forwarded stream with real peers.

    bash tools/in_netns.sh .venv/bin/python -m tools.bench_forward [--seconds 20] [--subscribers 3]

Part 1 runs both per-packet paths in this process on the same synthetic VP8 packets.
Part 2 starts ``consilium serve`` as a subprocess on loopback, connects one publisher and N
subscribers (aiortc, in this process) and reads the server process's CPU time from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from typing import Any

import aiohttp
from aiortc.rtp import RtpPacket

from media.rtp import build_rtp_packet, parse_rtp_header
from media.vp8 import parse_vp8_descriptor, rewrite_vp8_descriptor
from sfu.forwarder import Forwarder, IngressPacket
from sfu.vocabulary import MediaKind
from tools.browser_rig import free_port

# Janus 1.1.2 VideoRoom on this kind of machine (shared/REFERENCE.md), for comparison.
JANUS_US_PER_PACKET = 27.0


def _vp8_packets(count: int) -> list[bytes]:
    packets = []
    rng = random.Random(7)
    for i in range(count):
        keyframe = i % 300 == 0
        start = i % 3 == 0
        picture_id = (i // 3) & 0x7FFF
        descriptor = bytes(
            [0x90 | (0x10 if start else 0), 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF]
        )
        vp8_header = bytes([0x00 if keyframe else 0x01]) if start else b"\x00"
        payload = descriptor + vp8_header + rng.randbytes(1100)
        packets.append(
            build_rtp_packet(
                payload_type=96,
                marker=i % 3 == 2,
                sequence_number=i & 0xFFFF,
                timestamp=(i // 3) * 6000 & 0xFFFFFFFF,
                ssrc=0x1234,
                extensions=[(1, b"0"), (3, b"\x01\x02\x03")],
                payload=payload,
            )
        )
    return packets


def micro_benchmark(count: int = 20000, fanout: int = 3) -> dict[str, float]:
    packets = _vp8_packets(count)

    # Baseline: what a forwarder built on aiortc's RtpPacket objects does per packet.
    start = time.process_time()
    for data in packets:
        packet = RtpPacket.parse(data)
        for k in range(fanout):
            packet.ssrc = 0x5000 + k
            packet.sequence_number = (packet.sequence_number + 17) & 0xFFFF
            packet.serialize()
    object_path = time.process_time() - start

    forwarders = [
        Forwarder(MediaKind.VIDEO, "vp8", 90000, 100 * k, 1000 * k) for k in range(fanout)
    ]
    start = time.process_time()
    for i, data in enumerate(packets):
        header = parse_rtp_header(data)
        payload = data[header.payload_offset : header.payload_end]
        vp8 = parse_vp8_descriptor(payload)
        ingress = IngressPacket(header, header.ssrc, vp8.is_keyframe, vp8, i, len(payload))
        for fwd in forwarders:
            decision = fwd.forward(ingress, i)
            if decision.drop_reason is not None:
                continue
            out = bytearray(payload)
            rewrite_vp8_descriptor(out, vp8, picture_id=decision.picture_id, tl0picidx=None)
            build_rtp_packet(
                payload_type=97,
                marker=header.marker,
                sequence_number=decision.sequence_number,
                timestamp=decision.timestamp,
                ssrc=0x5000,
                extensions=[(1, b"1"), (2, b"\x01\x02\x03")],
                payload=out,
            )
    byte_path = time.process_time() - start
    egress = count * fanout
    return {
        "aiortc_object_path_us_per_egress": object_path / egress * 1e6,
        "consilium_byte_path_us_per_egress": byte_path / egress * 1e6,
    }


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _forwarded(session: aiohttp.ClientSession, base: str, room: str) -> int:
    total = 0
    async with session.get(f"{base}/api/rooms/{room}/participants") as r:
        people = (await r.json())["participants"]
    for p in people:
        async with session.get(f"{base}/api/rooms/{room}/participants/{p['id']}/stats") as r:
            stats: dict[str, Any] = await r.json()
        total += sum(int(c["forwarded"]) for c in stats["consumers"])
    return total


async def macro_benchmark(seconds: float, subscribers: int) -> dict[str, float]:
    from sfu.adapters.aiortc_adapter import configure_ice_hosts
    from tools.synthetic_client import SyntheticParticipant

    configure_ice_hosts(["127.0.0.1"])
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="consilium-bench-")  # the audit database, not ./data
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "signaling.cli", "serve", "--port", str(port), "--ice-host", "127.0.0.1"),
        *("--data-dir", data_dir),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    people: list[SyntheticParticipant] = []
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"{base}/healthz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            publisher = SyntheticParticipant(
                base, room="bench", name="publisher", video_size=(640, 480), fps=15
            )
            people.append(publisher)
            await publisher.join()
            for i in range(subscribers):
                sub = SyntheticParticipant(
                    base,
                    room="bench",
                    name=f"viewer{i}",
                    role="observer",
                    decode=False,
                )
                people.append(sub)
                await sub.join()
            await asyncio.sleep(5)  # let keyframes and negotiation settle
            cpu0, pkts0, t0 = (
                _cpu_seconds(proc.pid),
                await _forwarded(http, base, "bench"),
                time.monotonic(),
            )
            await asyncio.sleep(seconds)
            cpu1, pkts1, t1 = (
                _cpu_seconds(proc.pid),
                await _forwarded(http, base, "bench"),
                time.monotonic(),
            )
            rss = _rss_mb(proc.pid)
    finally:
        for p in people:
            await p.leave()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)
        shutil.rmtree(data_dir, ignore_errors=True)
    packets = pkts1 - pkts0
    cpu = cpu1 - cpu0
    wall = t1 - t0
    streams = subscribers * 2
    return {
        "forwarded_streams": streams,
        "forwarded_packets_per_s": packets / wall,
        "server_cpu_percent_of_core": cpu / wall * 100,
        "server_cpu_us_per_forwarded_packet": cpu / max(packets, 1) * 1e6,
        "server_cpu_percent_per_forwarded_stream": cpu / wall * 100 / streams,
        "forwarded_packets_per_cpu_second": packets / max(cpu, 1e-9),
        "server_rss_mb": rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--skip-macro", action="store_true")
    args = parser.parse_args(argv)

    micro = micro_benchmark()
    print("per-packet path, fan-out 1→3, same synthetic VP8 packets (µs CPU per egress copy):")
    baseline = micro["aiortc_object_path_us_per_egress"]
    ours = micro["consilium_byte_path_us_per_egress"]
    print(f"  baseline aiortc RtpPacket parse+serialize : {baseline:6.2f}")
    print(f"  consilium bytes parse+forward+build       : {ours:6.2f}")
    if args.skip_macro:
        return 0
    macro = asyncio.run(macro_benchmark(args.seconds, args.subscribers))
    print(
        f"server with 1 publisher (640x480 VP8 15 fps + Opus) and {args.subscribers} subscribers,"
        f" {args.seconds:.0f} s window:"
    )
    for key, value in macro.items():
        print(f"  {key:42s}: {value:10.2f}")
    print(f"  reference: Janus 1.1.2 on this machine kind  : {JANUS_US_PER_PACKET:10.2f} µs/packet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
