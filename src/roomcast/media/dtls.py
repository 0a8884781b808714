"""DTLS endpoint over pyOpenSSL memory BIOs, plus DTLS-SRTP keying (RFC 5764).

No I/O (h11 style): `feed()` a received datagram and get decrypted application records back,
then take `datagrams_to_send()`; `timeout()` / `handle_timeout()` drive handshake
retransmission (RFC 6347 §4.2.4) with OpenSSL's own timer (pyOpenSSL exposes
DTLSv1_get_timeout / DTLSv1_handle_timeout). Roomcast is always the DTLS server (answers
`a=setup:passive`, offers `actpass`, docs/protocol/15-interop-findings.md §2); the client peer takes
either role. `secure_channel.SecureChannel` drives an endpoint for both.
"""

from __future__ import annotations

import datetime
import enum
import hmac
import os
from dataclasses import dataclass

import pylibsrtp
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

DTLS_MTU = 1200  # UDP payload bound for our flights (what libwebrtc uses too)
_RECORD_HEADER = 13  # RFC 6347 §4.1: type(1) version(2) epoch(2) seq(6) length(2)
_MAX_RECORD = 1 << 14

_DIGESTS: dict[str, hashes.HashAlgorithm] = {
    "sha-256": hashes.SHA256(),
    "sha-384": hashes.SHA384(),
    "sha-512": hashes.SHA512(),
}
# ECDHE-ECDSA only: our certificate is ECDSA P-256, and so are browsers'
# (docs/protocol/15-interop-findings.md §2 DTLS).
_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
)


class DtlsError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class SrtpProfile:
    """An RFC 5764 §4.1.2 / RFC 7714 §14.2 protection profile and its key sizes."""

    name: bytes  # OpenSSL name, as offered in use_srtp
    libsrtp_profile: int
    key_length: int
    salt_length: int


SRTP_AEAD_AES_128_GCM = SrtpProfile(
    b"SRTP_AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12
)
SRTP_AEAD_AES_256_GCM = SrtpProfile(
    b"SRTP_AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12
)
SRTP_AES128_CM_SHA1_80 = SrtpProfile(
    b"SRTP_AES128_CM_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14
)


def _available(profile: SrtpProfile) -> bool:
    try:  # libsrtp may be built without GCM
        pylibsrtp.Policy(srtp_profile=profile.libsrtp_profile)
    except pylibsrtp.Error:
        return False
    return True


# As DTLS server OpenSSL picks the first of *our* profiles the client offers
# (docs/protocol/15-interop-findings.md §2), so this order is our preference: AES-128-GCM like
# LiveKit/pion, then AES-256-GCM, then CM-SHA1.
SRTP_PROFILES: tuple[SrtpProfile, ...] = tuple(
    p
    for p in (SRTP_AEAD_AES_128_GCM, SRTP_AEAD_AES_256_GCM, SRTP_AES128_CM_SHA1_80)
    if _available(p)
)


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """Keys exported after the handshake: `local` protects what we send, `remote` what we get."""

    profile: SrtpProfile
    local: bytes  # key || salt
    remote: bytes  # key || salt

    def inbound_session(self) -> pylibsrtp.Session:
        return pylibsrtp.Session(self._policy(self.remote, pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def outbound_session(self) -> pylibsrtp.Session:
        return pylibsrtp.Session(self._policy(self.local, pylibsrtp.Policy.SSRC_ANY_OUTBOUND))

    def _policy(self, key: bytes, ssrc_type: int) -> pylibsrtp.Policy:
        policy = pylibsrtp.Policy(
            key=key, ssrc_type=ssrc_type, srtp_profile=self.profile.libsrtp_profile
        )
        policy.allow_repeat_tx = True  # an SFU may resend the same (ssrc, seq), e.g. for NACK
        policy.window_size = 1024  # replay window wide enough for video bursts + reordering
        return policy


def srtp_keys_from_material(profile: SrtpProfile, material: bytes, *, server: bool) -> SrtpKeys:
    """RFC 5764 §4.2: client_write_key | server_write_key | client_write_salt |
    server_write_salt. The server sends with the server half and receives with the client one."""
    k, s = profile.key_length, profile.salt_length
    client = material[0:k] + material[2 * k : 2 * k + s]
    server_half = material[k : 2 * k] + material[2 * k + s : 2 * k + 2 * s]
    if server:
        return SrtpKeys(profile, local=server_half, remote=client)
    return SrtpKeys(profile, local=client, remote=server_half)


def format_fingerprint(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


class DtlsCertificate:
    """Self-signed ECDSA P-256 certificate (what browsers and aiortc use) and an SSL context
    built from it. One instance can serve many endpoints: the context holds no session."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self._contexts: dict[bool, SSL.Context] = {}

    @classmethod
    def generate(cls, *, days: int = 30) -> DtlsCertificate:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, os.urandom(16).hex())])
        now = datetime.datetime.now(tz=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def fingerprint(self, algorithm: str = "sha-256") -> str:
        """Value for `a=fingerprint:` (RFC 8122 §5), e.g. "sha-256 AB:CD:…"."""
        return f"{algorithm} {format_fingerprint(self.cert.fingerprint(_DIGESTS[algorithm]))}"

    def context(self, *, server: bool) -> SSL.Context:
        ctx = self._contexts.get(server)
        if ctx is None:
            ctx = SSL.Context(SSL.DTLS_SERVER_METHOD if server else SSL.DTLS_CLIENT_METHOD)
            # No tickets, no cache: every PeerConnection does a full handshake (RFC 8827 §6.5).
            # No renegotiation either way: a second handshake could bring a certificate that
            # was never checked against a=fingerprint (RFC 5763 §5 checks the one we saw).
            ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            # Peers use self-signed certificates; identity is the SDP fingerprint, checked by
            # `fingerprint_matches` after the handshake (RFC 8122 §5, RFC 5763 §5).
            ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_args: True)
            ctx.use_certificate(self.cert)
            ctx.use_privatekey(self.key)
            ctx.set_cipher_list(_CIPHERS)
            ctx.set_tlsext_use_srtp(b":".join(p.name for p in SRTP_PROFILES))
            self._contexts[server] = ctx
        return ctx


class DtlsState(enum.Enum):
    NEW = "new"
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


class DtlsEndpoint:
    """One DTLS association over memory BIOs.

    Usage: `feed(datagram)` → list of decrypted application records; after every call
    (including `start`, `send`, `handle_timeout`, `close`) send `datagrams_to_send()`.
    """

    def __init__(
        self, certificate: DtlsCertificate, *, server: bool = True, mtu: int = DTLS_MTU
    ) -> None:
        self.server = server
        self.state = DtlsState.NEW
        self.srtp_keys: SrtpKeys | None = None
        self.error: str | None = None
        self._mtu = mtu
        self._ssl = SSL.Connection(certificate.context(server=server), None)  # memory BIOs
        self._ssl.set_ciphertext_mtu(mtu)
        if server:
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()

    def start(self) -> None:
        """Begin the handshake; the client produces its ClientHello, the server waits."""
        if self.state is DtlsState.NEW:
            self.state = DtlsState.HANDSHAKING
            if not self.server:
                self._handshake()

    def feed(self, datagram: bytes) -> list[bytes]:
        """Process one received datagram; returns decrypted application data records."""
        if self.state in (DtlsState.FAILED, DtlsState.CLOSED):
            return []
        if self.state is DtlsState.NEW:
            self.state = DtlsState.HANDSHAKING
        self._ssl.bio_write(datagram)
        if self.state is DtlsState.HANDSHAKING:
            self._handshake()
            if self.state is not DtlsState.CONNECTED:
                return []
        return self._read_application_data()

    def send(self, data: bytes) -> None:
        """Encrypt one application record (e.g. an SCTP packet)."""
        if self.state is not DtlsState.CONNECTED:
            raise DtlsError("DTLS is not connected")
        self._ssl.send(data)

    def timeout(self) -> float | None:
        """Seconds until `handle_timeout` must be called, or None when no timer is needed."""
        if self.state is not DtlsState.HANDSHAKING:
            return None
        value = self._ssl.DTLSv1_get_timeout()
        return None if value is None else max(0.0, float(value))

    def handle_timeout(self) -> None:
        """Retransmit the last flight if OpenSSL's timer expired (RFC 6347 §4.2.4)."""
        if self.state is not DtlsState.HANDSHAKING:
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as exc:  # too many retransmissions
            self._fail(f"handshake timeout: {exc}")

    def close(self) -> None:
        """Queue close_notify (RFC 5246 §7.2.1) and stop."""
        if self.state is DtlsState.CONNECTED:
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
        if self.state is not DtlsState.FAILED:
            self.state = DtlsState.CLOSED

    def datagrams_to_send(self) -> list[bytes]:
        """Everything OpenSSL wrote, split at record boundaries and packed into datagrams of
        at most the MTU: a memory BIO is a byte stream and forgets datagram boundaries."""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            except SSL.Error:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        return split_records(b"".join(chunks), self._mtu)

    def peer_fingerprint(self, algorithm: str = "sha-256") -> str | None:
        cert = self._ssl.get_peer_certificate(as_cryptography=True)
        if cert is None:
            return None
        return f"{algorithm} {format_fingerprint(cert.fingerprint(_DIGESTS[algorithm]))}"

    def fingerprint_matches(self, expected: str) -> bool:
        """Compare the peer certificate with an SDP `a=fingerprint` value "alg HEX:…"."""
        algorithm, _, value = expected.strip().partition(" ")
        algorithm = algorithm.lower()
        if algorithm not in _DIGESTS:
            return False
        actual = self.peer_fingerprint(algorithm)
        if actual is None:
            return False
        return hmac.compare_digest(actual.split(" ", 1)[1], value.strip().upper())

    @property
    def selected_cipher(self) -> str | None:
        name = self._ssl.get_cipher_name()
        return None if name is None else str(name)

    # -- internals --

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return  # flight written to the BIO, waiting for the peer
        except SSL.Error as exc:
            self._fail(f"handshake failed: {exc}")
            return
        self._export_srtp_keys()

    def _export_srtp_keys(self) -> None:
        selected = self._ssl.get_selected_srtp_profile()
        profile = next((p for p in SRTP_PROFILES if p.name == selected), None)
        if profile is None:  # RFC 5764 §4.1.1: no use_srtp agreement → no media possible
            self._fail("no SRTP profile negotiated")
            return
        material = self._ssl.export_keying_material(
            b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length)
        )
        self.srtp_keys = srtp_keys_from_material(profile, material, server=self.server)
        self.state = DtlsState.CONNECTED

    def _read_application_data(self) -> list[bytes]:
        records: list[bytes] = []
        while True:
            try:
                records.append(self._ssl.recv(_MAX_RECORD))
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify from the peer
                self.state = DtlsState.CLOSED
                break
            except SSL.Error:
                break  # a bad record is discarded (RFC 6347 §4.1.2.7); keep the association
        return records

    def _fail(self, reason: str) -> None:
        self.state = DtlsState.FAILED
        self.error = reason


def split_records(data: bytes, mtu: int) -> list[bytes]:
    """Split a stream of DTLS records into datagrams of whole records, each ≤ mtu when the
    records allow it (a single larger record goes alone; OpenSSL already fragments to mtu)."""
    datagrams: list[bytes] = []
    start = pos = 0
    end = len(data)
    while pos + _RECORD_HEADER <= end:
        record_end = pos + _RECORD_HEADER + int.from_bytes(data[pos + 11 : pos + 13], "big")
        if record_end > end:
            break
        if record_end - start > mtu and pos > start:
            datagrams.append(data[start:pos])
            start = pos
        pos = record_end
    if pos > start:
        datagrams.append(data[start:pos])
    return datagrams
