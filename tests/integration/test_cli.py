"""`roomcast serve` and `roomcast token create` as a newcomer runs them (real processes)."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time

import aiohttp
from livekit import api

from roomcast.auth import TokenVerifier
from tests.conftest import free_port, free_tcp_ports


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 20) -> None:
    async with aiohttp.ClientSession() as session:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            assert proc.returncode is None, "server exited early"
            try:
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "server did not come up"
            await asyncio.sleep(0.1)


async def start_dev_server(
    *args: str, stderr: int = asyncio.subprocess.DEVNULL
) -> tuple[asyncio.subprocess.Process, int]:
    """`roomcast serve --dev` on free loopback ports, healthy; the caller stops it."""
    port = free_port()
    # The ICE-TCP port too (rtc.tcp_port, 7881 by default), one per worker.
    workers = int(args[args.index("--workers") + 1]) if "--workers" in args else 1
    ice_tcp = f"rtc:\n  tcp_port: {free_tcp_ports(workers)}\n"
    if "--config-body" in args:
        at = args.index("--config-body") + 1
        args = (*args[:at], args[at] + ice_tcp, *args[at + 1 :])
    else:
        args = (*args, "--config-body", ice_tcp)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "serve", "--dev",
        "--port", str(port), "--udp-port", str(free_port(socket.SOCK_DGRAM)), *args,
        stderr=stderr,
    )  # fmt: skip
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/", proc)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    return proc, port


async def test_serve_dev_then_sigterm_shuts_down_cleanly() -> None:
    proc, port = await start_dev_server(stderr=asyncio.subprocess.PIPE)
    try:
        async with api.LiveKitAPI(f"http://127.0.0.1:{port}", "devkey", "secret") as lk:
            await lk.room.create_room(api.CreateRoomRequest(name="cli-room"))
            rooms = await lk.room.list_rooms(api.ListRoomsRequest())
            assert [r.name for r in rooms.rooms] == ["cli-room"]
            await lk.room.delete_room(api.DeleteRoomRequest(room="cli-room"))
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    log = stderr.decode()
    assert "roomcast started" in log and "roomcast stopped" in log
    assert "secret" not in log.replace("devkey", "")


async def test_bad_config_exits_with_clear_message() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomcast",
        "serve",
        "--config-body",
        "keys: {a: b}\nbogus: 1\n",
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 2
    assert "unknown config key 'bogus'" in stderr.decode()


async def test_token_create() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roomcast",
        "token",
        "create",
        "--room",
        "r",
        "--identity",
        "ann",
        "--name",
        "Ann",
        "--attribute",
        "team=blue",
        "--valid-for",
        "60",
        stdout=asyncio.subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    claims = TokenVerifier({"devkey": "secret"}).verify(stdout.decode().strip())
    assert claims.identity == "ann" and claims.name == "Ann"
    assert claims.video.room_join and claims.video.room == "r"
    assert dict(claims.attributes) == {"team": "blue"}
    assert abs(claims.expires_at - time.time() - 60) < 5
