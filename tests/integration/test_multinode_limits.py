"""What a participant can make Redis hold or write in multi-node mode (issue 20: H3, M7).

Two in-process nodes on a real redis-server. Placement is by room count with ties to the local
node, so a room created through node A lives on A and a client joining through B is relayed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
import redis.asyncio as aioredis
from livekit import api
from livekit.protocol import models, rtc

from roomcast.client.signal import join_request, wrap_join_request
from roomcast.routing.bus import channel_of
from roomcast.routing.placement import lease_key
from roomcast.routing.records import PARTICIPANTS_PREFIX
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, ServerFactory, url_of
from tests.integration.cluster import RedisServer
from tests.integration.hostile_client import trickle
from tests.integration.sdk import join_token
from tests.integration.test_signalling import receive_until, send

KIB = 1024
MIB = 1024 * KIB
CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455 §7.4.1


@pytest.fixture
async def redis() -> AsyncIterator[tuple[RedisServer, aioredis.Redis]]:
    """Requested before ``start_server``, so the nodes stop before Redis does."""
    server = RedisServer()
    await server.start()
    store = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        yield server, store
    finally:
        await store.aclose()
        await server.stop()


def node_config(redis: RedisServer) -> str:
    return (
        f"redis:\n  address: {redis.address}\n"
        "node_selector:\n  sort_by: rooms\n"
        "limit:\n  joins_per_second_per_ip: 0\n"
    )


async def info(store: aioredis.Redis, section: str, field: str) -> int:
    return int((await store.info(section))[field])


async def until_async(condition: Callable[[], Awaitable[bool]], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not reached")


def limit_hits(server: Server, limit: str) -> float:
    value = server.metrics.registry.get_sample_value("roomcast_limit_hits_total", {"limit": limit})
    return value or 0.0


@pytest.mark.parametrize("path", ["/rtc", "/rtc/v1"])
async def test_relayed_requests_leave_nothing_in_redis_and_big_ones_are_refused(
    redis: tuple[RedisServer, aioredis.Redis], start_server: ServerFactory, path: str
) -> None:
    server, store = redis
    a: Server = await start_server(node_config(server))
    b: Server = await start_server(node_config(server))
    async with api.LiveKitAPI(url_of(a), API_KEY, API_SECRET) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name="big"))
    assert await store.get(lease_key("big")) == a.node_id.encode()
    streams = [channel_of(a.node_id), channel_of(b.node_id)]

    async def streams_drained() -> bool:
        return sum([await store.xlen(s) for s in streams]) == 0

    url = f"{url_of(b, 'ws')}{path}?access_token={join_token('big', 'mallory')}"
    if path == "/rtc/v1":  # the join request travels to A with the rest of the query
        url += "&join_request=" + wrap_join_request(
            join_request(auto_subscribe=True, adaptive_stream=False)
        )
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        await receive_until(ws, "join")  # the session runs on A, relayed through B
        baseline = await info(store, "memory", "used_memory")
        # 40 large requests that A reads and ignores: Redis must not keep them.
        for _ in range(40):
            await send(ws, trickle(200 * KIB))
        await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=7)))
        await receive_until(ws, "pong_resp")  # A has handled everything before the ping

        async def memory_back() -> bool:
            return await info(store, "memory", "used_memory") < baseline + 2 * MIB

        await until_async(memory_back, timeout=3)
        await until_async(streams_drained, timeout=3)
        assert limit_hits(b, "relay_signal_request_size") == 0

        # A request larger than any legitimate one is not relayed: the WebSocket closes,
        # as it does for a frame over limit.signal_message_size_limit.
        await send(ws, trickle(1 * MIB))
        closed = await ws.receive(timeout=5)
        assert closed.type == aiohttp.WSMsgType.CLOSE, closed
        assert ws.close_code == CLOSE_MESSAGE_TOO_BIG
    assert limit_hits(b, "relay_signal_request_size") == 1
    assert await info(store, "memory", "used_memory") < baseline + 2 * MIB
    for stream in streams:
        assert await store.xlen(stream) <= 1


async def test_idle_participants_with_large_metadata_cost_redis_nothing(
    redis: tuple[RedisServer, aioredis.Redis], start_server: ServerFactory
) -> None:
    server, store = redis
    a: Server = await start_server(node_config(server))
    url = f"{url_of(a, 'ws')}/rtc?access_token="
    big = "m" * (400 * KIB)
    async with aiohttp.ClientSession() as http:
        sockets = []
        for identity in ("p1", "p2", "p3", "p4"):
            token = join_token("meta", identity, can_update_own_metadata=True)
            sockets.append(ws := await http.ws_connect(url + token))
            await receive_until(ws, "join")
        for ws in sockets:
            await send(
                ws,
                rtc.SignalRequest(
                    update_metadata=rtc.UpdateParticipantMetadata(
                        metadata=big, attributes={"a": "v" * (30 * KIB)}
                    )
                ),
            )
        people = PARTICIPANTS_PREFIX + "meta"

        async def recorded() -> list[models.ParticipantInfo]:
            raw = await store.hgetall(people)
            return [models.ParticipantInfo.FromString(v) for v in raw.values()]

        room = a.rooms.get("meta")
        assert room is not None

        async def records_current() -> bool:
            versions = {p.identity: p.version for p in room.live_participants()}
            infos = await recorded()
            return {i.identity: i.version for i in infos} == versions and all(
                p.metadata == big for p in room.live_participants()
            )

        await until_async(records_current)  # every record reflects the metadata update

        # Idle from now on: the heartbeat must not rewrite what did not change.
        before = await info(store, "stats", "total_net_input_bytes")
        await asyncio.sleep(3)
        written = await info(store, "stats", "total_net_input_bytes") - before
        assert written < 3 * 20 * KIB, f"{written} bytes written to Redis in 3 s while idle"

        # The records list the participants, without the metadata they can grow.
        assert await records_current()
        infos = await recorded()
        assert sorted(i.identity for i in infos) == ["p1", "p2", "p3", "p4"]
        assert all(not i.metadata and not i.attributes for i in infos)
        for ws in sockets:
            await ws.close()


async def test_agent_worker_records_are_bounded_and_written_once(
    redis: tuple[RedisServer, aioredis.Redis], start_server: ServerFactory
) -> None:
    from roomcast.routing.agents import WORKERS_KEY
    from tests.integration.test_agents import RawWorker

    server, store = redis
    a: Server = await start_server(node_config(server))
    async with RawWorker(a, "helper") as small, RawWorker(a, "n" * (100 * KIB)) as huge:

        async def advertised() -> bool:
            return await store.hexists(WORKERS_KEY, small.id)

        await until_async(advertised)
        # A worker whose record is absurdly large serves this node's rooms only.
        assert not await store.hexists(WORKERS_KEY, huge.id)
        assert limit_hits(a, "agent_worker_record_size") == 1

        before = await info(store, "stats", "total_net_input_bytes")
        await asyncio.sleep(2)
        written = await info(store, "stats", "total_net_input_bytes") - before
        assert written < 2 * 20 * KIB, f"{written} bytes written to Redis in 2 s while idle"

    async def withdrawn() -> bool:
        return await store.hlen(WORKERS_KEY) == 0

    await until_async(withdrawn)  # a worker that left is no longer advertised


async def test_a_stalled_reader_costs_redis_a_bounded_amount(
    redis: tuple[RedisServer, aioredis.Redis],
) -> None:
    """Node A keeps sending 1 MB messages to node B, whose reader is stuck: A holds back."""
    import json

    from roomcast.routing.bus import NodeBus

    server, store = redis
    writer = NodeBus(aioredis.Redis(host="127.0.0.1", port=server.port), "A")
    await writer.start()
    stream = channel_of("B")  # B's reader: this test, reading only when it chooses to
    try:
        baseline = await info(store, "memory", "used_memory")
        for i in range(40):
            writer.publish("B", {"t": "big", "i": i, "pad": "p" * MIB})

        async def sending() -> bool:
            return await store.xlen(stream) > 0

        await until_async(sending)
        await asyncio.sleep(0.5)  # what the writer would add unchecked, it adds in this time
        held = await info(store, "memory", "used_memory") - baseline
        assert held < 12 * MIB, f"Redis holds {held} bytes for a reader that reads nothing"

        # B reads (and trims) as a node does: everything arrives, in order, and nothing stays.
        received: list[int] = []
        last = "0-0"
        while len(received) < 40:
            reply = await store.xread({stream: last}, count=10, block=2000)
            assert reply, "the writer stopped sending"
            for entry_id, fields in reply[0][1]:
                last = entry_id.decode()
                received.append(json.loads(fields[b"m"])["i"])
            ms, seq = last.split("-")
            await store.xtrim(stream, minid=f"{ms}-{int(seq) + 1}", approximate=False)
        assert received == list(range(40))
        assert await store.xlen(stream) == 0
    finally:
        await writer.close()
