"""A TURN client's requests (built with aioice.stun, as a client builds them) and fakes of the
core's protocols (`ClientLink`, `RelayPorts`) for tests/unit/test_turn_*.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from aioice import stun

from roomcast.turn.allocation import Allocation, MediaPeer
from roomcast.turn.auth import Authenticator, NonceIssuer
from roomcast.turn.core import TurnCore, TurnLimits
from roomcast.turn.credentials import (
    REALM,
    CredentialVerifier,
    embedded_credentials,
    long_term_key,
)

API_KEY, API_SECRET = "APIkey", "a-secret-of-at-least-thirty-two-characters"
PUBLIC_IP = "203.0.113.10"  # the node's advertised address
MEDIA_PORT = 7882
MEDIA = (PUBLIC_IP, MEDIA_PORT)  # as clients know the media port
LOCAL_MEDIA = ("10.0.0.5", MEDIA_PORT)  # where relay sockets send
WALL = 1_700_000_000.0  # Unix time of the fake clock's start


class FakeLink:
    def __init__(self, address: tuple[str, int] = ("198.51.100.7", 40000), stream: bool = False):
        self.address = address
        self.stream = stream
        self.allocation: Allocation | None = None
        self.sent: list[tuple[bytes, bool]] = []

    def send(self, data: bytes, *, droppable: bool) -> None:
        self.sent.append((data, droppable))

    def last(self) -> stun.Message:
        return stun.parse_message(self.sent[-1][0])


@dataclass
class FakeRelay:
    port: int
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    closed: bool = False

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def close(self) -> None:
        self.closed = True


class FakeRelays:
    def __init__(self, ports: int = 100) -> None:
        self.free = ports
        self.opened: list[tuple[FakeRelay, Allocation]] = []

    def open(self, allocation: Allocation) -> FakeRelay | None:
        if self.free <= 0:
            return None
        self.free -= 1
        relay = FakeRelay(30000 + len(self.opened))
        self.opened.append((relay, allocation))
        return relay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0  # monotonic

    def wall(self) -> float:
        return WALL + self.now - 100.0


def make_core(
    limits: TurnLimits | None = None, relays: FakeRelays | None = None
) -> tuple[TurnCore, FakeRelays, Clock, list[str]]:
    clock = Clock()
    relays = relays or FakeRelays()
    hits: list[str] = []
    core = TurnCore(
        Authenticator(CredentialVerifier({API_KEY: API_SECRET}), NonceIssuer(b"k" * 32)),
        relays,
        MediaPeer(frozenset({PUBLIC_IP}), MEDIA_PORT, LOCAL_MEDIA),
        PUBLIC_IP,
        limits or TurnLimits(),
        wall=clock.wall,
        on_limit=hits.append,
    )
    return core, relays, clock, hits


class TurnClient:
    """Requests of one participant's credential over `link`, signed once challenged."""

    def __init__(
        self,
        core: TurnCore,
        clock: Clock,
        link: FakeLink | None = None,
        participant: str = "PA_alice",
        ttl: int = 300,
    ) -> None:
        self.core, self.clock = core, clock
        self.link = link or FakeLink()
        self.username, self.password = embedded_credentials(
            API_KEY, API_SECRET, participant, ttl, clock.wall()
        )
        self.nonce: bytes | None = None
        self.realm = REALM

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, self.realm, self.password)

    def message(self, method: stun.Method, **attributes: object) -> stun.Message:
        message = stun.Message(method, stun.Class.REQUEST)
        message.attributes.update(attributes)
        return message

    def signed(self, message: stun.Message) -> bytes:
        if self.nonce is None:
            return bytes(message)
        message.attributes.update(USERNAME=self.username, REALM=self.realm, NONCE=self.nonce)
        message.add_message_integrity(self.key)
        return bytes(message)

    def send(self, message: stun.Message) -> stun.Message:
        """Send it (retrying once after a 401/438 challenge, as clients do); the response."""
        before = len(self.link.sent)
        self.core.receive(self.signed(message), self.link, self.clock.now)
        assert len(self.link.sent) == before + 1, "one response"
        response = self.link.last()
        if response.error_code in (401, 438) and "NONCE" in response.attributes:
            retry_needed = self.nonce is None or response.error_code == 438
            self.nonce = response.attributes["NONCE"]
            if retry_needed:
                retry = stun.Message(message.message_method, stun.Class.REQUEST)
                retry.attributes.update(
                    {k: v for k, v in message.attributes.items() if k not in _AUTH}
                )
                return self.send(retry)
        return response

    def allocate(self, **attributes: object) -> stun.Message:
        attributes.setdefault("REQUESTED-TRANSPORT", 17 << 24)
        return self.send(self.message(stun.Method.ALLOCATE, **attributes))

    def permission(self, peer: tuple[str, int] = MEDIA) -> stun.Message:
        return self.send(self.message(stun.Method.CREATE_PERMISSION, **{"XOR-PEER-ADDRESS": peer}))

    def bind(self, number: int = 0x4000, peer: tuple[str, int] = MEDIA) -> stun.Message:
        return self.send(
            self.message(
                stun.Method.CHANNEL_BIND, **{"CHANNEL-NUMBER": number, "XOR-PEER-ADDRESS": peer}
            )
        )

    def refresh(self, lifetime: int | None = None) -> stun.Message:
        attributes = {} if lifetime is None else {"LIFETIME": lifetime}
        return self.send(self.message(stun.Method.REFRESH, **attributes))


_AUTH = ("USERNAME", "REALM", "NONCE", "MESSAGE-INTEGRITY", "FINGERPRINT")
