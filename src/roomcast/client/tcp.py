"""The client side of ICE over TCP: active connections to passive candidates (RFC 6544 §3).

`TcpDialer` stands in for a client peer's UDP socket: `sendto(data, addr)` sends one packet as an
RFC 4571 frame on the connection to `addr` (dialled on first use; packets sent while it connects
are dropped, and ICE retransmits its checks), and every frame received is handed to the peer's
`datagram_received(data, addr)` with `addr` the candidate's (ip, port). So the peer's ICE, DTLS
and SRTP do not know which wire they are on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from collections.abc import Callable

from roomcast.media.ice_lite import TcpAddress
from roomcast.media.tcp_framing import SendLimits
from roomcast.media.tcp_mux import FramedConnection

log = logging.getLogger(__name__)

Address = tuple[str, int]
DIAL_TIMEOUT = 5.0  # s


class TcpDialer:
    """One framed TCP connection per remote address, dialled on demand."""

    # SO_RCVBUF of new connections (None: the kernel's autotuning). Tests shrink it so that a
    # client that stops reading backs the server up within a second.
    receive_buffer: int | None = None

    def __init__(self, on_packet: Callable[[bytes, Address], None]) -> None:
        self.on_packet = on_packet
        self.stats: collections.Counter[str] = collections.Counter()
        self._limits = SendLimits()
        self._connections: dict[Address, FramedConnection] = {}
        self._dialling: dict[Address, asyncio.Task[None]] = {}
        self._closed = False

    def sendto(self, data: bytes, addr: Address) -> None:
        connection = self._connections.get(addr)
        if connection is not None and connection.open:
            connection.send(data, droppable=False)
            return
        self.stats["dropped_while_dialling"] += 1
        if addr not in self._dialling and not self._closed:
            self._dialling[addr] = asyncio.get_running_loop().create_task(self._dial(addr))

    async def _dial(self, addr: Address) -> None:
        loop = asyncio.get_running_loop()

        def deliver(data: bytes, _: TcpAddress) -> None:
            self.on_packet(data, addr)

        sock = socket.socket(socket.AF_INET6 if ":" in addr[0] else socket.AF_INET)
        sock.setblocking(False)
        try:
            if self.receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            await asyncio.wait_for(loop.sock_connect(sock, addr), DIAL_TIMEOUT)
            _, connection = await loop.create_connection(
                lambda: FramedConnection(deliver, self._limits, self.stats), sock=sock
            )
        except (OSError, TimeoutError) as exc:
            sock.close()
            self.stats["dial_failed"] += 1
            log.debug("ICE-TCP connection to %s:%d failed: %s", addr[0], addr[1], exc)
            return
        finally:
            self._dialling.pop(addr, None)
        if self._closed:
            connection.abort()
        else:
            self._connections[addr] = connection

    def pause_reading(self, paused: bool = True) -> None:
        """Stop (or resume) reading every connection, as a stalled client would."""
        for connection in self._connections.values():
            connection.pause_reading(paused)

    def close(self) -> None:
        self._closed = True
        for task in self._dialling.values():
            task.cancel()
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
