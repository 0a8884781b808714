"""`/rtc/v1`'s one PeerConnection: the publisher answer carries the subscriber's tracks on the
client's receive sections, and the server asks for sections and offers with
`MediaSectionsRequirement` (rooms/subscriber_peer.py `SinglePcSubscriber`,
docs/protocol/19-signalling-v1.md §3). Driven with the offer the Rust SDK sends with its join,
on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit.protocol import rtc

from roomcast.media.rtp import (
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
)
from roomcast.media.sdp import Codec, SessionDescription
from roomcast.rooms.contracts import Publication
from roomcast.rooms.participant import Participant
from roomcast.rooms.publisher_peer import PublisherPeer
from roomcast.rooms.subscriber_peer import NEGOTIATION_DEBOUNCE, SinglePcSubscriber
from tests.fakes import FakeScheduler, claims_for

RUST_OFFER = (Path(__file__).parent / "fixtures" / "rust_v1_join_offer.sdp").read_text()
FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)
OPUS = Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")
VP8 = Codec(120, "VP8", 90000)


@dataclass
class FakeTransport:
    ice_ufrag: str = "srvUfrag"
    ice_pwd: str = "serverPasswordOf24Chars0"
    fingerprint: str = FINGERPRINT
    sent_rtp: list[bytes] = field(default_factory=list)

    def local_candidates(self) -> list[str]:
        return ["candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host generation 0"]

    def send_rtp(self, packet: bytes) -> None:
        self.sent_rtp.append(packet)

    def send_rtcp(self, packet: bytes) -> None:
        pass


@dataclass
class FakePlane:
    downtracks: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)

    def add_downtrack(self, track_sid: str, subscriber: str, **kwargs: Any) -> None:
        self.downtracks[track_sid] = {"subscriber": subscriber, **kwargs}

    def remove_downtrack(self, track_sid: str, subscriber: str) -> None:
        self.removed.append(track_sid)
        self.downtracks.pop(track_sid, None)

    def set_target_layer(
        self, track_sid: str, subscriber: str, layer: int | None, fps: float = 0.0
    ) -> None:
        if track_sid in self.downtracks:  # as ForwardingPlane: no downtrack, nothing to set
            self.downtracks[track_sid]["target"] = (layer, fps)


class Pc:
    """One participant's single PeerConnection: both roles over fakes."""

    def __init__(self) -> None:
        self.clock = FakeScheduler()
        self.sent: list[rtc.SignalResponse] = []
        self.plane = FakePlane()
        transport = FakeTransport()
        participant = Participant.from_claims(claims_for("sub"))
        self.subscriber = SinglePcSubscriber(
            transport,  # type: ignore[arg-type]
            self.plane,  # type: ignore[arg-type]
            participant.sid,
            self.sent.append,
            self.clock,
        )
        self.publisher = PublisherPeer(
            transport,  # type: ignore[arg-type]
            participant,
            self.sent.append,
            receiver=self.subscriber,
        )
        self.offers = 0

    def offer(self, sdp: str = RUST_OFFER) -> rtc.SessionDescription:
        """The client offers (again); the answer it gets."""
        self.offers += 1
        self.sent.clear()
        self.publisher.answer(SessionDescription.parse(sdp), self.offers)
        (answer,) = [m.answer for m in self.sent if m.WhichOneof("message") == "answer"]
        assert answer.id == self.offers
        return answer

    def requirements(self) -> list[tuple[int, int]]:
        return [
            (m.media_sections_requirement.num_audios, m.media_sections_requirement.num_videos)
            for m in self.sent
            if m.WhichOneof("message") == "media_sections_requirement"
        ]

    def settle(self) -> list[tuple[int, int]]:
        """Let the debounce run; the requirements it sent."""
        self.sent.clear()
        self.clock.advance(NEGOTIATION_DEBOUNCE)
        return self.requirements()


def publication(sid: str, kind: str, codecs: list[Codec]) -> Publication:
    return Publication(sid, "PA_pub", "pub", kind, codecs)


def sections(answer: rtc.SessionDescription) -> dict[str, Any]:
    return {m.mid: m for m in SessionDescription.parse(answer.sdp).media}


def test_idle_receive_sections_are_inactive_with_their_extensions() -> None:
    pc = Pc()
    answer = sections(pc.offer())
    assert [answer[mid].direction for mid in "012345"] == ["inactive"] * 6
    assert not any(answer[mid].rejected for mid in "0123456")
    assert [e.uri for e in answer["0"].extmaps] == [URI_AUDIO_LEVEL, URI_TRANSPORT_CC, URI_MID]
    assert [e.uri for e in answer["3"].extmaps] == [
        URI_TRANSPORT_CC,
        URI_MID,
        URI_RID,
        URI_REPAIRED_RID,
    ]
    assert answer["6"].kind == "application"
    assert pc.settle() == []  # nothing to ask for


def test_subscriptions_ask_for_an_offer_and_go_out_in_its_answer() -> None:
    pc = Pc()
    pc.offer()
    assert pc.subscriber.subscribe(publication("TR_a", "audio", [OPUS]))
    assert pc.subscriber.subscribe(publication("TR_v", "video", [VP8]))
    assert not pc.subscriber.subscribe(publication("TR_a", "audio", [OPUS]))
    assert pc.plane.downtracks == {}
    assert pc.settle() == [(0, 0)]  # three free sections of each kind: just offer again

    answer = pc.offer()
    assert dict(answer.mid_to_track_id) == {"0": "TR_a", "3": "TR_v"}
    desc = sections(answer)
    audio, video = desc["0"], desc["3"]
    assert (audio.direction, video.direction) == ("sendonly", "sendonly")
    assert [(c.payload_type, c.name) for c in audio.codecs] == [(111, "opus")]
    # Video with the RTX the client offered for VP8 (retransmissions and probes, RFC 4588).
    assert [(c.payload_type, c.name) for c in video.codecs] == [(96, "VP8"), (97, "rtx")]
    (fid,) = video.ssrc_groups
    assert fid.semantics == "FID" and fid.ssrcs[0] == video.ssrcs[0].ssrc
    assert all("transport-cc" in c.rtcp_fb for c in [*audio.codecs, video.codecs[0]])
    assert audio.msid is not None and (audio.msid.stream_id, audio.msid.track_id) == (
        "PA_pub|TR_a",
        "TR_a",
    )
    assert "a=msid-semantic: WMS *" in answer.sdp or "a=msid-semantic:WMS *" in answer.sdp
    (ssrc,) = audio.ssrcs
    # The downtracks start with the answer, with the client's payload types and extension ids.
    down = pc.plane.downtracks
    assert set(down) == {"TR_a", "TR_v"}
    assert down["TR_a"]["ssrc"] == ssrc.ssrc and down["TR_a"]["codecs"] == {"audio/opus": 111}
    assert down["TR_a"]["extensions"] == {URI_AUDIO_LEVEL: 1, URI_TRANSPORT_CC: 3, URI_MID: 4}
    assert down["TR_v"]["codecs"] == {"video/vp8": 96, "video/rtx": 97}
    assert down["TR_v"]["rtx"] == {96: 97} and down["TR_v"]["rtx_ssrc"] == fid.ssrcs[1]
    assert down["TR_a"]["rtx"] == {} and down["TR_a"]["rtx_ssrc"] == 0
    assert pc.settle() == []

    # The same offer again: the same answer for the tracks, no second downtrack.
    again = pc.offer()
    assert dict(again.mid_to_track_id) == {"0": "TR_a", "3": "TR_v"}
    assert sections(again)["0"].ssrcs[0].ssrc == ssrc.ssrc


def test_track_settings_sent_before_the_answer_apply_to_the_downtrack_it_creates() -> None:
    """The SDKs ask for a quality as soon as they see the track (UpdateTrackSettings), which
    can be before the answer that creates the track's downtrack reaches the server."""
    pc = Pc()
    pc.offer()
    assert pc.subscriber.subscribe(publication("TR_v", "video", [VP8]))
    pc.subscriber.set_target("TR_v", 0, 15.0)  # LOW, 15 fps: no downtrack yet
    pc.subscriber.set_target("TR_x", 0, 0.0)  # not subscribed: ignored
    pc.settle()
    pc.offer()
    assert pc.plane.downtracks["TR_v"]["target"] == (0, 15.0)
    pc.subscriber.set_target("TR_v", None, 0.0)  # paused: applied at once now
    assert pc.plane.downtracks["TR_v"]["target"] == (None, 0.0)
    assert "TR_x" not in pc.plane.downtracks
    # A new subscription to the same track starts from the default again.
    assert pc.subscriber.unsubscribe("TR_v")
    assert pc.subscriber.subscribe(publication("TR_v", "video", [VP8]))
    pc.settle()
    pc.offer()
    assert "target" not in pc.plane.downtracks["TR_v"]


def test_more_tracks_than_sections_ask_for_sections() -> None:
    pc = Pc()
    pc.offer()
    for i in range(5):
        pc.subscriber.subscribe(publication(f"TR_a{i}", "audio", [OPUS]))
    assert pc.settle() == [(2, 0)]
    pc.offer()
    assert sorted(dict(pc.sent[0].answer.mid_to_track_id)) == ["0", "1", "2"]
    assert pc.settle() == []  # the two asked for are on their way

    # The client adds two recvonly audio sections (mids 7 and 8) and offers.
    desc = SessionDescription.parse(RUST_OFFER)
    for mid in ("7", "8"):
        extra = SessionDescription.parse(RUST_OFFER).section("0")
        assert extra is not None
        extra.mid = mid
        desc.media.append(extra)
    bundle = desc.bundle_group()
    assert bundle is not None
    bundle.mids += ["7", "8"]
    answer = pc.offer(desc.serialize())
    assert sorted(answer.mid_to_track_id.values()) == [f"TR_a{i}" for i in range(5)]
    assert len(pc.plane.downtracks) == 5


def test_unsubscribing_stops_the_track_and_tells_the_client_in_the_next_answer() -> None:
    pc = Pc()
    pc.offer()
    pc.subscriber.subscribe(publication("TR_v", "video", [VP8]))
    pc.settle()
    pc.offer()
    assert pc.subscriber.unsubscribe("TR_v")
    assert not pc.subscriber.unsubscribe("TR_v")
    assert pc.plane.removed == ["TR_v"] and pc.plane.downtracks == {}
    assert pc.settle() == [(0, 0)]
    answer = pc.offer()
    assert dict(answer.mid_to_track_id) == {}
    assert sections(answer)["3"].direction == "inactive"
    assert pc.subscriber.subscribed() == []


def test_a_track_without_a_common_codec_leaves_its_section_inactive() -> None:
    pc = Pc()
    pc.offer()
    pc.subscriber.subscribe(publication("TR_h265", "video", [Codec(49, "H265", 90000)]))
    pc.settle()
    answer = pc.offer()
    assert dict(answer.mid_to_track_id) == {}
    assert sections(answer)["3"].direction == "inactive"
    assert pc.plane.downtracks == {}
    assert pc.subscriber.is_subscribed("TR_h265")  # as on /rtc when a client rejects it


def test_close_drops_every_subscription() -> None:
    pc = Pc()
    pc.offer()
    audio = publication("TR_a", "audio", [OPUS])
    pc.subscriber.subscribe(audio)
    pc.settle()
    pc.offer()
    assert audio.subscribers
    pc.subscriber.close()
    assert pc.plane.removed == ["TR_a"] and not audio.subscribers
    assert not pc.subscriber.subscribe(publication("TR_b", "audio", [OPUS]))
    assert pc.settle() == []


async def test_roomcasts_client_offers_receive_sections_and_reads_what_it_is_sent() -> None:
    from roomcast.client.peer import ClientPeer, ReceiveSection
    from roomcast.media.sdp import Extmap

    peer = ClientPeer()
    await peer.start()
    try:
        receive = [
            ReceiveSection("audio", [OPUS], [Extmap(1, URI_AUDIO_LEVEL), Extmap(4, URI_MID)]),
            ReceiveSection("video", [Codec(96, "VP8", 90000, None, None, ["nack"])]),
        ]
        pc = Pc()
        pc.offer(peer.create_offer(receive))
        pc.subscriber.subscribe(publication("TR_a", "audio", [OPUS]))
        assert pc.settle() == [(0, 0)]
        answer = pc.offer(peer.create_offer(receive))  # the same sections, mids kept
        peer.set_answer(answer.sdp)
        (track,) = peer.remote_tracks.values()
        assert (track.mid, track.kind, track.track_id) == ("0", "audio", "TR_a")
        assert track.stream_id == "PA_pub|TR_a"
        assert track.ssrcs == [pc.plane.downtracks["TR_a"]["ssrc"]]
        assert peer.track_by_ssrc(track.ssrcs[0]) is track
    finally:
        peer.close()
