"""DTLS server endpoint vs a pyOpenSSL client endpoint in memory: no sockets, no sleeps (but
one: OpenSSL's retransmission timer runs on the wall clock). Renegotiation is refused."""

from __future__ import annotations

import struct
import time

import pylibsrtp
import pytest
from OpenSSL import SSL

from roomcast.media.dtls import (
    SRTP_AEAD_AES_128_GCM,
    SRTP_AEAD_AES_256_GCM,
    SRTP_AES128_CM_SHA1_80,
    SRTP_PROFILES,
    DtlsCertificate,
    DtlsEndpoint,
    DtlsState,
    SrtpProfile,
    split_records,
    srtp_keys_from_material,
)

RTP = struct.pack("!BBHII", 0x80, 111, 4242, 960, 0x01020304) + b"opus payload" * 5
RTCP_RR = struct.pack("!BBHI", 0x80, 201, 1, 0x01020304)  # receiver report, no blocks


def pair(client_profiles: bytes | None = None) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    server = DtlsEndpoint(DtlsCertificate.generate(), server=True)
    client_cert = DtlsCertificate.generate()
    if client_profiles is not None:  # a fresh certificate, so its cached context is ours
        client_cert.context(server=False).set_tlsext_use_srtp(client_profiles)
    client = DtlsEndpoint(client_cert, server=False)
    server.start()
    client.start()
    return server, client


def pump(server: DtlsEndpoint, client: DtlsEndpoint, *, rounds: int = 10) -> None:
    for _ in range(rounds):
        moved = False
        for datagram in client.datagrams_to_send():
            moved = True
            assert server.feed(datagram) == []
        for datagram in server.datagrams_to_send():
            moved = True
            assert client.feed(datagram) == []
        if not moved:
            return


def test_handshake_derives_mirrored_srtp_keys() -> None:
    server, client = pair()
    pump(server, client)
    assert server.state is DtlsState.CONNECTED and client.state is DtlsState.CONNECTED
    assert server.srtp_keys is not None and client.srtp_keys is not None
    # Our preference wins as DTLS server: AES-128-GCM first (LiveKit/pion do the same).
    assert server.srtp_keys.profile == SRTP_PROFILES[0] == SRTP_AEAD_AES_128_GCM
    assert server.srtp_keys.local == client.srtp_keys.remote
    assert server.srtp_keys.remote == client.srtp_keys.local
    assert server.srtp_keys.local != server.srtp_keys.remote
    assert server.selected_cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    assert server.timeout() is None and client.timeout() is None


@pytest.mark.parametrize(
    "profile", [SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80]
)
def test_srtp_round_trip_for_each_profile(profile: SrtpProfile) -> None:
    server, client = pair(client_profiles=profile.name)
    pump(server, client)
    assert server.srtp_keys is not None and client.srtp_keys is not None
    assert server.srtp_keys.profile == profile
    assert len(server.srtp_keys.local) == profile.key_length + profile.salt_length

    client_tx, server_rx = client.srtp_keys.outbound_session(), server.srtp_keys.inbound_session()
    protected = client_tx.protect(RTP)
    assert protected != RTP and protected[:12] == RTP[:12]
    assert server_rx.unprotect(protected) == RTP
    assert server_rx.unprotect_rtcp(client_tx.protect_rtcp(RTCP_RR)) == RTCP_RR

    server_tx, client_rx = server.srtp_keys.outbound_session(), client.srtp_keys.inbound_session()
    assert client_rx.unprotect(server_tx.protect(RTP)) == RTP
    # The other direction's keys must not open it (sessions really are per direction).
    with pytest.raises(pylibsrtp.Error):
        server.srtp_keys.inbound_session().unprotect(server_tx.protect(RTP[:2] + b"\x11" + RTP[3:]))


def test_rfc5764_key_layout() -> None:
    # client_write_key | server_write_key | client_write_salt | server_write_salt
    material = bytes(range(56))
    keys = srtp_keys_from_material(SRTP_AEAD_AES_128_GCM, material, server=True)
    assert keys.remote == material[0:16] + material[32:44]
    assert keys.local == material[16:32] + material[44:56]
    mirrored = srtp_keys_from_material(SRTP_AEAD_AES_128_GCM, material, server=False)
    assert (mirrored.local, mirrored.remote) == (keys.remote, keys.local)


def test_application_data_both_ways() -> None:
    server, client = pair()
    pump(server, client)
    client.send(b"sctp packet 1")
    client.send(b"sctp packet 2")
    records = [r for d in client.datagrams_to_send() for r in server.feed(d)]
    assert records == [b"sctp packet 1", b"sctp packet 2"]
    server.send(b"x" * 1000)
    assert [r for d in server.datagrams_to_send() for r in client.feed(d)] == [b"x" * 1000]


def test_fingerprints() -> None:
    server, client = pair()
    pump(server, client)
    assert client.peer_fingerprint() is not None
    client_fp = client.peer_fingerprint()
    assert client_fp is not None and client_fp.startswith("sha-256 ")
    assert len(client_fp.split(" ")[1].split(":")) == 32
    server_fp = server.peer_fingerprint("sha-256")
    assert server_fp is not None
    assert server.fingerprint_matches(server_fp)
    assert server.fingerprint_matches(server_fp.lower().replace("sha-256", "SHA-256"))
    assert not server.fingerprint_matches(client_fp)
    assert not server.fingerprint_matches("md5 00:11")
    assert not server.fingerprint_matches("")


def test_certificate_fingerprint_format() -> None:
    cert = DtlsCertificate.generate()
    algorithm, value = cert.fingerprint().split(" ")
    assert algorithm == "sha-256"
    assert all(len(octet) == 2 and octet == octet.upper() for octet in value.split(":"))


def test_no_common_srtp_profile_fails_the_handshake() -> None:
    server, client = pair(client_profiles=b"SRTP_AES128_CM_SHA1_32")  # we never offer it
    pump(server, client)
    assert server.state is DtlsState.FAILED
    assert server.error == "no SRTP profile negotiated"
    assert server.srtp_keys is None


def test_garbage_fails_handshake_without_raising() -> None:
    server = DtlsEndpoint(DtlsCertificate.generate(), server=True)
    server.start()
    assert server.feed(b"\x16\xfe\xfd" + bytes(10) + b"\x00\x05hello") == []
    assert server.state in (DtlsState.HANDSHAKING, DtlsState.FAILED)
    assert server.feed(bytes(range(20, 64))) == []


def test_garbage_after_handshake_is_ignored() -> None:
    server, client = pair()
    pump(server, client)
    assert server.feed(b"\x17\xfe\xfd" + bytes(8) + b"\x00\x04abcd") == []
    assert server.state is DtlsState.CONNECTED
    client.send(b"still fine")
    assert [r for d in client.datagrams_to_send() for r in server.feed(d)] == [b"still fine"]


def test_lost_server_flight_is_retransmitted_on_timeout() -> None:
    server, client = pair()
    for datagram in client.datagrams_to_send():
        server.feed(datagram)
    first_flight = server.datagrams_to_send()  # ServerHello .. ServerHelloDone, then "lost"
    assert first_flight
    server.handle_timeout()  # too early: OpenSSL's timer has not expired, nothing resent
    assert server.datagrams_to_send() == []
    delay = server.timeout()
    assert delay is not None and 0 < delay <= 1.0  # RFC 6347 §4.2.4.1: initial timer 1 s
    time.sleep(delay + 0.01)  # OpenSSL reads the wall clock; one fixed wait, no polling
    server.handle_timeout()
    resent = server.datagrams_to_send()
    assert [len(d) for d in resent] == [len(d) for d in first_flight]
    for datagram in resent:
        client.feed(datagram)
    pump(server, client)
    assert server.state is DtlsState.CONNECTED and client.state is DtlsState.CONNECTED


def test_close_sends_close_notify() -> None:
    server, client = pair()
    pump(server, client)
    server.close()
    alerts = server.datagrams_to_send()
    assert alerts and alerts[0][0] == 21  # alert record
    for datagram in alerts:
        client.feed(datagram)
    assert client.state is DtlsState.CLOSED and server.state is DtlsState.CLOSED


def record(content_type: int, length: int) -> bytes:
    return bytes([content_type, 0xFE, 0xFD]) + bytes(8) + length.to_bytes(2, "big") + bytes(length)


def test_split_records_packs_whole_records_up_to_mtu() -> None:
    a, b, c = record(22, 600), record(22, 700), record(20, 1)
    assert split_records(a + b + c, 1200) == [a, b + c]
    assert split_records(a + b + c, 2000) == [a + b + c]
    big = record(22, 1500)  # a single record larger than the MTU goes alone
    assert split_records(a + big + c, 1200) == [a, big, c]
    assert split_records(a + b[:20], 1200) == [a]  # incomplete trailing record is not sent
    assert split_records(b"", 1200) == []


# -- renegotiation (security review L5) ---------------------------------------------------------
# A second handshake could bring a certificate nobody compared with a=fingerprint (RFC 5763 §5
# checks the first one), so our endpoints refuse renegotiation in both roles.


def raw_peer(cert: DtlsCertificate, *, server: bool) -> SSL.Connection:
    """A remote DTLS endpoint that is not ours: plain pyOpenSSL, renegotiation allowed."""
    ctx = SSL.Context(SSL.DTLS_SERVER_METHOD if server else SSL.DTLS_CLIENT_METHOD)
    ctx.use_certificate(cert.cert)
    ctx.use_privatekey(cert.key)
    ctx.set_tlsext_use_srtp(b"SRTP_AEAD_AES_128_GCM")
    connection = SSL.Connection(ctx, None)
    if server:
        connection.set_accept_state()
    else:
        connection.set_connect_state()
    return connection


def raw_output(peer: SSL.Connection) -> list[bytes]:
    chunks = []
    while True:
        try:
            chunks.append(peer.bio_read(65536))
        except SSL.WantReadError:
            return split_records(b"".join(chunks), 1200)


def raw_step(peer: SSL.Connection, datagram: bytes | None = None) -> None:
    """Feed the raw peer one datagram and let it run its handshake (or read past records)."""
    if datagram is not None:
        peer.bio_write(datagram)
    for call in (peer.do_handshake, lambda: peer.recv(65536)):
        try:
            call()
        except SSL.Error:  # WantReadError, or a refusal it does not like
            pass


def exchange(ours: DtlsEndpoint, theirs: SSL.Connection, *, rounds: int = 10) -> None:
    for _ in range(rounds):
        moved = False
        for datagram in ours.datagrams_to_send():
            moved = True
            raw_step(theirs, datagram)
        for datagram in raw_output(theirs):
            moved = True
            ours.feed(datagram)
        if not moved:
            return


def test_a_remote_server_cannot_renegotiate_a_new_certificate_onto_our_client() -> None:
    remote_cert, swapped = DtlsCertificate.generate(), DtlsCertificate.generate()
    remote = raw_peer(remote_cert, server=True)
    ours = DtlsEndpoint(DtlsCertificate.generate(), server=False)
    ours.start()
    exchange(ours, remote)
    assert ours.state is DtlsState.CONNECTED and ours.fingerprint_matches(remote_cert.fingerprint())
    # The remote, already checked against its a=fingerprint, asks for a second handshake
    # (HelloRequest) in which it presents another certificate.
    remote.use_certificate(swapped.cert)
    remote.use_privatekey(swapped.key)
    assert remote.renegotiate()
    raw_step(remote)
    exchange(ours, remote)
    assert ours.fingerprint_matches(remote_cert.fingerprint())
    assert not ours.fingerprint_matches(swapped.fingerprint())


def test_a_remote_client_cannot_renegotiate_with_our_server() -> None:
    """OpenSSL 3 servers already refuse client-initiated renegotiation by default; our option
    makes that independent of the OpenSSL version."""
    remote_cert, swapped = DtlsCertificate.generate(), DtlsCertificate.generate()
    remote = raw_peer(remote_cert, server=False)
    ours = DtlsEndpoint(DtlsCertificate.generate(), server=True)
    ours.start()
    raw_step(remote)  # ClientHello
    exchange(ours, remote)
    assert ours.state is DtlsState.CONNECTED and ours.fingerprint_matches(remote_cert.fingerprint())
    remote.use_certificate(swapped.cert)
    remote.use_privatekey(swapped.key)
    assert remote.renegotiate()
    raw_step(remote)
    exchange(ours, remote)
    assert ours.fingerprint_matches(remote_cert.fingerprint())
    assert remote.total_renegotiations() == 1 and remote.renegotiate_pending()  # never done


def test_our_contexts_refuse_renegotiation() -> None:
    cert = DtlsCertificate.generate()
    for server in (True, False):
        options = cert.context(server=server).set_options(0)  # adds none, returns them all
        assert options & SSL.OP_NO_RENEGOTIATION
