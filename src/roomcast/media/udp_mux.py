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
from .native_plane import EV_DATAGRAM, EV_RTCP, EV_RTP, new_engine
from .native_tracks import Engine
from .secure_channel import TransportState
from .stun import PWD_LENGTH, UFRAG_LENGTH, local_ufrag_of, parse_stun, random_ice_string
from .tcp_mux import IceTcpListener
from .transport import CONSENT_TIMEOUT, DatagramSender, PeerTransport, log_this_time

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
        native: bool = False,
        native_threads: int = 1,
    ) -> None:
        """`tcp_port`: the ICE-TCP port (0: any free one), None for none. `native`: the
        native plane's engine reads the socket (media/native_plane.py), with `native_threads`
        sender threads."""
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
        self.udp: DatagramSender | None = None
        self.native = native
        self.native_threads = native_threads
        self.engine: Engine | None = None  # the running native engine (native mode)
        # Engine events that are the plane's (a layer started, a packet to send from Python).
        self.on_engine_event: Callable[[int, int, int, bytes], None] = _ignore_event
        self._native_transports: dict[int, PeerTransport] = {}
        self._sock: socket.socket | None = None
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
        if self.native:
            sock = self._start_native(loop)
        else:
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

    def engine_counters(self) -> dict[str, int] | None:
        """The native engine's counters (native/plane.h), None while no engine runs."""
        return None if self.engine is None else self.engine.counters()

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
        if self.engine is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.engine.event_fd)
            self.engine.stop()
            logger.info("native engine stopped: %s", self.engine.counters())
            self.engine = None
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- native mode: the engine reads the socket, Python sends STUN/DTLS on it ---------------

    def _start_native(self, loop: asyncio.AbstractEventLoop) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))
            sock.setblocking(False)
            engine = new_engine(sock.fileno(), self.native_threads)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.udp = SocketSender(sock, self.stats)
        self.engine = engine
        loop.add_reader(engine.event_fd, self.native_events)
        engine.start()
        return sock

    def register_native(self, native_id: int, transport: PeerTransport) -> None:
        self._native_transports[native_id] = transport

    def unregister_native(self, native_id: int) -> None:
        self._native_transports.pop(native_id, None)

    def native_events(self) -> None:
        """What the engine handed up: datagrams it does not handle (STUN, DTLS, SRTP of
        transports it has no keys for) go the Python way; RTP/RTCP it decrypted to their
        transports; the rest to the plane."""
        engine = self.engine
        if engine is None:
            return
        transports = self._native_transports
        for kind, native_id, arg, data, addr in engine.events():
            try:
                if kind == EV_DATAGRAM:
                    self.datagram_received(data, addr)
                elif kind == EV_RTP or kind == EV_RTCP:
                    transport = transports.get(native_id)
                    if transport is not None:
                        transport.receive_plain(data, kind == EV_RTCP)
                else:
                    self.on_engine_event(kind, native_id, arg, data)
            except Exception:  # a bug or a user callback: keep the events flowing
                self.stats["errors"] += 1
                if log_this_time(self.stats["errors"]):
                    logger.exception("error handling an engine event")

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


class SocketSender:
    """`sendto` on the plain socket the engine reads (native mode): STUN, DTLS and the SRTP
    of tracks Python forwards. A full socket buffer drops the datagram, as UDP may."""

    def __init__(self, sock: socket.socket, stats: collections.Counter[str]) -> None:
        self._sock = sock
        self._stats = stats

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self._sock.sendto(data, addr)
        except OSError:  # EAGAIN, or ICMP-reported errors of an earlier datagram
            self._stats["send_errors"] += 1

    def close(self) -> None:
        """The mux closes the socket itself."""


def _ignore_event(kind: int, native_id: int, arg: int, data: bytes) -> None:
    """No native plane listens (tests that build a mux alone)."""


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
