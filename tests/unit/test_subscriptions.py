"""Publishing, subscribing and permissions without a server: SubscriptionManager and
TrackManager on real rooms and a real forwarding plane, with fake sessions."""

from __future__ import annotations

from livekit.protocol import models, rtc

from roomcast.auth import VideoGrant
from roomcast.config import LimitConfig, RoomConfig
from roomcast.media.forwarding_plane import ForwardingPlane
from roomcast.media.sdp import SessionDescription
from roomcast.rooms.contracts import JoinOptions
from roomcast.rooms.manager import RoomManager
from roomcast.rooms.participant import Participant, State
from roomcast.rooms.publisher_peer import MatchedSection, plan_for
from roomcast.rooms.room import Room, RoomEvent
from roomcast.rooms.subscriptions import SubscriptionManager
from roomcast.rooms.tracks import MAX_PENDING_TRACKS, TrackManager
from tests.fakes import FakeSession

Source = models.TrackSource


def offered_section(kind: str, cid: str, *, rids: tuple[str, ...] = ()) -> MatchedSection:
    """A client's sending section for track `cid`, as PublisherPeer matches it."""
    if kind == "audio":
        media = ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2"]
    else:
        media = ["m=video 9 UDP/TLS/RTP/SAVPF 96", "a=rtpmap:96 VP8/90000"]
    lines = [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        media[0],
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendonly",
        f"a=msid:stream {cid}",
        media[1],
        *[f"a=rid:{rid} send" for rid in rids],
        *([f"a=simulcast:send {';'.join(rids)}"] if rids else []),
        "a=ssrc:1111 cname:c",
    ]
    section = SessionDescription.parse("\r\n".join(lines) + "\r\n").media[0]
    plan = plan_for(section)
    assert plan is not None
    return MatchedSection(section, plan, cid)


class World:
    """Rooms, the track logic under test, and participants with fake sessions."""

    def __init__(self) -> None:
        self.events: list[RoomEvent] = []
        self.rooms = RoomManager(RoomConfig(), LimitConfig(), self.events.append)
        self.plane = ForwardingPlane(clock=lambda: 0.0)
        self.media = SubscriptionManager(self.plane, TrackManager())

    def join(
        self,
        identity: str,
        room: str = "r",
        *,
        active: bool = True,
        auto_subscribe: bool = True,
        **grant: object,
    ) -> tuple[Participant, FakeSession]:
        participant = Participant(identity=identity, grant=VideoGrant(**grant))  # type: ignore[arg-type]
        session = FakeSession(
            participant_sid=participant.sid, options=JoinOptions(auto_subscribe=auto_subscribe)
        )
        participant.session = session
        plane, sub = self.plane, participant.sid
        session.subscriber.on_target = lambda sid, layer, fps: plane.set_target_layer(
            sid, sub, layer, fps
        )
        the_room = self.room(room)
        the_room.add_participant(participant)
        participant.set_state(State.JOINED)
        if active:
            self.activate(participant)
        return participant, session

    def room(self, name: str = "r") -> Room:
        return self.rooms.get(name) or self.rooms.create(name)

    def activate(self, participant: Participant, room: str = "r") -> None:
        participant.set_state(State.ACTIVE)
        self.media.participant_active(self.room(room), participant)

    def publish(
        self,
        participant: Participant,
        kind: str = "audio",
        *,
        room: str = "r",
        source: int = Source.MICROPHONE,
        rids: tuple[str, ...] = (),
    ) -> str:
        """AddTrackRequest, then its media section matched: returns the track sid."""
        cid = f"{participant.identity}-{kind}-{len(participant.tracks)}"
        track_type = models.TrackType.AUDIO if kind == "audio" else models.TrackType.VIDEO
        request = rtc.AddTrackRequest(cid=cid, type=track_type, source=source)  # type: ignore[arg-type]
        response = self.media.tracks.add_track(participant, request)
        assert response.HasField("track_published"), response
        session = participant.session
        assert isinstance(session, FakeSession) and session.publisher is not None
        self.media.publish(
            self.room(room), participant, session.publisher, offered_section(kind, cid, rids=rids)
        )
        return response.track_published.track.sid


def test_publish_lists_the_track_and_subscribes_active_participants() -> None:
    world = World()
    alice, alice_session = world.join("alice")
    bob, bob_session = world.join("bob")
    sid = world.publish(alice)
    assert sid.startswith("TR_AM")
    assert list(alice.tracks) == [sid] and alice.is_publisher
    assert alice_session.publisher is not None and alice_session.publisher.published == {"0": sid}
    assert bob_session.subscriber.subscribed() == [sid]
    assert alice_session.subscriber.subscribed() == []  # never to one's own track
    assert world.media.publications[sid].subscribers == {bob.sid}
    assert [e.name for e in world.events if e.track is not None] == ["track_published"]
    assert world.plane.uptrack(sid) is not None


def test_a_participant_is_subscribed_once_it_becomes_active() -> None:
    world = World()
    alice, _ = world.join("alice")
    sid = world.publish(alice)
    carol, carol_session = world.join("carol", active=False)
    assert carol_session.subscriber.subscribed() == []  # JOINED is not enough
    world.activate(carol)
    assert carol_session.subscriber.subscribed() == [sid]


def test_auto_subscribe_off_waits_for_an_explicit_subscription() -> None:
    world = World()
    alice, _ = world.join("alice")
    bob, bob_session = world.join("bob", auto_subscribe=False)
    sid = world.publish(alice)
    assert bob_session.subscriber.subscribed() == []
    world.media.update_subscription(world.room(), bob, [sid], True)
    assert bob_session.subscriber.subscribed() == [sid]
    world.media.update_subscription(world.room(), bob, [sid], False)
    assert bob_session.subscriber.subscribed() == []
    assert bob.desired_subscriptions == {sid: False}


def test_a_declined_track_stays_declined_over_auto_subscribe() -> None:
    world = World()
    alice, _ = world.join("alice")
    bob, bob_session = world.join("bob")  # auto-subscribes
    sid = world.publish(alice)
    world.media.update_subscription(world.room(), bob, [sid], False)
    assert bob.desired_subscriptions == {sid: False}
    world.media.participant_active(world.room(), bob)  # e.g. can_subscribe granted again
    assert bob_session.subscriber.subscribed() == []


def test_participants_without_can_subscribe_receive_nothing_until_granted() -> None:
    world = World()
    alice, _ = world.join("alice")
    bob, bob_session = world.join("bob", can_subscribe=False)
    sid = world.publish(alice)
    assert bob_session.subscriber.subscribed() == []
    bob.permission.can_subscribe = True
    world.media.enforce_subscribe_permission(world.room(), bob)
    assert bob_session.subscriber.subscribed() == [sid]
    bob.permission.can_subscribe = False
    world.media.enforce_subscribe_permission(world.room(), bob)
    assert bob_session.subscriber.subscribed() == []


def test_publisher_subscription_permission_limits_who_may_subscribe() -> None:
    world = World()
    alice, _ = world.join("alice")
    _, bob_session = world.join("bob")
    _, carol_session = world.join("carol")
    alice.subscription_permission = rtc.SubscriptionPermission(
        all_participants=False,
        track_permissions=[rtc.TrackPermission(participant_identity="bob", all_tracks=True)],
    )
    sid = world.publish(alice)
    assert bob_session.subscriber.subscribed() == [sid]
    assert carol_session.subscriber.subscribed() == []


def test_tracks_of_another_room_are_never_subscribed() -> None:
    world = World()
    alice, _ = world.join("alice", room="one")
    _, bob_session = world.join("bob", room="two")
    world.publish(alice, room="one")
    assert bob_session.subscriber.subscribed() == []


def test_unpublish_unsubscribes_everyone_and_tells_the_publisher_when_asked() -> None:
    world = World()
    alice, alice_session = world.join("alice")
    _, bob_session = world.join("bob")
    sid = world.publish(alice)
    world.media.unpublish(world.room(), alice, sid, notify_publisher=True)
    assert bob_session.subscriber.subscribed() == []
    assert alice.tracks == {} and sid not in world.media.publications
    assert alice_session.publisher is not None and alice_session.publisher.published == {}
    notices = alice_session.signals_of("track_unpublished")
    assert [n.track_unpublished.track_sid for n in notices] == [sid]
    assert world.plane.uptrack(sid) is None
    assert [e.name for e in world.events if e.track is not None] == [
        "track_published",
        "track_unpublished",
    ]


def test_revoking_a_source_unpublishes_only_that_source() -> None:
    world = World()
    alice, alice_session = world.join("alice")
    mic = world.publish(alice, "audio", source=Source.MICROPHONE)
    camera = world.publish(alice, "video", source=Source.CAMERA)
    alice.permission.can_publish_sources[:] = [Source.MICROPHONE]
    world.media.enforce_publish_permission(world.room(), alice)
    assert list(alice.tracks) == [mic]
    gone = [n.track_unpublished.track_sid for n in alice_session.signals_of("track_unpublished")]
    assert gone == [camera]


def test_add_track_refusals_say_why() -> None:
    tracks = TrackManager(max_tracks=1)
    listener = Participant(identity="l", grant=VideoGrant(room_join=True, can_publish=False))
    audio = rtc.AddTrackRequest(cid="a", type=models.TrackType.AUDIO)
    refused = tracks.add_track(listener, audio).request_response
    assert refused.reason == rtc.RequestResponse.NOT_ALLOWED
    speaker = Participant(identity="s")
    data = rtc.AddTrackRequest(cid="d", type=models.TrackType.DATA)
    assert tracks.add_track(speaker, data).request_response.reason == (
        rtc.RequestResponse.UNSUPPORTED_TYPE
    )
    assert tracks.add_track(speaker, audio).HasField("track_published")
    assert tracks.add_track(speaker, audio).request_response.reason == (
        rtc.RequestResponse.DUPLICATE_NAME
    )
    other = rtc.AddTrackRequest(cid="b", type=models.TrackType.AUDIO)
    assert tracks.limit_reached(speaker) == "num_tracks"
    assert tracks.add_track(speaker, other).request_response.reason == (
        rtc.RequestResponse.LIMIT_EXCEEDED
    )


def test_at_most_20_tracks_wait_for_their_media() -> None:
    tracks, spammer = TrackManager(), Participant(identity="s")
    answers = [
        tracks.add_track(spammer, rtc.AddTrackRequest(cid=f"c{i}", type=models.TrackType.AUDIO))
        for i in range(MAX_PENDING_TRACKS + 5)
    ]
    assert sum(a.HasField("track_published") for a in answers) == MAX_PENDING_TRACKS
    assert tracks.limit_reached(spammer) == "pending_tracks"
    refused = [a.request_response for a in answers[MAX_PENDING_TRACKS:]]
    assert {r.reason for r in refused} == {rtc.RequestResponse.LIMIT_EXCEEDED}
    assert refused[0].message == "too many pending tracks"


def test_a_participant_leaving_unpublishes_its_tracks_and_drops_its_subscriptions() -> None:
    world = World()
    alice, _ = world.join("alice")
    bob, bob_session = world.join("bob")
    sid = world.publish(alice)
    bob_track = world.publish(bob)
    world.media.participant_left(world.room(), bob)
    assert bob_session.subscriber.closed and bob_session.subscriber.subscribed() == []
    assert bob_track not in world.media.publications
    assert world.media.publications[sid].subscribers == set()


def test_simulcast_layers_are_ordered_low_first_whatever_the_sdp_order() -> None:
    world = World()
    alice, _ = world.join("alice")
    sid = world.publish(alice, "video", source=Source.CAMERA, rids=("h", "q"))
    uptrack = world.plane.uptrack(sid)
    assert uptrack is not None
    assert [layer.rid for layer in uptrack.layers] == ["q", "h"]
    assert world.media.publications[sid].layers == 2


def test_a_section_never_carries_a_pending_track_of_the_other_kind() -> None:
    """L6: AddTrack(audio, microphone) must not let a video section publish as that track,
    even when the section's msid names the audio track's cid."""
    from roomcast.rooms.publisher_peer import PublisherPeer

    video = offered_section("video", "mic-cid").section
    pending = {"mic-cid": models.TrackInfo(sid="TR_AM1", type=models.TrackType.AUDIO)}
    assert PublisherPeer._match(video, pending) is None
    pending["cam-cid"] = models.TrackInfo(sid="TR_VC1", type=models.TrackType.VIDEO)
    assert PublisherPeer._match(video, pending) == "cam-cid"
    audio = offered_section("audio", "mic-cid").section
    assert PublisherPeer._match(audio, pending) == "mic-cid"
