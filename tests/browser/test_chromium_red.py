"""Chromium publishes Opus wrapped in RED when the SFU answers RED first; a Chromium subscriber
that accepted RED plays it back (real browser, fake microphone)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.webrtc]

pytest.importorskip("playwright.async_api")

TIMEOUT_S = 60.0

# Test-only instrumentation: remember every peer connection the page creates.
RECORD_PCS = """(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
})();"""

INBOUND_AUDIO_JS = """async () => {
  let samples = 0, concealed = 0, packets = 0;
  const offered = [];
  for (const pc of window.__pcs) {
    if (pc.remoteDescription) offered.push(pc.remoteDescription.sdp);
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        samples += s.totalSamplesReceived || 0;
        concealed += s.concealedSamples || 0;
        packets += s.packetsReceived || 0;
      }
    });
  }
  return {samples, concealed, packets, offered};
}"""


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


async def _open(browser: Any, url: str) -> Any:
    context = await browser.new_context()
    page = await context.new_page()
    await page.add_init_script(RECORD_PCS)
    await page.goto(url)
    await page.wait_for_function(
        "() => window.consilium && window.consilium.state === 'joined'", timeout=60_000
    )
    return page


async def _until(check: Any, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT_S
    last: Any = None
    while loop.time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    pytest.fail(f"{what} did not happen in {TIMEOUT_S} s (last: {last})")


async def test_chromium_publishes_red_and_a_red_subscriber_plays_it(
    browser: Any, live_server: Any
) -> None:
    base = live_server.base_url
    alice = await _open(browser, f"{base}/?room=red&name=Alice")
    bob = await _open(browser, f"{base}/?room=red&name=Bob")
    alice_id = str(await alice.evaluate("() => window.consilium.self.id"))
    bob_id = str(await bob.evaluate("() => window.consilium.self.id"))

    async def red_producer() -> Any:
        stats = await asyncio.to_thread(
            _get_json, f"{base}/api/rooms/red/participants/{alice_id}/stats"
        )
        audio = [p for p in stats["producers"] if p["kind"] == "audio"]
        return audio[0] if audio and audio[0]["redPackets"] > 50 else None

    producer = await _until(red_producer, "Chromium publishing RED")
    # Every audio packet is RED once it was negotiated first (Chromium wraps each frame).
    assert producer["codec"] == "opus"
    assert producer["redPackets"] >= producer["packets"] * 0.9

    async def bob_hears() -> Any:
        got = await bob.evaluate(INBOUND_AUDIO_JS)
        return got if got["packets"] > 100 and got["samples"] > 48_000 else None

    heard = await _until(bob_hears, "Bob's audio playback")
    # The SFU offered Bob RED; what reaches him is RED that his decoder unwraps, not noise.
    assert any("red/48000/2" in sdp for sdp in heard["offered"])
    assert heard["concealed"] < heard["samples"] * 0.2
    stats = await asyncio.to_thread(_get_json, f"{base}/api/rooms/red/participants/{bob_id}/stats")
    audio_consumers = [c for c in stats["consumers"] if c["kind"] == "audio"]
    assert audio_consumers and audio_consumers[0]["forwarded"] > 100
    assert audio_consumers[0]["red"] is True  # Bob's answer accepted RED: it went out as RED
