"""TURN in the network lab: the embedded server's config, a test certificate, a real coturn
(Debian's `coturn` package) next to the server, and checks that a client's media goes through a
relay (tests/lab/test_turn_paths.py, tests/lab/test_browser_turn.py)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roomcast.server import Server
from tests.certificates import self_signed_certificate
from tests.lab.conftest import free_port_on
from tests.lab.netlab import NetworkLab

COTURN = shutil.which("turnserver") or "/usr/bin/turnserver"
COTURN_SECRET = "coturn-shared-secret-for-the-lab"
READY_TIMEOUT = 15.0


def free_udp_and_tcp_port(ip: str) -> int:
    """A port number free for both UDP and TCP on `ip` (TURN serves both on one number)."""
    for _ in range(100):
        port = free_port_on(ip, socket.SOCK_DGRAM)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((ip, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no port free for both UDP and TCP on {ip}")


@dataclass(frozen=True)
class EmbeddedTurn:
    port: int  # UDP and TCP
    tls_port: int

    def yaml(self, ip: str, cert: Path, key: str | Path) -> str:
        return (
            f"turn:\n  enabled: true\n  domain: {ip}\n  udp_port: {self.port}\n"
            f"  tls_port: {self.tls_port}\n  cert_file: {cert}\n  key_file: {key}\n"
        )


def embedded_turn(lab: NetworkLab) -> EmbeddedTurn:
    return EmbeddedTurn(
        free_udp_and_tcp_port(lab.server_ip), free_port_on(lab.server_ip, socket.SOCK_STREAM)
    )


@dataclass
class Coturn:
    ip: str
    port: int  # UDP and TCP
    tls_port: int
    relay_ports: tuple[int, int]
    log: list[str]

    def rtc_yaml(self, *protocols: str) -> str:
        """rtc.turn_servers entries for this coturn, with TURN REST API credentials."""
        entries = "".join(
            f"    - {{host: {self.ip}, port: {self.tls_port if p == 'tls' else self.port}, "
            f"protocol: {p}, secret: {COTURN_SECRET}, ttl: 600}}\n"
            for p in protocols
        )
        return "  turn_servers:\n" + entries


@contextlib.asynccontextmanager
async def coturn(lab: NetworkLab, directory: Path) -> AsyncIterator[Coturn]:
    """coturn on the lab's server address (root namespace), `use-auth-secret` (the TURN REST
    API), TLS with a self-signed certificate; stopped at the end."""
    ip = lab.server_ip
    cert, key = self_signed_certificate(directory, ip)
    port, tls_port = free_udp_and_tcp_port(ip), free_port_on(ip, socket.SOCK_STREAM)
    low = free_port_on(ip, socket.SOCK_DGRAM)  # coturn needs a range; any free start will do
    server = Coturn(ip, port, tls_port, (low, low + 50), [])
    proc = await asyncio.create_subprocess_exec(
        COTURN, "-n", "-v", "--log-file=stdout", "--simple-log", "--no-cli", "--no-dtls",
        f"--listening-ip={ip}", f"--relay-ip={ip}", f"--listening-port={port}",
        f"--tls-listening-port={tls_port}", f"--min-port={low}", f"--max-port={low + 50}",
        f"--cert={cert}", f"--pkey={key}", "--use-auth-secret",
        f"--static-auth-secret={COTURN_SECRET}", "--realm=roomcast.lab",
        f"--pidfile={directory / 'turnserver.pid'}", f"--userdb={directory / 'turndb'}",
        "--no-tlsv1", "--no-tlsv1_1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    wanted = {
        f"UDP listener opened on: {ip}:{port}",
        f"TLS/TCP listener opened on : {ip}:{port}",
        f"TLS/TCP listener opened on : {ip}:{tls_port}",
    }
    logged = asyncio.Event()
    reader = asyncio.create_task(_read_log(proc.stdout, server.log, logged))
    try:
        await asyncio.wait_for(_until_logged(server.log, wanted, logged), READY_TIMEOUT)
        yield server
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _read_log(stream: asyncio.StreamReader, lines: list[str], logged: asyncio.Event) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace").rstrip())
        logged.set()
    lines.append("(exited)")
    logged.set()


async def _until_logged(lines: list[str], wanted: set[str], logged: asyncio.Event) -> None:
    """Until every `wanted` text is in the log (each line sets `logged`)."""
    while not all(any(w in line for line in lines) for w in wanted):
        if lines and lines[-1] == "(exited)":
            raise AssertionError("coturn exited:\n" + "\n".join(lines[-30:]))
        logged.clear()
        await logged.wait()


def relayed_pairs(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The selected pair of each PeerConnection (from sdk_peer.py's `stats`)."""
    return {pc: pair for pc, pair in stats["paths"].items() if pair}


def check_sdk_relay(
    stats: dict[str, Any], server: Server, turn_port: int, relay_protocol: str
) -> None:
    """Both PeerConnections of an SDK peer send through a TURN relay reached over
    `relay_protocol` (TRANSPORT_TCP / TRANSPORT_TLS) on `turn_port`, to the media port."""
    pairs = relayed_pairs(stats)
    assert set(pairs) == {"publisher", "subscriber"}, stats["paths"]
    for pair in pairs.values():
        local, remote = pair["local"], pair["remote"]
        assert local["type"] == "RELAY", pair
        assert local["relay_protocol"] == relay_protocol, pair
        assert f":{turn_port}" in local["url"], pair
        assert (remote["protocol"], remote["port"]) == ("udp", server.mux.port), pair


def embedded_relays_of(server: Server, client_ip: str) -> dict[tuple[str, int], str]:
    """The embedded TURN's allocations made from `client_ip`: relayed address → "udp",
    "tcp" or "tls" (how the client reaches the TURN server)."""
    assert server.turn is not None
    return {
        allocation.relayed_address: getattr(allocation.link, "protocol", "?")
        for allocation in server.turn.core.allocations
        if allocation.link.address[0] == client_ip
    }


def transports_from(server: Server, addresses: set[tuple[str, int]]) -> set[str]:
    """ufrags of the server's transports whose remote address is one of `addresses`."""
    return {
        transport.ice_ufrag
        for transport in server.mux._routes
        if transport.remote_address in addresses
    }
