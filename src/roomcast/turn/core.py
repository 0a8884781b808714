"""The TURN server's protocol logic (RFC 8656), fed messages and time, without sockets.

`TurnCore.receive(data, link, now)` takes what a client sent on a TURN port (UDP, TCP or TLS:
the link says which and sends the answers); relay sockets hand what the media port sends back
to `Allocation.from_peer`; `expire(now)` ends allocations, permissions and channels past their
lifetime. `now` is monotonic seconds; credential expiry uses `wall()` (Unix time).

Policy, besides the RFC: Allocate, Refresh, CreatePermission and ChannelBind need a
long-term credential (turn/auth.py) minted for a participant (turn/credentials.py); each
participant may hold `per_user_limit` allocations and the server `max_allocations`; peers are
this node's media port and nothing else (403). Binding requests are answered without
credentials, so a TURN UDP port also serves as a STUN server.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aioice import stun

from .allocation import Allocation, ClientLink, MediaPeer, RelayPorts, RelayTotals
from .auth import Authenticator, error_response
from .credentials import Credential
from .wire import (
    CHANNEL_MAX,
    CHANNEL_MIN,
    FAMILY_IPV4,
    REQUESTED_ADDRESS_FAMILY,
    XOR_PEER_ADDRESS,
    is_channel_data,
    parse_channel_data,
    raw_attributes,
    unknown_required,
    with_unknown_attributes,
)

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = 600  # s, RFC 8656 §2.2
MAX_LIFETIME = 3600  # s, RFC 8656 §7.2 (the recommended maximum)
UDP = 17  # REQUESTED-TRANSPORT (RFC 8656 §18.7): the protocol number of UDP

_REQUEST, _INDICATION = stun.Class.REQUEST, stun.Class.INDICATION
_Method = stun.Method


def _parse(data: bytes) -> stun.Message | None:
    try:  # untrusted input: aioice raises more than ValueError on malformed attributes
        return stun.parse_message(data)
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class TurnLimits:
    per_user: int = 12  # allocations of one participant; <= 0: no limit
    total: int = 2048
    default_lifetime: int = DEFAULT_LIFETIME
    max_lifetime: int = MAX_LIFETIME


class TurnCore:
    def __init__(
        self,
        auth: Authenticator,
        relays: RelayPorts,
        peer: MediaPeer,
        relayed_ip: str,
        limits: TurnLimits = TurnLimits(),
        *,
        wall: Callable[[], float] = time.time,
        on_limit: Callable[[str], None] = lambda limit: None,
    ) -> None:
        """`relayed_ip`: the address of XOR-RELAYED-ADDRESS (the node's public IP)."""
        self.auth = auth
        self.relays = relays
        self.peer = peer
        self.relayed_ip = relayed_ip
        self.limits = limits
        self.wall = wall
        self.on_limit = on_limit
        self.totals = RelayTotals()
        self.stats: collections.Counter[str] = collections.Counter()
        self.allocations: set[Allocation] = set()
        self._per_user: collections.Counter[str] = collections.Counter()

    @property
    def allocation_count(self) -> int:
        return len(self.allocations)

    # -- input -------------------------------------------------------------------------------

    def receive(self, data: bytes, link: ClientLink, now: float) -> None:
        """One STUN or ChannelData message from a client."""
        if not data:
            return
        if is_channel_data(data[0]):
            allocation = link.allocation
            parsed = parse_channel_data(data) if allocation is not None else None
            if parsed is None or allocation is None:
                self.totals.dropped += 1
                return
            allocation.channel_to_peer(parsed[0], parsed[1], now)
            return
        message = _parse(data)
        if message is None:
            self.stats["malformed"] += 1
            return
        if message.message_class == _INDICATION:
            if message.message_method == _Method.SEND:
                self._send_indication(message, link, now)
            return  # other indications are dropped (RFC 8489 §6.3.2)
        if message.message_class != _REQUEST:
            return
        response = self._request(message, data, link, now)
        if response is not None:
            link.send(response, droppable=False)

    def link_closed(self, link: ClientLink) -> None:
        """A TCP/TLS connection ended: its allocation goes with its 5-tuple."""
        if link.allocation is not None:
            self._delete(link.allocation)

    def expire(self, now: float) -> None:
        for allocation in [a for a in self.allocations if a.expires < now]:
            self.stats["expired"] += 1
            self._delete(allocation)
        for allocation in self.allocations:
            allocation.expire(now)

    def close(self) -> None:
        for allocation in list(self.allocations):
            self._delete(allocation)

    # -- requests ----------------------------------------------------------------------------

    def _request(
        self, request: stun.Message, data: bytes, link: ClientLink, now: float
    ) -> bytes | None:
        method = request.message_method
        attributes = raw_attributes(data)
        unknown = unknown_required(attributes)
        if unknown:  # RFC 8489 §6.3.1
            error = error_response(request, 420, "Unknown Attribute")
            error.attributes.pop("FINGERPRINT")
            return with_unknown_attributes(bytes(error), unknown)
        if method == _Method.BINDING:
            mapped = stun.Message(_Method.BINDING, stun.Class.RESPONSE, request.transaction_id)
            mapped.attributes["XOR-MAPPED-ADDRESS"] = link.address
            mapped.add_fingerprint()
            return bytes(mapped)
        handler = self._handlers.get(method)
        if handler is None:
            return bytes(error_response(request, 400, "Bad Request"))
        allocating = method == _Method.ALLOCATE
        checked = self.auth.check(request, link.address[0], now, self.wall(), allocating=allocating)
        if isinstance(checked, stun.Message):
            self.stats[f"auth_{checked.error_code}"] += 1
            return bytes(checked)
        allocation = link.allocation
        if not allocating:
            if allocation is None:
                return bytes(error_response(request, 437, "Allocation Mismatch", checked.key))
            if allocation.username != checked.username:  # RFC 8656 §5
                return bytes(error_response(request, 441, "Wrong Credentials", checked.key))
        response = handler(self, request, attributes, link, checked, now)
        return response if isinstance(response, bytes) else bytes(response)

    def _allocate(
        self,
        request: stun.Message,
        attributes: list[tuple[int, bytes]],
        link: ClientLink,
        credential: Credential,
        now: float,
    ) -> stun.Message | bytes:
        key = credential.key
        existing = link.allocation
        if existing is not None:  # RFC 8656 §7.2 step 2
            if existing.allocate_transaction == request.transaction_id:
                return existing.allocate_response
            return error_response(request, 437, "Allocation Mismatch", key)
        transport = request.attributes.get("REQUESTED-TRANSPORT")
        if transport is None:
            return error_response(request, 400, "Bad Request", key)
        if transport >> 24 != UDP:
            return error_response(request, 442, "Unsupported Transport Protocol", key)
        family = dict(attributes).get(REQUESTED_ADDRESS_FAMILY)
        if family is not None and family[:1] != bytes([FAMILY_IPV4]):
            return error_response(request, 440, "Address Family not Supported", key)
        limits = self.limits
        if 0 < limits.per_user <= self._per_user[credential.user]:
            self.on_limit("turn_allocations_per_user")
            return error_response(request, 486, "Allocation Quota Reached", key)
        if len(self.allocations) >= limits.total:
            self.on_limit("turn_allocations")
            return error_response(request, 508, "Insufficient Capacity", key)
        lifetime = self._lifetime(request)
        allocation = Allocation(
            link=link,
            username=credential.username,
            user=credential.user,
            key=key,
            peer=self.peer,
            totals=self.totals,
            expires=now + lifetime,
        )
        relay = self.relays.open(allocation)
        if relay is None:
            self.on_limit("turn_relay_ports")
            return error_response(request, 508, "Insufficient Capacity", key)
        allocation.relay = relay
        allocation.relayed_address = (self.relayed_ip, relay.port)
        response = self._success(
            request,
            key,
            **{
                "XOR-RELAYED-ADDRESS": allocation.relayed_address,
                "LIFETIME": lifetime,
                "XOR-MAPPED-ADDRESS": link.address,
            },
        )
        allocation.allocate_transaction = request.transaction_id
        allocation.allocate_response = response
        link.allocation = allocation
        self.allocations.add(allocation)
        self._per_user[credential.user] += 1
        self.stats["allocations"] += 1
        return response

    def _refresh(
        self,
        request: stun.Message,
        attributes: list[tuple[int, bytes]],
        link: ClientLink,
        credential: Credential,
        now: float,
    ) -> bytes:
        allocation = link.allocation
        assert allocation is not None
        requested = request.attributes.get("LIFETIME")
        if requested == 0:  # RFC 8656 §8: delete it
            self._delete(allocation)
            return self._success(request, credential.key, LIFETIME=0)
        lifetime = self._lifetime(request)
        allocation.expires = now + lifetime
        return self._success(request, credential.key, LIFETIME=lifetime)

    def _create_permission(
        self,
        request: stun.Message,
        attributes: list[tuple[int, bytes]],
        link: ClientLink,
        credential: Credential,
        now: float,
    ) -> stun.Message | bytes:
        allocation = link.allocation
        assert allocation is not None
        peers = _peer_addresses(attributes, request.transaction_id)
        if not peers:
            return error_response(request, 400, "Bad Request", credential.key)
        if not all(self.peer.ip_allowed(ip) for ip, _ in peers):  # all or nothing (§9.2)
            return self._forbidden(request, credential)
        for ip, _ in peers:
            allocation.permit(ip, now)
        return self._success(request, credential.key)

    def _channel_bind(
        self,
        request: stun.Message,
        attributes: list[tuple[int, bytes]],
        link: ClientLink,
        credential: Credential,
        now: float,
    ) -> stun.Message | bytes:
        allocation = link.allocation
        assert allocation is not None
        number = request.attributes.get("CHANNEL-NUMBER")
        peers = _peer_addresses(attributes, request.transaction_id)
        if number is None or not CHANNEL_MIN <= number <= CHANNEL_MAX or len(peers) != 1:
            return error_response(request, 400, "Bad Request", credential.key)
        if not self.peer.allowed(peers[0]):
            return self._forbidden(request, credential)
        if not allocation.bind_channel(number, peers[0], now):
            return error_response(request, 400, "Bad Request", credential.key)
        return self._success(request, credential.key)

    _handlers = {
        _Method.ALLOCATE: _allocate,
        _Method.REFRESH: _refresh,
        _Method.CREATE_PERMISSION: _create_permission,
        _Method.CHANNEL_BIND: _channel_bind,
    }

    def _send_indication(self, message: stun.Message, link: ClientLink, now: float) -> None:
        allocation = link.allocation
        peer = message.attributes.get("XOR-PEER-ADDRESS")
        data = message.attributes.get("DATA")
        if allocation is None or peer is None or data is None:
            self.totals.dropped += 1
            return
        if not self.peer.allowed(peer):
            self.on_limit("turn_peer_refused")  # an indication gets no 403: dropped
        allocation.send_indication(peer, data, now)

    # -- helpers -----------------------------------------------------------------------------

    def _lifetime(self, request: stun.Message) -> int:
        """RFC 8656 §7.2: min(requested, max), but never below the default."""
        requested = request.attributes.get("LIFETIME")
        limits = self.limits
        if requested is None:
            return limits.default_lifetime
        return max(limits.default_lifetime, min(requested, limits.max_lifetime))

    def _forbidden(self, request: stun.Message, credential: Credential) -> stun.Message:
        self.on_limit("turn_peer_refused")
        return error_response(request, 403, "Forbidden", credential.key)

    @staticmethod
    def _success(request: stun.Message, key: bytes, **attributes: object) -> bytes:
        response = stun.Message(request.message_method, stun.Class.RESPONSE, request.transaction_id)
        response.attributes.update(attributes)
        response.add_message_integrity(key)
        return bytes(response)

    def _delete(self, allocation: Allocation) -> None:
        if allocation not in self.allocations:
            return
        self.allocations.discard(allocation)
        self._per_user[allocation.user] -= 1
        if self._per_user[allocation.user] <= 0:
            del self._per_user[allocation.user]
        allocation.close()


def _peer_addresses(
    attributes: list[tuple[int, bytes]], transaction_id: bytes
) -> list[tuple[str, int]]:
    """Every XOR-PEER-ADDRESS of a request (aioice keeps only the last one); [] if one is
    malformed."""
    peers = []
    for kind, value in attributes:
        if kind == XOR_PEER_ADDRESS:
            try:
                peers.append(stun.unpack_xor_address(value, transaction_id))
            except ValueError:
                return []
    return peers
