"""A small full ICE agent for one component (RFC 8445), for client peers. No I/O.

Roomcast (like LiveKit) is ICE-lite, so a client talking to it is the controlling agent and
only needs to send Binding requests to the server's host candidate (RFC 8445 §2.5). The same
agent also works against a full agent (aiortc): it answers the remote's checks and, when
controlled, takes the pair the remote nominates.

Usage: `add_remote_candidate`, then call `poll(now)` whenever `next_timeout()` passes and send
the returned (datagram, address) pairs; feed every received STUN message to `handle()`.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

from aioice import stun

from roomcast.media.stun import PWD_LENGTH, UFRAG_LENGTH, IceLiteResponder, random_ice_string

Address = tuple[str, int]

# RFC 8445 §5.1.2.1 priority of a peer-reflexive candidate (what PRIORITY carries, §7.1.1):
# type-preference value 110, local-preference value 65535, component 1.
PRFLX_PRIORITY = (110 << 24) | (65535 << 8) | 255
CHECK_RTO_START = 0.05  # s: first retransmission; doubled up to CHECK_RTO_MAX (RFC 8445 §14.3)
CHECK_RTO_MAX = 0.5
CONNECT_TIMEOUT = 10.0  # s without any successful check → failed
CONSENT_INTERVAL = 5.0  # s between consent checks (RFC 7675 §5.1: 4-6 s, randomised)
CONSENT_TIMEOUT = 30.0  # s without a consent response → failed (RFC 7675 §5.1)
ROLE_CONFLICT = 487  # RFC 8445 §7.2.5.1


@dataclass(slots=True)
class _Target:
    """One remote address we send checks to."""

    address: Address
    next_send: float = 0.0
    rto: float = CHECK_RTO_START


@dataclass(slots=True)
class IceEvents:
    """What one `handle()` call produced."""

    send: list[tuple[bytes, Address]] = field(default_factory=list)
    selected: bool = False  # the selected address was set (or changed) by this message


class IceAgent:
    """Full-agent checks for one component, towards an ICE-lite or a full remote agent."""

    def __init__(self, *, controlling: bool = True, protocol: str = "udp") -> None:
        """`protocol`: "udp", or "tcp" for the remote's passive TCP candidates (RFC 6544)."""
        self.local_ufrag = random_ice_string(UFRAG_LENGTH)
        self.local_pwd = random_ice_string(PWD_LENGTH)
        self.controlling = controlling
        self.protocol = protocol
        self.tie_breaker = int.from_bytes(os.urandom(8), "big")
        self.remote_ufrag: str | None = None
        self.remote_pwd: str | None = None
        self.selected: Address | None = None
        self.failed = False
        self._remote_key = b""
        self._targets: dict[Address, _Target] = {}
        self._pending: dict[bytes, Address] = {}  # transaction id → where the check went
        self._responder: IceLiteResponder = IceLiteResponder(self.local_ufrag, self.local_pwd)
        self._started: float | None = None
        self._last_response = 0.0
        self._next_consent = 0.0

    # -- configuration ---------------------------------------------------------------------
    def set_remote_credentials(self, ufrag: str, pwd: str) -> None:
        self.remote_ufrag, self.remote_pwd = ufrag, pwd
        self._remote_key = pwd.encode("utf8")  # RFC 8489 §9.2.2 short-term credential

    def add_remote_candidate(self, candidate: str) -> bool:
        """Add a candidate of our protocol ("candidate:…" with or without "a="): UDP, or a
        passive TCP one; False if not usable (the other protocol, empty, malformed)."""
        fields = candidate.strip().removeprefix("a=").removeprefix("candidate:").split()
        if len(fields) < 8 or fields[2].lower() != self.protocol or fields[6] != "typ":
            return False
        if self.protocol == "tcp" and _tcp_type(fields) != "passive":
            return False  # we dial, so only passive candidates (RFC 6544 §3)
        try:
            address = (fields[4], int(fields[5]))
        except ValueError:
            return False
        if address not in self._targets:
            self._targets[address] = _Target(address)
        return True

    @property
    def ready(self) -> bool:
        return self.remote_pwd is not None and bool(self._targets)

    # -- time --------------------------------------------------------------------------------
    def next_timeout(self) -> float | None:
        """Loop time at which `poll` has work, or None (nothing to do until input)."""
        if self.failed or not self.ready:
            return None
        if self.selected is not None:
            return min(self._next_consent, self._last_response + CONSENT_TIMEOUT)
        return min(t.next_send for t in self._targets.values())

    def poll(self, now: float) -> list[tuple[bytes, Address]]:
        """Checks (or consent refreshes) due at `now`; marks the agent failed on timeouts."""
        if self.failed or not self.ready:
            return []
        if self._started is None:
            self._started = now
        if self.selected is not None:
            if now - self._last_response >= CONSENT_TIMEOUT:
                self.failed = True  # RFC 7675 §5.1: consent expired
                return []
            if now < self._next_consent:
                return []
            self._next_consent = now + CONSENT_INTERVAL * random.uniform(0.8, 1.2)
            return [self._check(self.selected)]
        if now - self._started > CONNECT_TIMEOUT:
            self.failed = True
            return []
        out = []
        for target in self._targets.values():
            if now >= target.next_send:
                out.append(self._check(target.address))
                target.next_send = now + target.rto
                target.rto = min(target.rto * 2, CHECK_RTO_MAX)
        return out

    # -- input ---------------------------------------------------------------------------------
    def handle(self, message: stun.Message, addr: Address, now: float) -> IceEvents:
        events = IceEvents()
        if message.message_method != stun.Method.BINDING:
            return events
        if message.message_class == stun.Class.REQUEST:
            result = self._responder.handle(message, addr)
            if result.response is not None:
                events.send.append((result.response, addr))
            if result.authenticated:
                if addr not in self._targets:  # peer-reflexive: check it too (§7.3.1.4)
                    self._targets[addr] = _Target(addr, next_send=now)
                if result.use_candidate and not self.controlling and self.selected != addr:
                    self._select(addr, now)  # the controlling agent nominated (§7.3.1.5)
                    events.selected = True
            return events
        sent_to = self._pending.pop(message.transaction_id, None)
        if sent_to is None:
            return events
        if message.message_class == stun.Class.ERROR:
            code = message.attributes.get("ERROR-CODE", (0, ""))[0]
            if code == ROLE_CONFLICT:  # §7.2.5.1: switch roles and check again
                self.controlling = not self.controlling
                target = self._targets.get(sent_to)
                if target is not None:
                    target.next_send = now
            return events
        if message.message_class != stun.Class.RESPONSE:
            return events
        if not self._remote_key or not message.check_message_integrity(self._remote_key):
            return events  # §7.2.5.2.1: responses must carry the remote's integrity
        self._last_response = now
        if self.selected is None and (self.controlling or addr == sent_to):
            # Aggressive nomination: our check carried USE-CANDIDATE, so its success nominates
            # the pair (RFC 8445 §8.1.1, RFC 5245 §8.1.1.2). A controlled agent uses the first
            # working pair until the remote nominates one.
            self._select(sent_to, now)
            events.selected = True
        return events

    # -- internals -------------------------------------------------------------------------
    def _select(self, addr: Address, now: float) -> None:
        self.selected = addr
        self._last_response = now
        self._next_consent = now + CONSENT_INTERVAL

    def _check(self, addr: Address) -> tuple[bytes, Address]:
        """A Binding request as RFC 8445 §7.1.1 / §7.2.2 describe it."""
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        # RFC 8445 §7.2.2: USERNAME is "<remote ufrag>:<local ufrag>".
        request.attributes["USERNAME"] = f"{self.remote_ufrag}:{self.local_ufrag}"
        request.attributes["PRIORITY"] = PRFLX_PRIORITY
        if self.controlling:
            request.attributes["ICE-CONTROLLING"] = self.tie_breaker
            request.attributes["USE-CANDIDATE"] = None
        else:
            request.attributes["ICE-CONTROLLED"] = self.tie_breaker
        request.add_message_integrity(self._remote_key)  # also appends FINGERPRINT
        self._pending[request.transaction_id] = addr
        if len(self._pending) > 64:  # unanswered retransmissions: keep the newest only
            for old in list(self._pending)[:-64]:
                del self._pending[old]
        return bytes(request), addr


def _tcp_type(fields: list[str]) -> str | None:
    """The value of a candidate's "tcptype" extension (RFC 6544 §4.5), if any."""
    for name, value in zip(fields[8::2], fields[9::2], strict=False):
        if name == "tcptype":
            return value
    return None


def is_stun(data: bytes) -> bool:
    """RFC 7983 §7: first byte 0-3, and the magic cookie of RFC 8489 §5."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"
