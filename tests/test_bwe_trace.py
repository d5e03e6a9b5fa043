"""The estimator on recorded real feedback: Chromium 156 behind a tc-tbf-shaped link.

tests/data/twcc_chromium_capped.jsonl.gz was recorded with
``tools/bench_simulcast.py --bwe-trace-dir`` (first line: the cap schedule on the same monotonic
clock; then one line per transport-wide feedback, as PacketResult tuples). The live run's probes
are in the trace but a replay cannot measure them (the estimator only measures clusters it
started), so these checks stay on what replay can judge: no overestimate on a capped link, the
low cap tracked, a capacity drop noticed quickly.
"""

from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

import pytest

from sfu.bwe import DownlinkEstimator
from sfu.twcc import PacketResult

TRACE = Path(__file__).parent / "data" / "twcc_chromium_capped.jsonl.gz"


@pytest.fixture(scope="module")
def replay() -> tuple[list[list[int | None]], list[tuple[float, int]]]:
    lines = gzip.open(TRACE, "rt").read().splitlines()
    phases = json.loads(lines[0])["phases"]
    estimator = DownlinkEstimator()
    samples: list[tuple[float, int]] = []
    for line in lines[1:]:
        event = json.loads(line)
        results = [PacketResult(*r) for r in event["results"]]
        estimator.on_packet_results(results, event["t"])
        samples.append((event["t"], estimator.estimate_bps))
    return phases, samples


def window(samples: list[tuple[float, int]], start: float, end: float) -> list[int]:
    return [e for t, e in samples if start <= t < end]


def test_the_trace_is_a_real_run(replay: tuple[list[list[int | None]], list]) -> None:
    phases, samples = replay
    assert [cap for _, cap in phases] == [300_000, 1_000_000, 3_000_000, 300_000, None]
    assert len(samples) > 500
    assert all(30_000 <= e <= 20_000_000 for _, e in samples)


def test_never_overestimates_a_capped_link(replay: tuple[list[list[int | None]], list]) -> None:
    phases, samples = replay
    for (start, cap), (end, _) in zip(phases, phases[1:], strict=False):
        if cap is None:
            continue
        settled = window(samples, start + 3000, end)
        assert max(settled) <= 1.5 * cap, (cap, max(settled))


def test_tracks_the_low_cap(replay: tuple[list[list[int | None]], list]) -> None:
    phases, samples = replay
    (start, cap), (end, _) = phases[0], phases[1]
    assert cap == 300_000
    median = statistics.median(window(samples, start + 6000, end))
    assert 0.5 * cap <= median <= 1.2 * cap, median


def test_notices_a_capacity_drop_quickly(replay: tuple[list[list[int | None]], list]) -> None:
    phases, samples = replay
    drop_at, cap = phases[3]
    assert cap == 300_000
    after = window(samples, drop_at + 3000, phases[4][0])
    assert after and max(after) <= 1.3 * cap, max(after)
