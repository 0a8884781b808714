"""Data tracks: publications, explicit subscriptions with per-subscriber handles, and the
packet fan-out (docs/protocol/17-data-tracks.md).

A publisher names each track with its own 16-bit handle; the server gives it a `DTR_` SID and
lists it in every `ParticipantInfo.data_tracks` of the publisher. A subscriber asks for a track
by SID (`UpdateDataSubscription`); the server allocates that subscriber's own handle for it and
sends the subscriber its full handle map (`DataTrackSubscriberHandles`) on every change. Each
packet arriving on a publisher's `_data_track` channel is looked up by (publisher, handle) and
forwarded, one by one and never reassembled, to each subscriber with the handle rewritten;
`data_track_gate.FrameGate` keeps a slow subscriber from holding up the others.

`DataTrackManager` is the node's one instance (rooms are told apart by their participants). The
session calls it from signalling (`SignalHandler`), permission changes and leaving; the
transports call `handle_packet`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from livekit.protocol import models, rtc

from roomcast.config import Config
from roomcast.durations import parse_duration
from roomcast.ids import new_sid
from roomcast.rooms.contracts import SessionMetrics
from roomcast.rooms.data_track_gate import FrameGate, TrackRate, frame_budget
from roomcast.rooms.data_track_packet import MAX_HANDLE, PacketError, parse_header, with_handle
from roomcast.rooms.participant import Participant
from roomcast.rooms.room import Room

log = logging.getLogger(__name__)

DATA_TRACK_PREFIX = "DTR_"  # the Rust SDK rejects data track SIDs without it
MAX_NAME_BYTES = 256  # livekit_rtc.proto PublishDataTrackRequest.name
Refusal = rtc.RequestResponse
_ENCRYPTIONS = (models.Encryption.Type.NONE, models.Encryption.Type.GCM)


@dataclass(frozen=True)
class DataTrackLimits:
    """What config says about data tracks (config.py)."""

    enabled: bool = True
    max_tracks: int = 64  # per participant
    max_packet_size: int = 65535
    max_encoding_length: int = 32  # a custom frame or schema encoding name
    target_latency: float = 0.1  # seconds; 0: unbounded (data_track_gate.frame_budget)

    @classmethod
    def from_config(cls, config: Config) -> DataTrackLimits:
        limit = config.limit
        return cls(
            enabled=config.enable_data_tracks,
            max_tracks=limit.max_data_tracks_per_participant,
            max_packet_size=limit.max_data_track_packet_size,
            max_encoding_length=limit.max_data_track_custom_encoding_length,
            target_latency=parse_duration(config.rtc.datachannel_data_track_target_latency),
        )


@dataclass(eq=False, slots=True)
class DataTrackSubscription:
    subscriber: Participant
    handle: int  # the subscriber's handle for the track
    gate: FrameGate = field(default_factory=FrameGate)
    forwarded: int = 0  # packets sent to this subscriber
    dropped: int = 0  # packets not sent: it was behind, or its channel was not open


@dataclass(eq=False)
class DataTrackPublication:
    info: models.DataTrackInfo
    publisher: Participant
    rate: TrackRate
    subscribers: dict[str, DataTrackSubscription] = field(default_factory=dict)  # by sid
    # Subscribers told the publisher does not allow them (SubscriptionPermissionUpdate).
    denied: set[str] = field(default_factory=set)

    @property
    def sid(self) -> str:
        return self.info.sid


@dataclass(eq=False)
class _Subscriber:
    """One participant's side of data subscriptions."""

    wanted: set[str] = field(default_factory=set)  # track SIDs it asked for
    handles: dict[int, DataTrackPublication] = field(default_factory=dict)
    # livekit-server starts each subscriber's handles at a random value.
    last_handle: int = field(default_factory=lambda: secrets.randbelow(256))

    def allocate(self) -> int:
        handle = self.last_handle
        while True:
            handle = handle % MAX_HANDLE + 1  # 1..65535, never 0
            if handle not in self.handles:
                self.last_handle = handle
                return handle


def publisher_allows(publisher: Participant, subscriber: Participant, track_sid: str) -> bool:
    """The publisher's SubscriptionPermission, which covers its data tracks too."""
    permission = publisher.subscription_permission
    if permission is None or permission.all_participants:
        return True
    return any(
        p.participant_identity == subscriber.identity or p.participant_sid == subscriber.sid
        for p in permission.track_permissions
        if p.all_tracks or track_sid in p.track_sids
    )


class DataTrackManager:
    def __init__(
        self,
        limits: DataTrackLimits,
        metrics: SessionMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._metrics = metrics
        self._clock = clock
        self.publications: dict[str, DataTrackPublication] = {}  # by SID
        self._by_handle: dict[tuple[str, int], DataTrackPublication] = {}  # (publisher sid, h)
        self._subscribers: dict[str, _Subscriber] = {}  # by participant sid
        self._oversize_logged: set[str] = set()  # publishers told about once (by sid)

    # -- publishing --------------------------------------------------------------------------
    def publish(
        self, room: Room, participant: Participant, request: rtc.PublishDataTrackRequest
    ) -> None:
        """`PublishDataTrackRequest`: the track is listed and announced, then answered with
        `PublishDataTrackResponse`, or refused with a `RequestResponse` echoing the request."""
        session = participant.session
        if session is None:
            return
        refusal = self._check_publish(participant, request)
        if refusal is not None:
            reason, message = refusal
            log.info("data track refused: %s", message, extra={"identity": participant.identity})
            session.send_signal(
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        request_id=0,
                        reason=reason,  # type: ignore[arg-type]
                        message=message,
                        publish_data_track=request,
                    )
                )
            )
            return
        info = models.DataTrackInfo(
            pub_handle=request.pub_handle,
            sid=new_sid(DATA_TRACK_PREFIX),
            name=request.name,
            encryption=request.encryption,
        )
        if request.HasField("frame_encoding"):
            info.frame_encoding.CopyFrom(request.frame_encoding)
        if request.HasField("schema"):
            info.schema.CopyFrom(request.schema)
        publication = DataTrackPublication(info, participant, TrackRate(self._clock()))
        self.publications[info.sid] = publication
        self._by_handle[(participant.sid, info.pub_handle)] = publication
        participant.data_tracks[info.pub_handle] = info
        participant.is_publisher = True
        participant.touch()  # everyone learns of it before the publisher's answer
        session.send_signal(
            rtc.SignalResponse(publish_data_track_response=rtc.PublishDataTrackResponse(info=info))
        )

    def _check_publish(
        self, participant: Participant, request: rtc.PublishDataTrackRequest
    ) -> tuple[int, str] | None:
        """Why a publish is refused, in livekit-server's order; None if it is accepted."""
        if not self.limits.enabled:
            return Refusal.NOT_ALLOWED, "data tracks are disabled on this server"
        if not participant.permission.can_publish_data:
            return Refusal.NOT_ALLOWED, "does not have permission to publish data"
        if not 0 < request.pub_handle <= MAX_HANDLE:
            return Refusal.INVALID_HANDLE, f"handle {request.pub_handle} is not in 1..{MAX_HANDLE}"
        if not request.name or len(request.name.encode()) > MAX_NAME_BYTES:
            return Refusal.INVALID_NAME, f"name must be 1 to {MAX_NAME_BYTES} bytes"
        encoding = self._check_encodings(request)
        if encoding is not None:
            return Refusal.INVALID_REQUEST, encoding
        if request.encryption not in _ENCRYPTIONS:
            # The Rust SDK refuses a whole ParticipantUpdate listing another type.
            return Refusal.INVALID_REQUEST, "data tracks support encryption NONE or GCM only"
        if request.pub_handle in participant.data_tracks:
            return Refusal.DUPLICATE_HANDLE, f"handle {request.pub_handle} is already published"
        if any(info.name == request.name for info in participant.data_tracks.values()):
            return Refusal.DUPLICATE_NAME, f"a data track named {request.name!r} is published"
        limit = self.limits.max_tracks
        if len(participant.data_tracks) >= limit:
            self._metrics.count_limit_hit("data_tracks_per_participant")
            tracks = "data track" if limit == 1 else "data tracks"
            return Refusal.LIMIT_EXCEEDED, f"at most {limit} {tracks} per participant"
        return None

    def _check_encodings(self, request: rtc.PublishDataTrackRequest) -> str | None:
        custom: list[str] = []
        if request.HasField("frame_encoding"):
            if request.frame_encoding.WhichOneof("value") == "custom":
                custom.append(request.frame_encoding.custom)
        if request.HasField("schema") and request.schema.HasField("encoding"):
            if request.schema.encoding.WhichOneof("value") == "custom":
                custom.append(request.schema.encoding.custom)
        limit = self.limits.max_encoding_length
        if any(not name or len(name) > limit for name in custom):
            return f"a custom encoding name must be 1 to {limit} characters"
        return None

    def unpublish(
        self, room: Room, participant: Participant, request: rtc.UnpublishDataTrackRequest
    ) -> None:
        """`UnpublishDataTrackRequest`: everyone else learns first, then the publisher."""
        session = participant.session
        publication = self._by_handle.get((participant.sid, request.pub_handle))
        if session is None:
            return
        if publication is None:
            session.send_signal(
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        request_id=0,
                        reason=Refusal.NOT_FOUND,
                        message=f"no data track with handle {request.pub_handle}",
                        unpublish_data_track=request,
                    )
                )
            )
            return
        self._unpublish_all(participant, [publication])

    def enforce_publish_permission(self, room: Room, participant: Participant) -> None:
        """`canPublishData` was revoked: every data track of the participant goes (the
        publisher is told with `UnpublishDataTrackResponse`, as the protocol allows)."""
        if not participant.permission.can_publish_data:
            self._unpublish_all(participant, self._published_by(participant))

    def _unpublish_all(
        self, participant: Participant, publications: list[DataTrackPublication]
    ) -> None:
        if not publications:
            return
        changed = self._detach(publications)
        participant.touch()
        session = participant.session
        if session is not None:
            for publication in publications:
                session.send_signal(
                    rtc.SignalResponse(
                        unpublish_data_track_response=rtc.UnpublishDataTrackResponse(
                            info=publication.info
                        )
                    )
                )
        self._send_handles(changed)

    def _detach(self, publications: Iterable[DataTrackPublication]) -> list[Participant]:
        """Forget publications and their subscriptions; the subscribers whose map changed."""
        changed: dict[str, Participant] = {}
        for publication in publications:
            publisher = publication.publisher
            self.publications.pop(publication.sid, None)
            self._by_handle.pop((publisher.sid, publication.info.pub_handle), None)
            publisher.data_tracks.pop(publication.info.pub_handle, None)
            for sid, subscription in publication.subscribers.items():
                state = self._subscribers.get(sid)
                if state is not None:
                    state.handles.pop(subscription.handle, None)
                    changed[sid] = subscription.subscriber
            publication.subscribers.clear()
            for state in self._subscribers.values():
                state.wanted.discard(publication.sid)
        return list(changed.values())

    def _published_by(self, participant: Participant) -> list[DataTrackPublication]:
        return [
            publication
            for handle in participant.data_tracks
            if (publication := self._by_handle.get((participant.sid, handle))) is not None
        ]

    # -- subscribing -------------------------------------------------------------------------
    def update_subscription(
        self, room: Room, participant: Participant, update: rtc.UpdateDataSubscription
    ) -> None:
        """`UpdateDataSubscription`: the subscriber's full handle map answers every change, and
        every `subscribe: true` (even one already in effect: the client may be waiting)."""
        state = self._subscribers.setdefault(participant.sid, _Subscriber())
        answer = False
        for entry in update.updates:
            publication = self.publications.get(entry.track_sid)
            if publication is None or not _in_room(room, publication):
                # Unknown SIDs are not remembered: a client could make the server keep any
                # number of them. The SDKs only ask for tracks they were told about.
                continue
            if entry.subscribe:
                state.wanted.add(publication.sid)
                self._subscribe(participant, state, publication)
                answer = True
            else:
                state.wanted.discard(publication.sid)
                answer = self._unsubscribe(participant, state, publication) or answer
        if answer:
            self._send_handles([participant])

    def _subscribe(
        self, subscriber: Participant, state: _Subscriber, publication: DataTrackPublication
    ) -> bool:
        """Carry out a wanted subscription if it is allowed; True if it started."""
        publisher = publication.publisher
        if subscriber.sid in publication.subscribers or subscriber is publisher:
            return False
        if not subscriber.permission.can_subscribe:
            return False  # kept as wanted: carried out if the grant comes
        if not publisher_allows(publisher, subscriber, publication.sid):
            self._tell_permission(subscriber, publication, allowed=False)
            return False
        self._tell_permission(subscriber, publication, allowed=True)
        handle = state.allocate()
        state.handles[handle] = publication
        publication.subscribers[subscriber.sid] = DataTrackSubscription(subscriber, handle)
        return True

    def _unsubscribe(
        self, subscriber: Participant, state: _Subscriber, publication: DataTrackPublication
    ) -> bool:
        subscription = publication.subscribers.pop(subscriber.sid, None)
        if subscription is None:
            return False
        state.handles.pop(subscription.handle, None)
        return True

    def _tell_permission(
        self, subscriber: Participant, publication: DataTrackPublication, *, allowed: bool
    ) -> None:
        """SubscriptionPermissionUpdate to a subscriber whose right to a track changed."""
        if (subscriber.sid in publication.denied) != allowed:
            return  # already told
        if allowed:
            publication.denied.discard(subscriber.sid)
        else:
            publication.denied.add(subscriber.sid)
        if subscriber.session is not None:
            subscriber.session.send_signal(
                rtc.SignalResponse(
                    subscription_permission_update=rtc.SubscriptionPermissionUpdate(
                        participant_sid=publication.publisher.sid,
                        track_sid=publication.sid,
                        allowed=allowed,
                    )
                )
            )

    def subscription_permission_changed(self, room: Room, publisher: Participant) -> None:
        """The publisher changed who may subscribe: those who lost the right are unsubscribed
        (and told), those who gained it and want the track are subscribed."""
        changed: dict[str, Participant] = {}
        for publication in self._published_by(publisher):
            for other in list(room.participants.values()):
                state = self._subscribers.get(other.sid)
                if state is None or other is publisher:
                    continue
                if publisher_allows(publisher, other, publication.sid):
                    if publication.sid in state.wanted and self._subscribe(
                        other, state, publication
                    ):
                        changed[other.sid] = other
                elif self._unsubscribe(other, state, publication):
                    self._tell_permission(other, publication, allowed=False)
                    changed[other.sid] = other
        self._send_handles(list(changed.values()))

    def enforce_subscribe_permission(self, room: Room, participant: Participant) -> None:
        """`canSubscribe` changed: drop every data subscription, or carry out the wanted ones."""
        state = self._subscribers.get(participant.sid)
        if state is None:
            return
        changed = False
        if not participant.permission.can_subscribe:
            for publication in list(state.handles.values()):
                changed = self._unsubscribe(participant, state, publication) or changed
        else:
            for sid in list(state.wanted):
                wanted = self.publications.get(sid)
                if wanted is not None and _in_room(room, wanted):
                    changed = self._subscribe(participant, state, wanted) or changed
        if changed:
            self._send_handles([participant])

    def _send_handles(self, subscribers: Iterable[Participant]) -> None:
        for subscriber in subscribers:
            state = self._subscribers.get(subscriber.sid)
            if subscriber.session is None or state is None:
                continue
            handles = {
                handle: rtc.DataTrackSubscriberHandles.PublishedDataTrack(
                    publisher_identity=publication.publisher.identity,
                    publisher_sid=publication.publisher.sid,
                    track_sid=publication.sid,
                )
                for handle, publication in state.handles.items()
            }
            subscriber.session.send_signal(
                rtc.SignalResponse(
                    data_track_subscriber_handles=rtc.DataTrackSubscriberHandles(
                        sub_handles=handles
                    )
                )
            )

    # -- sessions ----------------------------------------------------------------------------
    def resumed(self, participant: Participant) -> None:
        """A resumed session may have missed a handle map while its signalling was down (a
        subscription the publisher allowed meanwhile): send the current one."""
        state = self._subscribers.get(participant.sid)
        if state is not None and state.handles:
            self._send_handles([participant])

    def sync_state_matches(self, participant: Participant, state: rtc.SyncState) -> bool:
        """On resume: does the server know every data track the client says it publishes?
        (If not, livekit-server makes the client reconnect fully, and so do we.)"""
        known = {info.sid for info in participant.data_tracks.values()}
        return all(
            entry.HasField("info") and entry.info.sid in known
            for entry in state.publish_data_tracks
        )

    def participant_left(self, room: Room, participant: Participant) -> None:
        """Its tracks go (its DISCONNECTED update lists none) and its subscriptions end."""
        changed = self._detach(self._published_by(participant))
        participant.data_tracks.clear()
        self._oversize_logged.discard(participant.sid)
        state = self._subscribers.pop(participant.sid, None)
        if state is not None:
            for publication in self.publications.values():
                publication.subscribers.pop(participant.sid, None)
                publication.denied.discard(participant.sid)
        self._send_handles(p for p in changed if p is not participant)

    # -- packets -----------------------------------------------------------------------------
    def handle_packet(self, publisher: Participant, packet: bytes) -> None:
        """One message from the publisher's `_data_track` channel: forward it to every
        subscriber of its track with the subscriber's handle, or drop it."""
        metrics = self._metrics
        size = len(packet)
        metrics.count_data_track_packets("in", 1, size)
        if size > self.limits.max_packet_size:
            metrics.count_limit_hit("data_track_packet_size")
            metrics.count_data_track_drops("too_large", 1)
            if publisher.sid not in self._oversize_logged:
                self._oversize_logged.add(publisher.sid)
                log.warning(
                    "data-track packet of %d bytes dropped: over %d (limit."
                    "max_data_track_packet_size); later ones are only counted",
                    size,
                    self.limits.max_packet_size,
                    extra={"identity": publisher.identity},
                )
            return
        try:
            header = parse_header(packet)
        except PacketError:
            metrics.count_data_track_drops("malformed", 1)
            return
        publication = self._by_handle.get((publisher.sid, header.handle))
        if publication is None:
            metrics.count_data_track_drops("unknown_handle", 1)
            return
        publication.rate.add(size, self._clock())
        if not publication.subscribers:
            return
        budget = frame_budget(publication.rate.bytes_per_second, self.limits.target_latency)
        sent = dropped = 0
        for subscription in publication.subscribers.values():
            gate = subscription.gate
            starts = gate.enter(header)
            session = subscription.subscriber.session
            if gate.sending and session is not None:
                copy = with_handle(packet, subscription.handle)
                if session.send_data_track(copy, max_backlog=budget if starts else None):
                    subscription.forwarded += 1
                    sent += 1
                    continue
                gate.drop_frame()
            subscription.dropped += 1
            dropped += 1
        if sent:
            metrics.count_data_track_packets("out", sent, sent * size)
        if dropped:
            metrics.count_data_track_drops("subscriber_behind", dropped)


def _in_room(room: Room, publication: DataTrackPublication) -> bool:
    """Publications are per node: is this one in the subscriber's room?"""
    return room.participants.get(publication.publisher.identity) is publication.publisher
