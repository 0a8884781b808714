"""Room and participant records in Redis, as livekit-server keeps them
(docs/protocol/12-config-cli-multinode.md §12.5).

The node hosting a room keeps ``roomcast:room:<name>`` (the ``Room`` protobuf plus the node id)
and ``roomcast:room_participants:<name>`` (identity → ``ParticipantInfo`` protobuf), both with
the room lease's lifetime: if the node dies they expire with its lease; when the room closes
they are deleted at once. Other nodes read the room records to answer ``ListRooms`` for a node
that is too slow to answer itself, and operators can inspect them with redis-cli.

Every heartbeat renews the keys' lifetime, but a record is written only when it changed: the
room's when its ``Room`` (apart from its timestamped ``version``) differs, a participant's when
its ``version`` does. Participant records leave out ``metadata`` and ``attributes``, which
participants can grow to ``limit.max_metadata_size`` and ``limit.max_attributes_size``:
nothing reads them from here (ListParticipants always runs on the room's node, which has them).
A key found missing (Redis restarted empty) is written in full at the next heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from livekit.protocol import models

ROOM_PREFIX = "roomcast:room:"
PARTICIPANTS_PREFIX = "roomcast:room_participants:"
NODE_FIELD = b"node"
ROOM_FIELD = b"room"


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    sid: str
    version: int  # increases on every change of the participant (rooms/participant.py)
    info: Callable[[], models.ParticipantInfo]  # built only when the record is written


@dataclass(frozen=True, slots=True)
class RoomRecord:
    name: str
    room: models.Room
    participants: dict[str, ParticipantRecord]  # by identity


@dataclass(slots=True)
class _Written:
    """What this node last wrote for one room: the room's content and each (sid, version)."""

    room: bytes
    participants: dict[str, tuple[str, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Update:
    """The commands one heartbeat needs for one room."""

    full: bool  # nothing known about what Redis holds: replace the participant records
    content: bytes  # room_content() of the room now
    room: bytes | None  # the Room record to write, None if unchanged
    changed: dict[str, bytes]  # identity → ParticipantInfo record to write
    gone: list[str]  # identities to remove


def room_content(room: models.Room) -> bytes:
    """The room record's bytes without its ``version``, which is a timestamp of the read."""
    content = models.Room()
    content.CopyFrom(room)
    content.ClearField("version")
    return content.SerializeToString(deterministic=True)


def participant_entry(record: ParticipantRecord) -> bytes:
    info = record.info()
    info.metadata = ""
    info.attributes.clear()
    return info.SerializeToString()


class RoomRecords:
    def __init__(self, client: aioredis.Redis, node_id: str, lease_ms: int) -> None:
        self._client = client
        self._node_id = node_id
        self._lease_ms = lease_ms
        self._written: dict[str, _Written] = {}

    async def write(self, records: list[RoomRecord]) -> None:
        """Bring the records of this node's rooms up to date and renew their lifetime."""
        current = {record.name for record in records}
        for name in list(self._written):
            if name not in current:
                del self._written[name]  # closed or moved: written in full if it comes back
        if not records:
            return
        updates = [self._update(record) for record in records]
        renewals: list[tuple[str, int]] = []  # room name, index of its PEXPIRE's reply
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for record, update in zip(records, updates, strict=True):
                    room_key = ROOM_PREFIX + record.name
                    people_key = PARTICIPANTS_PREFIX + record.name
                    if update.full:
                        pipe.delete(people_key)  # a previous host's records must not linger
                    if update.room is not None:
                        pipe.hset(
                            room_key, mapping={NODE_FIELD: self._node_id, ROOM_FIELD: update.room}
                        )
                    if update.changed:
                        pipe.hset(people_key, mapping=update.changed)  # type: ignore[arg-type]
                    if update.gone:
                        pipe.hdel(people_key, *update.gone)
                    renewals.append((record.name, len(pipe)))
                    pipe.pexpire(room_key, self._lease_ms)
                    if record.participants:
                        renewals.append((record.name, len(pipe)))
                        pipe.pexpire(people_key, self._lease_ms)
                replies = await pipe.execute()
        except BaseException:
            for record in records:
                self._written.pop(record.name, None)  # unknown state: write in full next time
            raise
        for record, update in zip(records, updates, strict=True):
            versions = {i: (p.sid, p.version) for i, p in record.participants.items()}
            self._written[record.name] = _Written(update.content, versions)
        for name, index in renewals:
            if not replies[index]:  # the key is gone (Redis restarted empty)
                self._written.pop(name, None)

    def _update(self, record: RoomRecord) -> _Update:
        written = self._written.get(record.name)
        content = room_content(record.room)
        before = written.participants if written is not None else {}
        return _Update(
            full=written is None,
            content=content,
            room=(
                record.room.SerializeToString()
                if written is None or written.room != content
                else None
            ),
            changed={
                identity: participant_entry(participant)
                for identity, participant in record.participants.items()
                if before.get(identity) != (participant.sid, participant.version)
            },
            gone=[identity for identity in before if identity not in record.participants],
        )

    async def delete(self, name: str) -> None:
        """The room closed here: forget it now (only if the record is still ours)."""
        self._written.pop(name, None)
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
        """The recorded participants of a room (without metadata and attributes)."""
        raw: dict[bytes, bytes] = await self._client.hgetall(PARTICIPANTS_PREFIX + name)  # type: ignore[assignment]
        out = []
        for value in raw.values():
            info = models.ParticipantInfo()
            info.ParseFromString(value)
            out.append(info)
        return out
