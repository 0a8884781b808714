"""The official Python SDK behind a firewall that blocks all UDP and the ICE-TCP port: it relays
through TURN over TCP, the embedded TURN server's or a real coturn's (`rtc.turn_servers`), and
audio, video and data flow both ways, also through a resume (ICE restart) and a full reconnect
(issue 15, 5c/5d/5f).

TURN over TLS is not tested with the Python SDK: its libwebrtc checks a TURN server's
certificate against the root certificates built into it, which neither a test CA nor
SSL_CERT_FILE can extend (the handshake ends with "unknown CA"); tests/lab/test_browser_turn.py
covers TLS with Chromium.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from roomcast.server import Server
from tests.certificates import self_signed_certificate
from tests.lab import timings
from tests.lab.conftest import running_server
from tests.lab.netlab import NetworkLab
from tests.lab.peers import Peers
from tests.lab.test_ice_paths import first_frames, join_pair, media_and_data_flow
from tests.lab.turn import (
    COTURN,
    Coturn,
    check_sdk_relay,
    coturn,
    embedded_relays_of,
    embedded_turn,
    transports_from,
)

needs_coturn = pytest.mark.skipif(
    not Path(COTURN).exists(), reason="coturn is not installed (scripts/install-test-deps.sh)"
)


def only_turn_open(lab: NetworkLab, server: Server) -> None:
    """Block every UDP port of the server and its ICE-TCP port: TURN over TCP/TLS is left."""
    lab.host.block_udp(lab.server_ip)
    lab.host.block_tcp(lab.server_ip, server.mux.tcp_port)


@contextlib.asynccontextmanager
async def relayed_server(
    lab: NetworkLab, directory: Path, via: str
) -> AsyncIterator[tuple[Server, Coturn | None, int]]:
    """Roomcast with its embedded TURN on (UDP and TCP on one port, TLS on another), or
    without, handing clients a coturn next to it (TCP and TLS) in `rtc.turn_servers`; and the
    TURN port clients reach over TCP."""
    if via == "embedded":
        cert, key = self_signed_certificate(directory, lab.server_ip)
        turn = embedded_turn(lab)
        async with running_server(lab, turn.yaml(lab.server_ip, cert, key)) as server:
            yield server, None, turn.port
    else:
        async with (
            coturn(lab, directory) as relay,
            running_server(lab, rtc_yaml=relay.rtc_yaml("tcp", "tls")) as server,
        ):
            yield server, relay, relay.port


def check_embedded_path(server: Server, lab: NetworkLab, protocol: str) -> set[str]:
    """The server side: the far client's allocations are over `protocol` and both its
    transports receive from their relayed addresses. The transports' ufrags."""
    relays = embedded_relays_of(server, lab.host.seen_as)
    assert relays and set(relays.values()) == {protocol}, relays
    ufrags = transports_from(server, set(relays))
    assert len(ufrags) == 2, (relays, ufrags)
    return ufrags


def check_coturn_path(server: Server, relay: Coturn) -> set[str]:
    """The server side: two transports receive from coturn's relay ports."""
    low, high = relay.relay_ports
    addresses = {
        transport.remote_address
        for transport in server.mux._routes
        if isinstance(transport.remote_address, tuple)
        and transport.remote_address[0] == relay.ip
        and low <= transport.remote_address[1] <= high
    }
    ufrags = transports_from(server, addresses)
    assert len(ufrags) == 2, addresses
    return ufrags


def check_path(
    server: Server, lab: NetworkLab, relay: Coturn | None, protocol: str = "tcp"
) -> set[str]:
    """Both of the far client's transports are relayed, by the embedded TURN (reached over
    `protocol`) or by coturn. Their ufrags."""
    if relay is None:
        return check_embedded_path(server, lab, protocol)
    return check_coturn_path(server, relay)


VIAS = ["embedded", pytest.param("coturn", marks=needs_coturn)]


@pytest.mark.parametrize("via", VIAS)
async def test_udp_and_ice_tcp_blocked_the_python_sdk_relays_over_turn_tcp(
    lab: NetworkLab, peers: Peers, tmp_path: Path, via: str
) -> None:
    async with relayed_server(lab, tmp_path, via) as (server, relay, turn_port):
        only_turn_open(lab, server)
        near, far = await join_pair(lab, server, peers, f"turn-{via}")
        joined = await far.wait("connected")
        times = await first_frames(far, "near")
        await media_and_data_flow(near, far, "relayed")
        check_sdk_relay(await far.command("stats"), server, turn_port, "TRANSPORT_TCP")
        check_path(server, lab, relay)
        timings.record(f"turn/tcp ({via})", "python sdk", join=joined["join_s"], **times)
        if server.turn is not None:  # counted in /metrics
            totals = server.turn.core.totals
            assert totals.to_peer_bytes > 10_000 and totals.to_client_bytes > 10_000
            exposition = generate_latest(server.metrics.registry).decode()
            allocations = server.turn.core.allocation_count  # near relays too (over UDP)
            assert 'roomcast_turn_relayed_bytes_total{direction="to_peer"}' in exposition
            assert f"roomcast_turn_allocations {float(allocations)}" in exposition


@pytest.mark.parametrize("via", VIAS)
async def test_resume_and_full_reconnect_stay_on_the_turn_path(
    lab: NetworkLab, peers: Peers, tmp_path: Path, via: str
) -> None:
    async with relayed_server(lab, tmp_path, via) as (server, relay, turn_port):
        only_turn_open(lab, server)
        near, far = await join_pair(lab, server, peers, f"re-{via}")
        await far.wait("connected")
        await media_and_data_flow(near, far, "before")

        async def on_the_path() -> set[str]:
            check_sdk_relay(await far.command("stats"), server, turn_port, "TRANSPORT_TCP")
            return check_path(server, lab, relay)

        ufrags = await on_the_path()
        clock = asyncio.get_running_loop().time
        # A resume: new signalling (ReconnectResponse with fresh TURN credentials), an ICE
        # restart on both PeerConnections.
        after, start = len(far.events), clock()
        await far.command("simulate", scenario="SIMULATE_SIGNAL_RECONNECT")
        await far.wait("reconnected", after=after)
        resumed = clock() - start
        await media_and_data_flow(near, far, "resumed")
        flowing = clock() - start
        restarted = await on_the_path()
        assert not restarted & ufrags, "both ICE agents restarted"
        timings.record(f"turn/tcp ({via}): resume", "python sdk", reconnected=resumed,
                       media=flowing)  # fmt: skip
        # A full reconnect: a new session, new PeerConnections, new allocations.
        after, start = len(far.events), clock()
        await far.command("simulate", scenario="SIMULATE_FULL_RECONNECT")
        await far.wait("reconnected", after=after)
        reconnected = clock() - start
        await media_and_data_flow(near, far, "reconnected")
        flowing = clock() - start
        await on_the_path()
        timings.record(f"turn/tcp ({via}): full reconnect", "python sdk",
                       reconnected=reconnected, media=flowing)  # fmt: skip
