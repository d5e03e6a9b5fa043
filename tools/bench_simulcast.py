"""Simulcast and bandwidth-estimation benchmark: real Chromium behind a real capped link.

One Chromium publishes a 1280x720 camera as three simulcast layers; a second Chromium subscribes
from a network namespace whose downlink is shaped with tc tbf (tools/netshape.py). The run:

1. caps the downlink at 300 kbit/s, 1 Mbit/s and 3 Mbit/s in turn and reports how closely the
   server's estimate of that subscriber's downlink tracks the cap, and the layer it settles on;
2. drops the cap to 300 kbit/s, then lifts it, and reports the time until the subscriber is
   back on the top layer;
3. reports freezes (Chromium's inbound-rtp freezeCount / totalFreezesDuration) and layer
   switches over the whole run, and checks the barcode of the frames shown (a corrupt frame
   after a switch would not decode).

The same estimator then runs on a simulated bottleneck (tools/link_sim.py) with and without
probing: the baseline for how much probing buys when bandwidth comes back.

Run inside the loopback-only namespace (root or unprivileged):
``bash tools/in_netns.sh .venv/bin/python -m tools.bench_simulcast``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sfu.clock import now_ms
from tools.browser_rig import (
    CHROMIUM_ARGS,
    FRAME_TIMES_JS,
    STATS_JS,
    TAKE_FRAME_TIMES_JS,
    Server,
    frame_intact,
    freezes,
    write_noisy_y4m,
)
from tools.netshape import CappedNamespace

CAPS = (300_000, 1_000_000, 3_000_000)
TOP_LAYER = 2
INBOUND_JS = "() => window.consilium.inboundVideoStats()"


@dataclass
class Run:
    frames_ok: int = 0
    frames_bad: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    trace: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)  # epoch ms
    layer_at: list[tuple[float, int | None]] = field(default_factory=list)  # epoch ms, current

    def freeze_report(self) -> dict[str, tuple[int, float]]:
        """Freezes by cause: a layer switch nearby, a pause, or anything else."""
        report = {"switch": (0, 0.0), "pause": (0, 0.0), "other": (0, 0.0)}
        for start, duration in freezes(self.frame_times):
            near = [c for t, c in self.layer_at if start - 1500 <= t <= start + duration + 500]
            if any(c is None for c in near):
                cause = "pause"
            elif len(set(near)) > 1:
                cause = "switch"
            else:
                cause = "other"
            count, total = report[cause]
            report[cause] = (count + 1, total + duration / 1000)
        return report


async def _poll(page: Any, run: Run, t0: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        stats = await page.evaluate(STATS_JS)
        if stats is not None:
            run.trace.append((time.monotonic() - t0, stats))
            run.layer_at.append((time.time() * 1000, stats["current"]))
        if await page.evaluate(FRAME_TIMES_JS):
            run.frame_times.extend(await page.evaluate(TAKE_FRAME_TIMES_JS))
        frame = await frame_intact(page)
        if frame is not None:
            ok, size = frame
            run.sizes.add(size)
            if ok:
                run.frames_ok += 1
            else:
                run.frames_bad += 1
        await asyncio.sleep(0.5)


async def _wait_for(page: Any, condition: Any, timeout_s: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        stats = await page.evaluate(STATS_JS)
        if stats is not None and condition(stats):
            return time.monotonic() - start
        await asyncio.sleep(0.25)
    return None


async def _layer_bitrates(server: Server, participant: str) -> list[int]:
    """What the publisher's layers cost right now, from the REST stats (dev mode)."""
    url = f"{server.url}/api/rooms/bench/participants/{participant}/stats"

    def fetch() -> list[int]:
        with urllib.request.urlopen(url, timeout=5) as resp:
            stats = json.load(resp)
        video = [p for p in stats["producers"] if p["kind"] == "video"]
        return list(video[0]["layerBitrates"]) if video else []

    return await asyncio.get_running_loop().run_in_executor(None, fetch)


async def _freezes(page: Any) -> tuple[int, float, int]:
    inbound = await page.evaluate(INBOUND_JS)
    if not inbound:
        return 0, 0.0, 0
    video = max(inbound, key=lambda s: s["framesDecoded"])
    return video["freezeCount"], video["totalFreezesDuration"], video["framesDecoded"]


async def browser_run(settle_s: float, measure_s: float, trace_dir: str | None) -> None:
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="consilium-bench-") as tmp_name:
        tmp = Path(tmp_name)
        camera = tmp / "camera.y4m"
        write_noisy_y4m(camera)
        async with CappedNamespace("bench") as net, async_playwright() as pw:
            extra = ("--bwe-trace-dir", trace_dir) if trace_dir else ()
            server = Server(["127.0.0.1", net.host_addr], tmp / "server.log", extra)
            try:
                server.wait_ready()
                env: dict[str, str | float | bool] = {**os.environ, "HOME": str(tmp)}
                chromium = "/usr/bin/chromium"
                publisher_browser = await pw.chromium.launch(
                    executable_path=chromium,
                    headless=True,
                    args=[*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={camera}"],
                    env=env,
                )
                subscriber_browser = await pw.chromium.launch(
                    executable_path=str(net.wrapper_script(chromium, tmp)),
                    headless=True,
                    args=CHROMIUM_ARGS,
                    env=env,
                )
                publisher = await publisher_browser.new_page()
                await publisher.goto(f"{server.url}/?room=bench&name=Bedside")
                await publisher.wait_for_function(
                    "() => window.consilium.publishedLayers.length > 0"
                )
                layers = await publisher.evaluate("window.consilium.publishedLayers")
                pid = await publisher.evaluate("window.consilium.self.id")
                page = await subscriber_browser.new_page(viewport={"width": 1600, "height": 1000})
                origin = f"http://{net.host_addr}:{server.port}"
                await page.goto(f"{origin}/?room=bench&name=Radiologist&role=observer")
                await page.wait_for_function("() => window.consilium.state === 'joined'")
                print(f"publisher layers: {layers}")

                run = Run()
                stop = asyncio.Event()
                t0 = time.monotonic()
                poller = asyncio.create_task(_poll(page, run, t0, stop))
                await _wait_for(page, lambda s: s["current"] is not None, 60)
                rows = []
                phases: list[tuple[int, int | None]] = []  # (monotonic ms, cap) for traces

                def shape(cap: int | None) -> None:
                    net.set_downlink(cap, queue_ms=300)
                    phases.append((now_ms(), cap))

                for cap in CAPS:
                    shape(cap)
                    await asyncio.sleep(settle_s)
                    start = time.monotonic() - t0
                    await asyncio.sleep(measure_s)
                    drops = net.downlink_drops()
                    window = [s for t, s in run.trace if t >= start]
                    estimates = [s["estimate"] for s in window]
                    layers_seen = [s["current"] for s in window]
                    rows.append(
                        (cap, estimates, layers_seen, await _layer_bitrates(server, pid), drops)
                    )

                shape(300_000)
                await asyncio.sleep(settle_s)
                shape(None)
                to_top = await _wait_for(page, lambda s: s["current"] == TOP_LAYER, 120)
                estimate_after = await page.evaluate(STATS_JS)
                chrome_freezes, chrome_freeze_s, frames = await _freezes(page)
                elapsed = time.monotonic() - t0
                stop.set()
                await poller
                if trace_dir:
                    # The server's trace and these phases share the system's monotonic clock.
                    path = Path(trace_dir, "phases.json")
                    await asyncio.to_thread(path.write_text, json.dumps(phases))
                switches = run.trace[-1][1]["switches"] if run.trace else 0

                print("\ndownlink estimate vs capacity (real Chromium subscriber, TWCC feedback)")
                print(f"  settle {settle_s:.0f} s, then {measure_s:.0f} s of samples per cap")
                print(
                    "  cap        estimate mean   p10    p90   (x cap)   layers seen   layer kbps"
                    "          link drops"
                )
                for cap, estimates, layers_seen, layer_bps, drops in rows:
                    if not estimates:
                        print(f"  {cap / 1e6:4.1f} Mbps  no samples")
                        continue
                    deciles = (
                        statistics.quantiles(estimates, n=10)
                        if len(estimates) > 1
                        else [estimates[0]] * 9
                    )
                    mean = statistics.fmean(estimates)
                    print(
                        f"  {cap / 1e6:4.1f} Mbps  {mean / 1e3:8.0f} kbps   "
                        f"{deciles[0] / cap:5.2f}  {deciles[-1] / cap:5.2f}   "
                        f"{mean / cap:5.2f}     {sorted(set(layers_seen), key=str)!s:12}  "
                        f"{[round(b / 1000) for b in layer_bps]!s:19} {drops}"
                    )
                print("\nbandwidth returns (300 kbit/s cap lifted)")
                if to_top is None:
                    print("  top layer: not reached within 120 s")
                else:
                    print(
                        f"  time to the top layer: {to_top:.1f} s "
                        f"(estimate then {estimate_after['estimate'] / 1e6:.2f} Mbps)"
                    )
                print("\nquality over the whole run")
                print(
                    f"  run {elapsed:.0f} s, {frames} frames decoded, layer switches {switches}; "
                    f"Chromium counted {chrome_freezes} freezes, {chrome_freeze_s:.2f} s"
                )
                for cause, (count, total) in run.freeze_report().items():
                    what = {
                        "switch": "around a layer switch",
                        "pause": "while paused for bandwidth",
                        "other": "elsewhere",
                    }[cause]
                    print(f"  freezes {what}: {count}, {total:.2f} s in total")
                print(
                    f"  sampled frames: {run.frames_ok} intact, {run.frames_bad} with a broken "
                    f"barcode; sizes seen {sorted(run.sizes)}"
                )
                await publisher_browser.close()
                await subscriber_browser.close()
            finally:
                server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--settle", type=float, default=12.0, help="seconds before measuring")
    parser.add_argument("--measure", type=float, default=12.0, help="seconds of samples per cap")
    parser.add_argument("--skip-browser", action="store_true", help="only the simulation")
    parser.add_argument(
        "--bwe-trace-dir", help="also record the subscriber's feedback there (JSON lines)"
    )
    args = parser.parse_args()
    if not args.skip_browser:
        reason = CappedNamespace.unavailable_reason()
        if reason is not None:
            raise SystemExit(f"cannot shape a link here ({reason}); run it via tools/in_netns.sh")
        trace_dir = str(Path(args.bwe_trace_dir).resolve()) if args.bwe_trace_dir else None
        asyncio.run(browser_run(args.settle, args.measure, trace_dir))
    from tools.link_sim import print_report

    print("\nbaseline: the same estimator on a simulated bottleneck (tools/link_sim.py)")
    print_report()


if __name__ == "__main__":
    main()
