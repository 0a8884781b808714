"""Join/publish/leave churn against an in-process server: memory, tasks and sockets must stay flat.

    python -m bench.churn --cycles 30        # ~1 minute
    python -m bench.churn --minutes 30       # the soak: as many cycles as fit in 30 minutes

Each cycle two official-SDK participants join one room, one publishes audio and video for
`--media-seconds`, both leave. Printed: RSS, asyncio tasks, live transports, forwarder tracks
and rooms at start, after warm-up and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import time
from contextlib import suppress

from livekit import rtc
from tests.conftest import free_port
from tests.integration.sdk import join_token
from tests.integration.test_media_python import publishing

from roomcast.config import Overrides, load_config
from roomcast.server import Server


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def snapshot(server: Server) -> dict[str, float]:
    gc.collect()
    return {
        "rss_mib": round(rss_mib(), 1),
        "tasks": len(asyncio.all_tasks()),
        "transports": server.mux.transport_count,
        "uptracks": len(server.forwarder.uptracks()),
        "downtracks": len(server.forwarder.downtracks()),
        "rooms": len(server.rooms.list()),
    }


async def cycle(url: str, index: int, media_seconds: float) -> None:
    room_name = f"churn-{index % 3}"
    watcher, talker = rtc.Room(), rtc.Room()
    await watcher.connect(url, join_token(room_name, f"w{index}"))
    await talker.connect(url, join_token(room_name, f"t{index}"))
    async with publishing(talker):
        await asyncio.sleep(media_seconds)
    for room in (talker, watcher):
        with suppress(Exception):
            await room.disconnect()


async def main(cycles: int, minutes: float, media_seconds: float) -> None:
    body = (
        f"port: 0\nkeys:\n  devkey: secret\nbind_addresses: [127.0.0.1]\n"
        f"rtc:\n  udp_port: {free_port()}\nroom:\n  departure_timeout: 1\n"
        "limit:\n  joins_per_second_per_ip: 0\n"
    )
    server = Server(load_config(Overrides(config_body=body), environ={}))
    await server.start()
    url = f"ws://127.0.0.1:{server.port}"
    start = snapshot(server)
    started = time.monotonic()
    warm: dict[str, float] = {}
    deadline = started + minutes * 60 if minutes else None
    report_every = 300.0  # a progress snapshot every 5 minutes of a soak
    next_report = started + report_every
    i = 0
    while (i < cycles) if deadline is None else (time.monotonic() < deadline):
        await cycle(url, i, media_seconds)
        if i == 4:
            warm = snapshot(server)
        if time.monotonic() >= next_report:
            next_report += report_every
            print(f"after {i + 1} cycles, {time.monotonic() - started:.0f} s: {snapshot(server)}")
        i += 1
    cycles = i
    await asyncio.sleep(2.5)  # let departure timeouts close the rooms
    end = snapshot(server)
    elapsed = time.monotonic() - started
    await server.stop()
    print(
        f"churn: {cycles} cycles in {elapsed:.0f} s on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()})"
    )
    print(f"{'':12}{'start':>10}{'warm (5)':>10}{'end':>10}")
    for key in start:
        print(f"{key:12}{start[key]:>10}{warm.get(key, 0):>10}{end[key]:>10}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=0, help="run for this long instead")
    parser.add_argument("--media-seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.cycles, args.minutes, args.media_seconds))
