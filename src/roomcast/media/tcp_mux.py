"""The ICE-TCP port (`rtc.tcp_port`): passive TCP host candidates (RFC 6544) on the same
ICE-lite, DTLS and SRTP stack as the UDP port.

Each accepted connection is one remote address, an `ice_lite.TcpAddress`. Its RFC 4571 frames
(`tcp_framing`) go to the node's packet routing exactly as UDP datagrams do
(`udp_mux.UdpMux.datagram_received`), and what the transports send to that address goes back
as frames on the connection. The first frame must be a Binding request that authenticates for
one of our transports, after which the routing knows the address; a connection whose first
frame does not, or that sends nothing for FIRST_FRAME_TIMEOUT, is closed, so unauthenticated
connections cost a bounded amount (MAX_UNROUTED at a time).

Sending never blocks: each connection queues what the socket does not take yet, bounded by
`tcp_framing.SendLimits` (RTP/RTCP dropped behind a slow reader, the connection closed when a
DTLS record no longer fits), so one slow reader stalls no one else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

from .ice_lite import Address, TcpAddress
from .tcp_framing import FrameDecoder, SendLimits, Verdict, frame

logger = logging.getLogger(__name__)

FIRST_FRAME_TIMEOUT = 10.0  # s a new connection gets to send its first, authenticated check
MAX_UNROUTED = 128  # connections waiting for their first check; more are refused
MAX_CONNECTIONS = 8192  # all connections of the port
# The kernel's part of each send queue: bounded, so a slow reader's backlog reaches our own
# queue, where SendLimits applies, within about a second even on a slow link.
SOCKET_SEND_BUFFER = 64 * 1024  # Linux doubles it: 128 KiB, 10 Mbit/s at 100 ms RTT


class PacketRouting(Protocol):
    """What the listener needs from the node's routing (`udp_mux.UdpMux`)."""

    def datagram_received(self, data: bytes, addr: Address) -> None: ...

    def routes_address(self, addr: Address) -> bool: ...

    def tcp_closed(self, addr: TcpAddress) -> None: ...


class FramedConnection(asyncio.Protocol):
    """One ICE-TCP connection, either side: RFC 4571 frames in (to `on_packet`) and out (under
    `SendLimits`). `stats` counts what the limits did."""

    def __init__(
        self,
        on_packet: Callable[[bytes, TcpAddress], None],
        limits: SendLimits,
        stats: collections.Counter[str],
    ) -> None:
        self.address: TcpAddress | None = None
        self.on_packet = on_packet
        self.stats = stats
        self._limits = limits
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, so no isinstance).
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.address = TcpAddress(peer[0], peer[1])
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                # Media must not wait for Nagle's algorithm to fill a segment.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)

    def data_received(self, data: bytes) -> None:
        address = self.address
        if address is None:
            return
        for packet in self._decoder.feed(data):
            self.on_packet(packet, address)  # looked up each time: the first frame changes it

    def send(self, data: bytes, *, droppable: bool) -> None:
        """Queue one packet as a frame. `droppable`: RTP/RTCP, which a slow reader loses."""
        transport = self._transport
        if transport is None or transport.is_closing():
            self.stats["sent_after_close"] += 1
            return
        try:
            framed = frame(data)
        except ValueError:
            self.stats["oversize"] += 1
            return
        verdict = self._limits.verdict(
            transport.get_write_buffer_size(), len(framed), droppable=droppable
        )
        if verdict is Verdict.SEND:
            transport.write(framed)
        elif verdict is Verdict.DROP:
            self.stats["media_dropped"] += 1
        else:
            self.stats["closed_slow_reader"] += 1
            logger.info("ICE-TCP %s reads too slowly for its DTLS: closing it", address_of(self))
            transport.abort()  # what is queued is stale by now

    def pause_reading(self, paused: bool = True) -> None:
        """Stop (or resume) reading the socket: what a stalled peer does (tests, benches)."""
        if self._transport is not None:
            if paused:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def close(self) -> None:
        """Close after what is queued has been written (a DTLS close_notify, say)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def address_of(connection: FramedConnection) -> str:
    return str(connection.address) if connection.address is not None else "tcp:?"


class _Accepted(FramedConnection):
    """A connection to the listener: gated on its first frame, then routed like UDP."""

    def __init__(self, listener: IceTcpListener) -> None:
        super().__init__(self._first_packet, listener.limits, listener.stats)
        self._listener = listener
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._listener.admit(self):
            self.abort()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(FIRST_FRAME_TIMEOUT, self._first_frame_timeout)

    def _first_packet(self, data: bytes, addr: TcpAddress) -> None:
        """Only for the first frame; routed connections hand theirs straight to the mux."""
        routing = self._listener.routing
        routing.datagram_received(data, addr)
        if not routing.routes_address(addr):
            self.stats["unauthenticated"] += 1
            self.on_packet = _discard
            self.close()  # after the answer to a failed check, if there is one
            return
        self._cancel_timer()
        self.on_packet = routing.datagram_received
        self._listener.routed(self)

    def _first_frame_timeout(self) -> None:
        self._timer = None
        self.stats["first_frame_timeout"] += 1
        self.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._cancel_timer()
        self._listener.forget(self)


def _discard(data: bytes, addr: TcpAddress) -> None:
    """Frames of a connection that is closing."""


class IceTcpPortError(OSError):
    """The ICE-TCP port cannot be bound (the UDP port could)."""


class IceTcpListener:
    """The listening socket of the ICE-TCP port and its connections, by remote address."""

    def __init__(
        self,
        routing: PacketRouting,
        host: str,
        port: int,
        *,
        limits: SendLimits | None = None,
    ) -> None:
        self.routing = routing
        self.host = host
        self.port = port
        self.limits = limits or SendLimits()
        self.stats: collections.Counter[str] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._connections: dict[TcpAddress, FramedConnection] = {}
        self._unrouted: set[FramedConnection] = set()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _Accepted(self), self.host, self.port, reuse_address=True
            )
        except OSError as exc:  # name the key: "address in use" alone does not say which
            raise IceTcpPortError(
                exc.errno, f"ICE-TCP port (rtc.tcp_port) {self.host}:{self.port}: {exc.strerror}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("media ICE-TCP port listening on %s:%d", self.host, self.port)

    def send(self, data: bytes, addr: TcpAddress, *, droppable: bool) -> None:
        connection = self._connections.get(addr)
        if connection is None:
            self.stats["no_connection"] += 1  # it closed; the transport learns from ICE
            return
        connection.send(data, droppable=droppable)

    def close_connection(self, addr: TcpAddress) -> None:
        """Close the connection from `addr` once its queue is written (its transport closed)."""
        connection = self._connections.get(addr)
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections.values()):
            connection.abort()
        self._connections.clear()
        self._unrouted.clear()

    # -- called by the connections --

    def admit(self, connection: FramedConnection) -> bool:
        """A new connection: False when there is no room for it (it is aborted)."""
        if self._server is None or connection.address is None:
            return False
        if len(self._unrouted) >= MAX_UNROUTED or len(self._connections) >= MAX_CONNECTIONS:
            self.stats["refused"] += 1
            return False
        self._connections[connection.address] = connection
        self._unrouted.add(connection)
        self.stats["accepted"] += 1
        return True

    def routed(self, connection: FramedConnection) -> None:
        self._unrouted.discard(connection)

    def forget(self, connection: FramedConnection) -> None:
        self._unrouted.discard(connection)
        addr = connection.address
        if addr is not None and self._connections.get(addr) is connection:
            del self._connections[addr]
            self.routing.tcp_closed(addr)
