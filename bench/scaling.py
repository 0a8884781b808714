"""Server cost as participants grow, and join latency under a join storm.

Runs `roomcast serve` as a subprocess and drives it with `roomcast load-test`'s participants
(in this process, one event loop). For each step it joins the participants, waits until every
subscriber receives media, then measures over a window: server CPU (utime + stime from
/proc/<pid>/stat, as % of one core), server RSS (/proc/<pid>/status), and the packets/s the
subscribers receive. Then everyone leaves and the next step starts.

  one room     1 audio+video publisher and N-1 subscribers in one room (fan-out N-1)
  rooms        N participants in rooms of 10 (1 publisher + 9 subscribers each)
  join storm   N subscribers joining a room with one publisher at a high rate: token → JoinResponse
               and token → first media packet, p50/p95

The load generator shares the machine (and its cores) with the server: on a 2-core machine
the figures are what one box running both can do, not the server alone.

Run: python -m bench.scaling [--steps 1,10,50,100,200] [--window 5] [--storm 100]
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
from dataclasses import dataclass

import aiohttp
import uvloop

from roomcast.loadtest.report import percentile, summarize
from roomcast.loadtest.runner import LoadTest, LoadTestConfig

API_KEY, API_SECRET = "devkey", "secret"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
JOIN_TIMEOUT = 120.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    return (
        f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


class ServerProcess:
    """`roomcast serve` on free loopback ports, with the per-IP join limit off."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        body = (
            f"port: {self.port}\nkeys:\n  {API_KEY}: {API_SECRET}\nbind_addresses: [127.0.0.1]\n"
            f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: 0\n"
            "room:\n  departure_timeout: 1\n"
            "limit:\n  joins_per_second_per_ip: 0\nlogging:\n  level: warn\n"
        )
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roomcast", "serve", "--config-body", body
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with suppress(aiohttp.ClientError):
                    async with http.get(self.http_url + "/") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError("server did not start")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()

    def cpu_seconds(self) -> float:
        """utime + stime of the server (fields 14 and 15 of /proc/<pid>/stat, proc(5))."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_mib(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0


@dataclass(slots=True)
class StepResult:
    scenario: str
    participants: int
    rooms: int
    joined: int
    failed: int
    server_cpu: float  # % of one core
    server_rss: float  # MiB
    packets_per_s: float  # received by all subscribers
    loss: float  # %


async def run_step(
    server: ServerProcess,
    scenario: str,
    participants: int,
    *,
    window: float,
    resolution: str,
    rate: float,
) -> StepResult:
    if scenario == "one room":
        rooms, publishers = 1, 1
    else:
        rooms = max(1, participants // 10)
        publishers = rooms
    config = LoadTestConfig(
        url=server.ws_url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        room=f"scale-{scenario.replace(' ', '')}-{participants}",
        rooms=rooms,
        video_publishers=publishers,
        audio_publishers=publishers,
        subscribers=participants - publishers,
        resolution=resolution,
        simulcast=False,
        num_per_second=rate,
    )
    test = LoadTest(config)
    stop = asyncio.Event()
    task = asyncio.ensure_future(test.run(stop=stop, progress_interval=0.5))
    try:
        await _until_media(test, participants)
        received_before = _received(test)
        cpu_before, started = server.cpu_seconds(), time.monotonic()
        await asyncio.sleep(window)
        cpu_after, ended = server.cpu_seconds(), time.monotonic()
        received = _received(test) - received_before
        rss = server.rss_mib()
    finally:
        stop.set()
        await task
    summary = summarize(test)
    return StepResult(
        scenario=scenario,
        participants=participants,
        rooms=rooms,
        joined=summary.joined,
        failed=len(summary.failed),
        server_cpu=100 * (cpu_after - cpu_before) / (ended - started),
        server_rss=rss,
        packets_per_s=received / (ended - started),
        loss=summary.loss,
    )


async def _until_media(test: LoadTest, total: int) -> None:
    """Everyone joined (or failed) and every joined subscriber gets media."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while time.monotonic() < deadline:
        done = len(test.participants) == total and all(
            p.error is not None
            or (p.joined_at is not None and (not p.role.subscribe or p.first_media_at is not None))
            for p in test.participants
        )
        if done:
            await asyncio.sleep(1.0)  # let the last subscriptions settle
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"participants did not all join within {JOIN_TIMEOUT:.0f} s")


def _received(test: LoadTest) -> int:
    return sum(t.packets for p in test.participants for t in p.received.values())


@dataclass(slots=True)
class StormResult:
    subscribers: int
    rate: float
    failed: int
    join_p50: float | None
    join_p95: float | None
    media_p50: float | None
    media_p95: float | None


async def join_storm(server: ServerProcess, subscribers: int, rate: float) -> StormResult:
    config = LoadTestConfig(
        url=server.ws_url,
        api_key=API_KEY,
        api_secret=API_SECRET,
        room="storm",
        video_publishers=1,
        audio_publishers=1,
        subscribers=subscribers,
        resolution="low",
        simulcast=True,
        num_per_second=rate,
    )
    test = LoadTest(config)
    stop = asyncio.Event()
    task = asyncio.ensure_future(test.run(stop=stop, progress_interval=0.5))
    try:
        await _until_media(test, subscribers + 1)
    finally:
        stop.set()
        await task
    subs = [p for p in test.participants if p.role.subscribe and p.error is None]
    joins = [p.joined_at - p.started_at for p in subs if p.joined_at is not None]
    media = [p.first_media_at - p.started_at for p in subs if p.first_media_at is not None]
    return StormResult(
        subscribers=subscribers,
        rate=rate,
        failed=len(test.failed),
        join_p50=percentile(joins, 50),
        join_p95=percentile(joins, 95),
        media_p50=percentile(media, 50),
        media_p95=percentile(media, 95),
    )


async def run(
    steps: list[int],
    *,
    window: float,
    storm: int,
    storm_rate: float,
    resolution: str = "low",
    rate: float = 20.0,
    scenarios: tuple[str, ...] = ("one room", "rooms"),
) -> tuple[list[StepResult], StormResult | None]:
    server = ServerProcess()
    await server.start()
    results: list[StepResult] = []
    try:
        for scenario in scenarios:
            for n in steps:
                result = await run_step(
                    server, scenario, n, window=window, resolution=resolution, rate=rate
                )
                results.append(result)
                print(_row(result), flush=True)
                await asyncio.sleep(1.5)  # departures settle before the next step
        storm_result = await join_storm(server, storm, storm_rate) if storm else None
    finally:
        await server.stop()
    return results, storm_result


def _row(r: StepResult) -> str:
    return (
        f"{r.scenario:9} {r.participants:6d} {r.rooms:6d} {r.joined:7d} {r.failed:7d} "
        f"{r.server_cpu:8.1f} {r.server_rss:8.1f} {r.packets_per_s:10.0f} {r.loss:7.2f}"
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="1,10,50,100,200", help="participant counts")
    parser.add_argument("--window", type=float, default=5.0, help="seconds measured per step")
    parser.add_argument("--storm", type=int, default=100, help="subscribers in the join storm")
    parser.add_argument("--storm-rate", type=float, default=50.0, help="joins/s in the storm")
    parser.add_argument("--resolution", default="low", help="video resolution of publishers")
    parser.add_argument("--rate", type=float, default=20.0, help="joins/s while growing")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",") if s]
    print(f"scaling on {machine()}; video {args.resolution} without simulcast + opus per publisher")
    print(
        f"{'scenario':9} {'parts':>6} {'rooms':>6} {'joined':>7} {'failed':>7} "
        f"{'cpu %':>8} {'rss MiB':>8} {'recv pkt/s':>10} {'loss %':>7}"
    )
    _, storm = uvloop.run(
        run(
            steps,
            window=args.window,
            storm=args.storm,
            storm_rate=args.storm_rate,
            resolution=args.resolution,
            rate=args.rate,
        )
    )
    if storm is not None:
        print(
            f"join storm: {storm.subscribers} subscribers at {storm.rate:g}/s, "
            f"{storm.failed} failed; token → JoinResponse p50 {_ms(storm.join_p50)}, "
            f"p95 {_ms(storm.join_p95)}; token → first media p50 {_ms(storm.media_p50)}, "
            f"p95 {_ms(storm.media_p95)}"
        )


if __name__ == "__main__":
    main()
