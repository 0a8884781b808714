"""Who receives which track: publications, subscriptions and their forwarding
(docs/protocol/03-publishing.md, docs/protocol/04-subscribing.md).

A publication exists once the publisher's media section is matched; others are subscribed when
they are ACTIVE and auto-subscribe (or asked with UpdateSubscription), may subscribe, and the
publisher's subscription permission allows it. The publisher's updated ParticipantInfo is
broadcast before any subscriber offer carries the track (docs/protocol/04-subscribing.md §4.1).

On the media tick it also tells the media layer which tracks come first in its subscribers'
stream allocation (screen shares, then active speakers' video), tells subscribers which of
their tracks the allocation paused or resumed (`StreamStateUpdate`), and every few seconds
sends each participant the connection quality of itself and of those it receives
(`ConnectionQualityUpdate`) when any changed, as livekit-server does.
"""

from __future__ import annotations

import logging
import time

from livekit.protocol import models, rtc

from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.quality import LOST, POOR, UPDATE_INTERVAL
from roomcast.rooms.contracts import Publication, TrackPublisher
from roomcast.rooms.dynacast import Dynacast, TrackTarget
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.publisher_peer import MatchedSection
from roomcast.rooms.room import Room
from roomcast.rooms.speakers import SpeakerDetector
from roomcast.rooms.tracks import TrackManager, may_publish_source

log = logging.getLogger(__name__)

# VideoQuality → simulcast layer index (lowest first), docs/protocol/04-subscribing.md §4.5.
_QUALITY_LAYER: dict[int, int] = {
    models.VideoQuality.LOW: 0,
    models.VideoQuality.MEDIUM: 1,
    models.VideoQuality.HIGH: 2,
}


_RID_ORDER = {"q": 0, "h": 1, "f": 2}

# Stream allocation order (media/allocator.py): screen shares, then who is speaking.
SCREEN_SHARE_PRIORITY = 2
SPEAKER_PRIORITY = 1
_SCREEN_SHARES = (models.TrackSource.SCREEN_SHARE, models.TrackSource.SCREEN_SHARE_AUDIO)
# Clients of protocol 10 and older know no LOST quality (livekit-server sends POOR instead).
_LOST_SINCE_PROTOCOL = 11


class SubscriptionManager:
    def __init__(self, plane: ForwardingPlane, tracks: TrackManager) -> None:
        self.plane = plane
        self.tracks = tracks
        self.publications: dict[str, Publication] = {}
        self.speakers = SpeakerDetector(self._speaking_level)
        self.dynacast = Dynacast()
        self._last_quality: float | None = None

    def _speaking_level(self, track_sid: str) -> float:
        uptrack = self.plane.uptrack(track_sid)
        if uptrack is None or not uptrack.is_speaking():
            return 0.0
        return uptrack.audio_level()

    # -- publishing --------------------------------------------------------------------------
    def publish(
        self,
        room: Room,
        participant: Participant,
        publisher: TrackPublisher,
        matched: MatchedSection,
    ) -> None:
        """A sending section is matched to a pending AddTrackRequest: publish the track."""
        assert matched.cid is not None
        section, plan = matched.section, matched.plan
        codecs = [c for c in plan.codecs if c.name.lower() != "rtx"]
        primary = codecs[0]
        if primary.name.lower() == "red" and len(codecs) > 1:
            primary = codecs[1]  # the track's codec is the one inside RED
        mime = f"{section.kind}/{primary.name}"
        rids = [rid.id for rid in section.rids if rid.direction == "send"]
        info = self.tracks.publish(
            room, participant, matched.cid, section.mid or "", mime, streams=len(rids)
        )
        if section.simulcast is not None:
            ordered = [alts[0].id for alts in section.simulcast.send if alts]
            rids = [rid for rid in ordered if rid in rids] or rids
        # Layer 0 must be the lowest: Chrome lists q;h;f but the Rust SDK lists h;q. LiveKit's
        # rids name their quality (q=LOW, h=MEDIUM, f=HIGH); other rids keep the SDP order.
        rids.sort(key=lambda rid: _RID_ORDER.get(rid, len(_RID_ORDER)))
        ssrcs = _media_ssrcs(section)
        declared = sorted(info.layers, key=lambda layer: layer.quality)
        uptrack = self.plane.add_uptrack(
            info.sid,
            section.kind,
            codecs={c.payload_type: f"{section.kind}/{c.name}".lower() for c in codecs},
            extensions={e.id: e.uri for e in plan.extmaps},
            rids=rids,
            ssrcs={ssrc: None for ssrc in ssrcs},
            mid=section.mid or "",
            publisher=participant.sid,
            send_rtcp=publisher.send_rtcp,
            packet_trailer=bool(info.packet_trailer_features),
            nack=any("nack" in codec.rtcp_fb for codec in codecs),
            layer_bitrates=[layer.bitrate for layer in declared],
        )
        if info.source in _SCREEN_SHARES:
            self.plane.set_priority(info.sid, SCREEN_SHARE_PRIORITY)
        publication = Publication(
            track_sid=info.sid,
            publisher_sid=participant.sid,
            publisher_identity=participant.identity,
            kind=section.kind,
            codecs=codecs,
            # Simulcast streams, or the spatial layers of one scalable (SVC) stream.
            layers=max(1, len(info.layers) if uptrack.svc_codec else len(rids)),
        )
        self.publications[info.sid] = publication
        publisher.published[section.mid or ""] = info.sid
        for other in room.participants.values():
            if other is not participant:
                self._maybe_subscribe(room, other, publication)

    def unpublish(
        self, room: Room, participant: Participant, track_sid: str, *, notify_publisher: bool
    ) -> None:
        publication = self.publications.pop(track_sid, None)
        if publication is not None:
            for other in room.participants.values():
                other.desired_subscriptions.pop(track_sid, None)
                if other.session is not None and other.sid in publication.subscribers:
                    other.session.subscriber.unsubscribe(track_sid)
            self.plane.remove_uptrack(track_sid)
        publisher = participant.session.publisher if participant.session is not None else None
        if publisher is not None:
            for mid, sid in list(publisher.published.items()):
                if sid == track_sid:
                    del publisher.published[mid]
        self.tracks.unpublish(room, participant, track_sid, notify_publisher)

    def enforce_publish_permission(self, room: Room, participant: Participant) -> None:
        """After a permission change, unpublish what may no longer be published
        (docs/protocol/05-room-and-participant-updates.md)."""
        permission = participant.permission
        for sid, info in list(participant.tracks.items()):
            if not may_publish_source(permission, info.source):
                self.unpublish(room, participant, sid, notify_publisher=True)

    # -- subscribing ------------------------------------------------------------------------
    def participant_active(self, room: Room, participant: Participant) -> None:
        for publication in list(self.publications.values()):
            if publication.publisher_sid != participant.sid:
                self._maybe_subscribe(room, participant, publication)

    def _allowed(self, room: Room, subscriber: Participant, publication: Publication) -> bool:
        if subscriber.state != State.ACTIVE or not subscriber.permission.can_subscribe:
            return False
        if subscriber.sid == publication.publisher_sid:
            return False
        if not self._in_room(room, publication):
            return False  # another room's track (publications are per node, not per room)
        return True

    @staticmethod
    def _publisher_allows(room: Room, subscriber: Participant, publication: Publication) -> bool:
        """The publisher's SubscriptionPermission (docs/protocol/04-subscribing.md)."""
        publisher = room.participants.get(publication.publisher_identity)
        permission = publisher.subscription_permission if publisher is not None else None
        if permission is None or permission.all_participants:
            return True
        return any(
            p.participant_identity == subscriber.identity or p.participant_sid == subscriber.sid
            for p in permission.track_permissions
            if p.all_tracks or publication.track_sid in p.track_sids
        )

    def _wanted(self, participant: Participant, publication: Publication) -> bool:
        wanted = participant.desired_subscriptions.get(publication.track_sid)
        if wanted is None:
            return participant.session is not None and participant.session.options.auto_subscribe
        return wanted

    def _maybe_subscribe(
        self, room: Room, participant: Participant, publication: Publication
    ) -> None:
        session = participant.session
        if session is None or not self._wanted(participant, publication):
            return
        if not self._allowed(room, participant, publication):
            return
        if not self._publisher_allows(room, participant, publication):
            self._tell_permission(participant, publication, allowed=False)
            return
        if participant.sid in publication.denied:
            self._tell_permission(participant, publication, allowed=True)
        self.plane.set_reads_packet_trailer(
            participant.sid,
            models.ClientInfo.Capability.CAP_PACKET_TRAILER in participant.capabilities,
        )
        self.plane.set_allow_pause(participant.sid, session.options.subscriber_allow_pause)
        session.subscriber.subscribe(publication)

    @staticmethod
    def _tell_permission(
        participant: Participant, publication: Publication, *, allowed: bool
    ) -> None:
        """SubscriptionPermissionUpdate to a subscriber whose right to a track changed."""
        if (participant.sid in publication.denied) != allowed:
            return  # already told
        if allowed:
            publication.denied.discard(participant.sid)
        else:
            publication.denied.add(participant.sid)
        if participant.session is not None:
            participant.session.send_signal(
                rtc.SignalResponse(
                    subscription_permission_update=rtc.SubscriptionPermissionUpdate(
                        participant_sid=publication.publisher_sid,
                        track_sid=publication.track_sid,
                        allowed=allowed,
                    )
                )
            )

    def subscription_permission_changed(self, room: Room, publisher: Participant) -> None:
        """The publisher changed who may subscribe to its tracks: current subscribers who lost
        the right are unsubscribed, and those who gained it are subscribed if they want it."""
        for publication in list(self.publications.values()):
            if publication.publisher_sid != publisher.sid:
                continue
            for other in list(room.participants.values()):
                session = other.session
                if other is publisher or session is None:
                    continue
                if self._publisher_allows(room, other, publication):
                    if not session.subscriber.is_subscribed(publication.track_sid):
                        self._maybe_subscribe(room, other, publication)
                elif session.subscriber.is_subscribed(publication.track_sid):
                    session.subscriber.unsubscribe(publication.track_sid)
                    self._tell_permission(other, publication, allowed=False)

    def update_subscription(
        self, room: Room, participant: Participant, track_sids: list[str], subscribe: bool
    ) -> None:
        for sid in track_sids:
            publication = self.publications.get(sid)
            if publication is None or not self._in_room(room, publication):
                # Unknown sids are not remembered: a client could make the server keep any
                # number of them. The SDKs only ask for tracks they were told about.
                continue
            participant.desired_subscriptions[sid] = subscribe
            if participant.session is None:
                continue
            if subscribe:
                self._maybe_subscribe(room, participant, publication)
            else:
                participant.session.subscriber.unsubscribe(sid)

    @staticmethod
    def _in_room(room: Room, publication: Publication) -> bool:
        publisher = room.participants.get(publication.publisher_identity)
        return publisher is not None and publisher.sid == publication.publisher_sid

    def enforce_subscribe_permission(self, room: Room, participant: Participant) -> None:
        session = participant.session
        if session is None:
            return
        if not participant.permission.can_subscribe:
            for sid in session.subscriber.subscribed():
                session.subscriber.unsubscribe(sid)
        else:
            self.participant_active(room, participant)

    def is_subscribed(self, subscriber_sid: str, publisher_sid: str) -> bool:
        """Does this subscriber receive any track of this publisher?"""
        return any(
            publication.publisher_sid == publisher_sid and subscriber_sid in publication.subscribers
            for publication in self.publications.values()
        )

    def track_settings(
        self, room: Room, participant: Participant, settings: rtc.UpdateTrackSettings
    ) -> None:
        session = participant.session
        if session is None:
            return
        for sid in settings.track_sids:
            publication = self.publications.get(sid)
            if publication is None or not session.subscriber.is_subscribed(sid):
                continue
            layer: int | None
            if settings.disabled:
                layer = None
            elif publication.layers <= 1:
                layer = 0
            elif settings.width or settings.height:
                layer = _layer_for_size(room, publication, sid, settings.width, settings.height)
            else:
                layer = _layer_for_quality(room, publication, settings.quality)
            session.subscriber.set_target(sid, layer, settings.fps)

    def tick(self, rooms: list[Room], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._prioritise_speakers(rooms)
        self.plane.tick()
        self.speakers.tick(rooms, self.is_subscribed, now)
        self._tick_dynacast(rooms, now)
        self._send_stream_states(rooms)
        if self._last_quality is None or now - self._last_quality >= UPDATE_INTERVAL:
            self._last_quality = now
            for room in rooms:
                self._send_connection_quality(room)

    def _prioritise_speakers(self, rooms: list[Room]) -> None:
        """Active speakers' video comes before the rest in every subscriber's allocation."""
        for room in rooms:
            for participant in room.participants.values():
                speaking = any(
                    self._speaking_level(sid) > 0
                    for sid, info in participant.tracks.items()
                    if info.type == models.TrackType.AUDIO
                )
                for sid, info in participant.tracks.items():
                    if info.type == models.TrackType.VIDEO and info.source not in _SCREEN_SHARES:
                        self.plane.set_priority(sid, SPEAKER_PRIORITY if speaking else 0)

    def _send_stream_states(self, rooms: list[Room]) -> None:
        """StreamStateUpdate: the allocation paused a subscriber's track, or resumed it."""
        changes = self.plane.take_stream_states()
        if not changes:
            return
        by_sid = {p.sid: p for room in rooms for p in room.participants.values()}
        states: dict[str, list[rtc.StreamStateInfo]] = {}
        for subscriber, track_sid, paused in changes:
            publication = self.publications.get(track_sid)
            if publication is None:
                continue
            states.setdefault(subscriber, []).append(
                rtc.StreamStateInfo(
                    participant_sid=publication.publisher_sid,
                    track_sid=track_sid,
                    state=rtc.StreamState.PAUSED if paused else rtc.StreamState.ACTIVE,
                )
            )
        for subscriber, infos in states.items():
            participant = by_sid.get(subscriber)
            if participant is not None and participant.session is not None:
                participant.session.send_signal(
                    rtc.SignalResponse(
                        stream_state_update=rtc.StreamStateUpdate(stream_states=infos)
                    )
                )

    def _send_connection_quality(self, room: Room) -> None:
        """ConnectionQualityUpdate to every active participant: its own quality and that of the
        participants it receives, when one changed or someone new is scored."""
        infos: dict[str, rtc.ConnectionQualityInfo] = {}
        changed = False
        for participant in room.participants.values():
            if participant.state != State.ACTIVE:
                continue
            quality, score = self.plane.connection_quality(participant.sid)
            changed = changed or quality != participant.connection_quality
            participant.connection_quality = quality
            participant.connection_score = score
            infos[participant.sid] = rtc.ConnectionQualityInfo(
                participant_sid=participant.sid,
                quality=models.ConnectionQuality.Name(quality),
                score=score,
            )
        if not changed:
            return
        for participant in room.participants.values():
            session = participant.session
            if participant.state != State.ACTIVE or session is None or not session.joined:
                continue
            updates = [
                info
                for sid, info in infos.items()
                if sid == participant.sid or self.is_subscribed(participant.sid, sid)
            ]
            if participant.client_protocol < _LOST_SINCE_PROTOCOL:
                updates = [_lost_as_poor(info) for info in updates]
            if updates:
                session.send_signal(
                    rtc.SignalResponse(
                        connection_quality=rtc.ConnectionQualityUpdate(updates=updates)
                    )
                )

    def _tick_dynacast(self, rooms: list[Room], now: float) -> None:
        simulcast: dict[str, TrackTarget] = {}
        for room in rooms:
            for participant in room.participants.values():
                session = participant.session
                if session is None:
                    continue
                for sid in participant.tracks:
                    publication = self.publications.get(sid)
                    if publication is not None and publication.kind == "video":
                        if publication.layers > 1:
                            codec = publication.codecs[0].name.lower()
                            simulcast[sid] = (session.send_signal, codec, publication.layers)
        self.dynacast.tick(now, simulcast, self.plane.downtracks())

    def participant_left(self, room: Room, participant: Participant) -> None:
        for sid in list(participant.tracks):
            self.unpublish(room, participant, sid, notify_publisher=False)
        if participant.session is not None:
            participant.session.subscriber.close()
        self.plane.set_reads_packet_trailer(participant.sid, False)
        self.plane.remove_subscriber(participant.sid)


def _lost_as_poor(info: rtc.ConnectionQualityInfo) -> rtc.ConnectionQualityInfo:
    if info.quality != LOST:
        return info
    return rtc.ConnectionQualityInfo(
        participant_sid=info.participant_sid,
        quality=models.ConnectionQuality.Name(POOR),
        score=info.score,
    )


def _layer_for_quality(room: Room, publication: Publication, quality: int) -> int:
    """The layer of the lowest published quality at least as good as the one asked for, else
    the highest (livekit-server's mapping, e.g. MEDIUM is layer 1 of LOW+HIGH)."""
    publisher = room.participants.get(publication.publisher_identity)
    info = publisher.tracks.get(publication.track_sid) if publisher is not None else None
    published = sorted({layer.quality for layer in info.layers}) if info is not None else []
    if len(published) != publication.layers:  # no usable layer list: LOW, MEDIUM, HIGH
        return min(_QUALITY_LAYER.get(quality, 2), publication.layers - 1)
    for index, present in enumerate(published):
        if present >= quality:
            return index
    return publication.layers - 1


def _layer_for_size(
    room: Room, publication: Publication, track_sid: str, width: int, height: int
) -> int:
    """The lowest layer at least as large as the subscriber's view (adaptive stream)."""
    publisher = room.participants.get(publication.publisher_identity)
    info = publisher.tracks.get(track_sid) if publisher is not None else None
    layers = sorted(info.layers, key=lambda layer: layer.width) if info is not None else []
    for index, layer in enumerate(layers[: publication.layers]):
        if layer.width >= width and layer.height >= height:
            return index
    return publication.layers - 1


def _media_ssrcs(section: object) -> list[int]:
    """Primary SSRCs from a=ssrc lines, without RTX repair streams (a=ssrc-group:FID)."""
    ssrcs = [s.ssrc for s in getattr(section, "ssrcs", [])]
    repairs = {
        group.ssrcs[1]
        for group in getattr(section, "ssrc_groups", [])
        if group.semantics == "FID" and len(group.ssrcs) > 1
    }
    return [ssrc for ssrc in dict.fromkeys(ssrcs) if ssrc not in repairs]
