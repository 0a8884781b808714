"""TurnCore fed client messages on a fake clock (RFC 8656): authentication, allocations,
lifetimes, quotas, permissions and channels, and that it relays to the media port only."""

from __future__ import annotations

import hashlib
import hmac
import random
import struct

from aioice import stun

from roomcast.turn.allocation import CHANNEL_LIFETIME, PERMISSION_LIFETIME
from roomcast.turn.auth import NONCE_LIFETIME
from roomcast.turn.core import DEFAULT_LIFETIME, MAX_LIFETIME, TurnLimits
from roomcast.turn.credentials import long_term_key
from roomcast.turn.wire import channel_data
from tests.unit.turn_fakes import (
    LOCAL_MEDIA,
    MEDIA,
    MEDIA_PORT,
    PUBLIC_IP,
    FakeLink,
    FakeRelays,
    TurnClient,
    make_core,
)


def allocated() -> tuple[TurnClient, FakeRelays, list[str]]:
    core, relays, clock, hits = make_core()
    client = TurnClient(core, clock)
    assert client.allocate().message_class == stun.Class.RESPONSE
    return client, relays, hits


def test_an_unauthenticated_allocate_is_challenged_then_succeeds_with_the_credential() -> None:
    core, relays, clock, _ = make_core()
    client = TurnClient(core, clock)
    core.receive(bytes(client.message(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 17 << 24})),
                 client.link, clock.now)  # fmt: skip
    challenge = client.link.last()
    assert challenge.error_code == 401
    assert challenge.attributes["REALM"] == "roomcast" and challenge.attributes["NONCE"]
    assert "MESSAGE-INTEGRITY" not in challenge.attributes  # RFC 8489 §9.2.4
    response = client.allocate()
    assert response.message_class == stun.Class.RESPONSE
    assert response.check_message_integrity(client.key)
    relay, allocation = relays.opened[0]
    assert response.attributes["XOR-RELAYED-ADDRESS"] == (PUBLIC_IP, relay.port)
    assert response.attributes["XOR-MAPPED-ADDRESS"] == client.link.address
    assert response.attributes["LIFETIME"] == DEFAULT_LIFETIME
    assert client.link.allocation is allocation and allocation.user == "PA_alice"
    assert core.allocation_count == 1


def test_a_wrong_password_or_a_foreign_username_is_401() -> None:
    core, _, clock, _ = make_core()
    client = TurnClient(core, clock)
    client.password = "guessed"
    assert client.allocate().error_code == 401
    stranger = TurnClient(core, clock)
    stranger.username = stranger.username.replace("APIkey", "OtherKey")
    assert stranger.allocate().error_code == 401
    assert core.allocation_count == 0


def test_a_request_with_integrity_but_no_nonce_is_400() -> None:
    core, _, clock, _ = make_core()
    client = TurnClient(core, clock)
    message = client.message(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 17 << 24})
    message.attributes["USERNAME"] = client.username
    message.add_message_integrity(client.key)
    core.receive(bytes(message), client.link, clock.now)
    assert client.link.last().error_code == 400


def test_a_stale_nonce_is_438_with_a_fresh_one_and_the_retry_succeeds() -> None:
    core, _, clock, _ = make_core()
    client = TurnClient(core, clock)
    client.allocate()
    old = client.nonce
    clock.now += NONCE_LIFETIME + 1
    sent = len(client.link.sent)
    response = client.refresh()
    assert stun.parse_message(client.link.sent[sent][0]).error_code == 438
    assert response.message_class == stun.Class.RESPONSE and client.nonce != old


def test_a_nonce_is_bound_to_the_client_address() -> None:
    core, _, clock, _ = make_core()
    client = TurnClient(core, clock)
    client.allocate()
    moved = TurnClient(core, clock, FakeLink(("198.51.100.99", 40000)))
    moved.nonce = client.nonce  # replayed from elsewhere
    request = moved.message(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 17 << 24})
    core.receive(moved.signed(request), moved.link, clock.now)
    assert moved.link.last().error_code == 438


def test_an_expired_credential_cannot_allocate_but_keeps_refreshing_its_allocation() -> None:
    core, _, clock, _ = make_core()
    client = TurnClient(core, clock, ttl=300)
    client.allocate()
    clock.now += 400  # the credential expired; the allocation (600 s) did not
    assert client.refresh().message_class == stun.Class.RESPONSE
    assert client.permission().message_class == stun.Class.RESPONSE
    late = TurnClient(core, clock, FakeLink(("198.51.100.8", 1)))
    late.username, late.password = client.username, client.password
    assert late.allocate().error_code == 401


def test_a_retransmitted_allocate_gets_the_same_answer_another_gets_437() -> None:
    core, relays, clock, _ = make_core()
    client = TurnClient(core, clock)
    client.allocate()
    request = client.message(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 17 << 24})
    first = client.send(request)
    again = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, request.transaction_id)
    again.attributes["REQUESTED-TRANSPORT"] = 17 << 24
    assert first.error_code == 437  # a second allocation on one 5-tuple
    assert client.send(again).error_code == 437
    original = client.link.sent[1][0]  # the success
    retransmit = stun.parse_message(original)
    repeat = stun.Message(stun.Method.ALLOCATE, stun.Class.REQUEST, retransmit.transaction_id)
    repeat.attributes["REQUESTED-TRANSPORT"] = 17 << 24
    assert client.send(repeat).attributes["XOR-RELAYED-ADDRESS"] == (
        PUBLIC_IP,
        relays.opened[0][0].port,
    )
    assert len(relays.opened) == 1


def test_allocate_checks_transport_family_and_unknown_attributes() -> None:
    core, _, clock, _ = make_core()
    client = TurnClient(core, clock)
    assert client.allocate(**{"REQUESTED-TRANSPORT": 6 << 24}).error_code == 442  # TCP
    assert client.send(client.message(stun.Method.ALLOCATE)).error_code == 400
    # REQUESTED-ADDRESS-FAMILY IPv6 and EVEN-PORT: aioice cannot build them, append by hand.
    ipv6_family, even_port = (0x0017, b"\x02\x00\x00\x00", 440), (0x0018, b"\x80\0\0\0", 420)
    for kind, value, code in (ipv6_family, even_port):
        message = client.message(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 17 << 24})
        message.attributes.update(USERNAME=client.username, REALM=client.realm, NONCE=client.nonce)
        data = _with_attribute(bytes(message), kind, value, client.key)
        core.receive(data, client.link, clock.now)
        response = client.link.last()
        assert response.error_code == code
        if code == 420:
            assert struct.pack("!HHH", 0x000A, 2, 0x0018) in client.link.sent[-1][0]
    assert core.allocation_count == 0


def _with_attribute(message: bytes, kind: int, value: bytes, key: bytes) -> bytes:
    """`message` with one more attribute, then MESSAGE-INTEGRITY over it (RFC 8489 §14.5)."""
    extended = message + struct.pack("!HH", kind, len(value)) + value
    signed_length = extended[:2] + struct.pack("!H", len(extended) - 20 + 24) + extended[4:]
    mac = hmac.new(key, signed_length, "sha1").digest()
    return signed_length + struct.pack("!HH", 0x0008, 20) + mac


def test_lifetimes_default_max_and_refresh_zero_deletes() -> None:
    core, relays, clock, _ = make_core()
    client = TurnClient(core, clock)
    assert client.allocate(LIFETIME=60).attributes["LIFETIME"] == DEFAULT_LIFETIME
    assert client.refresh(10**6).attributes["LIFETIME"] == MAX_LIFETIME
    assert client.refresh(1200).attributes["LIFETIME"] == 1200
    clock.now += 1199
    core.expire(clock.now)
    assert core.allocation_count == 1
    assert client.refresh(0).attributes["LIFETIME"] == 0
    assert core.allocation_count == 0 and relays.opened[0][0].closed
    assert client.link.allocation is None
    assert client.refresh().error_code == 437  # nothing left to refresh


def test_an_allocation_past_its_lifetime_is_deleted() -> None:
    core, relays, clock, _ = make_core()
    client = TurnClient(core, clock)
    client.allocate()
    clock.now += DEFAULT_LIFETIME + 1
    core.expire(clock.now)
    assert core.allocation_count == 0 and relays.opened[0][0].closed
    assert core.stats["expired"] == 1


def test_requests_on_an_allocation_need_the_credential_that_made_it() -> None:
    client, _, _ = allocated()
    other = TurnClient(client.core, client.clock, client.link, participant="PA_mallory")
    other.nonce = client.nonce
    assert other.refresh().error_code == 441


def test_per_participant_and_total_quotas() -> None:
    core, _, clock, hits = make_core(TurnLimits(per_user=2, total=3))
    for port in (1, 2):
        link = FakeLink(("198.51.100.7", port))
        assert TurnClient(core, clock, link).allocate().error_code is None
    third = TurnClient(core, clock, FakeLink(("198.51.100.7", 3)))
    assert third.allocate().error_code == 486
    assert hits == ["turn_allocations_per_user"]
    bob = TurnClient(core, clock, FakeLink(("198.51.100.8", 1)), participant="PA_bob")
    assert bob.allocate().error_code is None
    carol = TurnClient(core, clock, FakeLink(("198.51.100.9", 1)), participant="PA_carol")
    assert carol.allocate().error_code == 508
    assert hits[-1] == "turn_allocations"
    core.link_closed(bob.link)  # a TCP connection closes: its allocation goes
    assert carol.allocate().error_code is None


def test_no_free_relay_port_is_508() -> None:
    core, _, clock, hits = make_core(relays=FakeRelays(ports=0))
    assert TurnClient(core, clock).allocate().error_code == 508
    assert hits == ["turn_relay_ports"]


def test_permissions_and_channels_only_for_the_media_port() -> None:
    client, _, hits = allocated()
    assert client.permission(("192.0.2.1", MEDIA_PORT)).error_code == 403
    assert client.permission((PUBLIC_IP, 9)).error_code is None  # permissions are per IP
    assert client.bind(0x4000, (PUBLIC_IP, 9)).error_code == 403  # a channel is per address
    assert client.bind(0x4000, ("192.0.2.1", MEDIA_PORT)).error_code == 403
    assert hits == ["turn_peer_refused"] * 3
    assert client.bind(0x3FFF).error_code == 400  # not a channel number
    assert client.bind(0x4000).error_code is None
    assert client.bind(0x4001).error_code == 400  # the peer has a channel
    assert client.bind(0x4000).error_code is None  # a refresh


def test_send_indications_to_anyone_else_are_dropped() -> None:
    client, relays, hits = allocated()
    client.permission()
    relay = relays.opened[0][0]
    core, link, now = client.core, client.link, client.clock.now
    for peer in (("192.0.2.1", MEDIA_PORT), (PUBLIC_IP, 9)):
        send = stun.Message(stun.Method.SEND, stun.Class.INDICATION)
        send.attributes.update({"XOR-PEER-ADDRESS": peer, "DATA": b"x"})
        core.receive(bytes(send), link, now)
    assert relay.sent == [] and hits == ["turn_peer_refused"] * 2
    send = stun.Message(stun.Method.SEND, stun.Class.INDICATION)
    send.attributes.update({"XOR-PEER-ADDRESS": MEDIA, "DATA": b"\x16hello"})
    core.receive(bytes(send), link, now)
    assert relay.sent == [(b"\x16hello", LOCAL_MEDIA)]  # to the media socket's local address


def test_data_comes_back_as_a_data_indication_then_as_channel_data() -> None:
    client, relays, _ = allocated()
    client.permission()
    relay, allocation = relays.opened[0]
    core, link, now = client.core, client.link, client.clock.now
    send = stun.Message(stun.Method.SEND, stun.Class.INDICATION)
    send.attributes.update({"XOR-PEER-ADDRESS": MEDIA, "DATA": b"\x00\x01check"})
    core.receive(bytes(send), link, now)
    allocation.from_peer(b"\x16dtls", LOCAL_MEDIA, now)
    indication = link.last()
    assert indication.message_method == stun.Method.DATA
    assert indication.attributes["XOR-PEER-ADDRESS"] == MEDIA
    assert indication.attributes["DATA"] == b"\x16dtls" and link.sent[-1][1] is False
    client.bind(0x4001)
    core.receive(channel_data(0x4001, b"\x80rtp", padded=False), link, now)
    assert relay.sent[-1] == (b"\x80rtp", LOCAL_MEDIA)
    allocation.from_peer(b"\x80rtp-back", LOCAL_MEDIA, now)
    assert link.sent[-1] == (channel_data(0x4001, b"\x80rtp-back", padded=False), True)
    allocation.from_peer(b"\x80spoofed", ("10.0.0.99", MEDIA_PORT), now)  # not the media port
    assert link.sent[-1][0].endswith(b"rtp-back")
    assert core.totals.to_peer_packets == 2 and core.totals.to_client_packets == 2


def test_over_tcp_channel_data_is_padded() -> None:
    core, relays, clock, _ = make_core()
    client = TurnClient(core, clock, FakeLink(stream=True))
    client.allocate()
    client.bind()
    relays.opened[0][1].from_peer(b"\x80abcde", LOCAL_MEDIA, clock.now)
    assert client.link.sent[-1][0] == channel_data(0x4000, b"\x80abcde", padded=True)
    assert len(client.link.sent[-1][0]) % 4 == 0


def test_permissions_and_channels_expire() -> None:
    client, relays, _ = allocated()
    client.bind()
    relay, allocation = relays.opened[0]
    core, link, clock = client.core, client.link, client.clock
    clock.now += PERMISSION_LIFETIME + 1
    core.expire(clock.now)
    sent = len(link.sent)
    allocation.from_peer(b"\x80late", LOCAL_MEDIA, clock.now)  # the permission lapsed
    assert len(link.sent) == sent
    client.refresh()
    clock.now = clock.now - PERMISSION_LIFETIME - 1 + CHANNEL_LIFETIME + 1
    core.receive(channel_data(0x4000, b"\x80x", padded=False), link, clock.now)
    assert relay.sent == []  # the channel lapsed
    # ... and stays reserved for its peer for a while (RFC 8656 §12)
    assert allocation.channels[0x4000].peer == MEDIA


def test_binding_requests_are_answered_without_credentials() -> None:
    core, _, clock, _ = make_core()
    link = FakeLink()
    core.receive(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)), link, clock.now)
    assert link.last().attributes["XOR-MAPPED-ADDRESS"] == link.address


def test_garbage_and_channel_data_without_an_allocation_are_dropped() -> None:
    core, _, clock, _ = make_core()
    link = FakeLink()
    for data in (b"", b"\x00\x01", b"\xff" * 30, channel_data(0x4000, b"x", padded=False)):
        core.receive(data, link, clock.now)
    assert link.sent == []


def test_credentials_key_matches_rfc_8489() -> None:
    # RFC 8489 §9.2.2: MD5(username ":" realm ":" password)
    assert long_term_key("u", "r", "p") == hashlib.md5(b"u:r:p").digest()


def test_hostile_bytes_never_raise_nor_allocate() -> None:
    """Random bytes, and valid requests cut short or with flipped bits, from many addresses."""
    core, relays, clock, _ = make_core()
    client = TurnClient(core, clock)
    client.allocate()
    valid = [
        client.signed(client.message(stun.Method.CHANNEL_BIND, **{"CHANNEL-NUMBER": 0x4000,
                                                                  "XOR-PEER-ADDRESS": MEDIA})),
        client.signed(client.message(stun.Method.ALLOCATE, **{"REQUESTED-TRANSPORT": 17 << 24})),
        channel_data(0x4000, b"\x80" * 40, padded=False),
    ]  # fmt: skip
    rng = random.Random(15)
    for i in range(3000):
        link = FakeLink(("198.51.100.200", i))
        base = bytearray(rng.choice(valid))
        kind = i % 3
        if kind == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        elif kind == 1:
            data = bytes(base[: rng.randrange(len(base))])
        else:
            base[rng.randrange(len(base))] ^= 1 << rng.randrange(8)
            data = bytes(base)
        core.receive(data, link, clock.now)
        assert link.allocation is None
    assert core.allocation_count == 1 and len(relays.opened) == 1
