"""One subscriber connection's downlink: transport-wide sequencing, the bandwidth estimate,
the allocation of that estimate over the subscriber's tracks, and probing.

The decisions live in pure cores (SendHistory, DownlinkEstimator, Allocator); this shell feeds
them with feedback and time, and applies their verdicts to the Consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass

from media.rtp import abs_send_time_value, overwrite_extension
from sfu.adapters.aiortc_adapter import ForwardingSender
from sfu.bwe import DownlinkEstimator, ProbeCluster
from sfu.clock import now_ms
from sfu.consumer import Consumer
from sfu.layers import AllocationResult, Allocator, TrackDemand
from sfu.pacer import Pacer
from sfu.twcc import SendHistory, TwccFeedback
from sfu.vocabulary import MediaKind, PauseReason

log = logging.getLogger("consilium.sfu")

ALLOCATE_INTERVAL_S = 0.2
REPORT_EVERY_TICKS = 5  # the subscriber's page gets its layer/estimate state once a second
# Subscribers that never send TWCC feedback nor REMB (some clients) are not limited after this.
NO_FEEDBACK_GRACE_MS = 5000
UNLIMITED_BPS = 1_000_000_000
REMB_FLOOR_HEADROOM = 1.25
# No probing while the pacer holds more than this: the link is already full.
PROBE_MAX_BACKLOG_MS = 50.0
# Padding is sent in slices this long while a probe cluster runs.
PROBE_SLICE_MS = 10
# Priorities of video tracks (audio always comes first).
PRIORITY_PINNED = 3
PRIORITY_SPEAKER = 2
PRIORITY_OTHER = 1


@dataclass(slots=True)
class _Outgoing:
    sender: ForwardingSender
    packet: bytes
    timestamp: int
    payload_size: int
    twcc_id: int | None
    probe_cluster: int | None
    abs_send_time_id: int | None


def _lowest_layers_bps(demands: Iterable[TrackDemand]) -> int:
    """What audio plus the lowest arriving layer of every wanted video costs."""
    total = 0
    for demand in demands:
        if demand.preferred_layer is None and demand.kind is MediaKind.VIDEO:
            continue
        total += next((bps for bps in demand.layer_bitrates if bps > 0), 0)
    return total


class Downlink:
    """Bandwidth estimation and allocation for one subscriber peer connection."""

    def __init__(
        self,
        consumers: Callable[[], Iterable[Consumer]],
        dominant_speaker: Callable[[], str | None] = lambda: None,
        report: Callable[[dict[str, object]], None] | None = None,
        trace_path: str | None = None,
    ) -> None:
        self._trace_path = trace_path
        self._consumers = consumers
        self._dominant_speaker = dominant_speaker
        self._report = report
        self.history = SendHistory()
        self.estimator = DownlinkEstimator()
        self.allocator = Allocator()
        self.last_result: AllocationResult | None = None
        self.pacer = Pacer(UNLIMITED_BPS)
        self._queue: deque[_Outgoing] = deque()
        self._queued_bytes = 0
        self._drain_task: asyncio.Task[None] | None = None
        self.feedback_reports = 0
        self.remb_reports = 0
        self._first_send_ms: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ sending (paced)

    async def send(
        self,
        sender: ForwardingSender,
        packet: bytes,
        timestamp: int,
        payload_size: int,
        twcc_id: int | None,
        probe_cluster: int | None,
        audio: bool,
        abs_send_time_id: int | None = None,
    ) -> bool:
        """Send now, or queue behind the pacer (video only: audio is small and never waits)."""
        item = _Outgoing(
            sender, packet, timestamp, payload_size, twcc_id, probe_cluster, abs_send_time_id
        )
        now = now_ms()
        if audio or (not self._queue and self.pacer.delay_ms(now) == 0):
            return await self._transmit(item, now, delayed=False)
        self._queue.append(item)
        self._queued_bytes += len(packet)
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.ensure_future(self._drain())
        return True

    @property
    def backlog_ms(self) -> float:
        """How long what waits in the pacer takes to leave at the current pacing rate."""
        return self._queued_bytes * 8000 / max(self.pacer.rate_bps, 1)

    async def _transmit(self, item: _Outgoing, now: int, delayed: bool) -> bool:
        packet = item.packet
        sequence: int | None = None
        # Send-time fields are written as the packet leaves: time spent in our pacer is not
        # network delay, and a receiver-side estimator (REMB) must not read it as such.
        if item.twcc_id is not None or item.abs_send_time_id is not None:
            stamped = bytearray(packet)
            if item.twcc_id is not None:
                sequence = self.history.next_sequence()
                if not overwrite_extension(stamped, item.twcc_id, sequence.to_bytes(2, "big")):
                    sequence = None
            if item.abs_send_time_id is not None:
                overwrite_extension(stamped, item.abs_send_time_id, abs_send_time_value(now))
            packet = bytes(stamped)
        if not await item.sender.send_rtp(packet, item.timestamp, item.payload_size):
            return False
        self.pacer.on_sent(len(packet), now, delayed)
        if self._first_send_ms is None:
            self._first_send_ms = now
        if sequence is not None:
            self.history.on_sent(sequence, now, len(packet), item.probe_cluster)
        return True

    async def _drain(self) -> None:
        queue = self._queue
        while queue:
            now = now_ms()
            wait = self.pacer.delay_ms(now)
            if wait > 0:
                await asyncio.sleep(wait / 1000)
                continue
            item = queue.popleft()
            self._queued_bytes -= len(item.packet)
            await self._transmit(item, now, delayed=True)

    def on_remb(self, bitrate_bps: int) -> None:
        self.remb_reports += 1
        now = now_ms()
        self.estimator.on_remb(bitrate_bps, now)
        self._trace({"t": now, "remb": bitrate_bps})

    # ------------------------------------------------------------------ feedback

    def on_transport_feedback(self, feedback: TwccFeedback) -> None:
        now = now_ms()
        self.feedback_reports += 1
        results = self.history.on_feedback(feedback, now)
        if results:
            self.estimator.on_packet_results(results, now)
            self._trace({"t": now, "results": [astuple(r) for r in results]})

    def _trace(self, record: dict[str, object]) -> None:
        """Append one event to the QA trace file (a replayable input of the estimator)."""
        if self._trace_path is None:
            return
        try:
            with open(self._trace_path, "a") as out:
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError:
            self._trace_path = None  # a full or missing disk must not break the call

    @property
    def has_feedback(self) -> bool:
        return self.feedback_reports > 0 or self.remb_reports > 0

    def available_bps(self, now: int) -> int:
        if self.has_feedback:
            return self.estimator.estimate_bps
        if self._first_send_ms is not None and now - self._first_send_ms > NO_FEEDBACK_GRACE_MS:
            return UNLIMITED_BPS  # a client that gives no feedback cannot be estimated
        return self.estimator.estimate_bps

    # ------------------------------------------------------------------ allocation

    def _demand(self, consumer: Consumer, now: int, speaker: str | None) -> TrackDemand:
        producer = consumer.producer
        if producer.kind is MediaKind.AUDIO:
            bitrate = max(producer.layers.bitrate_bps(0, now), 1)
            return TrackDemand(producer.id, MediaKind.AUDIO, 0, 0, (bitrate,), 0)
        if consumer.pinned:
            priority = PRIORITY_PINNED
        elif speaker is not None and producer.owner_id == speaker:
            priority = PRIORITY_SPEAKER
        else:
            priority = PRIORITY_OTHER
        preferred = consumer.preferred_layer
        if preferred is not None:
            preferred = min(preferred, producer.layer_count - 1)
        return TrackDemand(
            producer_id=producer.id,
            kind=MediaKind.VIDEO,
            priority=priority,
            preferred_layer=preferred,
            layer_bitrates=producer.layers.bitrates(now),
            current_layer=consumer.forwarder.current_layer,
        )

    def allocate(self, now: int) -> AllocationResult:
        consumers = [c for c in self._consumers() if not c.closed]
        speaker = self._dominant_speaker()
        demands = [self._demand(c, now, speaker) for c in consumers]
        budget = self.available_bps(now)
        if self.feedback_reports == 0:
            # REMB only (or nothing yet): a receive-side REMB follows what arrives, so pausing on
            # it would never let the video back. It may choose layers, but never pause one.
            # (With the allocator's upgrade headroom, so that a paused video can come back.)
            budget = max(budget, int(_lowest_layers_bps(demands) * REMB_FLOOR_HEADROOM))
        result = self.allocator.allocate(budget, demands, now)
        self.pacer.set_estimate(self.available_bps(now), self._queued_bytes, result.allocated_bps)
        by_id = {a.producer_id: a for a in result.allocations}
        for consumer in consumers:
            allocation = by_id.get(consumer.producer.id)
            if allocation is not None:
                consumer.apply_target(allocation.target_layer, allocation.pause_reason, now)
        self.last_result = result
        # Climbing to the wanted layers needs the allocator's headroom on top of their cost.
        wanted = int(result.wanted_bps * (1 + self.allocator.upgrade_headroom))
        if (
            self.has_feedback
            and self.backlog_ms < PROBE_MAX_BACKLOG_MS
            and wanted > self.estimator.estimate_bps
            and (self._probe_task is None or self._probe_task.done())
        ):
            starved = any(a.pause_reason is PauseReason.NO_BANDWIDTH for a in result.allocations)
            cluster = self.estimator.maybe_probe(now, wanted, urgent=starved)
            if cluster is not None:
                self._probe_task = asyncio.ensure_future(self._probe(cluster, consumers))
        return result

    async def _probe(self, cluster: ProbeCluster, consumers: list[Consumer]) -> None:
        """Send filler at the cluster's rate so the estimate can climb past what media uses."""
        video = [c for c in consumers if c.kind is MediaKind.VIDEO]
        if not video:
            return
        bytes_per_slice = cluster.rate_bps * PROBE_SLICE_MS / 8000
        start = now_ms()
        sent_total = 0
        packets = 0
        index = 0
        while True:
            now = now_ms()
            elapsed = now - start
            if elapsed >= cluster.duration_ms and packets >= cluster.min_packets:
                return
            if elapsed >= 3 * cluster.duration_ms:
                return  # nothing to send with: give up rather than run on
            budget = bytes_per_slice * (elapsed // PROBE_SLICE_MS + 1) - sent_total
            misses = 0
            while budget > 0 and misses < len(video):
                size = await video[index % len(video)].send_probe(cluster.cluster_id, now)
                index += 1
                if size == 0:
                    misses += 1
                    continue
                budget -= size
                sent_total += size
                packets += 1
            await asyncio.sleep(PROBE_SLICE_MS / 1000)

    # ------------------------------------------------------------------ lifetime

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(ALLOCATE_INTERVAL_S)
            try:
                self.tick(now_ms())
                ticks += 1
                if self._report is not None and ticks % REPORT_EVERY_TICKS == 0:
                    self._report(self.report())
            except Exception:  # one bad tick must not end allocation for this subscriber
                log.exception("downlink allocation failed")

    def tick(self, now: int) -> None:
        # Kept out of _run: a sleeping loop must not hold the last producer it looked at.
        self.allocate(now)
        for producer in {c.producer for c in self._consumers()}:
            producer.update_dynacast(now)

    def report(self) -> dict[str, object]:
        """What the subscriber's page shows in its debug overlay."""
        tracks = []
        for consumer in self._consumers():
            if consumer.closed or consumer.kind is not MediaKind.VIDEO:
                continue
            selection = consumer.selection()
            tracks.append(
                {
                    "participantId": consumer.producer.owner_id,
                    "mid": consumer.mid,
                    "simulcast": consumer.producer.simulcast is not None,
                    "preferred": selection.preferred,
                    "target": selection.target,
                    "current": selection.current,
                    "switches": consumer.forwarder.switches,
                    "pauses": consumer.pauses,
                    "pauseReason": str(consumer.pause_reason) if consumer.pause_reason else None,
                }
            )
        return {"type": "downlink-stats", **self.snapshot(), "tracks": tracks}

    async def stop(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        for task in (self._task, self._probe_task, self._drain_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = None
        self._probe_task = None
        self._drain_task = None

    def snapshot(self) -> dict[str, object]:
        now = now_ms()
        result = self.last_result
        return {
            "estimateBps": self.estimator.estimate_bps,
            "availableBps": self.available_bps(now),
            "feedback": "twcc"
            if self.feedback_reports
            else ("remb" if self.remb_reports else None),
            "wantedBps": result.wanted_bps if result else 0,
            "allocatedBps": result.allocated_bps if result else 0,
            "estimator": self.estimator.snapshot(),
            "pacer": {
                "rateBps": self.pacer.rate_bps,
                "queuedBytes": self._queued_bytes,
                "sentImmediately": self.pacer.sent_immediately,
                "sentDelayed": self.pacer.sent_delayed,
            },
        }
