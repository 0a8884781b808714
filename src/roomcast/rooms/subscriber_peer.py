"""The subscribing role of one participant: what it receives, and how that is negotiated.

`SubscriberPeer` (`/rtc`): the subscriber PeerConnection, where the server offers and the client
answers. Each subscribed track gets a sendonly section with msid ``<PA_sid>|<TR_sid> <TR_sid>``
(docs/protocol/04-subscribing.md §4.2). Offers are serialised: while one waits for its answer,
further changes are collected and offered once the answer arrives (JSEP §5.2, no glare on this PC by
design).

`SinglePcSubscriber` (`/rtc/v1`): the one PeerConnection, where only the client offers. Subscribed
tracks go out on the client's `recvonly` sections, answered `sendonly` with the same msid and
listed in the answer's `mid_to_track_id`; the server asks for sections and offers with
`MediaSectionsRequirement` (rooms/receive_slots.py, docs/protocol/19-signalling-v1.md §3).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable

from livekit.protocol import rtc

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.jsep import TransportParams, candidate_init, new_session_id
from roomcast.media.publisher_answer import MediaAnswerPlan
from roomcast.media.sdp import Codec, MediaSection, Msid, SessionDescription
from roomcast.media.subscriber_offer import (
    DATA_MID,
    OutgoingTrack,
    build_subscriber_offer,
    rtx_payload_types,
)
from roomcast.media.transport import PeerTransport
from roomcast.rooms.contracts import Cancellable, Publication, Scheduler
from roomcast.rooms.receive_slots import ReceiveSlots, idle_plan, offered_sections, send_plan

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
        # What the subscriber asked for each track (UpdateTrackSettings: layer, fps). It can
        # come before the answer that creates the track's downtrack, and is applied then.
        self._targets: dict[str, tuple[int | None, float]] = {}
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
            rtx_ssrc=self._new_ssrc() if publication.kind == "video" else 0,
        )
        self._tracks.append(track)
        self._by_track[publication.track_sid] = track
        self._publications[publication.track_sid] = publication
        publication.subscribers.add(self._participant_sid)
        self.negotiate()
        return True

    def set_target(self, track_sid: str, layer: int | None, fps: float) -> None:
        if not self.is_subscribed(track_sid):
            return
        self._targets[track_sid] = (layer, fps)
        if track_sid in self._downtracks:
            self._plane.set_target_layer(track_sid, self._participant_sid, layer, fps)

    def unsubscribe(self, track_sid: str) -> bool:
        track = self._by_track.pop(track_sid, None)
        self._targets.pop(track_sid, None)
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
                rtx=rtx_payload_types(section.codecs),
                rtx_ssrc=track.rtx_ssrc,
            )
            self._downtracks.add(track.track_id)
            _apply_target(self._plane, track.track_id, self._participant_sid, self._targets)
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
        self._targets.clear()


def _subscriber_codecs(publication: Publication) -> list[Codec]:
    """The publisher's negotiated codecs, with the feedback we handle
    (docs/protocol/16-media-interop.md §4)."""
    feedback = ["nack", "nack pli", "ccm fir", "goog-remb"] if publication.kind == "video" else []
    return [
        Codec(c.payload_type, c.name, c.clock_rate, c.channels, c.fmtp, list(feedback))
        for c in publication.codecs
    ]


# The feedback a subscriber's sections are answered with on /rtc/v1, as `_subscriber_codecs`
# offers it on /rtc.
# transport-cc on every codec, audio too (every packet counts in the downlink estimate).
SEND_FEEDBACK = {
    "video": ("nack", "nack pli", "ccm fir", "goog-remb", "transport-cc"),
    "audio": ("transport-cc",),
}


class SinglePcSubscriber:
    """Implements `TrackSubscriber` (rooms/contracts.py) on `/rtc/v1`'s one PeerConnection, and
    `SectionReceiver` (rooms/publisher_peer.py): the client's receive sections in each answer."""

    def __init__(
        self,
        transport: PeerTransport,
        plane: ForwardingPlane,
        participant_sid: str,
        send: Callable[[rtc.SignalResponse], None],
        scheduler: Scheduler,
    ) -> None:
        self.transport = transport
        self._plane = plane
        self._participant_sid = participant_sid
        self._send = send
        self._scheduler = scheduler
        self._slots = ReceiveSlots()
        self._tracks: dict[str, OutgoingTrack] = {}  # subscribed tracks by sid
        self._publications: dict[str, Publication] = {}
        # Track sid → (codecs, header extensions) as this answer sends it, until it is sent.
        self._planned: dict[str, tuple[dict[str, int], dict[str, int], dict[int, int]]] = {}
        self._downtracks: set[str] = set()
        self._targets: dict[str, tuple[int | None, float]] = {}  # as in SubscriberPeer
        self._cname = secrets.token_hex(8)
        self._used_ssrcs: set[int] = set()
        self._debounce: Cancellable | None = None
        self._closed = False

    # -- TrackSubscriber ---------------------------------------------------------------------
    def subscribed(self) -> list[str]:
        return list(self._tracks)

    def is_subscribed(self, track_sid: str) -> bool:
        return track_sid in self._tracks

    def subscribe(self, publication: Publication) -> bool:
        sid = publication.track_sid
        if sid in self._tracks or self._closed:
            return False
        self._tracks[sid] = OutgoingTrack(
            mid="",  # the client's section, known when an offer puts the track on one
            kind=publication.kind,
            stream_id=f"{publication.publisher_sid}|{sid}",
            track_id=sid,
            ssrc=self._new_ssrc(),
            cname=self._cname,
            codecs=list(publication.codecs),
            rtx_ssrc=self._new_ssrc() if publication.kind == "video" else 0,
        )
        self._publications[sid] = publication
        publication.subscribers.add(self._participant_sid)
        self._slots.add(sid, publication.kind)
        self.negotiate()
        return True

    def set_target(self, track_sid: str, layer: int | None, fps: float) -> None:
        if track_sid not in self._tracks:
            return
        self._targets[track_sid] = (layer, fps)
        if track_sid in self._downtracks:
            self._plane.set_target_layer(track_sid, self._participant_sid, layer, fps)

    def unsubscribe(self, track_sid: str) -> bool:
        self._targets.pop(track_sid, None)
        publication = self._publications.pop(track_sid, None)
        if publication is not None:
            publication.subscribers.discard(self._participant_sid)
        if self._tracks.pop(track_sid, None) is None:
            return False
        self._slots.remove(track_sid)
        self._planned.pop(track_sid, None)
        self._remove_downtrack(track_sid)
        self.negotiate()
        return True

    def close(self) -> None:
        self._closed = True
        if self._debounce is not None:
            self._debounce.cancel()
            self._debounce = None
        for track_sid in list(self._tracks):
            publication = self._publications.pop(track_sid, None)
            if publication is not None:
                publication.subscribers.discard(self._participant_sid)
            self._remove_downtrack(track_sid)
        self._tracks.clear()
        self._targets.clear()

    # -- asking the client -------------------------------------------------------------------
    def negotiate(self) -> None:
        """Ask the client for sections or another offer soon, if a change needs one."""
        if self._debounce is None and not self._closed:
            self._debounce = self._scheduler.call_later(NEGOTIATION_DEBOUNCE, self._request)

    def _request(self) -> None:
        self._debounce = None
        counts = None if self._closed else self._slots.request()
        if counts is not None:
            audios, videos = counts
            requirement = rtc.MediaSectionsRequirement(num_audios=audios, num_videos=videos)
            self._send(rtc.SignalResponse(media_sections_requirement=requirement))

    # -- SectionReceiver: the answer to a client offer ----------------------------------------
    def prepare(self, offer: SessionDescription) -> None:
        """Take the offer's receive sections; tracks whose section went away wait again."""
        self._planned.clear()
        for track_sid in self._slots.offered(offered_sections(offer)):
            self._remove_downtrack(track_sid)

    def plan(self, section: MediaSection, extensions: tuple[str, ...]) -> MediaAnswerPlan | None:
        """How to answer one of the client's recvonly sections: sendonly with the track on it,
        or inactive when it carries none. The plane forwards the extensions a publisher sends
        among those (the audio level), writes its own (AV1's Dependency Descriptor), and leaves
        out the rest (media/rtp.py `ExtensionRewriter`)."""
        slot = self._slots.slots.get(section.mid or "")
        track = self._tracks.get(slot.track or "") if slot is not None else None
        if track is None:
            return idle_plan(section, extensions)
        plan = send_plan(
            section,
            track.codecs,
            msid=Msid(track.stream_id, track.track_id),
            ssrc=track.ssrc,
            cname=track.cname,
            feedback=SEND_FEEDBACK[track.kind],
            extensions=extensions,
            rtx_ssrc=track.rtx_ssrc,
        )
        if plan is None:
            log.info("subscriber offers no codec of track %s", track.track_id)
            self._slots.unassign(track.track_id)
            return idle_plan(section, extensions)
        codecs = {f"{track.kind}/{c.name}".lower(): c.payload_type for c in plan.codecs}
        extension_ids = {e.uri: e.id for e in plan.extmaps}
        self._planned[track.track_id] = (codecs, extension_ids, rtx_payload_types(plan.codecs))
        return plan

    def mid_to_track_id(self) -> dict[str, str]:
        return self._slots.tracks_by_mid()

    def answered(self) -> None:
        """The answer is out: tracks it carries for the first time start flowing."""
        for track_sid, (codecs, extensions, rtx) in self._planned.items():
            track = self._tracks.get(track_sid)
            if track is None or track_sid in self._downtracks:
                continue
            try:
                self._plane.add_downtrack(
                    track_sid,
                    self._participant_sid,
                    ssrc=track.ssrc,
                    codecs=codecs,
                    extensions=extensions,
                    send_rtp=self.transport.send_rtp,
                    send_rtcp=self.transport.send_rtcp,
                    rtx=rtx,
                    rtx_ssrc=track.rtx_ssrc if rtx else 0,
                )
            except KeyError:  # unpublished meanwhile: the unsubscription is on its way
                continue
            self._downtracks.add(track_sid)
            _apply_target(self._plane, track_sid, self._participant_sid, self._targets)
        self._planned.clear()
        self._slots.answered()
        self.negotiate()

    # -- internals ---------------------------------------------------------------------------
    def _remove_downtrack(self, track_sid: str) -> None:
        if track_sid in self._downtracks:
            self._downtracks.discard(track_sid)
            self._plane.remove_downtrack(track_sid, self._participant_sid)

    def _new_ssrc(self) -> int:
        while True:
            ssrc = secrets.randbits(32) or 1
            if ssrc not in self._used_ssrcs:
                self._used_ssrcs.add(ssrc)
                return ssrc


def _apply_target(
    plane: ForwardingPlane,
    track_sid: str,
    subscriber: str,
    targets: dict[str, tuple[int | None, float]],
) -> None:
    """A new downtrack starts at what the subscriber last asked for, if it asked."""
    target = targets.get(track_sid)
    if target is not None:
        plane.set_target_layer(track_sid, subscriber, *target)
