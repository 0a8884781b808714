"""The sockets of the embedded TURN server: its client-facing ports (UDP, and TCP or TLS
connections) and the relay sockets of the relay range. They hand what they read to
`core.TurnCore` / `allocation.Allocation` and send what those decide; no protocol logic here.

Relay sockets are real UDP sockets bound to ports of `turn.relay_range_start`-`relay_range_end`
(as coturn and livekit-server's TURN allocate them), each sending only to the node's media
socket: the media plane sees a relayed client as one more UDP source address and answers it
through the kernel, knowing nothing of TURN. They are read with `loop.add_reader`, several
datagrams per wake-up, without an asyncio transport in between.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import logging
import random
import socket
from typing import cast

from roomcast.media.tcp_framing import SendLimits, Verdict

from .allocation import Allocation
from .core import TurnCore
from .wire import Address, StreamDecoder, is_channel_data

log = logging.getLogger(__name__)

BIND_ATTEMPTS = 50  # relay ports tried per allocation before 508 (livekit-server's retries)
READS_PER_WAKEUP = 64  # datagrams read from one relay socket before yielding to others
RELAY_SOCKET_BUFFER = 512 * 1024
CLIENT_SOCKET_BUFFER = 4 * 1024 * 1024  # the TURN UDP port carries every relayed client
ALLOCATE_TIMEOUT = 30.0  # s a TCP/TLS connection may stay without an allocation
MAX_CONNECTIONS = 4096  # TCP and TLS connections of one port
MAX_UNALLOCATED = 256  # of which without an allocation (yet)
SOCKET_SEND_BUFFER = 64 * 1024  # as the ICE-TCP port: a slow reader's backlog reaches SendLimits


class RelaySocket:
    """One allocation's relayed transport address."""

    __slots__ = ("_allocation", "_loop", "_sock", "port", "stats")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        allocation: Allocation,
        stats: collections.Counter[str],
    ) -> None:
        self._loop = loop
        self._sock: socket.socket | None = sock
        self._allocation = allocation
        self.port: int = sock.getsockname()[1]
        self.stats = stats
        loop.add_reader(sock.fileno(), self._readable)

    def send(self, data: bytes, addr: Address) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.stats["relay_send_full"] += 1  # UDP: lost, as on a congested link
        except OSError:
            self.stats["relay_send_error"] += 1

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        allocation = self._allocation
        now = self._loop.time()
        for _ in range(READS_PER_WAKEUP):
            try:
                data, source = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error queued on the socket (ECONNREFUSED, ...)
                self.stats["relay_receive_error"] += 1
                return
            allocation.from_peer(data, source, now)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()


class RelayPool:
    """Relay sockets on `host`, ports `low`-`high` (`core.RelayPorts`)."""

    def __init__(self, host: str, low: int, high: int) -> None:
        self.host = host
        self.low, self.high = low, high
        self.stats: collections.Counter[str] = collections.Counter()

    def open(self, allocation: Allocation) -> RelaySocket | None:
        loop = asyncio.get_running_loop()
        span = self.high - self.low + 1
        first = random.randrange(span)
        for attempt in range(min(span, BIND_ATTEMPTS)):
            port = self.low + (first + attempt) % span
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                                 socket.SOCK_DGRAM)  # fmt: skip
            try:
                sock.setblocking(False)
                sock.bind((self.host, port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                log.warning("TURN relay socket on %s:%d: %s", self.host, port, exc)
                return None
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, RELAY_SOCKET_BUFFER)
            return RelaySocket(loop, sock, allocation, self.stats)
        return None


class UdpLink:
    """A client on the TURN UDP port: its source address (`allocation.ClientLink`)."""

    __slots__ = ("_port", "address", "allocation")
    stream = False
    protocol = "udp"

    def __init__(self, port: TurnUdpPort, address: Address) -> None:
        self._port = port
        self.address = address
        self.allocation: Allocation | None = None

    def send(self, data: bytes, *, droppable: bool) -> None:
        udp = self._port.udp
        if udp is not None:
            udp.sendto(data, self.address)


class TurnUdpPort(asyncio.DatagramProtocol):
    """The TURN UDP port: one link per client address that holds an allocation."""

    def __init__(self, core: TurnCore) -> None:
        self.core = core
        self.udp: asyncio.DatagramTransport | None = None
        self._links: dict[Address, UdpLink] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._loop = asyncio.get_running_loop()
        self.udp = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, CLIENT_SOCKET_BUFFER)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        link = self._links.get(addr)
        loop = self._loop
        if loop is None:
            return
        try:
            if link is not None:
                self.core.receive(data, link, loop.time())
                return
            if not data or is_channel_data(data[0]):  # no allocation: nothing to relay
                self.core.totals.dropped += 1
                return
            link = UdpLink(self, addr[:2])
            self.core.receive(data, link, loop.time())
            if link.allocation is not None:
                self._links[addr] = link
        except Exception:  # a bug must not close the port for everyone
            self.core.stats["errors"] += 1
            log.exception("TURN: error handling a datagram from %s", addr)

    def prune(self) -> None:
        """Forget clients whose allocation ended."""
        for addr in [a for a, link in self._links.items() if link.allocation is None]:
            del self._links[addr]

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None


class StreamLink(asyncio.Protocol):
    """One TCP or TLS connection to a TURN port (`allocation.ClientLink`)."""

    stream = True

    def __init__(self, listener: TurnStreamPort) -> None:
        self._listener = listener
        self.protocol = listener.name  # "tcp" or "tls"
        self._decoder = StreamDecoder()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.address: Address = ("", 0)
        self.allocation: Allocation | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        self.address = transport.get_extra_info("peername")[:2]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
        if not self._listener.admit(self):
            transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(ALLOCATE_TIMEOUT, self._idle)

    def data_received(self, data: bytes) -> None:
        core = self._listener.core
        try:
            messages = self._decoder.feed(data)
        except ValueError:
            core.stats["stream_garbage"] += 1
            self.abort()
            return
        now = self._listener.loop.time()
        try:
            for message in messages:
                core.receive(message, self, now)
        except Exception:  # a bug: this connection goes, the port stays
            core.stats["errors"] += 1
            log.exception("TURN: error handling a message from %s", self.address)
            self.abort()
            return
        if self._timer is not None and self.allocation is not None:
            self._timer.cancel()
            self._timer = None
            self._listener.allocated(self)

    def send(self, data: bytes, *, droppable: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        verdict = self._listener.limits.verdict(
            transport.get_write_buffer_size(), len(data), droppable=droppable
        )
        if verdict is Verdict.SEND:
            transport.write(data)
        elif verdict is Verdict.DROP:
            self._listener.core.stats["stream_media_dropped"] += 1
        else:
            self._listener.core.stats["stream_slow_reader"] += 1
            self.abort()

    def _idle(self) -> None:
        self._timer = None
        if self.allocation is None:
            self._listener.core.stats["stream_idle"] += 1
            self.abort()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._listener.forget(self)
        self._listener.core.link_closed(self)


class TurnStreamPort:
    """A TURN TCP port, or a TLS one (`ssl` set), and its connections."""

    def __init__(self, core: TurnCore, name: str) -> None:
        self.core = core
        self.name = name  # "tcp" or "tls", for stats
        self.limits = SendLimits()
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()
        self.connections: set[StreamLink] = set()
        self._unallocated: set[StreamLink] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, ssl_context: object | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self._server = await self.loop.create_server(
            lambda: StreamLink(self),
            host,
            port,
            reuse_address=True,
            ssl=ssl_context,  # type: ignore[arg-type]
            ssl_handshake_timeout=10.0 if ssl_context is not None else None,
        )

    def admit(self, link: StreamLink) -> bool:
        if self._server is None:
            return False
        if len(self.connections) >= MAX_CONNECTIONS or len(self._unallocated) >= MAX_UNALLOCATED:
            self.core.on_limit("turn_connections")
            return False
        self.connections.add(link)
        self._unallocated.add(link)
        return True

    def allocated(self, link: StreamLink) -> None:
        self._unallocated.discard(link)

    def forget(self, link: StreamLink) -> None:
        self.connections.discard(link)
        self._unallocated.discard(link)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.connections):
            link.abort()
