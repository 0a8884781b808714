"""Join/publish/leave churn against a `roomcast serve` process: its memory, tasks and sockets
must stay flat.

    python -m bench.churn --cycles 30        # ~1 minute
    python -m bench.churn --minutes 30       # the soak: as many cycles as fit in 30 minutes

Each cycle two official-SDK participants join one room, one publishes audio and video for
`--media-seconds`, both leave. The server runs in its own process, so its figures (read from
its /metrics: RSS, open file descriptors, asyncio tasks, live transports, plane tracks,
rooms) are the server's alone, not the SDK clients'. Printed at start, after warm-up, every
5 minutes and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import sys
import time
from contextlib import suppress

import aiohttp
from livekit import rtc
from tests.conftest import free_port
from tests.integration.sdk import join_token
from tests.integration.test_media_python import publishing

FIGURES = {
    "rss_mib": "process_resident_memory_bytes",
    "open_fds": "process_open_fds",
    "tasks": "roomcast_asyncio_tasks",
    "transports": "roomcast_transports",
    "uptracks": "roomcast_uptracks",
    "downtracks": "roomcast_tracks_subscribed",
    "rooms": "roomcast_rooms",
    "participants": "roomcast_participants",
}


async def snapshot(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in FIGURES.values():
            values[name] = float(value)
    out = {key: values.get(metric, -1.0) for key, metric in FIGURES.items()}
    out["rss_mib"] = round(out["rss_mib"] / 2**20, 1)
    return out


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


async def start_server(port: int, metrics_port: int) -> asyncio.subprocess.Process:
    body = (
        f"port: {port}\nkeys:\n  devkey: secret\nbind_addresses: [127.0.0.1]\n"
        f"prometheus:\n  port: {metrics_port}\n"
        f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: 0\n"
        "room:\n  departure_timeout: 1\n"
        "limit:\n  joins_per_second_per_ip: 0\nlogging:\n  level: warn\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "serve", "--config-body", body
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            with suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/") as resp:
                    if resp.status == 200:
                        return proc
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def main(cycles: int, minutes: float, media_seconds: float) -> None:
    port, metrics_port = free_port(), free_port()
    proc = await start_server(port, metrics_port)
    # /metrics is served on the Prometheus port only (as livekit-server does).
    http_url, ws_url = f"http://127.0.0.1:{metrics_port}", f"ws://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            start = await snapshot(http, http_url)
            started = time.monotonic()
            warm: dict[str, float] = {}
            deadline = started + minutes * 60 if minutes else None
            report_every = 300.0
            next_report = started + report_every
            done = 0
            while (done < cycles) if deadline is None else (time.monotonic() < deadline):
                await cycle(ws_url, done, media_seconds)
                done += 1
                if done == 5:
                    warm = await snapshot(http, http_url)
                if time.monotonic() >= next_report:
                    next_report += report_every
                    elapsed = time.monotonic() - started
                    figures = await snapshot(http, http_url)
                    print(f"after {done} cycles, {elapsed:.0f} s: {figures}", flush=True)
            await asyncio.sleep(2.5)  # let departure timeouts close the rooms
            end = await snapshot(http, http_url)
            elapsed = time.monotonic() - started
    finally:
        proc.terminate()
        await proc.wait()
    print(
        f"churn: {done} cycles ({2 * done} joins, {done} audio+video publishes) in {elapsed:.0f} s"
        f" on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()});"
        f" server exit code {proc.returncode}"
    )
    print(f"{'server':14}{'start':>10}{'warm (5)':>10}{'end':>10}")
    for key in start:
        print(f"{key:14}{start[key]:>10}{warm.get(key, 0):>10}{end[key]:>10}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--minutes", type=float, default=0, help="run for this long instead")
    parser.add_argument("--media-seconds", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.cycles, args.minutes, args.media_seconds))
