"""Signalling and API throughput: RoomService requests/s and WebSocket joins/s.

Runs `roomcast serve` as a subprocess (per-IP join limit off) and measures, with `--concurrency`
clients in this process:
  ListRooms        raw Twirp (POST /twirp/livekit.RoomService/ListRooms, protobuf)
  CreateRoom+Delete  a room created and deleted per iteration (two requests)
  WS joins v0/v1   /rtc (or /rtc/v1 with a join request) WebSocket → JoinResponse →
                   LeaveRequest (signalling only)
  full joins v0/v1 the same plus the PeerConnection(s) connected (ICE + DTLS): the subscriber
                   PC on /rtc, the one PC (its offer in the join request) on /rtc/v1
  SDK joins v0/v1  the official Python SDK's `Room.connect()`, one at a time (`--sdk-joins`):
                   /rtc/v1 as it joins by default, /rtc forced (`single_peer_connection`)
Each prints requests (joins) per second and latency p50/p95, and the machine it ran on.

Run: python -m bench.signalling [--seconds 5] [--concurrency 16] [--joins 200] [--sdk-joins 30]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass

import aiohttp
import uvloop
from livekit.protocol import models
from livekit.protocol import room as room_proto

from roomcast.auth import VideoGrant, create_token
from roomcast.client.signal import SignalClient, join_request
from roomcast.loadtest.participant import LoadParticipant, Role
from roomcast.loadtest.report import percentile

from .scaling import API_KEY, API_SECRET, ServerProcess, machine


@dataclass(slots=True)
class Throughput:
    name: str
    operations: int
    errors: int
    seconds: float
    p50: float | None
    p95: float | None
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        p50 = "-" if self.p50 is None else f"{self.p50 * 1000:.1f} ms"
        p95 = "-" if self.p95 is None else f"{self.p95 * 1000:.1f} ms"
        return (
            f"{self.name:20} {self.per_second:9.0f}/s  p50 {p50:>9}  p95 {p95:>9}  "
            f"({self.operations} ok, {self.errors} errors, {self.seconds:.1f} s)"
            + (f"\n  first error: {self.first_error}" if self.first_error else "")
        )


def admin_token() -> str:
    grant = VideoGrant(room_create=True, room_list=True, room_admin=True)
    return create_token(API_KEY, API_SECRET, video=grant, ttl_seconds=3600)


async def twirp(
    http: aiohttp.ClientSession, base: str, method: str, body: bytes, token: str
) -> bytes:
    async with http.post(
        f"{base}/twirp/livekit.RoomService/{method}",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/protobuf"},
    ) as resp:
        data = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{method}: HTTP {resp.status} {data[:200]!r}")
        return data


async def _hammer(
    name: str,
    operation: object,
    *,
    seconds: float,
    concurrency: int,
    per_call: int = 1,
) -> Throughput:
    """Run `operation(i)` from `concurrency` workers for `seconds`; count successes."""
    latencies: list[float] = []
    errors = 0
    first_error = ""
    counter = itertools.count()
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors, first_error
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                await operation(next(counter))  # type: ignore[operator]
            except Exception as exc:
                errors += 1
                first_error = first_error or repr(exc)
                await asyncio.sleep(0.01)  # a failing server must not turn this into a spin
                continue
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return Throughput(
        name,
        len(latencies) * per_call,
        errors,
        elapsed,
        percentile(latencies, 50),
        percentile(latencies, 95),
        first_error,
    )


async def room_service(
    base: str, *, seconds: float, concurrency: int
) -> tuple[Throughput, Throughput]:
    token = admin_token()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        list_body = room_proto.ListRoomsRequest().SerializeToString()

        async def list_rooms(_: int) -> None:
            response = room_proto.ListRoomsResponse()
            response.ParseFromString(await twirp(http, base, "ListRooms", list_body, token))

        async def create_delete(i: int) -> None:
            name = f"bench-{i}"
            create = room_proto.CreateRoomRequest(name=name, empty_timeout=30)
            created = models.Room()
            created.ParseFromString(
                await twirp(http, base, "CreateRoom", create.SerializeToString(), token)
            )
            if created.name != name:
                raise RuntimeError(f"CreateRoom returned {created.name!r}")
            delete = room_proto.DeleteRoomRequest(room=name)
            await twirp(http, base, "DeleteRoom", delete.SerializeToString(), token)

        listed = await _hammer("ListRooms", list_rooms, seconds=seconds, concurrency=concurrency)
        created = await _hammer(
            "CreateRoom+DeleteRoom",
            create_delete,
            seconds=seconds,
            concurrency=concurrency,
            per_call=2,
        )
    return listed, created


async def ws_joins(
    url: str, joins: int, concurrency: int, *, full: bool, protocol: str
) -> Throughput:
    """`joins` participants joining one of 20 rooms each, `concurrency` at a time, on /rtc
    ("v0") or /rtc/v1 ("v1")."""
    latencies: list[float] = []
    errors = 0
    first_error = ""
    queue = iter(range(joins))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal errors, first_error
            for i in queue:
                identity = f"{'full' if full else 'ws'}-{protocol}-{i}"
                room = f"joins-{i % 20}"
                token = create_token(
                    API_KEY,
                    API_SECRET,
                    identity=identity,
                    video=VideoGrant(room_join=True, room=room),
                )
                started = time.monotonic()
                try:
                    if full:
                        participant = LoadParticipant(
                            Role(identity, room, subscribe=True), url, token, http, protocol
                        )
                        await participant.join(started)
                        if participant.error is not None:
                            raise RuntimeError(participant.error)
                        latencies.append(time.monotonic() - started)
                        await participant.leave()
                    else:
                        client = SignalClient(http)
                        if protocol == "v1":
                            request = join_request(auto_subscribe=True, adaptive_stream=False)
                            await client.connect(url, token, join_request=request)
                        else:
                            await client.connect(url, token)
                        latencies.append(time.monotonic() - started)
                        await client.leave()
                except Exception as exc:
                    errors += 1
                    first_error = first_error or repr(exc)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    name = f"{'full joins (ICE+DTLS)' if full else 'WS joins'} {protocol}"
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return Throughput(name, len(latencies), errors, elapsed, p50, p95, first_error)


async def sdk_joins(url: str, joins: int, protocol: str) -> Throughput:
    """The official Python SDK's `Room.connect()` (returns once the JoinResponse is in and the
    primary PeerConnection connected), `joins` times in a row, then `disconnect()`."""
    from livekit import rtc  # a test dependency, not the server's

    options = rtc.RoomOptions(single_peer_connection=False if protocol == "v0" else None)
    latencies: list[float] = []
    errors = 0
    first_error = ""
    started_all = time.monotonic()
    for i in range(joins):
        token = create_token(
            API_KEY,
            API_SECRET,
            identity=f"sdk-{protocol}-{i}",
            video=VideoGrant(room_join=True, room=f"sdk-{i % 5}"),
        )
        room = rtc.Room()
        started = time.monotonic()
        try:
            await room.connect(url, token, options)
            latencies.append(time.monotonic() - started)
        except Exception as exc:
            errors += 1
            first_error = first_error or repr(exc)
        finally:
            await room.disconnect()
    elapsed = time.monotonic() - started_all
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    return Throughput(
        f"SDK joins {protocol}", len(latencies), errors, elapsed, p50, p95, first_error
    )


async def run(*, seconds: float, concurrency: int, joins: int, sdk: int) -> list[Throughput]:
    server = ServerProcess()
    await server.start()
    try:
        listed, created = await room_service(
            server.http_url, seconds=seconds, concurrency=concurrency
        )
        results = [listed, created]
        for full in (False, True):
            for protocol in ("v0", "v1"):
                result = await ws_joins(
                    server.ws_url, joins, concurrency, full=full, protocol=protocol
                )
                results.append(result)
                await asyncio.sleep(2)  # departures settle
        if sdk:
            for protocol in ("v0", "v1"):
                results.append(await sdk_joins(server.ws_url, sdk, protocol))
    finally:
        await server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per RoomService method")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--joins", type=int, default=200, help="joins per WebSocket scenario")
    parser.add_argument("--sdk-joins", type=int, default=30, help="per path; 0: none")
    args = parser.parse_args()
    print(f"signalling on {machine()}; concurrency {args.concurrency}")
    results = uvloop.run(
        run(
            seconds=args.seconds,
            concurrency=args.concurrency,
            joins=args.joins,
            sdk=args.sdk_joins,
        )
    )
    for result in results:
        print(result.line())


if __name__ == "__main__":
    main()
