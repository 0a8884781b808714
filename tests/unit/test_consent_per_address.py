"""Consent is per address (security review M2; RFC 7675 §5.1), on the in-memory pair with a
fake clock (tests/secure_pair.py): a nomination spoofed from a victim's address does not
redirect media there, checks from another address do not keep the address we send to alive,
and a real client that changes networks (checks and answers from its new address) keeps its
media. tests/integration/test_consent_per_address.py performs the attack on a real server."""

from __future__ import annotations

import itertools
import struct

import pytest

from roomcast.media.demux import PacketClass
from roomcast.media.secure_channel import TransportState
from tests.secure_pair import (
    CLIENT_ADDR,
    SERVER_PWD,
    SERVER_UFRAG,
    SecurePair,
    binding_request_bytes,
)


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, 960 * seq, 0xCAFE0001) + b"\x01opus" * 20


RTP = rtp(7)
_SEQUENCE = itertools.count(100)  # SRTP drops replays: every packet gets its own number
VICTIM = ("203.0.113.9", 4444)  # an address the client spoofs
NEW_NETWORK = ("198.51.100.8", 40000)  # where the client really moves
CONNECTED, FAILED = TransportState.CONNECTED, TransportState.FAILED


def nomination(*, use_candidate: bool = True) -> bytes:
    """An authenticated check, as anyone holding the server's ICE credentials can build."""
    return binding_request_bytes(SERVER_UFRAG, SERVER_PWD, use_candidate=use_candidate)


def media_for(pair: SecurePair, seconds: int) -> None:
    """The server forwards one packet a second to its subscriber while time passes."""
    for _ in range(seconds):
        pair.server.send_rtp(
            rtp(len(pair.client.received.rtp) + pair.client.received.undecryptable)
        )
        pair.run_for(1.0)


def test_a_spoofed_nomination_does_not_redirect_media() -> None:
    pair = SecurePair()
    pair.connect()
    pair.inject(nomination(), VICTIM)  # once; the client's own checks go on from its address
    media_for(pair, 60)
    assert pair.sent_to(VICTIM, PacketClass.RTP) == []
    assert pair.sent_to(VICTIM, PacketClass.DTLS) == []
    # All the victim got: the answer to the spoofed check and our one check of its address.
    assert len(pair.sent_to(VICTIM, PacketClass.STUN)) == 2
    assert pair.server.ice.remote_address == CLIENT_ADDR
    assert len(pair.client.received.rtp) == 60 and pair.server.state is CONNECTED


def test_a_nomination_repeated_from_a_silent_address_costs_one_check_each() -> None:
    pair = SecurePair()
    pair.connect()
    for _ in range(20):
        pair.inject(nomination(), VICTIM)
        pair.run_for(1.0)
    # One answer and at most one check per spoofed request: no amplification, no media.
    assert len(pair.sent_to(VICTIM, PacketClass.STUN)) <= 2 * 20
    assert pair.sent_to(VICTIM, PacketClass.RTP) == []
    assert pair.server.ice.remote_address == CLIENT_ADDR


def test_checks_from_another_address_do_not_keep_the_sending_address_alive() -> None:
    pair = SecurePair()
    pair.connect()
    pair.run_for(20.0)
    pair.client_leaves()  # the address we send to goes silent …
    expires = pair.server.channel.next_timeout()
    assert expires is not None and expires <= pair.now + 30.0
    while pair.server.state is CONNECTED and pair.now < expires + 30.0:
        # … while valid checks keep coming from another address, nominating or not.
        pair.inject(nomination(use_candidate=pair.now % 2 < 1), VICTIM)
        pair.run_for(1.0)
    assert pair.server.state is FAILED
    assert pair.server.channel.error == "ICE consent expired"
    assert pair.now == pytest.approx(expires, abs=1.0)  # RFC 7675 §5.1: 30 s, not refreshed
    assert pair.sent_to(VICTIM, PacketClass.RTP) == []


def test_a_client_that_changes_networks_keeps_its_media() -> None:
    pair = SecurePair()
    pair.connect()
    moved_at = pair.now
    pair.move_client(NEW_NETWORK)
    # Its next consent check (RFC 7675 §5.1: 4-6 s) nominates the new address; the server
    # checks that address back, the client answers, and media follows.
    pair.run_until(lambda: pair.server.ice.remote_address == NEW_NETWORK)
    assert pair.now - moved_at <= 6.5
    switched = len(pair.sent)
    media_for(pair, 60)  # consent now comes from the new address's checks
    assert pair.server.state is pair.client.state is CONNECTED
    assert len(pair.client.received.rtp) == 60
    assert not [d for d, to in pair.sent[switched:] if to == CLIENT_ADDR]
    pair.client.send_rtp(RTP)
    pair.run_until(lambda: pair.server.received.rtp == [RTP])


def test_an_ice_restart_with_a_change_of_network() -> None:
    """A resume: the server restarts ICE (new ufrag/pwd in its offer) and the client comes
    back from another network with checks signed with the new credentials."""
    pair = SecurePair()
    pair.connect()
    new_pwd = "server-password-new-0123456"
    assert pair.server.ice.restart("srv2", new_pwd) is None
    pair.client.ice.set_remote_credentials("srv2", new_pwd)  # from the offer
    pair.move_client(NEW_NETWORK)
    pair.run_until(lambda: pair.server.ice.remote_address == NEW_NETWORK)
    assert pair.server.ice.previous_ufrag is None  # the new credentials were used
    media_for(pair, 40)
    assert pair.server.state is pair.client.state is CONNECTED
    assert len(pair.client.received.rtp) == 40
