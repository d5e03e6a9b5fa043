"""Shared pieces for driving real Chromium against Consilium (browser tests and benchmarks).

Chromium runs headless with a fake camera and microphone (Debian's ``chromium``, driven by
Playwright). Everything here is plain data or small helpers: the camera file, the JavaScript the
pages are asked to evaluate, and a barcode check of the frame a page is showing.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from media.synthetic import BARCODE_GRID_ROWS, BARCODE_ROWS, decode_barcode, draw_counter_frame

REPO = Path(__file__).resolve().parent.parent

# Fake camera/mic, loopback ICE, and nothing that talks to the outside world.
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

CAMERA_FRAMES = 45


def write_noisy_y4m(path: Path, width: int = 1280, height: int = 720, fps: int = 30) -> None:
    """A looping camera file: barcode frames whose lower half is noise.

    The noise makes every simulcast layer cost what its encoding allows; a still picture
    would make the top layer nearly free and hide what bandwidth estimation does.
    """
    rng = np.random.default_rng(7)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420\n".encode("ascii"))
        for index in range(CAMERA_FRAMES):
            img = draw_counter_frame("simulcast", width, height, index, index * 1000 // fps)
            band = slice(height // 2, height)
            img[band] = rng.integers(0, 256, img[band].shape, dtype=np.uint8)
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())


# The server's view of this page's downlink and its simulcast video (first one found).
STATS_JS = """() => {
  const s = window.consilium.downlinkStats;
  if (!s) return null;
  const t = (s.tracks || []).find((x) => x.simulcast);
  const e = s.estimator || {};
  return { estimate: s.estimateBps, feedback: s.feedback, wanted: s.wantedBps,
           current: t ? t.current : null, target: t ? t.target : null,
           preferred: t ? t.preferred : null, switches: t ? t.switches : 0,
           pauseReason: t ? t.pauseReason : null, usage: e.usage,
           probes: e.probes_sent, probesOk: e.probes_succeeded };
}"""

# The barcode rows of the remote frame on screen, at its decoded size, as a PNG.
GRAB_JS = """(rows) => {
  const v = document.querySelector('#tiles .tile video');
  if (!v || !v.videoWidth || v.readyState < 2) return null;
  const w = v.videoWidth, h = v.videoHeight;
  const ch = Math.ceil(h * rows / GRID_ROWS);
  const c = document.createElement('canvas');
  c.width = w; c.height = ch;
  c.getContext('2d').drawImage(v, 0, 0, w, ch, 0, 0, w, ch);
  return { w, h, png: c.toDataURL('image/png') };
}""".replace("GRID_ROWS", str(BARCODE_GRID_ROWS))


# Records when each remote frame is presented (requestVideoFrameCallback), so freezes can be
# measured by the page's own clock: Chromium's definition is a gap longer than
# max(3 x the average frame interval, average + 150 ms).
FRAME_TIMES_JS = """() => {
  const v = document.querySelector('#tiles .tile video');
  if (!v || !('requestVideoFrameCallback' in v)) return false;
  if (v.consiliumFrames) return true;
  v.consiliumFrames = [];
  const tick = (now) => { v.consiliumFrames.push(now); v.requestVideoFrameCallback(tick); };
  v.requestVideoFrameCallback(tick);
  return true;
}"""
TAKE_FRAME_TIMES_JS = """() => {
  const v = document.querySelector('#tiles .tile video');
  if (!v || !v.consiliumFrames) return [];
  const out = v.consiliumFrames; v.consiliumFrames = [];
  return out.map((t) => t + performance.timeOrigin);
}"""


def freezes(frame_times_ms: list[float]) -> list[tuple[float, float]]:
    """(start, duration) of every freeze in a list of frame presentation times (ms)."""
    out: list[tuple[float, float]] = []
    gaps = [b - a for a, b in zip(frame_times_ms, frame_times_ms[1:], strict=False)]
    for index, gap in enumerate(gaps):
        recent = gaps[max(0, index - 30) : index] or [gap]
        average = sum(recent) / len(recent)
        if gap > max(3 * average, average + 150):
            out.append((frame_times_ms[index], gap))
    return out


async def frame_intact(page: Any) -> tuple[bool, tuple[int, int]] | None:
    """(barcode decodes, frame size) of the frame the page shows; None: no frame yet."""
    grab = await page.evaluate(GRAB_JS, BARCODE_ROWS + 1)
    if grab is None:
        return None
    png = base64.b64decode(grab["png"].split(",", 1)[1])
    rows = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_GRAYSCALE)
    if rows is None:
        return False, (grab["w"], grab["h"])
    full = np.zeros((grab["h"], grab["w"]), np.uint8)
    full[: rows.shape[0]] = rows[: grab["h"]]
    return decode_barcode(full) is not None, (grab["w"], grab["h"])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``consilium serve`` (dev mode) as a child process, its output captured to a file."""

    def __init__(
        self,
        ice_hosts: list[str],
        log_path: Path,
        extra_args: tuple[str, ...] = (),
        host: str = "0.0.0.0",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSILIUM_")}
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "signaling.cli", "serve", "--host", host]
        cmd += ["--port", str(self.port)]
        for ice_host in ice_hosts:
            cmd += ["--ice-host", ice_host]
        if "--data-dir" not in extra_args:
            # The database beside the log (a temp dir), never in the working tree.
            cmd += ["--data-dir", str(log_path.parent / f"data-{self.port}")]
        cmd += extra_args
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as resp:
                return resp.status == 200 and json.load(resp).get("status") == "ok"
        except (OSError, ValueError):
            return False

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            if self.healthy():
                return
            time.sleep(0.2)
        raise RuntimeError("server did not become healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
