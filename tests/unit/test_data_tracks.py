"""DataTrackManager without a server: publishing and its refusals, subscriber handles,
permissions, leaving, resume, and the packet fan-out, on real rooms with fake sessions
(docs/protocol/17-data-tracks.md)."""

from __future__ import annotations

from livekit.protocol import models, rtc

from roomcast.auth import VideoGrant
from roomcast.config import LimitConfig, RoomConfig
from roomcast.rooms.data_track_packet import Marker, build_packet, parse_header
from roomcast.rooms.data_tracks import DataTrackLimits, DataTrackManager, _Subscriber
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.room import Room
from roomcast.telemetry import Metrics
from tests.fakes import FakeSession

Reason = rtc.RequestResponse
PACKET = 16_000  # the largest packet the clients send


class World:
    def __init__(self, **limits: object) -> None:
        self.rooms = RoomManager(RoomConfig(), LimitConfig(), lambda event: None)
        self.room: Room = self.rooms.create("r")
        self.metrics = Metrics()
        self.now = 0.0
        self.tracks = DataTrackManager(
            DataTrackLimits(**limits),  # type: ignore[arg-type]
            self.metrics,
            clock=lambda: self.now,
        )
        self.updates: list[models.ParticipantInfo] = []  # ParticipantUpdates, as broadcast
        self.room.on_participant_changed = lambda room, p: self.updates.append(p.to_proto())

    def join(self, identity: str, **grant: object) -> tuple[Participant, FakeSession]:
        participant = Participant(identity=identity, grant=VideoGrant(**grant))  # type: ignore[arg-type]
        session = FakeSession(participant_sid=participant.sid)
        participant.session = session
        self.room.add_participant(participant)
        participant.set_state(State.ACTIVE)
        return participant, session

    def publish(self, participant: Participant, name: str, handle: int = 1) -> rtc.SignalResponse:
        request = rtc.PublishDataTrackRequest(pub_handle=handle, name=name)
        self.tracks.publish(self.room, participant, request)
        assert isinstance(participant.session, FakeSession)
        return participant.session.signals[-1]

    def subscribe(self, subscriber: Participant, sid: str, subscribe: bool = True) -> None:
        update = rtc.UpdateDataSubscription(
            updates=[rtc.UpdateDataSubscription.Update(track_sid=sid, subscribe=subscribe)]
        )
        self.tracks.update_subscription(self.room, subscriber, update)


def handles_of(session: FakeSession) -> dict[int, str]:
    """The last handle map a subscriber was sent: handle → track SID."""
    (*_, last) = session.signals_of("data_track_subscriber_handles")
    return {h: t.track_sid for h, t in last.data_track_subscriber_handles.sub_handles.items()}


def packet(handle: int, frame: int, marker: Marker = Marker.SINGLE, size: int = 100) -> bytes:
    return build_packet(
        marker=marker,
        handle=handle,
        sequence=frame,
        frame_number=frame,
        timestamp=90 * frame,
        payload=bytes(size),
    )


def test_a_published_track_is_listed_then_answered() -> None:
    world = World()
    _, watcher_session = world.join("watcher")
    pub, session = world.join("pub")
    response = world.publish(pub, "sensor", handle=7)
    info = response.publish_data_track_response.info
    assert info.sid.startswith("DTR_") and (info.pub_handle, info.name) == (7, "sensor")
    assert info.encryption == models.Encryption.Type.NONE
    assert pub.is_publisher and list(pub.data_tracks.values()) == [info]
    # Everyone learns from the publisher's full ParticipantInfo before its answer.
    assert [t.sid for t in world.updates[-1].data_tracks] == [info.sid]
    assert session.signals[-1] is response and len(session.signals) == 1
    assert world.room.participants["pub"].to_proto().data_tracks[0] == info
    del watcher_session


def test_publish_refusals_echo_the_request_in_livekit_servers_order() -> None:
    world = World(max_tracks=2, max_encoding_length=4)
    pub, session = world.join("pub")
    world.publish(pub, "a", handle=1)

    def refusal(**fields: object) -> tuple[int, int]:
        request = rtc.PublishDataTrackRequest(**fields)  # type: ignore[arg-type]
        world.tracks.publish(world.room, pub, request)
        answer = session.signals[-1].request_response
        assert answer.request_id == 0 and answer.publish_data_track == request
        return answer.reason, len(pub.data_tracks)

    assert refusal(pub_handle=0, name="b") == (Reason.INVALID_HANDLE, 1)
    assert refusal(pub_handle=65536, name="b")[0] == Reason.INVALID_HANDLE
    assert refusal(pub_handle=2, name="")[0] == Reason.INVALID_NAME
    assert refusal(pub_handle=2, name="é" * 129)[0] == Reason.INVALID_NAME  # 258 bytes
    assert refusal(pub_handle=0, name="")[0] == Reason.INVALID_HANDLE  # handle first
    custom = models.DataTrackFrameEncoding(custom="too-long")
    assert refusal(pub_handle=2, name="b", frame_encoding=custom)[0] == Reason.INVALID_REQUEST
    schema = models.DataTrackSchemaId(name="s", encoding=models.DataTrackSchemaEncoding(custom=""))
    assert refusal(pub_handle=2, name="b", schema=schema)[0] == Reason.INVALID_REQUEST
    custom_e2ee = models.Encryption.Type.CUSTOM
    assert refusal(pub_handle=2, name="b", encryption=custom_e2ee)[0] == Reason.INVALID_REQUEST
    assert refusal(pub_handle=1, name="b")[0] == Reason.DUPLICATE_HANDLE
    assert refusal(pub_handle=2, name="a")[0] == Reason.DUPLICATE_NAME
    world.publish(pub, "b", handle=2)
    assert refusal(pub_handle=3, name="c")[0] == Reason.LIMIT_EXCEEDED
    assert world.metrics.limit_hits.labels("data_tracks_per_participant")._value.get() == 1

    mute, mute_session = world.join("mute", can_publish_data=False)
    world.publish(mute, "a")
    assert mute_session.signals[-1].request_response.reason == Reason.NOT_ALLOWED
    off = World(enabled=False)
    anyone, anyone_session = off.join("anyone")
    off.publish(anyone, "a")
    assert anyone_session.signals[-1].request_response.reason == Reason.NOT_ALLOWED


def test_typed_track_fields_are_copied() -> None:
    world = World()
    pub, session = world.join("pub")
    encoding = models.DataTrackFrameEncoding(
        well_known=models.DataTrackFrameEncoding.WellKnownFrameEncoding.WELL_KNOWN_FRAME_ENCODING_CBOR
    )
    schema = models.DataTrackSchemaId(
        name="pose", encoding=models.DataTrackSchemaEncoding(custom="x")
    )
    request = rtc.PublishDataTrackRequest(
        pub_handle=1,
        name="typed",
        encryption=models.Encryption.Type.GCM,
        frame_encoding=encoding,
        schema=schema,
    )
    world.tracks.publish(world.room, pub, request)
    info = session.signals[-1].publish_data_track_response.info
    assert info.frame_encoding == encoding and info.schema == schema
    assert info.encryption == models.Encryption.Type.GCM


def test_subscribers_get_their_own_handles_and_their_full_map_on_every_change() -> None:
    world = World()
    sub, sub_session = world.join("sub")
    pub, _ = world.join("pub")
    a = world.publish(pub, "a", 1).publish_data_track_response.info.sid
    b = world.publish(pub, "b", 2).publish_data_track_response.info.sid
    world.subscribe(sub, a)
    assert list(handles_of(sub_session).values()) == [a]
    world.subscribe(sub, b)
    handles = handles_of(sub_session)
    assert sorted(handles.values()) == sorted([a, b]) and 0 not in handles
    (entry,) = [
        t
        for t in sub_session.signals[-1].data_track_subscriber_handles.sub_handles.values()
        if t.track_sid == a
    ]
    assert (entry.publisher_identity, entry.publisher_sid) == ("pub", pub.sid)
    # Asking again re-sends the map (the client may be waiting for it); nothing changes.
    count = len(sub_session.signals_of("data_track_subscriber_handles"))
    world.subscribe(sub, a)
    assert len(sub_session.signals_of("data_track_subscriber_handles")) == count + 1
    assert handles_of(sub_session) == handles
    world.subscribe(sub, a, subscribe=False)
    assert list(handles_of(sub_session).values()) == [b]
    # Unknown SIDs and one's own tracks change nothing.
    count = len(sub_session.signals)
    world.subscribe(sub, "DTR_unknown")
    assert len(sub_session.signals) == count


def test_without_can_subscribe_a_wish_waits_for_the_grant() -> None:
    world = World()
    sub, sub_session = world.join("sub", can_subscribe=False)
    pub, _ = world.join("pub")
    sid = world.publish(pub, "a").publish_data_track_response.info.sid
    world.subscribe(sub, sid)
    assert handles_of(sub_session) == {}
    sub.permission.can_subscribe = True
    world.tracks.enforce_subscribe_permission(world.room, sub)
    assert list(handles_of(sub_session).values()) == [sid]
    sub.permission.can_subscribe = False
    world.tracks.enforce_subscribe_permission(world.room, sub)
    assert handles_of(sub_session) == {}


def test_the_publishers_subscription_permission_applies() -> None:
    world = World()
    sub, sub_session = world.join("sub")
    pub, _ = world.join("pub")
    sid = world.publish(pub, "a").publish_data_track_response.info.sid
    world.subscribe(sub, sid)
    pub.subscription_permission = rtc.SubscriptionPermission(all_participants=False)
    world.tracks.subscription_permission_changed(world.room, pub)
    assert handles_of(sub_session) == {}
    (update,) = sub_session.signals_of("subscription_permission_update")
    told = update.subscription_permission_update
    assert (told.participant_sid, told.track_sid, told.allowed) == (pub.sid, sid, False)
    pub.subscription_permission = rtc.SubscriptionPermission(
        track_permissions=[rtc.TrackPermission(participant_identity="sub", track_sids=[sid])]
    )
    world.tracks.subscription_permission_changed(world.room, pub)
    assert list(handles_of(sub_session).values()) == [sid]
    last = sub_session.signals_of("subscription_permission_update")[-1]
    assert last.subscription_permission_update.allowed


def test_unpublish_tells_everyone_then_the_publisher_then_the_subscribers() -> None:
    world = World()
    sub, sub_session = world.join("sub")
    pub, session = world.join("pub")
    info = world.publish(pub, "a", handle=3).publish_data_track_response.info
    world.subscribe(sub, info.sid)
    world.tracks.unpublish(world.room, pub, rtc.UnpublishDataTrackRequest(pub_handle=9))
    missing = session.signals[-1].request_response
    assert missing.reason == Reason.NOT_FOUND and missing.unpublish_data_track.pub_handle == 9
    world.tracks.unpublish(world.room, pub, rtc.UnpublishDataTrackRequest(pub_handle=3))
    assert session.signals[-1].unpublish_data_track_response.info == info
    assert list(world.updates[-1].data_tracks) == [] and pub.data_tracks == {}
    assert handles_of(sub_session) == {}
    assert world.tracks.publications == {}


def test_losing_can_publish_data_unpublishes_every_data_track() -> None:
    world = World()
    pub, session = world.join("pub")
    world.publish(pub, "a", 1)
    world.publish(pub, "b", 2)
    world.tracks.enforce_publish_permission(world.room, pub)  # still allowed: nothing happens
    assert len(pub.data_tracks) == 2
    pub.permission.can_publish_data = False
    world.tracks.enforce_publish_permission(world.room, pub)
    assert pub.data_tracks == {} and world.tracks.publications == {}
    names = [
        s.unpublish_data_track_response.info.name
        for s in session.signals_of("unpublish_data_track_response")
    ]
    assert sorted(names) == ["a", "b"]


def test_leaving_ends_publications_and_subscriptions() -> None:
    world = World()
    sub, sub_session = world.join("sub")
    pub, _ = world.join("pub")
    other, _ = world.join("other")
    mine = world.publish(sub, "mine").publish_data_track_response.info.sid
    theirs = world.publish(pub, "theirs").publish_data_track_response.info.sid
    world.subscribe(sub, theirs)
    world.subscribe(other, mine)
    world.tracks.participant_left(world.room, pub)
    assert pub.data_tracks == {} and theirs not in world.tracks.publications
    assert handles_of(sub_session) == {}
    world.tracks.participant_left(world.room, other)
    assert world.tracks.publications[mine].subscribers == {}


def test_resume_needs_every_track_the_client_lists() -> None:
    world = World()
    pub, _ = world.join("pub")
    info = world.publish(pub, "a").publish_data_track_response.info
    known = rtc.SyncState(publish_data_tracks=[rtc.PublishDataTrackResponse(info=info)])
    assert world.tracks.sync_state_matches(pub, known)
    assert world.tracks.sync_state_matches(pub, rtc.SyncState())
    stale = models.DataTrackInfo(pub_handle=1, sid="DTR_gone", name="a")
    unknown = rtc.SyncState(publish_data_tracks=[rtc.PublishDataTrackResponse(info=stale)])
    assert not world.tracks.sync_state_matches(pub, unknown)
    empty = rtc.SyncState(publish_data_tracks=[rtc.PublishDataTrackResponse()])
    assert not world.tracks.sync_state_matches(pub, empty)


def test_handles_start_anywhere_never_zero_and_skip_those_in_use() -> None:
    state = _Subscriber(last_handle=65534)
    assert state.allocate() == 65535
    state.handles[65535] = None  # type: ignore[assignment]
    state.last_handle = 65534
    assert state.allocate() == 1  # wraps past 65535, never 0


# -- packets -----------------------------------------------------------------------------------
def test_packets_reach_each_subscriber_with_its_own_handle() -> None:
    world = World()
    sub1, session1 = world.join("sub1")
    sub2, session2 = world.join("sub2")
    pub, pub_session = world.join("pub")
    sid = world.publish(pub, "a", handle=5).publish_data_track_response.info.sid
    world.subscribe(sub1, sid)
    world.subscribe(sub2, sid)
    sent = packet(5, 1)
    world.tracks.handle_packet(pub, sent)
    for session in (session1, session2):
        (received,) = session.data_track_packets
        (handle,) = handles_of(session)
        assert parse_header(received).handle == handle
        assert received[:2] == sent[:2] and received[4:] == sent[4:]
    assert pub_session.data_track_packets == []
    assert world.metrics.data_track_packets == {"in": 1, "out": 2}
    assert world.metrics.data_track_bytes == {"in": len(sent), "out": 2 * len(sent)}


def test_bad_packets_are_dropped_and_counted() -> None:
    world = World(max_packet_size=1000)
    sub, session = world.join("sub")
    pub, _ = world.join("pub")
    sid = world.publish(pub, "a", handle=5).publish_data_track_response.info.sid
    world.subscribe(sub, sid)
    world.tracks.handle_packet(pub, packet(6, 1))  # not a handle of this publisher
    world.tracks.handle_packet(sub, packet(5, 1))  # the handle is the publisher's, not sub's
    world.tracks.handle_packet(pub, b"\x18\x00\x00")  # runt
    world.tracks.handle_packet(pub, packet(5, 2, size=1000))  # too large
    assert session.data_track_packets == []
    assert world.metrics.data_track_drops == {"unknown_handle": 2, "malformed": 1, "too_large": 1}
    assert world.metrics.limit_hits.labels("data_track_packet_size")._value.get() == 1


def test_a_subscriber_behind_loses_whole_frames_and_holds_up_nobody() -> None:
    world = World()
    slow, slow_session = world.join("slow")
    fast, fast_session = world.join("fast")
    pub, _ = world.join("pub")
    sid = world.publish(pub, "a", handle=5).publish_data_track_response.info.sid
    world.subscribe(slow, sid)
    world.subscribe(fast, sid)
    frame = [Marker.START, Marker.INTER, Marker.FINAL]

    def push(number: int) -> None:
        for marker in frame:
            world.tracks.handle_packet(pub, packet(5, number, marker, size=PACKET))

    push(1)
    slow_session.data_track_backlog = 10 * 1024 * 1024  # far behind when frame 2 starts
    push(2)
    slow_session.data_track_backlog = 0
    push(3)
    frames_of = lambda s: [parse_header(p).frame_number for p in s.data_track_packets]  # noqa: E731
    assert frames_of(fast_session) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert frames_of(slow_session) == [1, 1, 1, 3, 3, 3]
    assert world.metrics.data_track_drops == {"subscriber_behind": 3}
    # A packet that cannot be sent mid-frame drops the rest of that frame only.
    slow_session.data_track_open = False
    world.tracks.handle_packet(pub, packet(5, 4, Marker.START))
    slow_session.data_track_open = True
    world.tracks.handle_packet(pub, packet(5, 4, Marker.FINAL))
    world.tracks.handle_packet(pub, packet(5, 5, Marker.SINGLE))
    assert frames_of(slow_session)[-1:] == [5] and 4 not in frames_of(slow_session)


def test_the_latency_budget_follows_the_tracks_rate() -> None:
    world = World(target_latency=0.1)
    sub, session = world.join("sub")
    pub, _ = world.join("pub")
    sid = world.publish(pub, "a", handle=5).publish_data_track_response.info.sid
    world.subscribe(sub, sid)
    # 4 MB/s for a second: the budget becomes 400 kB, so 300 kB queued no longer drops.
    for number in range(250):
        world.now = number / 250
        world.tracks.handle_packet(pub, packet(5, number, size=PACKET))
    world.now = 1.0
    world.tracks.handle_packet(pub, packet(5, 250, size=PACKET))
    session.data_track_backlog = 300_000
    before = len(session.data_track_packets)
    world.tracks.handle_packet(pub, packet(5, 251, size=PACKET))
    assert len(session.data_track_packets) == before + 1
    unbounded = World(target_latency=0.0)
    sub, session = unbounded.join("sub")
    pub, _ = unbounded.join("pub")
    sid = unbounded.publish(pub, "a", handle=5).publish_data_track_response.info.sid
    unbounded.subscribe(sub, sid)
    session.data_track_backlog = 100_000_000
    unbounded.tracks.handle_packet(pub, packet(5, 1))
    assert len(session.data_track_packets) == 1


def test_a_resumed_subscriber_gets_its_handle_map_again() -> None:
    world = World()
    sub, session = world.join("sub")
    pub, _ = world.join("pub")
    world.tracks.resumed(sub)
    assert session.signals_of("data_track_subscriber_handles") == []  # nothing subscribed
    sid = world.publish(pub, "a").publish_data_track_response.info.sid
    world.subscribe(sub, sid)
    count = len(session.signals_of("data_track_subscriber_handles"))
    world.tracks.resumed(sub)
    assert len(session.signals_of("data_track_subscriber_handles")) == count + 1
    assert list(handles_of(session).values()) == [sid]
