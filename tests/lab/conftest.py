"""Fixtures of the network lab (tests/lab/netlab.py, docs/network-lab.md).

`lab`         a NetworkLab with one client network (`lab.host`), deleted after the test
`lab_server`  a Roomcast server in this process, listening on `lab.server_ip`
`peers`       official Python SDK participants as processes (tests/lab/peers.py)

Skipped, with the reason, where the lab cannot run (not root, no namespaces, no iptables).
The tests run on uvloop, as `roomcast serve` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

import pytest
import uvloop

from roomcast.config import Overrides, load_config
from roomcast.server import Server
from tests.conftest import API_KEY, API_SECRET
from tests.lab import netlab, timings
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], object]]:
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def lab_ready() -> None:
    reason = netlab.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    netlab.sweep_stale()  # namespaces a crashed run left behind


@pytest.fixture
def lab(lab_ready: None) -> Iterator[NetworkLab]:
    network = NetworkLab()
    try:
        yield network
    finally:
        network.close()


def free_port_on(ip: str, kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def running_server(
    lab: NetworkLab, extra_yaml: str = "", rtc_yaml: str = ""
) -> AsyncIterator[Server]:
    """Roomcast on the lab's server address: HTTP, WebRTC UDP and ICE-TCP on free ports;
    `extra_yaml`: more top-level sections (`turn:`), `rtc_yaml`: more of `rtc:`, indented."""
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)  # as in production
    ip = lab.server_ip
    body = (
        f"port: 0\nkeys:\n  {API_KEY}: {API_SECRET}\nbind_addresses: [{ip}]\n"
        f"rtc:\n  udp_port: {free_port_on(ip, socket.SOCK_DGRAM)}\n"
        f"  tcp_port: {free_port_on(ip, socket.SOCK_STREAM)}\n{rtc_yaml}"
    )
    server = Server(load_config(Overrides(config_body=body + extra_yaml), environ={}))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def lab_server(lab: NetworkLab) -> AsyncIterator[Server]:
    async with running_server(lab) as server:
        yield server


@pytest.fixture
async def peers(lab: NetworkLab) -> AsyncIterator[Peers]:
    started = Peers()
    try:
        yield started
    finally:
        await started.stop_all()  # before the lab's namespaces go


def ws_url(server: Server) -> str:
    return f"ws://{server.bind_addresses[0]}:{server.port}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in timings.summary():
        terminalreporter.write_line(line)
