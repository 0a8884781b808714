"""One TURN allocation (RFC 8656 §2.2): its relayed transport address, lifetime, permissions and
channel bindings, and the per-packet relaying in both directions. No I/O: the client's link and
the relay socket are protocols the edge (turn/sockets.py) implements.

The only peer there is: this node's own media port (`MediaPeer`). Clients know it by the
address in our ICE candidates; the relay socket reaches it at its local socket address. A
permission or channel to anything else is refused (403) before it exists, so nothing here ever
sends elsewhere.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

from .wire import Address, channel_data, data_indication

PERMISSION_LIFETIME = 300.0  # s, RFC 8656 §9
CHANNEL_LIFETIME = 600.0  # s, RFC 8656 §12
CHANNEL_REUSE_DELAY = 300.0  # s an expired channel stays reserved for its peer (RFC 8656 §12)


class ClientLink(Protocol):
    """The client side of one allocation's 5-tuple: a UDP source address on a TURN port, or one
    TCP/TLS connection."""

    address: Address  # the client's address as seen here (XOR-MAPPED-ADDRESS)
    stream: bool  # TCP or TLS: ChannelData is padded (RFC 8656 §12.5)
    allocation: Allocation | None  # set by TurnCore while the link has one

    def send(self, data: bytes, *, droppable: bool) -> None:
        """To the client. `droppable`: relayed RTP/RTCP a slow TCP reader may lose."""


class Relay(Protocol):
    """The relayed transport address of one allocation: a UDP socket of the relay range."""

    port: int

    def send(self, data: bytes, addr: Address) -> None: ...

    def close(self) -> None: ...


class RelayPorts(Protocol):
    def open(self, allocation: Allocation) -> Relay | None:
        """A relay socket that hands what it receives to `allocation.from_peer`, or None when
        no port of the range is free."""


@dataclass(frozen=True, slots=True)
class MediaPeer:
    """The one peer TURN relays to: this node's WebRTC media port. `public_ips` are the
    addresses clients know it by (its ICE candidates); `local` is where relay sockets send."""

    public_ips: frozenset[str]
    port: int
    local: Address

    def ip_allowed(self, ip: str) -> bool:
        return ip in self.public_ips

    def allowed(self, peer: Address) -> bool:
        return peer[1] == self.port and peer[0] in self.public_ips


@dataclass(slots=True)
class Channel:
    number: int
    peer: Address  # as the client addressed it
    expires: float


@dataclass(slots=True)
class RelayTotals:
    """Counters of every allocation of a server, for /metrics."""

    to_peer_bytes: int = 0
    to_peer_packets: int = 0
    to_client_bytes: int = 0
    to_client_packets: int = 0
    dropped: int = 0  # no permission or channel, an unknown source, an expired binding


@dataclass(slots=True, eq=False)  # identity: allocations live in sets
class Allocation:
    link: ClientLink
    username: str
    user: str  # the participant, for quotas
    key: bytes  # the credential's integrity key: responses are signed with it
    peer: MediaPeer
    totals: RelayTotals
    expires: float
    relay: Relay | None = None
    relayed_address: Address = ("", 0)
    allocate_transaction: bytes = b""  # a retransmitted Allocate gets the same answer
    allocate_response: bytes = b""
    permissions: dict[str, float] = field(default_factory=dict)  # peer IP → expiry
    channels: dict[int, Channel] = field(default_factory=dict)
    channel_of_peer: dict[Address, Channel] = field(default_factory=dict)
    # What data from the media port goes back as: the peer address the client last sent to
    # (under any of the node's public IPs), and its channel if bound.
    reply_peer: Address | None = None
    reply_channel: Channel | None = None

    # -- requests (TurnCore has checked that the peer is allowed) -----------------------------

    def permit(self, ip: str, now: float) -> None:
        self.permissions[ip] = now + PERMISSION_LIFETIME

    def bind_channel(self, number: int, peer: Address, now: float) -> bool:
        """Bind or refresh; False if the number or the peer is bound otherwise (RFC 8656
        §12.2: 400)."""
        channel = self.channels.get(number)
        other = self.channel_of_peer.get(peer)
        if (channel is not None and channel.peer != peer) or (
            other is not None and other.number != number
        ):
            return False
        if channel is None:
            channel = Channel(number, peer, 0.0)
            self.channels[number] = channel
            self.channel_of_peer[peer] = channel
        channel.expires = now + CHANNEL_LIFETIME
        self.permit(peer[0], now)  # RFC 8656 §12.2: a binding installs or refreshes it
        self.reply_peer, self.reply_channel = peer, channel
        return True

    def expire(self, now: float) -> None:
        """Forget permissions and channel bindings past their lifetime."""
        for ip in [ip for ip, until in self.permissions.items() if until < now]:
            del self.permissions[ip]
        for number, channel in list(self.channels.items()):
            if channel.expires + CHANNEL_REUSE_DELAY < now:
                del self.channels[number]
                del self.channel_of_peer[channel.peer]
        reply = self.reply_channel
        if reply is not None and reply.expires < now:
            self.reply_channel = None

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.link.allocation is self:
            self.link.allocation = None

    # -- the per-packet paths ----------------------------------------------------------------

    def send_indication(self, peer: Address, payload: bytes, now: float) -> bool:
        """A Send indication's DATA to `peer` (RFC 8656 §11.3): only with a permission."""
        if self.permissions.get(peer[0], 0.0) < now or not self.peer.allowed(peer):
            self.totals.dropped += 1
            return False
        self.reply_peer = peer
        channel = self.channel_of_peer.get(peer)
        self.reply_channel = channel if channel is not None and channel.expires >= now else None
        self._to_peer(payload)
        return True

    def channel_to_peer(self, number: int, payload: bytes, now: float) -> None:
        """ChannelData from the client (RFC 8656 §12.6): on a bound, unexpired channel."""
        channel = self.channels.get(number)
        if channel is None or channel.expires < now:
            self.totals.dropped += 1
            return
        if self.reply_channel is not channel:
            self.reply_peer, self.reply_channel = channel.peer, channel
        self._to_peer(payload)

    def _to_peer(self, payload: bytes) -> None:
        relay = self.relay
        if relay is None:
            return
        relay.send(payload, self.peer.local)
        totals = self.totals
        totals.to_peer_packets += 1
        totals.to_peer_bytes += len(payload)

    def from_peer(self, data: bytes, source: Address, now: float) -> None:
        """A datagram on the relay socket: to the client if it is from the media port and
        the client has a permission for it (RFC 8656 §11.5 / §12.6)."""
        peer = self.reply_peer
        if source != self.peer.local or peer is None or self.permissions.get(peer[0], 0.0) < now:
            self.totals.dropped += 1
            return
        link = self.link
        channel = self.reply_channel
        if channel is not None and channel.expires >= now:
            message = channel_data(channel.number, data, padded=link.stream)
        else:
            message = data_indication(peer, data, random.randbytes(12))
        # RFC 7983: 128-191 is RTP/RTCP, which a slow TCP reader may lose; never DTLS or STUN.
        link.send(message, droppable=bool(data) and 127 < data[0] < 192)
        totals = self.totals
        totals.to_client_packets += 1
        totals.to_client_bytes += len(data)
