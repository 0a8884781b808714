"""Wires the layers together: config → rooms → edge, and runs them until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

import ifaddr
from aiohttp import web
from livekit.protocol import models, rtc

from roomcast import __version__
from roomcast.agents import AgentService
from roomcast.auth import TokenVerifier
from roomcast.config import Config, RedisConfig, candidate_allowed, short_secrets
from roomcast.edge.agent_dispatch_service import twirp_services as agent_twirp_services
from roomcast.edge.agent_endpoint import WorkerEndpoint, agent_server_info
from roomcast.edge.api import TwirpEndpoint
from roomcast.edge.client_address import ClientAddresses
from roomcast.edge.http import create_app
from roomcast.edge.listener import EdgeRunner, ListenerLimits
from roomcast.edge.metrics_endpoint import metrics_app, metrics_handler
from roomcast.edge.ports import (
    HTTP,
    ICE_TCP,
    MEDIA,
    PROMETHEUS,
    Listener,
    bind_failure,
    media_host,
)
from roomcast.edge.rtc import RtcEndpoint
from roomcast.edge.stats import StatsEndpoint
from roomcast.edge.web import WebEndpoint
from roomcast.ids import NODE_PREFIX, new_sid
from roomcast.media.native_plane import mux_options, new_forwarding_plane
from roomcast.media.tcp_mux import IceTcpPortError
from roomcast.media.udp_mux import UdpMux
from roomcast.rooms.admin import RoomAdmin
from roomcast.rooms.data import DataExchange
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.room import RoomEvent
from roomcast.rooms.session_manager import SessionManager
from roomcast.rooms.subscriptions import SubscriptionManager
from roomcast.rooms.tracks import TrackManager
from roomcast.routing.agents import ClusterAgents
from roomcast.routing.records import ParticipantRecord, RoomRecord
from roomcast.routing.registry import NodeRecord, NodeStats
from roomcast.routing.router import Router
from roomcast.supervisor import worker_index
from roomcast.telemetry import Metrics, RateSampler
from roomcast.turn.metrics import TurnCollector
from roomcast.turn.service import MediaSocket, TurnPortError, TurnServer
from roomcast.webhooks import WebhookNotifier

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0  # seconds allowed for shutdown beyond the webhook flush timeout
MEDIA_TICK = 0.25  # seconds between RTCP/bandwidth/speaker updates


def describe_redis(config: RedisConfig) -> str:
    """Where the Redis of multi-node mode is, for the log (never its password)."""
    if config.sentinel_addresses:
        return (
            f"sentinel master {config.sentinel_master_name!r} "
            f"({', '.join(config.sentinel_addresses)})"
        )
    return config.address


def offset_turn_ports(config: Config) -> None:
    """With --workers, each worker serves TURN on the configured ports + its index (as
    rtc.udp_port and rtc.tcp_port): its TURN relays to its own media port only."""
    index = worker_index() or 0
    turn = config.turn
    if index and turn.enabled:
        turn.udp_port += index if turn.udp_port else 0
        turn.tls_port += index if turn.tls_port else 0


class Server:
    def __init__(self, config: Config, node_id: str | None = None) -> None:
        self.config = config
        self.verifier = TokenVerifier(config.keys)
        webhook_key = config.webhook.api_key
        self.webhooks = WebhookNotifier(
            config.webhook.urls, webhook_key, config.keys.get(webhook_key, "")
        )
        self.rooms = RoomManager(config.room, config.limit, self._on_room_event)
        self.admin = RoomAdmin(config, self.rooms, DataExchange(config.limit.max_data_packet_size))
        self.node_id = node_id or new_sid(NODE_PREFIX, 8)
        self.agents = AgentService(self.verifier, self.admin)
        # The IP of our candidates and TURN URLs (join_response.py reads it from the config).
        advertise_ip = self._advertise_ip()
        config.node_address = advertise_ip or self._rtc_host()
        offset_turn_ports(config)
        self.turn: TurnServer | None = None
        self.mux = UdpMux(
            self._rtc_host(),
            config.effective_udp_port,
            advertise_ip=advertise_ip,
            data_channel_slow_threshold=config.rtc.datachannel_slow_threshold,
            tcp_port=self._ice_tcp_port(),
            **mux_options(config.rtc.forwarding_plane, config.rtc.forwarding_threads),
        )
        congestion = config.rtc.congestion_control
        self.plane = new_forwarding_plane(
            self.mux,
            unknown_ssrc_rate=config.limit.unknown_ssrc_packets_per_second,
            congestion_control=congestion.enabled,
            allow_pause=congestion.allow_pause,
        )
        self.metrics = Metrics()
        self.metrics.attach(
            self.rooms,
            self.plane,
            self.webhooks,
            lambda: self.mux.transport_count,
            self.mux.engine_counters if self.mux.native else None,
        )
        self.mux.on_limit = self.metrics.count_limit_hit
        self.rates = RateSampler(self.plane)
        self.media = SubscriptionManager(self.plane, TrackManager(config.limit.num_tracks))
        self.sessions = SessionManager(
            config, self.admin, self.mux, self.media, self.node_id, self.metrics
        )
        # Multi-node mode (docs/protocol/12-config-cli-multinode.md §12.5): only when Redis is
        # configured.
        self.router = (
            Router(
                config,
                NodeRecord(id=self.node_id, region=config.region),
                self._node_stats,
                self.metrics.count_limit_hit,
            )
            if config.redis.enabled
            else None
        )
        self.addresses = ClientAddresses(config.trusted_proxies)
        self.app = create_app(config.limit.max_api_request_body_size, self.addresses)
        self.twirp = TwirpEndpoint(
            self.verifier,
            self.admin,
            self.metrics,
            agent_twirp_services(config, self.agents.dispatcher),
            self.router,
            max_body_size=config.limit.max_api_request_body_size,
        )
        self.twirp.add_routes(self.app)
        self.agent_endpoint = WorkerEndpoint(
            self.verifier,
            self.agents.registry,
            self.agents.dispatcher,
            agent_server_info(config.region, self.node_id),
            config.limit.signal_message_size_limit,
        )
        self.agent_endpoint.add_routes(self.app)  # /agent (livekit-agents workers)
        self.stats = StatsEndpoint(
            self.verifier,
            self.rooms,
            self.rates,
            self.node_id,
            self.router.gather_stats if self.router is not None else None,
        )
        self.stats.add_routes(self.app)
        self.web = WebEndpoint(config, self.rooms, healthy=self._healthy)
        self.web.add_routes(self.app)  # / (health or playground)
        if self._metrics_on_main_port:
            prometheus = config.prometheus
            self.app.router.add_get(
                "/metrics",
                metrics_handler(self.metrics.registry, prometheus.username, prometheus.password),
            )
        self.rtc = RtcEndpoint(
            self.verifier,
            self.sessions,
            self.metrics,
            config.limit.signal_message_size_limit,
            self.router,
        )
        self.rtc.add_routes(self.app)
        self.cluster_agents: ClusterAgents | None = None
        if self.router is not None:
            self.cluster_agents = ClusterAgents(
                self.router.client,
                self.router.bus,
                self.router.registry,
                self.agents.registry,
                self.agents.dispatcher,
            )
            self.router.bus.on_request("stats", self._local_stats)
            self.router.bus.on_request("join_check", self.rtc.answer_join_check)
            self.router.attach(
                self.rtc.start_relayed,
                self.twirp.execute_local,
                self._room_records,
                self._room_lost,
            )
        self._runner: EdgeRunner | None = None
        self._prometheus_runner: EdgeRunner | None = None
        self._media_clock: asyncio.Task[None] | None = None
        self.ports: list[int] = []

    def _on_room_event(self, event: RoomEvent) -> None:
        self.webhooks.notify(event)
        self.agents.on_room_event(event)
        if self.router is not None and event.name == "room_finished":
            self.router.room_closed(event.room.name)

    def _node_stats(self) -> NodeStats:
        rooms = self.rooms.list()
        return NodeStats(
            rooms=len(rooms),
            clients=sum(len(room.participants) for room in rooms),
            tracks=len(self.plane.uptracks()),
            packets_per_second=round(self.rates.packets_out_per_s, 1),
            max_rooms=self.config.limit.max_rooms,
        )

    async def _local_stats(self, _: object) -> dict[str, object]:
        return self.stats.local_view()

    def _room_records(self) -> list[RoomRecord]:
        return [
            RoomRecord(
                room.name,
                room.to_proto(),
                # Built only for participants whose version changed (routing/records.py).
                {
                    p.identity: ParticipantRecord(p.sid, p.version, p.to_proto)
                    for p in room.live_participants()
                },
            )
            for room in self.rooms.list()
        ]

    def _healthy(self) -> bool:
        return self.router is None or self.router.healthy

    def _room_lost(self, name: str) -> None:
        """Another node holds this room's lease: this copy must go (one room, one node)."""
        room = self.rooms.get(name)
        if room is not None:
            self.rooms.close(
                room,
                models.DisconnectReason.MIGRATION,
                models.RoomEndReason.ROOM_END_SUPERSEDED,
            )

    def _rtc_host(self) -> str:
        """One UDP socket for WebRTC: on the bound address when there is exactly one."""
        return media_host(self.config.bind_addresses)

    def _advertise_ip(self) -> str | None:
        """The IP in our ICE candidates: node_ip, else the bound address, else the first
        interface address that rtc.ips allows (loopback last)."""
        if self.config.rtc.node_ip:
            return self.config.rtc.node_ip
        host = self._rtc_host()
        if host not in ("0.0.0.0", "::"):
            return None
        addresses = [
            ip.ip
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str)
        ]
        allowed = [a for a in addresses if candidate_allowed(a, self.config.rtc.ips)]
        for address in allowed:
            if not ipaddress.ip_address(address).is_loopback:
                return address
        if allowed:
            return allowed[0]
        log.warning("rtc.ips allows none of this machine's addresses: advertising 127.0.0.1")
        return "127.0.0.1"

    def _ice_tcp_port(self) -> int | None:
        """rtc.tcp_port (0: no ICE over TCP); with --workers, tcp_port + the worker's index."""
        port = self.config.rtc.tcp_port
        return port + (worker_index() or 0) if port else None

    @property
    def bind_addresses(self) -> list[str]:
        return self.config.bind_addresses or ["0.0.0.0"]

    async def start(self) -> None:
        if self.config.ignored_keys:
            log.warning(
                "these config keys are accepted for livekit-server compatibility but do "
                "nothing here:\n%s",
                "\n".join(f"  {key}: {note}" for key, note in self.config.ignored_keys),
            )
        for key in short_secrets(self.config):
            log.error(
                "the secret of API key %s is shorter than 32 characters: tokens signed with "
                "it can be brute-forced offline; use a random secret of 32 characters or more",
                key,
            )
        # Every port first: a taken one fails the start (edge.ports.BindError) before anything
        # announces a URL.
        try:
            await self._bind()
        except BaseException:
            await self._unbind()
            raise
        if self.router is not None:
            record = self.router.registry.record
            host = self._advertise_ip() or self._rtc_host()
            record.http_url = f"http://{self.bind_addresses[0]}:{self.port}"
            record.rtc_address = f"{host}:{self.mux.port}"
            record.version = __version__
            await self.router.start()
        self.rooms.start()
        self._media_clock = asyncio.get_running_loop().create_task(self._run_media_clock())
        log.info(
            "roomcast started on %s port %d (WebRTC UDP %d, ICE/TCP %s); %s",
            ", ".join(self.bind_addresses),
            self.port,
            self.mux.port,
            self.mux.tcp_port or "off",
            self.mode,
        )
        if worker_index() in (None, 0):  # once, not once per worker
            self.web.announce(self.port)

    @property
    def mode(self) -> str:
        """Single node or multi-node, with this node's id (and worker index)."""
        index = worker_index()
        worker = f", worker {index}" if index is not None else ""
        if self.router is None:
            return f"single node, node id {self.node_id}{worker}"
        where = describe_redis(self.config.redis)
        return f"multi-node via Redis at {where}, node id {self.node_id}{worker}"

    async def _bind(self) -> None:
        """UDP media, then the HTTP port on every address, then the Prometheus port."""
        try:
            await self.mux.start()
        except IceTcpPortError as exc:
            port = self._ice_tcp_port() or 0
            raise bind_failure(ICE_TCP, self._rtc_host(), port, exc) from exc
        except OSError as exc:
            port = self.config.effective_udp_port
            raise bind_failure(MEDIA, self._rtc_host(), port, exc) from exc
        await self._start_turn()
        self._runner = EdgeRunner(
            self.app,
            self._listener_limits(),
            self.addresses,
            self.metrics,
            handle_signals=False,
            access_log=None,
        )
        await self._runner.setup()
        # --workers: every worker listens on the same port; the kernel spreads connections.
        shared = worker_index() is not None
        for address in self.bind_addresses:
            site = web.TCPSite(
                self._runner, address, self.config.port, reuse_address=True, reuse_port=shared
            )
            try:
                await site.start()
            except OSError as exc:
                raise bind_failure(HTTP, address, self.config.port, exc) from exc
        self.ports = [address[1] for address in self._runner.addresses]
        await self._start_prometheus()

    async def _start_turn(self) -> None:
        """The embedded TURN server, when turn.enabled: after the media socket it relays to."""
        if not self.config.turn.enabled:
            return
        media = MediaSocket(self.mux.host, self.mux.port, self.config.node_address)
        turn = TurnServer(self.config, media, self.metrics.count_limit_hit)
        try:
            await turn.start()
        except TurnPortError as exc:
            purpose = f"TURN over {'UDP' if exc.protocol == 'UDP' else 'TCP/TLS'}"
            listener = Listener(exc.protocol, purpose, f"{exc.key} in the YAML config")
            raise bind_failure(listener, exc.host, exc.port, exc) from exc
        self.metrics.registry.register(TurnCollector(turn))
        self.turn = turn

    async def _unbind(self) -> None:
        """Release what ``_bind`` had bound before it failed."""
        for runner in (self._runner, self._prometheus_runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._prometheus_runner = None
        if self.turn is not None:
            await self.turn.stop()
        await self.mux.close()

    async def _run_media_clock(self) -> None:
        """Periodic media work: RTCP reports and bandwidth estimates, active speakers."""
        while True:
            await asyncio.sleep(MEDIA_TICK)
            try:
                self.media.tick(self.rooms.list())
                self.rates.tick()
            except Exception:  # one bad track must not stop reports for everyone
                log.exception("media tick failed")

    def _listener_limits(self) -> ListenerLimits:
        limits = self.config.limit
        return ListenerLimits(limits.http_idle_timeout, limits.connections_per_ip)

    @property
    def _metrics_on_main_port(self) -> bool:
        """Dev mode also serves /metrics on the HTTP port, except with --workers (each worker
        would answer with its own figures, whichever the kernel picked)."""
        return self.config.dev_mode and worker_index() is None

    async def _start_prometheus(self) -> None:
        """Metrics on their own port, when configured, as livekit-server serves them."""
        prometheus = self.config.prometheus
        port = prometheus.port or self.config.prometheus_port
        if not port or worker_index() not in (None, 0):
            return  # with --workers, worker 0 serves the Prometheus port
        app = metrics_app(self.metrics.registry, prometheus.username, prometheus.password)
        self._prometheus_runner = EdgeRunner(app, self._listener_limits(), self.addresses)
        await self._prometheus_runner.setup()
        for address in self.bind_addresses:
            try:
                await web.TCPSite(self._prometheus_runner, address, port).start()
            except OSError as exc:
                raise bind_failure(PROMETHEUS, address, port, exc) from exc

    @property
    def port(self) -> int:
        """The bound HTTP port (useful when configured as 0)."""
        return self.ports[0] if self.ports else self.config.port

    async def stop(self) -> None:
        """Close rooms (participants get SERVER_SHUTDOWN), flush webhooks, stop HTTP."""
        if self._media_clock is not None:
            self._media_clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._media_clock
            self._media_clock = None
        if self.router is None:
            await self.rooms.stop()
        else:
            # Leave the cluster first so rejoining clients are placed on live nodes, then
            # tell participants to reconnect (they land elsewhere) while the bus still runs.
            if self.cluster_agents is not None:
                await self.cluster_agents.close()
            await self.router.withdraw()
            await self.rooms.stop(rtc.LeaveRequest.Action.RECONNECT)
        log.debug("shutdown: rooms closed")
        await self.rtc.close_all()
        log.debug("shutdown: signalling closed")
        if self.router is not None:
            await self.router.close()  # after the leaves above are published
            log.debug("shutdown: router closed")
        await self.agents.close()
        await self.agent_endpoint.close_all()
        await self.webhooks.close(self.config.shutdown_flush_timeout)
        log.debug("shutdown: webhooks flushed")
        for runner in (self._runner, self._prometheus_runner):
            if runner is not None:
                await runner.cleanup()
        log.debug("shutdown: HTTP closed")
        self._runner = self._prometheus_runner = None
        if self.turn is not None:
            await self.turn.stop()
        await self.mux.close()
        log.info("roomcast stopped")

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            # Bounded: a peer or Redis that never answers must not keep the process alive.
            limit = self.config.shutdown_flush_timeout + SHUTDOWN_GRACE
            try:
                await asyncio.wait_for(self.stop(), limit)
            except TimeoutError:
                log.error("shutdown did not finish within %.0f s; exiting anyway", limit)
