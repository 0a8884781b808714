"""The multi-node router: what the edge asks ("where does this room live?", "run this there").

Owns the Redis client, the node bus, the registry, room placement and both sides of the
signalling relay. Server creates it only when ``redis`` is configured.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from roomcast.config import Config
from roomcast.routing import redis_client
from roomcast.routing.bus import BusError, LimitCounter, Message, NodeBus, b64, unb64
from roomcast.routing.placement import LEASE, Placement
from roomcast.routing.records import RoomRecord, RoomRecords
from roomcast.routing.registry import NodeRecord, NodeRegistry, StatsProvider
from roomcast.routing.relay import EdgeRelay, RoomRelay, SessionStarter, relayed_request_limit
from roomcast.routing.selector import make_selector

log = logging.getLogger(__name__)

API_TIMEOUT = 10.0  # seconds a RoomService call may take on another node
LIST_TIMEOUT = 3.0  # ListRooms gathers from every node; a slow node is left out
# A join asks the room's node whether the room is full; without an answer by then, the join
# goes ahead (and is refused in the session if the room really is full).
JOIN_CHECK_TIMEOUT = 2.0


class RoutingUnavailable(Exception):
    """Redis or the room's node cannot be reached right now (clients should retry)."""


@dataclass(frozen=True, slots=True)
class ApiResult:
    status: int
    content_type: str
    body: bytes


# service, method, content type, body, bearer token → the local Twirp result
ApiExecutor = Callable[[str, str, str, bytes, str], Awaitable[ApiResult]]


class Router:
    def __init__(
        self,
        config: Config,
        record: NodeRecord,
        stats: StatsProvider,
        count_limit_hit: LimitCounter = lambda limit: None,
    ) -> None:
        self.client = self._client = redis_client.connect(config.redis)
        self.node_id = record.id
        self.bus = NodeBus(self._client, record.id, count_limit_hit)
        self.registry = NodeRegistry(self._client, record, stats)
        self.placement = Placement(self._client, self.registry, make_selector(config.node_selector))
        self.edge = EdgeRelay(self.bus, relayed_request_limit(config.limit))
        self.records = RoomRecords(self._client, record.id, int(LEASE * 1000))
        self._room_records: Callable[[], list[RoomRecord]] = list
        self._room_relay: RoomRelay | None = None
        self._api: ApiExecutor | None = None
        self._on_room_lost: Callable[[str], None] = lambda name: None
        self.registry.on_node_dead(self._node_dead)
        self.registry.on_heartbeat(self._renew_leases)
        self.bus.on_request("api", self._serve_api)

    def attach(
        self,
        start_session: SessionStarter,
        execute_api: ApiExecutor,
        room_records: Callable[[], list[RoomRecord]],
        on_room_lost: Callable[[str], None],
    ) -> None:
        """Hooks into this node's rooms: run relayed sessions and API calls here."""
        self._room_relay = RoomRelay(self.bus, start_session)
        self._api = execute_api
        self._room_records = room_records
        self._on_room_lost = on_room_lost

    async def start(self) -> None:
        await self.bus.start()
        await self.registry.start()

    async def withdraw(self) -> None:
        """Stop heartbeating and deregister: other nodes stop placing or routing rooms here."""
        await self.registry.close()

    async def close(self) -> None:
        if self._room_relay is not None:
            await self._room_relay.close()
        await self.bus.close()
        await self.registry.close()
        await self._client.aclose()

    @property
    def healthy(self) -> bool:
        return self.registry.healthy

    # -- placement ----------------------------------------------------------------------------
    async def room_node(self, room: str) -> str | None:
        try:
            return await self.placement.node_of(room)
        except (RedisError, OSError) as exc:
            raise RoutingUnavailable(f"routing store unavailable: {exc}") from exc

    async def place(self, room: str) -> str:
        try:
            return await self.placement.place(room)
        except (RedisError, OSError, LookupError) as exc:
            raise RoutingUnavailable(f"cannot place room {room!r}: {exc}") from exc

    def room_closed(self, room: str) -> None:
        asyncio.get_running_loop().create_task(self._release(room))

    async def _release(self, room: str) -> None:
        try:
            await self.placement.release(room)
            await self.records.delete(room)
        except (RedisError, OSError) as exc:
            log.warning("could not release room %s (its lease will expire): %s", room, exc)

    async def _renew_leases(self) -> None:
        records = self._room_records()
        lost = set(await self.placement.renew(r.name for r in records))
        for room in lost:
            log.warning("room %s is hosted by another node; closing this copy", room)
            self._on_room_lost(room)
        await self.records.write([r for r in records if r.name not in lost])

    async def join_refusal(self, node_id: str, token: str) -> str | None:
        """Ask the room's node whether it would refuse this join token now (a full room):
        its reason, or None (a seat is free, or the node did not answer in time)."""
        try:
            reply = await self.bus.request(
                node_id, "join_check", {"token": token}, JOIN_CHECK_TIMEOUT
            )
        except BusError as exc:
            log.debug("join check on node %s failed: %s", node_id, exc)
            return None
        refusal = reply.get("refusal")
        return str(refusal) if refusal else None

    # -- API ----------------------------------------------------------------------------------
    async def call_api(
        self,
        node_id: str,
        service: str,
        method: str,
        content_type: str,
        body: bytes,
        token: str,
        timeout: float = API_TIMEOUT,
    ) -> ApiResult:
        request = {
            "service": service,
            "method": method,
            "content_type": content_type,
            "body": b64(body),
            "token": token,
        }
        try:
            reply = await self.bus.request(node_id, "api", request, timeout)
            return ApiResult(
                int(reply["status"]), str(reply["content_type"]), unb64(str(reply["body"]))
            )
        except (BusError, KeyError, ValueError) as exc:
            raise RoutingUnavailable(str(exc)) from exc

    async def gather_api(
        self, service: str, method: str, content_type: str, body: bytes, token: str
    ) -> list[tuple[str, ApiResult | None]]:
        """Run a call on every other live node (ListRooms); None for a node that failed."""

        async def one(node_id: str) -> tuple[str, ApiResult | None]:
            try:
                args = (service, method, content_type, body, token, LIST_TIMEOUT)
                return node_id, await self.call_api(node_id, *args)
            except RoutingUnavailable as exc:
                log.warning("%s on node %s failed: %s", method, node_id, exc)
                return node_id, None

        others = await self._other_nodes(raise_unavailable=True)
        return list(await asyncio.gather(*(one(node_id) for node_id in others)))

    async def gather_stats(self) -> list[Message]:
        """Every other live node's /stats view (nodes that do not answer are left out)."""

        async def one(node_id: str) -> Message | None:
            try:
                return await self.bus.request(node_id, "stats", {}, LIST_TIMEOUT)
            except BusError as exc:
                log.warning("stats from node %s failed: %s", node_id, exc)
                return None

        others = await self._other_nodes(raise_unavailable=False)
        results = await asyncio.gather(*(one(node_id) for node_id in others))
        return [r for r in results if r is not None and "rooms" in r and "server" in r]

    async def _other_nodes(self, *, raise_unavailable: bool) -> list[str]:
        """The ids of the other live nodes, read from Redis (not the heartbeat-old view)."""
        try:
            nodes = await self.registry.fetch_live_nodes()
        except (RedisError, OSError) as exc:
            if raise_unavailable:
                raise RoutingUnavailable(f"routing store unavailable: {exc}") from exc
            return []
        return [n.id for n in nodes if n.id != self.node_id]

    async def _serve_api(self, request: Message) -> Message:
        if self._api is None:
            raise RuntimeError("node not ready")
        result = await self._api(
            str(request["service"]),
            str(request["method"]),
            str(request["content_type"]),
            unb64(str(request["body"])),
            str(request["token"]),
        )
        return {
            "status": result.status,
            "content_type": result.content_type,
            "body": b64(result.body),
        }

    # -- failures -----------------------------------------------------------------------------
    def _node_dead(self, node_id: str) -> None:
        self.bus.forget(node_id)
        self.edge.node_dead(node_id)
        if self._room_relay is not None:
            self._room_relay.edge_dead(node_id)
