"""One DTLS-SRTP connection (RFC 5764) without I/O: datagrams and time in; datagrams, the next
timeout, the state and SRTP out.

Both ends use it: the server transport (always the DTLS server) and the client peer (either
role). The owner feeds it what the socket receives and the clock, sends what it returns, and
calls `handle_timeout` when `next_timeout` passes:

    channel = SecureChannel(certificate, server=False)
    channel.set_remote_fingerprint("sha-256 AB:…")   # from the remote a=fingerprint
    channel.start(now)                               # once ICE has a working pair
    records = channel.receive(datagram, now)         # decrypted records: SCTP packets
    for datagram in channel.datagrams_to_send(): …   # after every call
    channel.next_timeout() / channel.handle_timeout(now)
    channel.protect_rtp(packet), channel.unprotect(datagram)   # once CONNECTED

Inside: the handshake and its retransmission (RFC 6347 §4.2.4, OpenSSL's timer), the remote
certificate check against a=fingerprint (RFC 8122 §5, RFC 5763 §5), SRTP keying, and consent
freshness (RFC 7675 §5.1) when the owner reports the ICE checks that count as consent.

Nothing is trusted before the certificate is: when the handshake beats the remote's answer
(the server's first DTLS flight can), the channel stays CONNECTING, unkeyed, and holds the
records that arrive, until `set_remote_fingerprint` has verified the certificate.
"""

from __future__ import annotations

import enum

import pylibsrtp
from OpenSSL import SSL

from .dtls import DTLS_MTU, DtlsCertificate, DtlsEndpoint, DtlsError, DtlsState, SrtpKeys
from .srtp import Protect, Unprotect, fast_protect, fast_unprotect


class TransportState(enum.StrEnum):
    """Where one transport is. A StrEnum: each member equals its old string ("connected")."""

    NEW = "new"
    CHECKING = "checking"  # client peers only: ICE checks are out, no working pair yet
    CONNECTING = "connecting"  # ICE works (the first authenticated check); DTLS handshaking
    CONNECTED = "connected"  # DTLS done, remote certificate verified, SRTP keyed
    FAILED = "failed"  # handshake failed, fingerprint mismatch, ICE failed or consent expired
    CLOSED = "closed"  # closed by us, or by the peer's close_notify


_ENDED = (TransportState.FAILED, TransportState.CLOSED)
# Records (SCTP packets) kept while the remote certificate awaits its fingerprint: the client's
# INIT and its retransmissions. Past this they are dropped, and SCTP retransmits them.
MAX_HELD_RECORDS = 8


def _not_keyed(_data: bytes) -> bytes:
    raise pylibsrtp.Error("SRTP is not keyed (the DTLS handshake has not completed)")


def _not_keyed_unprotect(_data: bytes) -> tuple[bytes, bool]:
    raise pylibsrtp.Error("SRTP is not keyed (the DTLS handshake has not completed)")


class SecureChannel:
    """DTLS handshake, fingerprint check, SRTP keys and consent for one PeerConnection.

    States: new → connecting (`start`, or the first DTLS datagram) → connected (handshake
    done and certificate verified) → failed | closed. `protect_rtp`, `protect_rtcp` and
    `unprotect` raise pylibsrtp.Error unless CONNECTED; once connected they are plain
    callables a caller may keep for its per-packet path (until the state changes again).
    """

    def __init__(
        self,
        certificate: DtlsCertificate,
        *,
        server: bool,
        consent_timeout: float | None = None,
        mtu: int = DTLS_MTU,
    ) -> None:
        self.server = server
        self.state = TransportState.NEW
        self.error: str | None = None
        self.consent_timeout = consent_timeout  # None: the owner's ICE agent tracks consent
        self.protect_rtp: Protect = _not_keyed
        self.protect_rtcp: Protect = _not_keyed
        self.unprotect: Unprotect = _not_keyed_unprotect
        self.srtp_profile: str | None = None
        self.srtp_keys: SrtpKeys | None = None
        self._dtls = DtlsEndpoint(certificate, server=server, mtu=mtu)
        self._remote_fingerprint: str | None = None
        self._dtls_deadline: float | None = None
        self._handshake_at = 0.0
        self._consent_at = 0.0
        self._held: list[bytes] = []  # records received before the certificate was verified

    # -- input -----------------------------------------------------------------------------
    def start(self, now: float) -> None:
        """ICE has a working pair: a DTLS client sends its ClientHello (RFC 6347 §4.2.1), a
        server starts waiting for one. Does nothing after the first call."""
        if self.state is not TransportState.NEW:
            return
        self.state = TransportState.CONNECTING
        self._dtls.start()
        self._arm_dtls_timer(now)

    def receive(self, datagram: bytes, now: float) -> list[bytes]:
        """One DTLS datagram; returns the application records it carried (SCTP packets), which
        are only ever returned while CONNECTED (never after a fingerprint mismatch). Records
        that arrive while the certificate awaits its fingerprint are held for
        `set_remote_fingerprint`."""
        if self.state in _ENDED:
            return []
        if self.state is TransportState.NEW:  # a DTLS server hearing the client first
            self.state = TransportState.CONNECTING
        dtls = self._dtls
        handshaking = dtls.state is not DtlsState.CONNECTED
        records = dtls.feed(datagram)
        if handshaking:
            if dtls.state is DtlsState.CONNECTED:
                self._handshake_done(now)
            elif dtls.state is DtlsState.FAILED:
                self.fail(f"DTLS {dtls.error}")
            else:
                self._arm_dtls_timer(now)
        elif dtls.state is DtlsState.CLOSED:
            self._end(TransportState.CLOSED)  # the peer's close_notify (RFC 5246 §7.2.1)
        if self.state is TransportState.CONNECTED:
            return records
        if records and self.awaiting_fingerprint:
            self._held.extend(records[: MAX_HELD_RECORDS - len(self._held)])
        return []

    def handle_timeout(self, now: float) -> None:
        """Retransmit the last flight when its timer expired; fail when consent expired."""
        if self.awaiting_fingerprint or self.state is TransportState.CONNECTED:
            deadline = self._consent_deadline()
            if deadline is not None and now >= deadline:
                self.fail("ICE consent expired")  # RFC 7675 §5.1
        elif self.state is TransportState.CONNECTING:
            deadline = self._dtls_deadline
            if deadline is not None and now >= deadline:
                self._dtls.handle_timeout()  # resends the last flight (RFC 6347 §4.2.4.1)
                if self._dtls.state is DtlsState.FAILED:
                    self.fail(f"DTLS {self._dtls.error}")
                else:
                    self._arm_dtls_timer(now)

    def refresh_consent(self, now: float) -> None:
        """An authenticated ICE check from the address we send to, at `now`: consent to send
        lasts `consent_timeout` from here (RFC 7675 §5.1). Consent only expires once the
        handshake is done."""
        self._consent_at = now

    @property
    def awaiting_fingerprint(self) -> bool:
        """The handshake is done but the remote `a=fingerprint` has not come yet: CONNECTING,
        no SRTP keys, records held."""
        return self.state is TransportState.CONNECTING and self._dtls.state is DtlsState.CONNECTED

    def set_remote_fingerprint(self, fingerprint: str) -> list[bytes]:
        """The remote `a=fingerprint` ("sha-256 AB:…"), required before anything flows. Checked
        when the handshake completes, or now if it already has (the first DTLS flight can beat
        the remote's answer): a match makes the channel CONNECTED and returns the records held
        meanwhile; a mismatch fails it, and nothing it held is ever delivered. A new value
        while CONNECTED (a renegotiated answer) is checked against the same certificate."""
        self._remote_fingerprint = fingerprint
        if self.awaiting_fingerprint:
            self._connect()
            held, self._held = self._held, []
            return held if self.state is TransportState.CONNECTED else []
        if self.state is TransportState.CONNECTED:
            self._verify_fingerprint()
        return []

    def send_record(self, data: bytes) -> bool:
        """Encrypt one application record (an SCTP packet, RFC 8261 §5); False unless
        CONNECTED. Take `datagrams_to_send()` afterwards."""
        if self.state is not TransportState.CONNECTED:
            return False
        try:
            self._dtls.send(data)
        except (DtlsError, SSL.Error):
            return False
        return True

    def fail(self, reason: str) -> None:
        """Fail for a reason outside DTLS too (ICE failed): SRTP stops, nothing is delivered."""
        if self.state not in _ENDED:
            self.error = reason
            self._end(TransportState.FAILED)

    def close(self) -> None:
        """Queue close_notify (RFC 5246 §7.2.1) if connected, and stop."""
        if self.state is TransportState.CLOSED:
            return
        self._dtls.close()
        self._end(TransportState.CLOSED)

    # -- output ----------------------------------------------------------------------------
    def datagrams_to_send(self) -> list[bytes]:
        """DTLS datagrams to send to the remote, after any call above."""
        return self._dtls.datagrams_to_send()

    def next_timeout(self) -> float | None:
        """When `handle_timeout` has work (same clock as `now`), or None."""
        if self.awaiting_fingerprint or self.state is TransportState.CONNECTED:
            return self._consent_deadline()
        if self.state is TransportState.CONNECTING:
            return self._dtls_deadline
        return None

    @property
    def selected_cipher(self) -> str | None:
        return self._dtls.selected_cipher

    @property
    def dtls_timer_remaining(self) -> float | None:
        """Seconds until OpenSSL's own retransmission timer expires. It runs on the wall clock
        (the binding cannot take another), so a fake-clock test must wait this out for real."""
        return self._dtls.timeout()

    # -- internals -------------------------------------------------------------------------
    def _handshake_done(self, now: float) -> None:
        self._dtls_deadline = None
        self._handshake_at = now
        if self._remote_fingerprint is not None:
            self._connect()
        # else: stay CONNECTING, unkeyed, until set_remote_fingerprint verifies the certificate

    def _connect(self) -> None:
        """Verify the remote certificate, then key SRTP and become CONNECTED (or fail)."""
        if not self._verify_fingerprint():
            return
        keys = self._dtls.srtp_keys
        assert keys is not None  # a completed handshake exported them
        tx = keys.outbound_session()
        self.protect_rtp = fast_protect(tx)
        self.protect_rtcp = tx.protect_rtcp
        self.unprotect = fast_unprotect(keys.inbound_session())
        self.srtp_profile = keys.profile.name.decode()
        self.srtp_keys = keys  # for the native plane, which keys its own sessions
        self.state = TransportState.CONNECTED

    def _verify_fingerprint(self) -> bool:
        assert self._remote_fingerprint is not None
        # The certificate cannot change after this: renegotiation is off (dtls.py).
        if self._dtls.fingerprint_matches(self._remote_fingerprint):
            return True
        self.fail("remote certificate does not match a=fingerprint")
        return False

    def _consent_deadline(self) -> float | None:
        if self.consent_timeout is None:
            return None
        return max(self._handshake_at, self._consent_at) + self.consent_timeout

    def _arm_dtls_timer(self, now: float) -> None:
        delay = self._dtls.timeout()
        self._dtls_deadline = None if delay is None else now + delay

    def _end(self, state: TransportState) -> None:
        self.state = state
        self._dtls_deadline = None
        self._held = []
        self.protect_rtp = self.protect_rtcp = _not_keyed
        self.unprotect = _not_keyed_unprotect
