"""The chat benchmark (tools/bench_chat.py) with tiny parameters: both servers run as
subprocesses on loopback, every message reaches every participant in one order, the late
joiner's history is the same stream, and the numbers are there. No timing thresholds.

    bash tools/in_netns.sh .venv/bin/pytest -q -p no:cacheprovider tests/test_bench_chat_smoke.py
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

from tools.bench_chat import PAGE, bench, print_table

PARTICIPANTS = 3
MESSAGES = PAGE + 10  # two history pages for the late joiner


async def test_bench_chat_runs_and_every_message_arrives_in_order(
    tmp_path: Path, capsys: object
) -> None:
    async with asyncio.timeout(180):
        results = await bench(PARTICIPANTS, MESSAGES, 500.0, tmp_path)
    assert [r.label for r in results] == ["consilium chat", "bare WS broadcast"]
    for r in results:
        assert len(r.sent) == len(set(r.sent)) == MESSAGES
        assert len(r.streams) == PARTICIPANTS
        assert r.delivered_to_all, r.label
        assert r.in_order, r.label
        assert [seq for seq, _ in r.catchup] == list(range(1, MESSAGES + 1))
        assert r.catchup_complete, r.label
        assert r.catchup_pages == math.ceil(MESSAGES / PAGE)
        assert r.catchup_s > 0
        assert r.hwm_mb > 0
        assert [p.messages for p in r.phases] == [MESSAGES // 2, MESSAGES - MESSAGES // 2]
        for phase in r.phases:
            # One latency per delivery to a participant other than the sender.
            assert len(phase.latencies_ms) == phase.messages * (PARTICIPANTS - 1)
            assert min(phase.latencies_ms) >= 0
            for value in (phase.pct(50), phase.pct(95), phase.pct(99), phase.max_ms):
                assert value >= 0 and not math.isnan(value)
            assert phase.pct(50) <= phase.pct(95) <= phase.pct(99) <= phase.max_ms
            assert phase.seconds > 0 and phase.msgs_per_s > 0
            assert phase.cpu_s >= 0
    print_table(results, MESSAGES)
    # The data directory of the Consilium server is the caller's: the bench leaves it to them.
    assert (tmp_path / "data" / "consilium.db").exists()
