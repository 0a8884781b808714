"""The PeerConnections of one participant, and what arrives on them.

On `/rtc` a participant has two transports (docs/protocol/02-join-and-transports.md §2.3): the
*subscriber* PC, where the server offers and opens `_reliable`/`_lossy`, and the *publisher* PC,
where the client offers. `ParticipantTransports` is the one seam the session and the signal
handler use: subscribing and publishing are roles, each backed by a transport, so a
single-PeerConnection protocol can back both roles with one transport without changing them.

It applies remote descriptions (ICE credentials, DTLS fingerprint), trickled candidates, holds
reliable data until the subscriber's `_reliable` channel opens, and hands received RTP, RTCP and
data packets to the forwarding plane and the data exchange.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from livekit.protocol import rtc

from roomcast.media import jsep
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.sdp import SdpError, SessionDescription
from roomcast.media.transport import PeerTransport
from roomcast.media.udp_mux import UdpMux
from roomcast.rooms.data import DATA_TRACK_LABEL, LOSSY_LABEL, RELIABLE_LABEL, DataExchange
from roomcast.rooms.data_tracks import DataTrackManager
from roomcast.rooms.participant import Participant
from roomcast.rooms.publisher_peer import MatchedSection, PublisherPeer
from roomcast.rooms.room import Room
from roomcast.rooms.subscriber_peer import SubscriberPeer

log = logging.getLogger(__name__)

Target = rtc.SignalTarget
MAX_PENDING_RELIABLE = 100 * 1024  # bytes held until the subscriber's _reliable opens
MAX_UNMATCHED = 20  # sending sections held for their AddTrackRequest (as pending tracks)
# What a subscriber's `_data_track` may hold unsent: one maximum client frame (128 packets of
# 16 000 bytes) on top of the latency budget a frame starts within (rooms/data_track_gate.py).
DATA_TRACK_BACKLOG = 4 * 1024 * 1024

SendSignal = Callable[[rtc.SignalResponse], None]
StateListener = Callable[[str], None]


@dataclass(frozen=True)
class MediaTaps:
    """The node's parts a participant's transports are built on and deliver to."""

    mux: UdpMux  # creates transports on the node's UDP port
    plane: ForwardingPlane  # RTP/RTCP in and out
    forward_rtp: Callable[[str, bytes], None]  # (publisher sid, RTP) → the plane, timed
    data: DataExchange  # data packets the client publishes
    data_tracks: DataTrackManager  # data-track packets the client publishes


def apply_remote(transport: PeerTransport, description: SessionDescription) -> None:
    """Take the peer's ICE credentials and DTLS fingerprint from its bundled transport."""
    section = next((m for m in description.media if not m.rejected), None)
    if section is None:
        raise SdpError("no accepted media section")
    ufrag = section.ice_ufrag or description.ice_ufrag
    pwd = section.ice_pwd or description.ice_pwd
    if ufrag and pwd:
        transport.set_remote_ice(ufrag, pwd)
    fingerprints = description.fingerprints_for(section)
    if not fingerprints:
        raise SdpError("no a=fingerprint for the DTLS transport (RFC 8122 §5)")
    # Prefer sha-256 (what every client sends); any listed hash identifies the certificate.
    chosen = next((f for f in fingerprints if f.algorithm.lower() == "sha-256"), fingerprints[0])
    try:
        transport.set_remote_fingerprint(f"{chosen.algorithm} {chosen.value}")
    except ValueError as exc:
        raise SdpError(f"unusable fingerprint: {exc}") from exc


class ParticipantTransports:
    def __init__(
        self, taps: MediaTaps, room: Room, participant: Participant, *, subscriber_primary: bool
    ) -> None:
        self._taps = taps
        self._room = room
        self._participant = participant
        self.subscriber_primary = subscriber_primary
        self._send_signal: SendSignal = _drop
        self._on_primary_state: StateListener = _ignore_state
        self._closed = False
        self._pending_reliable: deque[bytes] = deque()
        self._pending_bytes = 0
        # Sending sections offered before their AddTrackRequest (the SDK may send either first).
        self._unmatched: dict[str, MatchedSection] = {}

        subscriber = taps.mux.create_transport(on_state=self._on_subscriber_state)
        subscriber.on_channel_open = self._on_subscriber_channel_open
        subscriber.on_rtcp = self._on_subscriber_rtcp
        self._subscriber_transport = subscriber
        self.subscriber = SubscriberPeer(subscriber, taps.plane, participant.sid, self._signal)
        # Server-created channels open in-band (DCEP, RFC 8832) once SCTP is up.
        subscriber.create_data_channel(RELIABLE_LABEL, ordered=True)
        subscriber.create_data_channel(LOSSY_LABEL, ordered=False, max_retransmits=0)
        if taps.data_tracks.limits.enabled:
            # Where subscribed data tracks arrive; clients adopt it by label.
            subscriber.create_data_channel(
                DATA_TRACK_LABEL,
                ordered=False,
                max_retransmits=0,
                max_backlog=DATA_TRACK_BACKLOG,
            )
        self.publisher: PublisherPeer | None = None

    def bind(self, send_signal: SendSignal, on_primary_state: StateListener) -> None:
        """Connect to the session: where signals go, who hears the primary transport's state."""
        self._send_signal = send_signal
        self._on_primary_state = on_primary_state

    def _signal(self, message: rtc.SignalResponse) -> None:
        self._send_signal(message)

    # -- state -------------------------------------------------------------------------------
    def primary_connected(self) -> bool:
        """Is the primary transport (the one whose state is the participant's) connected?"""
        if self.subscriber_primary:
            primary: PeerTransport | None = self._subscriber_transport
        else:
            primary = self.publisher.transport if self.publisher is not None else None
        return primary is not None and primary.state == "connected"

    # The session hears the primary transport's states, and the failure of either one: a
    # transport fails when its consent expires or when it broke a limit (an aborted SCTP
    # association), and a participant must not stay in the room half-connected.
    def _on_subscriber_state(self, state: str) -> None:
        if not self._closed and (self.subscriber_primary or state == "failed"):
            self._on_primary_state(state)

    def _on_publisher_state(self, state: str) -> None:
        if not self._closed and (not self.subscriber_primary or state == "failed"):
            self._on_primary_state(state)

    # -- offers, answers, candidates ---------------------------------------------------------
    def send_subscriber_offer(self) -> None:
        self.subscriber.send_offer()

    def restart_subscriber_ice(self) -> None:
        """New local ICE credentials, then an offer carrying them (a resume is an ICE restart)."""
        self._subscriber_transport.restart_ice()
        self.subscriber.send_offer()

    def apply_offer(
        self, description: rtc.SessionDescription
    ) -> tuple[list[MatchedSection], list[str]]:
        """Answer the client's publisher offer; newly matched sections and mids that stopped.

        Raises SdpError when the offer cannot be answered.
        """
        offer = SessionDescription.parse(description.sdp)
        if self.publisher is None:
            self.publisher = self._create_publisher()
        apply_remote(self.publisher.transport, offer)
        return self.publisher.answer(offer, description.id)

    def _create_publisher(self) -> PublisherPeer:
        transport = self._taps.mux.create_transport(on_state=self._on_publisher_state)
        transport.on_data = self._on_publisher_data
        transport.on_rtp = self._on_publisher_rtp
        transport.on_rtcp = self._on_publisher_rtcp
        return PublisherPeer(transport, self._participant, self._signal)

    def apply_answer(self, description: rtc.SessionDescription) -> None:
        """The client's answer to our subscriber offer (its id is not checked: Rust sends 0).

        Raises SdpError when the answer is unusable.
        """
        answer = SessionDescription.parse(description.sdp)
        apply_remote(self._subscriber_transport, answer)
        self.subscriber.handle_answer(answer)

    def add_candidate(self, trickle: rtc.TrickleRequest) -> None:
        try:
            candidate, _, _ = jsep.parse_candidate_init(trickle.candidateInit)
        except SdpError as exc:
            log.debug("ignoring bad trickle candidate: %s", exc)
            return
        if trickle.target == Target.SUBSCRIBER:
            transport: PeerTransport | None = self._subscriber_transport
        else:
            transport = self.publisher.transport if self.publisher is not None else None
        if transport is not None and candidate:
            try:
                transport.add_remote_candidate(candidate)
            except ValueError as exc:
                log.debug("ignoring bad trickle candidate: %s", exc)

    def hold_unmatched(self, match: MatchedSection) -> None:
        """A sending section whose AddTrackRequest has not arrived yet (at most
        MAX_UNMATCHED are held; the oldest goes first)."""
        if match.section.mid is None:
            return
        self._unmatched[match.section.mid] = match
        while len(self._unmatched) > MAX_UNMATCHED:
            del self._unmatched[next(iter(self._unmatched))]

    def take_unmatched(self, cid: str, kind: str) -> MatchedSection | None:
        """The held section for a new pending track of `kind`: the one whose msid names the
        cid, else the first of that kind (never a section of the other kind)."""
        candidates = [(mid, m) for mid, m in self._unmatched.items() if m.section.kind == kind]
        named = [
            (mid, m)
            for mid, m in candidates
            if m.section.msid is not None and m.section.msid.track_id == cid
        ]
        for mid, match in named or candidates[:1]:
            del self._unmatched[mid]
            match.cid = cid
            return match
        return None

    # -- data --------------------------------------------------------------------------------
    def send_data(self, packet: bytes, reliable: bool, *, lossy_allowed: bool) -> bool:
        subscriber = self._subscriber_transport
        if self._closed:
            return False
        if reliable:
            if subscriber.has_channel(RELIABLE_LABEL) and not self._pending_reliable:
                return subscriber.send_data(RELIABLE_LABEL, packet)
            # Not open yet: hold it and replay on open, in order.
            if self._pending_bytes + len(packet) > MAX_PENDING_RELIABLE:
                return False
            self._pending_reliable.append(packet)
            self._pending_bytes += len(packet)
            return True
        if not lossy_allowed:
            return False
        return subscriber.send_data(LOSSY_LABEL, packet)

    def send_data_track(self, packet: bytes, *, max_backlog: int | None) -> bool:
        """One data-track packet to this subscriber (on the subscriber PC: data tracks are
        only subscribed with `canSubscribe`, which makes it the primary transport)."""
        subscriber = self._subscriber_transport
        if self._closed or (max_backlog is not None and subscriber.data_buffered > max_backlog):
            return False
        return subscriber.send_data(DATA_TRACK_LABEL, packet)

    def _on_subscriber_channel_open(self, label: str) -> None:
        if label != RELIABLE_LABEL:
            return
        while self._pending_reliable:
            packet = self._pending_reliable.popleft()
            self._pending_bytes -= len(packet)
            self._subscriber_transport.send_data(RELIABLE_LABEL, packet)

    def _on_publisher_data(self, label: str, payload: bytes) -> None:
        if self._closed:
            return
        if label == DATA_TRACK_LABEL:
            self._taps.data_tracks.handle_packet(self._participant, payload)
        else:
            self._taps.data.handle_incoming(self._room, self._participant, label, payload)

    # -- media taps --------------------------------------------------------------------------
    def _on_subscriber_rtcp(self, packet: bytes) -> None:
        self._taps.plane.handle_subscriber_rtcp(self._participant.sid, packet)

    def _on_publisher_rtp(self, packet: bytes) -> None:
        self._taps.forward_rtp(self._participant.sid, packet)

    def _on_publisher_rtcp(self, packet: bytes) -> None:
        self._taps.plane.handle_publisher_rtcp(self._participant.sid, packet)

    # -- end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every transport (in the background: DTLS close_notify, SCTP abort)."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        publisher = self.publisher.transport if self.publisher is not None else None
        for transport in (self._subscriber_transport, publisher):
            if transport is not None:
                task = loop.create_task(transport.close())
                _closing.add(task)
                task.add_done_callback(_closing.discard)


# Closing transports, referenced until done (the loop keeps only weak references to tasks).
_closing: set[asyncio.Task[None]] = set()


def _drop(message: rtc.SignalResponse) -> None:
    """Signals before `bind`: nothing is listening yet."""


def _ignore_state(state: str) -> None:
    """State changes before `bind`."""
