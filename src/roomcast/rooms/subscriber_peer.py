"""The subscriber PeerConnection of one participant: the server offers, the client answers.

Each subscribed track gets a sendonly section with msid ``<PA_sid>|<TR_sid> <TR_sid>``
(docs/protocol/04-subscribing.md §4.2). Offers are serialised: while one waits for its answer,
further changes are collected and offered once the answer arrives (JSEP §5.2, no glare on this PC by
design).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from livekit.protocol import rtc

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.jsep import TransportParams, candidate_init, new_session_id
from roomcast.media.sdp import Codec, SessionDescription
from roomcast.media.subscriber_offer import DATA_MID, OutgoingTrack, build_subscriber_offer
from roomcast.media.transport import PeerTransport
from roomcast.rooms.contracts import Publication

log = logging.getLogger(__name__)

NEGOTIATION_DEBOUNCE = 0.02  # seconds: batch subscriptions that arrive together


class SubscriberPeer:
    """Implements `TrackSubscriber` (rooms/contracts.py) on the subscriber PeerConnection."""

    def __init__(
        self,
        transport: PeerTransport,
        plane: ForwardingPlane,
        participant_sid: str,
        send: Callable[[rtc.SignalResponse], None],
    ) -> None:
        self.transport = transport
        self._plane = plane
        self._participant_sid = participant_sid
        self._send = send
        self._session_id = new_session_id()
        self._version = 0
        self._offer_id = 0
        self._tracks: list[OutgoingTrack] = []
        self._by_track: dict[str, OutgoingTrack] = {}
        self._publications: dict[str, Publication] = {}
        self._downtracks: set[str] = set()  # track sids with a plane downtrack
        self._awaiting_answer = False
        self._renegotiate = False
        self._debounce: asyncio.TimerHandle | None = None
        self._cname = secrets.token_hex(8)
        self._used_ssrcs: set[int] = set()

    # -- what is subscribed ------------------------------------------------------------------
    def subscribed(self) -> list[str]:
        return [t.track_id for t in self._tracks if t.active]

    def is_subscribed(self, track_sid: str) -> bool:
        track = self._by_track.get(track_sid)
        return track is not None and track.active

    def subscribe(self, publication: Publication) -> bool:
        if self.is_subscribed(publication.track_sid):
            return False
        track = OutgoingTrack(
            mid=str(len(self._tracks) + 1),  # "0" is the data section
            kind=publication.kind,
            stream_id=f"{publication.publisher_sid}|{publication.track_sid}",
            track_id=publication.track_sid,
            ssrc=self._new_ssrc(),
            cname=self._cname,
            codecs=_subscriber_codecs(publication),
        )
        self._tracks.append(track)
        self._by_track[publication.track_sid] = track
        self._publications[publication.track_sid] = publication
        publication.subscribers.add(self._participant_sid)
        self.negotiate()
        return True

    def unsubscribe(self, track_sid: str) -> bool:
        track = self._by_track.pop(track_sid, None)
        publication = self._publications.pop(track_sid, None)
        if publication is not None:
            publication.subscribers.discard(self._participant_sid)
        if track is None or not track.active:
            return False
        track.active = False
        if track_sid in self._downtracks:
            self._downtracks.discard(track_sid)
            self._plane.remove_downtrack(track_sid, self._participant_sid)
        self.negotiate()
        return True

    def _new_ssrc(self) -> int:
        while True:
            ssrc = secrets.randbits(32) or 1
            if ssrc not in self._used_ssrcs:
                self._used_ssrcs.add(ssrc)
                return ssrc

    # -- negotiation -------------------------------------------------------------------------
    def _ice(self) -> TransportParams:
        t = self.transport
        return TransportParams(t.ice_ufrag, t.ice_pwd, t.fingerprint, t.local_candidates())

    def send_offer(self) -> None:
        """Offer the current set of tracks now (also the first, data-only offer)."""
        if self._debounce is not None:
            self._debounce.cancel()
            self._debounce = None
        self._version += 1
        self._offer_id += 1
        sdp = build_subscriber_offer(self._ice(), self._session_id, self._version, self._tracks)
        self._awaiting_answer = True
        self._renegotiate = False
        self._send(
            rtc.SignalResponse(
                offer=rtc.SessionDescription(type="offer", sdp=sdp, id=self._offer_id)
            )
        )
        if self._version == 1:
            # Trickle our candidates too (both directions,
            # docs/protocol/02-join-and-transports.md §2.6); it is also in the SDP, and a duplicate
            # candidate is harmless.
            candidates = self.transport.local_candidates()
            for i, candidate in enumerate(candidates):
                self._send(
                    rtc.SignalResponse(
                        trickle=rtc.TrickleRequest(
                            candidateInit=candidate_init(candidate, DATA_MID, 0),
                            target=rtc.SignalTarget.SUBSCRIBER,
                            final=i == len(candidates) - 1,  # as livekit: the last one
                        )
                    )
                )

    def negotiate(self) -> None:
        """Renegotiate soon; if an offer is outstanding, right after its answer."""
        if self._awaiting_answer:
            self._renegotiate = True
        elif self._debounce is None:
            loop = asyncio.get_running_loop()
            self._debounce = loop.call_later(NEGOTIATION_DEBOUNCE, self.send_offer)

    def handle_answer(self, answer: SessionDescription) -> None:
        self._awaiting_answer = False
        for track in self._tracks:
            if not track.active or track.track_id in self._downtracks:
                continue
            section = answer.section(track.mid)
            if section is None or section.rejected:
                log.info("subscriber rejected track %s", track.track_id)
                continue
            codecs = {f"{track.kind}/{c.name}".lower(): c.payload_type for c in section.codecs}
            extensions = {e.uri: e.id for e in section.extmaps}
            self._plane.add_downtrack(
                track.track_id,
                self._participant_sid,
                ssrc=track.ssrc,
                codecs=codecs,
                extensions=extensions,
                send_rtp=self.transport.send_rtp,
                send_rtcp=self.transport.send_rtcp,
            )
            self._downtracks.add(track.track_id)
        if self._renegotiate:
            self.negotiate()

    def close(self) -> None:
        if self._debounce is not None:
            self._debounce.cancel()
        for track_sid in list(self._by_track):
            publication = self._publications.pop(track_sid, None)
            if publication is not None:
                publication.subscribers.discard(self._participant_sid)
            if track_sid in self._downtracks:
                self._plane.remove_downtrack(track_sid, self._participant_sid)
        self._downtracks.clear()
        self._by_track.clear()


def _subscriber_codecs(publication: Publication) -> list[Codec]:
    """The publisher's negotiated codecs, with the feedback we handle
    (docs/protocol/16-media-interop.md §4)."""
    feedback = ["nack", "nack pli", "ccm fir", "goog-remb"] if publication.kind == "video" else []
    return [
        Codec(c.payload_type, c.name, c.clock_rate, c.channels, c.fmtp, list(feedback))
        for c in publication.codecs
    ]
