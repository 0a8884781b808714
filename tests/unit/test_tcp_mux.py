"""The ICE-TCP listener (media/tcp_mux.py) on loopback, in front of a fake packet routing: the
first-frame gate, frames both ways, and the bounded send queue of a reader that stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from roomcast.media import tcp_mux
from roomcast.media.ice_lite import Address, TcpAddress
from roomcast.media.tcp_framing import FrameDecoder, SendLimits, frame
from roomcast.media.tcp_mux import IceTcpListener
from roomcast.media.transport import HOST_PRIORITY, TCP_PASSIVE_PRIORITY
from roomcast.media.udp_mux import UdpMux

AUTHENTIC = b"\x00\x01 a check that authenticates"  # what the fake routing accepts


class FakeRouting:
    """Routes an address once a frame equal to AUTHENTIC came from it, as the mux does after an
    authenticated Binding request."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address]] = []
        self.routed: set[Address] = set()
        self.closed: list[TcpAddress] = []
        self.changed = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.received.append((data, addr))
        if data == AUTHENTIC:
            self.routed.add(addr)
        self.changed.set()

    def routes_address(self, addr: Address) -> bool:
        return addr in self.routed

    def tcp_closed(self, addr: TcpAddress) -> None:
        self.closed.append(addr)
        self.changed.set()

    async def until(self, condition: object) -> None:
        assert callable(condition)
        while not condition():
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 5)


class Client:
    """A client end: sends frames, collects the frames it reads until EOF."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.address = TcpAddress(*writer.get_extra_info("sockname")[:2])
        self._decoder = FrameDecoder()

    def send(self, *packets: bytes) -> None:
        self.writer.write(b"".join(frame(p) for p in packets))

    async def read_frames(self, count: int) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < count:
            data = await asyncio.wait_for(self.reader.read(65536), 5)
            assert data, "closed"
            out += self._decoder.feed(data)
        return out

    async def closed_by_server(self) -> bool:
        while True:
            try:
                data = await asyncio.wait_for(self.reader.read(65536), 5)
            except ConnectionResetError:
                return True
            if not data:
                return True


Listener = tuple[IceTcpListener, FakeRouting]


@contextlib.asynccontextmanager
async def listening() -> AsyncIterator[Listener]:
    routing = FakeRouting()
    tcp = IceTcpListener(routing, "127.0.0.1", 0, limits=SendLimits(64 * 1024, 256 * 1024))
    await tcp.start()
    try:
        yield tcp, routing
    finally:
        await tcp.close()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with listening() as started:
        yield started


async def connect(tcp: IceTcpListener) -> Client:
    return Client(*await asyncio.open_connection("127.0.0.1", tcp.port))


async def test_an_authenticated_connection_carries_frames_both_ways(
    listener: Listener,
) -> None:
    tcp, routing = listener
    client = await connect(tcp)
    client.send(AUTHENTIC, b"dtls", b"", b"x" * 65535)
    await routing.until(lambda: len(routing.received) == 4)
    assert routing.received == [
        (AUTHENTIC, client.address),
        (b"dtls", client.address),
        (b"", client.address),
        (b"x" * 65535, client.address),
    ]
    tcp.send(b"answer", client.address, droppable=False)
    tcp.send(b"rtp", client.address, droppable=True)
    assert await client.read_frames(2) == [b"answer", b"rtp"]
    client.writer.close()
    await routing.until(lambda: routing.closed == [client.address])
    assert tcp.connection_count == 0


async def test_a_first_frame_that_does_not_authenticate_closes_the_connection(
    listener: Listener,
) -> None:
    tcp, routing = listener
    client = await connect(tcp)
    client.send(b"\x16 DTLS before any check", AUTHENTIC)
    assert await client.closed_by_server()
    assert routing.received == [(b"\x16 DTLS before any check", client.address)]
    assert tcp.stats["unauthenticated"] == 1 and tcp.connection_count == 0
    assert routing.closed == [client.address]


async def test_silent_and_surplus_connections_are_closed(
    listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    tcp, _ = listener
    monkeypatch.setattr(tcp_mux, "FIRST_FRAME_TIMEOUT", 0.05)
    monkeypatch.setattr(tcp_mux, "MAX_UNROUTED", 1)
    silent = await connect(tcp)
    surplus = await connect(tcp)  # while the first still waits for its first frame
    assert await surplus.closed_by_server()
    assert await silent.closed_by_server()
    assert tcp.stats["refused"] == 1 and tcp.stats["first_frame_timeout"] == 1


async def test_a_reader_that_stopped_loses_media_then_the_connection_not_the_others(
    listener: Listener,
) -> None:
    tcp, routing = listener
    stalled, healthy = await connect(tcp), await connect(tcp)
    stalled.send(AUTHENTIC)
    healthy.send(AUTHENTIC)
    await routing.until(lambda: len(routing.routed) == 2)
    stalled.writer.transport.pause_reading()  # type: ignore[attr-defined]
    packet = b"m" * 1200
    for _ in range(2000):  # 2.4 MB of RTP: far more than the kernel buffers hold
        tcp.send(packet, stalled.address, droppable=True)
    assert tcp.stats["media_dropped"] > 0
    assert tcp.stats["closed_slow_reader"] == 0  # dropping media never closes
    tcp.send(b"for the healthy one", healthy.address, droppable=False)
    assert await healthy.read_frames(1) == [b"for the healthy one"]
    # DTLS records are queued past the media limit, up to the reliable one: then it closes.
    sent = 0
    while tcp.stats["closed_slow_reader"] == 0:
        tcp.send(packet, stalled.address, droppable=False)
        sent += 1
        assert sent < 1000
    assert sent * len(packet) > 256 * 1024 - 64 * 1024 - len(packet)
    await routing.until(lambda: stalled.address in routing.closed)
    tcp.send(b"still here", healthy.address, droppable=True)
    assert await healthy.read_frames(1) == [b"still here"]


async def test_transports_offer_a_passive_tcp_candidate_only_with_an_ice_tcp_port() -> None:
    without = UdpMux("127.0.0.1", 0)
    assert without.tcp is None and without.tcp_port == 0
    (udp,) = without.create_transport().local_candidates()
    assert udp.startswith(f"candidate:1 1 udp {HOST_PRIORITY} 127.0.0.1 ")
    await without.close()

    mux = UdpMux("127.0.0.1", 0, tcp_port=0)
    await mux.start()
    try:
        udp, tcp = mux.create_transport().local_candidates()
        assert (
            udp == f"candidate:1 1 udp {HOST_PRIORITY} 127.0.0.1 {mux.port} typ host generation 0"
        )
        assert tcp == (
            f"candidate:2 1 tcp {TCP_PASSIVE_PRIORITY} 127.0.0.1 {mux.tcp_port} typ host"
            " tcptype passive generation 0"
        )
        assert mux.tcp_port and TCP_PASSIVE_PRIORITY < HOST_PRIORITY
    finally:
        await mux.close()
    assert mux.tcp is not None and mux.tcp.connection_count == 0


@pytest.mark.parametrize(
    "scenario",
    [
        test_an_authenticated_connection_carries_frames_both_ways,
        test_a_first_frame_that_does_not_authenticate_closes_the_connection,
        test_a_reader_that_stopped_loses_media_then_the_connection_not_the_others,
    ],
)
def test_the_same_on_uvloop(scenario: Callable[[Listener], Awaitable[None]]) -> None:
    """`roomcast serve` runs on uvloop, whose transports are not asyncio's classes."""

    async def run() -> None:
        async with listening() as started:
            await scenario(started)

    uvloop.run(run())
