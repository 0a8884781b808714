"""A client and a server transport in memory, on a fake clock, with loss: no sockets, no loop.

Each side is the I/O-free state the real adapters drive, glued the way they glue it:
  server  `IceLiteAgent` + `SecureChannel(server=True)`, as `media.transport.PeerTransport`
  client  `client.ice.IceAgent` + `SecureChannel(server=False)`, as `client.peer.ClientPeer`
`SecurePair.progress()` takes one step: deliver the oldest datagram in flight, or else move the
clock to the earliest timeout and fire it. Loss follows a pattern per direction
(`loss_pattern`), or `cut`. The client can move to another address (`move_client`), and anyone
can send the server a datagram from any address (`inject`, a spoofed source); what is sent to
an address nobody holds is only recorded (`sent_to`).

One thing is not simulated: OpenSSL runs its DTLS retransmission timer (RFC 6347 §4.2.4.1,
first 1 s) on the wall clock and the binding cannot take another, so before a due handshake
timeout fires the pair sleeps out OpenSSL's real remainder. Only tests that lose a handshake
flight pay that second; everything else runs in milliseconds.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pylibsrtp
from aioice import stun

from roomcast.client.ice import IceAgent
from roomcast.media.demux import PacketClass, classify
from roomcast.media.dtls import DtlsCertificate
from roomcast.media.ice_lite import Address, IceLiteAgent
from roomcast.media.secure_channel import SecureChannel, TransportState
from roomcast.media.stun import parse_stun

SERVER_ADDR: Address = ("192.0.2.1", 3478)
CLIENT_ADDR: Address = ("198.51.100.7", 50000)
SERVER_UFRAG, SERVER_PWD = "srv1", "server-password-0123456789"
SERVER_CERT = DtlsCertificate.generate()
CLIENT_CERT = DtlsCertificate.generate()

Loss = Callable[[bytes], bool]  # True: this datagram is lost


def loss_pattern(pattern: Sequence[bool], only: PacketClass | None = None) -> Loss:
    """Lose the n-th datagram (of class `only`, or of any class) when pattern[n] is True;
    datagrams past the end of the pattern arrive."""
    remaining = collections.deque(pattern)

    def lose(datagram: bytes) -> bool:
        if only is not None and classify(datagram[0]) is not only:
            return False
        return remaining.popleft() if remaining else False

    return lose


def no_loss(_datagram: bytes) -> bool:
    return False


def binding_request_bytes(ufrag: str, pwd: str, *, use_candidate: bool = False) -> bytes:
    """A controlling agent's check for `ufrag`, signed with `pwd` (RFC 8445 §7.2.2)."""
    request = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{ufrag}:cli1"
    request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = 1
    if use_candidate:
        request.attributes["USE-CANDIDATE"] = None
    request.add_message_integrity(pwd.encode())
    return bytes(request)


def binding_request(ufrag: str, pwd: str, *, use_candidate: bool = False) -> stun.Message:
    """The same check, parsed as the receiver sees it."""
    return stun.parse_message(binding_request_bytes(ufrag, pwd, use_candidate=use_candidate))


@dataclass
class Received:
    """What one side decrypted."""

    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)
    records: list[bytes] = field(default_factory=list)
    undecryptable: int = 0  # SRTP that did not unprotect (not keyed, or forged)


class _Side:
    channel: SecureChannel

    def __init__(self) -> None:
        self.received = Received()
        self.outbox: list[tuple[bytes, Address]] = []

    @property
    def state(self) -> TransportState:
        return self.channel.state

    def send_rtp(self, packet: bytes) -> None:
        self._send_media(self.channel.protect_rtp(packet))

    def send_rtcp(self, packet: bytes) -> None:
        self._send_media(self.channel.protect_rtcp(packet))

    def send_record(self, data: bytes) -> bool:
        sent = self.channel.send_record(data)
        self._flush()
        return sent

    def receive(self, data: bytes, source: Address, now: float) -> None:
        kind = classify(data[0])
        if kind is PacketClass.STUN:
            message = parse_stun(data)
            if message is not None:
                self._receive_stun(message, source, now)
        elif kind is PacketClass.DTLS:
            self.received.records += self.channel.receive(data, now)
        elif kind is PacketClass.RTP:
            try:
                packet, is_rtcp = self.channel.unprotect(data)
            except pylibsrtp.Error:
                self.received.undecryptable += 1
            else:
                (self.received.rtcp if is_rtcp else self.received.rtp).append(packet)
        self._flush()

    def next_timeout(self) -> float | None:
        return self.channel.next_timeout()

    def handle_timeout(self, now: float) -> None:
        self.channel.handle_timeout(now)
        self._flush()

    def _flush(self) -> None:
        destination = self._remote()
        for datagram in self.channel.datagrams_to_send():
            if destination is not None:
                self.outbox.append((datagram, destination))

    def _send_media(self, datagram: bytes) -> None:
        destination = self._remote()
        assert destination is not None
        self.outbox.append((datagram, destination))

    def _receive_stun(self, message: stun.Message, source: Address, now: float) -> None:
        raise NotImplementedError

    def _remote(self) -> Address | None:
        raise NotImplementedError


class ServerSide(_Side):
    """What `PeerTransport` does with its agent and channel, without the socket."""

    def __init__(self, *, consent_timeout: float | None) -> None:
        super().__init__()
        self.ice = IceLiteAgent(SERVER_UFRAG, SERVER_PWD)
        self.channel = SecureChannel(SERVER_CERT, server=True, consent_timeout=consent_timeout)

    def set_remote_fingerprint(self, fingerprint: str) -> None:
        """As the remote answer arrives: records held until the certificate was verified are
        delivered now."""
        self.received.records += self.channel.set_remote_fingerprint(fingerprint)

    def _receive_stun(self, message: stun.Message, source: Address, now: float) -> None:
        if message.message_class != stun.Class.REQUEST:
            if self.ice.handle_response(message, source):
                self.channel.refresh_consent(now)  # it answered our check: send there now
            return
        check = self.ice.handle(message, source, now)
        if check.response is not None:
            self.outbox.append((check.response, source))
        if check.probe is not None:
            self.outbox.append((check.probe, source))
        if check.authenticated:
            if check.consent:
                self.channel.refresh_consent(now)  # RFC 7675 §5.1
            self.channel.start(now)

    def _remote(self) -> Address | None:
        return self.ice.remote_address


class ClientSide(_Side):
    """What `ClientPeer` does with its agent and channel (DTLS client), without the socket."""

    def __init__(self) -> None:
        super().__init__()
        self.ice = IceAgent(controlling=True)
        self.ice.set_remote_credentials(SERVER_UFRAG, SERVER_PWD)
        self.ice.add_remote_candidate(
            f"candidate:1 1 udp 2130706431 {SERVER_ADDR[0]} 3478 typ host"
        )
        self.channel = SecureChannel(CLIENT_CERT, server=False)

    def next_timeout(self) -> float | None:
        times = [t for t in (self.ice.next_timeout(), self.channel.next_timeout()) if t is not None]
        return min(times, default=None)

    def handle_timeout(self, now: float) -> None:
        self.outbox += self.ice.poll(now)
        if self.ice.failed:
            self.channel.fail("ICE failed")
        super().handle_timeout(now)

    def _receive_stun(self, message: stun.Message, source: Address, now: float) -> None:
        events = self.ice.handle(message, source, now)
        self.outbox += events.send
        if events.selected:
            self.channel.start(now)  # ClientHello

    def _remote(self) -> Address | None:
        return self.ice.selected


class SecurePair:
    """A client and a server side joined by an in-memory network on a fake clock."""

    def __init__(
        self,
        *,
        consent_timeout: float | None = 30.0,
        to_server: Loss = no_loss,
        to_client: Loss = no_loss,
        server_expects: str | None = CLIENT_CERT.fingerprint(),
        client_expects: str | None = SERVER_CERT.fingerprint(),
    ) -> None:
        """`*_expects`: the remote a=fingerprint each side knows before the handshake."""
        self.now = 0.0
        self.server = ServerSide(consent_timeout=consent_timeout)
        self.client = ClientSide()
        # The server knows the client's ICE credentials from its answer (or offer).
        self.server.ice.set_remote_credentials(
            self.client.ice.local_ufrag, self.client.ice.local_pwd
        )
        if server_expects is not None:
            self.server.set_remote_fingerprint(server_expects)
        if client_expects is not None:
            self.client.channel.set_remote_fingerprint(client_expects)
        self.client_addr = CLIENT_ADDR
        self.client_present = True
        self.loss: dict[_Side, Loss] = {self.server: to_server, self.client: to_client}
        self.in_flight: collections.deque[tuple[bytes, Address, Address]] = collections.deque()
        self.sent: list[tuple[bytes, Address]] = []  # (datagram, destination), in order
        self.lost: list[tuple[bytes, Address]] = []

    def cut(self, destination: Address, only: PacketClass | None = None) -> None:
        """From now on, lose everything (of class `only`) sent to `destination` (the server or
        the client, wherever it is)."""
        side = self.server if destination == SERVER_ADDR else self.client
        self.loss[side] = lambda d: only is None or classify(d[0]) is only

    def move_client(self, address: Address) -> None:
        """The client changes networks: it sends from `address`, and only what is sent there
        reaches it (datagrams still in flight to the old address are lost)."""
        self.client_addr = address

    def client_leaves(self) -> None:
        """The client is gone (closed, crashed, unplugged): it sends nothing more, its timers
        stop, and what is sent to its address is only recorded."""
        self.client_present = False

    def inject(self, datagram: bytes, source: Address) -> None:
        """A datagram to the server from any `source`, e.g. one the sender spoofed."""
        self.in_flight.append((datagram, source, SERVER_ADDR))

    def progress(self) -> bool:
        """One step; False when nothing is in flight and no timer is armed."""
        self._collect()
        if self.in_flight:
            datagram, source, destination = self.in_flight.popleft()
            side = self._side_at(destination)
            if side is not None:
                side.receive(datagram, source, self.now)
            return True
        due = self._timeouts()
        if not due:
            return False
        self.now = max(self.now, min(t for t, _ in due))
        for t, side in due:
            if t <= self.now:
                _wait_for_openssl(side.channel)
                side.handle_timeout(self.now)
        return True

    def run_until(self, done: Callable[[], bool], *, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if done():
                return
            if not self.progress():
                break
        assert done(), f"not done at t={self.now:.3f}: {self.server.state}, {self.client.state}"

    def run_for(self, seconds: float) -> None:
        """Everything that happens in the next `seconds` of fake time."""
        end = self.now + seconds
        while True:
            self._collect()
            if not self.in_flight:
                due = self._timeouts()
                if not due or min(t for t, _ in due) > end:
                    break
            self.progress()
        self.now = end

    def connect(self) -> None:
        self.run_until(lambda: self.connected)
        self._collect()
        while self.in_flight:  # the last flight, so that neither side retransmits later
            self.progress()

    @property
    def connected(self) -> bool:
        return self.server.state is self.client.state is TransportState.CONNECTED

    def sent_to(self, destination: Address, kind: PacketClass) -> list[bytes]:
        """Datagrams of one class handed to the network for `destination`, lost or not."""
        return [d for d, to in self.sent if to == destination and classify(d[0]) is kind]

    def _timeouts(self) -> list[tuple[float, _Side]]:
        sides = (self.server, self.client) if self.client_present else (self.server,)
        due = [(side.next_timeout(), side) for side in sides]
        return [(t, side) for t, side in due if t is not None]

    def _side_at(self, address: Address) -> _Side | None:
        if address == SERVER_ADDR:
            return self.server
        return self.client if address == self.client_addr and self.client_present else None

    def _collect(self) -> None:
        for side, source in ((self.server, SERVER_ADDR), (self.client, self.client_addr)):
            for datagram, destination in side.outbox:
                self.sent.append((datagram, destination))
                receiver = self._side_at(destination)
                if receiver is not None and self.loss[receiver](datagram):
                    self.lost.append((datagram, destination))
                else:
                    self.in_flight.append((datagram, source, destination))
            side.outbox.clear()


def _wait_for_openssl(channel: SecureChannel) -> None:
    """A due handshake timeout only retransmits once OpenSSL's wall-clock timer agrees."""
    if channel.state is TransportState.CONNECTING:
        remaining = channel.dtls_timer_remaining
        if remaining:
            time.sleep(remaining + 0.001)
