"""ICE over TCP next to UDP in the ICE-lite agent: a TCP connection is an address of its own
(media/ice_lite.py `TcpAddress`), so consent and nominations stay per connection and the same
ip:port over UDP is another address. Then the in-memory pair (tests/secure_pair.py) moves a
live call from UDP to a TCP connection."""

from __future__ import annotations

from aioice import stun

from roomcast.media.ice_lite import IceLiteAgent, TcpAddress, describe, mapped_address
from roomcast.media.stun import parse_stun
from tests.secure_pair import CLIENT_ADDR, SecurePair
from tests.unit.test_consent_per_address import CONNECTED, RTP, media_for
from tests.unit.test_ice_lite import CLIENT_PWD, CLIENT_UFRAG, answer, check

UDP = ("198.51.100.7", 50000)
TCP = TcpAddress("198.51.100.7", 50000)  # the same ip and port, over TCP


def test_a_tcp_connection_is_never_the_udp_address_with_the_same_numbers() -> None:
    assert TCP != UDP and UDP != TCP
    assert {UDP: "udp"}.get(TCP) is None  # the mux's routing tables keep them apart
    assert TCP == TcpAddress("198.51.100.7", 50000)
    assert mapped_address(TCP) == UDP == mapped_address(UDP)
    assert describe(TCP) == "tcp:198.51.100.7:50000"
    assert describe(UDP) == "udp:198.51.100.7:50000"


def test_a_nomination_over_tcp_moves_media_only_when_that_connection_answers() -> None:
    ice = IceLiteAgent("srv1", "server-password-0123456789")
    ice.set_remote_credentials(CLIENT_UFRAG, CLIENT_PWD)
    first = ice.handle(check(), UDP, 0.0)
    assert first.consent and ice.remote_address == UDP
    over_tcp = ice.handle(check(use_candidate=True), TCP, 0.5)
    assert over_tcp.authenticated and not over_tcp.consent and over_tcp.probe is not None
    # The answer to a check over TCP reflects the connection's remote end (RFC 8489 §14.2).
    response = parse_stun(over_tcp.response or b"")
    assert response is not None and response.message_class == stun.Class.RESPONSE
    assert response.attributes["XOR-MAPPED-ADDRESS"] == UDP
    # An answer to our check that comes over UDP from the same numbers is no proof …
    assert not ice.handle_response(answer(over_tcp.probe), UDP)
    assert ice.remote_address == UDP
    # … the one on the connection is.
    assert ice.handle_response(answer(over_tcp.probe), TCP)
    assert ice.remote_address == TCP
    # From now on only checks on that connection are consent.
    assert ice.handle(check(), TCP, 1.0).consent
    assert not ice.handle(check(), UDP, 1.0).consent


def test_a_live_call_moves_from_udp_to_a_tcp_connection_and_keeps_its_media() -> None:
    pair = SecurePair()
    pair.connect()
    moved_at = pair.now
    tcp = TcpAddress(*CLIENT_ADDR)
    pair.move_client(tcp)  # e.g. UDP got blocked and the client's ICE fell back to TCP
    pair.run_until(lambda: pair.server.ice.remote_address == tcp)
    assert pair.now - moved_at <= 6.5  # its next consent check nominates the connection
    switched = len(pair.sent)
    media_for(pair, 40)
    assert pair.server.state is pair.client.state is CONNECTED
    assert len(pair.client.received.rtp) == 40
    assert not [d for d, to in pair.sent[switched:] if to == CLIENT_ADDR]  # nothing over UDP
    pair.client.send_rtp(RTP)
    pair.run_until(lambda: pair.server.received.rtp == [RTP])
