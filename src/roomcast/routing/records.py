"""Room and participant records in Redis, as livekit-server keeps them
(docs/protocol/12-config-cli-multinode.md §12.5).

The node hosting a room writes, every heartbeat, ``roomcast:room:<name>`` (the ``Room``
protobuf plus the node id) and ``roomcast:room_participants:<name>`` (identity →
``ParticipantInfo`` protobuf), both with the room lease's lifetime: if the node dies they
expire with its lease; when the room closes they are deleted at once. Other nodes read them to
answer ``ListRooms`` for a node that is too slow to answer itself, and operators can inspect
them with redis-cli.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from livekit.protocol import models

ROOM_PREFIX = "roomcast:room:"
PARTICIPANTS_PREFIX = "roomcast:room_participants:"
NODE_FIELD = b"node"
ROOM_FIELD = b"room"


@dataclass(frozen=True, slots=True)
class RoomRecord:
    name: str
    room: bytes  # models.Room, serialized
    participants: dict[str, bytes]  # identity → models.ParticipantInfo, serialized


class RoomRecords:
    def __init__(self, client: aioredis.Redis, node_id: str, lease_ms: int) -> None:
        self._client = client
        self._node_id = node_id
        self._lease_ms = lease_ms

    async def write(self, records: list[RoomRecord]) -> None:
        if not records:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for record in records:
                room_key = ROOM_PREFIX + record.name
                people_key = PARTICIPANTS_PREFIX + record.name
                pipe.hset(room_key, mapping={NODE_FIELD: self._node_id, ROOM_FIELD: record.room})
                pipe.pexpire(room_key, self._lease_ms)
                pipe.delete(people_key)
                if record.participants:
                    pipe.hset(people_key, mapping=record.participants)  # type: ignore[arg-type]
                    pipe.pexpire(people_key, self._lease_ms)
            await pipe.execute()

    async def delete(self, name: str) -> None:
        """The room closed here: forget it now (only if the record is still ours)."""
        room_key = ROOM_PREFIX + name
        if await self._client.hget(room_key, NODE_FIELD) == self._node_id.encode():
            await self._client.delete(room_key, PARTICIPANTS_PREFIX + name)

    async def rooms_of(self, node_ids: set[str]) -> list[models.Room]:
        """The recorded rooms hosted by these nodes."""
        rooms: list[models.Room] = []
        async for key in self._client.scan_iter(match=ROOM_PREFIX + "*", count=500):
            fields: dict[bytes, bytes] = await self._client.hgetall(key)  # type: ignore[assignment]
            node = fields.get(NODE_FIELD, b"").decode()
            if node in node_ids and ROOM_FIELD in fields:
                room = models.Room()
                room.ParseFromString(fields[ROOM_FIELD])
                rooms.append(room)
        return rooms

    async def participants(self, name: str) -> list[models.ParticipantInfo]:
        raw: dict[bytes, bytes] = await self._client.hgetall(PARTICIPANTS_PREFIX + name)  # type: ignore[assignment]
        out = []
        for value in raw.values():
            info = models.ParticipantInfo()
            info.ParseFromString(value)
            out.append(info)
        return out
