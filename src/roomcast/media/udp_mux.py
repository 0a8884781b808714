"""The one UDP socket every `PeerTransport` shares, and the routing of its datagrams.

The ICE-TCP port (`tcp_mux.IceTcpListener`, when `tcp_port` is set) feeds its connections'
frames to the same routing, each connection one `ice_lite.TcpAddress`: everything above sees
datagrams and an address, whichever the wire.

Per datagram, the first byte picks the protocol (RFC 7983 §7, `demux.py`). STUN finds its
transport by our ufrag in USERNAME (Binding responses to a transport's own checks: by source
address); everything else by the source address, which is learnt on the first *authenticated*
Binding request — not on USE-CANDIDATE, because libwebrtc sends DTLS (and even SCTP) before
nominating (docs/protocol/15-interop-findings.md §2 ICE). Receiving from an address is not
sending to it: each transport sends to one address, chosen by `ice_lite.IceLiteAgent`.
"""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from aioice import stun

from .demux import FIRST_BYTE, PacketClass
from .dtls import DtlsCertificate
from .ice_lite import Address, TcpAddress
from .secure_channel import TransportState
from .stun import PWD_LENGTH, UFRAG_LENGTH, local_ufrag_of, parse_stun, random_ice_string
from .tcp_mux import IceTcpListener
from .transport import CONSENT_TIMEOUT, PeerTransport, log_this_time

logger = logging.getLogger(__name__)

_SOCKET_BUFFER = 4 * 1024 * 1024  # absorb bursts (video keyframes) on the one shared socket
# Module-level names: the per-datagram path compares against these without attribute lookups.
_RTP, _STUN, _DTLS = PacketClass.RTP, PacketClass.STUN, PacketClass.DTLS


@dataclass(slots=True)
class _Routes:
    """What the mux routes to one transport: its ufrags (two during an ICE restart) and the
    addresses its authenticated checks came from."""

    ufrags: set[str] = field(default_factory=set)
    addresses: set[Address] = field(default_factory=set)


class UdpMux(asyncio.DatagramProtocol):
    """The one UDP socket of a media worker (and its ICE-TCP port) and the routing behind them.

    Transports use the public surface: `new_credentials`, `route_ufrag`, `unroute_ufrag`,
    `unroute`, `sendto`, `send_media`, and `udp` directly on their per-packet path.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        advertise_ip: str | None = None,
        consent_timeout: float = CONSENT_TIMEOUT,
        data_channel_slow_threshold: int = 0,
        tcp_port: int | None = None,
    ) -> None:
        """`tcp_port`: the ICE-TCP port (0: any free one), None for none."""
        if advertise_ip is None and not _is_specific_ip(host):
            raise ValueError(f"bound to {host!r}: pass advertise_ip (the node IP for candidates)")
        self.host = host
        self.port = port
        self.advertise_ip = advertise_ip or host
        self.consent_timeout = consent_timeout
        # livekit-server's rtc.datachannel_slow_threshold (bits/s), see sctp_backlog.py
        self.data_channel_slow_threshold = data_channel_slow_threshold
        # Called with a limit's name each time a data-channel limit is applied
        # (sctp_guard.py, sctp_backlog.py); the server counts them in /metrics.
        self.on_limit: Callable[[str], None] = _ignore_limit
        self.certificate = DtlsCertificate.generate()  # one per worker; context shared
        self.stats: collections.Counter[str] = collections.Counter()
        self.udp: asyncio.DatagramTransport | None = None
        self._by_ufrag: dict[str, PeerTransport] = {}
        self._by_addr: dict[Address, PeerTransport] = {}
        self._routes: dict[PeerTransport, _Routes] = {}
        self.tcp = None if tcp_port is None else IceTcpListener(self, host, tcp_port)

    @property
    def tcp_port(self) -> int:
        """The ICE-TCP port for candidates, 0 when there is none."""
        return 0 if self.tcp is None else self.tcp.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        udp, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, self.port)
        )
        self.udp = udp
        self.port = udp.get_extra_info("sockname")[1]
        sock = udp.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
            except OSError:  # capped by net.core.*mem_max; the default still works
                pass
        logger.info("media UDP mux listening on %s:%d", self.host, self.port)
        if self.tcp is not None:
            try:
                await self.tcp.start()
            except OSError:
                self.close_udp()
                raise

    @property
    def transport_count(self) -> int:
        """Live PeerTransports (for leak checks and stats)."""
        return len(self._routes)

    def create_transport(
        self, *, on_state: Callable[[TransportState], None] | None = None
    ) -> PeerTransport:
        ufrag, pwd = self.new_credentials()
        transport = PeerTransport(self, ufrag, pwd, on_state)
        self.route_ufrag(ufrag, transport)
        return transport

    async def close(self) -> None:
        for transport in list(self._routes):
            await transport.close()
        if self.tcp is not None:
            await self.tcp.close()
        self.close_udp()

    def close_udp(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None

    # -- routing: what transports call --

    def new_credentials(self) -> tuple[str, str]:
        """A fresh (ufrag, pwd), the ufrag unused by any routed transport (RFC 8839 §5.4)."""
        ufrag = random_ice_string(UFRAG_LENGTH)
        while ufrag in self._by_ufrag:
            ufrag = random_ice_string(UFRAG_LENGTH)
        return ufrag, random_ice_string(PWD_LENGTH)

    def route_ufrag(self, ufrag: str, transport: PeerTransport) -> None:
        """Send Binding requests for `ufrag` (first half of USERNAME) to `transport`."""
        self._by_ufrag[ufrag] = transport
        self._routes.setdefault(transport, _Routes()).ufrags.add(ufrag)

    def unroute_ufrag(self, ufrag: str, transport: PeerTransport) -> None:
        if self._by_ufrag.get(ufrag) is transport:
            del self._by_ufrag[ufrag]
        routes = self._routes.get(transport)
        if routes is not None:
            routes.ufrags.discard(ufrag)

    def unroute(self, transport: PeerTransport) -> None:
        """Forget every ufrag and address of `transport` (it is closing)."""
        routes = self._routes.pop(transport, None)
        if routes is None:
            return
        for ufrag in routes.ufrags:
            if self._by_ufrag.get(ufrag) is transport:
                del self._by_ufrag[ufrag]
        for addr in routes.addresses:
            if self._by_addr.get(addr) is transport:
                del self._by_addr[addr]
                if isinstance(addr, TcpAddress) and self.tcp is not None:
                    self.tcp.close_connection(addr)  # after its DTLS close_notify

    def sendto(self, data: bytes, addr: Address) -> None:
        """STUN and DTLS: over TCP never dropped (the connection closes instead)."""
        if isinstance(addr, TcpAddress):
            if self.tcp is not None:
                self.tcp.send(data, addr, droppable=False)
        elif self.udp is not None:
            self.udp.sendto(data, addr)

    def send_media(self, data: bytes, addr: Address) -> None:
        """SRTP and SRTCP: over TCP dropped behind a slow reader (tcp_framing.SendLimits)."""
        if isinstance(addr, TcpAddress):
            if self.tcp is not None:
                self.tcp.send(data, addr, droppable=True)
        elif self.udp is not None:
            self.udp.sendto(data, addr)

    # -- what the ICE-TCP listener asks --

    def routes_address(self, addr: Address) -> bool:
        """Whether an authenticated check from `addr` has routed it to a transport."""
        return addr in self._by_addr

    def tcp_closed(self, addr: TcpAddress) -> None:
        """An ICE-TCP connection is gone: its address routes nowhere any more."""
        transport = self._by_addr.pop(addr, None)
        routes = self._routes.get(transport) if transport is not None else None
        if routes is not None:
            routes.addresses.discard(addr)

    # -- asyncio.DatagramProtocol: the per-packet path, no logging here --

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data:
            self.stats["dropped"] += 1
            return
        try:
            kind = FIRST_BYTE[data[0]]
            if kind is _RTP:  # the common case first
                transport = self._by_addr.get(addr)
                if transport is not None:
                    transport.receive_srtp(data)
                    return
            elif kind is _STUN:
                self._receive_stun(data, addr)
                return
            elif kind is _DTLS:
                transport = self._by_addr.get(addr)
                if transport is not None:
                    transport.receive_dtls(data)
                    return
            self.stats["dropped"] += 1
        except Exception:  # a bug or a user callback: keep the socket alive
            self.stats["errors"] += 1
            if log_this_time(self.stats["errors"]):
                logger.exception("error handling a datagram (%d so far)", self.stats["errors"])

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable from a departed client): nothing to do per peer.
        self.stats["icmp_errors"] += 1

    def _receive_stun(self, data: bytes, addr: Address) -> None:
        message = parse_stun(data)
        if message is None:
            self.stats["stun_dropped"] += 1  # garbage: drop, never answer
            return
        ufrag = local_ufrag_of(message)
        if ufrag is None:
            # A response to a transport's own check of a nominated address: that address sent
            # an authenticated check first, so it is routed (its transport checks the rest).
            transport = self._by_addr.get(addr) if _is_binding_response(message) else None
            if transport is None:
                self.stats["stun_dropped"] += 1
            else:
                transport.receive_stun_response(message, addr)
            return
        transport = self._by_ufrag.get(ufrag)
        if transport is None:
            self.stats["stun_dropped"] += 1  # unknown ufrag: drop, never answer
            return
        if transport.receive_stun(message, addr) and self._by_addr.get(addr) is not transport:
            routes = self._routes.get(transport)
            if routes is not None:
                self._by_addr[addr] = transport
                routes.addresses.add(addr)


def _is_binding_response(message: stun.Message) -> bool:
    return message.message_method == stun.Method.BINDING and message.message_class in (
        stun.Class.RESPONSE,
        stun.Class.ERROR,
    )


def _is_specific_ip(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a host name: candidates need an address
        return False


def _ignore_limit(limit: str) -> None:
    """No one counts limits (tests that build a mux alone)."""
