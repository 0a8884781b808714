"""A WebRTC client peer built on Roomcast's own media parts: ICE (full agent, controlling
towards ICE-lite servers), DTLS-SRTP in either role, SRTP/SRTCP, one UDP socket per peer.

It speaks SDP strings, so it works with any WebRTC endpoint, not only LiveKit servers. No data
channels: a data section in a remote offer is accepted (Roomcast requires it on the subscriber
PC) but SCTP is never started, and incoming SCTP records are counted and dropped.

API (stable; bench/compare.py uses it):

    peer = ClientPeer(host="127.0.0.1")          # certificate=, accept_data= optional
    await peer.start()                           # binds the UDP socket
    # publisher side: we offer
    sdp = peer.create_offer([LocalTrack(kind="video", track_id="cid", stream_id="s",
                                        codecs=[...], extmaps=[...], ssrcs=[1234])])
    peer.set_answer(answer_sdp)                  # starts ICE, then DTLS
    # subscriber side: the remote offers
    answer_sdp = peer.answer(offer_sdp)          # peer.remote_tracks: mid -> RemoteTrack
    peer.add_remote_candidate("candidate:…")     # trickled candidates, any time
    await peer.wait_connected(timeout=10)        # raises PeerError on failure
    peer.on_rtp = lambda packet: ...             # decrypted RTP (bytes), per packet
    peer.on_rtcp = lambda packet: ...            # decrypted (compound) RTCP
    peer.send_rtp(packet); peer.send_rtcp(packet)   # plain RTP/RTCP; protected here
    peer.close()

`peer.state` is new → checking → connecting → connected, or failed / closed; `on_state` is
called on each change. Call everything from the event loop the peer was started on.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

import pylibsrtp

from roomcast.media.dtls import DtlsCertificate, DtlsEndpoint, DtlsState
from roomcast.media.jsep import TransportParams, new_session_id, remote_transport
from roomcast.media.sdp import SdpError, SessionDescription
from roomcast.media.stun import parse_stun
from roomcast.media.transport import HOST_PRIORITY, unprotect

from .ice import Address, IceAgent
from .sdp import LocalTrack, RemoteTrack, build_answer, build_offer

__all__ = ["ClientPeer", "LocalTrack", "PeerError", "RemoteTrack", "shared_certificate"]

log = logging.getLogger(__name__)

_certificate: DtlsCertificate | None = None


def shared_certificate() -> DtlsCertificate:
    """One certificate (and SSL context) for every peer of the process: generating a key per
    peer would cost more than the whole handshake."""
    global _certificate
    if _certificate is None:
        _certificate = DtlsCertificate.generate()
    return _certificate


class PeerError(Exception):
    """The peer could not connect (ICE or DTLS failed, fingerprint mismatch, timeout)."""


class ClientPeer(asyncio.DatagramProtocol):
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        advertise_ip: str | None = None,
        certificate: DtlsCertificate | None = None,
        accept_data: bool = True,
    ) -> None:
        self.host = host
        self.advertise_ip = advertise_ip or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.port = 0
        self.certificate = certificate or shared_certificate()
        self.accept_data = accept_data
        self.state = "new"
        self.error: str | None = None
        self.on_state: Callable[[str], None] | None = None
        self.on_rtp: Callable[[bytes], None] | None = None
        self.on_rtcp: Callable[[bytes], None] | None = None
        self.remote_tracks: dict[str, RemoteTrack] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self.ice = IceAgent(controlling=True)
        self._session_id = new_session_id()
        self._version = 0
        self._remote: TransportParams | None = None
        self._dtls: DtlsEndpoint | None = None
        self._dtls_addr: Address | None = None
        self._rx: pylibsrtp.Session | None = None
        self._tx: pylibsrtp.Session | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        udp, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self._udp = udp
        self.port = udp.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self.state == "closed":
            return
        if self._dtls is not None:
            self._dtls.close()  # close_notify (RFC 5246 §7.2.1), best effort
            self._flush_dtls()
        self._cancel_timer()
        self._rx = self._tx = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        self._set_state("closed")
        self._settle(PeerError("closed"))

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self._connected is not None, "start() first"
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except TimeoutError:
            raise PeerError(f"not connected after {timeout:g} s (state {self.state})") from None

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    # -- signalling --------------------------------------------------------------------------
    def local_ice(self) -> TransportParams:
        candidate = f"candidate:1 1 udp {HOST_PRIORITY} {self.advertise_ip} {self.port} typ host"
        return TransportParams(
            self.ice.local_ufrag, self.ice.local_pwd, self.certificate.fingerprint(), [candidate]
        )

    def create_offer(self, tracks: list[LocalTrack]) -> str:
        """Offer one sendonly section per track (mids assigned in order, see LocalTrack.mid).
        The offerer is the controlling ICE agent (RFC 8445 §6.1.1)."""
        self._version += 1
        self.ice.controlling = True
        return build_offer(
            self.local_ice(), tracks, session_id=self._session_id, version=self._version
        )

    def set_answer(self, sdp: str) -> None:
        """Apply the remote answer to our offer. Raises SdpError."""
        desc = SessionDescription.parse(sdp)
        remote = remote_transport(desc)
        # RFC 5763 §5: an answer of passive makes us the DTLS client, active the server.
        if remote.setup not in ("active", "passive"):
            raise SdpError(f"an answer must say a=setup:active or passive, not {remote.setup}")
        self._apply_remote(remote, dtls_client=remote.setup == "passive")

    def answer(self, offer_sdp: str) -> str:
        """Answer a remote offer (initial or renegotiation). Raises SdpError."""
        offer = SessionDescription.parse(offer_sdp)
        self._version += 1
        sdp, tracks = build_answer(
            offer,
            self.local_ice(),
            session_id=self._session_id,
            version=self._version,
            accept_data=self.accept_data,
        )
        self.remote_tracks = {t.mid: t for t in tracks}
        remote = remote_transport(offer)
        if self._remote is None:
            # RFC 8445 §6.1.1: a full agent answering a full agent is controlled; towards an
            # ICE-lite offerer we control.
            self.ice.controlling = remote.ice_lite
        self._apply_remote(remote, dtls_client=remote.setup in ("actpass", "passive"))
        return sdp

    def add_remote_candidate(self, candidate: str) -> None:
        """A trickled candidate ("candidate:…"; "" or non-UDP ones are ignored)."""
        if self.ice.add_remote_candidate(candidate):
            self._run_ice()

    def track_by_ssrc(self, ssrc: int) -> RemoteTrack | None:
        """The remote track an SSRC was announced for (a=ssrc lines of the remote offer)."""
        for track in self.remote_tracks.values():
            if ssrc in track.ssrcs:
                return track
        return None

    # -- media -------------------------------------------------------------------------------
    def send_rtp(self, packet: bytes) -> None:
        tx, udp, addr = self._tx, self._udp, self._dtls_addr
        if tx is None or udp is None or addr is None:
            self.stats["rtp_not_sent"] += 1
            return
        try:
            udp.sendto(tx.protect(packet), addr)
        except pylibsrtp.Error:
            self.stats["srtp_protect_failed"] += 1

    def send_rtcp(self, packet: bytes) -> None:
        tx, udp, addr = self._tx, self._udp, self._dtls_addr
        if tx is None or udp is None or addr is None:
            self.stats["rtcp_not_sent"] += 1
            return
        try:
            udp.sendto(tx.protect_rtcp(packet), addr)
        except pylibsrtp.Error:
            self.stats["srtp_protect_failed"] += 1

    # -- asyncio.DatagramProtocol --------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data:
            return
        first = data[0]
        if 127 < first < 192:  # RFC 7983 §7: RTP/RTCP, the common case first
            rx = self._rx
            if rx is None or len(data) < 12:
                self.stats["srtp_dropped"] += 1
                return
            try:
                packet, is_rtcp = unprotect(rx, data)
            except pylibsrtp.Error:
                self.stats["srtp_unprotect_failed"] += 1
                return
            callback = self.on_rtcp if is_rtcp else self.on_rtp
            if callback is not None:
                callback(packet)
        elif first < 4:
            self._receive_stun(data, addr)
        elif 19 < first < 64:
            self._receive_dtls(data, addr)
        else:
            self.stats["dropped"] += 1

    def error_received(self, exc: Exception) -> None:
        self.stats["icmp_errors"] += 1  # e.g. port unreachable: the remote went away

    # -- internals -----------------------------------------------------------------------------
    def _apply_remote(self, remote: TransportParams, *, dtls_client: bool) -> None:
        if self._remote is None:
            self._remote = remote
            self.ice.set_remote_credentials(remote.ufrag, remote.pwd)
            self._dtls = DtlsEndpoint(self.certificate, server=not dtls_client)
        elif (remote.ufrag, remote.pwd) != (self._remote.ufrag, self._remote.pwd):
            raise SdpError("the remote changed its ICE credentials (ICE restart): unsupported")
        for candidate in remote.candidates:
            self.ice.add_remote_candidate(candidate)
        if self.state == "new":
            self._set_state("checking")
        self._run_ice()

    def _run_ice(self) -> None:
        if self._loop is None or self.state in ("failed", "closed"):
            return
        self._send(self.ice.poll(self._loop.time()))
        if self.ice.failed:
            self._fail("ICE failed (no answer to connectivity checks)")
            return
        self._schedule()

    def _receive_stun(self, data: bytes, addr: Address) -> None:
        message = parse_stun(data)
        if message is None or self._loop is None:
            self.stats["stun_dropped"] += 1
            return
        events = self.ice.handle(message, addr, self._loop.time())
        self._send(events.send)
        if events.selected and self._dtls is not None:
            selected = self.ice.selected
            if self._dtls_addr is None or self._dtls.state is DtlsState.CONNECTED:
                self._dtls_addr = selected
            if self._dtls.server is False and self._dtls.state is DtlsState.NEW:
                self._set_state("connecting")
                self._dtls.start()  # ClientHello (RFC 6347 §4.2.1)
                self._flush_dtls()
        self._schedule()

    def _receive_dtls(self, data: bytes, addr: Address) -> None:
        dtls = self._dtls
        if dtls is None or self.state in ("failed", "closed"):
            self.stats["dtls_dropped"] += 1
            return
        if self._dtls_addr is None:  # DTLS server: the client's ICE finished before ours
            self._dtls_addr = addr
        was_connected = dtls.state is DtlsState.CONNECTED
        if dtls.state is DtlsState.NEW:
            self._set_state("connecting")
        records = dtls.feed(data)
        self._flush_dtls()
        if records:
            self.stats["sctp_ignored"] += len(records)
        if was_connected:
            return
        if dtls.state is DtlsState.CONNECTED:
            self._handshake_done()
        elif dtls.state is DtlsState.FAILED:
            self._fail(f"DTLS {dtls.error}")
        else:
            self._schedule()

    def _handshake_done(self) -> None:
        dtls, remote = self._dtls, self._remote
        assert dtls is not None and remote is not None and dtls.srtp_keys is not None
        if not dtls.fingerprint_matches(remote.fingerprint):  # RFC 8122 §5, RFC 5763 §5
            self._fail("remote certificate does not match a=fingerprint")
            return
        self._rx = dtls.srtp_keys.inbound_session()
        self._tx = dtls.srtp_keys.outbound_session()
        self._set_state("connected")
        self._settle(None)
        self._schedule()

    def _on_timer(self) -> None:
        self._timer = None
        dtls = self._dtls
        if dtls is not None and dtls.state is DtlsState.HANDSHAKING:
            timeout = dtls.timeout()
            if timeout is not None and timeout <= 0:
                dtls.handle_timeout()  # retransmit the last flight (RFC 6347 §4.2.4)
                self._flush_dtls()
                if dtls.state is DtlsState.FAILED:
                    self._fail(f"DTLS {dtls.error}")
                    return
        self._run_ice()

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None or self.state in ("failed", "closed"):
            return
        deadlines = []
        ice_due = self.ice.next_timeout()
        if ice_due is not None:
            deadlines.append(ice_due)
        if self._dtls is not None:
            dtls_due = self._dtls.timeout()
            if dtls_due is not None:
                deadlines.append(loop.time() + dtls_due)
        self._cancel_timer()
        if deadlines:
            self._timer = loop.call_at(max(min(deadlines), loop.time()), self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send(self, datagrams: list[tuple[bytes, Address]]) -> None:
        udp = self._udp
        if udp is not None:
            for data, addr in datagrams:
                udp.sendto(data, addr)

    def _flush_dtls(self) -> None:
        addr = self._dtls_addr or self.ice.selected
        if self._dtls is None or addr is None:
            return
        for datagram in self._dtls.datagrams_to_send():
            self._send([(datagram, addr)])

    def _fail(self, reason: str) -> None:
        if self.state in ("failed", "closed"):
            return
        self.error = reason
        log.debug("client peer failed: %s", reason)
        self._cancel_timer()
        self._rx = self._tx = None
        self._set_state("failed")
        self._settle(PeerError(reason))

    def _settle(self, error: PeerError | None) -> None:
        future = self._connected
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
                future.exception()  # retrieved: nobody may be waiting

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            if self.on_state is not None:
                self.on_state(state)
