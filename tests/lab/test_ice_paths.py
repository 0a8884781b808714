"""Which path the official Python SDK takes to Roomcast, behind a firewall in the network lab,
and that audio, video and data flow both ways on it, also through a resume (ICE restart) and a
full reconnect (issue 15, 5a/5b/5f).

"near" runs in the root namespace next to the server; "far" in the lab's client network, where
the firewall is. Both publish a sine and a moving gradient and decode each other.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roomcast.media.ice_lite import TcpAddress
from roomcast.server import Server
from tests.integration.sdk import join_token
from tests.lab import timings
from tests.lab.conftest import ws_url
from tests.lab.netlab import NetworkLab
from tests.lab.peers import PeerProcess, Peers

FRAMES = {"video": 20, "audible": 20}  # decoded since the mark, per peer: media flows


async def join_pair(
    lab: NetworkLab, server: Server, peers: Peers, room: str
) -> tuple[PeerProcess, PeerProcess]:
    """near joins and publishes first, then far, whose join and first frames are timed."""
    url = ws_url(server)
    near = await peers.start("near", url, join_token(room, "near"))
    await near.wait("published")
    far = await peers.start("far", url, join_token(room, "far"), lab.host.command())
    await far.wait("published")
    return near, far


async def first_frames(peer: PeerProcess, sender: str) -> dict[str, float]:
    video = await peer.wait("first_frame", lambda e: e["kind"] == "video" and e["from"] == sender)
    audio = await peer.wait("first_frame", lambda e: e["kind"] == "audio" and e["from"] == sender)
    return {"first_video": video["t"], "first_audio": audio["t"]}


async def media_and_data_flow(near: PeerProcess, far: PeerProcess, tag: str) -> None:
    """From now on: decoded audio and video both ways, and a reliable message each way."""
    for peer in (near, far):
        await peer.command("mark")
    for peer in (near, far):
        await peer.command("frames", **FRAMES, within=25, timeout=30)
    for sender, receiver in ((near, far), (far, near)):
        payload = f"{tag} from {sender.name}"
        after = len(receiver.events)
        await sender.command("data", payload=payload)
        await receiver.wait("data", lambda e, p=payload: e["payload"] == p, after=after)


def path_of(stats: dict[str, Any]) -> set[tuple[str, int]]:
    """(protocol, server port) of the remote candidate each PeerConnection uses."""
    return {
        (pair["remote"]["protocol"], pair["remote"]["port"])
        for pair in stats["paths"].values()
        if pair and "remote" in pair
    }


def transports_of(server: Server, client_ip: str) -> dict[str, str]:
    """The server's transports that send to `client_ip`: ICE ufrag → "udp" or "tcp"."""
    found = {}
    for transport in server.mux._routes:
        address = transport.remote_address
        if isinstance(address, TcpAddress) and address.host == client_ip:
            found[transport.ice_ufrag] = "tcp"
        elif isinstance(address, tuple) and address[0] == client_ip:
            found[transport.ice_ufrag] = "udp"
    return found


async def check_path(server: Server, lab: NetworkLab, far: PeerProcess, protocol: str) -> None:
    port = server.mux.port if protocol == "udp" else server.mux.tcp_port
    stats = await far.command("stats")
    assert all(stats["paths"].get(pc) for pc in ("publisher", "subscriber")), stats["paths"]
    assert path_of(stats) == {(protocol, port)}, stats["paths"]
    for pair in stats["paths"].values():
        assert pair["remote"]["address"] == lab.server_ip and pair["remote"]["type"] == "HOST"
        if protocol == "tcp":
            assert pair["remote"]["tcp_type"] == "CANDIDATE_PASSIVE"
    assert set(transports_of(server, lab.host.seen_as).values()) == {protocol}


async def test_nothing_blocked_the_udp_host_candidate_is_used(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    near, far = await join_pair(lab, lab_server, peers, "open")
    joined = await far.wait("connected")
    times = await first_frames(far, "near")
    await media_and_data_flow(near, far, "open")
    await check_path(lab_server, lab, far, "udp")
    timings.record("udp (nothing blocked)", "python sdk", join=joined["join_s"], **times)


async def test_udp_blocked_the_python_sdk_connects_over_ice_tcp(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    lab.host.block_udp(lab.server_ip)  # every UDP port of the server: ICE-TCP is all there is
    near, far = await join_pair(lab, lab_server, peers, "tcp")
    joined = await far.wait("connected")
    times = await first_frames(far, "near")
    await media_and_data_flow(near, far, "tcp")
    await check_path(lab_server, lab, far, "tcp")
    timings.record("ice-tcp (udp blocked)", "python sdk", join=joined["join_s"], **times)


@pytest.mark.parametrize("blocked", ["nothing", "udp"])
async def test_resume_and_full_reconnect_stay_on_the_path(
    lab: NetworkLab, lab_server: Server, peers: Peers, blocked: str
) -> None:
    protocol = "udp" if blocked == "nothing" else "tcp"
    if blocked == "udp":
        lab.host.block_udp(lab.server_ip, lab_server.mux.port)  # only the media port
    near, far = await join_pair(lab, lab_server, peers, f"re-{protocol}")
    await far.wait("connected")
    await media_and_data_flow(near, far, "before")
    await check_path(lab_server, lab, far, protocol)
    clock = asyncio.get_running_loop().time
    ufrags = set(transports_of(lab_server, lab.host.seen_as))
    assert len(ufrags) == 2  # publisher and subscriber PeerConnections

    # A resume: a new signal connection, then an ICE restart on both PeerConnections (new
    # credentials on the same transports, docs/protocol/07-reconnect-ping-leave.md §7.2).
    after, start = len(far.events), clock()
    await far.command("simulate", scenario="SIMULATE_SIGNAL_RECONNECT")
    await far.wait("reconnected", after=after)
    resumed = clock() - start
    await media_and_data_flow(near, far, "resumed")
    flowing = clock() - start
    await check_path(lab_server, lab, far, protocol)
    restarted = set(transports_of(lab_server, lab.host.seen_as))
    assert len(restarted) == 2 and not restarted & ufrags, "both ICE agents restarted"
    timings.record(
        f"{protocol}: resume, ICE restart", "python sdk", reconnected=resumed, media=flowing
    )

    # A full reconnect: a new session, new transports, the tracks published again.
    after, start = len(far.events), clock()
    await far.command("simulate", scenario="SIMULATE_FULL_RECONNECT")
    await far.wait("reconnected", after=after)
    reconnected = clock() - start
    await media_and_data_flow(near, far, "reconnected")
    flowing = clock() - start
    await check_path(lab_server, lab, far, protocol)
    timings.record(
        f"{protocol}: full reconnect", "python sdk", reconnected=reconnected, media=flowing
    )


async def test_a_broken_ice_tcp_connection_is_recovered(
    lab: NetworkLab, lab_server: Server, peers: Peers
) -> None:
    """The server aborts the far client's TCP connections (as a NAT timeout or a middlebox
    reset would): libwebrtc dials again, nominates a new connection, which the server checks
    before it moves media there (media/ice_lite.py), and media and data flow again."""
    lab.host.block_udp(lab.server_ip)
    near, far = await join_pair(lab, lab_server, peers, "tcp-break")
    await far.wait("connected")
    await media_and_data_flow(near, far, "before")
    tcp = lab_server.mux.tcp
    assert tcp is not None
    clock = asyncio.get_running_loop().time
    start, accepted = clock(), tcp.stats["accepted"]
    for address, connection in list(tcp._connections.items()):
        if address.host == lab.host.seen_as:
            connection.abort()
    await media_and_data_flow(near, far, "after")
    recovered = clock() - start
    await check_path(lab_server, lab, far, "tcp")
    assert tcp.stats["accepted"] > accepted  # over new connections
    timings.record("tcp: connection reset", "python sdk", media=recovered)
