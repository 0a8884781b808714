"""`PeerTransport`: the asyncio adapter of one server-side PeerConnection.

The protocol state lives in `ice_lite.IceLiteAgent` and `secure_channel.SecureChannel` (no
I/O); here are the socket (through the node's `udp_mux.UdpMux`), the timer (`loop.call_at`)
and aiortc's SCTP, whose handlers are coroutines.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Protocol

import pylibsrtp
from aioice import stun

from .dtls import DtlsCertificate
from .ice_lite import Address, IceLiteAgent, describe
from .native_srtp import NativeSrtp
from .native_tracks import Engine
from .sctp import MAX_MESSAGE_SIZE, SCTP_PORT, DataChannels
from .sctp_backlog import SendBacklog
from .sctp_guard import RECEIVE_WINDOW_BYTES
from .secure_channel import SecureChannel, TransportState
from .srtp import Protect, Unprotect

logger = logging.getLogger(__name__)

CONSENT_TIMEOUT = 30.0  # RFC 7675 §5.1: 30 s after the last check from where we send
HOST_PRIORITY = 2130706431  # RFC 8445 §5.1.2.1: (126 << 24) | (65535 << 8) | (256 - 1)
# A passive TCP host candidate, priced as livekit-server's are so that UDP wins wherever it
# works: type-preference value 126 - 27 (livekit's TCP offset), and RFC 6544 §4.2's local preference
# (2^13 * direction-pref 4 for passive host candidates + other-pref 8191).
TCP_PASSIVE_PRIORITY = ((126 - 27) << 24) | (((4 << 13) + 8191) << 8) | (256 - 1)
# Decrypted SCTP packets waiting for the association: one receive window (a sender that
# respects it has no more new data in flight); beyond it records are dropped and SCTP resends.
MAX_SCTP_INBOX_BYTES = RECEIVE_WINDOW_BYTES
SCTP_PUMP_SLICE = 0.005  # seconds the SCTP pump runs before letting the loop serve others


class DatagramSender(Protocol):
    """The UDP socket's send side: asyncio's transport, or `udp_mux.SocketSender`."""

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None: ...

    def close(self) -> None: ...


class MuxPort(Protocol):
    """What a transport uses of the node's socket (`udp_mux.UdpMux`)."""

    certificate: DtlsCertificate
    consent_timeout: float
    data_channel_slow_threshold: int
    advertise_ip: str
    port: int
    udp: DatagramSender | None
    on_limit: Callable[[str], None]
    engine: Engine | None  # the native plane's, which takes keyed UDP transports' SRTP

    def register_native(self, native_id: int, transport: PeerTransport) -> None: ...

    def unregister_native(self, native_id: int) -> None: ...

    @property
    def tcp_port(self) -> int: ...  # 0: no ICE-TCP port

    def sendto(self, data: bytes, addr: Address) -> None: ...

    def send_media(self, data: bytes, addr: Address) -> None: ...

    def new_credentials(self) -> tuple[str, str]: ...

    def route_ufrag(self, ufrag: str, transport: PeerTransport) -> None: ...

    def unroute_ufrag(self, ufrag: str, transport: PeerTransport) -> None: ...

    def unroute(self, transport: PeerTransport) -> None: ...


class PeerTransport:
    """ICE-lite + DTLS (server role) + SRTP + SCTP data channels for one PeerConnection.

    Created before the remote description is known (a lite agent needs no remote candidates;
    the remote ufrag/pwd serve only to check a nominated address before sending there). States
    (`TransportState`): new → connecting (first authenticated check) → connected (DTLS done,
    remote certificate verified against a=fingerprint, SRTP keyed) → failed | closed.
    """

    def __init__(
        self,
        mux: MuxPort,
        ufrag: str,
        pwd: str,
        on_state: Callable[[TransportState], None] | None = None,
    ) -> None:
        self.fingerprint = mux.certificate.fingerprint("sha-256")
        self.state = TransportState.NEW
        self.on_state = on_state
        self.on_data: Callable[[str, bytes], None] | None = None
        self.on_channel_open: Callable[[str], None] | None = None
        self.on_rtp: Callable[[bytes], None] | None = None
        self.on_rtcp: Callable[[bytes], None] | None = None
        # Where we send: the first checked address, then a nominated one that answered our check.
        self.remote_address: Address | None = None
        self.stats: collections.Counter[str] = collections.Counter()
        self._mux = mux
        self._loop = asyncio.get_running_loop()
        self._ice = IceLiteAgent(ufrag, pwd)
        self._channel = SecureChannel(
            mux.certificate, server=True, consent_timeout=mux.consent_timeout
        )
        # The channel's SRTP callables while CONNECTED, None otherwise: the per-packet path.
        self._protect_rtp: Protect | None = None
        self._protect_rtcp: Protect | None = None
        self._unprotect: Unprotect | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = 0.0
        self._sctp_port = SCTP_PORT
        self._sctp_max_message_size = MAX_MESSAGE_SIZE
        self._channels = DataChannels(
            self._send_dtls_record,
            server=True,
            on_open=self._channel_opened,
            on_message=self._channel_message,
            on_limit=self._data_channel_limit,
            backlog=SendBacklog(slow_threshold_bps=mux.data_channel_slow_threshold),
            clock=self._loop.time,
        )
        self._sctp_inbox: collections.deque[bytes] = collections.deque()
        self._sctp_inbox_bytes = 0
        self._limits_logged: set[str] = set()
        self._sctp_pump: asyncio.Task[None] | None = None
        self._closed = False
        self._native = NativeSrtp(mux.engine)  # SRTP over UDP in the engine (native_srtp.py)
        self.native_id = self._native.native_id  # -1: no engine
        if self.native_id >= 0:
            mux.register_native(self.native_id, self)

    @property
    def ice_ufrag(self) -> str:
        return self._ice.ufrag

    @property
    def ice_pwd(self) -> str:
        return self._ice.pwd

    @property
    def remote_ufrag(self) -> str | None:
        return self._ice.remote_ufrag

    # -- signalling-facing API --

    def local_candidates(self) -> list[str]:
        """Our host candidates (RFC 8839 §5.1): UDP, and a passive TCP one (RFC 6544 §4.5) when
        the node has an ICE-TCP port. Foundations differ by protocol (RFC 8445 §5.1.1.3)."""
        mux = self._mux
        ip = mux.advertise_ip
        candidates = [f"candidate:1 1 udp {HOST_PRIORITY} {ip} {mux.port} typ host generation 0"]
        if mux.tcp_port:
            candidates.append(
                f"candidate:2 1 tcp {TCP_PASSIVE_PRIORITY} {ip} {mux.tcp_port} typ host"
                " tcptype passive generation 0"
            )
        return candidates

    def set_remote_ice(self, ufrag: str, pwd: str) -> bool:
        """The remote's credentials. New ones in a remote offer are an ICE restart, which the
        answerer must follow with new credentials of its own (RFC 8839 §4.4.1.1.1): returns
        True when ours changed for it."""
        if not self._ice.set_remote_credentials(ufrag, pwd):
            return False
        self._restart(answering=True)
        return True

    def restart_ice(self) -> None:
        """New local ufrag/pwd (RFC 8445 §9); DTLS and SRTP carry on over the new checks."""
        self._restart(answering=False)

    def add_remote_candidate(self, candidate: str) -> None:
        """Validate and ignore: peer-reflexive addresses from the checks are enough (RFC 8445
        §7.3.1.3). Raises ValueError for a malformed candidate; "" (end of candidates) is ok."""
        parse_candidate(candidate)

    def set_remote_fingerprint(self, fingerprint: str) -> None:
        """The remote `a=fingerprint` ("sha-256 AB:…"). Checked when DTLS completes, or now if
        it already has (the first DTLS flight can beat the client's answer): until then the
        transport is not connected and nothing flows; mismatch → failed."""
        held = self._channel.set_remote_fingerprint(fingerprint)
        if held:  # SCTP packets that arrived between the handshake and the verification
            self._sctp_inbox.extend(held)
        self._sync_state()
        self._arm_timer()

    def set_remote_sctp(
        self, port: int = SCTP_PORT, max_message_size: int = MAX_MESSAGE_SIZE
    ) -> None:
        """Remote `a=sctp-port` / `a=max-message-size`; used when the association starts."""
        self._sctp_port = port
        self._sctp_max_message_size = max_message_size

    def create_data_channel(
        self,
        label: str,
        *,
        ordered: bool = True,
        max_retransmits: int | None = None,
        max_backlog: int | None = None,
    ) -> None:
        self._channels.create(
            label, ordered=ordered, max_retransmits=max_retransmits, max_backlog=max_backlog
        )

    def bound_channel_backlog(self, label: str, max_backlog: int) -> None:
        """A backlog bound, as `create_data_channel` sets, for a channel the peer opens."""
        self._channels.bound_backlog(label, max_backlog)

    def send_data(self, label: str, payload: bytes) -> bool:
        return self._channels.send(label, payload)

    @property
    def data_buffered(self) -> int:
        """Bytes our data channels hold and have not handed to SCTP yet."""
        return self._channels.buffered

    def has_channel(self, label: str) -> bool:
        return self._channels.is_open(label)

    def send_rtp(self, packet: bytes) -> None:
        """Hot path: called once per forwarded packet per subscriber."""
        native = self._native
        if native.keyed:  # the engine protects and sends every RTP packet of this transport
            if not native.send_rtp(packet):
                self.stats["srtp_protect_failed"] += 1
            return
        protect, addr = self._protect_rtp, self.remote_address
        if protect is None or addr is None:
            return
        try:
            data = protect(native.numbered(packet))  # ICE-TCP: the engine's numbers still
        except pylibsrtp.Error:
            self.stats["srtp_protect_failed"] += 1
            return
        if isinstance(addr, tuple):  # UDP, the common case: straight to the socket
            udp = self._mux.udp
            if udp is not None:
                udp.sendto(data, addr)
        else:
            self._mux.send_media(data, addr)

    def send_rtcp(self, packet: bytes) -> None:
        protect, addr = self._protect_rtcp, self.remote_address
        if protect is not None and addr is not None:
            try:
                self._mux.send_media(protect(packet), addr)
            except pylibsrtp.Error:
                self.stats["srtp_protect_failed"] += 1

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_timer()
        if self._sctp_pump is not None and not self._sctp_pump.done():
            self._sctp_pump.cancel()
        try:
            await self._channels.close()  # SCTP ABORT while DTLS can still carry it
        except Exception:  # best effort: aiortc internals on a half-open association
            logger.debug("SCTP close failed for %s", self.ice_ufrag, exc_info=True)
        self._channel.close()  # close_notify (RFC 5246 §7.2.1)
        self._flush_dtls()
        self._mux.unroute(self)
        self._sync_state()
        if self.native_id >= 0:
            self._mux.unregister_native(self.native_id)
            self._native.close()
            self.native_id = -1

    # -- called by UdpMux --

    def receive_stun(self, message: stun.Message, addr: Address) -> bool:
        """One Binding request for one of our ufrags; True when it authenticated (the mux then
        routes `addr` here)."""
        now = self._loop.time()
        check = self._ice.handle(message, addr, now)
        if check.retired_ufrag is not None:
            self._mux.unroute_ufrag(check.retired_ufrag, self)
        if check.response is not None:
            self._mux.sendto(check.response, addr)
        if not check.authenticated:
            self.stats["stun_unauthorized"] += 1
            return False
        if check.probe is not None:  # a nomination from elsewhere: does that address answer?
            self._mux.sendto(check.probe, addr)
            self.stats["ice_probes"] += 1
        if self._ice.remote_address != self.remote_address:
            self.remote_address = self._ice.remote_address
            self._key_native()
        if check.consent:  # only checks from where we send keep us sending (RFC 7675 §5.1)
            self._channel.refresh_consent(now)
        if self.state is TransportState.NEW:
            self._channel.start(now)  # DTLS server: wait for the ClientHello
            self._sync_state()
        return True

    def receive_stun_response(self, message: stun.Message, addr: Address) -> None:
        """A Binding response from a routed address: if it answers our check of a nominated
        address, media goes there from now on (RFC 8445 §7.3.1.5)."""
        if not self._ice.handle_response(message, addr):
            return
        self.remote_address = addr
        self._key_native()
        self._channel.refresh_consent(self._loop.time())  # the answer is consent (RFC 7675)
        self.stats["ice_address_changes"] += 1
        logger.debug("transport %s now sends to %s", self.ice_ufrag, describe(addr))

    def receive_dtls(self, data: bytes) -> None:
        records = self._channel.receive(data, self._loop.time())
        self._flush_dtls()
        self._sync_state()
        self._arm_timer()
        if records:
            self._queue_sctp(records)

    def receive_srtp(self, data: bytes) -> None:
        """Hot path: one SRTP or SRTCP packet from the remote address."""
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

    def receive_plain(self, packet: bytes, is_rtcp: bool) -> None:
        """An RTP or RTCP packet the native engine decrypted for us."""
        callback = self.on_rtcp if is_rtcp else self.on_rtp
        if callback is not None:
            callback(packet)

    # -- internals --

    def _key_native(self) -> None:
        connected = self.state is TransportState.CONNECTED
        self._native.update(connected, self.remote_address, self._channel.srtp_keys)

    def _restart(self, *, answering: bool) -> None:
        previous = self.ice_ufrag
        ufrag, pwd = self._mux.new_credentials()
        self._mux.route_ufrag(ufrag, self)
        retired = self._ice.restart(ufrag, pwd, answering=answering)
        if retired is not None:
            self._mux.unroute_ufrag(retired, self)
        logger.debug("transport %s ICE restart (was %s)", ufrag, previous)

    def _sync_state(self) -> None:
        """Follow the channel's state: cache or drop SRTP, start SCTP, tell the owner."""
        channel = self._channel
        state = channel.state
        if state is self.state:
            return
        self.state = state
        if state is TransportState.CONNECTED:
            self._protect_rtp = channel.protect_rtp
            self._protect_rtcp = channel.protect_rtcp
            self._unprotect = channel.unprotect
            logger.debug(
                "transport %s DTLS connected (%s, %s)",
                self.ice_ufrag,
                channel.selected_cipher,
                channel.srtp_profile,
            )
            self._run_sctp_pump()  # starts the association first
        elif state is TransportState.FAILED or state is TransportState.CLOSED:
            self._protect_rtp = self._protect_rtcp = self._unprotect = None
            self._cancel_timer()
            if state is TransportState.FAILED:
                logger.info("transport %s failed: %s", self.ice_ufrag, channel.error)
        self._key_native()
        if self.on_state is not None:
            self.on_state(state)

    def _arm_timer(self) -> None:
        """One timer for the channel's next deadline. A later deadline (consent refreshed)
        leaves an earlier timer armed: it fires, finds nothing due and re-arms."""
        due = self._channel.next_timeout()
        if due is None or (self._timer is not None and self._timer_due <= due):
            return
        self._cancel_timer()
        self._timer_due = due
        self._timer = self._loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._channel.handle_timeout(self._loop.time())
        self._flush_dtls()
        self._sync_state()
        self._arm_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush_dtls(self) -> None:
        addr = self.remote_address
        for datagram in self._channel.datagrams_to_send():
            if addr is not None:
                self._mux.sendto(datagram, addr)

    def _send_dtls_record(self, data: bytes) -> None:
        """Outgoing SCTP packet → one DTLS record (RFC 8261 §5); dropped unless connected."""
        if not self._channel.send_record(data):
            self.stats["sctp_dropped"] += 1
            return
        self._flush_dtls()

    def _queue_sctp(self, records: list[bytes]) -> None:
        """Decrypted records wait here for the pump, up to MAX_SCTP_INBOX_BYTES."""
        for record in records:
            if self._sctp_inbox_bytes + len(record) > MAX_SCTP_INBOX_BYTES:
                self._data_channel_limit("sctp_inbox", False)
                continue
            self._sctp_inbox.append(record)
            self._sctp_inbox_bytes += len(record)
        self._run_sctp_pump()

    def _run_sctp_pump(self) -> None:
        if self._sctp_pump is None or self._sctp_pump.done():
            self._sctp_pump = self._loop.create_task(self._pump_sctp())

    async def _pump_sctp(self) -> None:
        """Feed SCTP packets to aiortc one at a time, in arrival order (its handler is async),
        yielding to the loop every SCTP_PUMP_SLICE so a burst never stalls other work."""
        if not self._channels.started:
            await self._channels.start(self._sctp_port, self._sctp_max_message_size)
        inbox, clock = self._sctp_inbox, self._loop.time
        slice_end = clock() + SCTP_PUMP_SLICE
        while inbox:
            record = inbox.popleft()
            self._sctp_inbox_bytes -= len(record)
            try:
                await self._channels.handle_packet(record)
            except Exception:  # aiortc asserting on bad input, or an on_data/on_channel_open bug
                self.stats["sctp_errors"] += 1
                if log_this_time(self.stats["sctp_errors"]):
                    logger.warning("SCTP packet handling failed", exc_info=True)
            if inbox and clock() >= slice_end:
                await asyncio.sleep(0)
                slice_end = clock() + SCTP_PUMP_SLICE

    def _data_channel_limit(self, limit: str, fatal: bool) -> None:
        """A data-channel limit was applied: count it, log it once per transport and limit; when
        it aborted the association, fail the transport (its owner removes the participant)."""
        self._mux.on_limit(f"data_channel_{limit}")
        if limit not in self._limits_logged:
            self._limits_logged.add(limit)
            action = "closing the transport" if fatal else "dropping"
            logger.info(
                "transport %s: data channel limit %s hit, %s", self.ice_ufrag, limit, action
            )
        if fatal and not self._closed:
            self._sctp_inbox.clear()
            self._sctp_inbox_bytes = 0
            self._channel.fail(f"SCTP association aborted: {limit}")
            self._flush_dtls()
            self._sync_state()

    def _channel_opened(self, label: str) -> None:
        if self.on_channel_open is not None:
            self.on_channel_open(label)

    def _channel_message(self, label: str, payload: bytes) -> None:
        if self.on_data is not None:
            self.on_data(label, payload)


def log_this_time(count: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th ... occurrence: visible, but never a flood."""
    return count & (count - 1) == 0


def parse_candidate(candidate: str) -> tuple[str, int, str] | None:
    """(address, port, type) of an SDP candidate (RFC 8839 §5.1), None for an empty one.
    Accepts "candidate:…" with or without "a="; raises ValueError when malformed."""
    text = candidate.strip()
    if text.startswith("a="):
        text = text[2:]
    if not text:
        return None
    if not text.startswith("candidate:"):
        raise ValueError(f"not an ICE candidate: {candidate!r}")
    fields = text[len("candidate:") :].split()
    try:
        if len(fields) < 8 or fields[6] != "typ" or fields[2].lower() not in ("udp", "tcp"):
            raise ValueError
        int(fields[1]), int(fields[3])
        port = int(fields[5])
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ValueError(f"malformed ICE candidate: {candidate!r}") from None
    return fields[4], port, fields[7]
