"""End to end through the impairment tool at moderate loss: tools.qa with two participants, the
bedside one inside an ImpairedNamespace at lossy-5 (5 % random loss both ways), ~10 s measured.

Asserts what the product owes at 5 %: on both paths the SFU repairs (the bedside's uplink, where
it NACKs the publisher and forwards the repair, and its downlink, where it answers the bedside's
NACKs) frames keep arriving and no corrupt frame is decoded; the report is complete (both paths,
wire counters showing the loss, JSON, plot, HTML).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tools.impair import ImpairedNamespace, get_profile
from tools.qa import RunConfig, run_once
from tools.qa_metrics import DOWNLINK, UPLINK
from tools.qa_report import write_report

pytestmark = pytest.mark.webrtc


async def test_lossy5_frames_keep_arriving_and_none_is_corrupt(tmp_path: Path) -> None:
    reason = ImpairedNamespace.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    config = RunConfig(
        profile=get_profile("lossy-5"),
        nack=True,
        duration_s=10,
        participants=2,
        impaired=1,
        size="640x360",
        fps=15,
        seed=3,
        warmup_s=2,
        out_dir=tmp_path,
        progress=False,
    )
    async with asyncio.timeout(180):  # setup ~15 s, 10 s measured, teardown
        run = await run_once(config)
    report = {"created": "test", "config": {}, "runs": [run]}
    written = write_report(report, tmp_path / "report")

    assert run["notes"] == [], run["notes"]
    assert all(p["connected_throughout"] for p in run["participants"]), run["participants"]
    for direction in ("uplink", "downlink"):
        counters = run["impairment"][direction]
        assert counters["lost_random"] > 0, counters  # the wire really dropped packets
        assert counters["lost_random"] < 0.12 * counters["packets"], counters

    paths = {p["class"]: p for p in run["paths"]}
    assert set(paths) == {"uplink", "downlink"}
    for path_class in (UPLINK, DOWNLINK):
        video = paths[path_class]["video"]
        assert video["frames"] > 5 * 15, (path_class, video)  # at least half the frame rate
        assert video["longest_gap_ms"] <= 3000, (path_class, video)
        assert video["corrupt_frames"] == 0, (path_class, video)
        assert video["psnr_min_db"] is not None and video["psnr_min_db"] >= 30, video
    up = paths[UPLINK]
    # Audio crossed the lossy uplink unprotected: some frames are missing, most arrive.
    assert 0 < up["audio"]["frames_received"] < up["audio"]["frames_expected"]
    assert up["audio"]["loss_percent"] < 15

    data = json.loads(written["report.json"].read_text())
    assert data["runs"][0]["raw"]["attending"]["video"]["bedside"]
    assert any(name.endswith(".png") for name in written)
    assert "lossy-5 / NACK+RTX on" in written["report.html"].read_text()
