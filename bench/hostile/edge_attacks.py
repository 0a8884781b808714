"""Attacks on the HTTP edge (security review H2, M1, M5, L1, L2, L3, L7): the attack code of
tests/integration/test_edge_hardening.py, paced and repeated."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os

import aiohttp
from livekit.protocol import rtc
from tests.conftest import token
from tests.integration.hostile_client import (
    client_frame,
    closed_by_peer,
    many_names,
    tcp_connect,
    websocket_upgrade,
)
from tests.integration.sdk import join_token
from tests.integration.test_signalling import receive, receive_until

from bench.hostile.framework import (
    CONTAINMENT,
    CORRECTNESS,
    Attack,
    AttackSucceeded,
    Context,
    Tally,
)
from roomcast.auth import VideoGrant

HUGE_BODY = 9_600_000  # the review's unauthenticated ListRooms body: 2.9 s of parsing, once
LARGE_BODY = 2_000_000  # just under the default limit.max_api_request_body_size (2 MiB)
JSON_FRAME_SIDS = 500_000  # one-letter sids: ~2 MB of JSON, 1.9 MiB in the review
GARBAGE_JOINS = 45  # the review's count: 40 refused, then the address was locked out
SLOW_CONNECTIONS = 40  # held open, half silent, half trickling a header byte a second
UNREAD_UPDATES = 80  # metadata updates sent by a client that never reads the answers
UNREAD_METADATA = 300_000
LIST_ROOMS = "/twirp/livekit.RoomService/ListRooms"
CLOSE_INVALID_PAYLOAD = 1007  # RFC 6455 §7.4.1

_payloads: dict[str, bytes | str] = {}


def _body(size: int) -> bytes:
    body = _payloads.get(f"body{size}")
    if not isinstance(body, bytes):
        body = _payloads[f"body{size}"] = many_names(size)
    return body


def _json_frame() -> str:
    frame = _payloads.get("json")
    if not isinstance(frame, str):
        sids = {"syncState": {"subscription": {"trackSids": ["a"] * JSON_FRAME_SIDS}}}
        frame = _payloads["json"] = json.dumps(sids, separators=(",", ":"))
    return frame


async def huge_unauthenticated_bodies(ctx: Context, tally: Tally) -> None:
    """H2: ListRooms bodies of the costliest JSON without a token, and with a join-only one:
    refused unread, on the missing grant (401) or, past the size limit, on the Content-Length
    (413)."""
    join_only = token(VideoGrant(room_join=True, room="r"), identity=ctx.identity("eve"))
    for size, authorization in (
        (HUGE_BODY, None),
        (LARGE_BODY, None),
        (LARGE_BODY, f"Bearer {join_only}"),
    ):
        body = _body(size)
        headers = {"Content-Type": "application/json"}
        if authorization is not None:
            headers["Authorization"] = authorization
        async with ctx.http.post(ctx.node.http + LIST_ROOMS, data=body, headers=headers) as r:
            status = r.status
            await r.read()
        tally.add("MB posted", len(body) / 1e6)
        if status not in (401, 413):
            raise AttackSucceeded(f"a {len(body)} byte body without roomList got {status}")


async def heavy_json_frames(ctx: Context, tally: Tally) -> None:
    """H2 (after authentication): three ~2 MB JSON signalling frames of 500 000 strings each
    from a participant of the honest room, then a ping. Refused on their count of values (the
    connection closed with 1007, edge/rtc.py parse_json_request), or decoded and answered."""
    frame = _json_frame()
    url = f"{ctx.node.ws}/rtc?access_token={join_token(ctx.plan.room, ctx.identity('jay'))}"
    async with ctx.http.ws_connect(url) as ws:
        await receive_until(ws, "join")
        with contextlib.suppress(ConnectionError):
            for _ in range(3):
                await ws.send_str(frame)
                tally.add("MB of JSON", len(frame) / 1e6)
            await ws.send_str('{"ping": 7}')
        async with asyncio.timeout(60):
            while True:
                message = await ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    if ws.close_code != CLOSE_INVALID_PAYLOAD:
                        raise RuntimeError(f"signalling closed with {ws.close_code}")
                    tally.add("refused (1007)")
                    return
                if message.type == aiohttp.WSMsgType.TEXT and "pong" in json.loads(message.data):
                    return


async def garbage_join_flood(ctx: Context, tally: Tally) -> None:
    """M1: 45 joins with garbage tokens, then a valid join from the same address."""
    base = f"{ctx.node.ws}/rtc?access_token="
    statuses: collections.Counter[int] = collections.Counter()
    for _ in range(GARBAGE_JOINS):
        try:
            async with ctx.http.ws_connect(base + "garbage"):
                raise AttackSucceeded("a garbage token was accepted")
        except aiohttp.WSServerHandshakeError as refused:
            statuses[refused.status] += 1
    for status, count in statuses.items():
        tally.add(f"refused {status}", count)
    try:
        async with ctx.http.ws_connect(base + join_token("hostile-m1", ctx.identity("nat"))) as ws:
            if (await receive(ws)).WhichOneof("message") != "join":
                raise RuntimeError("no JoinResponse")
    except aiohttp.WSServerHandshakeError as refused:
        raise AttackSucceeded(f"a valid join got {refused.status} after the flood") from None


async def metrics_on_main_port(ctx: Context, tally: Tally) -> None:
    """L1: /metrics belongs on prometheus.port only."""
    async with ctx.http.get(ctx.node.http + "/metrics") as r:
        if r.status != 404:
            raise AttackSucceeded(f"/metrics on the main port answered {r.status}")


async def long_tokens(ctx: Context, tally: Tally) -> None:
    """L2: 30 KB and 120 KB garbage tokens, in the query and the header: refused, never
    echoed."""
    validate = ctx.node.http + "/rtc/validate"
    for garbage in ("Xy" * 15_000, "Xy" * 60_000):
        for params, headers in (
            ({"access_token": garbage}, {}),
            ({}, {"Authorization": f"Bearer {garbage}"}),
        ):
            async with ctx.http.get(validate, params=params, headers=headers) as r:
                text = await r.text()
                if r.status not in (400, 401):
                    raise AttackSucceeded(f"a garbage token got {r.status}")
                if "XyXyXyXy" in text:
                    raise AttackSucceeded("the refusal echoes the token")


async def slowloris(ctx: Context, tally: Tally) -> None:
    """L3: connections that never finish their request head are closed after
    limit.http_idle_timeout."""
    connections = [await tcp_connect(ctx.node) for _ in range(SLOW_CONNECTIONS)]

    async def trickle(writer: asyncio.StreamWriter) -> None:
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000:
            if writer.transport.is_closing():
                return
            writer.write(bytes([byte]))
            await asyncio.sleep(1.0)

    trickles = [asyncio.ensure_future(trickle(w)) for _, w in connections[::2]]
    try:
        limit = ctx.plan.idle_timeout + 10
        closed = await asyncio.gather(*(closed_by_peer(r, limit) for r, _ in connections))
    finally:
        for task in trickles:
            task.cancel()
        for _, writer in connections:
            writer.close()
    tally.add("connections held", len(connections))
    if not all(closed):
        still = closed.count(False)
        raise AttackSucceeded(f"{still} of {len(closed)} slow connections open after {limit:g} s")


async def non_reading_client(ctx: Context, tally: Tally) -> None:
    """L7: a signalling client that sends 300 KB metadata updates and reads nothing must be
    disconnected (limit.signal_queue_bytes, or the WebSocket heartbeat)."""
    access = join_token("hostile-l7", ctx.identity("sloth"), can_update_own_metadata=True)
    reader, writer = await websocket_upgrade(
        ctx.node, f"/rtc?access_token={access}", receive_buffer=4096
    )
    try:
        for i in range(UNREAD_UPDATES):
            update = rtc.UpdateParticipantMetadata(
                metadata=f"{i:04}" + "x" * UNREAD_METADATA, request_id=i + 1
            )
            request = rtc.SignalRequest(update_metadata=update).SerializeToString()
            writer.write(client_frame(request))
            tally.add("MB sent", len(request) / 1e6)
            try:
                await asyncio.wait_for(writer.drain(), 10)
            except ConnectionError:
                return  # cut off
        for _ in range(60):  # the server reads our pings; its answers pile up, unread
            writer.write(client_frame(os.urandom(8), opcode=0x9))
            try:
                await asyncio.wait_for(writer.drain(), 10)
            except ConnectionError:
                return
            if writer.transport.is_closing():
                return
            await asyncio.sleep(0.5)
        raise AttackSucceeded("a client that reads nothing is still connected after 30 s")
    finally:
        writer.close()
        del reader


async def stats_listing(ctx: Context, tally: Tally) -> None:
    """M5: /stats with a roomList-only token lists rooms, never their participants."""
    params = {"access_token": token(VideoGrant(room_list=True))}
    async with ctx.http.get(ctx.node.http + "/stats", params=params) as r:
        if r.status != 200:
            raise RuntimeError(f"/stats answered {r.status}")
        text = await r.text()
    for identity in ctx.plan.honest:
        if identity in text or identity.title() in text:
            raise AttackSucceeded(f"/stats shows {identity} to a roomList-only token")
    for room in json.loads(text)["rooms"]:
        if room["participants"]:
            raise AttackSucceeded(f"/stats lists the participants of {room['name']}")
    tally.add("rooms listed", len(json.loads(text)["rooms"]))


ATTACKS = [
    Attack("H2 huge unauthenticated bodies", CONTAINMENT, 2.0, 60, huge_unauthenticated_bodies),
    Attack("H2 heavy JSON signal frames", CONTAINMENT, 15.0, 90, heavy_json_frames),
    Attack("M1 garbage-token join flood", CORRECTNESS, 10.0, 60, garbage_join_flood),
    Attack("M5 /stats with roomList only", CORRECTNESS, 10.0, 30, stats_listing),
    Attack("L1 /metrics on the main port", CORRECTNESS, 10.0, 30, metrics_on_main_port),
    Attack("L2 long tokens", CORRECTNESS, 10.0, 30, long_tokens),
    Attack("L3 slowloris", CONTAINMENT, 1.0, 120, slowloris),
    Attack("L7 non-reading signal client", CONTAINMENT, 20.0, 120, non_reading_client),
]
