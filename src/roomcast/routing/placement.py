"""Room → node leases in Redis: a room lives on exactly one node.

``roomcast:room_node:<room>`` holds the hosting node's id with a lease (``LEASE`` seconds).
It is set with NX when a room is placed, renewed every heartbeat by the node hosting the room,
and deleted (compare-and-delete) when the room closes. A node whose lease is held by another
node closes its copy, so two nodes never host the same room. A lease naming a dead node is
taken over by the next placement.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis.asyncio as aioredis

from roomcast.routing.registry import NodeRegistry
from roomcast.routing.selector import Selector

log = logging.getLogger(__name__)

ROOM_NODE_PREFIX = "roomcast:room_node:"
LEASE = 10.0  # seconds; renewed every heartbeat while the room lives

# Set the lease when it is free or already ours; report who holds it otherwise.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return v
"""
# Delete only if the lease still names the given node.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(room: str) -> str:
    return ROOM_NODE_PREFIX + room


class Placement:
    def __init__(self, client: aioredis.Redis, registry: NodeRegistry, selector: Selector) -> None:
        self._client = client
        self._registry = registry
        self._select = selector
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @property
    def node_id(self) -> str:
        return self._registry.node_id

    async def node_of(self, room: str) -> str | None:
        """The live node hosting ``room``, or None (a dead node's lease is released)."""
        value = await self._client.get(lease_key(room))
        if value is None:
            return None
        node_id = value.decode() if isinstance(value, bytes) else str(value)
        if await self._registry.check_alive(node_id):
            return node_id
        await self._release(keys=[lease_key(room)], args=[node_id])
        log.info("room %s: its node %s is gone; the room will be placed again", room, node_id)
        return None

    async def place(self, room: str) -> str:
        """The room's node, choosing one (and taking the lease for it) if it has none."""
        for _ in range(3):
            current = await self.node_of(room)
            if current is not None:
                return current
            chosen = self._select(await self._registry.fetch_live_nodes(), self.node_id).id
            holder = await self._claim(keys=[lease_key(room)], args=[chosen, int(LEASE * 1000)])
            holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
            if holder_id == chosen or await self._registry.check_alive(holder_id):
                return holder_id
        raise LookupError(f"could not place room {room!r}")

    async def renew(self, rooms: Iterable[str]) -> list[str]:
        """Renew (or re-take after a Redis restart) our leases; return rooms held elsewhere."""
        names = list(rooms)
        if not names:
            return []
        async with self._client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.eval(_CLAIM, 1, lease_key(name), self.node_id, int(LEASE * 1000))
            holders = await pipe.execute()
        lost = []
        for name, holder in zip(names, holders, strict=True):
            holder_id = holder.decode() if isinstance(holder, bytes) else str(holder)
            if holder_id != self.node_id and self._registry.is_alive(holder_id):
                lost.append(name)
        return lost

    async def release(self, room: str) -> None:
        await self._release(keys=[lease_key(room)], args=[self.node_id])
