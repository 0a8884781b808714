"""`rtc.use_external_ip` in the lab: a node behind NAT learns its public address from a real
STUN server (coturn) and advertises it; with no STUN server answering it refuses to start."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.lab.netlab import NetworkLab
from tests.lab.turn import COTURN, coturn

pytestmark = pytest.mark.skipif(
    not Path(COTURN).exists(), reason="coturn is not installed (scripts/install-test-deps.sh)"
)


def node_config(lab: NetworkLab, stun_servers: list[str]) -> str:
    """A node bound to the client address inside the NATed client network."""
    return (
        f"port: {free_port()}\nbind_addresses: [{lab.host.ip}]\n"
        "keys:\n  APIkey: a-secret-of-at-least-thirty-two-characters\n"
        f"rtc:\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n  tcp_port: 0\n"
        f"  use_external_ip: true\n  stun_servers: {stun_servers}\n"
    )


async def serve_in_client_network(lab: NetworkLab, body: str) -> asyncio.subprocess.Process:
    command = lab.host.command(sys.executable, "-m", "roomcast", "serve", "--config-body", body)
    return await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)


async def read_until(proc: asyncio.subprocess.Process, marker: str) -> list[str]:
    """Log lines up to the one containing `marker` (or the end of the log)."""
    assert proc.stderr is not None
    lines: list[str] = []
    while line := await asyncio.wait_for(proc.stderr.readline(), 30):
        lines.append(line.decode().rstrip())
        if marker in lines[-1]:
            break
    return lines


async def test_a_node_behind_nat_advertises_the_address_stun_sees(
    lab_ready: None, tmp_path: Path
) -> None:
    lab = NetworkLab(masquerade=True)
    try:
        async with coturn(lab, tmp_path) as stun_server:
            body = node_config(lab, [f"{stun_server.ip}:{stun_server.port}"])
            proc = await serve_in_client_network(lab, body)
            try:
                lines = await read_until(proc, "roomcast started")
            finally:
                proc.terminate()
                await proc.wait()
        log = "\n".join(lines)
        # The node's own address is private to its network; STUN sees the NAT's.
        assert f"sees this node as {lab.host.router_ip}: advertising it" in log, log
        assert "roomcast started" in lines[-1], log
    finally:
        lab.close()


async def test_no_stun_answer_means_no_start(lab_ready: None, tmp_path: Path) -> None:
    lab = NetworkLab(masquerade=True)
    try:
        # Nothing listens there: every request goes unanswered.
        body = node_config(lab, [f"{lab.server_ip}:{free_port(socket.SOCK_DGRAM)}"])
        proc = await serve_in_client_network(lab, body)
        assert proc.stderr is not None
        _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        log = stderr.decode()
        assert proc.returncode == 1, log
        assert "cannot start: rtc.use_external_ip: no STUN server told this node" in log
        assert "roomcast started" not in log
    finally:
        lab.close()
