"""The embedded TURN server of one node: its ports from the `turn:` section, the relay range,
and the timer that ends allocations past their lifetime. server.py starts it after the media
socket (whose address it relays to) and stops it before.

Ports, on each of `turn.bind_addresses` (default: the media socket's address): UDP and TCP on
`turn.udp_port`, and on `turn.tls_port` TLS with `turn.cert_file`/`key_file` or, with
`turn.external_tls`, plain TCP from a load balancer that terminates TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from roomcast.config import Config
from roomcast.config_turn import load_turn_certificate

from .allocation import MediaPeer
from .auth import Authenticator
from .core import TurnCore, TurnLimits
from .credentials import CredentialVerifier
from .sockets import RelayPool, TurnStreamPort, TurnUdpPort

log = logging.getLogger(__name__)

EXPIRY_INTERVAL = 1.0  # s between sweeps of expired allocations, permissions and channels


@dataclass(frozen=True, slots=True)
class MediaSocket:
    """Where the node's WebRTC media socket is: bound to `host` (maybe 0.0.0.0), `port`, and
    known to clients as `advertised_ip`."""

    host: str
    port: int
    advertised_ip: str


class TurnPortError(OSError):
    """A TURN port cannot be bound; `key` is the config key that chooses it."""

    def __init__(self, key: str, protocol: str, host: str, port: int, exc: OSError) -> None:
        super().__init__(exc.errno, exc.strerror)
        self.key, self.protocol, self.host, self.port = key, protocol, host, port


def _specific(host: str) -> bool:
    return not ipaddress.ip_address(host).is_unspecified


def _bindable(ip: str) -> bool:
    """Whether `ip` is an address of this machine (a relay socket can be bound to it)."""
    try:
        with socket.socket(
            socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM
        ) as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


def media_peer(media: MediaSocket) -> tuple[MediaPeer, str]:
    """The peer relays may reach, and the address relay sockets bind to: the media socket's own
    address when it has one; else the advertised IP when it is local, so the media plane sees
    a relayed client at its relayed address; else loopback (behind 1:1 NAT)."""
    if _specific(media.host):
        relay_host = media.host
    elif _bindable(media.advertised_ip):
        relay_host = media.advertised_ip
    else:
        relay_host = "::1" if ":" in media.advertised_ip else "127.0.0.1"
    public = {media.advertised_ip} | ({media.host} if _specific(media.host) else set())
    return MediaPeer(frozenset(public), media.port, (relay_host, media.port)), relay_host


class TurnServer:
    def __init__(
        self,
        config: Config,
        media: MediaSocket,
        on_limit: Callable[[str], None] = lambda limit: None,
    ) -> None:
        self.config = turn = config.turn
        self.media = media
        peer, relay_host = media_peer(media)
        self.relays = RelayPool(relay_host, turn.relay_range_start, turn.relay_range_end)
        limits = TurnLimits(turn.per_user_relay_allocation_limit, turn.max_allocations)
        self.core = TurnCore(
            Authenticator(CredentialVerifier(config.keys)),
            self.relays,
            peer,
            media.advertised_ip,
            limits,
            on_limit=on_limit,
        )
        self.hosts = self.config.bind_addresses or [media.host]
        self.udp_ports: list[TurnUdpPort] = []
        self.stream_ports: list[TurnStreamPort] = []
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind every port (TurnPortError names the one that fails; what was bound is closed)."""
        try:
            for host in self.hosts:
                await self._start_on(host)
        except BaseException:
            self.close()
            raise
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        turn = self.config
        log.info(
            "TURN on %s: UDP/TCP %s, TLS %s; relaying to media port %d from ports %d-%d",
            ", ".join(self.hosts),
            turn.udp_port or "off",
            f"{turn.tls_port}{' (TLS terminated in front)' if turn.external_tls else ''}"
            if turn.tls_port
            else "off",
            self.media.port,
            turn.relay_range_start,
            turn.relay_range_end,
        )

    async def _start_on(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        turn = self.config
        if turn.udp_port:
            port = TurnUdpPort(self.core)
            try:
                await loop.create_datagram_endpoint(lambda: port, local_addr=(host, turn.udp_port))
            except OSError as exc:
                raise TurnPortError("turn.udp_port", "UDP", host, turn.udp_port, exc) from exc
            self.udp_ports.append(port)
            await self._listen("tcp", host, turn.udp_port, "turn.udp_port", None)
        if turn.tls_port:
            context = None if turn.external_tls else load_turn_certificate(turn)
            await self._listen("tls", host, turn.tls_port, "turn.tls_port", context)

    async def _listen(self, name: str, host: str, number: int, key: str, ssl: object) -> None:
        port = TurnStreamPort(self.core, name)
        try:
            await port.start(host, number, ssl)
        except OSError as exc:
            raise TurnPortError(key, "TCP", host, number, exc) from exc
        self.stream_ports.append(port)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(EXPIRY_INTERVAL)
            try:
                self.core.expire(loop.time())
                for port in self.udp_ports:
                    port.prune()
            except Exception:
                log.exception("TURN expiry sweep failed")

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for udp in self.udp_ports:
            udp.close()
        for stream in self.stream_ports:
            stream.close()
        self.udp_ports.clear()
        self.stream_ports.clear()
        self.core.close()

    async def stop(self) -> None:
        sweeper = self._sweeper
        self.close()
        if sweeper is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    @property
    def connection_count(self) -> int:
        return sum(len(port.connections) for port in self.stream_ports)
