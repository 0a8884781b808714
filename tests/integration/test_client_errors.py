"""Errors as the official SDKs show them to their user: a full room (the Python rtc SDK; the
browser's livekit-client is in tests/browser/test_browser_errors.py) and refused API tokens
(`livekit-api`, and `livekit-server-sdk` under Node)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from livekit import api, rtc

from roomcast.auth import VideoGrant
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET, ServerFactory, token, url_of
from tests.integration.sdk import join_token, joined

FULL = "room has exceeded its max participants"
NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def refused_upgrades(server: Server) -> float:
    sample = server.metrics.registry.get_sample_value(
        "roomcast_signal_connections_total", {"result": "rejected"}
    )
    return sample or 0.0


async def validate(server: Server, token: str) -> tuple[int, str, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url_of(server) + "/rtc/validate", params={"access_token": token}) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


async def test_full_room_is_refused_before_the_upgrade_and_the_sdk_says_why(
    start_server: ServerFactory,
) -> None:
    server: Server = await start_server("room:\n  max_participants: 1\n")
    async with joined(server, "full", "first"):
        # /rtc/validate gives the reason the SDKs show, with CORS for browsers.
        status, text, headers = await validate(server, join_token("full", "second"))
        assert (status, text) == (403, f"{FULL} (1)")
        assert headers["Access-Control-Allow-Origin"] == "*"
        # The same identity takes its own seat back; agents do not count (rooms/room.py).
        assert (await validate(server, join_token("full", "first")))[:2] == (200, "success")
        assert (await validate(server, join_token("full", "bot", kind="agent")))[:2] == (
            200,
            "success",
        )

        # The WebSocket upgrade itself is refused with the same status.
        url = f"{url_of(server, 'ws')}/rtc?access_token={join_token('full', 'raw')}"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as handshake:
                await session.ws_connect(url)
        assert handshake.value.status == 403

        # The Python SDK raises with the reason, after one attempt (a 403 is not retried).
        before = refused_upgrades(server)
        second = rtc.Room()
        with pytest.raises(rtc.ConnectError) as refused:
            await second.connect(url_of(server, "ws"), join_token("full", "second"))
        assert FULL in str(refused.value), refused.value
        assert refused_upgrades(server) == before + 1
        assert not second.isconnected()


async def test_a_room_created_with_its_own_limit_is_refused_when_full(
    lkapi: api.LiveKitAPI, server: Server
) -> None:
    await lkapi.room.create_room(api.CreateRoomRequest(name="duo", max_participants=2))
    async with joined(server, "duo", "ann"), joined(server, "duo", "ben"):
        status, text, _ = await validate(server, join_token("duo", "cat"))
        assert (status, text) == (403, f"{FULL} (2)")
    # Both left: there is room again.
    assert (await validate(server, join_token("duo", "cat")))[:2] == (200, "success")


# -- API tokens ---------------------------------------------------------------------------------


@pytest.fixture
async def wrong_secret(server: Server) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(url_of(server), API_KEY, "not-the-secret-of-devkey")
    yield client
    await client.aclose()


async def test_livekit_api_shows_why_a_token_is_refused(
    server: Server, wrong_secret: api.LiveKitAPI
) -> None:
    with pytest.raises(api.ServerError) as refused:
        await wrong_secret.room.list_rooms(api.ListRoomsRequest())
    error = refused.value
    assert (error.code, error.status) == ("unauthenticated", 401)
    assert error.message == "invalid token: Signature verification failed"

    async with api.LiveKitAPI(url_of(server), "nokey", API_SECRET) as unknown_key:
        with pytest.raises(api.ServerError) as refused:
            await unknown_key.room.list_rooms(api.ListRoomsRequest())
    assert (refused.value.code, refused.value.message) == ("unauthenticated", "invalid API key")


NODE_LIST_ROOMS = """
import { RoomServiceClient } from 'livekit-server-sdk';
const [url, key, secret] = process.argv.slice(1);
try {
  await new RoomServiceClient(url, key, secret).listRooms();
  console.log(JSON.stringify({ ok: true }));
} catch (err) {
  console.log(JSON.stringify({ message: err.message, code: err.code, status: err.status }));
}
"""


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="Node SDKs not installed: run `make test` (scripts/install-test-deps.sh)",
)
async def test_livekit_server_sdk_shows_why_a_token_is_refused(server: Server) -> None:
    proc = await asyncio.create_subprocess_exec(
        "node", "--input-type=module", "-e", NODE_LIST_ROOMS,
        url_of(server), API_KEY, "not-the-secret-of-devkey",
        cwd=NODE_DIR, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    assert result == {
        "message": "invalid token: Signature verification failed",
        "code": "unauthenticated",
        "status": 401,
    }


async def test_a_chunked_body_over_the_limit_gets_a_twirp_error(server: Server) -> None:
    """No Content-Length: refused while reading, with the same JSON error as a declared one."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"names": ["'
        for _ in range(3 * 1024):  # 3 MiB, over the 2 MiB default
            yield b"x" * 1024
        yield b'"]}'

    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token(VideoGrant(room_list=True))}",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url_of(server) + "/twirp/livekit.RoomService/ListRooms", data=chunks(), headers=headers
        ) as resp,
    ):
        assert resp.status == 413
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["code"] == "resource_exhausted"
