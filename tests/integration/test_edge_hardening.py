"""Attacks on the HTTP edge, each performed against a real server (security review, issue 20):
huge unauthenticated Twirp bodies (H2), heavy JSON signalling frames (H2), join lock-out through
the rate limiter (M1), participants in /stats (M5), public metrics (L1), long tokens (L2),
slowloris (L3), short secrets (L4) and a signalling client that never reads (L7).

The server runs in the test's event loop, so ``Probe`` (a ``GET /`` every 20 ms) sees every stall
of it. ``assert_responsive`` bounds the loop thread's CPU time per poll cycle (strict: a busy
machine does not inflate it) and the wall-clock stall (generous); the old code stalled the loop
for 1.2-6 s of CPU in each of these attacks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time

import aiohttp
import pytest
from livekit.protocol import rtc

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import ServerFactory, free_port, token, url_of
from tests.integration.hostile_client import (
    Probe,
    client_frame,
    closed_by_peer,
    many_names,
    tcp_connect,
    websocket_upgrade,
)
from tests.integration.sdk import join_token, until
from tests.integration.test_signalling import raw_signal, receive, receive_until

LIST_ROOMS = "/twirp/livekit.RoomService/ListRooms"
MAX_BUSY = 0.25  # seconds of loop CPU in one probe cycle: 0.01-0.04 here, 0.6-0.7 on the old code
MAX_STALL = 2.0  # seconds the probe may wait: 0.05-0.2 here, more on a loaded machine
LIVEKIT_BODY_LIMIT = "limit:\n  max_api_request_body_size: 10485760\n"  # LiveKit's 10 MiB


def assert_responsive(probe: Probe) -> None:
    assert probe.worst_busy < MAX_BUSY and probe.worst < MAX_STALL, (probe.worst_busy, probe.worst)


def limit_hits(server: Server, limit: str) -> float:
    return (
        server.metrics.registry.get_sample_value("roomcast_limit_hits_total", {"limit": limit})
        or 0.0
    )


async def post(url: str, body: bytes, authorization: str | None = None) -> tuple[int, bytes, float]:
    headers = {"Content-Type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        status, elapsed = r.status, time.perf_counter() - started
        return status, await r.read(), elapsed


# -- H2 ---------------------------------------------------------------------------------------


async def test_unauthenticated_twirp_body_is_refused_before_it_is_read(
    start_server: ServerFactory,
) -> None:
    server = await start_server(LIVEKIT_BODY_LIMIT)
    body = many_names(9_600_000)  # the review's 9.6 MB: 2.9 s of parsing on the old code
    join_only = token(VideoGrant(room_join=True, room="r"), identity="eve")
    async with Probe(server) as probe:
        for authorization, message in (
            (None, "permissions denied: no authorization token"),
            (f"Bearer {join_only}", "permissions denied"),
        ):
            status, answer, elapsed = await post(url_of(server) + LIST_ROOMS, body, authorization)
            assert status == 401, answer[:200]
            assert json.loads(answer) == {"code": "unauthenticated", "msg": message}
            assert elapsed < MAX_STALL, elapsed
        await probe.more_polls()
    assert_responsive(probe)


async def test_oversized_and_heavy_api_bodies_do_not_stall_the_node(server: Server) -> None:
    admin = f"Bearer {token(VideoGrant(room_list=True))}"
    url = url_of(server) + LIST_ROOMS
    async with Probe(server) as probe:
        # Past the (2 MiB) default limit: refused on its Content-Length, unread.
        status, answer, elapsed = await post(url, many_names(9_600_000), admin)
        assert status == 413 and elapsed < MAX_STALL
        assert json.loads(answer) == {
            "code": "resource_exhausted",
            "msg": "request body too large (limit.max_api_request_body_size: 2097152 bytes)",
        }
        assert limit_hits(server, "max_api_request_body_size") == 1
        # Within it, from a token that may list rooms: decoded off the event loop.
        for _ in range(2):
            status, answer, _ = await post(url, many_names(2_000_000), admin)
            assert status == 200, answer[:200]
        await probe.more_polls()
    assert_responsive(probe)


async def test_large_json_signal_frames_do_not_stall_the_node(server: Server) -> None:
    # A SyncState whose handling is free: all the cost would be in protobuf's parsing of
    # 500 000 JSON strings (0.6 s holding the interpreter, on the decoding thread too). Refused
    # on the count of its values, with the connection; a frame within the count still works.
    frame = json.dumps(
        {"syncState": {"subscription": {"trackSids": ["a"] * 500_000}}}, separators=(",", ":")
    )
    assert len(frame) < server.config.limit.signal_message_size_limit
    async with raw_signal(server, "json", "jay") as ws, Probe(server) as probe:
        await receive_until(ws, "join")
        await ws.send_str(frame)
        while (await ws.receive(timeout=30)).type not in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
        ):
            pass
        assert ws.close_code == 1007  # RFC 6455 §7.4.1: invalid frame payload data
        assert limit_hits(server, "signal_json_values") == 1
        await probe.more_polls()
    assert_responsive(probe)
    sids = [f"TR_{i:08}" for i in range(5000)]
    within = json.dumps({"subscription": {"trackSids": sids, "subscribe": True}})
    async with raw_signal(server, "json", "kay") as ws:
        await receive_until(ws, "join")
        await ws.send_str(within)
        await ws.send_str('{"ping": 7}')
        while True:  # answered in JSON now
            message = await ws.receive(timeout=30)
            assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)
            if message.type == aiohttp.WSMsgType.TEXT and "pong" in json.loads(message.data):
                break


# -- M1 ---------------------------------------------------------------------------------------


async def test_garbage_tokens_do_not_lock_out_valid_joins_from_the_same_address(
    start_server: ServerFactory,
) -> None:
    # The default burst of 40, refilled slowly enough that no attempt below gets a new token.
    server = await start_server("limit:\n  joins_per_second_per_ip: 0.001\n")
    url = f"{url_of(server, 'ws')}/rtc?access_token="
    statuses: list[int] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(45):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(url + "garbage")
            statuses.append(refused.value.status)
        assert statuses == [401] * 40 + [429] * 5  # refused joins: burst 40 per address
        async with session.ws_connect(url + join_token("nat", "valid")) as ws:
            assert (await receive(ws)).WhichOneof("message") == "join"
    assert limit_hits(server, "failed_joins_per_ip") == 5


async def test_forwarded_for_is_honoured_only_from_trusted_proxies(
    start_server: ServerFactory,
) -> None:
    limits = "limit:\n  joins_per_second_per_ip: 0.001\n  join_burst_per_ip: 1\n"

    async def refused_statuses(server: Server, *clients: str) -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as session:
            for client in clients:
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(
                        f"{url_of(server, 'ws')}/rtc?access_token=garbage",
                        headers={"X-Forwarded-For": f"{client}, 127.0.0.1"},
                    )
                statuses.append(refused.value.status)
        return statuses

    proxied = await start_server(limits + "trusted_proxies: [127.0.0.1/32]\n")
    # Behind the proxy every client has its own budget (and an IPv6 client one per /64).
    assert await refused_statuses(
        proxied, "203.0.113.5", "203.0.113.5", "203.0.113.6", "2001:db8::1", "2001:db8::2"
    ) == [401, 429, 401, 401, 429]
    # Not a trusted proxy: the header is the client's own claim, and changes nothing.
    direct = await start_server(limits)
    assert await refused_statuses(direct, "203.0.113.5", "203.0.113.6") == [401, 429]


# -- M5 ---------------------------------------------------------------------------------------


async def test_stats_lists_participants_only_to_an_admin_of_their_room(server: Server) -> None:
    async def stats(grant: VideoGrant) -> tuple[dict[str, object], str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url_of(server) + "/stats", params={"access_token": token(grant)}) as r,
        ):
            assert r.status == 200
            text = await r.text()
            return json.loads(text), text

    async with (
        raw_signal(server, "board-meeting-secret", "ceo@example.com", name="Jane CEO") as ceo,
        raw_signal(server, "board-meeting-secret", "observer", hidden=True) as observer,
    ):
        await receive_until(ceo, "join")
        await receive_until(observer, "join")
        for grant in (
            VideoGrant(room_list=True),
            VideoGrant(room_list=True, room_admin=True, room="another-room"),
        ):
            listing, text = await stats(grant)
            for secret in ("ceo@example.com", "Jane CEO", "observer"):
                assert secret not in text
            (room,) = listing["rooms"]  # type: ignore[misc]
            assert room["name"] == "board-meeting-secret" and room["num_participants"] == 2
            assert room["participants"] == [] and room["participants_listed"] is False
        admin = VideoGrant(room_list=True, room_admin=True, room="board-meeting-secret")
        listing, _ = await stats(admin)
        (room,) = listing["rooms"]  # type: ignore[misc]
        people = {p["identity"]: p["hidden"] for p in room["participants"]}
        assert people == {"ceo@example.com": False, "observer": True}


# -- L1 ---------------------------------------------------------------------------------------


async def test_metrics_only_on_the_prometheus_port_behind_basic_auth(
    start_server: ServerFactory,
) -> None:
    port = free_port()
    server = await start_server(
        f"prometheus:\n  port: {port}\n  username: scraper\n  password: long-enough-password\n"
    )
    metrics = f"http://127.0.0.1:{port}/metrics"

    def basic(user: str, password: str) -> dict[str, str]:
        return {
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    async with aiohttp.ClientSession() as session:
        async with session.get(url_of(server) + "/metrics") as r:
            assert r.status == 404
        async with session.get(metrics) as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        for headers in (basic("scraper", "wrong"), basic("other", "long-enough-password")):
            async with session.get(metrics, headers=headers) as r:
                assert r.status == 401
        async with session.get(metrics, headers=basic("scraper", "long-enough-password")) as r:
            assert r.status == 200 and "roomcast_rooms" in await r.text()


# -- L2 ---------------------------------------------------------------------------------------


async def test_tokens_with_20_kb_of_metadata_work_and_refusals_never_echo_tokens(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    metadata = "m" * 20_000
    big = join_token("big", "bigmeta", metadata=metadata)
    assert len(big) > 20_000
    async with raw_signal(server, "big", "bigmeta", metadata=metadata) as ws:
        join = (await receive_until(ws, "join")).join
        assert join.participant.metadata == metadata
    async with aiohttp.ClientSession() as session:
        validate = url_of(server) + "/rtc/validate"
        async with session.get(validate, headers={"Authorization": f"Bearer {big}"}) as r:
            assert r.status == 200
        caplog.set_level(logging.DEBUG)
        for garbage in ("Xy" * 15_000, "Xy" * 60_000):  # 30 KB: refused; 120 KB: head too long
            for params, headers in (
                ({"access_token": garbage}, {}),
                ({}, {"Authorization": f"Bearer {garbage}"}),
            ):
                async with session.get(validate, params=params, headers=headers) as r:
                    assert r.status in (400, 401), r.status
                    assert "XyXyXyXy" not in await r.text()
    assert "XyXyXyXy" not in caplog.text


# -- L3 ---------------------------------------------------------------------------------------


async def test_silent_and_trickling_connections_are_closed(start_server: ServerFactory) -> None:
    server = await start_server("limit:\n  http_idle_timeout: 1.0\n")
    silent, _ = await tcp_connect(server)
    trickling, writer = await tcp_connect(server)

    async def trickle() -> None:
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    task = asyncio.get_running_loop().create_task(trickle())
    try:
        started = time.monotonic()
        assert await closed_by_peer(silent, timeout=5)
        assert await closed_by_peer(trickling, timeout=5)
        assert time.monotonic() - started < 5
    finally:
        task.cancel()
    # A connection that keeps sending complete requests is served as before.
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(url_of(server) + "/") as r:
                assert r.status == 200
            await asyncio.sleep(0.5)


async def test_connections_per_address_are_capped(start_server: ServerFactory) -> None:
    server = await start_server("limit:\n  connections_per_ip: 3\n")
    held = [await tcp_connect(server) for _ in range(3)]
    extra, _ = await tcp_connect(server)
    assert await closed_by_peer(extra, timeout=5)
    assert limit_hits(server, "connections_per_ip") == 1
    for _, writer in held:
        writer.close()
    assert await served(server)  # once they are gone, the address is admitted again
    trusted = await start_server("limit:\n  connections_per_ip: 1\ntrusted_proxies: [127.0.0.1]\n")
    proxy_connections = [await tcp_connect(trusted) for _ in range(3)]
    async with aiohttp.ClientSession() as session, session.get(url_of(trusted) + "/") as r:
        assert r.status == 200  # a trusted proxy carries many clients: no cap
    for _, writer in proxy_connections:
        writer.close()


async def served(server: Server, timeout: float = 5.0) -> bool:
    """Whether ``GET /`` is answered within ``timeout`` (retrying refused connections)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url_of(server) + "/") as r:
                    return r.status == 200
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    return False


# -- L4 ---------------------------------------------------------------------------------------


async def test_short_secrets_are_reported_at_start(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    long_secret = "0123456789abcdef0123456789abcdef"
    await start_server(f"keys:\n  strong: {long_secret}\n  weak: s3cr3tXY\n")
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("API key weak" in e and "32 characters" in e for e in errors), errors
    assert not any("API key strong" in e for e in errors)
    assert not any("s3cr3tXY" in e for e in errors)  # never the secret itself
    dev = await start_server(dev=True)
    assert dev.config.dev_mode


# -- L7 ---------------------------------------------------------------------------------------


async def test_a_signalling_client_that_never_reads_is_disconnected(
    start_server: ServerFactory,
) -> None:
    server = await start_server("limit:\n  signal_queue_bytes: 1048576\n")
    access = join_token("slow", "sloth", can_update_own_metadata=True)
    reader, writer = await websocket_upgrade(
        server, f"/rtc?access_token={access}", receive_buffer=4096
    )
    assert server.rtc.open_connections == 1
    # Each update is answered to the sender with its 200 KB echo (applied, or refused by the
    # update rate), and an applied one with a ParticipantUpdate too: 8-16 MB in all for a
    # client that reads nothing.
    for i in range(40):
        update = rtc.UpdateParticipantMetadata(metadata=f"{i:04}" + "x" * 200_000, request_id=i)
        writer.write(client_frame(rtc.SignalRequest(update_metadata=update).SerializeToString()))
        try:
            await writer.drain()
        except ConnectionError:
            break  # cut off
        if limit_hits(server, "signal_queue_bytes"):
            break
    await until(lambda: server.rtc.open_connections == 0, timeout=5)  # well before heartbeats
    assert limit_hits(server, "signal_queue_bytes") == 1
    writer.close()
    del reader
