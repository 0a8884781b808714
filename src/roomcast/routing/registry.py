"""Node registration, heartbeats and load figures; noticing dead nodes.

Every ``HEARTBEAT`` seconds a node writes its record into the ``roomcast:nodes`` hash and
refreshes its ``roomcast:alive:<id>`` key (TTL ``NODE_TTL``). A node whose alive key is gone is
dead: its record is removed and ``on_node_dead`` callbacks run on every surviving node, so
relayed sessions to or from it are ended and its rooms can be placed elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from roomcast.config import RedisConfig

log = logging.getLogger(__name__)

NODES_KEY = "roomcast:nodes"
ALIVE_PREFIX = "roomcast:alive:"
HEARTBEAT = 1.0  # seconds between heartbeats
NODE_TTL = 3.0  # alive-key TTL: a node that stops heartbeating is gone after this
# A node must stay missing this long before it is declared dead, so that a Redis restart
# (everyone re-registers within a heartbeat or two) never looks like nodes dying.
DEAD_GRACE = 2.0


@dataclass
class NodeStats:
    rooms: int = 0
    clients: int = 0
    tracks: int = 0
    cpu_load: float = 0.0  # this process's CPU use over the last heartbeat, 1.0 = one core
    sysload: float = 0.0  # 1-minute load average per CPU
    packets_per_second: float = 0.0
    max_rooms: int = 0  # limit.max_rooms of the node (0: no limit)


@dataclass
class NodeRecord:
    id: str
    http_url: str = ""  # how a client (or an operator) reaches this node's HTTP edge
    rtc_address: str = ""  # ip:udp_port of the media socket
    region: str = ""
    version: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    state: str = "serving"  # serving | draining
    stats: NodeStats = field(default_factory=NodeStats)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: bytes | str) -> NodeRecord | None:
        try:
            raw = json.loads(text)
            stats = NodeStats(**raw.pop("stats", {}))
            return cls(**raw, stats=stats)
        except (ValueError, TypeError):
            return None


StatsProvider = Callable[[], NodeStats]


class NodeRegistry:
    def __init__(self, client: aioredis.Redis, record: NodeRecord, stats: StatsProvider) -> None:
        self._client = client
        self.record = record
        self._stats = stats
        self.nodes: dict[str, NodeRecord] = {record.id: record}  # live nodes as last seen
        self.healthy = False  # last heartbeat reached Redis
        self.last_success = 0.0
        self._dead_callbacks: list[Callable[[str], None]] = []
        self._beat_callbacks: list[Callable[[], object]] = []
        self._task: asyncio.Task[None] | None = None
        self._cpu_mark = (time.monotonic(), time.process_time())
        self.first_beat = asyncio.Event()
        self._missing_since: dict[str, float] = {}

    @property
    def node_id(self) -> str:
        return self.record.id

    def on_node_dead(self, callback: Callable[[str], None]) -> None:
        self._dead_callbacks.append(callback)

    def on_heartbeat(self, callback: Callable[[], object]) -> None:
        """Async work to run after each successful heartbeat (e.g. renewing room leases)."""
        self._beat_callbacks.append(callback)

    def is_alive(self, node_id: str) -> bool:
        return node_id in self.nodes

    def live_nodes(self) -> list[NodeRecord]:
        return list(self.nodes.values())

    async def check_alive(self, node_id: str) -> bool:
        """Ask Redis, not the heartbeat-old view: a node may have started since."""
        if node_id == self.node_id:
            return True
        return bool(await self._client.exists(ALIVE_PREFIX + node_id))

    async def fetch_live_nodes(self) -> list[NodeRecord]:
        """Every node alive right now, read from Redis (for calls that must reach them all)."""
        raw_nodes = await self._client.hgetall(NODES_KEY)
        records = [
            record
            for value in raw_nodes.values()
            if (record := NodeRecord.from_json(value)) is not None
        ]
        if not records:
            return [self.record]
        flags = await self._client.mget([ALIVE_PREFIX + record.id for record in records])
        live = [r for r, flag in zip(records, flags, strict=True) if flag or r.id == self.node_id]
        return live if any(r.id == self.node_id for r in live) else [*live, self.record]

    async def start(self) -> None:
        self.record.started_at = time.time()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_beat.wait(), timeout=10)
        if not self.first_beat.is_set():
            log.warning("Redis is not reachable yet; this node keeps trying to register")

    async def close(self) -> None:
        if self._task is None:
            return  # never started, or closed already
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        with contextlib.suppress(RedisError, OSError):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hdel(NODES_KEY, self.node_id)
                pipe.delete(ALIVE_PREFIX + self.node_id)
                await pipe.execute()

    def _measure(self) -> NodeStats:
        stats = self._stats()
        now, cpu = time.monotonic(), time.process_time()
        wall = now - self._cpu_mark[0]
        if wall > 0:
            stats.cpu_load = round((cpu - self._cpu_mark[1]) / wall, 3)
        self._cpu_mark = (now, cpu)
        stats.sysload = round(os.getloadavg()[0] / (os.cpu_count() or 1), 3)
        return stats

    async def _loop(self) -> None:
        while True:
            try:
                await self._beat(recovering=not self.healthy)
                self.healthy = True
                self.last_success = time.monotonic()
                self.first_beat.set()
                for callback in self._beat_callbacks:
                    result = callback()
                    if asyncio.iscoroutine(result):
                        await result
            except (RedisError, OSError) as exc:
                if self.healthy:
                    log.warning("Redis heartbeat failed, retrying: %s", exc)
                self.healthy = False
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(HEARTBEAT)

    async def _beat(self, recovering: bool) -> None:
        self.record.stats = self._measure()
        self.record.updated_at = time.time()
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(NODES_KEY, self.node_id, self.record.to_json())
            pipe.set(ALIVE_PREFIX + self.node_id, "1", px=int(NODE_TTL * 1000))
            pipe.hgetall(NODES_KEY)
            _, _, raw_nodes = await pipe.execute()
        records = {
            key.decode(): record
            for key, value in raw_nodes.items()
            if (record := NodeRecord.from_json(value)) is not None
        }
        ids = list(records)
        flags = await self._client.mget([ALIVE_PREFIX + node_id for node_id in ids]) if ids else []
        alive = {node_id for node_id, flag in zip(ids, flags, strict=True) if flag}
        alive.add(self.node_id)
        live = {node_id: records[node_id] for node_id in alive if node_id in records}
        live[self.node_id] = self.record
        for node_id in alive:
            self._missing_since.pop(node_id, None)
        if recovering:
            self._missing_since.clear()  # after an outage everyone gets time to re-register
        now = time.monotonic()
        dead: list[str] = []
        for node_id in (set(self.nodes) | set(records)) - set(live):
            since = self._missing_since.setdefault(node_id, now)
            if recovering or now - since < DEAD_GRACE:
                if node_id in self.nodes:
                    live[node_id] = self.nodes[node_id]  # counted until declared dead
            else:
                dead.append(node_id)
        stale = [node_id for node_id in dead if node_id in records]
        if stale:
            await self._client.hdel(NODES_KEY, *stale)
        previous = set(self.nodes)
        self.nodes = live
        for node_id in dead:
            self._missing_since.pop(node_id, None)
            if node_id not in previous:
                continue  # a stale record of a node this one never saw alive
            log.warning("node %s is gone", node_id)
            for callback in self._dead_callbacks:
                try:
                    callback(node_id)
                except Exception:
                    log.exception("dead-node callback failed")


async def list_nodes(config: RedisConfig) -> list[tuple[NodeRecord, bool]]:
    """Every registered node and whether it is alive (for ``roomcast list-nodes``)."""
    from roomcast.routing.redis_client import connect

    client = connect(config)
    try:
        raw = await client.hgetall(NODES_KEY)
        records = sorted(
            (r for v in raw.values() if (r := NodeRecord.from_json(v)) is not None),
            key=lambda r: r.started_at,
        )
        flags = await client.mget([ALIVE_PREFIX + r.id for r in records]) if records else []
        return [(r, bool(flag)) for r, flag in zip(records, flags, strict=True)]
    except RedisError as exc:
        raise OSError(str(exc)) from exc
    finally:
        await client.aclose()
