"""The DTLS-SRTP connection and the ICE-lite side of a server transport, in memory on a fake
clock (tests/secure_pair.py): the handshake, SRTP both ways, a lost flight, a fingerprint
mismatch, a fingerprint that comes after the handshake (security review L5: nothing flows
before it is verified), ICE restart and consent expiry. tests/integration/
test_transport_loopback.py runs the same over real UDP; tests/unit/test_consent_per_address.py
covers where the server sends."""

from __future__ import annotations

import struct
import time

import pylibsrtp
import pytest

from roomcast.media.demux import PacketClass
from roomcast.media.secure_channel import SecureChannel, TransportState
from tests.secure_pair import (
    CLIENT_ADDR,
    CLIENT_CERT,
    SERVER_ADDR,
    SERVER_CERT,
    SERVER_PWD,
    SERVER_UFRAG,
    SecurePair,
    binding_request,
    loss_pattern,
)


def rtp(seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 111, seq, 960 * seq, 0xCAFE0001) + b"\x01opus" * 20


RTP = rtp(7)
RTCP_RR = struct.pack("!BBHI", 0x80, 201, 1, 0xCAFE0001)
NEW, CONNECTING, CONNECTED = TransportState.NEW, TransportState.CONNECTING, TransportState.CONNECTED
FAILED, CLOSED = TransportState.FAILED, TransportState.CLOSED


def test_handshake_then_srtp_and_records_both_ways() -> None:
    pair = SecurePair()
    assert pair.server.state is NEW and pair.client.state is NEW
    pair.connect()
    server, client = pair.server, pair.client
    assert pair.now < 0.5  # checks, one answer, two DTLS round trips: no timer fired
    assert server.channel.srtp_profile == "SRTP_AEAD_AES_128_GCM"
    assert server.ice.remote_address == CLIENT_ADDR

    client.send_rtp(RTP)
    client.send_rtcp(RTCP_RR)
    server.send_rtp(RTP)
    server.send_rtcp(RTCP_RR)
    assert client.send_record(b"sctp from the client")
    assert server.send_record(b"sctp from the server")
    pair.run_until(lambda: bool(client.received.records and server.received.records))
    assert server.received.rtp == [RTP] and server.received.rtcp == [RTCP_RR]
    assert client.received.rtp == [RTP] and client.received.rtcp == [RTCP_RR]
    assert server.received.records == [b"sctp from the client"]
    assert client.received.records == [b"sctp from the server"]
    assert server.state is client.state is CONNECTED


def test_state_is_a_str_enum_equal_to_the_old_strings() -> None:
    assert TransportState.CONNECTED == "connected" and f"{TransportState.FAILED}" == "failed"
    assert {"closed": 1}[TransportState.CLOSED] == 1


def test_not_keyed_until_connected_and_after_close() -> None:
    channel = SecureChannel(SERVER_CERT, server=True)
    for call in (channel.protect_rtp, channel.protect_rtcp, channel.unprotect):
        with pytest.raises(pylibsrtp.Error):
            call(RTP)
    assert channel.send_record(b"x") is False
    pair = SecurePair()
    pair.connect()
    pair.server.channel.close()
    assert pair.server.state is CLOSED and pair.server.channel.next_timeout() is None
    with pytest.raises(pylibsrtp.Error):
        pair.server.channel.protect_rtp(RTP)
    pair.server.handle_timeout(pair.now)  # flushes the close_notify
    pair.run_until(lambda: pair.client.state is CLOSED)  # the peer's close_notify closes it


def test_lost_server_flight_is_retransmitted() -> None:
    # The server's first DTLS flight (ServerHello … ServerHelloDone) is lost on the way.
    pair = SecurePair(to_client=loss_pattern([True], only=PacketClass.DTLS))
    started = time.monotonic()
    pair.connect()
    # OpenSSL's first retransmission timer is 1 s (RFC 6347 §4.2.4.1), on the wall clock.
    assert 0.99 < pair.now < 2.0
    assert time.monotonic() - started < 1.9
    assert len(pair.lost) == 1
    server_flights = pair.sent_to(CLIENT_ADDR, PacketClass.DTLS)
    assert server_flights[0] == pair.lost[0][0]  # the lost one …
    assert server_flights[0] != server_flights[1]  # … resent (a new record sequence number)
    assert len(server_flights[1]) == len(server_flights[0])
    pair.server.send_rtp(RTP)
    pair.run_until(lambda: pair.client.received.rtp == [RTP])


def test_fingerprint_mismatch_fails_and_delivers_nothing() -> None:
    pair = SecurePair(server_expects=SERVER_CERT.fingerprint())  # not the client's
    pair.run_until(lambda: pair.client.state is CONNECTED)  # the client's side completes
    server = pair.server
    assert server.state is FAILED
    assert server.channel.error == "remote certificate does not match a=fingerprint"
    assert server.channel.next_timeout() is None
    pair.client.send_rtp(RTP)
    assert pair.client.send_record(b"sctp")
    pair.run_for(1.0)
    assert server.received.rtp == [] and server.received.records == []
    assert server.received.undecryptable == 1
    with pytest.raises(pylibsrtp.Error):
        server.channel.protect_rtp(RTP)


def test_nothing_flows_before_a_late_fingerprint_is_verified() -> None:
    pair = SecurePair(server_expects=None)  # the client's answer is not in yet
    pair.run_until(lambda: pair.client.state is CONNECTED)  # the handshake beat the answer
    server = pair.server
    assert server.state is CONNECTING and server.channel.awaiting_fingerprint
    with pytest.raises(pylibsrtp.Error):
        server.channel.protect_rtp(RTP)  # not keyed: nothing can be sent …
    pair.client.send_rtp(RTP)
    assert pair.client.send_record(b"sctp INIT")
    pair.run_for(1.0)
    assert server.received.rtp == [] and server.received.undecryptable == 1  # … or accepted
    assert server.received.records == []  # held, not delivered
    # Consent still expires meanwhile (30 s from the handshake, or from the last check).
    timeout = server.channel.next_timeout()
    assert timeout is not None and pair.now < timeout <= pair.now + 30.0

    server.set_remote_fingerprint(CLIENT_CERT.fingerprint())  # the answer
    assert server.state is CONNECTED and server.channel.srtp_profile is not None
    assert server.received.records == [b"sctp INIT"]
    server.send_rtp(RTP)
    pair.client.send_rtp(rtp(8))
    pair.run_until(lambda: pair.client.received.rtp == [RTP] and len(server.received.rtp) == 1)
    # A later answer with another fingerprint (renegotiation) still fails the channel.
    server.channel.set_remote_fingerprint("sha-256 " + ":".join(["AB"] * 32))
    assert server.state is FAILED


def test_a_late_fingerprint_that_does_not_match_fails_and_nothing_ever_flowed() -> None:
    pair = SecurePair(server_expects=None)
    pair.run_until(lambda: pair.client.state is CONNECTED)
    pair.client.send_rtp(RTP)
    assert pair.client.send_record(b"sctp INIT")
    pair.run_for(1.0)
    server = pair.server
    assert server.received.rtp == [] and server.received.records == []  # nothing accepted …
    assert pair.server.channel.set_remote_fingerprint(SERVER_CERT.fingerprint()) == []
    assert server.state is FAILED
    assert server.channel.error == "remote certificate does not match a=fingerprint"
    assert server.channel.srtp_profile is None and server.channel.next_timeout() is None
    assert server.received.rtp == [] and server.received.records == []
    assert pair.sent_to(CLIENT_ADDR, PacketClass.RTP) == []
    with pytest.raises(pylibsrtp.Error):
        server.channel.unprotect(RTP)


def test_ice_restart_keeps_dtls_and_srtp() -> None:
    pair = SecurePair()
    pair.connect()
    ice = pair.server.ice
    # Same remote credentials again (a renegotiation): nothing to do.
    client_ice = pair.client.ice
    assert ice.set_remote_credentials(client_ice.local_ufrag, client_ice.local_pwd) is False
    assert ice.set_remote_credentials(client_ice.local_ufrag, client_ice.local_pwd) is False
    # New remote credentials in an offer: an ICE restart, so ours change too (RFC 8839).
    assert ice.set_remote_credentials("cli2", "client-password-abcdefg") is True
    new_pwd = "server-password-new-0123456"
    assert ice.restart("srv2", new_pwd, answering=True) is None
    assert (ice.ufrag, ice.pwd, ice.previous_ufrag) == ("srv2", new_pwd, "srv1")

    # Until a check with the new credentials arrives, the old ones still work (the client's
    # consent checks keep using them) …
    pair.run_for(12.0)
    assert pair.server.state is CONNECTED and ice.previous_ufrag == "srv1"
    old = ice.handle(binding_request(SERVER_UFRAG, SERVER_PWD), CLIENT_ADDR, pair.now)
    assert old.authenticated and old.retired_ufrag is None
    # … the new ones work at once and retire the old ones, which are dropped from then on.
    pair.client.ice.set_remote_credentials("srv2", new_pwd)
    pair.run_for(7.0)  # the client's next consent check
    assert ice.previous_ufrag is None
    stale = ice.handle(binding_request(SERVER_UFRAG, SERVER_PWD), CLIENT_ADDR, pair.now)
    assert not stale.authenticated and stale.response is None
    # DTLS and SRTP were not restarted: media keeps flowing both ways.
    pair.client.send_rtp(RTP)
    pair.server.send_rtp(RTP)
    pair.run_until(lambda: pair.server.received.rtp == pair.client.received.rtp == [RTP])
    assert pair.server.state is pair.client.state is CONNECTED


def test_consent_expires_when_checks_stop_arriving() -> None:
    pair = SecurePair()
    pair.connect()
    pair.run_for(60.0)  # the client's consent checks, every ~5 s, keep it alive (RFC 7675)
    assert pair.server.state is CONNECTED
    pair.cut(SERVER_ADDR, only=PacketClass.STUN)
    expires = pair.server.channel.next_timeout()  # 30 s after the last check that arrived
    assert expires is not None and pair.now < expires <= pair.now + 30.0
    pair.run_for(expires - pair.now - 0.01)
    assert pair.server.state is CONNECTED
    pair.run_until(lambda: pair.server.state is FAILED)
    assert pair.now == pytest.approx(expires)
    assert pair.server.channel.error == "ICE consent expired"
    with pytest.raises(pylibsrtp.Error):
        pair.server.channel.protect_rtp(RTP)


def test_consent_counts_from_the_handshake_when_the_last_check_came_before() -> None:
    server = SecureChannel(SERVER_CERT, server=True, consent_timeout=30.0)
    client = SecureChannel(CLIENT_CERT, server=False)
    server.set_remote_fingerprint(CLIENT_CERT.fingerprint())
    client.set_remote_fingerprint(SERVER_CERT.fingerprint())
    server.refresh_consent(0.0)
    server.start(0.0)
    assert server.next_timeout() is None  # consent is only checked once connected
    client.start(10.0)
    for _ in range(4):  # both flights of the handshake at t = 10 s
        for datagram in client.datagrams_to_send():
            server.receive(datagram, 10.0)
        for datagram in server.datagrams_to_send():
            client.receive(datagram, 10.0)
    assert server.state is client.state is CONNECTED
    assert server.next_timeout() == 40.0
    server.handle_timeout(39.9)
    assert server.state is CONNECTED
    server.refresh_consent(35.0)
    server.handle_timeout(40.0)
    assert server.state is CONNECTED and server.next_timeout() == 65.0
    server.handle_timeout(65.0)
    assert server.state is FAILED and server.next_timeout() is None
