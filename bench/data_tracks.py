"""Data tracks next to data packets: frames/s and latency through the server.

Runs `roomcast serve` as a subprocess and, in this process, one publisher and 1 or 10
subscribers with the official Python SDK (`livekit`). For each kind, frame size and fan-out,
the publisher sends frames at a fixed rate for a window and every subscriber records what
arrives:

  data track   `publish_data_track` + `try_push` (user timestamp = send time), each subscriber
               `RemoteDataTrack.subscribe()`; frames over 16 000 bytes travel as several packets
  _reliable    `publish_data(reliable=True)` (the send time in the payload)
  _lossy       `publish_data(reliable=False)`

It prints, per case: frames sent per second, frames received per second per subscriber, the
share lost, the one-way latency p50/p95 (sender and subscribers share this process's clock),
and the CPU (% of one core) of the server and of this process (the clients) over the window.
For data tracks, from the server's /metrics: the share of the publisher's packets that never
reached the server (the SDK keeps one frame waiting while its `_data_track` channel holds
more than 8 KiB, and drops older ones) and the share of copies the server dropped for
subscribers that were behind. The clients share the machine with the server: on a 2-core
machine the figures are what one box running both can do.

Run: python -m bench.data_tracks [--seconds 5] [--fanouts 1,10] [--sizes 1000,40000]
     [--rates 50,10] [--kinds track,reliable,lossy]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import uvloop
from livekit import rtc
from prometheus_client.parser import text_string_to_metric_families

from roomcast.auth import VideoGrant, create_token
from roomcast.loadtest.report import percentile

from .scaling import API_KEY, API_SECRET, ServerProcess, free_port, machine

KINDS = ("track", "reliable", "lossy")
LABELS = {"track": "data track", "reliable": "_reliable", "lossy": "_lossy"}
SETTLE = 1.0  # seconds of sending before the window: subscriptions and windows warm up
DRAIN = 1.0  # seconds after the window for frames still on their way
BUFFER = 1024  # frames a subscription holds for its reader (the SDK drops beyond)
PACKET_BYTES = 16_000  # the SDKs cut frames into packets of at most this, header included
HEADER_BYTES = 24  # a packet header with the user-timestamp extension
_room_numbers = itertools.count()

Arrived = Callable[[int, int], None]  # (subscriber index, send time in µs)
Send = Callable[[bytes, int], Awaitable[None]]  # (payload, send time in µs)


def _token(room: str, identity: str) -> str:
    grant = VideoGrant(room_join=True, room=room)
    return create_token(API_KEY, API_SECRET, identity=identity, video=grant, ttl_seconds=600)


def _now_us() -> int:
    return time.time_ns() // 1000


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


HEADER = (
    f"{'kind':11} {'subs':>4} {'bytes':>7} {'sent/s':>8} {'recv/s':>8} {'lost':>8}  "
    f"{'p50 ms':>7} {'p95 ms':>7} {'srv CPU':>7} {'cli CPU':>7} {'not in':>8} {'srv drop':>8}"
)


@dataclass
class Result:
    kind: str
    subscribers: int
    size: int
    rate: float
    seconds: float
    sent: int = 0  # frames sent within the window
    received: list[int] = field(default_factory=list)  # per subscriber, of those frames
    latencies: list[float] = field(default_factory=list)  # seconds, every subscriber
    server_cpu: float | None = None  # % of one core over the window
    client_cpu: float | None = None  # this process (every SDK client), % of one core
    lost_upstream: float | None = None  # data tracks: share of packets not reaching the server
    dropped_by_server: float | None = None  # data tracks: share of copies not forwarded
    error: str = ""

    @property
    def sent_per_second(self) -> float:
        return self.sent / self.seconds

    @property
    def received_per_second(self) -> float:
        """Frames per second one subscriber receives (the mean over subscribers)."""
        if not self.received:
            return 0.0
        return sum(self.received) / len(self.received) / self.seconds

    @property
    def loss(self) -> float:
        expected = self.sent * self.subscribers
        return 1 - sum(self.received) / expected if expected else 0.0

    def line(self) -> str:
        p50, p95 = percentile(self.latencies, 50), percentile(self.latencies, 95)
        latency = "-" if p50 is None or p95 is None else f"{p50 * 1000:7.1f} {p95 * 1000:7.1f}"
        cpu = "-" if self.server_cpu is None else f"{self.server_cpu:.0f} %"
        client = "-" if self.client_cpu is None else f"{self.client_cpu:.0f} %"
        text = (
            f"{LABELS[self.kind]:11} {self.subscribers:4} {self.size:7} "
            f"{self.sent_per_second:8.1f} {self.received_per_second:8.1f} "
            f"{self.loss * 100:6.1f} %  {latency:>15} {cpu:>7} {client:>7} "
            f"{_share(self.lost_upstream):>8} {_share(self.dropped_by_server):>8}"
        )
        return text + (f"  ({self.error})" if self.error else "")


class MetricsServer(ServerProcess):
    """`roomcast serve` as bench.scaling runs it (ICE-TCP off), with /metrics on a Prometheus
    port."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics_port = free_port()

    async def start(self) -> None:
        body = (
            f"port: {self.port}\nkeys:\n  {API_KEY}: {API_SECRET}\nbind_addresses: [127.0.0.1]\n"
            f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: 0\n"
            "room:\n  departure_timeout: 1\n"
            "limit:\n  joins_per_second_per_ip: 0\nlogging:\n  level: warn\n"
            f"prometheus:\n  port: {self.metrics_port}\n"
        )
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roomcast", "serve", "--config-body", body
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(self.http_url + "/") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        await self.stop()
        raise RuntimeError("server did not start")

    async def data_track_counters(self) -> dict[str, float]:
        """The roomcast_data_track_* packet counters: "in", "out" and each drop reason."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{self.metrics_port}/metrics") as resp,
        ):
            text = await resp.text()
        counters: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "roomcast_data_track_packets_total":
                    counters[sample.labels["direction"]] = sample.value
                elif sample.name == "roomcast_data_track_packets_dropped_total":
                    counters[sample.labels["reason"]] = sample.value
        return counters


class _Window:
    """The send times measured: from the first frame every subscriber receives, `seconds`."""

    def __init__(self) -> None:
        self.start_us = 0
        self.end_us = 0

    def contains(self, sent_us: int) -> bool:
        return self.start_us <= sent_us < self.end_us


async def run_case(
    url: str,
    kind: str,
    subscribers: int,
    size: int,
    rate: float,
    seconds: float,
    server: MetricsServer | None = None,
) -> Result:
    """One publisher sending `rate` frames/s of `size` bytes to `subscribers` for `seconds`."""
    room = f"bench-dt-{next(_room_numbers)}"
    result = Result(kind, subscribers, size, rate, seconds)
    before = await server.data_track_counters() if server is not None else {}
    window = _Window()
    counts = [0] * subscribers
    latencies: list[float] = []
    pushed = 0

    def arrived(index: int, sent_us: int) -> None:
        if window.contains(sent_us):
            counts[index] += 1
            latencies.append((_now_us() - sent_us) / 1e6)

    subs = [rtc.Room() for _ in range(subscribers)]
    publisher = rtc.Room()
    streams: list[asyncio.Task[None]] = []
    ready = [asyncio.Event() for _ in range(subscribers)]
    try:
        for index, sub in enumerate(subs):
            _listen(sub, index, kind, arrived, streams, ready[index])
            await sub.connect(url, _token(room, f"sub-{index}"))
        await publisher.connect(url, _token(room, "pub"))
        send = await _sender(publisher, kind)
        if kind != "track":
            for event in ready:
                event.set()
        began = time.monotonic()
        cpu_start = client_start = 0.0
        for tick in itertools.count():
            now = time.monotonic()
            everyone = all(event.is_set() for event in ready)
            if window.start_us == 0 and now - began >= SETTLE and everyone:
                window.start_us = _now_us()
                window.end_us = window.start_us + int(seconds * 1e6)
                cpu_start = server.cpu_seconds() if server is not None else 0.0
                client_start = time.process_time()
            if window.end_us and _now_us() >= window.end_us:
                if server is not None:
                    result.server_cpu = 100 * (server.cpu_seconds() - cpu_start) / seconds
                result.client_cpu = 100 * (time.process_time() - client_start) / seconds
                break
            if now - began > SETTLE + 30:
                raise TimeoutError("subscribers never received the first frame")
            sent_us = _now_us()
            await send(sent_us.to_bytes(8, "big") + bytes(max(0, size - 8)), sent_us)
            pushed += 1
            if window.contains(sent_us):
                result.sent += 1
            await asyncio.sleep(max(0.0, began + (tick + 1) / rate - time.monotonic()))
        await asyncio.sleep(DRAIN)
    except Exception as exc:  # a failed case is reported in its row, the others still run
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        for task in streams:
            task.cancel()
        for client in (publisher, *subs):
            with contextlib.suppress(Exception):
                await client.disconnect()
    result.received = counts
    result.latencies = latencies
    if server is not None and kind == "track" and not result.error:
        after = await server.data_track_counters()
        change = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
        packets = pushed * -(-(size + HEADER_BYTES) // PACKET_BYTES)
        result.lost_upstream = max(0.0, 1 - change.get("in", 0.0) / packets) if packets else None
        behind = change.get("subscriber_behind", 0.0)
        copies = change.get("out", 0.0) + behind
        result.dropped_by_server = behind / copies if copies else 0.0
    return result


def _listen(
    sub: rtc.Room,
    index: int,
    kind: str,
    record: Arrived,
    streams: list[asyncio.Task[None]],
    ready: asyncio.Event,
) -> None:
    if kind == "track":

        async def read(track: rtc.RemoteDataTrack) -> None:
            async for frame in track.subscribe(buffer_size=BUFFER):
                ready.set()
                record(index, frame.user_timestamp or 0)

        def published(track: rtc.RemoteDataTrack) -> None:
            streams.append(asyncio.get_running_loop().create_task(read(track)))

        sub.on("data_track_published", published)
    else:
        sub.on("data_received", lambda p: record(index, int.from_bytes(p.data[:8], "big")))


async def _sender(publisher: rtc.Room, kind: str) -> Send:
    if kind == "track":
        track = await publisher.local_participant.publish_data_track(name="bench")

        async def push(payload: bytes, sent_us: int) -> None:
            with contextlib.suppress(rtc.PushFrameError):
                track.try_push(rtc.DataTrackFrame(payload=payload, user_timestamp=sent_us))

        return push

    reliable = kind == "reliable"

    async def publish(payload: bytes, sent_us: int) -> None:
        await publisher.local_participant.publish_data(payload, reliable=reliable, topic="bench")

    return publish


async def run(
    kinds: list[str], fanouts: list[int], cases: list[tuple[int, float]], seconds: float
) -> list[Result]:
    server = MetricsServer()
    await server.start()
    results: list[Result] = []
    try:
        for (size, rate), fanout, kind in itertools.product(cases, fanouts, kinds):
            result = await run_case(server.ws_url, kind, fanout, size, rate, seconds, server)
            print(result.line(), flush=True)
            results.append(result)
    finally:
        await server.stop()
    return results


def _numbers(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per case")
    parser.add_argument("--fanouts", default="1,10", help="subscriber counts")
    parser.add_argument("--sizes", default="1000,40000", help="frame sizes in bytes")
    parser.add_argument("--rates", default="50,10", help="frames/s, one per size")
    parser.add_argument("--kinds", default=",".join(KINDS), help="track, reliable, lossy")
    args = parser.parse_args()
    sizes = [int(s) for s in _numbers(args.sizes)]
    rates = _numbers(args.rates)
    if len(rates) != len(sizes):
        parser.error("give one rate per size")
    kinds = [k for k in args.kinds.split(",") if k]
    if any(k not in KINDS for k in kinds):
        parser.error(f"kinds are {', '.join(KINDS)}")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"data tracks vs data packets, {args.seconds:.0f} s per case; {machine()}")
    print(f"load average before the run: {load} (other work on the machine skews the figures)")
    print(HEADER)
    uvloop.run(
        run(
            kinds,
            [int(f) for f in _numbers(args.fanouts)],
            list(zip(sizes, rates, strict=True)),
            args.seconds,
        )
    )


if __name__ == "__main__":
    main()
