"""Leak test: 50 people join (publishing audio + video) and leave while one resident stays.

Guests either say goodbye (``leave``) or just vanish (``drop``: the TCP connection closes
without a leave message; their session then waits out a short resume grace period).

Afterwards the server must look like it did after the first visit: one session, a bounded
subscriber SDP (inactive m-lines are reused), no extra asyncio tasks, peer connections,
producers, consumers or forwarding receivers, and bounded memory growth.

Client and server live in one process, so every count is restricted to server-side objects
(reachable from ``server.sfu``, or instances of SFU-only classes).

Run inside the loopback-only namespace (add -s to see the measured numbers):
    bash tools/in_netns.sh .venv/bin/pytest -q -s tests/test_leaks.py
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from sfu.adapters.aiortc_adapter import ForwardingReceiver
from sfu.consumer import Consumer
from sfu.producer import Producer
from sfu.room import Session
from signaling.ws import WsLink
from tools.synthetic_client import SyntheticParticipant

pytestmark = pytest.mark.webrtc

CYCLES = 50
ROOM = "leak"
T = 30.0
MAX_SUBSCRIBER_TRANSCEIVERS = 4  # audio + video, plus one retired pair still being renegotiated
TASK_SLACK = 10
THREAD_SLACK = 10
RSS_GROWTH_LIMIT_MB = 150.0


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def instances(cls: type) -> list[Any]:
    return [o for o in gc.get_objects() if isinstance(o, cls)]


def open_pcs() -> list[RTCPeerConnection]:
    return [pc for pc in instances(RTCPeerConnection) if pc.connectionState != "closed"]


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = T) -> None:  # noqa: ASYNC109
    try:
        async with asyncio.timeout(timeout):
            # Server internals have no event to wait on; polling is the honest option.
            while not predicate():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout}s: {what}") from None


def guest(server: Any, i: int) -> SyntheticParticipant:
    return SyntheticParticipant(
        server.url, room=ROOM, name=f"Guest{i}", decode=False, video_size=(160, 120), fps=10
    )


async def depart(g: SyntheticParticipant, how: str) -> None:
    if how == "drop":
        # The connection just vanishes: no leave message, no close frame.
        assert g._ws is not None
        g._ws._response.close()
    await g.leave()


async def visit(server: Any, resident: SyntheticParticipant, i: int, how: str) -> str:
    """One guest joins and publishes, the resident's subscription to it is negotiated, it leaves."""
    g = guest(server, i)
    try:
        await g.join()
        assert g.identity is not None
        gid = g.identity
        room = server.sfu.rooms[ROOM]
        assert resident.identity is not None

        def resident_consumes_guest() -> bool:
            session = room.sessions.get(resident.identity)
            if session is None:
                return False
            mine = [c for c in session.consumers.values() if c.producer.owner_id == gid]
            return len(mine) == 2 and all(c.sender.negotiated is not None for c in mine)

        await eventually(resident_consumes_guest, f"the resident consumes guest {i}")
    finally:
        await depart(g, how)
    left = await resident.next_message("participant-left", timeout=T)
    assert left["participantId"] == gid
    return gid


async def settle(server: Any, resident_id: str) -> None:
    """Wait for the resident's renegotiation to finish, then give closes a moment."""
    room = server.sfu.rooms[ROOM]

    def quiet() -> bool:
        session = room.sessions[resident_id]
        task = session._negotiation
        return (
            len(room.sessions) == 1
            and (task is None or task.done())
            and not session._pending_add
            and not session._pending_retire
        )

    await eventually(quiet, "the resident's renegotiation settles")
    await asyncio.sleep(1.0)
    gc.collect()


@pytest.mark.parametrize("how", ["leave", "drop"])
async def test_fifty_visits_leak_nothing(server: Any, how: str) -> None:
    if how == "drop":
        # Each vanished guest is kept for a resume first: its timer and kept messages must go too.
        server.settings.resume_grace_s = 0.2
    resident = SyntheticParticipant(
        server.url, room=ROOM, name="Resident", decode=False, video_size=(160, 120), fps=10
    )
    try:
        await resident.join()
        assert resident.identity is not None
        rid = resident.identity
        gc.collect()
        tasks_after_join = len(asyncio.all_tasks())

        # Warm-up visit: creates the resident's subscriber PC and its m-lines, which then stay.
        # Check once that media really flows through the SFU to the resident.
        g = guest(server, 0)
        await g.join()
        assert g.identity is not None
        gid0 = g.identity
        await resident.wait_for(
            lambda: (
                resident.received.get(gid0) is not None
                and resident.received[gid0].video_frames > 0
                and resident.received[gid0].audio_frames > 0
            ),
            timeout=60,
        )
        await depart(g, how)
        assert (await resident.next_message("participant-left", timeout=T))["participantId"] == gid0
        await settle(server, rid)
        base_tasks = len(asyncio.all_tasks())
        base_threads = threading.active_count()
        base_rss = rss_mb()

        departed: set[str] = {gid0}
        for i in range(1, CYCLES + 1):
            departed.add(await visit(server, resident, i, how))
        await settle(server, rid)

        room = server.sfu.rooms[ROOM]
        session = room.sessions[rid]
        tasks = len(asyncio.all_tasks())
        threads = threading.active_count()
        rss = rss_mb()
        sub_pc = session.subscriber_pc
        assert sub_pc is not None
        transceivers = len(sub_pc.getTransceivers())
        client_pcs = {id(resident.publish_pc), id(resident.subscribe_pc)}
        server_open = [pc for pc in open_pcs() if id(pc) not in client_pcs]
        consumers = instances(Consumer)
        producers = instances(Producer)
        receivers = instances(ForwardingReceiver)
        sessions = instances(Session)
        links = instances(WsLink)
        print(
            f"\nleak test ({how}) after {CYCLES} visits: sessions={len(room.sessions)} "
            f"subscriber transceivers={transceivers} "
            f"tasks={tasks} (after resident join {tasks_after_join}, after warm-up {base_tasks}) "
            f"threads={threads} (after warm-up {base_threads}) "
            f"server PCs open={len(server_open)} consumers={len(consumers)} "
            f"producers={len(producers)} forwarding receivers={len(receivers)} "
            f"Session objects={len(sessions)} WsLink objects={len(links)} "
            f"RSS={rss:.1f} MB (after warm-up {base_rss:.1f} MB, growth {rss - base_rss:.1f} MB)"
        )

        # Collect every problem first so one run shows all of them.
        problems: list[str] = []

        def check(ok: bool, problem: str) -> None:
            if not ok:
                problems.append(problem)

        check(list(server.sfu.rooms) == [ROOM], f"rooms: {list(server.sfu.rooms)}")
        check(list(room.sessions) == [rid], f"sessions: {list(room.sessions)}")
        check(
            transceivers <= MAX_SUBSCRIBER_TRANSCEIVERS,
            f"{transceivers} m-lines on the resident's subscriber PC: inactive ones not reused",
        )
        active = [t.mid for t in sub_pc.getTransceivers() if t.direction != "inactive"]
        check(active == [], f"m-lines still sending with no one left to forward: {active}")
        check(tasks <= base_tasks + TASK_SLACK, f"asyncio tasks {base_tasks} -> {tasks}")
        check(threads <= base_threads + THREAD_SLACK, f"threads {base_threads} -> {threads}")

        own_pcs = {id(session.publisher_pc), id(session.subscriber_pc)}
        check(
            {id(pc) for pc in server_open} == own_pcs,
            f"{len(server_open)} server-side peer connections open, expected the resident's 2",
        )

        # Nothing of the 51 guests survives: no consumer anywhere (the resident is alone), only
        # the resident's own producers, their receivers, its session and its link.
        check(consumers == [], f"{len(consumers)} Consumer objects survive")
        check(session.consumers == {}, f"resident still has consumers {list(session.consumers)}")
        check(session._transceivers == {}, "resident still maps m-lines to departed producers")
        check(
            sorted(id(p) for p in producers) == sorted(id(p) for p in session.producers.values()),
            f"Producer objects of {sorted({p.owner_id for p in producers} - {rid})} survive",
        )
        for producer in session.producers.values():
            check(producer.consumers == [], f"departed guests still consume {producer.id}")
        check(
            sorted(id(r) for r in receivers)
            == sorted(id(p.receiver) for p in session.producers.values()),
            f"{len(receivers)} ForwardingReceivers alive, expected the resident's 2",
        )
        check(not departed & set(room.sessions), "a departed guest still has a session")
        check(sessions == [session], f"{len(sessions)} Session objects alive, expected 1")
        check([id(x) for x in links] == [id(session.link)], f"{len(links)} WsLink objects alive")
        growth = rss - base_rss
        check(growth < RSS_GROWTH_LIMIT_MB, f"RSS grew by {growth:.1f} MB over {CYCLES} visits")
        if tasks > base_tasks + TASK_SLACK:
            kinds = Counter(t.get_coro().__qualname__ for t in asyncio.all_tasks())
            problems.append(f"tasks by coroutine: {dict(kinds.most_common(5))}")
        assert not problems, "\n".join(problems)
    finally:
        await resident.leave()
