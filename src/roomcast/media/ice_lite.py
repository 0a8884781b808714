"""The ICE side of one server transport, without I/O: an ICE-lite agent (RFC 8445 §2.5).

It answers the checks addressed to its credentials (`stun.IceLiteResponder`), picks the address
to send to, and carries ICE restarts: new local credentials, with the old ones still answered
until the first check with the new ones arrives, so consent checks in flight are not lost
(RFC 8445 §9, RFC 8839 §4.4.1.1.1).

Consent is per address, never per transport (RFC 7675 §5.1):
- The first authenticated check picks the address we send to: libwebrtc sends DTLS before it
  nominates (docs/protocol/15-interop-findings.md §2 ICE).
- A nomination (USE-CANDIDATE, RFC 8445 §7.3.1.5) from another address does not move it. The
  agent first sends that address a Binding request of its own, as a full agent's triggered
  check (RFC 8445 §7.3.1.4), and moves only when the success response comes back from that very
  address (RFC 8445 §7.2.5.2.1) signed with the remote's password. Its transaction ID is random,
  so a client that spoofed the nomination from someone else's address cannot answer for it.
- Only checks from the address we send to are consent to keep sending there (`IceCheck.consent`);
  the owner reports those to its `SecureChannel`, which expires consent.

An address is a UDP (ip, port) tuple or a `TcpAddress`, one ICE-TCP connection (RFC 6544): the
same ip and port over TCP is a different address, so all of the above holds per connection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from aioice import stun

from .stun import IceLiteResponder, local_ufrag_of


@dataclass(frozen=True, slots=True)
class TcpAddress:
    """The remote end of one ICE-TCP connection (RFC 6544 §3): never equal to a UDP address,
    so consent and nominations stay per connection."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"tcp:{self.host}:{self.port}"


# A UDP source address as asyncio gives it, or one TCP connection.
Address = tuple[str, int] | TcpAddress


def mapped_address(addr: Address) -> tuple[str, int]:
    """The transport address a Binding response reflects (RFC 8489 §14.2); for TCP, the
    remote end of the connection the request came on."""
    return (addr.host, addr.port) if isinstance(addr, TcpAddress) else addr


def describe(addr: Address) -> str:
    """For logs: "udp:1.2.3.4:5678" or "tcp:1.2.3.4:5678"."""
    return str(addr) if isinstance(addr, TcpAddress) else f"udp:{addr[0]}:{addr[1]}"


# RFC 8445 §7.1.1: PRIORITY of our request is that of the peer-reflexive candidate it would
# create (§5.1.2.1: type-preference value 110, local-preference value 65535, component 1).
PRFLX_PRIORITY = (110 << 24) | (65535 << 8) | 255
# One request per nomination, and no more often than this per address: the controlling agent
# repeats its nomination on every check of the pair (libwebrtc every 0.5-2.5 s, RFC 7675 §5.1
# clients every 4-6 s), which retransmits for us. So a spoofed nomination buys the attacker one
# request of about its own size, sent to its victim: no amplification.
PROBE_INTERVAL = 0.5  # s; RFC 8445 §14.3 RTO lower bound for checks


@dataclass(frozen=True, slots=True)
class IceCheck:
    """What one Binding request means for the transport."""

    response: bytes | None  # send back to the source address, or None (drop silently)
    authenticated: bool  # MESSAGE-INTEGRITY verified with our (current or previous) pwd
    retired_ufrag: str | None = None  # an ICE restart completed: stop routing this ufrag
    consent: bool = False  # from the address we send to: consent to keep sending there
    probe: bytes | None = None  # our own check, to send to the source address after `response`


_UNAUTHENTICATED = IceCheck(response=None, authenticated=False)


@dataclass(frozen=True, slots=True)
class _Probe:
    """Our Binding request to a nominated address, awaiting its response."""

    address: Address
    transaction_id: bytes
    key: bytes  # the remote's pwd, which signs its response too (RFC 8489 §9.2)
    sent_at: float


class IceLiteAgent:
    """Credentials, restarts and the remote address of one PeerConnection's transport."""

    def __init__(self, ufrag: str, pwd: str) -> None:
        self.pwd = pwd
        self.remote_ufrag: str | None = None
        self.remote_pwd: str | None = None
        # Where we send: the first checked address, then a nominated one once it has answered
        # our own check (RFC 8445 §7.3.1.5, §7.2.5.2.1).
        self.remote_address: Address | None = None
        self._responder = IceLiteResponder(ufrag, pwd)
        self._previous: IceLiteResponder | None = None  # until the restart completes
        self._restarted_since_remote = False
        self._probe: _Probe | None = None
        self._tie_breaker = int.from_bytes(os.urandom(8), "big")

    @property
    def ufrag(self) -> str:
        return self._responder.ufrag

    @property
    def previous_ufrag(self) -> str | None:
        """The ufrag before an ICE restart, still answered until a check uses the new one."""
        return None if self._previous is None else self._previous.ufrag

    @property
    def probing(self) -> Address | None:
        """The nominated address our outstanding check went to, if any."""
        return None if self._probe is None else self._probe.address

    def set_remote_credentials(self, ufrag: str, pwd: str) -> bool:
        """The remote's credentials: our own checks of a nominated address use them. New ones
        are an ICE restart, which the answerer must follow with new credentials of its own
        (RFC 8839 §4.4.1.1.1): True when the caller must `restart(…, answering=True)` now.
        False when our own restart already changed them, or nothing changed."""
        restarted = self.remote_ufrag is not None and ufrag != self.remote_ufrag
        self.remote_ufrag, self.remote_pwd = ufrag, pwd
        must_restart = restarted and not self._restarted_since_remote
        self._restarted_since_remote = False
        return must_restart

    def restart(self, ufrag: str, pwd: str, *, answering: bool = False) -> str | None:
        """Take new local credentials (RFC 8445 §9). `answering`: this follows the remote's
        restart; otherwise ours comes first and the remote's new credentials will not need
        another. Returns the ufrag of an earlier, uncompleted restart, to stop routing now."""
        retired = self.previous_ufrag
        self._previous = self._responder
        self._responder = IceLiteResponder(ufrag, pwd)
        self.pwd = pwd
        self._restarted_since_remote = not answering
        return retired

    def handle(self, message: stun.Message, addr: Address, now: float) -> IceCheck:
        """One Binding request from `addr` at `now`."""
        responder, previous = self._responder, self._previous
        if previous is not None and local_ufrag_of(message) == previous.ufrag:
            responder = previous  # a check still using the credentials before the restart
        result = responder.handle(message, mapped_address(addr))
        if not result.authenticated:
            return IceCheck(result.response, False) if result.response else _UNAUTHENTICATED
        retired = None
        if previous is not None and responder is self._responder:
            self._previous = None  # the restart is done: drop the old credentials
            retired = previous.ufrag
        probe = None
        if self.remote_address is None:
            self.remote_address = addr
        elif result.use_candidate:
            if addr == self.remote_address:
                self._probe = None  # the pair we use, nominated again: stay
            else:
                probe = self._probe_request(addr, now)
        return IceCheck(result.response, True, retired, addr == self.remote_address, probe)

    def handle_response(self, message: stun.Message, addr: Address) -> bool:
        """A Binding response from `addr`; True when it answered our check of a nominated
        address, which is where we send from now on (and it is consent for it)."""
        probe = self._probe
        if probe is None or message.transaction_id != probe.transaction_id:
            return False
        if addr != probe.address:
            return False  # RFC 8445 §7.2.5.2.1: not from where we sent it, so no proof
        if message.message_class != stun.Class.RESPONSE:
            self._probe = None  # an error response: the check failed (RFC 8445 §7.2.5.2.4)
            return False
        if not message.check_message_integrity(probe.key):
            return False  # not signed by the remote agent: ignore it (RFC 8445 §7.2.5)
        self._probe = None
        self.remote_address = addr
        return True

    def _probe_request(self, addr: Address, now: float) -> bytes | None:
        """Our check of `addr` (RFC 8445 §7.2.2), or None: no remote credentials yet, or one
        went there less than PROBE_INTERVAL ago and may still be answered."""
        if self.remote_ufrag is None or self.remote_pwd is None:
            return None  # the next nomination (the remote repeats it) will find them
        probe = self._probe
        if probe is not None and probe.address == addr and now - probe.sent_at < PROBE_INTERVAL:
            return None
        request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
        # RFC 8445 §7.2.2: USERNAME is "<receiver's ufrag>:<sender's ufrag>", and the request
        # is signed with the receiver's password.
        request.attributes["USERNAME"] = f"{self.remote_ufrag}:{self.ufrag}"
        request.attributes["PRIORITY"] = PRFLX_PRIORITY
        request.attributes["ICE-CONTROLLED"] = self._tie_breaker  # a lite agent (§6.1.1)
        key = self.remote_pwd.encode("utf8")
        request.add_message_integrity(key)  # also appends FINGERPRINT
        self._probe = _Probe(addr, request.transaction_id, key, now)
        return bytes(request)
