"""Prometheus metrics and the live stats the dashboard shows: one set of counters for both.

Room, participant and track counts are read from the room model at scrape time, and media
counters from the plane's totals, so nothing is copied or double-counted. Request counters
and the sampled forwarding-latency histogram are ordinary prometheus_client metrics.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from roomcast.media.forwarding_plane import ForwardingPlane

if TYPE_CHECKING:
    from roomcast.rooms.manager import RoomManager
    from roomcast.webhooks import WebhookNotifier

log = logging.getLogger(__name__)

# Measure every Nth forwarded packet: timing each one would cost more than forwarding it.
LATENCY_SAMPLE_EVERY = 64
# Offenders remembered by Metrics.limit_hit so each is logged once (bounded memory).
LOGGED_OFFENDERS = 4096
_MEDIA_COUNTERS = {
    "packets_in": "RTP packets received from publishers",
    "bytes_in": "RTP bytes received from publishers",
    "packets_out": "RTP packets forwarded to subscribers",
    "bytes_out": "RTP bytes forwarded to subscribers",
    "nacks": "sequence numbers NACKed by subscribers",
    "retransmits": "packets retransmitted from the NACK cache",
    "nacks_dropped": "NACKed sequence numbers refused by the NACK-storm guard",
    "plis_received": "keyframe requests (PLI/FIR) from subscribers",
    "plis_sent": "keyframe requests sent to publishers",
    "packets_lost": "packets subscribers reported lost",
    "malformed_in": "malformed RTP packets from publishers",
    "unknown_ssrc_dropped": "RTP packets from unknown SSRCs dropped by the rate limit",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.api_requests = Counter(
            "roomcast_api_requests",
            "Twirp API requests",
            ["method", "code"],
            registry=self.registry,
        )
        self.api_seconds = Histogram(
            "roomcast_api_request_seconds",
            "Twirp API request duration",
            ["method"],
            registry=self.registry,
        )
        self.signal_connections = Counter(
            "roomcast_signal_connections",
            "signalling WebSocket connections by outcome",
            ["result"],
            registry=self.registry,
        )
        self.limit_hits = Counter(
            "roomcast_limit_hits",
            "requests, messages or connections refused because they hit a limit, by limit",
            ["limit"],
            registry=self.registry,
        )
        self.signal_requests = Counter(
            "roomcast_signal_requests",
            "SignalRequests received by type",
            ["type"],
            registry=self.registry,
        )
        self.forward_seconds = Histogram(
            "roomcast_forward_seconds",
            f"time to forward one RTP packet to all its subscribers (1 in {LATENCY_SAMPLE_EVERY})",
            buckets=(5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 5e-3),
            registry=self.registry,
        )
        self._logged_offenders: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._sample = 0
        # Data-track packets (rooms/data_tracks.py): plain counters on the hot path, read by
        # the collector at scrape time.
        self.data_track_packets: dict[str, int] = {"in": 0, "out": 0}
        self.data_track_bytes: dict[str, int] = {"in": 0, "out": 0}
        self.data_track_drops: dict[str, int] = {}
        self.registry.register(_DataTrackCollector(self))

    def limit_hit(self, limit: str, offender: str, detail: str = "") -> None:
        """``count_limit_hit``, and a log line the first time ``offender`` hits ``limit``.

        ``offender`` names who hit it (an address, an identity): never a token or a secret.
        The set of offenders already logged is bounded; the oldest are forgotten first."""
        self.count_limit_hit(limit)
        key = (limit, offender)
        if key in self._logged_offenders:
            self._logged_offenders.move_to_end(key)
            return
        self._logged_offenders[key] = None
        if len(self._logged_offenders) > LOGGED_OFFENDERS:
            self._logged_offenders.popitem(last=False)
        log.warning("limit %s hit by %s%s", limit, offender, f": {detail}" if detail else "")

    def attach(
        self,
        rooms: RoomManager,
        plane: ForwardingPlane,
        webhooks: WebhookNotifier,
        transports: Callable[[], int] = lambda: 0,
        engine_counters: Callable[[], Mapping[str, int] | None] | None = None,
    ) -> None:
        """`engine_counters`: the native engine's counters (None while it is not running);
        None for the Python plane."""
        self.registry.register(_StateCollector(rooms, plane, webhooks, transports))
        self.registry.register(_PlaneCollector(engine_counters))
        # process_resident_memory_bytes, process_cpu_seconds_total, process_open_fds, ...
        ProcessCollector(registry=self.registry)

    def count_limit_hit(self, limit: str) -> None:
        self.limit_hits.labels(limit).inc()

    def count_signal_request(self, kind: str) -> None:
        self.signal_requests.labels(kind).inc()

    def count_data_track_packets(self, direction: str, packets: int, size: int) -> None:
        self.data_track_packets[direction] = self.data_track_packets.get(direction, 0) + packets
        self.data_track_bytes[direction] = self.data_track_bytes.get(direction, 0) + size

    def count_data_track_drops(self, reason: str, packets: int) -> None:
        self.data_track_drops[reason] = self.data_track_drops.get(reason, 0) + packets

    def timed_forward(
        self, forward: Callable[[object, bytes], None]
    ) -> Callable[[object, bytes], None]:
        """Wrap the plane's RTP entry point with a sampled latency measurement."""
        histogram = self.forward_seconds

        def forward_and_maybe_time(key: object, packet: bytes) -> None:
            self._sample += 1
            if self._sample % LATENCY_SAMPLE_EVERY:
                forward(key, packet)
                return
            start = time.perf_counter()
            forward(key, packet)
            histogram.observe(time.perf_counter() - start)

        return forward_and_maybe_time


class _StateCollector(Collector):
    def __init__(
        self,
        rooms: RoomManager,
        plane: ForwardingPlane,
        webhooks: WebhookNotifier,
        transports: Callable[[], int],
    ) -> None:
        self._rooms = rooms
        self._plane = plane
        self._webhooks = webhooks
        self._transports = transports

    def collect(self) -> Iterator[Metric]:
        rooms = self._rooms.list()
        participants = [p for room in rooms for p in room.live_participants()]
        yield GaugeMetricFamily("roomcast_rooms", "open rooms", value=len(rooms))
        yield GaugeMetricFamily(
            "roomcast_participants", "connected participants", value=len(participants)
        )
        yield GaugeMetricFamily(
            "roomcast_tracks_published",
            "published tracks",
            value=sum(len(p.tracks) for p in participants),
        )
        yield GaugeMetricFamily(
            "roomcast_tracks_subscribed",
            "subscriptions being forwarded",
            value=len(self._plane.downtracks()),
        )
        yield GaugeMetricFamily(
            "roomcast_transports",
            "live WebRTC transports (ICE/DTLS/SRTP)",
            value=self._transports(),
        )
        yield GaugeMetricFamily(
            "roomcast_uptracks",
            "tracks received by the plane",
            value=len(self._plane.uptracks()),
        )
        yield GaugeMetricFamily(
            "roomcast_asyncio_tasks", "asyncio tasks in the server loop", value=_task_count()
        )
        totals = self._plane.totals()
        for name, help_text in _MEDIA_COUNTERS.items():
            yield CounterMetricFamily(f"roomcast_{name}", help_text, value=totals[name])
        deliveries = CounterMetricFamily(
            "roomcast_webhooks", "webhook deliveries by outcome", labels=["result"]
        )
        deliveries.add_metric(["delivered"], self._webhooks.delivered)
        deliveries.add_metric(["failed"], self._webhooks.failed)
        deliveries.add_metric(["dropped"], self._webhooks.dropped)
        yield deliveries


class _PlaneCollector(Collector):
    """Which forwarding plane runs, and the native engine's own counters (native/plane.h
    `counters`): what it received, forwarded and refused before Python saw anything."""

    def __init__(self, engine_counters: Callable[[], Mapping[str, int] | None] | None) -> None:
        self._engine_counters = engine_counters

    def collect(self) -> Iterator[Metric]:
        plane = GaugeMetricFamily(
            "roomcast_forwarding_plane", "the forwarding plane that runs", labels=["plane"]
        )
        plane.add_metric(["python" if self._engine_counters is None else "native"], 1)
        yield plane
        counters = None if self._engine_counters is None else self._engine_counters()
        if counters is None:
            return
        engine = CounterMetricFamily(
            "roomcast_native_engine",
            "native engine events: datagrams and RTP/RTCP in, forwarded, batches, failures",
            labels=["event"],
        )
        for name, value in sorted(counters.items()):
            engine.add_metric([name], value)
        yield engine


class _DataTrackCollector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        packets = CounterMetricFamily(
            "roomcast_data_track_packets",
            "data-track packets received from publishers (in) and forwarded (out)",
            labels=["direction"],
        )
        sizes = CounterMetricFamily(
            "roomcast_data_track_bytes",
            "data-track bytes received from publishers (in) and forwarded (out)",
            labels=["direction"],
        )
        for direction, count in sorted(metrics.data_track_packets.items()):
            packets.add_metric([direction], count)
            sizes.add_metric([direction], metrics.data_track_bytes.get(direction, 0))
        drops = CounterMetricFamily(
            "roomcast_data_track_packets_dropped",
            "data-track packets not forwarded, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(metrics.data_track_drops.items()):
            drops.add_metric([reason], count)
        yield packets
        yield sizes
        yield drops


def _task_count() -> int:
    import asyncio

    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the loop
        return 0


@dataclass
class RateSampler:
    """Per-track bitrates and server packet rates, sampled once a second by the media clock."""

    plane: ForwardingPlane
    interval: float = 1.0
    track_bps: dict[str, float] = field(default_factory=dict)
    track_loss: dict[str, float] = field(default_factory=dict)
    packets_in_per_s: float = 0.0
    packets_out_per_s: float = 0.0
    cpu_percent: float = 0.0
    _last: float = 0.0
    _last_bytes: dict[str, int] = field(default_factory=dict)
    _last_totals: dict[str, int] = field(default_factory=dict)
    _last_cpu: float = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last
        if elapsed < self.interval:
            return
        first = self._last == 0.0
        self._last = now
        current: dict[str, int] = {}
        worst_loss: dict[str, int] = {}  # per track: the worst subscriber's fraction lost
        for downtrack in self.plane.downtracks():
            sid = downtrack.track_sid
            worst_loss[sid] = max(worst_loss.get(sid, 0), downtrack.fraction_lost)
        for track in self.plane.uptracks():
            current[track.track_sid] = sum(layer.bytes for layer in track.layers)
            self.track_loss[track.track_sid] = worst_loss.get(track.track_sid, 0) / 256
        self.track_bps = {
            sid: 8 * max(0, value - self._last_bytes.get(sid, value)) / elapsed
            for sid, value in current.items()
        }
        self._last_bytes = current
        totals = self.plane.totals()
        cpu = sum(os.times()[:2])
        if not first:
            last = self._last_totals
            self.packets_in_per_s = (totals["packets_in"] - last.get("packets_in", 0)) / elapsed
            self.packets_out_per_s = (totals["packets_out"] - last.get("packets_out", 0)) / elapsed
            self.cpu_percent = 100 * (cpu - self._last_cpu) / elapsed
        self._last_totals = dict(totals)
        self._last_cpu = cpu

    def server(self) -> dict[str, Any]:
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            with open("/proc/self/statm") as statm:
                rss_kib = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
        except OSError:
            pass
        return {
            "cpu_percent": round(self.cpu_percent, 1),
            "memory_mib": round(rss_kib / 1024, 1),
            "packets_in_per_s": round(self.packets_in_per_s),
            "packets_out_per_s": round(self.packets_out_per_s),
        }
