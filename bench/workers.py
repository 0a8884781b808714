"""Joins and forwarding with `roomcast serve --workers 1` vs `--workers 2` on this machine.

For each worker count a `roomcast serve --workers N` process tree is started (N > 1 adds a
private redis-server), and `roomcast load-test` participants (in this process) join R rooms of
one publisher (VP8 640x360 450 kbps without simulcast + opus) and S subscribers. Measured over
a window once every subscriber receives media: server CPU (utime + stime of every process of
the tree, workers and Redis, as % of one core), packets/s received by all subscribers, loss, and
join latency p50/p95 (token → JoinResponse) and token → first media p50/p95.

The load generator runs on the same cores as the server, so on a 2-core machine the second
worker competes with it: the figures say what one box running both does.

Run: python -m bench.workers [--rooms 4] [--per-room 25] [--window 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import uvloop

from bench.scaling import _received, _until_media, free_port, machine
from roomcast.loadtest.report import percentile, summarize
from roomcast.loadtest.runner import LoadTest, LoadTestConfig

API_KEY, API_SECRET = "devkey", "secret"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with suppress(OSError):
            for child in task.read_text().split():
                pids.extend(_tree(int(child)))
    return pids


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its descendants alive now (proc(5) fields 14, 15)."""
    total = 0
    for each in _tree(pid):
        with suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


@dataclass(slots=True)
class WorkersResult:
    workers: int
    participants: int
    failed: int
    server_cpu: float
    packets_per_s: float
    loss: float
    join_p50: float | None
    join_p95: float | None
    media_p50: float | None
    media_p95: float | None


async def start_tree(workers: int, port: int) -> asyncio.subprocess.Process:
    body = (
        f"port: {port}\nkeys:\n  {API_KEY}: {API_SECRET}\nbind_addresses: [127.0.0.1]\n"
        f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: 0\n"
        "room:\n  departure_timeout: 1\n"
        "limit:\n  joins_per_second_per_ip: 0\nlogging:\n  level: warn\n"
        "node_selector:\n  sort_by: rooms\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "serve", "--config-body", body,
        "--workers", str(workers),
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            with suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/") as resp:
                    if resp.status == 200:
                        await asyncio.sleep(1.5 if workers > 1 else 0)  # every worker up
                        return proc
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def measure(workers: int, rooms: int, per_room: int, window: float) -> WorkersResult:
    port = free_port()
    proc = await start_tree(workers, port)
    config = LoadTestConfig(
        url=f"ws://127.0.0.1:{port}",
        api_key=API_KEY,
        api_secret=API_SECRET,
        room=f"w{workers}",
        rooms=rooms,
        video_publishers=rooms,
        audio_publishers=rooms,
        subscribers=rooms * (per_room - 1),
        resolution="low",
        simulcast=False,
        num_per_second=20,
    )
    test = LoadTest(config)
    stop = asyncio.Event()
    task = asyncio.ensure_future(test.run(stop=stop, progress_interval=1.0))
    try:
        await _until_media(test, rooms * per_room)
        received_before = _received(test)
        cpu_before, started = tree_cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(window)
        cpu_after, ended = tree_cpu_seconds(proc.pid), time.monotonic()
        received = _received(test) - received_before
    finally:
        stop.set()
        await task
        proc.terminate()
        await proc.wait()
    summary = summarize(test)
    subs = [p for p in test.participants if p.error is None]
    joins = [p.joined_at - p.started_at for p in subs if p.joined_at is not None]
    media = [p.first_media_at - p.started_at for p in subs if p.first_media_at is not None]
    return WorkersResult(
        workers=workers,
        participants=rooms * per_room,
        failed=len(summary.failed),
        server_cpu=100 * (cpu_after - cpu_before) / (ended - started),
        packets_per_s=received / (ended - started),
        loss=summary.loss,
        join_p50=percentile(joins, 50),
        join_p95=percentile(joins, 95),
        media_p50=percentile(media, 50),
        media_p95=percentile(media, 95),
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


async def run(counts: list[int], rooms: int, per_room: int, window: float) -> list[WorkersResult]:
    results = []
    for workers in counts:
        result = await measure(workers, rooms, per_room, window)
        results.append(result)
        print(
            f"{result.workers:>7} {result.participants:>6} {result.failed:>6} "
            f"{result.server_cpu:>8.1f} {result.packets_per_s:>10.0f} {result.loss:>7.2f} "
            f"{_ms(result.join_p50):>8} {_ms(result.join_p95):>8} "
            f"{_ms(result.media_p50):>8} {_ms(result.media_p95):>8}",
            flush=True,
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--per-room", type=int, default=25, help="1 publisher + subscribers")
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured")
    args = parser.parse_args()
    print(f"workers on {machine()}: {args.rooms} rooms x {args.per_room} participants")
    print(
        f"{'workers':>7} {'parts':>6} {'failed':>6} {'cpu %':>8} {'recv pkt/s':>10} "
        f"{'loss %':>7} {'join50':>8} {'join95':>8} {'media50':>8} {'media95':>8}  (ms)"
    )
    counts = [int(c) for c in args.workers.split(",") if c]
    uvloop.run(run(counts, args.rooms, args.per_room, args.window))


if __name__ == "__main__":
    main()
