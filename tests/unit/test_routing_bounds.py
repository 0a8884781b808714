"""What the multi-node routing puts into Redis (routing/bus.py, relay.py, records.py), on fakes.

The attacks themselves, against a real redis-server, are in
tests/integration/test_multinode_limits.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from livekit.protocol import models

from roomcast.config import LimitConfig
from roomcast.routing import bus
from roomcast.routing.bus import BusError, NodeBus, after
from roomcast.routing.outbox import Outbox
from roomcast.routing.records import (
    PARTICIPANTS_PREFIX,
    ROOM_PREFIX,
    ParticipantRecord,
    RoomRecord,
    RoomRecords,
)
from roomcast.routing.relay import REQUEST_SLACK, relayed_request_limit


def test_trim_bound_is_the_next_stream_id() -> None:
    assert after("1700000000000-5") == "1700000000000-6"
    assert after("0-0") == "0-1"
    assert after("42") == "42-1"


def test_relayed_request_limit_follows_the_metadata_and_frame_limits() -> None:
    limits = LimitConfig()
    needed = limits.max_metadata_size + limits.max_attributes_size + REQUEST_SLACK
    assert relayed_request_limit(limits) == needed < limits.signal_message_size_limit
    assert relayed_request_limit(LimitConfig(signal_message_size_limit=100_000)) == 100_000
    assert relayed_request_limit(LimitConfig(signal_message_size_limit=0)) == needed


def counting_bus() -> tuple[NodeBus, list[str]]:
    hits: list[str] = []
    return NodeBus(None, "n1", hits.append), hits  # type: ignore[arg-type]


def test_oversized_messages_are_not_published() -> None:
    node_bus, hits = counting_bus()
    assert not node_bus.publish("n2", {"t": "sig_resp", "data": "x" * bus.MAX_MESSAGE_BYTES})
    assert hits == ["bus_message_size"]
    assert node_bus.publish("n2", {"t": "sig_resp", "data": "small"})


async def test_oversized_requests_fail_at_once() -> None:
    node_bus, _ = counting_bus()
    with pytest.raises(BusError, match="too large"):
        await node_bus.request("n2", "api", {"body": "x" * bus.MAX_MESSAGE_BYTES}, timeout=60)


def test_outbox_is_bounded_in_bytes_dropping_the_longest_queue_first() -> None:
    drops: list[int] = []
    outbox = Outbox(10_000, 1000, 1_000_000, lambda: drops.append(1))
    outbox.add("quiet", b"q" * 1000)
    for i in range(30):  # Redis unreachable: nothing leaves
        outbox.add("busy", f"{i:02d}".encode() * 500)
    assert outbox.bytes <= 10_000 and len(drops) == 21
    batch = outbox.take(100)
    assert batch[0] == ("quiet", b"q" * 1000)  # the quiet stream lost nothing
    assert [data[:2] for _, data in batch[1:]] == [f"{i:02d}".encode() for i in range(21, 30)]


def test_outbox_holds_back_while_a_reader_is_behind() -> None:
    outbox = Outbox(10**9, 3, 10_000, lambda: None)
    for i in range(10):
        outbox.add("s", bytes([i]) * 100)
    assert [data[0] for _, data in outbox.take(100)] == [0, 1, 2]  # 3 unread at most
    outbox.written({"s": 3})  # nothing read yet
    assert outbox.take(100) == [] and outbox.blocked() == ["s"]
    outbox.lengths({"s": 1})  # the reader has read two
    assert [data[0] for _, data in outbox.take(100)] == [3, 4]
    outbox.failed()  # Redis did not take them: they go again, first
    assert [data[0] for _, data in outbox.take(100)] == [3, 4]
    outbox.written({"s": 0})
    assert [data[0] for _, data in outbox.take(100)] == [5, 6, 7]


def test_outbox_bounds_unread_bytes_but_always_sends_one_message() -> None:
    outbox = Outbox(10**9, 1000, 1000, lambda: None)
    outbox.add("s", b"a" * 600)
    outbox.add("s", b"b" * 600)
    outbox.add("s", b"c" * 5000)  # larger than the bound by itself
    assert [data[:1] for _, data in outbox.take(100)] == [b"a"]
    outbox.written({"s": 0})
    assert [data[:1] for _, data in outbox.take(100)] == [b"b"]
    outbox.written({"s": 1})
    assert outbox.take(100) == []
    outbox.lengths({"s": 0})
    assert [data[:1] for _, data in outbox.take(100)] == [b"c"]
    outbox.written({"s": 0})
    assert outbox.empty and outbox.bytes == 0


def test_outbox_forgets_a_dead_reader() -> None:
    outbox = Outbox(10**9, 1, 10_000, lambda: None)
    outbox.add("dead", b"x")
    outbox.add("dead", b"y")
    outbox.take(10)
    outbox.written({"dead": 1})
    outbox.forget("dead")
    assert outbox.empty and outbox.bytes == 0


# -- records -----------------------------------------------------------------------------------
class FakePipeline:
    def __init__(self, store: FakeRedis) -> None:
        self.store = store
        self.commands: list[tuple[str, tuple[Any, ...]]] = []

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    def __len__(self) -> int:
        return len(self.commands)

    def __getattr__(self, name: str) -> Any:
        def queue(*args: Any, **kwargs: Any) -> None:
            self.commands.append((name, (*args, *kwargs.values())))

        return queue

    async def execute(self) -> list[Any]:
        self.store.log.extend(self.commands)
        return [self.store.run(name, args) for name, args in self.commands]


class FakeRedis:
    """Hashes only, and what was sent: enough for RoomRecords."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[bytes, bytes]] = {}
        self.log: list[tuple[str, tuple[Any, ...]]] = []

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    def run(self, name: str, args: tuple[Any, ...]) -> Any:
        key = args[0]
        if name == "hset":
            mapping = {
                (k if isinstance(k, bytes) else k.encode()): (
                    v if isinstance(v, bytes) else v.encode()
                )
                for k, v in args[1].items()
            }
            self.hashes.setdefault(key, {}).update(mapping)
        elif name == "hdel":
            for field in args[1:]:
                self.hashes.get(key, {}).pop(field.encode(), None)
            if not self.hashes.get(key, True):
                del self.hashes[key]
        elif name == "delete":
            self.hashes.pop(key, None)
        elif name == "pexpire":
            return key in self.hashes
        return 1

    def take_log(self) -> list[str]:
        names = [f"{name} {args[0]}" for name, args in self.log]
        self.log.clear()
        return names


def record(participants: dict[str, int], metadata: str = "") -> RoomRecord:
    def info(identity: str, version: int) -> models.ParticipantInfo:
        return models.ParticipantInfo(
            sid=f"PA_{identity}",
            identity=identity,
            version=version,
            metadata=metadata,
            attributes={"k": metadata},
        )

    return RoomRecord(
        "r",
        models.Room(name="r", num_participants=len(participants)),
        {
            identity: ParticipantRecord(
                f"PA_{identity}", version, lambda i=identity, v=version: info(i, v)
            )
            for identity, version in participants.items()
        },
    )


async def test_records_are_written_when_they_change_and_renewed_otherwise() -> None:
    redis = FakeRedis()
    records = RoomRecords(redis, "n1", 10_000)  # type: ignore[arg-type]
    room, people = ROOM_PREFIX + "r", PARTICIPANTS_PREFIX + "r"

    await records.write([record({"ann": 1, "bob": 1}, metadata="m" * 1000)])
    assert redis.take_log() == [
        f"delete {people}",
        f"hset {room}",
        f"hset {people}",
        f"pexpire {room}",
        f"pexpire {people}",
    ]
    stored = models.ParticipantInfo.FromString(redis.hashes[people][b"ann"])
    assert stored.identity == "ann" and not stored.metadata and not stored.attributes

    await records.write([record({"ann": 1, "bob": 1}, metadata="m" * 1000)])
    assert redis.take_log() == [f"pexpire {room}", f"pexpire {people}"]  # idle: renew only

    await records.write([record({"ann": 2}, metadata="changed")])  # bob left, ann changed
    assert redis.take_log() == [
        f"hset {room}",  # num_participants changed
        f"hset {people}",
        f"hdel {people}",
        f"pexpire {room}",
        f"pexpire {people}",
    ]
    assert set(redis.hashes[people]) == {b"ann"}

    redis.hashes.clear()  # Redis restarted empty: noticed by the renewal, rewritten in full
    await records.write([record({"ann": 2})])
    assert redis.take_log() == [f"pexpire {room}", f"pexpire {people}"]
    await records.write([record({"ann": 2})])
    assert redis.take_log()[:3] == [f"delete {people}", f"hset {room}", f"hset {people}"]
    assert set(redis.hashes[people]) == {b"ann"} and b"room" in redis.hashes[room]
