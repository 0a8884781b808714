"""A WebRTC client peer built on Roomcast's own media parts: ICE (full agent, controlling
towards ICE-lite servers), DTLS-SRTP in either role, SRTP/SRTCP, one UDP socket per peer.

It speaks SDP strings, so it works with any WebRTC endpoint, not only LiveKit servers. No data
channels: a data section in a remote offer is accepted (Roomcast requires it on the subscriber
PC) but SCTP is never started, and incoming SCTP records are counted and dropped.

API (stable; bench/compare.py uses it):

    peer = ClientPeer(host="127.0.0.1")          # certificate=, accept_data=, ice_tcp= optional
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

`peer.state` (a `TransportState`) is new → checking → connecting → connected, or failed /
closed; `on_state` is called on each change. With `ice_tcp=True` the peer uses only the
remote's passive TCP candidates (RFC 6544), over `client.tcp.TcpDialer` instead of a UDP socket.
Call everything from the event loop the peer was started on. The DTLS-SRTP part is
`media.secure_channel.SecureChannel`, the same one the server transport drives; this class is the
socket and the timer around it and the ICE agent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Protocol

import pylibsrtp

from roomcast.media.demux import FIRST_BYTE, PacketClass
from roomcast.media.dtls import DtlsCertificate
from roomcast.media.jsep import TransportParams, new_session_id, remote_transport
from roomcast.media.sdp import SdpError, SessionDescription
from roomcast.media.secure_channel import SecureChannel, TransportState
from roomcast.media.srtp import Protect, Unprotect
from roomcast.media.stun import parse_stun
from roomcast.media.transport import HOST_PRIORITY

from .ice import Address, IceAgent
from .sdp import LocalTrack, RemoteTrack, build_answer, build_offer
from .tcp import TcpDialer

__all__ = [
    "ClientPeer",
    "LocalTrack",
    "PeerError",
    "RemoteTrack",
    "TransportState",
    "shared_certificate",
]

log = logging.getLogger(__name__)

_certificate: DtlsCertificate | None = None
_RTP, _STUN, _DTLS = PacketClass.RTP, PacketClass.STUN, PacketClass.DTLS
_ENDED = (TransportState.FAILED, TransportState.CLOSED)


def shared_certificate() -> DtlsCertificate:
    """One certificate (and SSL context) for every peer of the process: generating a key per
    peer would cost more than the whole handshake."""
    global _certificate
    if _certificate is None:
        _certificate = DtlsCertificate.generate()
    return _certificate


class _Wire(Protocol):
    """Where the peer's packets go: its UDP socket, or a `TcpDialer`."""

    def sendto(self, data: bytes, addr: Address) -> None: ...

    def close(self) -> None: ...


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
        ice_tcp: bool = False,
    ) -> None:
        self.host = host
        self.advertise_ip = advertise_ip or (host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        self.port = 0
        self.certificate = certificate or shared_certificate()
        self.accept_data = accept_data
        self.ice_tcp = ice_tcp
        self.state = TransportState.NEW
        self.error: str | None = None
        self.on_state: Callable[[TransportState], None] | None = None
        self.on_rtp: Callable[[bytes], None] | None = None
        self.on_rtcp: Callable[[bytes], None] | None = None
        self.remote_tracks: dict[str, RemoteTrack] = {}
        self.stats: collections.Counter[str] = collections.Counter()
        self.ice = IceAgent(controlling=True, protocol="tcp" if ice_tcp else "udp")
        self._session_id = new_session_id()
        self._version = 0
        self._remote: TransportParams | None = None
        self._channel: SecureChannel | None = None  # once the remote says which DTLS role
        self._dtls_addr: Address | None = None
        # The channel's SRTP callables while CONNECTED, None otherwise: the per-packet path.
        self._protect_rtp: Protect | None = None
        self._protect_rtcp: Protect | None = None
        self._unprotect: Unprotect | None = None
        self._udp: _Wire | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        if self.ice_tcp:
            self._udp = TcpDialer(self.datagram_received)
            self.port = 9  # RFC 6544 §4.5: the port of an active candidate
            return
        udp, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, 0))
        self._udp = udp
        self.port = udp.get_extra_info("sockname")[1]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._channel is not None:
            self._channel.close()  # close_notify (RFC 5246 §7.2.1), best effort
            self._flush_dtls()
        self._set_state(TransportState.CLOSED)
        if self._udp is not None:
            self._udp.close()
            self._udp = None

    async def wait_connected(self, timeout: float = 10.0) -> None:
        assert self._connected is not None, "start() first"
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except TimeoutError:
            raise PeerError(f"not connected after {timeout:g} s (state {self.state})") from None

    @property
    def connected(self) -> bool:
        return self.state is TransportState.CONNECTED

    # -- signalling --------------------------------------------------------------------------
    def local_ice(self) -> TransportParams:
        protocol, extension = ("tcp", " tcptype active") if self.ice_tcp else ("udp", "")
        candidate = (
            f"candidate:1 1 {protocol} {HOST_PRIORITY} {self.advertise_ip} {self.port} typ host"
            + extension
        )
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
        protect, udp, addr = self._protect_rtp, self._udp, self._dtls_addr
        if protect is None or udp is None or addr is None:
            self.stats["rtp_not_sent"] += 1
            return
        try:
            udp.sendto(protect(packet), addr)
        except pylibsrtp.Error:
            self.stats["srtp_protect_failed"] += 1

    def send_rtcp(self, packet: bytes) -> None:
        protect, udp, addr = self._protect_rtcp, self._udp, self._dtls_addr
        if protect is None or udp is None or addr is None:
            self.stats["rtcp_not_sent"] += 1
            return
        try:
            udp.sendto(protect(packet), addr)
        except pylibsrtp.Error:
            self.stats["srtp_protect_failed"] += 1

    # -- asyncio.DatagramProtocol --------------------------------------------------------------
    def datagram_received(self, data: bytes, addr: Address) -> None:
        if not data:
            return
        kind = FIRST_BYTE[data[0]]
        if kind is _RTP:  # the common case first
            unprotect = self._unprotect
            if unprotect is None or len(data) < 12:
                self.stats["srtp_dropped"] += 1
                return
            try:
                packet, is_rtcp = unprotect(data)
            except pylibsrtp.Error:
                self.stats["srtp_unprotect_failed"] += 1
                return
            callback = self.on_rtcp if is_rtcp else self.on_rtp
            if callback is not None:
                callback(packet)
        elif kind is _STUN:
            self._receive_stun(data, addr)
        elif kind is _DTLS:
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
            self._channel = SecureChannel(self.certificate, server=not dtls_client)
            self._channel.set_remote_fingerprint(remote.fingerprint)  # RFC 8122 §5
        elif (remote.ufrag, remote.pwd) != (self._remote.ufrag, self._remote.pwd):
            raise SdpError("the remote changed its ICE credentials (ICE restart): unsupported")
        for candidate in remote.candidates:
            self.ice.add_remote_candidate(candidate)
        if self.state is TransportState.NEW:
            self._set_state(TransportState.CHECKING)
        self._run_ice()

    def _run_ice(self) -> None:
        if self._loop is None or self.state in _ENDED:
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
        now = self._loop.time()
        events = self.ice.handle(message, addr, now)
        self._send(events.send)
        channel = self._channel
        if events.selected and channel is not None:
            if self._dtls_addr is None or channel.state is TransportState.CONNECTED:
                self._dtls_addr = self.ice.selected
            if not channel.server:
                channel.start(now)  # ClientHello (RFC 6347 §4.2.1); once
                self._flush_dtls()
                self._sync_state()
        self._schedule()

    def _receive_dtls(self, data: bytes, addr: Address) -> None:
        channel = self._channel
        if channel is None or self._loop is None or self.state in _ENDED:
            self.stats["dtls_dropped"] += 1
            return
        if self._dtls_addr is None:  # DTLS server: the client's ICE finished before ours
            self._dtls_addr = addr
        records = channel.receive(data, self._loop.time())
        self._flush_dtls()
        if records:
            self.stats["sctp_ignored"] += len(records)
        self._sync_state()
        self._schedule()

    def _on_timer(self) -> None:
        self._timer = None
        if self._channel is not None and self._loop is not None:
            self._channel.handle_timeout(self._loop.time())  # DTLS retransmission
            self._flush_dtls()
            self._sync_state()
        self._run_ice()

    def _schedule(self) -> None:
        loop = self._loop
        if loop is None or self.state in _ENDED:
            return
        deadlines = []
        ice_due = self.ice.next_timeout()
        if ice_due is not None:
            deadlines.append(ice_due)
        if self._channel is not None:
            channel_due = self._channel.next_timeout()
            if channel_due is not None:
                deadlines.append(channel_due)
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
        if self._channel is None:
            return
        datagrams = self._channel.datagrams_to_send()
        addr = self._dtls_addr or self.ice.selected
        udp = self._udp
        if addr is not None and udp is not None:
            for datagram in datagrams:
                udp.sendto(datagram, addr)

    def _fail(self, reason: str) -> None:
        if self._channel is not None:
            self._channel.fail(reason)
        self._set_state(TransportState.FAILED, reason)

    def _sync_state(self) -> None:
        """Follow the channel once it has left NEW (new and checking are the ICE agent's)."""
        channel = self._channel
        if channel is not None and channel.state is not TransportState.NEW:
            self._set_state(channel.state, channel.error)

    def _set_state(self, state: TransportState, error: str | None = None) -> None:
        if state is self.state or self.state is TransportState.CLOSED:
            return
        self.state = state
        channel = self._channel
        if state is TransportState.CONNECTED and channel is not None:
            self._protect_rtp = channel.protect_rtp
            self._protect_rtcp = channel.protect_rtcp
            self._unprotect = channel.unprotect
            self._settle(None)
        elif state in _ENDED:
            self._protect_rtp = self._protect_rtcp = self._unprotect = None
            self._cancel_timer()
            if state is TransportState.FAILED:
                self.error = error
                log.debug("client peer failed: %s", error)
            self._settle(PeerError(error or str(state)))
        if self.on_state is not None:
            self.on_state(state)

    def _settle(self, error: PeerError | None) -> None:
        future = self._connected
        if future is not None and not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
                future.exception()  # retrieved: nobody may be waiting
