"""Join and API latency on one node, on a Redis cluster node, and relayed through another node.

    python -m bench.multinode --joins 20

Starts a real redis-server and `roomcast serve` processes on loopback (as the multi-node
tests do). For each setup, official Python SDK participants join one after another (token →
`connect()` returned, i.e. JoinResponse handled and both PeerConnections up) and
`ListParticipants` is called through livekit-api; medians and p95 are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from contextlib import suppress

from livekit import api, rtc
from tests.conftest import API_KEY, API_SECRET
from tests.integration.cluster import Node, RedisServer
from tests.integration.sdk import join_token


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


async def measure(
    room_node: Node, via: Node, room: str, joins: int
) -> tuple[list[float], list[float]]:
    async with api.LiveKitAPI(room_node.http_url, API_KEY, API_SECRET) as admin:
        await admin.room.create_room(api.CreateRoomRequest(name=room))
    join_ms: list[float] = []
    api_ms: list[float] = []
    async with api.LiveKitAPI(via.http_url, API_KEY, API_SECRET) as client:
        for i in range(joins):
            participant = rtc.Room()
            started = time.perf_counter()
            await participant.connect(via.ws_url, join_token(room, f"p{i}"))
            join_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await client.room.list_participants(api.ListParticipantsRequest(room=room))
            api_ms.append((time.perf_counter() - started) * 1000)
            with suppress(Exception):
                await participant.disconnect()
    return join_ms, api_ms


Row = tuple[str, list[float], list[float]]


async def main(joins: int) -> list[Row]:
    redis = RedisServer()
    await redis.start()
    single = Node("single", redis, use_redis=False)
    nodes = [Node("a", redis), Node("b", redis)]
    rows: list[Row] = []
    try:
        await asyncio.gather(*(node.start() for node in nodes))
        await single.start()
        rows.append(("single node, no Redis", *await measure(single, single, "solo", joins)))
        rows.append(
            ("cluster, direct to room node", *await measure(nodes[0], nodes[0], "d", joins))
        )
        rows.append(
            ("cluster, relayed by other node", *await measure(nodes[0], nodes[1], "r", joins))
        )
    finally:
        await asyncio.gather(*(node.stop() for node in [*nodes, single]))
        await redis.stop()
    print(
        f"multinode: {joins} sequential joins per setup on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}), loopback"
    )
    print(f"{'setup':34}{'join p50':>10}{'join p95':>10}{'API p50':>10}{'API p95':>10}  (ms)")
    for name, join_ms, api_ms in rows:
        print(
            f"{name:34}{statistics.median(join_ms):>10.1f}{p95(join_ms):>10.1f}"
            f"{statistics.median(api_ms):>10.1f}{p95(api_ms):>10.1f}"
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--joins", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.joins))
