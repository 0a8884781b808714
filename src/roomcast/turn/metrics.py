"""The embedded TURN server in /metrics: read from its counters at scrape time (nothing is
counted twice). Limits it applies are counted in roomcast_limit_hits_total by the server's
`on_limit` callback (turn_allocations_per_user, turn_allocations, turn_relay_ports,
turn_peer_refused, turn_connections)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .service import TurnServer


class TurnCollector(Collector):
    def __init__(self, server: TurnServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        core = self.server.core
        totals = core.totals
        yield GaugeMetricFamily(
            "roomcast_turn_allocations", "TURN allocations now", value=core.allocation_count
        )
        yield CounterMetricFamily(
            "roomcast_turn_allocations_created",
            "TURN allocations made",
            value=core.stats["allocations"],
        )
        yield GaugeMetricFamily(
            "roomcast_turn_connections",
            "TCP and TLS connections to the TURN ports",
            value=self.server.connection_count,
        )
        relayed_bytes = CounterMetricFamily(
            "roomcast_turn_relayed_bytes",
            "bytes relayed by TURN, by direction (to_peer: from clients to the media port)",
            labels=["direction"],
        )
        relayed_bytes.add_metric(["to_peer"], totals.to_peer_bytes)
        relayed_bytes.add_metric(["to_client"], totals.to_client_bytes)
        yield relayed_bytes
        relayed_packets = CounterMetricFamily(
            "roomcast_turn_relayed_packets",
            "packets relayed by TURN, by direction",
            labels=["direction"],
        )
        relayed_packets.add_metric(["to_peer"], totals.to_peer_packets)
        relayed_packets.add_metric(["to_client"], totals.to_client_packets)
        yield relayed_packets
        yield CounterMetricFamily(
            "roomcast_turn_dropped_packets",
            "packets TURN did not relay (no permission or channel, an unknown source)",
            value=totals.dropped,
        )
