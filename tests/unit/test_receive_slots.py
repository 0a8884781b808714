"""`/rtc/v1` receive sections: which client section carries which track, what to ask for, and
how a section is answered (rooms/receive_slots.py, docs/protocol/19-signalling-v1.md §3)."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.rtp import URI_AUDIO_LEVEL, URI_DEPENDENCY_DESCRIPTOR, URI_MID
from roomcast.media.sdp import Codec, MediaSection, Msid, SessionDescription
from roomcast.rooms.receive_slots import (
    OfferedSection,
    ReceiveSlots,
    idle_plan,
    matching_codec,
    offered_sections,
    send_plan,
)

RUST_OFFER = (Path(__file__).parent / "fixtures" / "rust_v1_join_offer.sdp").read_text()


def sections(audio: int, video: int, *, sending: tuple[str, ...] = ()) -> list[OfferedSection]:
    """An offer's receive sections: mids "a0".. and "v0".., plus sending sections."""
    out = [OfferedSection(f"a{i}", "audio", True) for i in range(audio)]
    out += [OfferedSection(f"v{i}", "video", True) for i in range(video)]
    out += [OfferedSection(mid, "video", False) for mid in sending]
    return out


def test_the_sdks_first_offer_has_three_receive_sections_of_each_kind() -> None:
    offered = offered_sections(SessionDescription.parse(RUST_OFFER))
    assert [(s.mid, s.kind, s.receiving) for s in offered] == [
        ("0", "audio", True),
        ("1", "audio", True),
        ("2", "audio", True),
        ("3", "video", True),
        ("4", "video", True),
        ("5", "video", True),
    ]


def test_tracks_go_onto_free_slots_only_when_an_offer_is_answered() -> None:
    slots = ReceiveSlots()
    slots.offered(sections(3, 3))
    slots.answered()
    assert slots.request() is None  # nothing to carry

    slots.add("TR_a", "audio")
    slots.add("TR_v", "video")
    assert slots.tracks_by_mid() == {}  # not before the client offers again
    assert slots.request() == (0, 0)  # a free slot each: just another offer
    assert slots.request() is None  # asked once until an offer comes

    assert slots.offered(sections(3, 3)) == []
    assert slots.tracks_by_mid() == {"a0": "TR_a", "v0": "TR_v"}
    slots.answered()
    assert slots.request() is None


def test_more_sections_are_asked_for_once_per_shortfall() -> None:
    slots = ReceiveSlots()
    slots.offered(sections(1, 0))
    slots.answered()
    for i in range(4):
        slots.add(f"TR_{i}", "audio")
    assert slots.request() == (3, 0)  # one free slot, three short
    slots.add("TR_4", "audio")
    assert slots.request() == (1, 0)  # only what is new
    assert slots.request() is None

    # The client adds two of the four (say): those are no longer asked for, the rest are.
    slots.offered(sections(3, 0))
    assert sorted(slots.tracks_by_mid().values()) == ["TR_0", "TR_1", "TR_2"]
    assert slots.waiting() == ["TR_3", "TR_4"]
    slots.answered()
    assert slots.request() is None  # two asked for and not arrived yet
    slots.offered(sections(5, 0))
    assert len(slots.tracks_by_mid()) == 5 and slots.waiting() == []


def test_a_freed_slot_drains_for_one_answer_before_it_is_used_again() -> None:
    slots = ReceiveSlots()
    slots.offered(sections(1, 0))
    slots.add("TR_old", "audio")
    slots.offered(sections(1, 0))
    slots.answered()
    assert slots.tracks_by_mid() == {"a0": "TR_old"}

    removed = slots.remove("TR_old")
    assert removed is not None and removed.draining
    slots.add("TR_new", "audio")
    # The client must first see the section inactive: the new track needs another section.
    assert slots.request() == (1, 0)
    slots.offered(sections(2, 0))
    assert slots.tracks_by_mid() == {"a1": "TR_new"}
    slots.answered()  # a0 answered inactive: free again
    assert not slots.slots["a0"].draining and slots.request() is None
    slots.add("TR_next", "audio")
    assert slots.request() == (0, 0)
    slots.offered(sections(2, 0))
    assert slots.tracks_by_mid() == {"a0": "TR_next", "a1": "TR_new"}


def test_a_drained_slot_alone_asks_for_an_offer() -> None:
    slots = ReceiveSlots()
    slots.offered(sections(0, 1))
    slots.add("TR_v", "video")
    slots.offered(sections(0, 1))
    slots.answered()
    slots.remove("TR_v")
    assert slots.request() == (0, 0)  # the client must learn the track ended
    slots.offered(sections(0, 1))
    slots.answered()
    assert slots.request() is None


def test_a_slot_the_client_stops_offering_gives_its_track_back() -> None:
    slots = ReceiveSlots()
    slots.offered(sections(0, 2))
    slots.add("TR_v", "video")
    slots.offered(sections(0, 2))
    assert slots.tracks_by_mid() == {"v0": "TR_v"}
    # v0 now sends (the client publishes on it): the track moves to the other section.
    displaced = slots.offered([OfferedSection("v0", "video", False), *sections(0, 2)[1:]])
    assert displaced == ["TR_v"]
    assert slots.tracks_by_mid() == {"v1": "TR_v"}


def test_unassigned_tracks_free_their_slot_at_once() -> None:
    slots = ReceiveSlots()
    slots.offered(sections(1, 0))
    slots.add("TR_a", "audio")
    slots.offered(sections(1, 0))
    slots.unassign("TR_a")
    assert not slots.slots["a0"].draining and slots.slots["a0"].track is None
    assert slots.waiting() == []


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(0, 9), st.sampled_from(["audio", "video"])),
            st.tuples(st.just("remove"), st.integers(0, 9), st.just("")),
            st.tuples(st.just("offer"), st.integers(0, 6), st.integers(0, 6)),
            st.tuples(st.just("request"), st.just(0), st.just("")),
        ),
        max_size=40,
    )
)
def test_slots_never_carry_a_track_twice_nor_a_track_of_the_other_kind(
    steps: list[tuple[str, int, object]],
) -> None:
    slots = ReceiveSlots()
    kinds: dict[str, str] = {}
    for op, number, extra in steps:
        sid = f"TR_{number}"
        if op == "add" and sid not in kinds:
            kinds[sid] = str(extra)
            slots.add(sid, str(extra))
        elif op == "remove" and sid in kinds:
            del kinds[sid]
            slots.remove(sid)
        elif op == "offer":
            slots.offered(sections(number, int(str(extra))))
            slots.answered()
        elif op == "request":
            counts = slots.request()
            assert counts is None or min(counts) >= 0
        carried = list(slots.tracks_by_mid().values())
        assert len(carried) == len(set(carried))
        assert set(carried) | set(slots.waiting()) == set(kinds)
        assert not set(carried) & set(slots.waiting())
        for mid, sid in slots.tracks_by_mid().items():
            assert slots.slots[mid].kind == kinds[sid]


# -- how a section is answered ------------------------------------------------------------------
def section(mid: str) -> MediaSection:
    found = SessionDescription.parse(RUST_OFFER).section(mid)
    assert found is not None
    return found


def test_send_plan_uses_the_offered_payload_types_of_the_publishers_codecs() -> None:
    vp8 = Codec(120, "VP8", 90000, None, None, ["nack"])  # the publisher's own payload type
    plan = send_plan(
        section("3"),
        [vp8],
        msid=Msid("PA_x|TR_v", "TR_v"),
        ssrc=1234,
        cname="c",
        feedback=("nack", "nack pli"),
        extensions=(URI_MID, URI_DEPENDENCY_DESCRIPTOR),
    )
    assert plan is not None and plan.direction == "sendonly"
    assert [(c.payload_type, c.name, c.rtcp_fb) for c in plan.codecs] == [
        (96, "VP8", ["nack", "nack pli"])
    ]
    assert [e.uri for e in plan.extmaps] == [URI_MID]  # no DD offered by this client
    assert plan.msid == Msid("PA_x|TR_v", "TR_v")
    (ssrc,) = plan.ssrcs
    assert ssrc.ssrc == 1234 and ssrc.get("cname") == "c" and ssrc.get("msid") == "PA_x|TR_v TR_v"


def test_send_plan_keeps_red_and_falls_back_to_its_inner_codec() -> None:
    red = Codec(63, "red", 48000, 2, "111/111")
    opus = Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1;usedtx=1")
    plan = send_plan(
        section("0"),
        [red, opus],
        msid=Msid("PA_x|TR_a", "TR_a"),
        ssrc=1,
        cname="c",
        feedback=(),
        extensions=(URI_AUDIO_LEVEL,),
    )
    assert plan is not None
    assert [(c.payload_type, c.fmtp) for c in plan.codecs] == [
        (63, "111/111"),
        (111, "minptime=10;useinbandfec=1"),  # the offer's fmtp: one meaning per bundle PT
    ]
    assert [e.uri for e in plan.extmaps] == [URI_AUDIO_LEVEL]
    no_red = section("0")
    no_red.codecs = [c for c in no_red.codecs if c.name != "red"]
    plan = send_plan(
        no_red,
        [red, opus],
        msid=Msid("s", "t"),
        ssrc=1,
        cname="c",
        feedback=(),
        extensions=(),
    )
    assert plan is not None and [c.name for c in plan.codecs] == ["opus"]


def test_send_plan_is_none_without_a_common_codec() -> None:
    h265 = Codec(49, "H265", 90000)
    assert (
        send_plan(
            section("3"), [h265], msid=Msid("s", "t"), ssrc=1, cname="c", feedback=(), extensions=()
        )
        is None
    )


def test_matching_codec_respects_what_shapes_the_stream() -> None:
    video = section("3")
    h264 = Codec(125, "H264", 90000, None, "packetization-mode=1;profile-level-id=42e01f")
    match = matching_codec(video, h264)
    assert match is not None and match.payload_type == 109  # constrained baseline, mode 1
    main = Codec(125, "h264", 90000, None, "packetization-mode=0;profile-level-id=4d001f")
    match = matching_codec(video, main)
    assert match is not None and match.payload_type == 39
    vp9_profile2 = Codec(100, "VP9", 90000, None, "profile-id=2")
    match = matching_codec(video, vp9_profile2)
    assert match is not None and match.payload_type == 100
    av1 = Codec(35, "AV1", 90000)
    match = matching_codec(video, av1)
    assert match is not None and match.payload_type == 45
    assert matching_codec(video, Codec(35, "AV1", 90000, None, "profile=1")) is None


def test_idle_plan_keeps_the_extensions_and_one_codec() -> None:
    plan = idle_plan(section("0"), (URI_AUDIO_LEVEL, URI_MID))
    assert plan is not None and plan.direction == "inactive"
    assert [(c.payload_type, c.rtcp_fb) for c in plan.codecs] == [(111, [])]
    assert [e.uri for e in plan.extmaps] == [URI_AUDIO_LEVEL, URI_MID]
