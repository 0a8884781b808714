"""ICE over TCP on loopback, without the network lab (tests/lab/ has the official SDKs and
Chromium behind a firewall): Roomcast's own client dials the passive TCP candidate
(`ClientPeer(ice_tcp=True)`) and gets DTLS, SRTP and SCTP over RFC 4571 frames, while an
official Python SDK publisher sends over UDP. A client that stops reading its connection loses
its own media, and nobody else's."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit import rtc
from livekit.protocol import models
from livekit.protocol import rtc as proto

from roomcast.client.peer import ClientPeer
from roomcast.client.tcp import TcpDialer
from roomcast.media.ice_lite import TcpAddress
from roomcast.media.transport import HOST_PRIORITY, TCP_PASSIVE_PRIORITY
from roomcast.server import Server
from tests.conftest import ServerFactory, url_of
from tests.integration.sctp_client import SctpParticipant
from tests.integration.sdk import join_token, joined, until
from tests.integration.test_media_python import publishing, subscribed_track


class TcpParticipant(SctpParticipant):
    """Roomcast's client with SCTP, on ICE-TCP only; it records what the server offers and
    trickles, and counts the RTP packets it decrypts per SSRC."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        super().__init__(session)
        self.peer = ClientPeer(ice_tcp=True)
        self.offers: list[str] = []
        self.trickled: list[str] = []
        self.rtp: collections.Counter[int] = collections.Counter()
        self.peer.on_rtp = lambda packet: self.rtp.update([int.from_bytes(packet[8:12], "big")])

    def _on_offer(self, offer: proto.SessionDescription) -> None:
        self.offers.append(offer.sdp)
        super()._on_offer(offer)

    def _on_trickle(self, candidate: str, target: int) -> None:
        self.trickled.append(candidate)
        super()._on_trickle(candidate, target)

    @property
    def dialer(self) -> TcpDialer:
        dialer = self.peer._udp
        assert isinstance(dialer, TcpDialer)
        return dialer

    def packets(self) -> int:
        return sum(self.rtp.values())


@contextlib.asynccontextmanager
async def tcp_participant(server: Server, room: str) -> AsyncIterator[TcpParticipant]:
    async with aiohttp.ClientSession() as session:
        client = TcpParticipant(session)
        await client.join(url_of(server, "ws"), join_token(room, "tcp-client"))
        try:
            yield client
        finally:
            await client.close()


def data_payloads(client: TcpParticipant) -> list[bytes]:
    packets = []
    for label, message in client.messages:
        if label == "_reliable":
            packet = models.DataPacket()
            packet.ParseFromString(message)
            packets.append(packet.user.payload)
    return packets


async def test_roomcast_client_gets_media_and_data_over_ice_tcp(server: Server) -> None:
    assert server.mux.tcp_port
    async with (
        joined(server, "ice-tcp", "talker") as (talker, _),
        publishing(talker),
        tcp_participant(server, "ice-tcp") as client,
    ):
        # The server offered a UDP and a passive TCP host candidate, UDP first and preferred,
        # in the SDP and trickled (the last one marked final).
        tcp_candidate = (
            f"candidate:2 1 tcp {TCP_PASSIVE_PRIORITY} 127.0.0.1 {server.mux.tcp_port} typ host"
            " tcptype passive generation 0"
        )
        udp_candidate = (
            f"candidate:1 1 udp {HOST_PRIORITY} 127.0.0.1 {server.mux.port} typ host generation 0"
        )
        assert f"a={tcp_candidate}" in client.offers[0]
        assert client.offers[0].index(udp_candidate) < client.offers[0].index(tcp_candidate)
        assert client.trickled[:2] == [udp_candidate, tcp_candidate]
        assert HOST_PRIORITY > TCP_PASSIVE_PRIORITY == 1671430143

        # Connected over TCP (DTLS done, SCTP up: join() waited for both); the server sends to
        # the connection. (The SDK's libwebrtc dials the TCP candidate too, as one of its ICE
        # checks, but sends over UDP, the pair of higher priority.)
        over_tcp = [t for t in server.mux._routes if isinstance(t.remote_address, TcpAddress)]
        assert len(over_tcp) == 1 and over_tcp[0].state == "connected"

        # Audio and video (two SSRCs) and reliable data arrive over it.
        await until(lambda: len(client.rtp) >= 2 and min(client.rtp.values()) >= 20)
        await talker.local_participant.publish_data(b"over tcp", reliable=True)
        await until(lambda: b"over tcp" in data_payloads(client))


async def test_a_stalled_ice_tcp_reader_loses_its_own_media_and_no_one_elses(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: Server = await start_server()
    # A small receive window on the client: once it stops reading, the server's queue for it
    # fills within seconds instead of after the kernel's autotuned megabytes.
    monkeypatch.setattr(TcpDialer, "receive_buffer", 4096)
    async with (
        joined(server, "stall", "talker") as (talker, _),
        publishing(talker),
        joined(server, "stall", "watcher") as (_, watcher_events),
        tcp_participant(server, "stall") as client,
    ):
        await until(lambda: client.packets() >= 50)
        video = await subscribed_track(watcher_events, rtc.TrackKind.KIND_VIDEO, "talker")
        frames = 0

        async def count_frames() -> None:
            nonlocal frames
            async for _ in rtc.VideoStream(video):
                frames += 1

        counting = asyncio.create_task(count_frames())
        try:
            await until(lambda: frames >= 5)
            tcp = server.mux.tcp
            assert tcp is not None
            client.dialer.pause_reading()  # the client's socket fills, then ours
            await until(lambda: tcp.stats["media_dropped"] >= 100)
            # Meanwhile the watcher on UDP keeps decoding: nobody waits for the slow reader.
            seen = frames
            await until(lambda: frames >= seen + 30, timeout=10)
            assert tcp.stats["closed_slow_reader"] == 0  # RTP is dropped; the path stays up
            # Reading again, the client gets media again on the same connection.
            client.dialer.pause_reading(False)
            received = client.packets()
            await until(lambda: client.packets() >= received + 50)
            assert client.dialer.stats["dial_failed"] == 0  # the same connection throughout
        finally:
            counting.cancel()
