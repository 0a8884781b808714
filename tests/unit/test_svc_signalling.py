"""SVC around the plane: the publisher's codec and Dependency Descriptor in the answer, the
descriptor offered to subscribers, quality and size requests mapped to spatial layers, and
dynacast for a scalable track."""

from __future__ import annotations

from livekit.protocol import models, rtc

from roomcast.media.rtp import URI_DEPENDENCY_DESCRIPTOR
from roomcast.media.sdp import Codec, MediaSection, SessionDescription
from roomcast.media.subscriber_offer import (
    DEPENDENCY_DESCRIPTOR_ID,
    OutgoingTrack,
    build_subscriber_offer,
)
from roomcast.media.svc_downtrack import SvcDownTrack
from roomcast.rooms.participant import Participant
from roomcast.rooms.publisher_peer import MatchedSection, PublisherPeer, plan_for
from tests.fakes import FakeSession
from tests.unit.test_negotiation import CHROME_OFFER, ICE
from tests.unit.test_subscriptions import World

Quality = models.VideoQuality
LAYERS = [
    models.VideoLayer(quality=Quality.LOW, width=320, height=180),
    models.VideoLayer(quality=Quality.MEDIUM, width=640, height=360),
    models.VideoLayer(quality=Quality.HIGH, width=1280, height=720),
]


def chrome_video() -> MediaSection:
    return SessionDescription.parse(CHROME_OFFER).media[1]


def test_the_answer_takes_the_published_codec_and_the_descriptor_for_av1_only() -> None:
    section = chrome_video()
    default = plan_for(section)
    assert default is not None and default.codecs[0].name == "VP8"  # the offer's first
    vp9 = plan_for(section, "vp9")
    assert vp9 is not None and vp9.codecs[0].name == "VP9"
    assert URI_DEPENDENCY_DESCRIPTOR not in [e.uri for e in vp9.extmaps]
    av1 = plan_for(section, "av1")
    assert av1 is not None and av1.codecs[0].name == "AV1"
    assert [e.id for e in av1.extmaps if e.uri == URI_DEPENDENCY_DESCRIPTOR] == [9]
    missing = plan_for(section, "h265")
    assert missing is not None and missing.codecs[0].name == "VP8"


def test_the_codec_a_track_asks_for() -> None:
    participant = Participant(identity="p")
    peer = PublisherPeer(None, participant, lambda _: None)  # type: ignore[arg-type]
    asked = models.TrackInfo(codecs=[models.SimulcastCodecInfo(mime_type="video/vp9")])
    assert peer._track_codec(None, asked) == "vp9"
    legacy = models.TrackInfo(codecs=[models.SimulcastCodecInfo(cid="c")])  # no codec named
    assert peer._track_codec(None, legacy) is None
    participant.tracks["TR_1"] = models.TrackInfo(sid="TR_1", mime_type="video/AV1")
    assert peer._track_codec("TR_1", None) == "av1"


def test_subscribers_are_offered_the_descriptor_with_av1_tracks() -> None:
    av1 = Codec(45, "AV1", 90000)
    vp9 = Codec(98, "VP9", 90000, fmtp="profile-id=0")
    tracks = [
        OutgoingTrack("1", "video", "PA_x|TR_a", "TR_a", 1111, "c", [av1]),
        OutgoingTrack("2", "video", "PA_x|TR_b", "TR_b", 2222, "c", [vp9]),
    ]
    offer = SessionDescription.parse(build_subscriber_offer(ICE, "9", 2, tracks))
    av1_section, vp9_section = offer.media[1:]
    assert [(e.id, e.uri) for e in av1_section.extmaps] == [
        (DEPENDENCY_DESCRIPTOR_ID, URI_DEPENDENCY_DESCRIPTOR)
    ]
    assert vp9_section.extmaps == []


def vp9_svc_section(cid: str) -> MediaSection:
    lines = [
        "v=0",
        "o=- 1 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 98",
        "c=IN IP4 0.0.0.0",
        "a=mid:0",
        "a=sendonly",
        f"a=msid:stream {cid}",
        "a=rtpmap:96 VP8/90000",
        "a=rtpmap:98 VP9/90000",
        "a=ssrc:1111 cname:c",
    ]
    return SessionDescription.parse("\r\n".join(lines) + "\r\n").media[0]


def publish_svc(world: World, participant: Participant) -> str:
    request = rtc.AddTrackRequest(
        cid="cam",
        type=models.TrackType.VIDEO,
        source=models.TrackSource.CAMERA,
        width=1280,
        height=720,
        layers=LAYERS,
        simulcast_codecs=[rtc.SimulcastCodec(codec="vp9", cid="cam")],
    )
    response = world.media.tracks.add_track(participant, request)
    info = response.track_published.track
    section = vp9_svc_section("cam")
    plan = plan_for(section, "vp9")
    assert plan is not None
    session = participant.session
    assert isinstance(session, FakeSession) and session.publisher is not None
    world.media.publish(
        world.room(),
        participant,
        session.publisher,
        MatchedSection(section, plan, "cam"),
    )
    return info.sid


def test_quality_and_size_requests_choose_spatial_layers_of_an_svc_track() -> None:
    world = World()
    alice, _ = world.join("alice")
    bob, _ = world.join("bob")
    sid = publish_svc(world, alice)
    assert world.media.publications[sid].layers == 3
    uptrack = world.plane.uptrack(sid)
    assert uptrack is not None and len(uptrack.layers) == 1 and uptrack.svc_codec
    downtrack = world.plane.add_downtrack(
        sid,
        bob.sid,
        ssrc=5,
        codecs={"video/vp9": 98},
        extensions={},
        send_rtp=lambda _: None,
        send_rtcp=lambda _: None,
    )
    assert isinstance(downtrack, SvcDownTrack) and downtrack.wanted == 2  # HIGH at first

    def settings(**fields: object) -> tuple[int | None, int]:
        world.media.track_settings(
            world.room(),
            bob,
            rtc.UpdateTrackSettings(track_sids=[sid], **fields),  # type: ignore[arg-type]
        )
        return downtrack.wanted, downtrack.selector.target_spatial

    assert settings(quality=Quality.LOW) == (0, 0)
    assert settings(quality=Quality.MEDIUM) == (1, 1)
    assert settings(width=1000, height=560) == (2, 2)  # the smallest layer at least that big
    assert settings(width=600, height=300) == (1, 1)
    assert settings(disabled=True)[0] is None and downtrack.target is None
    assert settings(quality=Quality.HIGH) == (2, 2) and downtrack.target == 0


def test_dynacast_turns_svc_qualities_off_and_on() -> None:
    world = World()
    alice, alice_session = world.join("alice")
    bob, _ = world.join("bob")
    sid = publish_svc(world, alice)
    world.media.dynacast.pause_delay = 0.0
    world.plane.add_downtrack(
        sid,
        bob.sid,
        ssrc=5,
        codecs={"video/vp9": 98},
        extensions={},
        send_rtp=lambda _: None,
        send_rtcp=lambda _: None,
    )
    world.media.track_settings(
        world.room(), bob, rtc.UpdateTrackSettings(track_sids=[sid], quality=Quality.LOW)
    )
    world.media.tick([world.room()], now=1.0)
    world.media.tick([world.room()], now=2.0)
    (update,) = alice_session.signals_of("subscribed_quality_update")
    quality_update = update.subscribed_quality_update
    assert quality_update.track_sid == sid
    assert [q.enabled for q in quality_update.subscribed_qualities] == [True, False, False]
    assert quality_update.subscribed_codecs[0].codec == "vp9"
