"""Prometheus metrics, read from the SFU's own counters at scrape time.

Nothing is counted twice and the packet path pays nothing for metrics: the collector walks
rooms, sessions, producers and consumers when Prometheus asks. The signaling services (chat,
files, resume) count events in a :class:`signaling.counters.ServiceCounters`, read the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu.clock import now_ms
from sfu.room import Sfu
from sfu.vocabulary import MediaKind
from signaling.counters import (
    BURN_REASONS,
    CHAT_REFUSAL_REASONS,
    DOWNLOAD_KINDS,
    RESUME_EXPIRY_REASONS,
    ServiceCounters,
    with_known,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _layer(value: int | None) -> float:
    return -1.0 if value is None else float(value)  # -1 = none (paused / nothing yet)


class SfuCollector(Collector):
    def __init__(self, sfu: Sfu) -> None:
        self._sfu = sfu

    def collect(self) -> Iterator[Metric]:
        now = now_ms()
        rooms = GaugeMetricFamily("consilium_rooms", "Rooms open in this process")
        participants = GaugeMetricFamily(
            "consilium_participants", "Participants connected", labels=["room"]
        )
        received = CounterMetricFamily(
            "consilium_received_packets",
            "RTP packets received from publishers",
            labels=["room", "participant", "kind"],
        )
        layer_bitrate = GaugeMetricFamily(
            "consilium_publisher_layer_bitrate_bps",
            "Bitrate a publisher sends per simulcast layer (0 = not arriving)",
            labels=["room", "participant", "layer"],
        )
        keyframe_requests = CounterMetricFamily(
            "consilium_keyframe_requests", "PLIs sent to publishers", labels=["room", "participant"]
        )
        upstream_repair = CounterMetricFamily(
            "consilium_upstream_repair_packets",
            "Publisher-leg loss: packets found missing, NACKed, recovered, given up (outcome)",
            labels=["room", "participant", "outcome"],
        )
        retransmissions = CounterMetricFamily(
            "consilium_retransmitted_packets",
            "Packets resent to subscribers in answer to their NACKs",
            labels=["room", "subscriber"],
        )
        forwarded = CounterMetricFamily(
            "consilium_forwarded_packets",
            "RTP packets forwarded to subscribers",
            labels=["room", "subscriber", "publisher", "kind"],
        )
        dropped = CounterMetricFamily(
            "consilium_dropped_packets",
            "Packets not forwarded, by reason",
            labels=["room", "subscriber", "reason"],
        )
        estimate = GaugeMetricFamily(
            "consilium_downlink_estimate_bps",
            "Bandwidth estimate of a subscriber's downlink",
            labels=["room", "subscriber"],
        )
        layer = GaugeMetricFamily(
            "consilium_subscriber_layer",
            "Simulcast layer of a subscribed video (state: preferred/target/current; -1 = none)",
            labels=["room", "subscriber", "publisher", "state"],
        )
        switches = CounterMetricFamily(
            "consilium_layer_switches",
            "Simulcast layer switches",
            labels=["room", "subscriber", "publisher"],
        )
        pauses = CounterMetricFamily(
            "consilium_video_pauses",
            "Times a subscribed video was paused",
            labels=["room", "subscriber", "publisher"],
        )
        probes = CounterMetricFamily(
            "consilium_probe_packets",
            "Padding packets sent to probe a downlink",
            labels=["room", "subscriber"],
        )
        rooms.add_metric([], len(self._sfu.rooms))
        for room in list(self._sfu.rooms.values()):
            participants.add_metric([room.id], len(room.sessions))
            for session in list(room.sessions.values()):
                for producer in list(session.producers.values()):
                    received.add_metric(
                        [room.id, session.identity, str(producer.kind)], producer.packets
                    )
                    if producer.kind is MediaKind.VIDEO:
                        keyframe_requests.add_metric(
                            [room.id, session.identity], producer.keyframe_requests_sent
                        )
                        repair = producer.receiver.nack_stats()
                        for outcome, key in (
                            ("missing", "missingDetected"),
                            ("nacked", "nacksSent"),
                            ("recovered", "recovered"),
                            ("lost", "lost"),
                        ):
                            if key in repair:
                                upstream_repair.add_metric(
                                    [room.id, session.identity, outcome], repair[key]
                                )
                        for index, bps in enumerate(producer.layers.bitrates(now)):
                            layer_bitrate.add_metric([room.id, session.identity, str(index)], bps)
                drops: dict[str, int] = {}
                probe_packets = 0
                resent = 0
                for consumer in list(session.consumers.values()):
                    publisher = consumer.producer.owner_id
                    kind = str(consumer.producer.kind)
                    forwarded.add_metric(
                        [room.id, session.identity, publisher, kind], consumer.forwarder.forwarded
                    )
                    for reason, count in consumer.forwarder.drops.items():
                        drops[str(reason)] = drops.get(str(reason), 0) + count
                    probe_packets += consumer.probe_packets
                    resent += consumer.retransmitted
                    if consumer.producer.kind is not MediaKind.VIDEO:
                        continue
                    selection = consumer.selection()
                    for state, value in (
                        ("preferred", selection.preferred),
                        ("target", selection.target),
                        ("current", selection.current),
                    ):
                        layer.add_metric(
                            [room.id, session.identity, publisher, state], _layer(value)
                        )
                    switches.add_metric(
                        [room.id, session.identity, publisher], consumer.forwarder.switches
                    )
                    pauses.add_metric([room.id, session.identity, publisher], consumer.pauses)
                if session.consumers:
                    retransmissions.add_metric([room.id, session.identity], resent)
                for reason_name, count in drops.items():
                    dropped.add_metric([room.id, session.identity, reason_name], count)
                if session.consumers and session.downlink.has_feedback:
                    estimate.add_metric(
                        [room.id, session.identity], session.downlink.estimator.estimate_bps
                    )
                    probes.add_metric([room.id, session.identity], probe_packets)
        yield from (
            rooms,
            participants,
            received,
            layer_bitrate,
            keyframe_requests,
            upstream_repair,
            retransmissions,
            forwarded,
            dropped,
            estimate,
            layer,
            switches,
            pauses,
            probes,
        )


class ServiceCollector(Collector):
    """Chat, files and resume totals since the process started (counters: ``_total``)."""

    def __init__(self, counters: ServiceCounters) -> None:
        self._counters = counters

    def collect(self) -> Iterator[Metric]:
        c = self._counters
        sent = CounterMetricFamily("consilium_chat_messages_sent", "Chat messages posted")
        sent.add_metric([], c.chat_sent)
        burned = CounterMetricFamily(
            "consilium_chat_messages_burned",
            "Burn-after-reading messages deleted, by reason (read by all, or expired)",
            labels=["reason"],
        )
        for reason, count in with_known(c.chat_burned, BURN_REASONS):
            burned.add_metric([reason], count)
        refused = CounterMetricFamily(
            "consilium_chat_refusals",
            "chat-send messages refused, by error code (forbidden: the role may not post)",
            labels=["reason"],
        )
        for reason, count in with_known(c.chat_refused, CHAT_REFUSAL_REASONS):
            refused.add_metric([reason], count)
        uploads = CounterMetricFamily(
            "consilium_file_uploads_completed",
            "Files shared: finished tus uploads (instant=false) and instant uploads (true)",
            labels=["instant"],
        )
        for instant in (False, True):
            uploads.add_metric([str(instant).lower()], c.uploads_completed.get(instant, 0))
        tus_bytes = CounterMetricFamily(
            "consilium_tus_received_bytes", "Upload body bytes received through tus PATCH"
        )
        tus_bytes.add_metric([], c.tus_received_bytes)
        downloads = CounterMetricFamily(
            "consilium_file_downloads",
            "Shared files read from their first byte through a link (download or inline view)",
            labels=["kind"],
        )
        for kind, count in with_known(c.downloads, DOWNLOAD_KINDS):
            downloads.add_metric([kind], count)
        deleted = CounterMetricFamily("consilium_files_deleted", "Shared files deleted from a room")
        deleted.add_metric([], c.files_deleted)
        resumed = CounterMetricFamily(
            "consilium_sessions_resumed", "Signaling sessions resumed on a new socket"
        )
        resumed.add_metric([], c.sessions_resumed)
        expired = CounterMetricFamily(
            "consilium_resume_grace_expired",
            "Dropped sessions removed without a resume (grace timeout, or kept messages overflow)",
            labels=["reason"],
        )
        for reason, count in with_known(c.resume_expired, RESUME_EXPIRY_REASONS):
            expired.add_metric([reason], count)
        yield from (sent, burned, refused, uploads, tus_bytes, downloads, deleted, resumed, expired)


def registry_for(sfu: Sfu, counters: ServiceCounters | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SfuCollector(sfu))
    if counters is not None:
        registry.register(ServiceCollector(counters))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
