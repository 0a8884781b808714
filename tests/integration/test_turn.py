"""The embedded TURN server on loopback, without the network lab (tests/lab/test_turn_paths.py
and test_browser_turn.py put the official SDK and Chromium behind a firewall):

- official Python SDK participants told to use relays only (`TRANSPORT_RELAY`) exchange audio,
  video and data through it, with the credentials of their JoinResponse;
- Roomcast's own client reaches it over TCP and over TLS (a self-signed certificate it is told
  to trust: the Python SDK's libwebrtc trusts only its built-in roots) and gets media and data;
- it relays to the media port only (403, counted), applies its quota, and a taken TURN port
  stops the start naming the key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioice import stun
from aioice.turn import TurnTransport, create_turn_endpoint
from livekit import rtc
from livekit.protocol import models

from roomcast.client.peer import ClientPeer
from roomcast.edge.ports import BindError
from roomcast.server import Server
from roomcast.turn.ice_servers import ice_servers
from tests.certificates import self_signed_certificate
from tests.conftest import ServerFactory, free_port, free_udp_and_tcp_port, url_of
from tests.integration.sctp_client import SctpParticipant
from tests.integration.sdk import join_token, joined, until
from tests.integration.test_media_python import (
    publishing,
    sine_energy,
    subscribed_track,
    video_frame_size,
)

RELAY_ONLY = rtc.RoomOptions(
    rtc_config=rtc.RtcConfiguration(ice_transport_type=rtc.IceTransportType.TRANSPORT_RELAY)
)


async def start_turn_server(
    start_server: ServerFactory, directory: Path, extra: str = ""
) -> Server:
    cert, key = self_signed_certificate(directory, "127.0.0.1")
    server: Server = await start_server(
        f"turn:\n  enabled: true\n  domain: 127.0.0.1\n  udp_port: {free_udp_and_tcp_port()}\n"
        f"  tls_port: {free_port()}\n  cert_file: {cert}\n  key_file: {key}\n{extra}"
    )
    return server


async def test_relay_only_sdk_participants_exchange_media_and_data_through_turn(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = await start_turn_server(start_server, tmp_path)
    async with (
        joined(server, "relayed", "talker", options=RELAY_ONLY) as (talker, _),
        publishing(talker),
        joined(server, "relayed", "listener", options=RELAY_ONLY) as (listener, events),
    ):
        audio = await subscribed_track(events, rtc.TrackKind.KIND_AUDIO, "talker")
        video = await subscribed_track(events, rtc.TrackKind.KIND_VIDEO, "talker")
        assert await sine_energy(audio, frames=50) > 1000
        assert await video_frame_size(video) == (320, 240)
        await talker.local_participant.publish_data(b"relayed", reliable=True)
        packet = await events.wait("data_received")
        assert packet[0].data == b"relayed"
        await listener.local_participant.publish_data(b"back", reliable=True)
        # Every transport of the room receives from a relayed address of ours.
        assert server.turn is not None
        relayed = {a.relayed_address for a in server.turn.core.allocations}
        routed = {t.remote_address for t in server.mux._routes}
        assert len(routed) == 4 and routed <= relayed, (routed, relayed)


class RelayedPeer(ClientPeer):
    """Roomcast's client whose one "socket" is a TURN allocation (aioice's TURN client): its
    ICE, DTLS and SRTP go through the relay, which reaches the server's media port."""

    def __init__(self, server: tuple[str, int], credentials: tuple[str, str], **turn: Any):
        super().__init__()
        self._turn_server, self._credentials, self._turn = server, credentials, turn

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        relay, _ = await create_turn_endpoint(
            lambda: self, self._turn_server, *self._credentials, **self._turn
        )
        self._udp = relay
        self.advertise_ip, self.port = relay.get_extra_info("sockname")


@contextlib.asynccontextmanager
async def relayed_participant(
    server: Server, room: str, transport: str
) -> AsyncIterator[SctpParticipant]:
    servers = ice_servers(server.config, "PA_relayedclient")
    credentials = (servers[0].username, servers[0].credential)
    turn = server.config.turn
    if transport == "tls":
        trust = ssl.create_default_context(cafile=turn.cert_file)
        options: dict[str, Any] = {"transport": "tcp", "ssl": trust}
        address = ("127.0.0.1", turn.tls_port)
    else:
        options, address = {"transport": transport}, ("127.0.0.1", turn.udp_port)
    async with aiohttp.ClientSession() as session:
        client = SctpParticipant(session)
        client.peer = RelayedPeer(address, credentials, **options)
        rtp: collections.Counter[int] = collections.Counter()
        client.peer.on_rtp = lambda packet: rtp.update([int.from_bytes(packet[8:12], "big")])
        client.rtp = rtp  # type: ignore[attr-defined]
        await client.join(url_of(server, "ws"), join_token(room, f"client-{transport}"))
        try:
            yield client
        finally:
            await client.close()


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_roomcast_client_gets_media_and_data_over_turn_tcp_and_tls(
    start_server: ServerFactory, tmp_path: Path, transport: str
) -> None:
    server = await start_turn_server(start_server, tmp_path)
    room = f"over-{transport}"
    async with (
        joined(server, room, "talker") as (talker, _),
        publishing(talker),
        relayed_participant(server, room, transport) as client,
    ):
        rtp = client.rtp  # type: ignore[attr-defined]
        await until(lambda: len(rtp) >= 2 and min(rtp.values()) >= 20)  # audio and video
        await talker.local_participant.publish_data(b"through the relay", reliable=True)

        def delivered() -> bool:
            for label, message in client.messages:
                if label == "_reliable":
                    packet = models.DataPacket()
                    packet.ParseFromString(message)
                    if packet.user.payload == b"through the relay":
                        return True
            return False

        await until(delivered)
        assert server.turn is not None
        ours = [a.link for a in server.turn.core.allocations if a.user == "PA_relayedclient"]
        assert [getattr(link, "protocol", "") for link in ours] == [transport]
        # The JoinResponse named this TURN server, with a credential of the participant's own.
        join = client.signal.join
        assert join is not None and join.ice_servers[0].username.split(":")[1].startswith("PA_")
        assert f"turns:127.0.0.1:{server.config.turn.tls_port}?transport=tcp" in list(
            join.ice_servers[0].urls
        )


class Errors(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.errors: asyncio.Queue[Exception] = asyncio.Queue()

    def error_received(self, exc: Exception) -> None:
        self.errors.put_nowait(exc)


async def test_the_relay_reaches_the_media_port_and_nothing_else(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = await start_turn_server(start_server, tmp_path)
    turn = server.config.turn
    servers = ice_servers(server.config, "PA_prober")
    relay: TurnTransport
    relay, protocol = await create_turn_endpoint(
        Errors, ("127.0.0.1", turn.udp_port), servers[0].username, servers[0].credential
    )
    try:
        for peer in (("127.0.0.1", server.port), ("192.0.2.1", server.mux.port)):
            relay.sendto(b"\x00\x01", peer)  # a channel to it is refused: 403
            error = await asyncio.wait_for(protocol.errors.get(), 5)
            assert isinstance(error, stun.TransactionFailed), error
            assert error.response.error_code == 403
        hits = server.metrics.limit_hits.labels("turn_peer_refused")._value.get()
        assert hits == 2
        relay.sendto(b"\x00\x01\x00\x00" + bytes(16), ("127.0.0.1", server.mux.port))
        assert server.turn is not None
        await until(lambda: server.turn is not None and server.turn.core.totals.to_peer_packets > 0)
        assert protocol.errors.empty()
    finally:
        relay.close()


async def test_a_participant_holds_at_most_its_quota_of_allocations(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    server = await start_turn_server(
        start_server, tmp_path, "  per_user_relay_allocation_limit: 2\n"
    )
    port = server.config.turn.udp_port
    servers = ice_servers(server.config, "PA_greedy")
    relays = []
    try:
        for _ in range(2):
            relay, _ = await create_turn_endpoint(
                Errors, ("127.0.0.1", port), servers[0].username, servers[0].credential
            )
            relays.append(relay)
        with pytest.raises(stun.TransactionFailed, match="486"):
            await create_turn_endpoint(
                Errors, ("127.0.0.1", port), servers[0].username, servers[0].credential
            )
        assert server.metrics.limit_hits.labels("turn_allocations_per_user")._value.get() == 1
    finally:
        for relay in relays:
            relay.close()


async def test_a_taken_turn_port_stops_the_start_naming_the_key(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match=rf"UDP port {port} .*turn\.udp_port"):
            await start_server(f"turn:\n  enabled: true\n  udp_port: {port}\n")
