"""What a participant can make Redis hold or write in multi-node mode (security review H3, M7):
the attack code of tests/integration/test_multinode_limits.py, paced and repeated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import redis.asyncio as aioredis
from livekit import api
from livekit.protocol import models, rtc
from tests.conftest import API_KEY, API_SECRET
from tests.integration.hostile_client import trickle
from tests.integration.sdk import join_token
from tests.integration.test_signalling import receive_until, send

from bench.hostile.framework import (
    CONTAINMENT,
    Attack,
    AttackSucceeded,
    Context,
    NodeAddress,
    Tally,
)
from roomcast.routing.bus import channel_of
from roomcast.routing.placement import lease_key
from roomcast.routing.records import PARTICIPANTS_PREFIX
from roomcast.routing.registry import NODES_KEY, NodeRecord

KIB = 1024
RELAYED = 40  # the review's H3: 40 large requests relayed to the room's node, then one too big
RELAYED_SIZE = 200 * KIB
TOO_BIG = 1024 * KIB
CLOSE_MESSAGE_TOO_BIG = 1009  # RFC 6455 §7.4.1
BIG_METADATA = 400 * KIB  # M7: four idle participants with this much metadata each
BIG_ATTRIBUTES = 30 * KIB
IDLE_HOLD = 10.0  # s the big-metadata participants stay, idle


@asynccontextmanager
async def redis_of(ctx: Context) -> AsyncIterator[aioredis.Redis]:
    store = aioredis.Redis(host="127.0.0.1", port=ctx.plan.redis_port)
    try:
        yield store
    finally:
        await store.aclose()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def binary(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


async def relay_edge(
    ctx: Context, store: aioredis.Redis, room: str
) -> tuple[NodeAddress, list[str]]:
    """The node that is *not* hosting ``room`` (its clients are relayed), and every node's
    bus stream."""
    host = await store.get(lease_key(room))
    raw_records = await store.hgetall(NODES_KEY)
    records = {text(key): NodeRecord.from_json(raw) for key, raw in raw_records.items()}
    record = records.get(text(host)) if host else None
    if record is None:
        raise RuntimeError(f"room {room} has no live host node")
    edge = next(n for n in ctx.plan.nodes if not record.http_url.endswith(f":{n.port}"))
    return edge, [channel_of(node_id) for node_id in records]


async def oversized_relayed_requests(ctx: Context, tally: Tally) -> None:
    """H3: 40 requests of 200 KiB relayed through the other node leave nothing in Redis; a
    1 MiB one is refused (the WebSocket closes with 1009)."""
    room = "hostile-relay"
    async with redis_of(ctx) as store, api.LiveKitAPI(ctx.node.http, API_KEY, API_SECRET) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        edge, streams = await relay_edge(ctx, store, room)
        url = f"{edge.ws}/rtc?access_token={join_token(room, ctx.identity('mallory-relay'))}"
        async with ctx.http.ws_connect(url) as ws:
            await receive_until(ws, "join")
            for _ in range(RELAYED):
                await send(ws, trickle(RELAYED_SIZE))
                tally.add("MB relayed", RELAYED_SIZE / 1e6)
            await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=7)))
            await receive_until(ws, "pong_resp")  # the room's node handled everything before
            await send(ws, trickle(TOO_BIG))
            async with asyncio.timeout(10):
                while (await ws.receive()).type not in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    pass
            if ws.close_code != CLOSE_MESSAGE_TOO_BIG:
                raise AttackSucceeded(f"a 1 MiB request was not refused (close {ws.close_code})")
        for _ in range(100):
            held = sum([await store.xlen(stream) for stream in streams])
            if held <= len(streams):
                return
            await asyncio.sleep(0.1)
        raise AttackSucceeded(f"the bus streams still hold {held} entries 10 s later")


async def idle_big_metadata(ctx: Context, tally: Tally) -> None:
    """M7: four participants set 400 KiB of metadata and stay idle; their Redis records must
    not carry it (the old heartbeat rewrote it all every second: 2 MB/s)."""
    room = "hostile-meta"
    async with redis_of(ctx) as store, aiohttp.ClientSession() as http:
        sockets = []
        try:
            for _ in range(4):
                access = join_token(room, ctx.identity("meta"), can_update_own_metadata=True)
                ws = await http.ws_connect(f"{ctx.node.ws}/rtc?access_token={access}")
                sockets.append(ws)
                await receive_until(ws, "join")
                update = rtc.UpdateParticipantMetadata(
                    metadata="m" * BIG_METADATA, attributes={"a": "v" * BIG_ATTRIBUTES}
                )
                await send(ws, rtc.SignalRequest(update_metadata=update))
                await receive_until(ws, "request_response")
            await asyncio.sleep(IDLE_HOLD)
            raw = await store.hgetall(PARTICIPANTS_PREFIX + room)
            infos = [models.ParticipantInfo.FromString(binary(value)) for value in raw.values()]
            tally.add("record bytes", sum(len(value) for value in raw.values()))
            if any(info.metadata or info.attributes for info in infos):
                raise AttackSucceeded("participant records in Redis carry the metadata")
        finally:
            for ws in sockets:
                await ws.close()


ATTACKS = [
    Attack("H3 oversized relayed requests", CONTAINMENT, 10.0, 60, oversized_relayed_requests),
    Attack("M7 idle participants, big metadata", CONTAINMENT, 20.0, 60, idle_big_metadata),
]
