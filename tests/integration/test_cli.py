"""`roomcast serve` and `roomcast token create` as a newcomer runs them (real processes)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time

import aiohttp
from livekit import api

from roomcast.auth import TokenVerifier
from tests.conftest import free_port, free_tcp_ports, free_udp_and_tcp_port


async def wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 60) -> None:
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


async def test_serve_names_the_livekit_keys_it_ignores_in_one_warning() -> None:
    """A livekit.yaml with TURN, peer filters and an ingress section loads, and the log says
    which of those do nothing here (TURN itself is served, roomcast/turn)."""
    port = free_port()
    body = (
        f"port: {port}\nbind_addresses: [127.0.0.1]\n"
        "keys:\n  APIkey: a-secret-of-at-least-thirty-two-characters\n"
        f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: 0\n"
        "ingress:\n  rtmp_base_url: rtmp://example.com/live\n"
        f"turn:\n  enabled: true\n  udp_port: {free_udp_and_tcp_port()}\n"
        "  deny_peer_cidrs: [10.0.0.0/8]\n"
        "audio:\n  active_level: 30\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "serve", "--config-body", body,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_healthy(f"http://127.0.0.1:{port}/", proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    log = stderr.decode()
    warnings = [line for line in log.splitlines() if "do nothing here" in line]
    assert len(warnings) == 1, log
    assert "  ingress: not supported yet: no ingress" in log
    assert "rtc.tcp_port" not in log
    assert "  turn.deny_peer_cidrs: Roomcast's TURN relays only to its own media port" in log
    assert "  turn:" not in log and "TURN on 127.0.0.1" in log  # served
    assert "  audio: " in log and "audio.active_level" not in log  # a section is named once


async def test_dev_mode_serves_metrics_on_the_main_port_and_says_which_mode() -> None:
    """--dev: /metrics on the HTTP port too (outside dev mode only on prometheus.port:
    test_edge_hardening.py); the start-up line names the mode and the node id."""
    proc, port = await start_dev_server(stderr=asyncio.subprocess.PIPE)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as resp,
        ):
            assert resp.status == 200 and "roomcast_rooms" in await resp.text()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    started = next(line for line in stderr.decode().splitlines() if "roomcast started" in line)
    node = re.search(r"single node, node id (ND_\w+)$", started)
    assert node is not None, started
    assert f"[{node.group(1)}] roomcast.server:" in started  # every line is tagged with it


class Taken:
    """Holds a TCP and a UDP port on 127.0.0.1, as another program would."""

    def __init__(self) -> None:
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp_port = self.tcp.getsockname()[1]
        self.udp_port = self.udp.getsockname()[1]

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


async def serve_exit(*args: str) -> tuple[int, list[str]]:
    """Run `roomcast serve --dev ARGS`, expecting it to exit: its status and log lines. ICE over
    TCP is off unless ARGS say otherwise, so another server's port 7881 changes nothing."""
    if "--tcp-port" not in args:
        args = (*args, "--tcp-port", "0")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "serve", "--dev", *args,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, stderr.decode().splitlines()


def the_error(lines: list[str]) -> str:
    """The one ERROR line, after which nothing announced a URL or a start."""
    errors = [line for line in lines if " ERROR " in line]
    assert len(errors) == 1, lines
    assert not any("playground: open" in line or "roomcast started" in line for line in lines)
    return errors[0].split("cannot start: ", 1)[1]


async def test_taken_ports_fail_the_start_with_one_line_naming_port_protocol_and_flag() -> None:
    taken = Taken()
    free_tcp, free_udp = free_port(), free_port(socket.SOCK_DGRAM)
    try:
        code, lines = await serve_exit("--port", str(free_tcp), "--udp-port", str(taken.udp_port))
        assert code == 1
        assert the_error(lines) == (
            f"UDP port {taken.udp_port} on 127.0.0.1 (WebRTC media) is already in use by "
            "another process; stop it, or choose another port with --udp-port (YAML: "
            "rtc.udp_port)"
        )
        code, lines = await serve_exit("--port", str(taken.tcp_port), "--udp-port", str(free_udp))
        assert code == 1
        assert the_error(lines).startswith(
            f"TCP port {taken.tcp_port} on 127.0.0.1 (HTTP/WebSocket: API, signalling, "
            "playground) is already in use"
        )
        assert the_error(lines).endswith("with --port (YAML: port)")
        code, lines = await serve_exit(
            "--port", str(free_tcp), "--udp-port", str(free_udp),
            "--config-body", f"prometheus:\n  port: {taken.tcp_port}\n",
        )  # fmt: skip
        assert code == 1
        assert the_error(lines).startswith(
            f"TCP port {taken.tcp_port} on 127.0.0.1 (Prometheus /metrics) is already in use"
        )
        assert the_error(lines).endswith("prometheus.port in the YAML config")
    finally:
        taken.close()


def free_udp_port_before_a_taken_one() -> tuple[int, socket.socket]:
    """A free UDP port P, and a socket holding P + 1."""
    while True:
        port = free_port(socket.SOCK_DGRAM)
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            holder.bind(("127.0.0.1", port + 1))
            return port, holder
        except OSError:
            holder.close()


async def test_workers_check_every_port_before_starting_any_worker() -> None:
    taken = Taken()
    udp_port, holder = free_udp_port_before_a_taken_one()
    try:
        # Worker 0's UDP port is free, worker 1's (udp_port + 1) is taken.
        code, lines = await serve_exit(
            "--workers", "2", "--port", str(free_port()), "--udp-port", str(udp_port)
        )
        assert code == 1
        assert the_error(lines).startswith(
            f"UDP port {udp_port + 1} on 127.0.0.1 (WebRTC media of worker 1) is already in use"
        )
        assert "[supervisor] roomcast: cannot start" in lines[-1]
        assert not any("private Redis" in line for line in lines)  # nothing was started
        code, lines = await serve_exit(
            "--workers", "2", "--port", str(taken.tcp_port),
            "--udp-port", str(free_port(socket.SOCK_DGRAM)),
        )  # fmt: skip
        assert code == 1
        assert the_error(lines).startswith(f"TCP port {taken.tcp_port} on 127.0.0.1 (HTTP")
    finally:
        taken.close()
        holder.close()


async def test_a_worker_that_cannot_bind_stops_the_others_instead_of_restarting() -> None:
    """The supervisor's own check passed, then a worker's port was taken (a race): the worker
    says why and exits with STARTUP_FAILED, and the supervisor stops everything with status 1
    rather than restarting it every second."""
    from roomcast.config import Overrides, load_config
    from roomcast.supervisor import supervise

    taken = Taken()
    udp_port = free_port(socket.SOCK_DGRAM)  # worker 1 takes the next one
    config = load_config(
        Overrides(dev=True, port=free_port(), udp_port=udp_port, tcp_port=0), environ={}
    )
    worker_args = ["serve", "--dev", "--port", str(taken.tcp_port), "--tcp-port", "0"]
    try:
        assert await asyncio.wait_for(supervise(config, 2, worker_args), 60) == 1
    finally:
        taken.close()
