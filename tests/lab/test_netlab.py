"""The lab itself (tests/lab/netlab.py): client networks reach the server address and nothing
else, and each impairment does what it says, measured with plain sockets. Cleanup too."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.lab import netlab
from tests.lab.netlab import NetworkLab

PROBE = Path(__file__).with_name("probe.py")


async def probe(lab: NetworkLab, *args: object, host: int = 0) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *lab.hosts[host].command(sys.executable, str(PROBE), *map(str, args)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


class Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.arrived.set()


async def udp_sink(ip: str) -> tuple[asyncio.DatagramTransport, Datagrams, int]:
    loop = asyncio.get_running_loop()
    transport, sink = await loop.create_datagram_endpoint(Datagrams, local_addr=(ip, 0))
    return transport, sink, transport.get_extra_info("sockname")[1]


async def udp_received(lab: NetworkLab, count: int, *, block: bool = False) -> tuple[int, str]:
    """Datagrams from the client network that reach a fresh port (of `count` sent), and the
    router's counters then. The impairments are lifted afterwards, for a marker datagram to a
    second port: once it is in, everything sent before it is too."""
    data, sink, port = await udp_sink(lab.server_ip)
    marker, marker_sink, marker_port = await udp_sink(lab.server_ip)
    try:
        if block:
            lab.host.block_udp(lab.server_ip, port)
        await probe(lab, "udp", lab.server_ip, port, count)
        counters = lab.host.counters()
        lab.host.clear()  # the marker must arrive: same queue, after the others
        await probe(lab, "udp", lab.server_ip, marker_port, 1)
        await asyncio.wait_for(marker_sink.arrived.wait(), 10)
        return len(sink.received), counters
    finally:
        data.close()
        marker.close()


async def test_client_networks_reach_the_server_address_and_are_cleaned_up(
    lab_ready: None,
) -> None:
    lab = NetworkLab(hosts=2)
    try:
        natted = lab.add_host(masquerade=True)
        peers: list[str] = []

        def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            peers.append(writer.get_extra_info("peername")[0])
            writer.close()

        server = await asyncio.start_server(accept, lab.server_ip, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            for index in (0, 1, 2):  # the others reach it through their own gateways
                result = await probe(lab, "connect", lab.server_ip, port, 5, host=index)
                assert result["connected"]
        # The server sees each client's own address, or its router's behind NAT.
        assert peers == [lab.hosts[0].ip, lab.hosts[1].ip, natted.router_ip]
        assert natted.seen_as == natted.router_ip != natted.ip
        # No route beyond the lab's range: the machine's own network is not reachable.
        result = netlab.run(lab.host.command("ip", "route", "get", "192.0.2.1"), check=False)
        assert result.returncode != 0 and "unreachable" in result.stderr
        names = [name for h in lab.hosts for name in (h.namespace, h.router)]
    finally:
        lab.close()
    listed = netlab.run(["ip", "netns", "list"]).stdout
    assert not any(name in listed for name in names)
    assert f"rcl{os.getpid()}" not in netlab.run(["ip", "-o", "link"]).stdout


def test_a_crashed_run_is_swept_away(lab_ready: None) -> None:
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # a pid never handed out
    assert not netlab._alive(dead)
    stale = f"{netlab.PREFIX}-{dead}-0"
    netlab.run(["ip", "netns", "add", stale])
    try:
        assert stale in netlab.sweep_stale()
    finally:
        netlab.run(["ip", "netns", "del", stale], check=False)
    assert stale not in netlab.run(["ip", "netns", "list"]).stdout


async def test_blocking_udp_and_tcp(lab: NetworkLab) -> None:
    assert (await udp_received(lab, 50))[0] == 50
    assert (await udp_received(lab, 50, block=True))[0] == 0  # only that port: marker came
    server = await asyncio.start_server(lambda r, w: w.close(), lab.server_ip, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert (await probe(lab, "connect", lab.server_ip, port, 5))["connected"]
        lab.host.block_udp(lab.server_ip)  # all UDP: TCP still goes
        assert (await probe(lab, "connect", lab.server_ip, port, 5))["connected"]
        lab.host.block_tcp(lab.server_ip, port)
        assert not (await probe(lab, "connect", lab.server_ip, port, 1))["connected"]


async def test_random_loss_drops_about_the_share_asked_for(lab: NetworkLab) -> None:
    lab.host.forward_rule("-i", "down0", "-p", "udp")  # no target: counts what reaches the rule
    lab.host.drop(0.2, "up", protocol="udp")
    received, counters = await udp_received(lab, 2000)
    rules = [line.split() for line in counters.splitlines()[2:] if line.strip()]
    (seen, _, *_), (dropped, _, *_) = rules[0], rules[1]
    seen, dropped = int(seen), int(dropped)
    assert seen >= 1500, rules  # a burst may lose some before the router; not many
    assert 0.15 <= dropped / seen <= 0.25, rules  # 0.2 ± 5 standard deviations
    assert received <= seen - dropped


@pytest.mark.parametrize("direction", ["down", "up"])
async def test_a_bandwidth_cap_holds_per_direction(lab: NetworkLab, direction: str) -> None:
    size, kbit = 250_000, 1000  # 2 s at the cap; uncapped it takes milliseconds
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if direction == "down":
            writer.write(b"x" * size)
            await writer.drain()
        else:
            while await reader.read(65536):
                pass
        writer.close()
        done.set()

    lab.host.cap(kbit, direction)
    lab.host.cap(100_000, "up" if direction == "down" else "down")  # the other way: ample
    server = await asyncio.start_server(serve, lab.server_ip, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        mode = "receive" if direction == "down" else "send"
        result = await probe(lab, mode, lab.server_ip, port, size)
        await done.wait()
    assert result["bytes"] == size
    ideal = size * 8 / (kbit * 1000)
    assert 0.8 * ideal <= result["seconds"] <= 3 * ideal, result
