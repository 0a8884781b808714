"""The offer/answer pieces both roles share (media/jsep.py), and each role's output accepted by the
other: a client offer answered by the server's policy, a server offer answered by the client's."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roomcast.client import sdp as client_sdp
from roomcast.media import jsep
from roomcast.media.jsep import TransportParams
from roomcast.media.publisher_answer import MediaAnswerPlan, plan_recv_media
from roomcast.media.publisher_answer import build_answer as server_answer
from roomcast.media.sdp import (
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    Msid,
    SdpError,
    SessionDescription,
)
from roomcast.media.subscriber_offer import OutgoingTrack, build_subscriber_offer

SERVER = TransportParams(
    "srvufrag",
    "s" * 24,
    "sha-256 " + ":".join(["CD"] * 32),
    ["candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host"],
)
CLIENT = TransportParams(
    "cliufrag",
    "c" * 24,
    "sha-256 " + ":".join(["AB"] * 32),
    ["candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"],
)
VP8 = Codec(96, "VP8", 90000, None, None, ["nack", "nack pli"])
VP8_RTX = Codec(97, "rtx", 90000, None, "apt=96")
OPUS = Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")
MID_EXT = Extmap(4, "urn:ietf:params:rtp-hdrext:sdes:mid")
RID_EXT = Extmap(10, "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")


def _round_trip(*sections: MediaSection, ice_lite: bool = False) -> SessionDescription:
    desc = SessionDescription(ice_lite=ice_lite)
    desc.media.extend(sections)
    desc.groups.append(Group("BUNDLE", jsep.live_mids(desc)))
    return SessionDescription.parse(desc.serialize())


# --- a=setup -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "our_role", "answer"),
    [
        ("actpass", "actpass", "active"),  # RFC 8829 §5.3.1: the answerer should be active
        ("actpass", "active", "active"),
        ("actpass", "passive", "passive"),
        ("active", "actpass", "passive"),
        ("active", "passive", "passive"),
        ("passive", "actpass", "active"),
        ("passive", "active", "active"),
        (None, "actpass", "passive"),  # RFC 4145 §4.1: no a=setup in an offer means active
        (None, "passive", "passive"),
    ],
)
def test_answer_setup_takes_the_role_the_offer_leaves(
    offered: str | None, our_role: str, answer: str
) -> None:
    assert jsep.answer_setup(offered, our_role) == answer


@pytest.mark.parametrize(
    ("offered", "our_role", "message"),
    [
        ("passive", "passive", "can only be the DTLS server"),
        ("active", "active", "can only be the DTLS client"),
        (None, "active", "can only be the DTLS client"),
        ("holdconn", "actpass", "cannot answer a=setup:holdconn"),
        ("holdconn", "passive", "cannot answer a=setup:holdconn"),
    ],
)
def test_answer_setup_rejects_offers_without_a_role_for_us(
    offered: str | None, our_role: str, message: str
) -> None:
    with pytest.raises(SdpError, match=message):
        jsep.answer_setup(offered, our_role)


def test_answer_setup_our_role_is_checked() -> None:
    with pytest.raises(ValueError, match="our DTLS role"):
        jsep.answer_setup("actpass", "holdconn")


# --- transport and sections ---------------------------------------------------------------------


def test_transport_params_need_a_hash_function_and_a_value() -> None:
    with pytest.raises(ValueError, match="fingerprint"):
        TransportParams("u", "p", "AB:CD")


def test_data_section_round_trips_through_the_parser() -> None:
    params = TransportParams("u", "p" * 22, "sha-256 AA:BB", ["a=" + CLIENT.candidates[0]])
    desc = _round_trip(jsep.data_section(params, "0", "actpass"))
    (section,) = desc.media
    assert jsep.is_data_section(section)
    assert (section.kind, section.port, section.proto, section.fmts) == (
        "application",
        9,
        "UDP/DTLS/SCTP",
        ["webrtc-datachannel"],
    )
    assert (section.sctp_port, section.max_message_size) == (5000, 262144)
    assert section.connection == jsep.NULL_CONNECTION and section.end_of_candidates
    assert section.candidates == [CLIENT.candidates[0]]  # "a=" prefix dropped
    assert jsep.remote_transport(desc) == TransportParams(
        "u", "p" * 22, "sha-256 AA:BB", [CLIENT.candidates[0]], setup="actpass"
    )


def test_data_section_can_mirror_the_offers_sctp_parameters() -> None:
    section = jsep.data_section(
        CLIENT, "d", "active", "TCP/DTLS/SCTP", sctp_port=5001, max_message_size=None
    )
    (parsed,) = _round_trip(section).media
    assert (parsed.proto, parsed.sctp_port, parsed.max_message_size) == (
        "TCP/DTLS/SCTP",
        5001,
        None,
    )
    assert parsed.setup == "active"


def test_send_section_then_answer_section_round_trip() -> None:
    msid = Msid("stream", "track")
    offer = _round_trip(
        jsep.send_section(CLIENT, "video", "1", [VP8, VP8_RTX], [MID_EXT, RID_EXT], msid)
    )
    (offered,) = offer.media
    assert (offered.proto, offered.direction, offered.setup) == (
        "UDP/TLS/RTP/SAVPF",
        "sendonly",
        "actpass",
    )
    assert offered.rtcp_mux and offered.rtcp_rsize and offered.msid == msid
    assert [c.payload_type for c in offered.codecs] == [96, 97]
    direction = jsep.answer_direction(offered.direction or "sendrecv", "recvonly")
    answered = jsep.answer_media_section(
        offered,
        SERVER,
        "passive",
        codecs=offered.codecs[:1],
        extmaps=[Extmap(4, MID_EXT.uri, "sendonly")],
        direction=direction,
    )
    (section,) = _round_trip(answered).media
    assert (section.mid, section.direction, section.setup, section.fmts) == (
        "1",
        "recvonly",
        "passive",
        ["96"],
    )
    assert section.extmaps == [Extmap(4, MID_EXT.uri, "recvonly")]  # RFC 8285 §7
    assert section.rtcp == jsep.NULL_RTCP and section.rtcp_mux and section.rtcp_rsize


def test_rejected_section_keeps_kind_mid_and_one_format() -> None:
    offered = MediaSection("video", 9, "UDP/TLS/RTP/SAVPF", ["96", "97"], mid="3")
    rejected = jsep.rejected_section(offered)
    assert (rejected.port, rejected.fmts, rejected.mid, rejected.direction) == (
        0,
        ["96"],
        "3",
        "inactive",
    )
    data = MediaSection("application", 9, "UDP/DTLS/SCTP", ["webrtc-datachannel"], mid="0")
    assert jsep.rejected_section(data).direction is None


@pytest.mark.parametrize(
    ("offered", "wanted", "answer"),
    [
        ("sendonly", "recvonly", "recvonly"),
        ("sendrecv", "recvonly", "recvonly"),
        ("sendrecv", "sendrecv", "sendrecv"),
        ("recvonly", "sendrecv", "sendonly"),
        ("recvonly", "recvonly", "inactive"),
        ("inactive", "sendrecv", "inactive"),
        ("sendonly", "inactive", "inactive"),
    ],
)
def test_answer_direction(offered: str, wanted: str, answer: str) -> None:
    assert jsep.answer_direction(offered, wanted) == answer


def test_reverse_direction() -> None:
    assert [jsep.reverse_direction(d) for d in ("sendonly", "recvonly", "sendrecv", None)] == [
        "recvonly",
        "sendonly",
        "sendrecv",
        None,
    ]


def test_answer_bundle_keeps_the_offers_order_and_drops_rejected_mids() -> None:
    offer = SessionDescription(groups=[Group("BUNDLE", ["2", "0", "1"])])
    answer = SessionDescription()
    answer.media = [
        MediaSection("audio", 9, "UDP/TLS/RTP/SAVPF", ["111"], mid="0"),
        MediaSection("video", 0, "UDP/TLS/RTP/SAVPF", ["96"], mid="1"),
        MediaSection("application", 9, "UDP/DTLS/SCTP", ["webrtc-datachannel"], mid="2"),
    ]
    assert jsep.answer_bundle(offer, answer) == Group("BUNDLE", ["2", "0"])
    assert jsep.answer_bundle(SessionDescription(), answer) is None


def test_remote_transport_reads_session_level_and_prefers_sha256() -> None:
    desc = SessionDescription(ice_ufrag="uf", ice_pwd="pw", ice_lite=True)
    desc.fingerprints = [Fingerprint("sha-1", "11:22"), Fingerprint("SHA-256", "33:44")]
    section = MediaSection("application", 9, "UDP/DTLS/SCTP", ["webrtc-datachannel"], mid="0")
    section.candidates = ["candidate:1 1 udp 1 10.0.0.1 9 typ host"]
    desc.media.append(section)
    remote = jsep.remote_transport(SessionDescription.parse(desc.serialize()))
    assert remote == TransportParams(
        "uf", "pw", "SHA-256 33:44", section.candidates, setup="active", ice_lite=True
    )
    desc.fingerprints = desc.fingerprints[:1]
    assert jsep.remote_transport(desc).fingerprint == "sha-1 11:22"  # any hash will do


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: setattr(d.media[0], "port", 0), "no accepted media section"),
        (lambda d: setattr(d.media[0], "ice_pwd", None), "ice-pwd"),
        (lambda d: setattr(d.media[0], "fingerprints", []), "no a=fingerprint"),
    ],
)
def test_remote_transport_needs_credentials_and_a_fingerprint(
    change: Callable[[SessionDescription], None], message: str
) -> None:
    desc = _round_trip(jsep.data_section(CLIENT, "0", "actpass"))
    change(desc)
    with pytest.raises(SdpError, match=message):
        jsep.remote_transport(desc)


def test_candidate_init_round_trip() -> None:
    text = jsep.candidate_init("a=" + SERVER.candidates[0], "0", 0)
    assert jsep.parse_candidate_init(text) == (SERVER.candidates[0], "0", 0)
    assert jsep.candidate_attribute("1 1 udp 1 1.2.3.4 5 typ host").startswith("candidate:1 ")


# --- both roles ----------------------------------------------------------------------------------


def _accept_vp8_and_opus(section: MediaSection) -> MediaAnswerPlan | None:
    codecs = ["opus"] if section.kind == "audio" else ["VP8"]
    return plan_recv_media(
        section, codecs=codecs, header_extensions=[MID_EXT.uri, RID_EXT.uri], rtcp_feedback=["nack"]
    )


def test_a_client_offer_is_answered_by_the_server_policy() -> None:
    audio = client_sdp.LocalTrack("audio", "cid-a", "s", [OPUS], [MID_EXT], ssrcs=[7])
    video = client_sdp.LocalTrack(
        "video", "cid-v", "s", [VP8, VP8_RTX], [MID_EXT, RID_EXT], [1, 2, 3], ["q", "h", "f"]
    )
    offer_text = client_sdp.build_offer(CLIENT, [audio, video], session_id="1", version=1)
    offer = SessionDescription.parse(offer_text)
    assert jsep.remote_transport(offer) == TransportParams(
        CLIENT.ufrag, CLIENT.pwd, CLIENT.fingerprint, CLIENT.candidates * 2, setup="actpass"
    )
    answer = SessionDescription.parse(server_answer(offer, SERVER, _accept_vp8_and_opus))
    assert [(m.mid, m.direction) for m in answer.media] == [("0", "recvonly"), ("1", "recvonly")]
    assert answer.bundle_group() == Group("BUNDLE", ["0", "1"])
    assert [c.name for c in answer.media[1].codecs] == ["VP8", "rtx"]
    assert answer.media[1].simulcast is not None
    assert answer.media[1].simulcast.rids("recv") == ["q", "h", "f"]
    # The client reads the server's transport back: ICE-lite, DTLS server (so it is the client).
    server = jsep.remote_transport(answer)
    assert (server.ufrag, server.fingerprint, server.setup, server.ice_lite) == (
        SERVER.ufrag,
        SERVER.fingerprint,
        "passive",
        True,
    )


def test_a_client_offer_can_carry_receive_sections_and_the_data_section() -> None:
    """The /rtc/v1 shape: what it receives on and its data channels in the client's offer,
    mids in the order given, one BUNDLE (docs/protocol/19-signalling-v1.md §3)."""
    sections: list[client_sdp.OfferSection] = [
        client_sdp.ReceiveSection("audio", [OPUS], [MID_EXT]),
        client_sdp.DataSection(),
    ]
    offer = SessionDescription.parse(
        client_sdp.build_offer(CLIENT, sections, session_id="1", version=1)
    )
    receive, data = offer.media
    assert (receive.kind, receive.mid, receive.direction) == ("audio", "0", "recvonly")
    assert (data.kind, data.mid, data.setup) == ("application", "1", "actpass")
    assert jsep.is_data_section(data) and data.sctp_port == jsep.SCTP_PORT
    assert offer.bundle_group() == Group("BUNDLE", ["0", "1"])


def test_a_server_subscriber_offer_is_answered_by_the_client_policy() -> None:
    tracks = [
        OutgoingTrack("1", "video", "PA_x|TR_v", "TR_v", 1111, "c", [VP8, VP8_RTX], [MID_EXT]),
        OutgoingTrack("2", "audio", "PA_x|TR_a", "TR_a", 2222, "c", [OPUS], active=False),
        OutgoingTrack("3", "audio", "PA_x|TR_b", "TR_b", 3333, "c", [OPUS], [MID_EXT]),
    ]
    offer = SessionDescription.parse(build_subscriber_offer(SERVER, "9", 2, tracks))
    assert offer.bundle_group() == Group("BUNDLE", ["0", "1", "3"])
    text, received = client_sdp.build_answer(offer, CLIENT, session_id="5", version=1)
    answer = SessionDescription.parse(text)
    assert [(m.mid, m.port, m.direction) for m in answer.media] == [
        ("0", 9, None),
        ("1", 9, "recvonly"),
        ("2", 0, "inactive"),
        ("3", 9, "recvonly"),
    ]
    assert {m.setup for m in answer.media if m.port} == {"active"}  # we are the DTLS client
    assert answer.bundle_group() == Group("BUNDLE", ["0", "1", "3"])
    assert [(t.mid, t.track_id, t.ssrcs) for t in received] == [
        ("1", "TR_v", [1111]),
        ("3", "TR_b", [3333]),
    ]
    assert answer.media[1].extmaps == [Extmap(4, MID_EXT.uri)]
    # The server reads the client's transport back and, answered active, stays the DTLS server.
    client = jsep.remote_transport(answer)
    assert (client.ufrag, client.pwd, client.fingerprint, client.setup) == (
        CLIENT.ufrag,
        CLIENT.pwd,
        CLIENT.fingerprint,
        "active",
    )
