"""Offer/answer built from the offers Chrome and the Rust SDK sent
(docs/protocol/15-interop-findings.md, docs/protocol/16-media-interop.md)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.media.jsep import (
    TransportParams,
    application_mid,
    candidate_init,
    parse_candidate_init,
)
from roomcast.media.publisher_answer import MediaAnswerPlan, build_answer, plan_recv_media
from roomcast.media.sdp import (
    Codec,
    Extmap,
    Fingerprint,
    Group,
    MediaSection,
    Rid,
    SdpError,
    SessionDescription,
    Simulcast,
    SimulcastRid,
)
from roomcast.media.subscriber_offer import build_data_offer

SERVER_FP = (
    "83:F3:59:16:0D:8C:75:71:C2:12:D4:3B:0D:6E:AB:8A:"
    "A4:33:C5:9C:51:32:50:F0:E4:13:80:D2:66:07:64:75"
)
CLIENT_FP = (
    "1F:7C:68:A8:EB:15:62:9A:20:7E:BF:97:E9:D2:51:67:"
    "CA:C7:9D:97:37:34:EF:29:95:FE:41:CE:18:70:66:48"
)
HOST = "candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host generation 0"
ICE = TransportParams("srvUfrag", "serverPasswordOf24Chars0", f"sha-256 {SERVER_FP}", [HOST])

AUDIO_EXTS = ["urn:ietf:params:rtp-hdrext:ssrc-audio-level", "urn:ietf:params:rtp-hdrext:sdes:mid"]
VIDEO_EXTS = [
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
]
VIDEO_FB = ["nack", "nack pli", "ccm fir", "goog-remb"]
VIDEO_FB_OFFER_ORDER = ["goog-remb", "ccm fir", "nack", "nack pli"]

# Chrome 156 + livekit-client: microphone (RED preferred, as JS does with red: true), camera with
# simulcast q/h/f (no a=ssrc lines, docs/protocol/16-media-interop.md §7) and the data section, all
# in one offer.
CHROME_OFFER = f"""v=0
o=- 4611731400430051336 3 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1 2
a=extmap-allow-mixed
a=msid-semantic:  WMS 6f1f0d7e-1b1e-4a3c-9c39-3c4b0f5f8a11
m=audio 9 UDP/TLS/RTP/SAVPF 63 111 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Hs7c
a=ice-pwd:q9v1Ob4G2B2m0mBrb7g3Hn5T
a=ice-options:trickle
a=fingerprint:sha-256 {CLIENT_FP}
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendonly
a=msid:6f1f0d7e-1b1e-4a3c-9c39-3c4b0f5f8a11 0c3e9a52-7d34-4a49-8a4e-1f5b2f4fbd61
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:3456789012 cname:Zb3cTf8u2QHk0aJw
a=ssrc:3456789012 msid:6f1f0d7e-1b1e-4a3c-9c39-3c4b0f5f8a11 0c3e9a52-7d34-4a49-8a4e-1f5b2f4fbd61
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 106 107 45 46 98 99 116 117 118
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Hs7c
a=ice-pwd:q9v1Ob4G2B2m0mBrb7g3Hn5T
a=ice-options:trickle
a=fingerprint:sha-256 {CLIENT_FP}
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=extmap:9 https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension
a=sendonly
a=msid:6f1f0d7e-1b1e-4a3c-9c39-3c4b0f5f8a11 d2c1b7a4-5e6f-4a8b-9c0d-1e2f3a4b5c6d
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=fmtp:96 x-google-start-bitrate=1000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:106 H264/90000
a=rtcp-fb:106 goog-remb
a=rtcp-fb:106 transport-cc
a=rtcp-fb:106 ccm fir
a=rtcp-fb:106 nack
a=rtcp-fb:106 nack pli
a=fmtp:106 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=106
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:116 red/90000
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:118 ulpfec/90000
a=rtcp-xr:rcvr-rtt=all
a=rid:q send
a=rid:h send
a=rid:f send
a=simulcast:send q;h;f
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:Hs7c
a=ice-pwd:q9v1Ob4G2B2m0mBrb7g3Hn5T
a=ice-options:trickle
a=fingerprint:sha-256 {CLIENT_FP}
a=setup:actpass
a=mid:2
a=sctp-port:5000
a=max-message-size:262144
"""

_RUST_TRANSPORT = f"""c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:Wq3b
a=ice-pwd:0Zb1yK8wqS3T6f4mN2xGhU7e
a=ice-options:trickle goog-sped-v1
a=fingerprint:sha-256 {CLIENT_FP}
a=setup:actpass
"""
_RUST_AUDIO_CODECS = """a=rtcp-mux
a=rtcp-rsize
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;stereo=1;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
"""
_RUST_AUDIO_EXTS = """a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
"""
_RUST_VIDEO_EXTS = """a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
"""
_VP8_FB = """a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
"""
_RUST_BURNT_AUDIO = "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\n" + _RUST_TRANSPORT
_RUST_BURNT_VIDEO = (
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 35 36\n"
    + _RUST_TRANSPORT
    + "{mid}"
    + _RUST_VIDEO_EXTS
    + "a=recvonly\na=rtcp-mux\na=rtcp-rsize\na=rtpmap:96 VP8/90000\n"
    + _VP8_FB
    + "a=rtpmap:97 rtx/90000\na=fmtp:97 apt=96\na=rtpmap:98 VP9/90000\n"
    + "a=fmtp:98 profile-id=0\na=rtpmap:99 rtx/90000\na=fmtp:99 apt=98\n"
    + "a=rtpmap:35 AV1/90000\na=rtpmap:36 rtx/90000\na=fmtp:36 apt=35\n"
)

# livekit 1.2.1 (Rust SDK) publisher offer after the v1->v0 fallback with a microphone and a
# camera published (docs/protocol/16-media-interop.md §2): the six burnt recvonly sections 7..12
# stay, new sendonly sections 13 (opus with stereo=1, every audio codec) and 14 (VP8 only, no RTX),
# data moved to 15.
RUST_MEDIA_OFFER = (
    """v=0
o=- 5820369131458624719 3 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 7 8 9 10 11 12 13 14 15
a=extmap-allow-mixed
a=msid-semantic: WMS
"""
    + "".join(
        _RUST_BURNT_AUDIO
        + f"a=mid:{mid}\n"
        + _RUST_AUDIO_EXTS
        + "a=recvonly\n"
        + _RUST_AUDIO_CODECS
        for mid in (7, 8, 9)
    )
    + "".join(_RUST_BURNT_VIDEO.replace("{mid}", f"a=mid:{mid}\n") for mid in (10, 11, 12))
    + _RUST_BURNT_AUDIO
    + "a=mid:13\n"
    + _RUST_AUDIO_EXTS
    + "a=sendonly\na=msid:- TR_cid-audio-3f1c\n"
    + _RUST_AUDIO_CODECS
    + "a=ssrc:1852772323 cname:uP0q8rB3vK5m1LzH\n"
    + "a=ssrc:1852772323 msid:- TR_cid-audio-3f1c\n"
    + "m=video 9 UDP/TLS/RTP/SAVPF 96\n"
    + _RUST_TRANSPORT
    + "a=mid:14\n"
    + _RUST_VIDEO_EXTS
    + "a=sendonly\na=msid:- TR_cid-video-77aa\na=rtcp-mux\na=rtcp-rsize\n"
    + "a=rtpmap:96 VP8/90000\n"
    + _VP8_FB
    + "a=ssrc:2712061530 cname:uP0q8rB3vK5m1LzH\na=ssrc:2712061530 msid:- TR_cid-video-77aa\n"
    + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n"
    + _RUST_TRANSPORT.replace("a=rtcp:9 IN IP4 0.0.0.0\n", "")
    + "a=mid:15\na=sctp-port:5000\na=max-message-size:262144\n"
    + "a=sctp-init:Fe4UTQ9v9OiIJIIvhVsA2wGdZSli6l0Xz57i3hBWe27J2nH/8E9TkPyKUfn0E+iV\n"
)

# livekit-client publisher offer on the v0 fallback before anything is published: data only.
JS_DATA_OFFER = f"""v=0
o=- 1190351412839201748 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0
a=extmap-allow-mixed
a=msid-semantic:  WMS
m=application 9 UDP/DTLS/SCTP webrtc-datachannel
c=IN IP4 0.0.0.0
a=ice-ufrag:Hs7c
a=ice-pwd:q9v1Ob4G2B2m0mBrb7g3Hn5T
a=ice-options:trickle
a=fingerprint:sha-256 {CLIENT_FP}
a=setup:actpass
a=mid:0
a=sctp-port:5000
a=max-message-size:262144
"""


def parse(text: str) -> SessionDescription:
    return SessionDescription.parse(text.replace("\r\n", "\n").replace("\n", "\r\n"))


def livekit_policy(section: MediaSection) -> MediaAnswerPlan | None:
    """What Roomcast's media layer is expected to pass: docs/protocol/13-media.md §13.2/§13.3,
    docs/protocol/16-media-interop.md §2/§7."""
    if section.kind == "audio":
        return plan_recv_media(
            section, codecs=["red", "opus"], header_extensions=AUDIO_EXTS, rtcp_feedback=["nack"]
        )
    return plan_recv_media(
        section, codecs=["VP8"], header_extensions=VIDEO_EXTS, rtcp_feedback=VIDEO_FB
    )


# --- subscriber offer --------------------------------------------------------------------------


def test_data_offer_has_exactly_the_shape_the_sdks_accepted() -> None:
    text = build_data_offer(ICE, 2, session_id="4242")
    assert text == (
        "v=0\r\n"
        "o=- 4242 2 IN IP4 127.0.0.1\r\n"
        "s=-\r\n"
        "t=0 0\r\n"
        "a=group:BUNDLE 0\r\n"
        "a=msid-semantic: WMS *\r\n"
        "a=ice-lite\r\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "a=ice-ufrag:srvUfrag\r\n"
        "a=ice-pwd:serverPasswordOf24Chars0\r\n"
        f"a=fingerprint:sha-256 {SERVER_FP}\r\n"
        "a=setup:actpass\r\n"
        "a=mid:0\r\n"
        "a=sctp-port:5000\r\n"
        "a=max-message-size:262144\r\n"
        f"a={HOST}\r\n"
        "a=end-of-candidates\r\n"
    )


def test_data_offer_session_id_is_random_and_versions_count() -> None:
    first = SessionDescription.parse(build_data_offer(ICE, 1))
    second = SessionDescription.parse(build_data_offer(ICE, 7))
    assert first.origin.session_id != second.origin.session_id
    assert 0 < int(first.origin.session_id) < 2**63
    assert second.origin.session_version == 7
    assert application_mid(first) == ("0", 0)


def test_ice_params_accept_candidates_with_or_without_prefixes() -> None:
    ice = TransportParams("u", "p", "sha-256 AA", ["a=" + HOST, HOST.removeprefix("candidate:")])
    section = SessionDescription.parse(build_data_offer(ice, 1)).media[0]
    assert section.candidates == [HOST, HOST]
    with pytest.raises(ValueError, match="fingerprint"):
        TransportParams("u", "p", "AA:BB")


# --- answers without media (the data-only path that interop-tested) -------------------------


def test_rust_offer_without_media_policy_accepts_only_data() -> None:
    answer = parse(build_answer(parse(RUST_MEDIA_OFFER), ICE, session_id="1"))
    assert [m.mid for m in answer.media] == [str(mid) for mid in range(7, 16)]
    assert answer.groups == [Group("BUNDLE", ["15"])]
    assert answer.ice_lite and answer.extmap_allow_mixed
    for section in answer.media[:8]:
        assert section.port == 0 and section.direction == "inactive"
        assert len(section.fmts) == 1 and section.codecs == [] and section.candidates == []
    assert answer.media[0].fmts == ["111"] and answer.media[3].fmts == ["96"]
    data = answer.media[8]
    assert (data.kind, data.port, data.proto) == ("application", 9, "UDP/DTLS/SCTP")
    assert data.fmts == ["webrtc-datachannel"] and data.setup == "passive"
    assert data.sctp_port == 5000 and data.max_message_size == 262144
    assert data.ice_ufrag == "srvUfrag" and data.ice_pwd == "serverPasswordOf24Chars0"
    assert data.fingerprints == [Fingerprint("sha-256", SERVER_FP)]
    assert data.candidates == [HOST] and data.end_of_candidates
    assert data.attributes == []  # a=sctp-init is not echoed
    assert application_mid(parse(RUST_MEDIA_OFFER)) == ("15", 8)


def test_rejected_section_lines() -> None:
    text = build_answer(parse(RUST_MEDIA_OFFER), ICE)
    assert (
        "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:7\r\na=inactive\r\n" in text
    )


def test_js_data_only_offer() -> None:
    answer = parse(build_answer(parse(JS_DATA_OFFER), ICE, version=2))
    assert answer.groups == [Group("BUNDLE", ["0"])] and answer.origin.session_version == 2
    assert answer.msid_semantic is None and answer.extmap_allow_mixed
    assert [(m.mid, m.port, m.setup) for m in answer.media] == [("0", 9, "passive")]


def test_offer_without_anything_acceptable_is_an_sdp_error() -> None:
    video_only = CHROME_OFFER.split("m=application")[0].replace("BUNDLE 0 1 2", "BUNDLE 0 1")
    with pytest.raises(SdpError, match="no media section Roomcast can accept"):
        build_answer(parse(video_only), ICE)


# --- answers with media ------------------------------------------------------------------------


def test_chrome_offer_answered_with_red_opus_vp8_rtx_and_simulcast() -> None:
    offer = parse(CHROME_OFFER)
    answer = parse(build_answer(offer, ICE, livekit_policy))
    assert answer.groups == [Group("BUNDLE", ["0", "1", "2"])]
    audio, video, data = answer.media
    assert (audio.port, audio.proto, audio.fmts) == (9, "UDP/TLS/RTP/SAVPF", ["63", "111"])
    assert audio.direction == "recvonly" and audio.setup == "passive" and audio.mid == "0"
    assert audio.rtcp_mux and audio.rtcp_rsize and audio.rtcp == "9 IN IP4 0.0.0.0"
    assert audio.codecs == [
        Codec(63, "red", 48000, 2, "111/111"),
        Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1;usedtx=1"),  # no transport-cc
    ]
    assert audio.extmaps == [
        Extmap(1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        Extmap(4, "urn:ietf:params:rtp-hdrext:sdes:mid"),
    ]
    assert audio.msids == [] and audio.ssrcs == [] and audio.rids == []
    assert video.fmts == ["96", "97"] and video.direction == "recvonly"
    assert video.codecs == [  # rtcp-fb narrowed to ours, in the offer's order
        Codec(96, "VP8", 90000, None, "x-google-start-bitrate=1000", VIDEO_FB_OFFER_ORDER),
        Codec(97, "rtx", 90000, None, "apt=96"),
    ]
    assert [(e.id, e.uri) for e in video.extmaps] == [
        (4, VIDEO_EXTS[0]),
        (10, VIDEO_EXTS[1]),
        (11, VIDEO_EXTS[2]),
    ]
    assert video.rids == [Rid("q", "recv"), Rid("h", "recv"), Rid("f", "recv")]
    assert video.simulcast == Simulcast(
        recv=[[SimulcastRid("q")], [SimulcastRid("h")], [SimulcastRid("f")]]
    )
    assert video.attributes == []  # rtcp-xr is not echoed
    assert data.setup == "passive" and data.sctp_port == 5000
    text = build_answer(offer, ICE, livekit_policy)
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n" in text


@pytest.mark.parametrize(
    ("preference", "fmts"),
    [
        (["H264"], ["102", "103"]),  # the client's first H264 variant: 42001f, pm1
        (["VP9", "VP8"], ["98", "99"]),
        (["AV1"], ["45", "46"]),
        (["h265", "vp8"], ["96", "97"]),  # not offered: next preference
    ],
)
def test_video_codec_preferences(preference: list[str], fmts: list[str]) -> None:
    def policy(section: MediaSection) -> MediaAnswerPlan | None:
        if section.kind != "video":
            return None
        return plan_recv_media(section, codecs=preference, rtcp_feedback=VIDEO_FB)

    video = parse(build_answer(parse(CHROME_OFFER), ICE, policy)).media[1]
    assert video.fmts == fmts and video.codecs[1].associated_payload_type == int(fmts[0])


def test_plan_without_rtx_or_simulcast() -> None:
    def policy(section: MediaSection) -> MediaAnswerPlan | None:
        if section.kind != "video":
            return None
        return plan_recv_media(section, codecs=["VP8"], rtx=False, simulcast=False)

    video = parse(build_answer(parse(CHROME_OFFER), ICE, policy)).media[1]
    assert video.fmts == ["96"] and video.codecs[0].rtcp_fb == []
    assert video.rids == [] and video.simulcast is None and video.extmaps == []


def test_rust_offer_with_media_policy_matches_what_interop_tested() -> None:
    """docs/protocol/16-media-interop.md §2: reject 7..12, accept 13 (audio), 14 (VP8 only), 15;
    BUNDLE 13 14 15."""
    offer = parse(RUST_MEDIA_OFFER)
    answer = parse(build_answer(offer, ICE, livekit_policy))
    assert answer.groups == [Group("BUNDLE", ["13", "14", "15"])]
    assert [m.port for m in answer.media] == [0] * 6 + [9] * 3
    audio, video = answer.media[6], answer.media[7]
    assert audio.fmts == ["63", "111"] and audio.direction == "recvonly"
    assert video.fmts == ["96"] and video.simulcast is None  # no RTX offered, no simulcast
    assert [e.id for e in audio.extmaps] == [1, 4] and [e.id for e in video.extmaps] == [4, 10, 11]
    assert offer.media[6].msid is not None and offer.media[6].msid.track_id == "TR_cid-audio-3f1c"
    assert offer.media[7].ssrcs[0].ssrc == 2712061530


def test_plan_direction_is_intersected_with_the_offer() -> None:
    offer = parse(RUST_MEDIA_OFFER)
    opus = offer.media[0].codec(111)
    assert opus is not None
    plan = MediaAnswerPlan([opus])
    answer = parse(build_answer(offer, ICE, lambda s: plan if s.kind == "audio" else None))
    assert [m.direction for m in answer.media[:3]] == ["inactive"] * 3  # offer said recvonly
    assert answer.media[0].port == 9  # accepted, but nothing flows
    sendrecv = parse(CHROME_OFFER.replace("a=sendonly", "a=sendrecv"))
    both = MediaAnswerPlan([sendrecv.media[0].codec(111)], direction="sendrecv")  # type: ignore[list-item]
    answer = parse(build_answer(sendrecv, ICE, lambda s: both if s.kind == "audio" else None))
    assert answer.media[0].direction == "sendrecv"


def test_rid_pt_restrictions_follow_the_answered_codecs() -> None:
    text = CHROME_OFFER.replace("a=rid:q send\n", "a=rid:q send pt=102;max-width=320\n")
    text = text.replace("a=rid:h send\n", "a=rid:h send pt=96,102;max-fps=15\n")
    text = text.replace("a=simulcast:send q;h;f", "a=simulcast:send q;~h;f")
    video = parse(build_answer(parse(text), ICE, livekit_policy)).media[1]
    assert video.rids == [Rid("h", "recv", "pt=96;max-fps=15"), Rid("f", "recv")]
    assert video.simulcast == Simulcast(recv=[[SimulcastRid("h", True)], [SimulcastRid("f")]])


def test_bad_plans_are_server_bugs_not_client_errors() -> None:
    offer = parse(CHROME_OFFER)
    not_offered = MediaAnswerPlan([Codec(111, "VP8", 90000)])
    with pytest.raises(ValueError, match="not offered") as caught:
        build_answer(offer, ICE, lambda s: not_offered)
    assert not isinstance(caught.value, SdpError)
    opus = offer.media[0].codec(111)
    assert opus is not None
    wrong_id = MediaAnswerPlan([opus], [Extmap(9, "urn:ietf:params:rtp-hdrext:sdes:mid")])
    with pytest.raises(ValueError, match="extmap 9"):
        build_answer(offer, ICE, lambda s: wrong_id if s.kind == "audio" else None)
    with pytest.raises(ValueError, match="no codecs"):
        build_answer(offer, ICE, lambda s: MediaAnswerPlan([]))


def test_policy_is_not_asked_about_unusable_sections() -> None:
    asked: list[str | None] = []

    def policy(section: MediaSection) -> MediaAnswerPlan | None:
        asked.append(section.mid)
        return None

    text = CHROME_OFFER.replace("m=audio 9 ", "m=audio 0 ").replace("BUNDLE 0 1 2", "BUNDLE 1 2")
    text = text.replace("m=video 9 UDP/TLS/RTP/SAVPF", "m=video 9 RTP/AVP")  # no DTLS-SRTP
    answer = parse(build_answer(parse(text), ICE, policy))
    assert asked == [] and [m.port for m in answer.media] == [0, 0, 9]
    assert answer.groups == [Group("BUNDLE", ["2"])]


def test_sections_outside_the_bundle_group_are_rejected() -> None:
    text = CHROME_OFFER.replace("BUNDLE 0 1 2", "BUNDLE 2 0")
    answer = parse(build_answer(parse(text), ICE, livekit_policy))
    assert [m.port for m in answer.media] == [9, 0, 9]
    assert answer.groups == [Group("BUNDLE", ["2", "0"])]  # the offer's group order


def test_offer_problems_are_sdp_errors() -> None:
    no_bundle = CHROME_OFFER.replace("a=group:BUNDLE 0 1 2\n", "")
    with pytest.raises(SdpError, match="BUNDLE"):
        build_answer(parse(no_bundle), ICE, livekit_policy)
    # ...but a lone data section needs no bundle
    lone = parse(JS_DATA_OFFER.replace("a=group:BUNDLE 0\n", ""))
    assert parse(build_answer(lone, ICE)).groups == []
    with pytest.raises(SdpError, match="setup:passive"):
        build_answer(parse(JS_DATA_OFFER.replace("setup:actpass", "setup:passive")), ICE)
    active = parse(JS_DATA_OFFER.replace("setup:actpass", "setup:active"))
    assert parse(build_answer(active, ICE)).media[0].setup == "passive"
    no_mid = parse(JS_DATA_OFFER.replace("a=mid:0\n", "").replace("a=group:BUNDLE 0\n", ""))
    with pytest.raises(SdpError, match="no a=mid"):
        build_answer(no_mid, ICE)
    old_sctp = JS_DATA_OFFER.replace("UDP/DTLS/SCTP webrtc-datachannel", "DTLS/SCTP 5000")
    with pytest.raises(SdpError, match="no media section"):
        build_answer(parse(old_sctp), ICE)


def test_answers_round_trip_and_parse_with_aiortc() -> None:
    from aiortc import sdp as aiortc_sdp

    for offer in (CHROME_OFFER, RUST_MEDIA_OFFER, JS_DATA_OFFER):
        text = build_answer(parse(offer), ICE, livekit_policy)
        assert SessionDescription.parse(text).serialize() == text
        other = aiortc_sdp.SessionDescription.parse(text)
        assert [m.rtp.muxId for m in other.media] == [m.mid for m in parse(offer).media]
        assert all(m.ice and m.ice.usernameFragment == "srvUfrag" for m in other.media if m.port)


# --- trickle -----------------------------------------------------------------------------------


def test_candidate_init_json() -> None:
    expected = f'{{"candidate":"{HOST}","sdpMid":"13","sdpMLineIndex":6}}'
    assert candidate_init(HOST, "13", 6) == expected
    assert candidate_init("a=" + HOST, "13", 6) == expected
    assert candidate_init(HOST.removeprefix("candidate:"), "13", 6) == expected
    assert json.loads(candidate_init("", "0", 0)) == {
        "candidate": "",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }


def test_parse_candidate_init_from_the_sdks() -> None:
    chrome = (
        '{"candidate":"candidate:3045408203 1 udp 2122260223 192.168.1.20 54400 typ host '
        'generation 0 ufrag Hs7c network-id 1","sdpMid":"0","sdpMLineIndex":0,'
        '"usernameFragment":"Hs7c"}'
    )
    candidate, mid, index = parse_candidate_init(chrome)
    assert candidate.startswith("candidate:3045408203 1 udp") and (mid, index) == ("0", 0)
    rust = '{"sdpMid":"13","sdpMLineIndex":6,"candidate":"candidate:1 1 tcp 1518280447 10.0.0.2 9 typ host tcptype passive generation 0"}'  # noqa: E501
    assert parse_candidate_init(rust)[1:] == ("13", 6)
    assert parse_candidate_init('{"candidate":"","sdpMid":"0"}') == ("", "0", None)
    assert parse_candidate_init('{"candidate":"a=' + HOST + '"}') == (HOST, None, None)
    assert parse_candidate_init(candidate_init(HOST, "7", 0)) == (HOST, "7", 0)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        "null",
        '{"sdpMid":"0"}',
        '{"candidate":5}',
        '{"candidate":"candidate:1 1 udp"}',
        '{"candidate":"hello world this is not a candidate at all"}',
        f'{{"candidate":"{HOST}","sdpMid":0}}',
        f'{{"candidate":"{HOST}","sdpMLineIndex":-1}}',
        f'{{"candidate":"{HOST}","sdpMLineIndex":true}}',
        f'{{"candidate":"{HOST}","sdpMLineIndex":"0"}}',
        f'{{"candidate":"{HOST}","sdpMLineIndex":1.5}}',
        "[" * 100_000,
        '{"candidate":"' + "x" * 5000 + '"}',
    ],
)
def test_parse_candidate_init_rejects_garbage(text: str) -> None:
    with pytest.raises(SdpError, match="candidateInit"):
        parse_candidate_init(text)


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["candidate", "sdpMid", "sdpMLineIndex", "x"]), children, max_size=4
            )
        ),
        max_leaves=10,
    ).map(json.dumps)
)
def test_parse_candidate_init_raises_only_sdp_error(text: str) -> None:
    try:
        parse_candidate_init(text)
    except SdpError:
        pass


def test_application_mid_absent() -> None:
    video_only = CHROME_OFFER.split("m=application")[0].replace("BUNDLE 0 1 2", "BUNDLE 0 1")
    assert application_mid(parse(video_only)) is None
    rejected = parse(JS_DATA_OFFER.replace("m=application 9", "m=application 0"))
    assert application_mid(rejected) is None
